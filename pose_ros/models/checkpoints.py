"""Save and load pose networks: our own checkpoint format and published SimpleBaseline and
RTMPose files (and the state dicts of published RTMDet detectors, :func:`read_state_dict`).

Our format (``save_checkpoint``) is one ``torch.save`` file holding only tensors and plain Python
values, so it loads with ``torch.load(weights_only=True)`` and rebuilds the model on its own::

    {"format": "pose_ros.checkpoint", "version": 1, "arch": model.arch,
     "preprocessing": model.preprocessing.to_dict(), "state_dict": {...}, "extra": {...}}

Published files load key for key into ``simplebaseline_res*`` (or, through
``init_from_simplebaseline``, into an attention model):

* microsoft ``pose_resnet_*.pth.tar``: a bare state dict (``conv1.*``, ``layer1.*``,
  ``deconv_layers.*``, ``final_layer.*``, no ``num_batches_tracked``), trained on BGR input.
* mmpose 1.x ``td-hm_res*``: ``{"meta", "state_dict"}`` with ``backbone.*``, ``head.*`` (and
  ``data_preprocessor.*``, ignored), RGB input; mmpose 0.x: ``keypoint_head.*`` instead of
  ``head.*``.
* mmpose 1.x ``rtmpose-*``: the same form with a CSPNeXt ``backbone.*`` and an RTMCCHead
  ``head.*`` (``head.gau.*``): loaded key for key into ``rtmpose_*``, the variant, input size and
  head sizes read from the tensor shapes, RGB input.

Nothing here runs code from a file. Files given by path go through ``torch.load(weights_only=True)``
(plus the numpy array types that mmpose metadata can hold) and anything beyond plain data is
refused with a message. Registry files whose sha256 prefix matched are read with the restricted
unpickler of :mod:`pose_ros.models.unpickling`, because the ``meta`` mmengine writes into published
mmpose files can hold objects of mmengine classes: those become inert placeholders (``meta`` is
never used), while a callable that could run code (``os.system``, ...) is refused.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pose_ros.fileio import atomic_write
from pose_ros.models.backbone import depth_from_layout
from pose_ros.models.builder import POSE_MODEL_NAMES, build_pose_model, parse_model_name
from pose_ros.models.errors import CheckpointError
from pose_ros.models.posenet import (
    AttentionPoseNet,
    PoseNet,
    init_from_simplebaseline,
    summarize_key_problems,
)
from pose_ros.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from pose_ros.models.registry import (
    PUBLISHED_CHECKPOINTS,
    PublishedCheckpoint,
    fetch_published_checkpoint,
    get_published_checkpoint,
    read_verified,
)
from pose_ros.models.rtmpose import RTMPOSE_VARIANTS, RTMPose
from pose_ros.models.unpickling import RefusedGlobal, load_trusted

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "detect_layout",
    "load_cspnext_backbone",
    "load_pose_model",
    "read_state_dict",
    "save_checkpoint",
    "to_native_state_dict",
]

CHECKPOINT_FORMAT = "pose_ros.checkpoint"
CHECKPOINT_VERSION = 1

_COLOR_OF_LAYOUT = {"microsoft": "BGR", "mmpose": "RGB", "mmpose0x": "RGB", "pose_ros": "RGB"}
_HEAD_PREFIX = {"mmpose": "head.", "mmpose0x": "keypoint_head."}
_SIZE_IN_NAME = re.compile(r"(?<!\d)(\d{2,4})x(\d{2,4})(?!\d)")


def save_checkpoint(
    model: PoseNet | RTMPose, path: str | os.PathLike, *, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``path`` in the pose_ros format, atomically; returns the path.

    The file is written to a temporary file in the same folder and moved into place with
    ``os.replace``, so a reader never sees half a file and a crash leaves the old file intact.

    Args:
        model: any :class:`PoseNet` or :class:`~pose_ros.models.rtmpose.RTMPose`.
        path: destination; parent folders are created.
        extra: optional plain data (epoch, metrics, ...): None, bool, int, float, str, tensors,
            and lists / tuples / str-keyed dicts of those; anything else is a ValueError, because
            it would not load with ``weights_only=True``.
    """
    if not isinstance(model, (PoseNet, RTMPose)):
        raise ValueError(f"save_checkpoint needs a PoseNet or RTMPose, got {type(model).__name__}")
    extra = {} if extra is None else extra
    _check_plain(extra, "extra")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": dict(model.arch),
        "preprocessing": model.preprocessing.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    path = Path(path).expanduser()
    with atomic_write(path) as stream:
        torch.save(payload, stream)
    return path


def load_pose_model(
    source: str | os.PathLike,
    *,
    arch: str | None = None,
    input_size: tuple[int, int] | None = None,
    map_location: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> PoseNet | RTMPose:
    """Build a pose network from a checkpoint file or a registry name.

    The model is returned in whatever mode ``nn.Module`` construction leaves it (training mode):
    call ``model.eval()`` for inference, as the mode is the caller's decision.

    Args:
        source: a file written by :func:`save_checkpoint`; a published file (microsoft or mmpose
            layout, detected from its keys); or a name in ``PUBLISHED_CHECKPOINTS``, fetched into
            the cache (see :mod:`pose_ros.models.registry`).
        arch: model name to load into. Default: ours records it; for published files the ResNet
            depth is inferred from the keys (layer3 length, Bottleneck or BasicBlock) and the
            model is ``simplebaseline_res<depth>``. An ``attention*`` name with a SimpleBaseline
            file initialises the attention model from it (``init_from_simplebaseline``).
        input_size: (H, W) the weights expect. Default: the recorded one (ours, registry), else a
            ``<H>x<W>`` in the file name, else (256, 192).
        map_location: device the tensors are loaded to and the model is moved to.
        cache_dir: download cache folder for registry names.

    Raises:
        CheckpointError: a missing, unreadable or corrupt file, an unknown registry name, weights
            that do not fit the architecture (missing / unexpected keys and shape mismatches,
            summarised), or unusable metadata. The message names the file.
    """
    path, entry, loaded = _read_checkpoint(source, map_location, cache_dir, pose=True)
    if isinstance(loaded, Mapping) and loaded.get("format") == CHECKPOINT_FORMAT:
        model = _load_own(loaded, path, arch, input_size)
    else:
        model = _load_published(loaded, path, arch, input_size, entry)
    return model.to(map_location)


def read_state_dict(
    source: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, Tensor], Path, PublishedCheckpoint | None]:
    """The state dict of a weights file or registry name (a detector's, say), read as
    :func:`load_pose_model` reads its files: a registry file fetched and hash-checked, then
    unpickled by the restricted loader; a file given by path with ``weights_only``. A
    ``{"state_dict": ...}`` checkpoint gives its state dict, a DataParallel ``module.`` prefix
    is dropped, ``data_preprocessor.*`` buffers too.

    Returns:
        (state dict, the file read, its registry record or None).

    Raises:
        CheckpointError: missing, unreadable, corrupt or hash-mismatched file, or no state dict.
    """
    path, entry, loaded = _read_checkpoint(source, map_location, cache_dir, pose=False)
    state_dict = _state_dict_of(loaded, path)
    return (
        {k: v for k, v in state_dict.items() if not k.startswith("data_preprocessor.")},
        path,
        entry,
    )


def load_cspnext_backbone(
    model: RTMPose, source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
) -> list[str]:
    """The ``backbone.*`` weights of a file or registry name (a published CSPNeXt or RTMPose
    checkpoint, or ours) into ``model``'s trunk; the head keeps its initialisation. Returns the
    keys loaded.

    Raises:
        CheckpointError: an unreadable file, or trunk weights that do not fit.
    """
    state, path, _ = read_state_dict(source, cache_dir=cache_dir)
    trunk = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    own = model.backbone.state_dict()
    missing, unexpected, mismatched = state_dict_differences(trunk, own)
    if not trunk or missing or unexpected or mismatched:
        raise CheckpointError(
            f"Checkpoint {path} holds no CSPNeXt trunk (backbone.*) that fits "
            f"{model.arch['name']}: {summarize_key_problems(missing, unexpected, mismatched)}."
        )
    model.backbone.load_state_dict(trunk)
    return sorted(trunk)


def _read_checkpoint(
    source: str | os.PathLike,
    map_location: str | torch.device,
    cache_dir: str | os.PathLike | None,
    *,
    pose: bool,
) -> tuple[Path, PublishedCheckpoint | None, Any]:
    """(the file, its registry record, its unpickled content) for a path or registry name."""
    entry = None
    path = Path(os.fspath(source)).expanduser()
    if not path.is_file() and isinstance(source, str) and source in PUBLISHED_CHECKPOINTS:
        entry = get_published_checkpoint(source)
        if pose and entry.arch not in POSE_MODEL_NAMES:
            raise CheckpointError(
                f"{source!r} holds the weights of a person detector ({entry.arch}), not of a "
                f"pose network: use it as the detector's weights (detector backend {entry.arch})."
            )
        path = fetch_published_checkpoint(source, cache_dir=cache_dir)
    elif not path.exists():
        raise CheckpointError(
            f"Checkpoint {source} not found: no such file, and not the name of a published "
            f"checkpoint (known names: {', '.join(sorted(PUBLISHED_CHECKPOINTS))})."
        )
    elif not path.is_file():
        raise CheckpointError(f"Checkpoint {path} is not a file.")

    if entry is not None and entry.sha256_prefix:
        return path, entry, _trusted_load(path, entry, map_location)
    return path, entry, _safe_load(path, map_location)


def _state_dict_of(loaded: Any, path: Path) -> Mapping[str, Tensor]:
    """The state dict in an unpickled file (bare, or under "state_dict"), without a
    DataParallel ``module.`` prefix."""
    state_dict = loaded
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        state_dict = loaded["state_dict"]
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state_dict.items()
    ):
        raise CheckpointError(
            f"Checkpoint {path} does not hold a state dict (a mapping of names to tensors), nor "
            f"a pose_ros checkpoint."
        )
    # Weights saved from nn.DataParallel carry a "module." prefix on every key.
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def detect_layout(state_dict: Mapping[str, Any]) -> str:
    """The key layout of a state dict: "microsoft", "mmpose", "mmpose0x" or "pose_ros".

    "pose_ros" means our keys with attention modules.

    A bare state dict with SimpleBaseline keys is taken as a microsoft file (BGR); keep our own
    models in :func:`save_checkpoint` files, which record their preprocessing.
    """
    keys = list(state_dict)
    if any(k.startswith("backbone.") for k in keys):
        if any(k.startswith("keypoint_head.") for k in keys):
            return "mmpose0x"
        if any(k.startswith("head.") for k in keys):
            return "mmpose"
        raise ValueError("backbone.* keys without head.* or keypoint_head.* keys")
    if "conv1.weight" in state_dict and any(k.startswith("deconv_layers.") for k in keys):
        if any(k.startswith(("holistic_attention.", "part_attention.")) for k in keys):
            return "pose_ros"
        return "microsoft"
    raise ValueError(
        "keys match no known layout (expected conv1.* + deconv_layers.* or backbone.* + head.*); "
        f"first keys: {keys[:5]}"
    )


def to_native_state_dict(state_dict: Mapping[str, Tensor], layout: str) -> dict[str, Tensor]:
    """Rename a published state dict's keys to ours (= microsoft's).

    mmpose: ``backbone.X`` -> ``X``, ``head.X`` / ``keypoint_head.X`` -> ``X``;
    ``data_preprocessor.*`` (mean/std buffers) dropped. Other keys pass through unchanged, so they
    show up as unexpected when the state dict is fitted.
    """
    if layout in ("microsoft", "pose_ros"):
        return dict(state_dict)
    head = _HEAD_PREFIX[layout]
    native: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("data_preprocessor."):
            continue
        if key.startswith("backbone."):
            key = key[len("backbone.") :]
        elif key.startswith(head):
            key = key[len(head) :]
        native[key] = value
    return native


# --------------------------------------------------------------------------------------------
# loading


def _safe_globals() -> list[Any]:
    """numpy types mmpose metadata may hold (arrays in dataset_meta), under both module names.

    numpy 1 pickles name ``numpy.core.multiarray``, numpy 2 ``numpy._core.multiarray``; the
    explicit (object, name) pairs make either spelling resolve to the installed function.
    """
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray

    dtypes = [
        getattr(np.dtypes, n)
        for n in dir(getattr(np, "dtypes", None))
        if n.endswith("DType") and n not in ("ObjectDType", "StringDType")
    ]
    return [
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        (multiarray.scalar, "numpy._core.multiarray.scalar"),
        np.ndarray,
        np.dtype,
        *dtypes,
    ]


def _safe_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        text = str(exc)
        found = re.findall(r"GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(
                f"Checkpoint {path} holds pickled Python objects beyond tensors and plain data "
                f"(it holds {found[0]}), which pose_ros does not unpickle (torch.load "
                f"weights_only=True). If you trust the file, re-save only its state dict: "
                f"torch.save(torch.load(f, weights_only=False)['state_dict'], 'weights.pth')."
            ) from None
        # torch's messages run over several lines of advice; keep the one naming the fault.
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        lines = text.strip().splitlines()
        reason = detail[1] if detail else (lines[0] if lines else "")
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({type(exc).__name__}: {reason[:200]}): the file "
            f"is truncated, corrupt or not a PyTorch checkpoint."
        ) from None


def _trusted_load(path: Path, entry: PublishedCheckpoint, map_location: str | torch.device) -> Any:
    """Load a registry file whose bytes match its sha256 prefix (restricted unpickler)."""
    data = read_verified(entry, path)
    try:
        return load_trusted(data, map_location)
    except RefusedGlobal as exc:
        raise CheckpointError(
            f"Checkpoint {path} ({entry.name}) matches its sha256 prefix but its pickle calls "
            f"{exc.qualified_name}, which could run code; pose_ros refused it and ran nothing. "
            f"Delete the file and fetch {entry.filename} again from {entry.url or entry.homepage}."
        ) from None
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise CheckpointError(
            f"Checkpoint {path} ({entry.name}) cannot be read ({type(exc).__name__}: "
            f"{(lines[0] if lines else '')[:200]})."
        ) from None


def _load_own(
    data: Mapping[str, Any], path: Path, arch: str | None, input_size: tuple[int, int] | None
) -> PoseNet:
    version = data.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"Checkpoint {path} has format version {version!r}; this pose_ros reads versions up "
            f"to {CHECKPOINT_VERSION}."
        )
    try:
        recorded = dict(data["arch"])
        preprocessing = Preprocessing.from_dict(data["preprocessing"])
        state_dict = data["state_dict"]
        if input_size is not None:
            preprocessing = dataclasses.replace(preprocessing, input_size=input_size)
        recorded["input_size"] = preprocessing.input_size
        name = recorded.pop("name")
        warm_start = arch is not None and arch != name
        if warm_start and name in RTMPOSE_VARIANTS:
            raise ValueError(f"it holds a {name}, not a {arch}")
        if warm_start:
            family, _ = parse_model_name(arch)
            if family == "simplebaseline" or not name.startswith("simplebaseline"):
                raise ValueError(f"it holds a {name}, not a {arch}")
            # A SimpleBaseline checkpoint as the start of an attention model.
            model = build_pose_model(
                arch,
                num_keypoints=recorded["num_keypoints"],
                num_deconv_filters=recorded["num_deconv_filters"],
                preprocessing=preprocessing,
            )
        else:
            model = build_pose_model(name, preprocessing=preprocessing, **recorded)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"Checkpoint {path} has unusable metadata: {exc}.") from None
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"Checkpoint {path} has no state dict.")
    if warm_start:
        _warm_start(model, state_dict, path, "pose_ros")
    else:
        _fit(model, state_dict, path)
    return model


def _load_published(
    loaded: Any,
    path: Path,
    arch: str | None,
    input_size: tuple[int, int] | None,
    entry: PublishedCheckpoint | None,
) -> PoseNet | RTMPose:
    state_dict = _state_dict_of(loaded, path)
    if is_rtmpose_state(state_dict):
        return _load_rtmpose(state_dict, path, arch, input_size, entry)
    if arch in RTMPOSE_VARIANTS:
        raise CheckpointError(
            f"Checkpoint {path} does not hold RTMPose weights (no backbone.stem.* and head.gau.* "
            f"keys), so it cannot load into {arch}."
        )
    try:
        layout = detect_layout(state_dict)
    except ValueError as exc:
        raise CheckpointError(f"Checkpoint {path}: {exc}.") from None
    native = to_native_state_dict(state_dict, layout)

    color = entry.color_order if entry is not None else _COLOR_OF_LAYOUT[layout]
    size = input_size or (entry.input_size if entry is not None else None)
    size = size or _size_from_name(path.name) or (256, 192)
    try:
        rule = "microsoft" if layout == "microsoft" else "mmpose"
        rule = entry.decode_rule if entry is not None else rule
        preprocessing = Preprocessing(color, IMAGENET_MEAN, IMAGENET_STD, tuple(size), rule)
        inferred = _infer_arch(native)
        if layout == "pose_ros" and arch is None:
            raise ValueError(
                "a bare state dict of an attention model does not record its architecture; "
                "pass arch=..., or save models with save_checkpoint"
            )
        name = arch or (entry.arch if entry is not None else inferred["name"])
        family, _ = parse_model_name(name)
        options = {
            "num_keypoints": inferred["num_keypoints"],
            "num_deconv_filters": inferred["num_deconv_filters"],
            "preprocessing": preprocessing,
        }
        model = build_pose_model(name, **options)
    except ValueError as exc:
        raise CheckpointError(f"Checkpoint {path}: {exc}.") from None
    if family != "simplebaseline" and layout != "pose_ros":
        _warm_start(model, native, path, layout)
        return model
    _fit(model, native, path, layout)
    return model


def is_rtmpose_state(state_dict: Mapping[str, Any]) -> bool:
    """Whether a state dict has RTMPose's keys (mmpose's, which are also ours)."""
    return "backbone.stem.0.conv.weight" in state_dict and "head.gau.uv.weight" in state_dict


def _load_rtmpose(
    state_dict: Mapping[str, Tensor],
    path: Path,
    arch: str | None,
    input_size: tuple[int, int] | None,
    entry: PublishedCheckpoint | None,
) -> RTMPose:
    """An RTMPose whose sizes are read from the tensor shapes, loaded key for key."""
    state = {k: v for k, v in state_dict.items() if not k.startswith("data_preprocessor.")}
    try:
        name, options, size = _infer_rtmpose_arch(state, input_size or (entry and entry.input_size))
        if arch is not None and arch != name:
            raise ValueError(f"it holds an {name}, not an {arch}")
        preprocessing = Preprocessing(
            entry.color_order if entry is not None else "RGB", IMAGENET_MEAN, IMAGENET_STD, size
        )
        model = build_pose_model(name, preprocessing=preprocessing, **options)
    except (KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(f"Checkpoint {path} (RTMPose keys): {exc}.") from None
    _fit(model, state, path, "mmpose")
    return model


def _infer_rtmpose_arch(
    state: Mapping[str, Tensor], input_size: tuple[int, int] | None
) -> tuple[str, dict[str, Any], tuple[int, int]]:
    """(variant name, RTMPose options, input size) from an RTMPose state dict's shapes."""
    widen = state["backbone.stage4.0.conv.weight"].shape[0] / 1024
    blocks = tuple(
        len(
            {
                k.split(".")[4]
                for k in state
                if k.startswith(f"backbone.stage{i}.") and ".blocks." in k
            }
        )
        for i in range(1, 5)
    )
    by_depth = [
        name
        for name, variant in RTMPOSE_VARIANTS.items()
        if blocks == tuple(max(round(b * variant.deepen_factor), 1) for b in (3, 6, 6, 3))
    ]
    if not by_depth:
        raise ValueError(f"no RTMPose variant has {blocks} blocks per trunk stage")
    by_width = [n for n in by_depth if RTMPOSE_VARIANTS[n].widen_factor == widen]
    name = (by_width or by_depth)[0]
    length_x = state["head.cls_x.weight"].shape[0]
    length_y = state["head.cls_y.weight"].shape[0]
    hidden, tokens = state["head.mlp.1.weight"].shape
    attention_dim = state["head.gau.gamma"].shape[1]
    expansion = (state["head.gau.uv.weight"].shape[0] - attention_dim) / 2 / hidden
    if input_size is None:
        # The published head has 2 bins per pixel; the token count checks the guess.
        input_size = (length_y // 2, length_x // 2)
    height, width = input_size
    if tokens != (height // 32) * (width // 32):
        raise ValueError(
            f"its head takes {tokens} feature cells, which does not fit a {height}x{width} input; "
            f"pass input_size=(H, W)"
        )
    options: dict[str, Any] = {
        "simcc_split_ratio": length_x / width,
        "hidden_dims": int(hidden),
        "attention_dim": int(attention_dim),
        "expansion_factor": expansion if expansion != int(expansion) else int(expansion),
        "final_layer_kernel_size": int(state["head.final_layer.weight"].shape[-1]),
    }
    if not by_width:
        options["widen_factor"] = widen
    return name, options, (int(height), int(width))


def _warm_start(model: PoseNet, state_dict: Mapping[str, Tensor], path: Path, layout: str) -> None:
    """Initialise an attention model from SimpleBaseline weights (see init_from_simplebaseline)."""
    if not isinstance(model, AttentionPoseNet):
        raise CheckpointError(f"Checkpoint {path}: cannot start a {model.arch['name']} from it.")
    try:
        init_from_simplebaseline(model, state_dict)
    except ValueError as exc:
        raise CheckpointError(f"Checkpoint {path} ({layout} layout): {exc}.") from None


def _infer_arch(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """simplebaseline name, K and deconv filters from a native-layout state dict."""
    bottleneck = "layer1.0.conv3.weight" in state_dict
    layer3 = {int(k.split(".")[1]) for k in state_dict if re.match(r"layer3\.\d+\.", k)}
    depth = depth_from_layout(bottleneck, len(layer3))
    if depth is None:
        block = "Bottleneck" if bottleneck else "BasicBlock"
        raise ValueError(
            f"no torchvision ResNet has {len(layer3)} {block} blocks in layer3; pass arch=..."
        )
    final = state_dict.get("final_layer.weight")
    if final is None:
        final = state_dict.get("part_attention.part_conv.weight")
    deconv = state_dict.get("deconv_layers.0.weight")
    if final is None or deconv is None or final.ndim != 4 or deconv.ndim != 4:
        raise ValueError("no final_layer.weight or deconv_layers.0.weight of rank 4")
    return {
        "name": f"simplebaseline_res{depth}",
        "num_keypoints": int(final.shape[0]),
        # ConvTranspose2d weights are (in, out, kh, kw).
        "num_deconv_filters": int(deconv.shape[1]),
    }


def _fit(
    model: PoseNet | RTMPose, state_dict: Mapping[str, Tensor], path: Path, layout: str = ""
) -> None:
    """Load ``state_dict`` strictly, after filling absent ``num_batches_tracked`` counters."""
    expected = model.state_dict()
    state = dict(state_dict)
    for key, value in expected.items():
        # Files from PyTorch < 0.4.1 (microsoft) have no BN batch counters; they hold no weights.
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing, unexpected, mismatched = state_dict_differences(state, expected)
    if missing or unexpected or mismatched:
        where = f" ({layout} layout)" if layout else ""
        raise CheckpointError(
            f"Checkpoint {path}{where} does not fit {model.arch['name']}: "
            f"{summarize_key_problems(missing, unexpected, mismatched)}. Check arch= (the ResNet "
            f"depth and model family) and num_keypoints."
        )
    model.load_state_dict(state)


def state_dict_differences(
    file_state: Mapping[str, Tensor], model_state: Mapping[str, Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """How a file's weights fail to fit a model's: (keys the file lacks, keys the model lacks,
    "key (file shape) in file vs (model shape) in model" for keys of another shape)."""
    missing = [k for k in model_state if k not in file_state]
    unexpected = [k for k in file_state if k not in model_state]
    mismatched = [
        f"{k} {tuple(file_state[k].shape)} in file vs {tuple(v.shape)} in model"
        for k, v in model_state.items()
        if k in file_state and tuple(file_state[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, mismatched


def _size_from_name(filename: str) -> tuple[int, int] | None:
    """(H, W) from a "256x192"-style part of a file name, when it is a valid input size."""
    for match in _SIZE_IN_NAME.finditer(filename):
        h, w = int(match[1]), int(match[2])
        if h % 32 == 0 and w % 32 == 0:
            return h, w
    return None


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str, Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__name__}; checkpoints hold only tensors and plain Python "
        f"values (None, bool, int, float, str, list, tuple, dict with str keys)"
    )
