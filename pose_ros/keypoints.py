"""The COCO-17 keypoint layout: the one place that names keypoints, skeleton edges, flip pairs and
OKS sigmas. Training, inference, drawing, markers and messages all read it from here."""

from __future__ import annotations

from typing import Final

#: COCO category id of "person" (annotations, detection and keypoint results files).
COCO_PERSON_CATEGORY_ID: Final[int] = 1

#: Keypoint names in COCO order; the index is the keypoint id (msg/Keypoint.msg constants agree).
COCO_KEYPOINT_NAMES: Final[tuple[str, ...]] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS: Final[int] = len(COCO_KEYPOINT_NAMES)

#: Left/right pairs swapped by a horizontal flip (image or heatmaps).
FLIP_PAIRS: Final[tuple[tuple[int, int], ...]] = (
    (1, 2),
    (3, 4),
    (5, 6),
    (7, 8),
    (9, 10),
    (11, 12),
    (13, 14),
    (15, 16),
)

#: Skeleton edges used for drawing (images, RViz markers), as pairs of keypoint ids. The COCO
#: annotation skeleton, 0-based, with the face drawn as nose-eyes-ears and the shoulders joined.
SKELETON_EDGES: Final[tuple[tuple[int, int], ...]] = (
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
)

#: Per-keypoint standard deviations of the COCO object keypoint similarity (OKS), as used by
#: pycocotools' COCOeval for keypoints.
OKS_SIGMAS: Final[tuple[float, ...]] = (
    0.026,
    0.025,
    0.025,
    0.035,
    0.035,
    0.079,
    0.079,
    0.072,
    0.072,
    0.062,
    0.062,
    0.107,
    0.107,
    0.087,
    0.087,
    0.089,
    0.089,
)

#: Keypoints of the upper body (head, shoulders, arms); the rest is the lower body. Used by the
#: half-body augmentation of training.
UPPER_BODY_IDS: Final[tuple[int, ...]] = tuple(range(11))
LOWER_BODY_IDS: Final[tuple[int, ...]] = tuple(range(11, NUM_KEYPOINTS))


def flip_permutation() -> list[int]:
    """Index map of a horizontal flip: ``flipped[i] = original[perm[i]]`` for keypoint rows."""
    perm = list(range(NUM_KEYPOINTS))
    for left, right in FLIP_PAIRS:
        perm[left], perm[right] = right, left
    return perm


def limb_side(edge: tuple[int, int]) -> str:
    """'left', 'right' or 'center' for a skeleton edge, for colouring drawings and markers.

    An edge is left (right) when both ends are left (right) keypoints or centre keypoints; edges
    that join the two sides (shoulders, hips, eyes) are 'center'.
    """
    sides = {_keypoint_side(k) for k in edge}
    sides.discard("center")
    if len(sides) == 1:
        return sides.pop()
    return "center"


def _keypoint_side(keypoint_id: int) -> str:
    name = COCO_KEYPOINT_NAMES[keypoint_id]
    if name.startswith("left_"):
        return "left"
    if name.startswith("right_"):
        return "right"
    return "center"
