"""Which engine runs the networks, and the cache of their exported forms.

The pose network runs on one of :data:`POSE_ENGINES`:

* ``torch``: PyTorch eager (on CUDA in fp16 and channels-last, set up by the PoseEstimator);
* ``onnxruntime``: the same graph exported to ONNX, run by ONNX Runtime (CPU, or its CUDA
  provider on the chosen GPU);
* ``tensorrt``: an fp16 TensorRT engine built from that ONNX file (CUDA, where installed);
* ``auto``: the fastest measured engine of the device: ONNX Runtime on the CPU (about 1.6x
  PyTorch eager for ResNet pose networks on 2 cores, docs/benchmarks.md), PyTorch fp16 on CUDA.

A checkpoint asked to run on ONNX Runtime or TensorRT is exported on first use into the exports
cache (:func:`exports_cache_dir`, beside the checkpoint cache of
:mod:`pose_ros.models.registry`), under a name made of the architecture, a hash of the weights,
the input size, the exporter (torch version, opset) and, for TensorRT, the TensorRT version and
GPU: a new checkpoint, input size or engine version gets a new file, never a stale one. An export
that ONNX Runtime does not reproduce (max difference above :data:`EXPORT_TOLERANCE`) is refused.

The person detectors of torchvision run their backbone (the convolutions: most of the time) on
ONNX Runtime with ``detector_engine`` ``onnxruntime`` (``auto`` on the CPU), and everything
around it (resizing, anchors, box heads, NMS) in torchvision itself, so the boxes are
torchvision's own; see :class:`OnnxBackbone`. RTMDet runs its whole network there (trunk, neck
and head: raw class logits and box distances, :class:`OnnxRTMDet`); decoding and NMS stay in
PyTorch.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pose_ros.fileio import atomic_write
from pose_ros.runtime import (
    MIN_OPSET,
    OnnxPoseRunner,
    RuntimeBackendError,
    TensorRTPoseRunner,
    _import_onnxruntime,
    compare_with_onnxruntime,
    export_onnx,
    onnx_session,
)

if TYPE_CHECKING:
    from pose_ros.detection import PersonDetector
    from pose_ros.types import PoseNetwork

logger = logging.getLogger(__name__)

#: Engines of the pose network.
POSE_ENGINES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "tensorrt")
#: Engines of the person detector (torchvision backends; the others have their own).
DETECTOR_ENGINES: tuple[str, ...] = ("auto", "torch", "onnxruntime")
#: Bumped when the exported graphs change for the same weights (it is part of the cache names).
EXPORT_FORMAT_VERSION = 1
#: Max abs heatmap difference accepted between an export and PyTorch (fp32 on the CPU).
EXPORT_TOLERANCE = 1e-3
#: Suffixes of exported pose models that ``model`` may name directly.
ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")
#: Largest batch of a TensorRT engine built on first use (20 persons x flip test = 40).
TENSORRT_MAX_BATCH = 64


def onnxruntime_available() -> bool:
    """Whether the ``onnxruntime`` package can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_thread_count(threads: int = 0) -> int:
    """The thread count ``threads`` means: 0 = every core this process may use."""
    if threads < 0:
        raise ValueError(f"cpu_threads must be >= 0 (0 = all cores), got {threads}")
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def apply_cpu_threads(threads: int = 0) -> int:
    """Set PyTorch's intra-op thread count (process-wide) to ``threads`` (0 = all cores); returns
    the count set. ONNX Runtime sessions get theirs at creation (:func:`build_pose_network`)."""
    count = cpu_thread_count(threads)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def share_cpu_threads(pose_engine: str) -> int:
    """PyTorch's thread count on the CPU when ``cpu_threads`` is 0: every core when PyTorch runs
    the pose network; one thread when ONNX Runtime does (whose pools take the cores). PyTorch's
    share is then light (crops, the detector's heads and NMS), and two thread pools on the same
    cores contend: measured on a busy 2-core machine, the crops took 101 ms with 2 PyTorch
    threads and 2.4 ms with 1, SSDlite 2057 ms and 78 ms. Returns the count set."""
    count = 1 if pose_engine != "torch" else cpu_thread_count(0)
    torch.set_num_threads(count)
    return count


def exports_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of exported models: ``cache_dir``, else ``exports`` beside the checkpoint cache
    (``$POSE_ROS_CACHE/exports``, ``$XDG_CACHE_HOME/pose_ros/exports`` or
    ``~/.cache/pose_ros/exports``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from pose_ros.models import checkpoint_cache_dir

    return checkpoint_cache_dir().parent / "exports"


def weights_fingerprint(module: torch.nn.Module, extra: Any = None) -> str:
    """16 hex digits of a sha256 over the module's state_dict (names, dtypes, shapes, values)
    and ``extra`` (JSON): two modules share a fingerprint only when their weights are equal."""
    digest = hashlib.sha256()
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        # Byte view: works for every dtype numpy lacks (bfloat16) as well.
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def pose_export_path(
    model: torch.nn.Module,
    *,
    opset: int = MIN_OPSET,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Where the ONNX export of ``model`` lives in the cache: architecture, weights hash, input
    size, exporter (torch version and opset) and export format in the name."""
    height, width = model.input_size
    fingerprint = weights_fingerprint(
        model, {"arch": model.arch, "preprocessing": model.preprocessing.to_dict()}
    )
    torch_version = torch.__version__.split("+")[0]
    name = (
        f"{model.arch['name']}-{fingerprint}-{height}x{width}"
        f"-torch{torch_version}-opset{opset}-v{EXPORT_FORMAT_VERSION}.onnx"
    )
    return exports_cache_dir(cache_dir) / name


def cached_onnx_export(
    model: torch.nn.Module,
    *,
    opset: int = MIN_OPSET,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The ONNX export of a pose network from the cache, exported (and checked against PyTorch
    with ONNX Runtime) first when absent.

    Raises:
        RuntimeBackendError: the export fails, or ONNX Runtime's heatmaps differ from PyTorch's
            by more than :data:`EXPORT_TOLERANCE` (the file is then not kept).
    """
    path = pose_export_path(model, opset=opset, cache_dir=cache_dir)
    if path.is_file():
        return path
    logger.info("exporting the pose network to ONNX (first use): %s", path)
    # Exported and checked in a folder of this call's own, then published under the final name
    # in one atomic step: several processes (two nodes started together on an empty cache) may
    # export the same model at once, and none may see another's half-written or unchecked file.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as scratch:
            _export_checked(model, Path(scratch) / path.name, opset)
            # Every exporter publishes a complete, checked file; the last rename wins.
            with atomic_write(path) as stream:
                stream.write((Path(scratch) / path.name).read_bytes())
    except OSError as error:
        raise RuntimeBackendError(f"cannot write the ONNX export {path}: {error}") from None
    return path


def _export_checked(model: torch.nn.Module, path: Path, opset: int) -> None:
    """Export ``model`` to ``path`` and check it against PyTorch with ONNX Runtime."""
    try:
        export_onnx(model, path, opset=opset)
        difference = compare_with_onnxruntime(model, path)
    except RuntimeBackendError:
        raise
    except Exception as error:  # the exporter raises many types; all mean "cannot export"
        raise RuntimeBackendError(f"ONNX export of {model.arch['name']} failed: {error}") from None
    if not difference <= EXPORT_TOLERANCE:
        raise RuntimeBackendError(
            f"the ONNX export of {model.arch['name']} differs from PyTorch by {difference:.2e} "
            f"(> {EXPORT_TOLERANCE}); not used"
        )


def resolve_pose_engine(engine: str, device: torch.device) -> str:
    """The engine ``engine`` means on ``device``: ``auto`` is ONNX Runtime on the CPU (when
    installed, else PyTorch) and PyTorch on CUDA.

    Raises:
        ValueError: an unknown engine, or one that cannot run on ``device``.
    """
    if engine not in POSE_ENGINES:
        raise ValueError(f"engine must be one of {', '.join(POSE_ENGINES)}, got {engine!r}")
    if engine == "auto":
        if device.type == "cpu" and onnxruntime_available():
            return "onnxruntime"
        return "torch"
    if engine == "tensorrt" and device.type != "cuda":
        raise ValueError(f"engine 'tensorrt' runs on CUDA devices only, got device {device}")
    return engine


def build_pose_network(
    model: torch.nn.Module,
    *,
    engine: str,
    device: torch.device,
    fp16: bool = False,
    threads: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> PoseNetwork:
    """The pose network ``model`` (a PoseNet) on ``engine``: the module itself for ``torch``, a
    runner of its cached export otherwise.

    ``engine`` ``auto`` falls back to PyTorch (with a warning in the log) where the export cannot
    be made or checked; an engine asked for by name raises instead.

    Raises:
        RuntimeBackendError: the engine asked for cannot run this model here.
        ValueError: an unknown engine or one the device cannot run.
    """
    chosen = resolve_pose_engine(engine, device)
    if chosen == "torch":
        return model
    try:
        onnx_path = cached_onnx_export(model, cache_dir=cache_dir)
        if chosen == "onnxruntime":
            return OnnxPoseRunner(onnx_path, device=device, threads=threads or None)
        return TensorRTPoseRunner.from_onnx(
            onnx_path,
            max_batch=TENSORRT_MAX_BATCH,
            fp16=fp16 or device.type == "cuda",
            device=device,
        )
    except RuntimeBackendError as error:
        if engine != "auto":
            raise
        logger.warning("engine auto: %s; running the pose network on PyTorch instead", error)
        return model


def load_exported_network(
    path: str | os.PathLike,
    *,
    engine: str,
    device: torch.device,
    threads: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> PoseNetwork:
    """A runner of an exported pose model file: ``.onnx`` on ONNX Runtime (or, with engine
    ``tensorrt``, the TensorRT engine built from it), ``.engine``/``.plan``/``.trt`` on TensorRT.

    Raises:
        RuntimeBackendError: missing file or backend; ValueError: an engine that cannot run the
            file (``torch`` for an exported file).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if engine not in POSE_ENGINES:
        raise ValueError(f"engine must be one of {', '.join(POSE_ENGINES)}, got {engine!r}")
    if suffix in TENSORRT_SUFFIXES:
        if engine not in ("auto", "tensorrt"):
            raise ValueError(f"model {path.name} is a TensorRT engine: use engine auto or tensorrt")
        if device.type != "cuda":
            raise ValueError(f"model {path.name} is a TensorRT engine: it needs a CUDA device")
        return TensorRTPoseRunner(path, device=device)
    if engine == "torch":
        raise ValueError(
            f"model {path.name} is an ONNX export: engine 'torch' needs a checkpoint; use engine "
            "auto, onnxruntime or tensorrt"
        )
    if engine == "tensorrt":
        return TensorRTPoseRunner.from_onnx(
            path,
            max_batch=TENSORRT_MAX_BATCH,
            device=device,
            cache_dir=exports_cache_dir(cache_dir),
        )
    return OnnxPoseRunner(path, device=device, threads=threads or None)


def is_exported_model(name: str) -> bool:
    """Whether ``model`` names an exported file (ONNX or TensorRT) rather than a checkpoint."""
    return Path(name).suffix.lower() in ONNX_SUFFIXES + TENSORRT_SUFFIXES


# --------------------------------------------------------------------------- person detectors


def resolve_detector_engine(engine: str, backend: str, device: torch.device) -> str:
    """The engine ``engine`` means for detector ``backend`` on ``device``: ``auto`` is ONNX
    Runtime on the CPU for torchvision detectors (when installed), PyTorch otherwise. Backends
    that are not torchvision networks keep their own engine (``torch`` is returned)."""
    from pose_ros.detection import RTMDET_DETECTORS, TORCHVISION_DETECTORS

    if engine not in DETECTOR_ENGINES:
        raise ValueError(
            f"detector.engine must be one of {', '.join(DETECTOR_ENGINES)}, got {engine!r}"
        )
    if backend not in TORCHVISION_DETECTORS + RTMDET_DETECTORS:
        return "torch"
    if engine == "auto":
        return "onnxruntime" if device.type == "cpu" and onnxruntime_available() else "torch"
    return engine


class OnnxBackbone(torch.nn.Module):
    """A torchvision detector's backbone run by ONNX Runtime, in its place: same input (N, 3,
    H, W) normalised images, same output (an OrderedDict of feature maps on the input's device).

    Only the backbone moves: the detector's resizing, anchors, heads and NMS stay torchvision's
    code, so the boxes are the ones torchvision computes from the same features.
    """

    def __init__(
        self,
        path: Path,
        names: list[str],  # the backbone's own feature keys ("0", "1", "pool"...)
        out_channels: int | None,
        *,
        device: torch.device,
        threads: int = 0,
    ) -> None:
        super().__init__()
        self.session = _detector_session(path, device, threads)
        self.names = names
        self.out_channels = out_channels
        self.source = path

    def forward(self, x: torch.Tensor) -> collections.OrderedDict[str, torch.Tensor]:
        outputs = self.session.run(None, {"images": x.detach().float().cpu().numpy()})
        return collections.OrderedDict(
            (name, torch.from_numpy(value).to(x.device))
            for name, value in zip(self.names, outputs, strict=True)
        )


class _BackboneOutputs(torch.nn.Module):
    """The backbone with a tuple output (the exporter's form of the OrderedDict)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(x).values())


def _backbone_example(model: torch.nn.Module) -> torch.Tensor:
    """A batch of one image as the detector's own transform makes it (its size and padding)."""
    image = torch.rand(3, 480, 640, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images, _ = model.transform([image])
    return images.tensors.clone()


def export_detector_backbone(
    model_name: str, model: torch.nn.Module, *, cache_dir: str | os.PathLike | None = None
) -> tuple[Path, list[str]]:
    """ONNX export of a torchvision detector's backbone (cached like the pose exports: model name,
    weights hash, torch version, opset), checked against PyTorch; returns (path, the backbone's
    feature names, in output order: the box heads look features up by them).

    Raises:
        RuntimeBackendError: the export fails or does not reproduce PyTorch's features.
    """
    backbone = model.backbone
    torch_version = torch.__version__.split("+")[0]
    fingerprint = weights_fingerprint(backbone, {"model": model_name})
    path = exports_cache_dir(cache_dir) / (
        f"{model_name}-backbone-{fingerprint}-torch{torch_version}-opset{MIN_OPSET}"
        f"-v{EXPORT_FORMAT_VERSION}.onnx"
    )
    example = _backbone_example(model)
    with torch.no_grad():
        expected = backbone.eval()(example)
    names = [f"features_{name}" for name in expected]
    if not path.is_file():
        logger.info("exporting the %s backbone to ONNX (first use): %s", model_name, path)
        buffer = io.BytesIO()
        dynamic = {"images": {0: "batch", 2: "height", 3: "width"}}
        dynamic.update({name: {0: "batch", 2: f"h_{name}", 3: f"w_{name}"} for name in names})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    _BackboneOutputs(backbone).eval(),
                    (example,),
                    buffer,
                    dynamo=False,
                    opset_version=MIN_OPSET,
                    input_names=["images"],
                    output_names=names,
                    dynamic_axes=dynamic,
                    do_constant_folding=True,
                )
        except Exception as error:
            raise RuntimeBackendError(
                f"ONNX export of the {model_name} backbone failed: {error}"
            ) from None
        _check_backbone_export(buffer.getvalue(), backbone, example, expected, model_name)
        with atomic_write(path) as stream:
            stream.write(buffer.getvalue())
    return path, list(expected)


def _check_backbone_export(
    data: bytes,
    backbone: torch.nn.Module,
    example: torch.Tensor,
    expected: dict[str, torch.Tensor],
    model_name: str,
) -> None:
    """ONNX Runtime's features equal PyTorch's (relative to their range) on the example and on a
    second, smaller size (the dynamic axes: detectors resize to the image's aspect ratio)."""
    ort = _import_onnxruntime()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    height, width = example.shape[-2:]
    smaller = torch.rand(
        1,
        3,
        max(32, height // 64 * 32),
        max(32, width // 64 * 32),
        generator=torch.Generator().manual_seed(1),
    )
    with torch.no_grad():
        expected_smaller = backbone(smaller)
    for images, want_all in ((example, expected), (smaller, expected_smaller)):
        outputs = session.run(None, {"images": images.numpy()})
        for (name, want), got in zip(want_all.items(), outputs, strict=True):
            scale = float(want.abs().max()) or 1.0
            difference = float(np.abs(got - want.numpy()).max()) / scale
            if not difference <= EXPORT_TOLERANCE:
                raise RuntimeBackendError(
                    f"the ONNX export of the {model_name} backbone differs from PyTorch at "
                    f"{name} by {difference:.2e} of its range; not used"
                )


def _detector_session(path: Path, device: torch.device, threads: int) -> Any:
    """An ONNX Runtime session of an exported detector part: on ``device``'s GPU where ONNX
    Runtime has CUDA (the provider's own default is GPU 0: the index is passed), else the CPU;
    ``threads`` 0 = ONNX Runtime's default."""
    ort = _import_onnxruntime()
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        index = device.index if device.index is not None else torch.cuda.current_device()
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(index)}))
    return onnx_session(ort, path, providers, threads or None)


class OnnxRTMDet:
    """An RTMDet network exported to ONNX, run by ONNX Runtime with the module's call: (N, 3, S,
    S) normalised BGR -> (class logits per level, box distances per level) on the input's
    device."""

    def __init__(self, path: Path, levels: int, *, device: torch.device, threads: int = 0):
        self.session = _detector_session(path, device, threads)
        self.levels = levels
        self.source = path

    def __call__(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        outputs = self.session.run(None, {"images": x.detach().float().cpu().numpy()})
        tensors = [torch.from_numpy(value).to(x.device) for value in outputs]
        return tensors[: self.levels], tensors[self.levels :]


class _RTMDetOutputs(torch.nn.Module):
    """RTMDet with a flat tuple output (class logits of every level, then box distances)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        class_logits, distances = self.model(x)
        return (*class_logits, *distances)


def export_rtmdet(
    model_name: str, model: torch.nn.Module, *, cache_dir: str | os.PathLike | None = None
) -> Path:
    """ONNX export of an RTMDet network (cached like the pose exports: name, weights hash,
    torch version, opset), checked against PyTorch on one input; input ``images``
    (N, 3, S, S), outputs ``cls_score_s8`` ... then ``distance_s8`` ...

    Raises:
        RuntimeBackendError: the export fails or does not reproduce PyTorch's outputs.
    """
    torch_version = torch.__version__.split("+")[0]
    fingerprint = weights_fingerprint(model, {"model": model_name})
    path = exports_cache_dir(cache_dir) / (
        f"{model_name}-{fingerprint}-torch{torch_version}-opset{MIN_OPSET}"
        f"-v{EXPORT_FORMAT_VERSION}.onnx"
    )
    if path.is_file():
        return path
    logger.info("exporting %s to ONNX (first use): %s", model_name, path)
    size = model.input_size
    example = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 4 - 2
    wrapper = _RTMDetOutputs(copy.deepcopy(model).cpu().float()).eval()
    names = [f"cls_score_s{s}" for s in model.strides] + [f"distance_s{s}" for s in model.strides]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (example,),
                buffer,
                dynamo=False,
                opset_version=MIN_OPSET,
                input_names=["images"],
                output_names=names,
                dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
                do_constant_folding=True,
            )
    except Exception as error:
        raise RuntimeBackendError(f"ONNX export of {model_name} failed: {error}") from None
    ort = _import_onnxruntime()
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = wrapper(example)
    outputs = session.run(None, {"images": example.numpy()})
    for name, got, want in zip(names, outputs, expected, strict=True):
        scale = float(want.abs().max()) or 1.0
        difference = float(np.abs(got - want.numpy()).max()) / scale
        if not difference <= EXPORT_TOLERANCE:
            raise RuntimeBackendError(
                f"the ONNX export of {model_name} differs from PyTorch at {name} by "
                f"{difference:.2e} of its range; not used"
            )
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())
    return path


def build_person_detector(
    backend: str,
    *,
    weights: str | None,
    device: torch.device,
    engine: str = "auto",
    threads: int = 0,
    score_threshold: float = 0.5,
    max_persons: int = 20,
    cache_dir: str | os.PathLike | None = None,
    half: bool = False,
    yolo_layout: str = "auto",
) -> PersonDetector:
    """:func:`pose_ros.detection.build_detector`, with the backbone of a torchvision detector on
    ONNX Runtime where ``engine`` says so (see :class:`OnnxBackbone`). ``auto`` falls back to
    PyTorch, with a warning in the log, where the export fails; ``onnxruntime`` raises.
    ``half``: a torchvision detector on CUDA runs under fp16 autocast. ``yolo_layout``: the
    output layout of an ``onnx_yolo`` export (:data:`pose_ros.detection.YOLO_LAYOUTS`).

    Raises:
        ValueError, pose_ros.detection.DetectorError: as build_detector;
        RuntimeBackendError: engine ``onnxruntime`` asked for and unusable.
    """
    from pose_ros.detection import RTMDET_DETECTORS, TORCHVISION_DETECTORS, build_detector

    chosen = resolve_detector_engine(engine, backend, device)
    extra: dict[str, Any] = {}
    if backend in TORCHVISION_DETECTORS and device.type == "cuda":
        # fp16 autocast on CUDA: torchvision runs NMS and RoIAlign in fp32 under autocast, so
        # the convolutions get the speed and the box arithmetic keeps its precision.
        extra["half"] = half
    if backend == "onnx_yolo":
        extra["layout"] = yolo_layout
    detector = build_detector(
        backend,
        weights=weights,
        device=device,
        score_threshold=score_threshold,
        max_persons=max_persons,
        **extra,
    )
    detector.engine = "torch"
    if chosen != "onnxruntime":
        return detector
    if backend in RTMDET_DETECTORS:
        try:
            path = export_rtmdet(backend, detector.model, cache_dir=cache_dir)
            detector.network = OnnxRTMDet(
                path, len(detector.model.strides), device=device, threads=threads
            )
        except RuntimeBackendError as error:
            if engine != "auto":
                raise
            logger.warning("detector.engine auto: %s; running %s on PyTorch", error, backend)
            return detector
        detector.engine = "onnxruntime"
        return detector
    model = detector.model
    try:
        path, names = export_detector_backbone(backend, model, cache_dir=cache_dir)
        model.backbone = OnnxBackbone(
            path,
            names,
            getattr(model.backbone, "out_channels", None),
            device=device,
            threads=threads,
        )
    except RuntimeBackendError as error:
        if engine != "auto":
            raise
        logger.warning("detector.engine auto: %s; running %s on PyTorch", error, backend)
        return detector
    detector.engine = "onnxruntime"
    return detector
