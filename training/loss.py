"""The heatmap loss of Simple Baselines."""

from __future__ import annotations

import torch


def joints_mse_loss(
    predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted heatmap MSE in the reference's form.

    ``0.5 * mean_k MSE(predicted[:, k] * w[:, k], target[:, k] * w[:, k])``; every keypoint's MSE
    averages over the same N*h*w values, so this is half the mean over all elements.

    Args:
        predicted, target: (N, K, h, w) heatmaps (the loss is computed in fp32).
        weights: (N, K) target weights (0 for unlabelled keypoints and those outside the crop).

    Returns:
        Scalar tensor.
    """
    w = weights.float()[..., None, None]
    difference = predicted.float() * w - target.float() * w
    return 0.5 * difference.pow(2).mean()
