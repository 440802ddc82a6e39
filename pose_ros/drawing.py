"""Drawing persons (boxes, skeletons, scores) on images: the CLI's annotated output, the node's
debug image and training's validation snapshots all use this one function."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pose_ros.images import check_color_order
from pose_ros.keypoints import SKELETON_EDGES, limb_side

if TYPE_CHECKING:
    from pose_ros.types import Person

#: Colours of limbs and keypoints by body side (RGB): left warm, right cool, centre neutral.
#: RViz markers use the same colours.
SIDE_COLORS_RGB: dict[str, tuple[int, int, int]] = {
    "left": (255, 140, 0),
    "right": (0, 160, 255),
    "center": (60, 220, 60),
}
BOX_COLOR_RGB: tuple[int, int, int] = (255, 255, 255)


#: The golden ratio's fractional part: successive ids get hues far apart on the colour wheel.
_HUE_STEP = 0.618033988749895


def track_color_rgb(track_id: int) -> tuple[int, int, int]:
    """A colour (0..255 RGB) for a track id: the same id always gets the same colour, and
    neighbouring ids get clearly different hues."""
    hue = (0.1 + track_id * _HUE_STEP) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def _keypoint_side(keypoint_id: int) -> str:
    return limb_side((keypoint_id, keypoint_id))


def draw_persons(
    image: np.ndarray,
    persons: Sequence[Person],
    *,
    keypoint_threshold: float = 0.3,
    color_order: str = "RGB",
    draw_boxes: bool = True,
    draw_scores: bool = True,
) -> np.ndarray:
    """An annotated copy of ``image``.

    Args:
        image: (H, W, 3) uint8 in ``color_order`` ("RGB" or "BGR"); left unchanged.
        persons: results of the pipeline (box, box_score, score, keypoints (17, 3)).
        keypoint_threshold: keypoints and limbs below this score are not drawn.
        color_order: channel order of ``image`` (the drawing colours follow it).
        draw_scores: write each person's score above its box (the track id, ``id N``, is written
            there whenever the person has one).

    Returns:
        (H, W, 3) uint8 copy with boxes, skeletons and person scores drawn.
    """
    check_color_order(color_order)
    canvas = np.ascontiguousarray(image).copy()

    def color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
        return rgb if color_order == "RGB" else rgb[::-1]

    # Line widths follow the image size so drawings stay readable on 4K and on thumbnails.
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    radius = thickness + 1
    for person in persons:
        keypoints = np.asarray(person.keypoints, dtype=np.float64)
        if draw_boxes:
            x, y, w, h = (float(v) for v in person.box)
            # A tracked person's box takes the colour of its RViz markers (same id, same colour).
            box_rgb = track_color_rgb(person.track_id) if person.track_id >= 0 else BOX_COLOR_RGB
            cv2.rectangle(
                canvas,
                (round(x), round(y)),
                (round(x + w), round(y + h)),
                color(box_rgb),
                thickness,
                cv2.LINE_AA,
            )
            if draw_scores or person.track_id >= 0:
                # The track id first (stable across frames), then the score.
                label = f"id {person.track_id}" if person.track_id >= 0 else ""
                if draw_scores:
                    label = f"{label} {person.score:.2f}".strip()
                cv2.putText(
                    canvas,
                    label,
                    (round(x), max(round(y) - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness,
                    color(box_rgb),
                    max(1, thickness // 2),
                    cv2.LINE_AA,
                )
        for a, b in SKELETON_EDGES:
            if keypoints[a, 2] < keypoint_threshold or keypoints[b, 2] < keypoint_threshold:
                continue
            cv2.line(
                canvas,
                (round(keypoints[a, 0]), round(keypoints[a, 1])),
                (round(keypoints[b, 0]), round(keypoints[b, 1])),
                color(SIDE_COLORS_RGB[limb_side((a, b))]),
                thickness,
                cv2.LINE_AA,
            )
        for k, (x, y, score) in enumerate(keypoints):
            if score < keypoint_threshold:
                continue
            cv2.circle(
                canvas,
                (round(x), round(y)),
                radius,
                color(SIDE_COLORS_RGB[_keypoint_side(k)]),
                -1,
                cv2.LINE_AA,
            )
    return canvas
