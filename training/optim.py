"""Optimizers, learning-rate schedules and the weight average of the training loop.

* :func:`build_optimizer`: Adam (the Simple Baselines recipe) or AdamW (RTMPose's), optionally
  without weight decay on normalisation weights and biases (mmpose's ``paramwise_cfg``
  ``norm_decay_mult=0, bias_decay_mult=0``).
* :func:`build_scheduler`: ``multistep`` (stepped once per epoch) or ``flat_cosine`` (stepped
  once per iteration: a linear warm-up, a flat stretch, then a cosine down to
  ``lr * min_lr_factor`` from ``cosine_start_epoch`` to the last epoch; mmpose's RTMPose
  ``param_scheduler``: LinearLR over 1000 iterations, CosineAnnealingLR over the second half).
* :class:`ExpMomentumEMA`: mmdet's exponential moving average of the weights and buffers,
  whose momentum starts near 1 and decays to ``momentum``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from .config import ConfigError, OptimConfig

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw")
SCHEDULES: tuple[str, ...] = ("multistep", "flat_cosine")

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def parameter_groups(model: nn.Module, config: OptimConfig) -> list[dict[str, Any]]:
    """The trainable parameters, split into a decayed and an undecayed group when
    ``decay_norm_and_bias`` is False (normalisation weights, scalar scales and biases)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if config.decay_norm_and_bias or not config.weight_decay:
        return [{"params": [p for _, p in trainable]}]
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(False)
    }
    undecayed = [
        p for n, p in trainable if id(p) in norm_params or n.endswith("bias") or p.ndim <= 1
    ]
    ids = {id(p) for p in undecayed}
    decayed = [p for _, p in trainable if id(p) not in ids]
    return [{"params": decayed}, {"params": undecayed, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over ``model``'s trainable parameters, at ``config.lr``."""
    groups = parameter_groups(model, config)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    raise ConfigError(f"optim.optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, iterations_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """(the schedule, whether it steps every iteration rather than every epoch)."""
    if config.schedule == "multistep":
        if config.warmup_iters:
            raise ConfigError("optim.warmup_iters applies to the flat_cosine schedule only")
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=config.milestones, gamma=config.gamma
        )
        return scheduler, False
    if config.schedule != "flat_cosine":
        raise ConfigError(f"optim.schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    factor = flat_cosine_factor(config, iterations_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True


def flat_cosine_factor(config: OptimConfig, iterations_per_epoch: int):
    """The ``flat_cosine`` multiplier of the base lr at an iteration (see the module
    docstring)."""
    total = config.epochs * iterations_per_epoch
    start_epoch = (
        config.epochs // 2 if config.cosine_start_epoch is None else config.cosine_start_epoch
    )
    if not 0 <= start_epoch <= config.epochs:
        raise ConfigError(
            f"optim.cosine_start_epoch must be within 0..{config.epochs}, got {start_epoch}"
        )
    cosine_start = start_epoch * iterations_per_epoch
    warmup, warmup_start = config.warmup_iters, config.warmup_start_factor
    floor = config.min_lr_factor

    def factor(iteration: int) -> float:
        value = 1.0
        if warmup and iteration < warmup:
            value = warmup_start + (1 - warmup_start) * iteration / warmup
        if iteration >= cosine_start and total > cosine_start:
            progress = min(iteration - cosine_start, total - cosine_start) / (total - cosine_start)
            value *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return value

    return factor


class ExpMomentumEMA:
    """Exponential moving average of a model's parameters and buffers (mmdet's
    ExpMomentumEMA with ``update_buffers=True``): after step t,
    ``average = (1 - m_t) * average + m_t * model`` with
    ``m_t = (1 - momentum) * exp(-(1 + t) / gamma) + momentum``: nearly the model at first,
    an average over about 1 / momentum steps later.

    ``module`` is the averaged copy (evaluated and saved instead of the model).
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: float = 2000.0) -> None:
        if not 0 < momentum < 1:
            raise ConfigError(f"train.ema_momentum must be in (0, 1), got {momentum}")
        if gamma <= 0:
            raise ConfigError(f"train.ema_gamma must be positive, got {gamma}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.momentum = momentum
        self.gamma = gamma
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        momentum = (1 - self.momentum) * math.exp(-(1 + self.steps) / self.gamma) + self.momentum
        averaged = self.module.state_dict()
        for key, value in model.state_dict().items():
            target = averaged[key]
            if target.is_floating_point():
                target.mul_(1 - momentum).add_(value.detach(), alpha=momentum)
            else:
                target.copy_(value)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
