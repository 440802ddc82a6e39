"""RTMDet (Lyu et al., "RTMDet: An Empirical Study of Designing Real-Time Object Detectors",
2022): the person detector of the RTMPose pipeline, and the decoding of its output into boxes.

Network: a :class:`~pose_ros.models.cspnext.CSPNeXt` trunk (strides 8, 16, 32), a
:class:`CSPNeXtPAFPN` neck (top-down then bottom-up path, one width at every scale) and a
:class:`RTMDetSepBNHead` (per scale: two 3x3 convs for the classes, two for the box, then 1x1
predictions). For a (N, 3, S, S) input it returns, per stride s in (8, 16, 32), class logits
(N, C, S/s, S/s) and box distances (N, 4, S/s, S/s) in input pixels: left, top, right, bottom
from the point (x * s, y * s) of each cell.

Decoding (:func:`decode_rtmdet`) is mmdet's ``predict_by_feat`` for this head: sigmoid scores,
per level the candidates above ``score_threshold``, the best ``nms_pre`` of them, boxes from the
distances clipped to the input, then class-aware NMS (:func:`torchvision.ops.batched_nms`) and
the best ``max_detections``.

Attribute names follow the published mmdet files (``backbone.*``, ``neck.reduce_layers.0.conv``,
``bbox_head.cls_convs.0.1.depthwise_conv.bn``, ``bbox_head.rtm_reg.2``...), so their state dicts
load key for key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import ops

from pose_ros.models.cspnext import (
    ConvNormAct,
    CSPLayer,
    CSPNeXt,
    DepthwiseSeparableConv,
    cspnext_stage_channels,
)

__all__ = [
    "RTMDET_STRIDES",
    "RTMDET_VARIANTS",
    "CSPNeXtPAFPN",
    "RTMDet",
    "RTMDetSepBNHead",
    "RTMDetVariant",
    "build_rtmdet",
    "decode_rtmdet",
    "rtmdet_priors",
]

#: Strides of the three output scales.
RTMDET_STRIDES: tuple[int, ...] = (8, 16, 32)


@dataclass(frozen=True)
class RTMDetVariant:
    """One published RTMDet person detector (mmpose ``projects/rtmpose/rtmdet/person``).

    Attributes:
        deepen_factor, widen_factor: trunk size.
        neck_channels: width of the neck and head.
        neck_blocks: CSPNeXt blocks in each CSP layer of the neck.
        depthwise: depthwise-separable 3x3 convs in trunk, neck and head (nano).
        share_conv: the head's 3x3 convs are shared by the three scales (BatchNorms are not).
        exp_on_reg: box distances are exp(prediction) * stride rather than prediction * stride.
        num_classes: classes of the published weights; ``person_label`` is the person's index.
        input_size: the square input the weights were trained and evaluated at.
        score_threshold, nms_pre, nms_iou, max_detections: its ``test_cfg``.
    """

    deepen_factor: float
    widen_factor: float
    neck_channels: int
    neck_blocks: int
    depthwise: bool
    share_conv: bool
    exp_on_reg: bool
    num_classes: int
    person_label: int
    input_size: int
    score_threshold: float
    nms_pre: int
    nms_iou: float
    max_detections: int


RTMDET_VARIANTS: dict[str, RTMDetVariant] = {
    # rtmdet_nano_320-8xb32_coco-person.py: 1 class (person), COCO + Objects365 persons.
    "rtmdet_nano": RTMDetVariant(
        deepen_factor=0.33,
        widen_factor=0.25,
        neck_channels=64,
        neck_blocks=1,
        depthwise=True,
        share_conv=False,
        exp_on_reg=False,
        num_classes=1,
        person_label=0,
        input_size=320,
        score_threshold=0.05,
        nms_pre=1000,
        nms_iou=0.6,
        max_detections=100,
    ),
    # rtmdet_tiny_8xb32-300e_humanart.py: 80 classes, "person" (HumanArt's human) first.
    "rtmdet_tiny": RTMDetVariant(
        deepen_factor=0.167,
        widen_factor=0.375,
        neck_channels=96,
        neck_blocks=1,
        depthwise=False,
        share_conv=True,
        exp_on_reg=False,
        num_classes=80,
        person_label=0,
        input_size=640,
        score_threshold=0.001,
        nms_pre=30000,
        nms_iou=0.65,
        max_detections=300,
    ),
}


def _conv3x3(c_in: int, c_out: int, stride: int, depthwise: bool) -> nn.Module:
    if depthwise:
        return DepthwiseSeparableConv(c_in, c_out, 3, stride=stride)
    return ConvNormAct(c_in, c_out, 3, stride=stride)


class CSPNeXtPAFPN(nn.Module):
    """Path aggregation neck with CSP layers.

    Inputs (N, C_i, H_i, W_i) for strides 8, 16, 32 (C = ``in_channels``); top-down: each
    coarser map is reduced to the finer map's channels (1x1), upsampled 2x (nearest), joined and
    passed through a :class:`CSPLayer`; bottom-up: each finer result is downsampled (3x3,
    stride 2), joined with the next coarser one and passed through a CSP layer; a 3x3 conv
    brings every scale to ``out_channels``. Output: the three (N, out_channels, H_i, W_i).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        *,
        num_csp_blocks: int = 1,
        depthwise: bool = False,
        expand_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        levels = len(self.in_channels)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for index in range(levels - 1, 0, -1):
            coarse, fine = self.in_channels[index], self.in_channels[index - 1]
            self.reduce_layers.append(ConvNormAct(coarse, fine, 1))
            self.top_down_blocks.append(
                CSPLayer(
                    fine * 2,
                    fine,
                    num_blocks=num_csp_blocks,
                    expand_ratio=expand_ratio,
                    residual=False,
                    depthwise=depthwise,
                )
            )
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for index in range(levels - 1):
            channels = self.in_channels[index]
            self.downsamples.append(_conv3x3(channels, channels, 2, depthwise))
            self.bottom_up_blocks.append(
                CSPLayer(
                    channels * 2,
                    self.in_channels[index + 1],
                    num_blocks=num_csp_blocks,
                    expand_ratio=expand_ratio,
                    residual=False,
                    depthwise=depthwise,
                )
            )
        self.out_convs = nn.ModuleList(
            _conv3x3(channels, out_channels, 1, depthwise) for channels in self.in_channels
        )

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(inputs)}")
        levels = len(self.in_channels)
        # Top-down: inner[0] is the finest so far; the reduced coarse map replaces its input.
        inner = [inputs[-1]]
        for step, index in enumerate(range(levels - 1, 0, -1)):
            coarse = self.reduce_layers[step](inner[0])
            inner[0] = coarse
            joined = torch.cat([self.upsample(coarse), inputs[index - 1]], dim=1)
            inner.insert(0, self.top_down_blocks[step](joined))
        outputs = [inner[0]]
        for index in range(levels - 1):
            joined = torch.cat([self.downsamples[index](outputs[-1]), inner[index + 1]], dim=1)
            outputs.append(self.bottom_up_blocks[index](joined))
        return tuple(conv(x) for conv, x in zip(self.out_convs, outputs, strict=True))


class RTMDetSepBNHead(nn.Module):
    """RTMDet's head: per scale ``stacked_convs`` 3x3 convs for the classes (``cls_convs``)
    and for the box (``reg_convs``), then 1x1 ``rtm_cls`` (C logits) and ``rtm_reg`` (4
    distances). With ``share_conv`` the scales share the 3x3 conv weights (not the BatchNorms).

    Input: the neck's three (N, in_channels, H_i, W_i). Output: (class logits per scale
    (N, C, H_i, W_i), box distances per scale (N, 4, H_i, W_i) in input pixels).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        *,
        feat_channels: int | None = None,
        stacked_convs: int = 2,
        strides: Sequence[int] = RTMDET_STRIDES,
        depthwise: bool = False,
        share_conv: bool = True,
        exp_on_reg: bool = False,
    ) -> None:
        super().__init__()
        if share_conv and depthwise:
            raise ValueError("share_conv applies to plain 3x3 convs, not depthwise-separable ones")
        feat_channels = in_channels if feat_channels is None else feat_channels
        self.strides = tuple(strides)
        self.exp_on_reg = exp_on_reg
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.rtm_cls = nn.ModuleList()
        self.rtm_reg = nn.ModuleList()
        for _ in self.strides:
            channels = [in_channels] + [feat_channels] * (stacked_convs - 1)
            self.cls_convs.append(
                nn.ModuleList(_conv3x3(c, feat_channels, 1, depthwise) for c in channels)
            )
            self.reg_convs.append(
                nn.ModuleList(_conv3x3(c, feat_channels, 1, depthwise) for c in channels)
            )
            self.rtm_cls.append(nn.Conv2d(feat_channels, num_classes, 1))
            self.rtm_reg.append(nn.Conv2d(feat_channels, 4, 1))
        self._init_weights()
        if share_conv:
            for level in range(1, len(self.strides)):
                for i in range(stacked_convs):
                    self.cls_convs[level][i].conv = self.cls_convs[0][i].conv
                    self.reg_convs[level][i].conv = self.reg_convs[0][i].conv

    def _init_weights(self) -> None:
        # mmdet's: convs N(0, 0.01), zero biases, class biases at a prior probability of 0.01.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        prior_bias = -math.log((1 - 0.01) / 0.01)
        for conv in self.rtm_cls:
            nn.init.constant_(conv.bias, prior_bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        class_logits, distances = [], []
        for level, (x, stride) in enumerate(zip(features, self.strides, strict=True)):
            cls_feat, reg_feat = x, x
            for layer in self.cls_convs[level]:
                cls_feat = layer(cls_feat)
            for layer in self.reg_convs[level]:
                reg_feat = layer(reg_feat)
            reg = self.rtm_reg[level](reg_feat)
            if self.exp_on_reg:
                reg = reg.exp()
            class_logits.append(self.rtm_cls[level](cls_feat))
            distances.append(reg * stride)
        return class_logits, distances


class RTMDet(nn.Module):
    """The RTMDet network (trunk, neck, head); see the module docstring.

    Args:
        name: recorded in ``arch`` (e.g. "rtmdet_nano").
        variant: the sizes (:data:`RTMDET_VARIANTS`); ``num_classes`` may be overridden.

    Attributes:
        input_size: (S, S) the weights expect.
        color_order, mean, std: the input convention: BGR pixels 0..255 minus ``mean``, over
            ``std`` (mmdet's RTMDet configs: ``bgr_to_rgb=False``, mean (103.53, 116.28,
            123.675), std (57.375, 57.12, 58.395) in B, G, R order).
    """

    color_order = "BGR"
    mean: tuple[float, float, float] = (103.53, 116.28, 123.675)
    std: tuple[float, float, float] = (57.375, 57.12, 58.395)
    #: Gray of the letterbox border (mmdet's ``Pad`` in the test pipeline).
    pad_value = 114

    def __init__(self, name: str, variant: RTMDetVariant, *, num_classes: int | None = None):
        super().__init__()
        self.variant = variant
        self.num_classes = variant.num_classes if num_classes is None else num_classes
        channels = cspnext_stage_channels(variant.widen_factor)[2:]
        self.backbone = CSPNeXt(
            deepen_factor=variant.deepen_factor,
            widen_factor=variant.widen_factor,
            out_indices=(2, 3, 4),
            depthwise=variant.depthwise,
        )
        self.neck = CSPNeXtPAFPN(
            channels,
            variant.neck_channels,
            num_csp_blocks=variant.neck_blocks,
            depthwise=variant.depthwise,
        )
        self.bbox_head = RTMDetSepBNHead(
            self.num_classes,
            variant.neck_channels,
            depthwise=variant.depthwise,
            share_conv=variant.share_conv,
            exp_on_reg=variant.exp_on_reg,
        )
        self.arch: dict[str, Any] = {"name": name, "num_classes": self.num_classes}

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.variant.input_size, self.variant.input_size)

    @property
    def strides(self) -> tuple[int, ...]:
        return self.bbox_head.strides

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """(N, 3, S, S) normalised BGR -> (class logits, box distances), one of each per
        stride (see the module docstring)."""
        return self.bbox_head(self.neck(self.backbone(x)))


def build_rtmdet(name: str, *, num_classes: int | None = None) -> RTMDet:
    """A randomly initialised RTMDet of a :data:`RTMDET_VARIANTS` name."""
    if name not in RTMDET_VARIANTS:
        raise ValueError(f"unknown RTMDet variant {name!r}; valid: {', '.join(RTMDET_VARIANTS)}")
    return RTMDet(name, RTMDET_VARIANTS[name], num_classes=num_classes)


def rtmdet_priors(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    *,
    device: torch.device | None = None,
) -> list[Tensor]:
    """Per level the (H_i * W_i, 2) points ``(x * stride, y * stride)`` of its cells, row by
    row (mmdet's ``MlvlPointGenerator`` with offset 0)."""
    points = []
    for (height, width), stride in zip(sizes, strides, strict=True):
        ys, xs = torch.meshgrid(
            torch.arange(height, device=device, dtype=torch.float32) * stride,
            torch.arange(width, device=device, dtype=torch.float32) * stride,
            indexing="ij",
        )
        points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1))
    return points


def decode_rtmdet(
    class_logits: Sequence[Tensor],
    distances: Sequence[Tensor],
    strides: Sequence[int],
    *,
    max_shape: tuple[int, int],
    score_threshold: float = 0.05,
    nms_pre: int = 1000,
    nms_iou: float | None = 0.6,
    max_detections: int = 100,
) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes of one image from the head's output, as mmdet's ``predict_by_feat`` (see the
    module docstring).

    Args:
        class_logits: per level (1, C, H_i, W_i) or (C, H_i, W_i).
        distances: per level (1, 4, H_i, W_i) or (4, H_i, W_i), input pixels.
        strides: of the levels.
        max_shape: (H, W) boxes are clipped to (the padded input).
        score_threshold: candidates need a score above this.
        nms_pre: at most this many candidates per level, best first.
        nms_iou: class-aware NMS IoU; None keeps every candidate (no NMS, no limit).
        max_detections: boxes kept after NMS.

    Returns:
        boxes (M, 4) x1, y1, x2, y2 in input pixels, scores (M,), labels (M,) int64; sorted by
        score when NMS ran.
    """
    per_level = []
    sizes = [tuple(logits.shape[-2:]) for logits in class_logits]
    device = class_logits[0].device
    priors = rtmdet_priors(sizes, strides, device=device)
    for logits, dist, points in zip(class_logits, distances, priors, strict=True):
        classes = logits.shape[-3]
        scores = logits.reshape(classes, -1).t().sigmoid()  # (H*W, C)
        dist = dist.reshape(4, -1).t()  # (H*W, 4)
        valid = scores > score_threshold
        kept_scores = scores[valid]
        cells = torch.nonzero(valid)  # (n, 2): cell, class; row-major as mmdet
        kept_scores, order = kept_scores.sort(descending=True)
        order = order[:nms_pre]
        kept_scores = kept_scores[:nms_pre]
        cell, label = cells[order].unbind(dim=1)
        per_level.append((kept_scores, label, dist[cell], points[cell]))
    scores = torch.cat([item[0] for item in per_level])
    labels = torch.cat([item[1] for item in per_level])
    dist = torch.cat([item[2] for item in per_level]).float()
    points = torch.cat([item[3] for item in per_level])
    boxes = torch.stack(
        [
            points[:, 0] - dist[:, 0],
            points[:, 1] - dist[:, 1],
            points[:, 0] + dist[:, 2],
            points[:, 1] + dist[:, 3],
        ],
        dim=-1,
    )
    height, width = max_shape
    boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=height)
    if nms_iou is None:
        return boxes, scores, labels
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = ops.batched_nms(boxes, scores, labels, nms_iou)[:max_detections]
    return boxes[order], scores[order], labels[order]
