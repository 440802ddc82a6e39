"""Top-down pose networks: ResNet trunk + 3 deconvolutions + a heatmap head.

* :class:`SimpleBaseline` (Xiao et al., "Simple Baselines for Human Pose Estimation and
  Tracking", ECCV 2018): the head is one 1x1 conv to K heatmaps.
* :class:`AttentionPoseNet` (the project's own model): the same trunk and deconvolutions with
  multi-context attention (holistic attention over four scales, then part-wise attention; see
  :mod:`pose_ros.models.attention`).

Both take (N, 3, H, W) normalised crops (see ``model.preprocessing``) and return (N, K, H/4, W/4)
heatmaps; H and W must be multiples of 32. The networks are fully convolutional, so
``input_size`` is metadata for the pipeline (the crop size the weights were trained at), not a
constraint of the modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from pose_ros.keypoints import NUM_KEYPOINTS
from pose_ros.models.attention import ATTENTION_KINDS, HolisticAttention, PartAttention
from pose_ros.models.backbone import (
    TRUNK_MODULE_NAMES,
    build_resnet_trunk,
    make_deconv_layers,
    resnet_out_channels,
)
from pose_ros.models.preprocessing import Preprocessing

__all__ = ["AttentionPoseNet", "PoseNet", "SimpleBaseline", "init_from_simplebaseline"]

_NUM_DECONV_LAYERS = 3
#: Heatmaps are 1/4 of the input: /32 by the ResNet, x8 by the three deconvolutions.
HEATMAP_STRIDE = 4


class PoseNet(nn.Module):
    """Base of the pose networks: the ResNet trunk and the deconvolution layers.

    Parameter names: ``conv1.*``, ``bn1.*``, ``layer1.*`` ... ``layer4.*`` (the trunk, as
    torchvision and the microsoft SimpleBaseline name it), ``deconv_layers.{0,1,3,4,6,7}.*``
    (ConvTranspose2d, BatchNorm2d; 2, 5, 8 are ReLUs), then the subclass's head.

    Attributes:
        depth: the ResNet depth.
        num_keypoints: K, the number of heatmaps.
        preprocessing: the input convention of the weights (colour order, mean/std, size).
        arch: ``{"name": ..., **construction kwargs}``, JSON-serialisable; architecture only
            (``build_pose_model(**arch)`` rebuilds the same modules; the preprocessing is kept
            separately in ``preprocessing``, and initial backbone weights are not recorded).
    """

    family: str = ""

    def __init__(
        self,
        depth: int,
        *,
        num_keypoints: int = NUM_KEYPOINTS,
        num_deconv_filters: int = 256,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("num_keypoints", num_keypoints)
        _check_positive_int("num_deconv_filters", num_deconv_filters)
        if preprocessing is None:
            preprocessing = Preprocessing()
        if not isinstance(preprocessing, Preprocessing):
            raise ValueError(
                f"preprocessing must be a Preprocessing or None, got {type(preprocessing).__name__}"
            )
        for name, module in build_resnet_trunk(depth).items():
            self.add_module(name, module)
        self.depth = depth
        self.num_keypoints = num_keypoints
        self.num_deconv_filters = num_deconv_filters
        self.preprocessing = preprocessing
        self.backbone_channels = resnet_out_channels(depth)
        self.deconv_layers = make_deconv_layers(
            self.backbone_channels, num_deconv_filters, _NUM_DECONV_LAYERS
        )
        self.arch: dict[str, Any] = {
            "name": f"{self.family}_res{depth}",
            "num_keypoints": num_keypoints,
            "input_size": list(preprocessing.input_size),
            "num_deconv_filters": num_deconv_filters,
        }

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the input crop the weights expect."""
        return self.preprocessing.input_size

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(H/4, W/4), the size of the heatmaps for :attr:`input_size`."""
        h, w = self.input_size
        return h // HEATMAP_STRIDE, w // HEATMAP_STRIDE

    def forward_backbone(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> ``layer4`` features (N, backbone_channels, H/32, W/32)."""
        for name in TRUNK_MODULE_NAMES:
            x = getattr(self, name)(x)
        return x

    def forward_deconv_stages(self, features: Tensor) -> list[Tensor]:
        """Run the deconvolutions on backbone features, keeping every scale.

        (N, C, h, w) -> [features, stage 1 (N, F, 2h, 2w), stage 2 (4h, 4w), stage 3 (8h, 8w)].
        """
        scales = [features]
        x = features
        for index, module in enumerate(self.deconv_layers):
            x = module(x)
            if index % 3 == 2:  # after each deconv -> BN -> ReLU triple
                scales.append(x)
        return scales

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class SimpleBaseline(PoseNet):
    """SimpleBaseline: trunk -> deconv_layers -> ``final_layer`` (1x1 conv F -> K).

    256x192 input: (N, 3, 256, 192) -> trunk (N, 2048, 8, 6) (512 for ResNet-18/34) ->
    deconvolutions (N, 256, 64, 48) -> heatmaps (N, K, 64, 48).

    Args:
        depth: ResNet depth (18, 34, 50, 101, 152).
        num_keypoints: K.
        num_deconv_filters: F, channels of the deconvolutions.
        preprocessing: input convention; default RGB, ImageNet mean/std, 256x192.
    """

    family = "simplebaseline"

    def __init__(
        self,
        depth: int = 50,
        *,
        num_keypoints: int = NUM_KEYPOINTS,
        num_deconv_filters: int = 256,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__(
            depth,
            num_keypoints=num_keypoints,
            num_deconv_filters=num_deconv_filters,
            preprocessing=preprocessing,
        )
        self.final_layer = nn.Conv2d(num_deconv_filters, num_keypoints, kernel_size=1)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised crops -> heatmaps (N, K, H/4, W/4)."""
        return self.final_layer(self.deconv_layers(self.forward_backbone(x)))


class AttentionPoseNet(PoseNet):
    """SimpleBaseline trunk and deconvolutions with multi-context attention.

    256x192 input, ResNet-50: trunk (N, 2048, 8, 6) -> deconvolutions (N, 256, 16, 12),
    (N, 256, 32, 24), (N, 256, 64, 48); holistic attention makes one map per scale (8x6, 16x12,
    32x24, 64x48), upsamples and sums them, and weights the (N, 256, 64, 48) features; part-wise
    attention turns those into K heatmaps (N, K, 64, 48), each with its own map.

    Args:
        depth: ResNet depth.
        attention: "crf" (the model) or "softmax" (the paper's weaker comparison).
        num_keypoints: K.
        num_deconv_filters: F.
        crf_iterations: T mean-field steps of every CRF map.
        crf_kernel_size: k of the shared spatial kernel of every CRF map (odd).
        part_output: "heatmaps" or "final_conv" (see :class:`PartAttention`).
        preprocessing: input convention; default RGB, ImageNet mean/std, 256x192.
    """

    family = "attention"

    def __init__(
        self,
        depth: int = 50,
        *,
        attention: str = "crf",
        num_keypoints: int = NUM_KEYPOINTS,
        num_deconv_filters: int = 256,
        crf_iterations: int = 3,
        crf_kernel_size: int = 3,
        part_output: str = "heatmaps",
        preprocessing: Preprocessing | None = None,
    ) -> None:
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        # The family names the variant so that arch["name"] rebuilds the right one.
        self.family = "attention" if attention == "crf" else "attention_softmax"
        super().__init__(
            depth,
            num_keypoints=num_keypoints,
            num_deconv_filters=num_deconv_filters,
            preprocessing=preprocessing,
        )
        self.attention = attention
        scale_channels = (self.backbone_channels,) + (num_deconv_filters,) * _NUM_DECONV_LAYERS
        self.holistic_attention = HolisticAttention(
            scale_channels, attention, crf_iterations, crf_kernel_size
        )
        self.part_attention = PartAttention(
            num_deconv_filters,
            num_keypoints,
            attention,
            crf_iterations,
            crf_kernel_size,
            part_output,
        )
        if attention == "crf":
            self.arch["crf_iterations"] = crf_iterations
            self.arch["crf_kernel_size"] = crf_kernel_size
        self.arch["part_output"] = part_output

    @property
    def initial_gain(self) -> float:
        """Factor between this model's output and SimpleBaseline's at init, for the same weights.

        At init every CRF map is about sigmoid(0) = 0.5 and every softmax map about 1, so the head
        computes ``gain * (w_k . F) + b_k``: gain = (number of scales x holistic map value) x part
        map value = 4 x 0.5 x 0.5 = 1 for CRF and 4 for softmax.
        """
        value = 0.5 if self.attention == "crf" else 1.0
        return len(self.holistic_attention.blocks) * value * value

    def forward(
        self, x: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """(N, 3, H, W) normalised crops -> heatmaps (N, K, H/4, W/4).

        With ``return_attention=True`` also returns ``{"holistic": [4 maps (N, 1, h_i, w_i),
        coarse to fine], "parts": (N, K, H/4, W/4)}`` for visualisation and tests.
        """
        scales = self.forward_deconv_stages(self.forward_backbone(x))
        attended, holistic_maps = self.holistic_attention(scales, scales[-1])
        heatmaps, part_maps = self.part_attention(attended)
        if return_attention:
            return heatmaps, {"holistic": holistic_maps, "parts": part_maps}
        return heatmaps


def init_from_simplebaseline(
    model: AttentionPoseNet, state_dict: Mapping[str, Tensor]
) -> dict[str, Any]:
    """Initialise an attention model from a trained SimpleBaseline of the same depth.

    Copies the trunk and ``deconv_layers`` key for key, and ``final_layer`` row k into part k's
    1x1 conv (``part_attention.part_conv``), its weight divided by ``model.initial_gain`` so that at
    init the attention model computes about what the SimpleBaseline did. The attention convs keep
    their small init.

    Args:
        model: the attention model, changed in place.
        state_dict: a SimpleBaseline state dict in pose_ros (= microsoft) key layout;
            ``num_batches_tracked`` entries may be absent.

    Returns:
        A report: ``{"copied": [model keys copied as is], "from_final_layer": [the part_conv
        keys], "weight_scale": 1 / initial_gain, "kept_init": [model keys left at init]}``.

    Raises:
        ValueError: keys missing or unexpected, or shapes that do not fit (summarised).
    """
    if not isinstance(model, AttentionPoseNet):
        raise ValueError(f"init_from_simplebaseline needs an AttentionPoseNet, got {type(model)}")
    target = model.state_dict()
    shared = [k for k in target if k.split(".", 1)[0] in (*TRUNK_MODULE_NAMES, "deconv_layers")]
    head = {
        "part_attention.part_conv.weight": "final_layer.weight",
        "part_attention.part_conv.bias": "final_layer.bias",
    }
    needed = [k for k in shared if not k.endswith("num_batches_tracked")] + list(head.values())
    missing = [k for k in needed if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target and k not in head.values()]
    mismatched = [
        f"{src} {tuple(state_dict[src].shape)} vs {tuple(target[dst].shape)}"
        for dst, src in [*((k, k) for k in shared), *head.items()]
        if src in state_dict and tuple(state_dict[src].shape) != tuple(target[dst].shape)
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"the SimpleBaseline weights do not fit {model.arch['name']}: "
            + summarize_key_problems(missing, unexpected, mismatched)
        )
    scale = 1.0 / model.initial_gain
    new_state = dict(target)
    copied = []
    for key in shared:
        if key in state_dict:
            new_state[key] = state_dict[key]
            copied.append(key)
    new_state["part_attention.part_conv.weight"] = state_dict["final_layer.weight"] * scale
    new_state["part_attention.part_conv.bias"] = state_dict["final_layer.bias"]
    model.load_state_dict(new_state)
    kept = [k for k in target if k not in copied and k not in head]
    return {
        "copied": copied,
        "from_final_layer": list(head),
        "weight_scale": scale,
        "kept_init": kept,
    }


def summarize_key_problems(
    missing: list[str], unexpected: list[str], mismatched: list[str], limit: int = 5
) -> str:
    """One line: counts and the first few of each kind of problem."""

    def part(label: str, items: list[str]) -> str:
        more = f", ... (+{len(items) - limit})" if len(items) > limit else ""
        return f"{len(items)} {label} ({', '.join(items[:limit])}{more})"

    parts = [
        part(label, items)
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    return "; ".join(parts)


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
