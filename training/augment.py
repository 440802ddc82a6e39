"""The reference training augmentation (Simple Baselines / HRNet ``JointsDataset``) and targets,
and RTMPose's stronger one (mmpose's RTMPose COCO configs).

Order as in the reference: half-body (replaces the crop region), then random scale and rotation
(and, for ``bbox_transform: mmpose``, shift), then horizontal flip, then the affine crop; then,
on the crop, the photometric and occlusion steps of RTMPose (HSV gains, blur, median blur, one
dropped rectangle), which leave the keypoints where they are. All randomness comes from the
``rng`` passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

from pose_ros.codec import encode_heatmaps
from pose_ros.geometry import apply_affine, box_to_center_scale, crop_affine
from pose_ros.keypoints import LOWER_BODY_IDS, UPPER_BODY_IDS, flip_permutation
from pose_ros.simcc import SIMCC_SPLIT_RATIO, encode_simcc

from .config import AugmentConfig

#: The crop-region draws of :attr:`AugmentConfig.bbox_transform`.
BBOX_TRANSFORMS: tuple[str, ...] = ("simplebaseline", "mmpose")

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
    crop, joints_input, visible = augmented_crop(
        image,
        keypoints,
        center,
        scale,
        input_size=input_size,
        augment=augment,
        rng=rng,
        color_order=color_order,
    )
    in_h, in_w = input_size
    stride = np.array([in_w / heatmap_size[1], in_h / heatmap_size[0]])
    heatmaps, weights = encode_heatmaps(joints_input / stride, visible, heatmap_size, sigma)
    return crop, heatmaps, weights


def make_simcc_sample(
    image: np.ndarray,
    keypoints: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    *,
    input_size: tuple[int, int],
    sigma: tuple[float, float],
    augment: AugmentConfig,
    rng: np.random.Generator,
    color_order: str = "RGB",
    split_ratio: float = SIMCC_SPLIT_RATIO,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One augmented crop and its SimCC targets (:func:`pose_ros.simcc.encode_simcc`).

    Args: as :func:`make_training_sample`; ``sigma`` (x, y) in bins.

    Returns:
        crop (3, H, W) uint8, x targets (K, W * r), y targets (K, H * r) float32, weights (K,).
    """
    crop, joints_input, visible = augmented_crop(
        image,
        keypoints,
        center,
        scale,
        input_size=input_size,
        augment=augment,
        rng=rng,
        color_order=color_order,
    )
    # As mmpose: a keypoint outside the crop keeps its weight while its 3-sigma window
    # reaches the vectors (encode_simcc's rule).
    x_labels, y_labels, weights = encode_simcc(
        joints_input, visible, input_size, sigma, split_ratio
    )
    return crop, x_labels, y_labels, weights


def augmented_crop(
    image: np.ndarray,
    keypoints: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    *,
    input_size: tuple[int, int],
    augment: AugmentConfig,
    rng: np.random.Generator,
    color_order: str = "RGB",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The augmented crop of one person (see the module docstring for the order).

    Returns:
        crop (3, H, W) uint8 in ``color_order``, keypoints (K, 2) in crop pixels, (K,) bool
        labelled (after the flip's left/right swap).
    """
    if augment.bbox_transform not in BBOX_TRANSFORMS:
        raise ValueError(
            f"augment.bbox_transform must be one of {BBOX_TRANSFORMS}, got "
            f"{augment.bbox_transform!r}"
        )
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

    if augment.bbox_transform == "mmpose":
        center, scale, rotation = _mmpose_bbox_transform(center, scale, augment, rng)
    else:
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
    crop = _photometric(crop, augment, rng)
    if color_order == "RGB":
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    joints_input = apply_affine(joints, matrix)
    return np.ascontiguousarray(crop.transpose(2, 0, 1)), joints_input, visible


def _truncated_normal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Standard normal values truncated to [-1, 1] (redrawn until inside)."""
    values = rng.standard_normal(size)
    while np.any(np.abs(values) > 1):
        outside = np.abs(values) > 1
        values[outside] = rng.standard_normal(int(outside.sum()))
    return values


def _mmpose_bbox_transform(
    center: np.ndarray, scale: np.ndarray, augment: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """mmpose's RandomBBoxTransform (see :attr:`AugmentConfig.bbox_transform`)."""
    shift_t, shift_u, scale_t, rotate_t = _truncated_normal(rng, 4)
    if rng.random() < augment.shift_prob:
        center = center + np.array([shift_t, shift_u]) * augment.shift_factor * scale
    low, high = augment.scale_range
    scale = scale * ((high + low) * 0.5 + scale_t * (high - low) * 0.5)
    rotation = 0.0
    if rng.random() < augment.rotation_prob:
        rotation = float(rotate_t * augment.rotation_factor)
    return center, scale, rotation


def _photometric(crop: np.ndarray, augment: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """RTMPose's steps on the BGR crop: HSV gains (mmdet's YOLOXHSVRandomAug), blur, median
    blur, one dropped rectangle (albumentations Blur, MedianBlur, CoarseDropout)."""
    if any(augment.hsv_deltas):
        gains = rng.uniform(-1, 1, 3) * np.asarray(augment.hsv_deltas)
        gains = (gains * rng.integers(0, 2, 3)).astype(np.int16)  # each channel or not
        hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
        crop = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    if augment.blur_prob and rng.random() < augment.blur_prob:
        kernel = int(rng.choice([3, 5, 7]))
        crop = cv2.blur(crop, (kernel, kernel))
    if augment.median_blur_prob and rng.random() < augment.median_blur_prob:
        crop = cv2.medianBlur(crop, int(rng.choice([3, 5, 7])))
    if augment.dropout_prob and rng.random() < augment.dropout_prob:
        height, width = crop.shape[:2]
        low, high = augment.dropout_size
        hole_h = int(rng.integers(int(low * height), int(high * height) + 1))
        hole_w = int(rng.integers(int(low * width), int(high * width) + 1))
        top = int(rng.integers(0, height - hole_h + 1))
        left = int(rng.integers(0, width - hole_w + 1))
        crop = crop.copy()
        crop[top : top + hole_h, left : left + hole_w] = 0
    return crop
