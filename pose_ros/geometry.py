"""Box and affine geometry shared by training and inference: the one place that maps a person box
to the network's input crop and network coordinates back to image pixels.

Conventions (those of Simple Baselines and mmpose, so published weights stay valid):

* Image coordinates are pixel coordinates, integer values at pixel centres (COCO annotations).
* A person box is ``(x_min, y_min, width, height)`` in pixels.
* A box becomes a *center* ``(cx, cy)`` and a *scale* ``(sw, sh)``: the size in pixels of the image
  region that fills the network input. The region has the input's aspect ratio (width/height =
  192/256 for a 256x192 input) and is the box enlarged by ``padding`` (1.25). The reference code
  stores the scale divided by 200 ("pixel_std"); here it stays in pixels, which changes nothing
  else.
* The crop transform maps ``center`` to ``(out_w / 2, out_h / 2)``, scales ``scale`` to the output
  size and rotates by ``rotation`` degrees (counter-clockwise in the image as displayed, as the
  reference's augmentation). Heatmap coordinates are input coordinates divided by the stride.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # crop_batch imports torch itself: the box geometry loads without it
    import torch

#: Box enlargement around a person box, as in Simple Baselines / mmpose top-down models.
DEFAULT_PADDING = 1.25


def box_to_center_scale(
    boxes: np.ndarray, aspect_ratio: float, padding: float = DEFAULT_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes to crop centres and scales.

    Args:
        boxes: (N, 4) or (4,) ``x_min, y_min, width, height`` in pixels.
        aspect_ratio: width / height of the network input (192 / 256 for 256x192).
        padding: enlargement factor applied after fixing the aspect ratio.

    Returns:
        centers (N, 2) and scales (N, 2) as float32, ``scales[:, 0] / scales[:, 1] == aspect_ratio``
        (the same leading shape as ``boxes``).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    single = boxes.ndim == 1
    boxes = boxes.reshape(-1, 4)
    x, y, w, h = boxes.T
    centers = np.stack([x + 0.5 * w, y + 0.5 * h], axis=1)
    # Grow the short side so the region has the input's aspect ratio, never crop the box.
    wider = w > aspect_ratio * h
    w_fixed = np.where(wider, w, h * aspect_ratio)
    h_fixed = np.where(wider, w / aspect_ratio, h)
    scales = np.stack([w_fixed, h_fixed], axis=1) * padding
    centers, scales = centers.astype(np.float32), scales.astype(np.float32)
    return (centers[0], scales[0]) if single else (centers, scales)


def crop_affine(
    center: np.ndarray,
    scale: np.ndarray,
    output_size: tuple[int, int],
    rotation: float = 0.0,
    *,
    inverse: bool = False,
) -> np.ndarray:
    """The 2x3 affine matrix from image pixels to crop pixels (or back, with ``inverse``).

    Args:
        center: (2,) region centre in image pixels.
        scale: (2,) region size ``(sw, sh)`` in image pixels.
        output_size: crop size as ``(height, width)``.
        rotation: degrees, the reference's rotation augmentation: the image direction that ends up
            as the crop's "up" is the image's up turned by ``rotation`` (x right, y down).
        inverse: return the crop-to-image matrix instead.

    Returns:
        (2, 3) float64 matrix ``M`` with ``[u, v] = M @ [x, y, 1]``.
    """
    out_h, out_w = output_size
    sx = out_w / float(scale[0])
    sy = out_h / float(scale[1])
    theta = math.radians(rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    # image -> centred -> rotated by -rotation (y down) -> scaled -> shifted to the crop centre
    linear = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]])
    offset = np.array([out_w * 0.5, out_h * 0.5]) - linear @ np.asarray(center, dtype=np.float64)
    forward = np.concatenate([linear, offset[:, None]], axis=1)
    return invert_affine(forward) if inverse else forward


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (..., 2, 3) affine matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear_inv = np.linalg.inv(matrix[..., :2])
    offset = -np.einsum("...ij,...j->...i", linear_inv, matrix[..., 2])
    return np.concatenate([linear_inv, offset[..., None]], axis=-1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Transform points (..., 2) with a (2, 3) matrix (or (N, 2, 3) for points (N, K, 2))."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    linear, offset = matrix[..., :2], matrix[..., 2]
    if matrix.ndim == 3:  # per-instance matrices for (N, K, 2) points
        return np.einsum("nij,nkj->nki", linear, points) + offset[:, None, :]
    return points @ linear.T + offset


def crop_to_image(
    coords: np.ndarray, centers: np.ndarray, scales: np.ndarray, crop_size: tuple[int, int]
) -> np.ndarray:
    """Coordinates in an unrotated crop (heatmap or input pixels) back to image pixels.

    Args:
        coords: (N, K, 2) ``(u, v)`` in crop pixels.
        centers, scales: (N, 2) as from :func:`box_to_center_scale`.
        crop_size: the crop's ``(height, width)`` (the heatmap size for heatmap coordinates).

    Returns:
        (N, K, 2) float32 image pixels; the exact inverse of :func:`crop_affine` at rotation 0.
    """
    size_wh = np.array([crop_size[1], crop_size[0]], dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)[:, None, :]
    scales = np.asarray(scales, dtype=np.float64)[:, None, :]
    image = centers + (np.asarray(coords, dtype=np.float64) / size_wh - 0.5) * scales
    return image.astype(np.float32)


def image_to_crop(
    points: np.ndarray, centers: np.ndarray, scales: np.ndarray, crop_size: tuple[int, int]
) -> np.ndarray:
    """Image pixels (N, K, 2) to unrotated crop pixels; the inverse of :func:`crop_to_image`."""
    size_wh = np.array([crop_size[1], crop_size[0]], dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)[:, None, :]
    scales = np.asarray(scales, dtype=np.float64)[:, None, :]
    crop = (np.asarray(points, dtype=np.float64) - centers) / scales * size_wh + size_wh * 0.5
    return crop.astype(np.float32)


def crop_batch(
    image: torch.Tensor,
    centers: np.ndarray,
    scales: np.ndarray,
    output_size: tuple[int, int],
    rotations: np.ndarray | None = None,
) -> torch.Tensor:
    """All person crops of one image in one call, on the image's device.

    Bilinear sampling of the affine region of :func:`crop_affine`, zeros outside the image: the
    same pixels ``cv2.warpAffine(image, M, (w, h), flags=INTER_LINEAR)`` gives, without a
    round trip to the CPU.

    Args:
        image: (C, H, W) float tensor (any device).
        centers, scales: (N, 2) numpy arrays in image pixels.
        output_size: ``(height, width)`` of the crops.
        rotations: (N,) degrees, or None.

    Returns:
        (N, C, height, width) tensor, same dtype and device as ``image``.
    """
    import torch
    import torch.nn.functional as F

    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    scales = np.asarray(scales, dtype=np.float64).reshape(-1, 2)
    count = centers.shape[0]
    channels, height, width = image.shape
    out_h, out_w = output_size
    if count == 0:
        return image.new_zeros((0, channels, out_h, out_w))
    if rotations is None:
        rotations = np.zeros(count)
    crop_to_img = np.stack(
        [
            crop_affine(c, s, output_size, float(r), inverse=True)
            for c, s, r in zip(centers, scales, rotations, strict=True)
        ]
    )
    # Sampling grid in fp32 whatever the image dtype: fp16 cannot address pixels of large images.
    device = image.device
    matrices = torch.as_tensor(crop_to_img, dtype=torch.float32, device=device)  # (N, 2, 3)
    vs, us = torch.meshgrid(
        torch.arange(out_h, dtype=torch.float32, device=device),
        torch.arange(out_w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    crop_points = torch.stack([us, vs, torch.ones_like(us)], dim=-1)  # (h, w, 3)
    image_points = torch.einsum("nij,hwj->nhwi", matrices, crop_points)  # (N, h, w, 2)
    # align_corners=True: -1 and 1 are the centres of the first and last pixels, matching the
    # integer-at-pixel-centre convention.
    norm = torch.tensor([max(width - 1, 1), max(height - 1, 1)], dtype=torch.float32, device=device)
    grid = image_points / norm * 2.0 - 1.0
    # One grid_sample call for all crops: stack them along the grid's height.
    grid = grid.reshape(1, count * out_h, out_w, 2)
    source = image.unsqueeze(0)
    if source.dtype != torch.float32:
        source = source.float()
    sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    crops = sampled.reshape(channels, count, out_h, out_w).permute(1, 0, 2, 3)
    return crops.to(image.dtype).contiguous()


def clip_boxes(boxes: np.ndarray, image_width: int, image_height: int) -> np.ndarray:
    """Clip (N, 4) ``x, y, w, h`` boxes to the image; boxes outside get zero size."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x1 = np.clip(boxes[:, 0], 0, image_width - 1)
    y1 = np.clip(boxes[:, 1], 0, image_height - 1)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, image_width - 1)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, image_height - 1)
    return np.stack([x1, y1, np.maximum(x2 - x1, 0), np.maximum(y2 - y1, 0)], axis=1)
