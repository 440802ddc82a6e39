"""The heatmap loss of Simple Baselines and the SimCC loss of RTMPose."""

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


def kl_discrete_loss(
    predicted: tuple[torch.Tensor, torch.Tensor],
    target: tuple[torch.Tensor, torch.Tensor],
    weights: torch.Tensor,
    *,
    beta: float = 10.0,
    label_softmax: bool = True,
    label_beta: float = 10.0,
) -> torch.Tensor:
    """mmpose's KLDiscretLoss (RTMPose's ``beta=10, label_softmax=True``).

    For each axis: KL(labels || softmax(beta * predicted)) averaged over the bins, labels being
    ``softmax(label_beta * target)`` (or the targets as given), times the keypoint's weight;
    summed over the batch and keypoints of both axes, divided by K.

    Args:
        predicted: (simcc_x (N, K, Wx), simcc_y (N, K, Wy)) logits.
        target: the Gaussian targets of the same shapes.
        weights: (N, K) target weights.

    Returns:
        Scalar tensor (computed in fp32).
    """
    keypoints = predicted[0].shape[1]
    weight = weights.float().reshape(-1)
    total = predicted[0].new_zeros((), dtype=torch.float32)
    for output, labels in zip(predicted, target, strict=True):
        output = output.float().reshape(-1, output.shape[-1])
        labels = labels.float().reshape(-1, labels.shape[-1])
        log_p = torch.log_softmax(output * beta, dim=1)
        if label_softmax:
            labels = torch.softmax(labels * label_beta, dim=1)
        divergence = torch.nn.functional.kl_div(log_p, labels, reduction="none").mean(dim=1)
        total = total + (divergence * weight).sum()
    return total / keypoints
