"""Heatmap codec: keypoints to Gaussian training targets, heatmaps back to keypoints, and the
flip test. Shared by training (encode) and inference/evaluation (decode, flip).

All coordinates here are *heatmap* pixels (integer values at heatmap pixel centres); the geometry
module maps them to and from image pixels.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch

from pose_ros.keypoints import flip_permutation

DecodeMethod = Literal["quarter", "dark"]
DECODE_METHODS: tuple[str, ...] = ("quarter", "dark")

#: Gaussian of the training targets at 64x48, as in Simple Baselines.
DEFAULT_SIGMA = 2.0


def encode_heatmaps(
    keypoints: np.ndarray,
    visible: np.ndarray,
    heatmap_size: tuple[int, int],
    sigma: float = DEFAULT_SIGMA,
    *,
    subpixel: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmap targets for one person.

    Each visible keypoint gets an unnormalised Gaussian (peak 1) of standard deviation ``sigma``,
    cut to a window of 3 sigma around its centre. A keypoint that is not visible, or whose window
    lies entirely outside the heatmap, gets an empty heatmap and target weight 0.

    Args:
        keypoints: (K, 2) keypoint positions in heatmap pixels.
        visible: (K,) truthy where the keypoint is labelled.
        heatmap_size: ``(height, width)``.
        sigma: Gaussian standard deviation in heatmap pixels.
        subpixel: centre the Gaussian at the exact position (default). ``False`` rounds the centre
            to the nearest heatmap pixel as the reference implementation does.

    Returns:
        heatmaps (K, height, width) float32 and target weights (K,) float32.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    visible = np.asarray(visible).reshape(-1) > 0
    num_keypoints = keypoints.shape[0]
    height, width = heatmap_size
    heatmaps = np.zeros((num_keypoints, height, width), dtype=np.float32)
    weights = visible.astype(np.float32)
    radius = 3.0 * sigma
    centres = keypoints if subpixel else np.floor(keypoints + 0.5)
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    for k in range(num_keypoints):
        if not visible[k]:
            continue
        mu_x, mu_y = centres[k]
        # The reference's test: the window [mu - 3s, mu + 3s] must overlap the heatmap.
        if (
            mu_x - radius >= width
            or mu_y - radius >= height
            or mu_x + radius < 0
            or mu_y + radius < 0
        ):
            weights[k] = 0.0
            continue
        dx = xs - mu_x
        dy = ys - mu_y
        gx = np.where(np.abs(dx) <= radius, np.exp(-(dx**2) / (2 * sigma**2)), 0.0)
        gy = np.where(np.abs(dy) <= radius, np.exp(-(dy**2) / (2 * sigma**2)), 0.0)
        heatmaps[k] = np.outer(gy, gx)
    return heatmaps, weights


def decode_heatmaps(
    heatmaps: np.ndarray | torch.Tensor,
    method: DecodeMethod = "quarter",
    *,
    dark_blur_kernel: int = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint positions and scores from heatmaps.

    ``"quarter"``: the argmax, moved a quarter pixel toward the higher neighbour in x and in y
    (Simple Baselines). ``"dark"``: the argmax refined by a second-order Taylor expansion of the
    log heatmap after a Gaussian blur ("Distribution-Aware Coordinate Representation", DARK).

    Args:
        heatmaps: (N, K, H, W) array or tensor (any device).
        method: "quarter" or "dark".
        dark_blur_kernel: odd Gaussian blur kernel size for DARK (11 suits sigma 2 at 64x48).

    Returns:
        coords (N, K, 2) float32 in heatmap pixels and scores (N, K) float32: the heatmap maximum
        (a confidence roughly in 0..1; not clipped).
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"unknown decode method {method!r}; choose one of {DECODE_METHODS}")
    if isinstance(heatmaps, torch.Tensor):
        heatmaps = heatmaps.detach().float().cpu().numpy()
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {heatmaps.shape}")
    n, k, _, width = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    index = flat.argmax(axis=2)
    scores = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % width, index // width], axis=-1).astype(np.float32)
    # A heatmap with no positive value carries no position: leave it at the argmax, score <= 0.
    if method == "quarter":
        _quarter_offset(heatmaps, coords)
    else:
        coords = _dark_refine(heatmaps, coords, dark_blur_kernel)
    return coords, scores.astype(np.float32)


def _quarter_offset(heatmaps: np.ndarray, coords: np.ndarray) -> None:
    """In place: shift each argmax a quarter pixel toward its higher neighbour (x and y)."""
    n, k, height, width = heatmaps.shape
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    # The reference moves only when both neighbours exist (1 < p < size - 1).
    inner_x = (px > 1) & (px < width - 1)
    inner_y = (py > 1) & (py < height - 1)
    xr = np.clip(px + 1, 0, width - 1)
    xl = np.clip(px - 1, 0, width - 1)
    yd = np.clip(py + 1, 0, height - 1)
    yu = np.clip(py - 1, 0, height - 1)
    diff_x = heatmaps[ni, ki, py, xr] - heatmaps[ni, ki, py, xl]
    diff_y = heatmaps[ni, ki, yd, px] - heatmaps[ni, ki, yu, px]
    coords[..., 0] += np.where(inner_x, np.sign(diff_x) * 0.25, 0.0)
    coords[..., 1] += np.where(inner_y, np.sign(diff_y) * 0.25, 0.0)


def _dark_refine(heatmaps: np.ndarray, coords: np.ndarray, kernel: int) -> np.ndarray:
    """DARK: Newton step on the log of the blurred heatmap at the integer argmax."""
    if kernel % 2 != 1 or kernel < 1:
        raise ValueError(f"dark_blur_kernel must be a positive odd number, got {kernel}")
    n, k = heatmaps.shape[:2]
    blurred = np.empty_like(heatmaps)
    for i in range(n):
        for j in range(k):
            original_max = heatmaps[i, j].max()
            # Zero border (as DARK pads): a reflected border would mirror peaks near the edge.
            smooth = cv2.GaussianBlur(
                heatmaps[i, j], (kernel, kernel), 0, borderType=cv2.BORDER_CONSTANT
            )
            # Keep the peak height (DARK's modulation) so the log has the same scale.
            smooth_max = smooth.max()
            if smooth_max > 0:
                smooth *= original_max / smooth_max
            blurred[i, j] = smooth
    log_hm = np.log(np.maximum(blurred, 1e-10))
    # Pad by one (edge values) so every argmax has neighbours; border peaks get a zero derivative.
    padded = np.pad(log_hm, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    x = coords[..., 0].astype(np.int64) + 1
    y = coords[..., 1].astype(np.int64) + 1
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(dy: int, dx: int) -> np.ndarray:
        return padded[ni, ki, y + dy, x + dx]

    center = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = at(0, 1) - 2 * center + at(0, -1)
    dyy = at(1, 0) - 2 * center + at(-1, 0)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    # Newton step only where the Hessian is negative definite (a proper maximum).
    valid = (det > 1e-12) & (dxx < 0)
    safe_det = np.where(valid, det, 1.0)
    step_x = -(dyy * dx - dxy * dy) / safe_det
    step_y = -(dxx * dy - dxy * dx) / safe_det
    # A step longer than a pixel means the quadratic model does not hold there.
    valid &= (np.abs(step_x) <= 1.0) & (np.abs(step_y) <= 1.0)
    refined = coords.copy()
    refined[..., 0] += np.where(valid, step_x, 0.0)
    refined[..., 1] += np.where(valid, step_y, 0.0)
    return refined.astype(np.float32)


def flip_heatmaps_back(flipped: torch.Tensor, *, shift: bool = True) -> torch.Tensor:
    """Heatmaps of a horizontally flipped input, mapped back to the original orientation.

    Flips along width, swaps left/right channels (``pose_ros.keypoints.FLIP_PAIRS``) and, as
    the reference does, shifts one pixel to the right: the flip of an image of even width moves
    the pixel-centre grid by one heatmap pixel's worth of input pixels.

    Args:
        flipped: (N, K, H, W) heatmaps predicted on flipped crops.

    Returns:
        (N, K, H, W) heatmaps to average with the unflipped prediction.
    """
    permutation = flip_permutation()
    if flipped.shape[1] != len(permutation):
        raise ValueError(
            f"flip test needs the {len(permutation)} COCO keypoints, got {flipped.shape[1]}"
        )
    back = flipped.flip(-1)[:, permutation]
    if shift:
        back = torch.cat([back[..., :1], back[..., :-1]], dim=-1)
    return back
