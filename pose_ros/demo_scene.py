"""Sample input made by the repository itself: a drawn figure that waves and steps in front of a
plain room, with the 17 COCO keypoints it was drawn from.

The demo needs frames without downloading anything or reading test data. The figure is built
from COCO-17 keypoints (so the truth is known exactly) and drawn as a person-like shape: head,
torso, limbs of body width, clothes and skin colours. It fills most of the frame, like a
pre-cropped single-person camera, which is what the demo's "full_image" detector expects.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

from pose_ros.keypoints import COCO_KEYPOINT_NAMES

_ID = {name: index for index, name in enumerate(COCO_KEYPOINT_NAMES)}

SKIN = (224, 172, 140)
SHIRT = (40, 110, 200)
TROUSERS = (50, 50, 70)
HAIR = (60, 40, 30)


def figure_keypoints(t: float, width: int = 640, height: int = 480) -> np.ndarray:
    """(17, 2) pixel coordinates of the figure at time ``t`` seconds: arms waving (the right one
    higher), legs stepping, a slow sway from side to side."""
    unit = height / 480.0  # body proportions follow the frame height
    cx = width / 2 + 40 * unit * math.sin(2 * math.pi * 0.15 * t)
    hip_y = 0.58 * height
    shoulder_y = hip_y - 130 * unit
    points = np.zeros((17, 2))

    def put(name: str, x: float, y: float) -> None:
        points[_ID[name]] = (x, y)

    # Head: the figure faces the camera, so its left is on the image's right.
    head_y = shoulder_y - 45 * unit
    put("nose", cx, head_y + 4 * unit)
    put("left_eye", cx + 9 * unit, head_y - 6 * unit)
    put("right_eye", cx - 9 * unit, head_y - 6 * unit)
    put("left_ear", cx + 22 * unit, head_y - 2 * unit)
    put("right_ear", cx - 22 * unit, head_y - 2 * unit)

    upper_arm, forearm = 62 * unit, 55 * unit
    thigh, shin = 85 * unit, 80 * unit
    wave = math.sin(2 * math.pi * 0.6 * t)
    step = math.sin(2 * math.pi * 0.8 * t)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        shoulder = np.array([cx + sign * 45 * unit, shoulder_y])
        hip = np.array([cx + sign * 25 * unit, hip_y])
        # Arm angles from straight down, opening outwards; the right arm waves above the head.
        lift = 0.5 + (1.9 + 0.5 * wave if side == "right" else 0.3 - 0.3 * wave)
        bend = 0.4 + (0.5 * wave if side == "right" else 0.2)
        elbow = shoulder + upper_arm * np.array([sign * math.sin(lift), math.cos(lift)])
        wrist = elbow + forearm * np.array([sign * math.sin(lift + bend), math.cos(lift + bend)])
        swing = 0.25 * step * (1 if side == "left" else -1)
        knee = hip + thigh * np.array([sign * 0.12 + swing, 1.0]) / math.hypot(
            sign * 0.12 + swing, 1
        )
        ankle = knee + shin * np.array([sign * 0.05, 1.0]) / math.hypot(0.05, 1)
        put(f"{side}_shoulder", *shoulder)
        put(f"{side}_hip", *hip)
        put(f"{side}_elbow", *elbow)
        put(f"{side}_wrist", *wrist)
        put(f"{side}_knee", *knee)
        put(f"{side}_ankle", *ankle)
    return points


def render_room(width: int = 640, height: int = 480) -> np.ndarray:
    """An (H, W, 3) uint8 RGB frame of the empty room (wall gradient and floor)."""
    frame = np.empty((height, width, 3), np.uint8)
    wall = np.linspace(205, 170, height)[:, None]
    frame[...] = np.stack([wall, wall * 0.97, wall * 0.9], axis=-1).astype(np.uint8)
    floor_y = int(0.86 * height)
    frame[floor_y:] = (120, 100, 80)
    return frame


def render_figure(
    keypoints: np.ndarray,
    width: int = 640,
    height: int = 480,
    *,
    scale: float = 1.0,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """An (H, W, 3) uint8 RGB frame: a room (or a copy of ``background``) and the figure drawn
    from ``keypoints``, its limbs as thick as a figure ``scale`` times the full size."""
    frame = render_room(width, height) if background is None else background.copy()
    unit = height / 480.0 * scale

    def pt(name: str) -> tuple[int, int]:
        x, y = keypoints[_ID[name]]
        return round(x), round(y)

    def limb(a: str, b: str, color: tuple[int, int, int], thickness: float) -> None:
        cv2.line(frame, pt(a), pt(b), color, max(2, round(thickness * unit)), cv2.LINE_AA)

    def blob(
        center: tuple[float, float],
        size: tuple[float, float],
        color: tuple[int, int, int],
        arc: tuple[int, int] = (0, 360),
        thickness: int = -1,
    ) -> None:
        """An ellipse of ``size`` (half-axes, in 480-line units) at a pixel ``center``."""
        axes = (round(size[0] * unit), round(size[1] * unit))
        centre = (int(center[0]), int(center[1]))
        cv2.ellipse(frame, centre, axes, 0, arc[0], arc[1], color, thickness, cv2.LINE_AA)

    for side in ("left", "right"):  # legs behind the torso
        limb(f"{side}_hip", f"{side}_knee", TROUSERS, 30)
        limb(f"{side}_knee", f"{side}_ankle", TROUSERS, 24)
        ankle = pt(f"{side}_ankle")
        blob((ankle[0], ankle[1] + 6 * unit), (16, 8), (30, 30, 30))  # shoe
    torso = np.array([pt("left_shoulder"), pt("right_shoulder"), pt("right_hip"), pt("left_hip")])
    cv2.fillConvexPoly(frame, torso, SHIRT, cv2.LINE_AA)
    for side in ("left", "right"):
        limb(f"{side}_shoulder", f"{side}_elbow", SHIRT, 22)
        limb(f"{side}_elbow", f"{side}_wrist", SKIN, 16)
        cv2.circle(frame, pt(f"{side}_wrist"), round(10 * unit), SKIN, -1, cv2.LINE_AA)
    neck = ((np.array(pt("left_shoulder")) + pt("right_shoulder")) / 2).round().astype(int)
    cv2.line(frame, tuple(neck), pt("nose"), SKIN, round(18 * unit), cv2.LINE_AA)
    head = ((np.array(pt("left_ear")) + pt("right_ear")) / 2).round().astype(int)
    cv2.ellipse(
        frame, tuple(head), (round(25 * unit), round(31 * unit)), 0, 0, 360, SKIN, -1, cv2.LINE_AA
    )
    cv2.ellipse(frame, (head[0], head[1] - round(14 * unit)), (round(26 * unit), round(19 * unit)),
                0, 180, 360, HAIR, -1, cv2.LINE_AA)  # fmt: skip
    for eye in ("left_eye", "right_eye"):
        cv2.circle(frame, pt(eye), max(1, round(3 * unit)), (30, 30, 30), -1, cv2.LINE_AA)
    nose = pt("nose")
    blob((nose[0], nose[1] + 10 * unit), (8, 3), (150, 60, 60), arc=(0, 180), thickness=2)  # mouth
    return frame


#: The demo camera: the figure stands this far in front of it (metres), before a wall this far.
FIGURE_DISTANCE_M = 2.0
WALL_DISTANCE_M = 4.0


def render_depth(
    keypoints: np.ndarray,
    width: int = 640,
    height: int = 480,
    *,
    figure_m: float = FIGURE_DISTANCE_M,
    wall_m: float = WALL_DISTANCE_M,
) -> np.ndarray:
    """(H, W) float32 metres: the depth image registered to ``render_figure(keypoints)``, as an
    RGB-D camera aligned to the colour camera sees it: every pixel of the figure at ``figure_m``
    (a flat cut-out, so the true depth of each keypoint on it is exactly ``figure_m``), the room
    behind it (wall and floor) at ``wall_m``."""
    figure = render_figure(keypoints, width, height)
    # The room alone: the same drawing with the figure moved out of the picture.
    room = render_figure(np.asarray(keypoints) + 10.0 * (width + height), width, height)
    depth = np.full((height, width), wall_m, np.float32)
    depth[(figure != room).any(axis=-1)] = figure_m
    return depth


def demo_frames(
    count: int, *, width: int = 640, height: int = 480, fps: float = 10.0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``count`` frames at ``fps``: (RGB frame, (17, 2) keypoints it was drawn from)."""
    for index in range(count):
        keypoints = figure_keypoints(index / fps, width, height)
        yield render_figure(keypoints, width, height), keypoints


def two_figure_keypoints(t: float, width: int = 640, height: int = 480) -> list[np.ndarray]:
    """(17, 2) keypoints of two figures at time ``t`` seconds, each 0.55 of the full size, walking
    slowly in opposite directions on either half of the frame (they never meet)."""
    figures = []
    for index, (home, direction) in enumerate(((0.27, 1.0), (0.73, -1.0))):
        points = figure_keypoints(t + 0.7 * index, width, height)
        centre = np.array([width / 2, 0.5 * height])
        x = width * home + direction * 12 * (height / 480.0) * t
        points = (points - centre) * TWO_FIGURE_SCALE + (x, 0.55 * height)
        figures.append(points)
    return figures


#: Size of each figure of :func:`two_figure_frames` relative to the single demo figure.
TWO_FIGURE_SCALE = 0.55


def two_figure_frames(
    count: int, *, width: int = 640, height: int = 480, fps: float = 10.0
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """``count`` frames at ``fps`` with two moving figures: (RGB frame, [(17, 2) keypoints of
    each figure]), for tracking tests."""
    for index in range(count):
        figures = two_figure_keypoints(index / fps, width, height)
        frame = render_room(width, height)
        for keypoints in figures:
            frame = render_figure(
                keypoints, width, height, scale=TWO_FIGURE_SCALE, background=frame
            )
        yield frame, figures
