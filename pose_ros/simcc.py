"""SimCC codec (Li et al., "SimCC: a Simple Coordinate Classification Perspective for Human Pose
Estimation", ECCV 2022), the output form of RTMPose: for each keypoint one vector of scores over
the x positions and one over the y positions, ``split_ratio`` bins per input pixel.

The sibling of :mod:`pose_ros.codec` (heatmaps). Encoding and decoding follow mmpose's
``SimCCLabel`` (the codec the published RTMPose weights were trained and evaluated with):

* encode: the keypoint's bin ``round(position * split_ratio)``; an unnormalised Gaussian
  (peak 1) of ``sigma`` bins around it over every bin; weight 0 for an unlabelled keypoint and
  for one whose 3-sigma window lies outside the vectors;
* decode: the argmax of each vector divided by ``split_ratio``; the score is the smaller of the
  two maxima; a keypoint whose score is not positive is invalid (position -1 bin, i.e.
  ``-1 / split_ratio`` input pixels, as mmpose reports it).

Coordinates here are *input* pixels (integer values at pixel centres) of the network's crop.
"""

from __future__ import annotations

import numpy as np
import torch

from pose_ros.keypoints import flip_permutation

__all__ = [
    "DEFAULT_SIMCC_SIGMA",
    "SIMCC_SPLIT_RATIO",
    "decode_simcc",
    "decode_simcc_torch",
    "encode_simcc",
    "flip_simcc_back",
    "simcc_lengths",
]

#: Bins per input pixel of the published RTMPose weights.
SIMCC_SPLIT_RATIO = 2.0
#: Gaussian (x, y) of the RTMPose targets at 256x192, in bins (mmpose's RTMPose COCO configs).
DEFAULT_SIMCC_SIGMA: tuple[float, float] = (4.9, 5.66)


def simcc_lengths(
    input_size: tuple[int, int], split_ratio: float = SIMCC_SPLIT_RATIO
) -> tuple[int, int]:
    """(length of the y vector, length of the x vector) for an (H, W) input: (512, 384) at
    256x192 and ratio 2."""
    height, width = input_size
    return int(height * split_ratio), int(width * split_ratio)


def encode_simcc(
    keypoints: np.ndarray,
    visible: np.ndarray,
    input_size: tuple[int, int],
    sigma: tuple[float, float] = DEFAULT_SIMCC_SIGMA,
    split_ratio: float = SIMCC_SPLIT_RATIO,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SimCC training targets for one person (mmpose ``SimCCLabel`` with ``gaussian`` smoothing
    and ``normalize=False``, the RTMPose setting).

    Args:
        keypoints: (K, 2) positions in input pixels.
        visible: (K,) truthy where the keypoint is labelled.
        input_size: (H, W) of the network input.
        sigma: (x, y) Gaussian standard deviations in bins.
        split_ratio: bins per input pixel.

    Returns:
        x targets (K, W * ratio), y targets (K, H * ratio) float32, weights (K,) float32.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32).reshape(-1, 2)
    visible = np.asarray(visible, dtype=np.float64).reshape(-1)
    length_y, length_x = simcc_lengths(input_size, split_ratio)
    sigma_xy = np.asarray(sigma, dtype=np.float64).reshape(2)
    count = keypoints.shape[0]
    x_labels = np.zeros((count, length_x), dtype=np.float32)
    y_labels = np.zeros((count, length_y), dtype=np.float32)
    weights = (visible >= 0.5).astype(np.float32)
    # mmpose rounds half to even (np.around) before the Gaussian: the label peaks on a bin.
    centres = np.around(keypoints * np.float32(split_ratio)).astype(np.int64)
    radius = 3.0 * sigma_xy
    xs = np.arange(length_x, dtype=np.float32)
    ys = np.arange(length_y, dtype=np.float32)
    for k in range(count):
        if not weights[k]:
            continue
        left, top = centres[k] - radius
        right, bottom = centres[k] + radius + 1
        if left >= length_x or top >= length_y or right < 0 or bottom < 0:
            weights[k] = 0.0
            continue
        mu_x, mu_y = centres[k]
        x_labels[k] = np.exp(-((xs - mu_x) ** 2) / (2 * sigma_xy[0] ** 2))
        y_labels[k] = np.exp(-((ys - mu_y) ** 2) / (2 * sigma_xy[1] ** 2))
    return x_labels, y_labels, weights


def decode_simcc(
    simcc_x: np.ndarray | torch.Tensor,
    simcc_y: np.ndarray | torch.Tensor,
    split_ratio: float = SIMCC_SPLIT_RATIO,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints from SimCC vectors, as mmpose decodes them (see the module docstring).

    Args:
        simcc_x: (N, K, Wx) scores over x bins (array or tensor, any device).
        simcc_y: (N, K, Wy) scores over y bins.
        split_ratio: bins per input pixel.

    Returns:
        coords (N, K, 2) float32 in input pixels (``-1 / split_ratio`` where invalid) and
        scores (N, K) float32 (the smaller maximum; not clipped).
    """
    simcc_x, simcc_y = (
        v.detach().float().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        for v in (simcc_x, simcc_y)
    )
    _check_shapes(simcc_x.shape, simcc_y.shape)
    simcc_x = simcc_x.astype(np.float32, copy=False)
    simcc_y = simcc_y.astype(np.float32, copy=False)
    locations = np.stack([simcc_x.argmax(axis=-1), simcc_y.argmax(axis=-1)], axis=-1)
    locations = locations.astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1))
    locations[scores <= 0] = -1
    return locations / np.float32(split_ratio), scores.astype(np.float32)


def decode_simcc_torch(
    simcc_x: torch.Tensor, simcc_y: torch.Tensor, split_ratio: float = SIMCC_SPLIT_RATIO
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`decode_simcc` in torch, on the vectors' device (only (N, K, 3) need leave it);
    the same numbers: first maximum on ties, the same invalid rule.

    Returns:
        coords (N, K, 2) float32 in input pixels and scores (N, K) float32, on that device.
    """
    _check_shapes(tuple(simcc_x.shape), tuple(simcc_y.shape))
    max_x, index_x = simcc_x.float().max(dim=-1)
    max_y, index_y = simcc_y.float().max(dim=-1)
    scores = torch.minimum(max_x, max_y)
    locations = torch.stack([index_x, index_y], dim=-1).float()
    locations = torch.where((scores <= 0)[..., None], torch.full_like(locations, -1.0), locations)
    return locations / split_ratio, scores


def flip_simcc_back(
    flipped_x: torch.Tensor, flipped_y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCC vectors of a horizontally flipped input, mapped back to the original orientation
    as mmpose's flip test does (``flip_vectors``): left/right keypoints swapped, the x vector
    reversed, no shift.

    Args:
        flipped_x: (N, K, Wx); flipped_y: (N, K, Wy), predicted on mirrored crops.

    Returns:
        (x, y) to average with the unflipped prediction.
    """
    permutation = flip_permutation()
    if flipped_x.shape[1] != len(permutation):
        raise ValueError(
            f"flip test needs the {len(permutation)} COCO keypoints, got {flipped_x.shape[1]}"
        )
    return flipped_x[:, permutation].flip(-1), flipped_y[:, permutation]


def _check_shapes(shape_x: tuple[int, ...], shape_y: tuple[int, ...]) -> None:
    if len(shape_x) != 3 or len(shape_y) != 3 or shape_x[:2] != shape_y[:2]:
        raise ValueError(
            f"SimCC vectors must be (N, K, Wx) and (N, K, Wy), got {tuple(shape_x)} and "
            f"{tuple(shape_y)}"
        )
