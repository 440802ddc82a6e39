"""RTMPose (Jiang et al., "RTMPose: Real-Time Multi-Person Pose Estimation based on MMPose",
2023): a CSPNeXt trunk and a SimCC head with a gated attention unit.

The head (:class:`RTMCCHead`) turns the trunk's stride-32 features into two 1-D score vectors
per keypoint (:mod:`pose_ros.simcc`):

    features (N, C, H/32, W/32) -> 7x7 conv -> (N, K, H/32 * W/32) one token per keypoint
    -> ScaleNorm -> linear -> (N, K, 256) -> gated attention unit over the K tokens
    -> linear x classifier (N, K, W * r), linear y classifier (N, K, H * r)

with r = ``simcc_split_ratio`` (2). The gated attention unit (:class:`GatedAttentionUnit`, Hua
et al., "Transformer Quality in Linear Time", 2022) is one attention layer whose "heads" are a
per-token gate: ``u * (relu(q k^T / sqrt(s))^2 v)``, with a learnt residual scale.

Attribute names follow the published mmpose files (``backbone.*`` = :class:`CSPNeXt`,
``head.final_layer``, ``head.mlp``, ``head.gau.uv``, ``head.cls_x``...), so their state dicts
load key for key. The multi-context attention of :mod:`pose_ros.models.attention` is not part of
these networks: it is a head of the heatmap networks only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pose_ros.keypoints import NUM_KEYPOINTS
from pose_ros.models.cspnext import CSPNeXt, cspnext_stage_channels
from pose_ros.models.preprocessing import Preprocessing
from pose_ros.simcc import SIMCC_SPLIT_RATIO, simcc_lengths
from pose_ros.types import OUTPUT_SIMCC

__all__ = [
    "RTMPOSE_VARIANTS",
    "GatedAttentionUnit",
    "RTMCCHead",
    "RTMPose",
    "RTMPoseVariant",
    "ResidualScale",
    "ScaleNorm",
    "build_rtmpose",
]

#: The trunk's total stride: the head sees (H/32, W/32) features.
TRUNK_STRIDE = 32


@dataclass(frozen=True)
class RTMPoseVariant:
    """Size of one published RTMPose network (mmpose's ``rtmpose-{t,s,m,l}`` COCO configs)."""

    deepen_factor: float
    widen_factor: float


#: Name -> trunk size; every variant has the same head (hidden 256, s 128, 7x7 final conv).
RTMPOSE_VARIANTS: dict[str, RTMPoseVariant] = {
    "rtmpose_t": RTMPoseVariant(deepen_factor=0.167, widen_factor=0.375),
    "rtmpose_s": RTMPoseVariant(deepen_factor=0.33, widen_factor=0.5),
    "rtmpose_m": RTMPoseVariant(deepen_factor=0.67, widen_factor=0.75),
    "rtmpose_l": RTMPoseVariant(deepen_factor=1.0, widen_factor=1.0),
}


class ScaleNorm(nn.Module):
    """x / max(||x|| / sqrt(d), eps) * g over the last axis (one learnt scalar ``g``).

    (..., d) -> (..., d).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class ResidualScale(nn.Module):
    """Elementwise learnt scale of the residual branch: x * scale, scale (d,) starting at 1."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class GatedAttentionUnit(nn.Module):
    """Self-attention over K tokens with a gated output (the RTMPose head's ``gau``).

    (N, K, d) -> ScaleNorm -> linear ``uv`` (d -> 2e + s) -> SiLU -> u (e), v (e), base (s);
    q, k = base * gamma + beta (two learnt affine maps, (2, s)); kernel = relu(q k^T / sqrt(s))^2
    (N, K, K); out = linear ``o``(u * kernel v) (e -> d) + ``res_scale``(input) -> (N, K, d).

    Args:
        dim: d, the token width (in = out, so the residual applies).
        attention_dim: s.
        expansion_factor: e = d * expansion_factor.
        eps: ScaleNorm epsilon.
    """

    def __init__(
        self, dim: int, *, attention_dim: int = 128, expansion_factor: float = 2, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.e = int(dim * expansion_factor)
        self.s = attention_dim
        self.ln = ScaleNorm(dim, eps=eps)
        self.uv = nn.Linear(dim, 2 * self.e + self.s, bias=False)
        self.gamma = nn.Parameter(torch.rand(2, self.s))
        self.beta = nn.Parameter(torch.rand(2, self.s))
        self.o = nn.Linear(self.e, dim, bias=False)
        self.res_scale = ResidualScale(dim)
        self.act_fn = nn.SiLU(inplace=True)
        self.sqrt_s = math.sqrt(attention_dim)

    def attention_macs(self, tokens: int) -> int:
        """Multiply-accumulates of the two token-by-token products for one sample (q k^T and
        kernel v), which no Linear layer accounts for."""
        return tokens * tokens * (self.s + self.e)

    def forward(self, x: Tensor) -> Tensor:
        uv = self.act_fn(self.uv(self.ln(x)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=-1)
        qk = base.unsqueeze(2) * self.gamma + self.beta  # (N, K, 2, s)
        q, k = torch.unbind(qk, dim=2)
        kernel = torch.square(F.relu(torch.bmm(q, k.transpose(1, 2)) / self.sqrt_s))
        return self.res_scale(x) + self.o(u * torch.bmm(kernel, v))


class RTMCCHead(nn.Module):
    """The RTMPose SimCC head (see the module docstring).

    Args:
        in_channels: C of the trunk features.
        num_keypoints: K.
        input_size: (H, W) of the network input.
        simcc_split_ratio: r, bins per input pixel.
        hidden_dims: token width of the attention unit.
        attention_dim: s of the attention unit.
        expansion_factor: e = hidden_dims * expansion_factor.
        final_layer_kernel_size: kernel of the conv from C to K channels.
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        input_size: tuple[int, int],
        *,
        simcc_split_ratio: float = SIMCC_SPLIT_RATIO,
        hidden_dims: int = 256,
        attention_dim: int = 128,
        expansion_factor: float = 2,
        final_layer_kernel_size: int = 7,
    ) -> None:
        super().__init__()
        height, width = input_size
        tokens_in = (height // TRUNK_STRIDE) * (width // TRUNK_STRIDE)
        length_y, length_x = simcc_lengths(input_size, simcc_split_ratio)
        self.final_layer = nn.Conv2d(
            in_channels,
            num_keypoints,
            final_layer_kernel_size,
            padding=final_layer_kernel_size // 2,
        )
        self.mlp = nn.Sequential(
            ScaleNorm(tokens_in), nn.Linear(tokens_in, hidden_dims, bias=False)
        )
        self.gau = GatedAttentionUnit(
            hidden_dims, attention_dim=attention_dim, expansion_factor=expansion_factor
        )
        self.cls_x = nn.Linear(hidden_dims, length_x, bias=False)
        self.cls_y = nn.Linear(hidden_dims, length_y, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # mmpose's initialisation of the head: convs N(0, 0.001), linear layers N(0, 0.01),
        # zero biases; gamma and beta keep their uniform(0, 1) start.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, H/32, W/32) -> (simcc_x (N, K, W * r), simcc_y (N, K, H * r))."""
        tokens = self.gau(self.mlp(torch.flatten(self.final_layer(features), 2)))
        return self.cls_x(tokens), self.cls_y(tokens)


class RTMPose(nn.Module):
    """CSPNeXt trunk (its last stage only) and :class:`RTMCCHead`.

    256x192 input, RTMPose-s: (N, 3, 256, 192) -> trunk (N, 512, 8, 6) -> simcc_x (N, 17, 384),
    simcc_y (N, 17, 512). Decode with :func:`pose_ros.simcc.decode_simcc`.

    Args:
        name: the architecture name recorded in ``arch`` (e.g. "rtmpose_s").
        deepen_factor, widen_factor: trunk size (:data:`RTMPOSE_VARIANTS`).
        num_keypoints: K.
        preprocessing: input convention; default RGB, ImageNet mean/std, 256x192 (mmpose's
            RTMPose normalisation: mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375)
            on RGB pixels 0..255, which is the same numbers).
        simcc_split_ratio, hidden_dims, attention_dim, expansion_factor,
        final_layer_kernel_size: of the head (:class:`RTMCCHead`).

    Attributes:
        output_kind: :data:`pose_ros.types.OUTPUT_SIMCC`: ``forward`` returns (simcc_x, simcc_y).
        output_names: names of the two outputs in exported graphs (mmpose's own names).
        arch: ``{"name": ..., **construction kwargs}``; ``build_pose_model(**arch)`` rebuilds it.
    """

    output_kind = OUTPUT_SIMCC
    output_names = ("simcc_x", "simcc_y")
    family = "rtmpose"

    def __init__(
        self,
        name: str = "rtmpose_s",
        *,
        deepen_factor: float = 0.33,
        widen_factor: float = 0.5,
        num_keypoints: int = NUM_KEYPOINTS,
        preprocessing: Preprocessing | None = None,
        simcc_split_ratio: float = SIMCC_SPLIT_RATIO,
        hidden_dims: int = 256,
        attention_dim: int = 128,
        expansion_factor: float = 2,
        final_layer_kernel_size: int = 7,
    ) -> None:
        super().__init__()
        if preprocessing is None:
            preprocessing = Preprocessing()
        if not isinstance(preprocessing, Preprocessing):
            raise ValueError(
                f"preprocessing must be a Preprocessing or None, got {type(preprocessing).__name__}"
            )
        if any(v % TRUNK_STRIDE for v in preprocessing.input_size):
            raise ValueError(
                f"input_size must be two multiples of {TRUNK_STRIDE} (e.g. (256, 192)), got "
                f"{preprocessing.input_size}"
            )
        if not isinstance(num_keypoints, int) or num_keypoints < 1:
            raise ValueError(f"num_keypoints must be a positive integer, got {num_keypoints!r}")
        if simcc_split_ratio <= 0:
            raise ValueError(f"simcc_split_ratio must be positive, got {simcc_split_ratio}")
        self.num_keypoints = num_keypoints
        self.preprocessing = preprocessing
        self.simcc_split_ratio = float(simcc_split_ratio)
        self.backbone = CSPNeXt(
            deepen_factor=deepen_factor, widen_factor=widen_factor, out_indices=(4,)
        )
        self.head = RTMCCHead(
            cspnext_stage_channels(widen_factor)[-1],
            num_keypoints,
            preprocessing.input_size,
            simcc_split_ratio=simcc_split_ratio,
            hidden_dims=hidden_dims,
            attention_dim=attention_dim,
            expansion_factor=expansion_factor,
            final_layer_kernel_size=final_layer_kernel_size,
        )
        self.arch: dict[str, Any] = {
            "name": name,
            "num_keypoints": num_keypoints,
            "input_size": list(preprocessing.input_size),
            "deepen_factor": deepen_factor,
            "widen_factor": widen_factor,
            "simcc_split_ratio": self.simcc_split_ratio,
            "hidden_dims": hidden_dims,
            "attention_dim": attention_dim,
            "expansion_factor": expansion_factor,
            "final_layer_kernel_size": final_layer_kernel_size,
        }

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the input crop the weights expect."""
        return self.preprocessing.input_size

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(length of simcc_y, length of simcc_x): the output's resolution per axis, in bins
        (the place a heatmap network's (h, w) has in runners' metadata)."""
        return simcc_lengths(self.input_size, self.simcc_split_ratio)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) normalised crops -> (simcc_x (N, K, W * r), simcc_y (N, K, H * r))."""
        return self.head(self.backbone(x)[-1])


def build_rtmpose(
    name: str,
    *,
    num_keypoints: int = NUM_KEYPOINTS,
    preprocessing: Preprocessing | None = None,
    **options: Any,
) -> RTMPose:
    """A randomly initialised RTMPose of a :data:`RTMPOSE_VARIANTS` name; ``options`` override
    the variant's trunk size or the head (keyword arguments of :class:`RTMPose`)."""
    if name not in RTMPOSE_VARIANTS:
        raise ValueError(f"unknown RTMPose variant {name!r}; valid: {', '.join(RTMPOSE_VARIANTS)}")
    variant = RTMPOSE_VARIANTS[name]
    allowed = {
        "deepen_factor",
        "widen_factor",
        "simcc_split_ratio",
        "hidden_dims",
        "attention_dim",
        "expansion_factor",
        "final_layer_kernel_size",
    }
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)} do not apply to {name} (options: {', '.join(sorted(allowed))})"
        )
    settings: dict[str, Any] = {
        "deepen_factor": variant.deepen_factor,
        "widen_factor": variant.widen_factor,
        **options,
    }
    return RTMPose(name, num_keypoints=num_keypoints, preprocessing=preprocessing, **settings)
