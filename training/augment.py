"""The reference training augmentation (Simple Baselines / HRNet ``JointsDataset``) and targets.

Order as in the reference: half-body (replaces the crop region), then random scale and rotation,
then horizontal flip, then the affine crop. All randomness comes from the ``rng`` passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

from pose_ros.codec import encode_heatmaps
from pose_ros.geometry import apply_affine, box_to_center_scale, crop_affine
from pose_ros.keypoints import LOWER_BODY_IDS, UPPER_BODY_IDS, flip_permutation

from .config import AugmentConfig

#: the reference enlarges the half-body region by 1.5 (instead of 1.25 for whole persons)
HALF_BODY_PADDING = 1.5


def default_sigma(heatmap_size: tuple[int, int]) -> float:
    """Sigma 2 at a 64-pixel-high heatmap (256x192 input), scaled with the heatmap height."""
    return 2.0 * heatmap_size[0] / 64.0


def half_body_region(
    keypoints: np.ndarray, visible: np.ndarray, aspect_ratio: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop region around the upper or the lower body (reference ``half_body_transform``).

    Args:
        keypoints: (K, 2) image pixels; visible: (K,) bool.
        aspect_ratio: input width / height.

    Returns:
        (center (2,), scale (2,)) or None when fewer than 2 keypoints of the chosen half exist.
        The upper body is chosen with probability 0.5 when it has more than 2 labelled keypoints;
        otherwise the lower body if it has more than 2, else the upper body.
    """
    upper = [k for k in UPPER_BODY_IDS if visible[k]]
    lower = [k for k in LOWER_BODY_IDS if visible[k]]
    if rng.random() < 0.5 and len(upper) > 2:
        selected = upper
    else:
        selected = lower if len(lower) > 2 else upper
    if len(selected) < 2:
        return None
    points = keypoints[selected]
    top_left, bottom_right = points.min(axis=0), points.max(axis=0)
    box = np.concatenate([top_left, bottom_right - top_left])
    _, scale = box_to_center_scale(box, aspect_ratio, padding=HALF_BODY_PADDING)
    # The reference centres on the mean of the chosen keypoints, not on their box.
    return points.mean(axis=0).astype(np.float32), scale


def make_training_sample(
    image: np.ndarray,
    keypoints: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    *,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
    augment: AugmentConfig,
    rng: np.random.Generator,
    color_order: str = "RGB",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented crop and its heatmap targets.

    Args:
        image: (H, W, 3) uint8 BGR (as decoded by OpenCV).
        keypoints: (K, 3) ``x, y, v`` in image pixels (v > 0: labelled).
        center, scale: (2,) crop region of the person box (``box_to_center_scale``).
        input_size, heatmap_size: ``(height, width)``.
        sigma: target Gaussian sigma in heatmap pixels.
        augment: probabilities and ranges; all zero gives the plain crop.
        rng: the sample's generator.
        color_order: channel order of the returned crop ("RGB" or "BGR").

    Returns:
        crop (3, H, W) uint8, heatmaps (K, h, w) float32, target weights (K,) float32 (0 for
        unlabelled keypoints and for those outside the crop).
    """
    joints = np.asarray(keypoints[:, :2], dtype=np.float64)
    visible = np.asarray(keypoints[:, 2]) > 0
    center = np.asarray(center, dtype=np.float64).copy()
    scale = np.asarray(scale, dtype=np.float64).copy()
    in_h, in_w = input_size

    if (
        augment.half_body_prob > 0
        and visible.sum() > augment.half_body_min_keypoints
        and rng.random() < augment.half_body_prob
    ):
        region = half_body_region(joints, visible, in_w / in_h, rng)
        if region is not None:
            center, scale = (np.asarray(v, dtype=np.float64) for v in region)

    sf, rf = augment.scale_factor, augment.rotation_factor
    scale = scale * np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf)
    rotation = 0.0
    if rng.random() < augment.rotation_prob:
        rotation = float(np.clip(rng.standard_normal() * rf, -2.0 * rf, 2.0 * rf))

    if rng.random() < augment.flip_prob:
        width = image.shape[1]
        image = image[:, ::-1]
        permutation = flip_permutation()
        joints = joints[permutation]
        joints[:, 0] = width - 1 - joints[:, 0]
        visible = visible[permutation]
        center[0] = width - 1 - center[0]

    matrix = crop_affine(center, scale, (in_h, in_w), rotation)
    crop = cv2.warpAffine(np.ascontiguousarray(image), matrix, (in_w, in_h), flags=cv2.INTER_LINEAR)
    if color_order == "RGB":
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    joints_input = apply_affine(joints, matrix)
    stride = np.array([in_w / heatmap_size[1], in_h / heatmap_size[0]])
    heatmaps, weights = encode_heatmaps(joints_input / stride, visible, heatmap_size, sigma)
    return np.ascontiguousarray(crop.transpose(2, 0, 1)), heatmaps, weights
