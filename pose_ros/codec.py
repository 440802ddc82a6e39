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
#: Whose post-processing the quarter offset follows (see :func:`decode_heatmaps`).
DecodeRule = Literal["mmpose", "microsoft"]
DECODE_RULES: tuple[str, ...] = ("mmpose", "microsoft")

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
    rule: DecodeRule = "mmpose",
    dark_blur_kernel: int = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint positions and scores from heatmaps, decoded as the weights' authors decoded.

    ``"quarter"``: the argmax, moved a quarter pixel toward the higher neighbour (Simple
    Baselines). ``rule`` says when: ``"mmpose"`` (mmpose's ``refine_keypoints``) decides per axis,
    x when ``1 < x < W - 1 and 0 < y < H``, y when ``1 < y < H - 1 and 0 < x < W``;
    ``"microsoft"`` (the reference's ``get_final_preds``) moves both coordinates only when the
    peak is inside on both axes (``1 < x < W - 1 and 1 < y < H - 1``), else neither.

    ``"dark"``: the argmax refined by one Newton step on the log of the blurred heatmap
    ("Distribution-Aware Coordinate Representation", DARK), exactly as the DARK authors' code
    and mmpose's ``refine_keypoints_dark`` (the same formulas under both rules): first derivatives
    ``0.5 * (h[x+1] - h[x-1])``, second derivatives over two pixels ``0.25 * (h[x+2] - 2 h[x] +
    h[x-2])``, applied when ``1 < x < W - 2 and 1 < y < H - 2`` and the Hessian is invertible.

    Args:
        heatmaps: (N, K, H, W) array or tensor (any device).
        method: "quarter" or "dark".
        rule: "mmpose" or "microsoft" (see above); ``model.preprocessing.decode_rule`` records the
            rule of a model's weights.
        dark_blur_kernel: odd Gaussian blur kernel size for DARK (11 suits sigma 2 at 64x48).

    Returns:
        coords (N, K, 2) float32 in heatmap pixels and scores (N, K) float32: the heatmap maximum
        (a confidence roughly in 0..1; not clipped).
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"unknown decode method {method!r}; choose one of {DECODE_METHODS}")
    if rule not in DECODE_RULES:
        raise ValueError(f"unknown decode rule {rule!r}; choose one of {DECODE_RULES}")
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
        _quarter_offset(heatmaps, coords, rule)
    else:
        coords = _dark_refine(heatmaps, coords, dark_blur_kernel)
    return coords, scores.astype(np.float32)


def decode_heatmaps_torch(
    heatmaps: torch.Tensor, *, rule: DecodeRule = "mmpose"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``"quarter"`` decoding of :func:`decode_heatmaps` in torch, on the heatmaps' device
    (the GPU path: only the (N, K, 3) result needs to leave the device). Same numbers as the
    numpy version: first maximum on ties, the same ``rule`` for when to move.

    Args:
        heatmaps: (N, K, H, W) float tensor.
        rule: "mmpose" or "microsoft", as in :func:`decode_heatmaps`.

    Returns:
        coords (N, K, 2) float32 in heatmap pixels and scores (N, K) float32, on that device.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {tuple(heatmaps.shape)}")
    if rule not in DECODE_RULES:
        raise ValueError(f"unknown decode rule {rule!r}; choose one of {DECODE_RULES}")
    heatmaps = heatmaps.float()
    n, k, height, width = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    # torch.max gives the first maximal index on the CPU and on CUDA alike, as numpy's argmax.
    scores, index = flat.max(dim=2)
    px, py = index % width, torch.div(index, width, rounding_mode="floor")

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (y * width + x)[..., None])[..., 0]

    inner_x = (px > 1) & (px < width - 1)
    inner_y = (py > 1) & (py < height - 1)
    if rule == "microsoft":
        move_x = move_y = inner_x & inner_y
    else:  # mmpose: per axis (its y > 0 / x > 0 conditions included)
        move_x = inner_x & (py > 0)
        move_y = inner_y & (px > 0)
    diff_x = at(py, (px + 1).clamp(max=width - 1)) - at(py, (px - 1).clamp(min=0))
    diff_y = at((py + 1).clamp(max=height - 1), px) - at((py - 1).clamp(min=0), px)
    x = px.float() + torch.where(move_x, torch.sign(diff_x) * 0.25, 0.0)
    y = py.float() + torch.where(move_y, torch.sign(diff_y) * 0.25, 0.0)
    return torch.stack([x, y], dim=-1), scores


def _quarter_offset(heatmaps: np.ndarray, coords: np.ndarray, rule: str) -> None:
    """In place: shift each argmax a quarter pixel toward its higher neighbour, by ``rule``."""
    n, k, height, width = heatmaps.shape
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    inner_x = (px > 1) & (px < width - 1)
    inner_y = (py > 1) & (py < height - 1)
    if rule == "microsoft":
        move_x = move_y = inner_x & inner_y
    else:  # mmpose: per axis (its y > 0 / x > 0 conditions included)
        move_x = inner_x & (py > 0)
        move_y = inner_y & (px > 0)
    xr = np.clip(px + 1, 0, width - 1)
    xl = np.clip(px - 1, 0, width - 1)
    yd = np.clip(py + 1, 0, height - 1)
    yu = np.clip(py - 1, 0, height - 1)
    diff_x = heatmaps[ni, ki, py, xr] - heatmaps[ni, ki, py, xl]
    diff_y = heatmaps[ni, ki, yd, px] - heatmaps[ni, ki, yu, px]
    coords[..., 0] += np.where(move_x, np.sign(diff_x) * 0.25, 0.0)
    coords[..., 1] += np.where(move_y, np.sign(diff_y) * 0.25, 0.0)


def _dark_refine(heatmaps: np.ndarray, coords: np.ndarray, kernel: int) -> np.ndarray:
    """DARK as its authors (and mmpose) compute it; see :func:`decode_heatmaps`."""
    if kernel % 2 != 1 or kernel < 1:
        raise ValueError(f"dark_blur_kernel must be a positive odd number, got {kernel}")
    n, k, height, width = heatmaps.shape
    blurred = np.empty_like(heatmaps)
    for i in range(n):
        for j in range(k):
            original_max = heatmaps[i, j].max()
            # Zero border, as the authors pad by the kernel radius before blurring.
            smooth = cv2.GaussianBlur(
                heatmaps[i, j], (kernel, kernel), 0, borderType=cv2.BORDER_CONSTANT
            )
            # Keep the peak height (DARK's modulation); an all-zero heatmap stays zero.
            smooth_max = smooth.max()
            if smooth_max > 0:
                smooth *= original_max / smooth_max
            blurred[i, j] = smooth
    log_hm = np.log(np.maximum(blurred, 1e-10))
    # Pad by two so the indexing below stays in range; the inside test excludes padded values.
    padded = np.pad(log_hm, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    inside = (px > 1) & (px < width - 2) & (py > 1) & (py < height - 2)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(dy: int, dx: int) -> np.ndarray:
        return padded[ni, ki, py + 2 + dy, px + 2 + dx].astype(np.float64)

    center = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * center + at(0, -2))
    dyy = 0.25 * (at(2, 0) - 2 * center + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    valid = inside & (det != 0)
    safe_det = np.where(valid, det, 1.0)
    # -H^-1 g with H^-1 = [[dyy, -dxy], [-dxy, dxx]] / det
    step_x = -(dyy * dx - dxy * dy) / safe_det
    step_y = -(dxx * dy - dxy * dx) / safe_det
    refined = coords.astype(np.float64)
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
