"""Build any pose network by name, e.g. ``build_pose_model("attention_res50")`` or
``build_pose_model("rtmpose_s")``."""

from __future__ import annotations

import os
import re
from typing import Any

from pose_ros.keypoints import NUM_KEYPOINTS
from pose_ros.models.attention import PART_OUTPUTS
from pose_ros.models.backbone import RESNET_DEPTHS, load_backbone_weights
from pose_ros.models.posenet import AttentionPoseNet, PoseNet, SimpleBaseline
from pose_ros.models.preprocessing import Preprocessing
from pose_ros.models.rtmpose import RTMPOSE_VARIANTS, RTMPose, build_rtmpose

__all__ = [
    "MODEL_FAMILIES",
    "MODEL_NAMES",
    "POSE_MODEL_NAMES",
    "RTMPOSE_NAMES",
    "build_pose_model",
    "parse_model_name",
]

#: Family prefix -> attention kind (None for SimpleBaseline).
MODEL_FAMILIES: dict[str, str | None] = {
    "simplebaseline": None,
    "attention": "crf",
    "attention_softmax": "softmax",
}

MODEL_NAMES: tuple[str, ...] = tuple(
    f"{family}_res{depth}" for family in MODEL_FAMILIES for depth in RESNET_DEPTHS
)

#: The RTMPose networks (SimCC output; :mod:`pose_ros.models.rtmpose`).
RTMPOSE_NAMES: tuple[str, ...] = tuple(RTMPOSE_VARIANTS)
#: Every name :func:`build_pose_model` accepts.
POSE_MODEL_NAMES: tuple[str, ...] = MODEL_NAMES + RTMPOSE_NAMES

_STRIDE = 32
_NAME_RE = re.compile(r"^(?P<family>[a-z_]+)_res(?P<depth>\d+)$")


def parse_model_name(name: str) -> tuple[str, int]:
    """``"attention_softmax_res50"`` -> ``("attention_softmax", 50)``; ValueError if unknown."""
    match = _NAME_RE.match(name) if isinstance(name, str) else None
    if match is None or name not in MODEL_NAMES:
        raise ValueError(
            f"unknown pose model name {name!r}; valid names: {', '.join(POSE_MODEL_NAMES)}"
        )
    return match["family"], int(match["depth"])


def build_pose_model(
    name: str,
    *,
    num_keypoints: int = NUM_KEYPOINTS,
    input_size: tuple[int, int] | list[int] | None = None,
    num_deconv_filters: int = 256,
    backbone_weights: str | os.PathLike | None = None,
    preprocessing: Preprocessing | None = None,
    crf_iterations: int | None = None,
    crf_kernel_size: int | None = None,
    part_output: str | None = None,
    **rtmpose_options: Any,
) -> PoseNet | RTMPose:
    """A randomly initialised pose network (in training mode, as any new nn.Module).

    Args:
        name: one of :data:`POSE_MODEL_NAMES`: ``simplebaseline_res{18,34,50,101,152}``,
            ``attention_res{...}`` (CRF attention), ``attention_softmax_res{...}`` (heatmaps),
            ``rtmpose_{t,s,m,l}`` (SimCC; ``num_deconv_filters``, ``backbone_weights`` and the
            attention options do not apply: see ``checkpoints.load_cspnext_backbone``).
        num_keypoints: K, the number of heatmaps (17 for COCO).
        input_size: (H, W) of the input crop, multiples of 32; default ``preprocessing``'s, or
            (256, 192). Heatmaps are (H/4, W/4).
        num_deconv_filters: channels of the three deconvolutions.
        backbone_weights: None (random trunk), a path to a torchvision ResNet state_dict file, or
            a torchvision weights name ("IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT"), which
            torchvision downloads. ``fc.*`` is dropped. Not recorded in ``arch``.
        preprocessing: input convention of the weights; default RGB with ImageNet mean/std.
        crf_iterations: attention_res* only: T mean-field steps (default 3).
        crf_kernel_size: attention_res* only: odd size of the shared CRF kernel (default 3).
        part_output: attention models only: "heatmaps" (default) or "final_conv".
        **rtmpose_options: rtmpose_* only: keyword arguments of
            :class:`~pose_ros.models.rtmpose.RTMPose` (trunk size, head), as ``arch`` records
            them.

    Raises:
        ValueError: an unknown name, an option that does not apply to the named family, or a bad
            value; the message lists the valid choices.
    """
    if name in RTMPOSE_NAMES:
        return _build_rtmpose(
            name,
            num_keypoints=num_keypoints,
            input_size=input_size,
            preprocessing=preprocessing,
            backbone_weights=backbone_weights,
            resnet_options={
                # 256 is the parameter's default (training configs pass it for every model).
                "num_deconv_filters": None if num_deconv_filters == 256 else num_deconv_filters,
                "crf_iterations": crf_iterations,
                "crf_kernel_size": crf_kernel_size,
                "part_output": part_output,
            },
            options=rtmpose_options,
        )
    if rtmpose_options:
        raise ValueError(
            f"{', '.join(sorted(rtmpose_options))} apply only to rtmpose_* models, not to {name}"
        )
    family, depth = parse_model_name(name)
    kind = MODEL_FAMILIES[family]
    preprocessing = _resolve_preprocessing(input_size, preprocessing)
    if any(v % _STRIDE for v in preprocessing.input_size):
        # The ResNet halves the size 5 times; other sizes would not map to heatmaps at H/4 x W/4.
        raise ValueError(
            f"input_size must be two multiples of {_STRIDE} (e.g. (256, 192) or (384, 288)), "
            f"got {preprocessing.input_size}"
        )

    crf_options = {"crf_iterations": crf_iterations, "crf_kernel_size": crf_kernel_size}
    given = [k for k, v in {**crf_options, "part_output": part_output}.items() if v is not None]
    if kind is None and given:
        raise ValueError(
            f"{', '.join(given)} apply only to attention models "
            f"(attention_res*, attention_softmax_res*), not to {name}"
        )
    if kind == "softmax" and any(v is not None for v in crf_options.values()):
        raise ValueError(
            f"crf_iterations and crf_kernel_size apply only to attention_res* (CRF) models, "
            f"not to {name}"
        )
    if part_output is not None and part_output not in PART_OUTPUTS:
        raise ValueError(f"part_output must be one of {PART_OUTPUTS}, got {part_output!r}")

    model: PoseNet
    if kind is None:
        model = SimpleBaseline(
            depth,
            num_keypoints=num_keypoints,
            num_deconv_filters=num_deconv_filters,
            preprocessing=preprocessing,
        )
    else:
        model = AttentionPoseNet(
            depth,
            attention=kind,
            num_keypoints=num_keypoints,
            num_deconv_filters=num_deconv_filters,
            crf_iterations=3 if crf_iterations is None else crf_iterations,
            crf_kernel_size=3 if crf_kernel_size is None else crf_kernel_size,
            part_output="heatmaps" if part_output is None else part_output,
            preprocessing=preprocessing,
        )
    if backbone_weights is not None:
        load_backbone_weights(model, depth, backbone_weights)
    return model


def _build_rtmpose(
    name: str,
    *,
    num_keypoints: int,
    input_size: Any,
    preprocessing: Preprocessing | None,
    backbone_weights: str | os.PathLike | None,
    resnet_options: dict[str, Any],
    options: dict[str, Any],
) -> RTMPose:
    given = [key for key, value in resnet_options.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} do not apply to {name} (an RTMPose network)")
    if backbone_weights is not None:
        raise ValueError(
            f"{name}: load the CSPNeXt trunk's weights with "
            "pose_ros.models.checkpoints.load_cspnext_backbone (training: model.backbone_weights)"
        )
    preprocessing = _resolve_preprocessing(input_size, preprocessing)
    return build_rtmpose(name, num_keypoints=num_keypoints, preprocessing=preprocessing, **options)


def _resolve_preprocessing(input_size: Any, preprocessing: Preprocessing | None) -> Preprocessing:
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise ValueError(
            f"preprocessing must be a Preprocessing or None, got {type(preprocessing).__name__}"
        )
    if input_size is None:
        return preprocessing if preprocessing is not None else Preprocessing()
    # Preprocessing validates the form (two positive integers); the caller checks the stride.
    sized = Preprocessing(input_size=input_size)
    if preprocessing is None:
        return sized
    if sized.input_size != preprocessing.input_size:
        raise ValueError(
            f"input_size {sized.input_size} differs from preprocessing.input_size "
            f"{preprocessing.input_size}; give one of them, or the same size"
        )
    return preprocessing
