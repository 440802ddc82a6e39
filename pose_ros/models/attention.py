"""Multi-context attention blocks (after Chu et al., "Multi-Context Attention for Human Pose
Estimation", CVPR 2017), as used by :class:`pose_ros.models.posenet.AttentionPoseNet`.

An attention map is a per-pixel scalar computed from a feature map:

* CRF attention: a unary map U = conv3x3(F) (C -> 1) refined by T mean-field steps with one k x k
  spatial kernel K shared across the steps: Q_1 = sigmoid(K * U + U),
  Q_t = sigmoid(K * Q_{t-1} + U). Values in (0, 1).
* Softmax attention (the paper's weaker comparison): Q = softmax of U over all h*w positions,
  multiplied by h*w so a uniform map is 1 everywhere. Without that factor each value would be
  1/(h*w) (1/3072 at 64x48) and the attended features would vanish against the un-attended
  baseline; with it the map redistributes the feature energy without changing its total.

Init: the unary convs and K start Normal(0, 0.001) with zero bias, so U is nearly 0 and every
CRF map starts nearly 0.5 everywhere (the softmax map nearly 1): the network starts close to a
SimpleBaseline times a constant, and pretrained SimpleBaseline weights remain a sensible start.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ATTENTION_KINDS",
    "PART_OUTPUTS",
    "CRFAttention",
    "HolisticAttention",
    "PartAttention",
    "SoftmaxAttention",
    "crf_mean_field",
    "spatial_softmax_map",
]

ATTENTION_KINDS: tuple[str, ...] = ("crf", "softmax")
PART_OUTPUTS: tuple[str, ...] = ("heatmaps", "final_conv")

_ATTENTION_INIT_STD = 0.001


def crf_mean_field(unary: Tensor, kernel: nn.Conv2d, iterations: int) -> Tensor:
    """T mean-field steps: Q_1 = sigmoid(K(U) + U), Q_t = sigmoid(K(Q_{t-1}) + U).

    Args:
        unary: U, (N, M, h, w), one channel per map.
        kernel: K, a "same"-padded conv with M input and M output channels (grouped per map
            when M > 1), shared by all steps.
        iterations: T >= 1.

    Returns:
        Q_T, (N, M, h, w), values in (0, 1).
    """
    q = unary  # Q_0 := U makes step 1 the same formula as the later steps
    for _ in range(iterations):
        q = torch.sigmoid(kernel(q) + unary)
    return q


def spatial_softmax_map(unary: Tensor) -> Tensor:
    """Softmax over the h*w positions of each map, times h*w: (N, M, h, w) -> (N, M, h, w).

    The factor h*w makes a uniform map equal to 1 (see the module docstring).
    """
    n, m, h, w = unary.shape
    return torch.softmax(unary.reshape(n, m, h * w), dim=-1).reshape(n, m, h, w) * (h * w)


class CRFAttention(nn.Module):
    """One CRF attention map over a feature map.

    Args:
        in_channels: C of the features.
        iterations: T, the number of mean-field steps (>= 1).
        kernel_size: k of the spatial kernel K (odd, "same" padding).
    """

    def __init__(self, in_channels: int, iterations: int = 3, kernel_size: int = 3) -> None:
        super().__init__()
        _check_crf_args(iterations, kernel_size)
        self.iterations = iterations
        self.unary = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)
        # No bias on K: the unary conv already carries one, and a message-passing kernel is linear.
        self.kernel = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        _init_small(self.unary, self.kernel)

    def attention_map(self, features: Tensor) -> Tensor:
        """(N, C, h, w) -> Q_T, (N, 1, h, w)."""
        return crf_mean_field(self.unary(features), self.kernel, self.iterations)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, h, w) -> (features * Q_T (N, C, h, w), Q_T (N, 1, h, w))."""
        q = self.attention_map(features)
        return features * q, q


class SoftmaxAttention(nn.Module):
    """One spatial-softmax attention map over a feature map (the paper's comparison).

    Args:
        in_channels: C of the features.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.unary = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)
        _init_small(self.unary)

    def attention_map(self, features: Tensor) -> Tensor:
        """(N, C, h, w) -> (N, 1, h, w), positive, mean 1 over the h*w positions."""
        return spatial_softmax_map(self.unary(features))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, h, w) -> (features * map (N, C, h, w), map (N, 1, h, w))."""
        q = self.attention_map(features)
        return features * q, q


def make_attention_block(
    kind: str, in_channels: int, iterations: int = 3, kernel_size: int = 3
) -> CRFAttention | SoftmaxAttention:
    """A single-map block of ``kind`` ("crf" or "softmax")."""
    if kind == "crf":
        return CRFAttention(in_channels, iterations, kernel_size)
    if kind == "softmax":
        return SoftmaxAttention(in_channels)
    raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {kind!r}")


class HolisticAttention(nn.Module):
    """Holistic attention: one map per deconvolution scale, summed at the finest scale.

    For a 256x192 input the scales are the backbone output (8x6) and the outputs of deconv 1, 2
    and 3 (16x12, 32x24, 64x48). Each map is upsampled (nearest) to the finest size, the maps are
    summed, and the final deconvolution output is multiplied by the sum. The maps only weight the
    final features; the deconvolution path itself is the SimpleBaseline one.

    The origin's implementation reused the first scale's map for the second scale. Here every
    scale has its own block (``blocks[i]``) computed from its own features, as the design says.

    Args:
        in_channels: C of each scale's features, coarse to fine, e.g. (2048, 256, 256, 256).
        kind: "crf" or "softmax".
        iterations, kernel_size: CRF parameters (ignored for softmax).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        kind: str = "crf",
        iterations: int = 3,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            make_attention_block(kind, c, iterations, kernel_size) for c in in_channels
        )

    def forward(
        self, scale_features: Sequence[Tensor], target: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """Attend ``target`` with the summed maps of all scales.

        Args:
            scale_features: one (N, C_i, h_i, w_i) tensor per block, coarse to fine.
            target: (N, C, H, W), the final deconvolution output (usually the last scale).

        Returns:
            ``target * sum_i upsample(map_i)`` (N, C, H, W), and the maps [(N, 1, h_i, w_i)].
        """
        if len(scale_features) != len(self.blocks):
            raise ValueError(
                f"HolisticAttention has {len(self.blocks)} scales, got {len(scale_features)} inputs"
            )
        maps = [
            block.attention_map(f) for block, f in zip(self.blocks, scale_features, strict=True)
        ]
        size = target.shape[-2:]
        summed = maps[0].new_zeros(target.shape[0], 1, *size)
        for m in maps:
            summed = summed + F.interpolate(m, size=size, mode="nearest")
        return target * summed, maps


class PartAttention(nn.Module):
    """Part-wise attention: one attention map and one 1x1 conv (C -> 1) per keypoint.

    Part k computes ``h_k = conv1x1_k(F * Q_k)`` where Q_k is its own attention map of F. Two
    output modes:

    * ``part_output="heatmaps"`` (default): the K values h_k are the heatmaps.
    * ``part_output="final_conv"``: the K channels go through one more 1x1 conv K -> K (which
      lets parts borrow from each other); it starts as the identity, so both modes start equal.

    Efficient form: Q_k is a per-pixel scalar, so conv1x1_k(F * Q_k) = Q_k * (w_k . F) + b_k.
    All K parts are therefore one conv C -> K (``part_conv``, row k = part k) times the K maps, and
    the (N, K*C, H, W) tensor of K attended copies of F (17 x 256 channels) is never built. In the
    same way the K unary 3x3 convs (C -> 1 each) are one conv C -> K (``unary``), and the K
    shared CRF kernels are one depthwise conv (``kernel``, groups=K), so channel k never mixes
    with another part's map.

    ``part_conv`` has the shape of a SimpleBaseline ``final_layer`` (K, C, 1, 1), so a trained one
    can initialise it row for row (see ``init_from_simplebaseline``).

    Args:
        in_channels: C of the features (256).
        num_parts: K, the number of keypoints.
        kind: "crf" or "softmax".
        iterations, kernel_size: CRF parameters (ignored for softmax).
        part_output: "heatmaps" or "final_conv".
    """

    def __init__(
        self,
        in_channels: int,
        num_parts: int,
        kind: str = "crf",
        iterations: int = 3,
        kernel_size: int = 3,
        part_output: str = "heatmaps",
    ) -> None:
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {kind!r}")
        if part_output not in PART_OUTPUTS:
            raise ValueError(f"part_output must be one of {PART_OUTPUTS}, got {part_output!r}")
        self.kind = kind
        self.iterations = iterations
        self.part_output = part_output
        self.unary = nn.Conv2d(in_channels, num_parts, kernel_size=3, padding=1)
        self.kernel: nn.Conv2d | None = None
        if kind == "crf":
            _check_crf_args(iterations, kernel_size)
            self.kernel = nn.Conv2d(
                num_parts,
                num_parts,
                kernel_size,
                padding=kernel_size // 2,
                groups=num_parts,
                bias=False,
            )
            _init_small(self.unary, self.kernel)
        else:
            _init_small(self.unary)
        self.part_conv = nn.Conv2d(in_channels, num_parts, kernel_size=1)
        # As the SimpleBaseline final layer: Normal(0, 0.001), bias 0.
        nn.init.normal_(self.part_conv.weight, std=0.001)
        nn.init.zeros_(self.part_conv.bias)
        self.final_conv: nn.Conv2d | None = None
        if part_output == "final_conv":
            self.final_conv = nn.Conv2d(num_parts, num_parts, kernel_size=1)
            with torch.no_grad():
                self.final_conv.weight.copy_(torch.eye(num_parts).view(num_parts, num_parts, 1, 1))
                self.final_conv.bias.zero_()

    @property
    def num_parts(self) -> int:
        return self.part_conv.out_channels

    def attention_maps(self, features: Tensor) -> Tensor:
        """(N, C, H, W) -> the K part maps, (N, K, H, W)."""
        unary = self.unary(features)
        if self.kernel is not None:
            return crf_mean_field(unary, self.kernel, self.iterations)
        return spatial_softmax_map(unary)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, H, W) -> (heatmaps (N, K, H, W), part maps (N, K, H, W))."""
        maps = self.attention_maps(features)
        # Q_k * (w_k . F) + b_k: the bias is added after the map (see the class docstring).
        projected = F.conv2d(features, self.part_conv.weight)
        out = maps * projected + self.part_conv.bias.view(1, -1, 1, 1)
        if self.final_conv is not None:
            out = self.final_conv(out)
        return out, maps


def _check_crf_args(iterations: int, kernel_size: int) -> None:
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"crf_iterations must be an integer >= 1, got {iterations!r}")
    if (
        not isinstance(kernel_size, int)
        or isinstance(kernel_size, bool)
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise ValueError(
            f"crf_kernel_size must be an odd integer >= 1 (e.g. 1, 3, 5), got {kernel_size!r}"
        )


def _init_small(*convs: nn.Conv2d) -> None:
    for conv in convs:
        nn.init.normal_(conv.weight, std=_ATTENTION_INIT_STD)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
