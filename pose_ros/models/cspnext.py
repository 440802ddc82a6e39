"""CSPNeXt: the convolutional trunk of RTMDet (Lyu et al., "RTMDet: An Empirical Study of
Designing Real-Time Object Detectors", 2022) and RTMPose (Jiang et al., 2023).

Built here from small modules, configured by constructor arguments. Attribute names follow the
published mmdet / mmpose files (``stem.0.conv.weight``, ``stage2.1.blocks.0.conv2.depthwise_conv.
bn.running_mean``...), so their state dicts load key for key under a ``backbone.`` prefix:

* :class:`ConvNormAct`: conv (no bias) -> BatchNorm -> SiLU, as ``conv``, ``bn``, ``activate``;
* :class:`DepthwiseSeparableConv`: a depthwise :class:`ConvNormAct` then a pointwise one;
* :class:`CSPNeXtBlock`: 3x3 conv then a 5x5 depthwise-separable conv, with a residual;
* :class:`CSPLayer`: two 1x1 branches, one through the blocks, joined, channel attention, 1x1;
* :class:`SPPBottleneck`: max pooling at three sizes, concatenated;
* :class:`CSPNeXt`: stem (three 3x3 convs, stride 2 in total) and four stages that each halve
  the size: (N, 3, H, W) -> stage k (N, C_k, H / 2^(k+1), W / 2^(k+1)).

BatchNorm uses PyTorch's defaults (eps 1e-5, momentum 0.1): the published RTMPose and RTMDet
configurations train with ``SyncBN`` at its defaults, not with the 1e-3 eps of the modules'
defaults in mmdet, and eps changes the output of the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "CSPNEXT_P5_STAGES",
    "CSPLayer",
    "CSPNeXt",
    "CSPNeXtBlock",
    "ChannelAttention",
    "ConvNormAct",
    "DepthwiseSeparableConv",
    "SPPBottleneck",
    "cspnext_stage_channels",
]

#: The P5 architecture: per stage (in channels, out channels, blocks, residual in blocks, SPP),
#: before the width and depth factors.
CSPNEXT_P5_STAGES: tuple[tuple[int, int, int, bool, bool], ...] = (
    (64, 128, 3, True, False),
    (128, 256, 6, True, False),
    (256, 512, 6, True, False),
    (512, 1024, 3, False, True),
)


class ConvNormAct(nn.Module):
    """Conv2d (no bias: the BatchNorm after it has one) -> BatchNorm2d -> SiLU.

    (N, in_channels, H, W) -> (N, out_channels, H', W') with H' = (H + 2p - k) / stride + 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=norm_eps)
        self.activate = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k :class:`ConvNormAct` (one filter per channel) then a pointwise 1x1 one.

    (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvNormAct(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            groups=in_channels,
            norm_eps=norm_eps,
        )
        self.pointwise_conv = ConvNormAct(in_channels, out_channels, 1, norm_eps=norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


def _conv3x3(
    in_channels: int, out_channels: int, *, stride: int, depthwise: bool, norm_eps: float
) -> nn.Module:
    """A 3x3 :class:`ConvNormAct`, or its depthwise-separable form (RTMDet-nano)."""
    if depthwise:
        return DepthwiseSeparableConv(
            in_channels, out_channels, 3, stride=stride, norm_eps=norm_eps
        )
    return ConvNormAct(in_channels, out_channels, 3, stride=stride, norm_eps=norm_eps)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation without reduction: x * hardsigmoid(conv1x1(mean over H, W of x)).

    (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.act(self.fc(self.global_avgpool(x)))


class CSPNeXtBlock(nn.Module):
    """3x3 conv (C_in -> C_out) then a 5x5 depthwise-separable conv, plus the input when
    ``residual`` and the channel counts agree. (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        residual: bool = True,
        depthwise: bool = False,
        kernel_size: int = 5,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(
            in_channels, out_channels, stride=1, depthwise=depthwise, norm_eps=norm_eps
        )
        self.conv2 = DepthwiseSeparableConv(
            out_channels, out_channels, kernel_size, norm_eps=norm_eps
        )
        self.residual = residual and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.residual else out


class CSPLayer(nn.Module):
    """Cross-stage partial layer with CSPNeXt blocks.

    A 1x1 ``main_conv`` branch goes through ``num_blocks`` blocks at ``mid`` =
    ``out_channels * expand_ratio`` channels, a 1x1 ``short_conv`` branch does not; both are
    concatenated (2 * mid channels), optionally reweighted by :class:`ChannelAttention`, and a
    1x1 ``final_conv`` gives ``out_channels``. (N, C_in, H, W) -> (N, C_out, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_blocks: int = 1,
        expand_ratio: float = 0.5,
        residual: bool = True,
        depthwise: bool = False,
        channel_attention: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvNormAct(in_channels, mid, 1, norm_eps=norm_eps)
        self.short_conv = ConvNormAct(in_channels, mid, 1, norm_eps=norm_eps)
        self.final_conv = ConvNormAct(2 * mid, out_channels, 1, norm_eps=norm_eps)
        self.blocks = nn.Sequential(
            *(
                CSPNeXtBlock(mid, mid, residual=residual, depthwise=depthwise, norm_eps=norm_eps)
                for _ in range(num_blocks)
            )
        )
        self.channel_attention = channel_attention
        if channel_attention:
            self.attention = ChannelAttention(2 * mid)

    def forward(self, x: Tensor) -> Tensor:
        joined = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        if self.channel_attention:
            joined = self.attention(joined)
        return self.final_conv(joined)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: 1x1 conv to C_in / 2, that and its max pools (stride 1, sizes
    ``kernel_sizes``) concatenated, 1x1 conv to C_out. (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_sizes: Sequence[int] = (5, 9, 13),
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvNormAct(in_channels, mid, 1, norm_eps=norm_eps)
        self.poolings = nn.ModuleList(
            nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2) for k in kernel_sizes
        )
        self.conv2 = ConvNormAct(mid * (len(kernel_sizes) + 1), out_channels, 1, norm_eps=norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *(pool(x) for pool in self.poolings)], dim=1))


def cspnext_stage_channels(widen_factor: float) -> tuple[int, ...]:
    """Output channels of the stem and the four P5 stages at ``widen_factor``
    (0.375 -> (24, 48, 96, 192, 384), 0.5 -> (32, 64, 128, 256, 512))."""
    stem = int(CSPNEXT_P5_STAGES[0][0] * widen_factor)
    return (stem, *(int(stage[1] * widen_factor) for stage in CSPNEXT_P5_STAGES))


class CSPNeXt(nn.Module):
    """The CSPNeXt P5 trunk.

    ``stem`` (three 3x3 convs, the first of stride 2) then ``stage1`` ... ``stage4``, each a
    stride-2 3x3 conv, (stage 4) an :class:`SPPBottleneck`, and a :class:`CSPLayer`. For
    (N, 3, H, W) input, stage k gives (N, C_k, H / 2^(k+1), W / 2^(k+1)), C from
    :func:`cspnext_stage_channels`; the output is the tuple of the stages in ``out_indices``
    (0 = stem, 4 = stage4).

    Args:
        deepen_factor: blocks per stage = max(round(blocks * deepen_factor), 1).
        widen_factor: channels multiplier.
        out_indices: which outputs to return, in order.
        depthwise: depthwise-separable 3x3 convs in the stage entries and blocks (RTMDet-nano).
        expand_ratio: hidden width of the CSP layers.
        channel_attention: :class:`ChannelAttention` in every CSP layer.
        norm_eps: BatchNorm epsilon.
    """

    def __init__(
        self,
        *,
        deepen_factor: float = 1.0,
        widen_factor: float = 1.0,
        out_indices: Sequence[int] = (2, 3, 4),
        depthwise: bool = False,
        expand_ratio: float = 0.5,
        channel_attention: bool = True,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not out_indices or any(not 0 <= i <= len(CSPNEXT_P5_STAGES) for i in out_indices):
            raise ValueError(f"out_indices must be in 0..4, got {tuple(out_indices)}")
        self.out_indices = tuple(out_indices)
        self.channels = cspnext_stage_channels(widen_factor)
        stem = self.channels[0]
        # The mmdet expression, int(64 * w // 2): the floor division happens on the float.
        half = int(CSPNEXT_P5_STAGES[0][0] * widen_factor // 2)
        self.stem = nn.Sequential(
            ConvNormAct(3, half, 3, stride=2, norm_eps=norm_eps),
            ConvNormAct(half, half, 3, norm_eps=norm_eps),
            ConvNormAct(half, stem, 3, norm_eps=norm_eps),
        )
        self.stage_names = ["stem"]
        for index, (c_in, c_out, blocks, residual, spp) in enumerate(CSPNEXT_P5_STAGES, start=1):
            c_in, c_out = int(c_in * widen_factor), int(c_out * widen_factor)
            layers: list[nn.Module] = [
                _conv3x3(c_in, c_out, stride=2, depthwise=depthwise, norm_eps=norm_eps)
            ]
            if spp:
                layers.append(SPPBottleneck(c_out, c_out, norm_eps=norm_eps))
            layers.append(
                CSPLayer(
                    c_out,
                    c_out,
                    num_blocks=max(round(blocks * deepen_factor), 1),
                    expand_ratio=expand_ratio,
                    residual=residual,
                    depthwise=depthwise,
                    channel_attention=channel_attention,
                    norm_eps=norm_eps,
                )
            )
            self.add_module(f"stage{index}", nn.Sequential(*layers))
            self.stage_names.append(f"stage{index}")

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of each returned output."""
        return tuple(self.channels[i] for i in self.out_indices)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(N, 3, H, W) -> the outputs of ``out_indices`` (see the class docstring)."""
        outputs = []
        for index, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if index in self.out_indices:
                outputs.append(x)
        return tuple(outputs)
