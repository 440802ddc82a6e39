"""ResNet trunk and deconvolution head shared by every pose network.

The trunk is torchvision's ResNet without ``avgpool`` and ``fc``; its modules are handed to the
pose network as top-level attributes (``conv1``, ``bn1``, ``layer1`` ... ``layer4``) so parameter
names match the published SimpleBaseline files (microsoft layout) without renaming.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

__all__ = [
    "RESNET_DEPTHS",
    "TRUNK_MODULE_NAMES",
    "build_resnet_trunk",
    "load_backbone_weights",
    "make_deconv_layers",
    "resnet_out_channels",
]

#: Depth -> (block type, blocks per stage) of the torchvision ResNets.
_RESNET_LAYOUT: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
RESNET_DEPTHS: tuple[int, ...] = tuple(_RESNET_LAYOUT)

#: The trunk modules in forward order; ``avgpool`` and ``fc`` of torchvision's ResNet are dropped.
TRUNK_MODULE_NAMES: tuple[str, ...] = (
    "conv1",
    "bn1",
    "relu",
    "maxpool",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
)


def resnet_out_channels(depth: int) -> int:
    """Channels of ``layer4``'s output: 512 for BasicBlock ResNets (18/34), 2048 otherwise."""
    block, _ = _layout(depth)
    return 512 * block.expansion


def resnet_block_layout(depth: int) -> tuple[type[nn.Module], tuple[int, int, int, int]]:
    """(block class, blocks per stage) of a ResNet depth."""
    return _layout(depth)


def depth_from_layout(bottleneck: bool, layer3_blocks: int) -> int | None:
    """Inverse of the layout table: the depth with that block type and layer3 length, or None."""
    for depth, (block, blocks) in _RESNET_LAYOUT.items():
        if (block is Bottleneck) == bottleneck and blocks[2] == layer3_blocks:
            return depth
    return None


def build_resnet_trunk(depth: int) -> dict[str, nn.Module]:
    """Randomly initialised torchvision ResNet-``depth`` trunk, as ``{name: module}``.

    Built with ``weights=None`` (no download); torchvision's own init (Kaiming normal convs,
    BN weight 1 / bias 0) is kept, as the reference does when it starts without ImageNet weights.
    Input (N, 3, H, W) -> ``layer4`` output (N, resnet_out_channels(depth), H/32, W/32).
    """
    _layout(depth)
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    return {name: getattr(resnet, name) for name in TRUNK_MODULE_NAMES}


def make_deconv_layers(in_channels: int, num_filters: int, num_layers: int = 3) -> nn.Sequential:
    """``num_layers`` x [ConvTranspose2d 4x4 s2 p1 (no bias) -> BN -> ReLU], each doubling H and W.

    Indices 3i, 3i+1, 3i+2 are deconv, BN and ReLU of stage i, the layout of both the microsoft and
    the mmpose heads, so their ``deconv_layers.*`` keys load unchanged. The deconvolution has no
    bias because the BatchNorm after it would cancel one. Init as the reference: deconv weights
    Normal(0, 0.001), BN weight 1 and bias 0.
    (N, in_channels, h, w) -> (N, num_filters, h * 2**num_layers, w * 2**num_layers).
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(num_layers):
        deconv = nn.ConvTranspose2d(
            channels,
            num_filters,
            kernel_size=4,
            stride=2,
            padding=1,
            output_padding=0,
            bias=False,
        )
        nn.init.normal_(deconv.weight, std=0.001)
        bn = nn.BatchNorm2d(num_filters)
        nn.init.ones_(bn.weight)
        nn.init.zeros_(bn.bias)
        layers += [deconv, bn, nn.ReLU(inplace=True)]
        channels = num_filters
    return nn.Sequential(*layers)


def load_backbone_weights(trunk: nn.Module, depth: int, weights: str | os.PathLike) -> list[str]:
    """Load ImageNet weights into the trunk modules of ``trunk`` (a pose network).

    Args:
        trunk: module whose ``conv1``, ``bn1``, ``layer1`` ... ``layer4`` are the ResNet trunk.
        depth: the ResNet depth, to pick torchvision's weights enum.
        weights: a path to a torchvision ResNet state_dict file (bare, or under "state_dict"), or
            the name of a torchvision weights enum member such as "IMAGENET1K_V2" or "DEFAULT",
            which torchvision downloads into its own cache (needs network access).

    Returns:
        The trunk keys that were loaded. The classifier (``fc.*``) is dropped.

    Raises:
        ValueError: an unknown enum name (valid ones listed) or a file that does not fit.
    """
    path = Path(os.fspath(weights)).expanduser()
    if path.is_file():
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict):
            raise ValueError(f"backbone_weights file {path} does not hold a state dict")
        source = f"file {path}"
    else:
        enum = torchvision.models.get_model_weights(f"resnet{depth}")
        name = os.fspath(weights)
        if name not in enum.__members__:
            raise ValueError(
                f"backbone_weights={name!r} is neither an existing file nor a torchvision "
                f"weights name for resnet{depth}; valid names: {sorted(enum.__members__)}"
            )
        # Downloads through torchvision (its cache, its hash check); never used by the tests.
        loaded = enum[name].get_state_dict(progress=True)
        source = f"torchvision {enum.__name__}.{name}"

    state = {k: v for k, v in loaded.items() if not k.startswith("fc.")}
    own = {k: v for k, v in trunk.state_dict().items() if k.split(".", 1)[0] in TRUNK_MODULE_NAMES}
    # Old files lack num_batches_tracked; it is a counter, not a weight: keep the model's value.
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"backbone weights from {source} do not fit resnet{depth}: "
            f"{len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(mismatched)} shape mismatches {mismatched[:5]}"
        )
    # strict=False only because the head's keys are absent from a trunk file by design.
    trunk.load_state_dict(state, strict=False)
    return sorted(state)


def _layout(depth: int) -> tuple[type[nn.Module], tuple[int, int, int, int]]:
    try:
        return _RESNET_LAYOUT[depth]
    except KeyError:
        raise ValueError(f"ResNet depth must be one of {RESNET_DEPTHS}, got {depth!r}") from None
