"""Runners of exported pose networks (ONNX Runtime, TensorRT) for the inference pipeline.

A runner is not an ``nn.Module``; it has what the pipeline uses of a PoseNet: ``preprocessing``,
``num_keypoints``, ``input_size``, ``heatmap_size``, ``arch``, ``output_kind`` and ``__call__(x)``
(x: (N, 3, H, W) normalised crops on any device, any float dtype; the result float32 on x's
device: heatmaps (N, K, H/4, W/4), or for SimCC networks (RTMPose) the pair simcc_x, simcc_y).
Everything a runner needs besides the weights (colour order, mean/std, input size, output kind)
travels in the ``.onnx`` file's ``metadata_props``, written by ``pose_ros.training.export``, so
``OnnxPoseRunner("model.onnx")`` needs nothing else.

mmpose's own RTMPose exports (mmdeploy's ``end2end.onnx``: input ``input``, outputs ``simcc_x``
and ``simcc_y``, no pose_ros metadata) load too: the graph holds no normalisation, and mmpose
trained these networks on RGB pixels normalised with mean (123.675, 116.28, 103.53) and std
(58.395, 57.12, 57.375) (``bgr_to_rgb=True`` in its configs), which is what the runner records
(see :func:`mmpose_simcc_metadata`).

TensorRT engines are built from the ONNX file (fp16, one optimisation profile for batch
1..max_batch) and cached beside it; the file name holds a hash of the ONNX file's content (a
re-exported ``model.onnx`` gets a new engine, never the old one), the TensorRT version and the GPU
name, because an engine only runs on the TensorRT version and GPU model it was built for::

    engine = build_tensorrt_engine("model.onnx", max_batch=32)   # or TensorRTPoseRunner.from_onnx
    estimator = PoseEstimator(TensorRTPoseRunner(engine), detector)

``onnxruntime`` and ``onnx`` are requirements (checked when the pipeline is imported, see
:mod:`pose_ros._requirements`), ``tensorrt`` is optional; all three are imported only when used,
and a missing one is a :class:`RuntimeBackendError` that says what to install.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pose_ros.fileio import atomic_write
from pose_ros.models import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from pose_ros.types import OUTPUT_HEATMAPS, OUTPUT_KEYPOINTS, OUTPUT_SIMCC

#: ONNX metadata_props keys written by the exporter.
META_PREPROCESSING = "pose_ros.preprocessing"
META_ARCH = "pose_ros.arch"
META_NUM_KEYPOINTS = "pose_ros.num_keypoints"
META_HEATMAP_SIZE = "pose_ros.heatmap_size"
#: Numeric precision of the exported graph's weights and arithmetic: one of :data:`PRECISIONS`.
META_PRECISION = "pose_ros.precision"
PRECISIONS = ("fp32", "fp16", "int8")
#: What the graph returns (pose_ros.types.OUTPUT_*: heatmaps, simcc or keypoints); absent: heatmaps.
META_OUTPUT_KIND = "pose_ros.output_kind"
#: Bins per input pixel of a SimCC network's output.
META_SIMCC_SPLIT_RATIO = "pose_ros.simcc_split_ratio"
INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"
#: Output names of SimCC networks (mmpose's, so that its exports and ours read alike).
SIMCC_OUTPUT_NAMES = ("simcc_x", "simcc_y")
#: Lowest opset accepted: 17 has every op of the pose networks in its final form.
MIN_OPSET = 17

TENSORRT_MISSING = (
    "TensorRT is not installed (no 'tensorrt' Python package): install it with "
    "`pip install tensorrt` on an x86-64 CUDA machine (or JetPack on Jetson) to build and run "
    "engines; without it, run the ONNX model with ONNX Runtime (OnnxPoseRunner)"
)


class RuntimeBackendError(RuntimeError):
    """An exported model cannot be run: backend package missing, no GPU, or a bad file."""


class _RunnerBase:
    """Attributes shared by the runners, from the exporter's metadata."""

    def __init__(self, metadata: dict[str, str], source: Path) -> None:
        try:
            self.preprocessing = Preprocessing.from_dict(json.loads(metadata[META_PREPROCESSING]))
            self.arch: dict[str, Any] = json.loads(metadata[META_ARCH])
            self.num_keypoints = int(metadata[META_NUM_KEYPOINTS])
            height, width = json.loads(metadata[META_HEATMAP_SIZE])
        except (KeyError, ValueError, TypeError) as error:
            raise RuntimeBackendError(
                f"{source} lacks the pose_ros metadata ({error}); export it with "
                "`pose-ros-export` (python -m training.export)"
            ) from None
        self._heatmap_size = (int(height), int(width))
        self.source = source
        #: "fp32", "fp16" or "int8": what the graph computes in (logs, status line, diagnostics).
        self.precision = metadata.get(META_PRECISION, "fp32")
        #: Heatmaps, SimCC vectors, or keypoints decoded inside the graph (a Triton repository's
        #: model).
        self.output_kind = metadata.get(META_OUTPUT_KIND, OUTPUT_HEATMAPS)
        if self.output_kind not in (OUTPUT_HEATMAPS, OUTPUT_SIMCC, OUTPUT_KEYPOINTS):
            raise RuntimeBackendError(f"{source}: unknown output kind {self.output_kind!r}")
        if self.output_kind == OUTPUT_SIMCC:
            self.simcc_split_ratio = float(metadata.get(META_SIMCC_SPLIT_RATIO, "2.0"))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessing.input_size

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return self._heatmap_size


def export_metadata(
    preprocessing: Preprocessing,
    arch: dict[str, Any],
    num_keypoints: int,
    heatmap_size: tuple[int, int],
    output_kind: str = OUTPUT_HEATMAPS,
    simcc_split_ratio: float | None = None,
    precision: str = "fp32",
) -> dict[str, str]:
    """The ``metadata_props`` an exported pose network carries (all values strings)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    metadata = {
        META_PREPROCESSING: json.dumps(preprocessing.to_dict()),
        META_ARCH: json.dumps(arch),
        META_NUM_KEYPOINTS: str(int(num_keypoints)),
        META_HEATMAP_SIZE: json.dumps([int(v) for v in heatmap_size]),
        META_OUTPUT_KIND: output_kind,
        META_PRECISION: precision,
    }
    if simcc_split_ratio is not None:
        metadata[META_SIMCC_SPLIT_RATIO] = repr(float(simcc_split_ratio))
    return metadata


def mmpose_simcc_metadata(inputs: list[Any], outputs: list[Any]) -> dict[str, str] | None:
    """pose_ros metadata for an mmpose RTMPose export without it (mmdeploy's ``end2end.onnx``),
    from the graph's inputs and outputs (ONNX Runtime ``NodeArg``s), or None when the graph is
    not one: one (N, 3, H, W) input of static H, W and the outputs ``simcc_x`` (N, K, W * r),
    ``simcc_y`` (N, K, H * r).

    The preprocessing is mmpose's for these weights: RGB, mean (123.675, 116.28, 103.53) and std
    (58.395, 57.12, 57.375) on pixels 0..255 (= ImageNet's mean and std on pixel / 255), the
    ``data_preprocessor`` of its RTMPose configs (``bgr_to_rgb=True``), which the exported graph
    does not contain.
    """
    names = [output.name for output in outputs]
    if len(inputs) != 1 or sorted(names) != sorted(SIMCC_OUTPUT_NAMES):
        return None
    shape = inputs[0].shape
    by_name = {output.name: output.shape for output in outputs}
    if len(shape) != 4 or not all(isinstance(v, int) and v > 0 for v in shape[2:]):
        return None
    height, width = int(shape[2]), int(shape[3])
    shape_x, shape_y = by_name["simcc_x"], by_name["simcc_y"]
    if len(shape_x) != 3 or not all(isinstance(v, int) for v in (*shape_x[1:], *shape_y[1:])):
        return None
    ratio = shape_x[2] / width
    if shape_y[2] != round(height * ratio):
        return None
    return export_metadata(
        Preprocessing("RGB", IMAGENET_MEAN, IMAGENET_STD, (height, width)),
        {"name": "rtmpose (mmpose export)"},
        int(shape_x[1]),
        (int(shape_y[2]), int(shape_x[2])),
        OUTPUT_SIMCC,
        ratio,
    )


class OnnxPoseRunner(_RunnerBase):
    """A pose network exported to ONNX, run by ONNX Runtime.

    Args:
        path: ``.onnx`` file written by :func:`export_onnx` (``pose-ros-export``).
        device: "auto" (CUDA provider when ONNX Runtime has it and torch sees a GPU), "cpu",
            "cuda" or "cuda:N" (the provider runs on GPU N); "cuda" without the CUDA provider is
            an error.
        threads: intra-op threads of the CPU provider (None or 0: ONNX Runtime's default, one
            per physical core).

    The batch goes through host memory (numpy) whatever the provider: simple and correct; for the
    lowest latency on a GPU use the TensorRT runner or the PyTorch model.
    """

    engine = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "auto",
        threads: int | None = None,
    ) -> None:
        path = Path(path)
        device = str(device)
        if not path.is_file():
            raise RuntimeBackendError(f"ONNX model {path} not found")
        ort = _import_onnxruntime()
        available = ort.get_available_providers()
        want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if want_cuda and "CUDAExecutionProvider" in available:
            # The provider's own default is GPU 0, whatever device was asked for: pass the index.
            index = torch.device(device).index if device.startswith("cuda") else None
            if index is None:
                index = torch.cuda.current_device() if torch.cuda.is_available() else 0
            providers: list[Any] = [
                ("CUDAExecutionProvider", {"device_id": int(index)}),
                "CPUExecutionProvider",
            ]
        elif device.startswith("cuda"):
            raise RuntimeBackendError(
                f"device {device!r}: this ONNX Runtime has no CUDAExecutionProvider "
                f"(available: {available}); install onnxruntime-gpu or use device='cpu'"
            )
        else:
            providers = ["CPUExecutionProvider"]
        self.session = onnx_session(ort, path, providers, threads)
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if META_PREPROCESSING not in metadata:
            metadata = (
                mmpose_simcc_metadata(self.session.get_inputs(), self.session.get_outputs())
                or metadata
            )
        if META_PRECISION not in metadata:
            # Exports written before the precision was recorded: an int8 graph is recognised by
            # its quantization nodes.
            metadata[META_PRECISION] = onnx_graph_precision(path)
        super().__init__(metadata, path)
        self.providers = self.session.get_providers()
        self._input = self.session.get_inputs()[0].name
        names = [output.name for output in self.session.get_outputs()]
        self._outputs = list(SIMCC_OUTPUT_NAMES) if self.output_kind == OUTPUT_SIMCC else names[:1]
        self._output = self._outputs[0]
        # Graphs with pixel crops in (uint8, normalised inside: a Triton repository's model).
        self._uint8_input = self.session.get_inputs()[0].type == "tensor(uint8)"

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """(N, 3, H, W) normalised crops -> float32 on x's device: (N, K, H/4, W/4) heatmaps,
        (simcc_x, simcc_y) for SimCC networks, or what the graph's ``output_kind`` says."""
        if self._uint8_input:
            array = uint8_crops(x)
            (output,) = self.session.run([self._output], {self._input: array})
            return torch.from_numpy(output).to(x.device)
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session.run(self._outputs, {self._input: array})
        tensors = tuple(torch.from_numpy(output).to(x.device) for output in outputs)
        return tensors if self.output_kind == OUTPUT_SIMCC else tensors[0]


def uint8_crops(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) crops of 0..255 pixel values (any float dtype and device) as the contiguous
    uint8 array a graph with pixel input takes: rounded to the nearest value, clipped."""
    return x.detach().float().round().clamp(0, 255).to("cpu", torch.uint8).contiguous().numpy()


def onnx_session(ort: Any, path: Path, providers: list[Any], threads: int | None) -> Any:
    """An ONNX Runtime session of ``path`` (all graph optimisations; ``threads`` intra-op)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting of idle pool threads: PyTorch (crops, detector heads) and other sessions
    # share the same cores, and a spinning pool steals them (several times slower on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise RuntimeBackendError(f"ONNX Runtime cannot load {path}: {error}") from None


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of an ONNX file (with the ``onnx`` package, else ONNX Runtime)."""
    try:
        import onnx
    except ImportError:
        ort = _import_onnxruntime()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return dict(session.get_modelmeta().custom_metadata_map)
    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def onnx_graph_precision(path: str | os.PathLike) -> str:
    """The precision of an ONNX graph: int8 when it holds quantization nodes, else fp32 (for
    exports that do not record :data:`META_PRECISION`)."""
    try:
        import onnx
    except ImportError:
        return "fp32"
    graph = onnx.load(str(path), load_external_data=False).graph
    quantized = any(node.op_type in ("QuantizeLinear", "QLinearConv") for node in graph.node)
    return "int8" if quantized else "fp32"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in chunks: exports can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensorrt_engine_path(
    onnx_path: str | os.PathLike,
    *,
    tensorrt_version: str,
    gpu_name: str,
    max_batch: int,
    fp16: bool,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Cache file of the engine of an ONNX file:
    ``<onnx stem>-<content hash>.trt<version>.<gpu>.b<max>.<precision>.engine``.

    The hash (16 hex digits of the file's sha256) keys the engine by what the ONNX file holds,
    not by its name: a model re-exported under the same name gets a new engine.

    Raises:
        RuntimeBackendError: the ONNX file does not exist.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise RuntimeBackendError(f"ONNX model {onnx_path} not found")
    content = file_sha256(onnx_path)[:16]
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    precision = "fp16" if fp16 else "fp32"
    build = f"trt{tensorrt_version}.{gpu}.b{max_batch}.{precision}"
    name = f"{onnx_path.stem}-{content}.{build}.engine"
    return Path(cache_dir or onnx_path.parent) / name


def build_tensorrt_engine(
    onnx_path: str | os.PathLike,
    *,
    max_batch: int = 32,
    fp16: bool = True,
    workspace_gib: float = 2.0,
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    device: str | torch.device = "cuda",
) -> Path:
    """Build (or reuse the cached) TensorRT engine of an exported pose network.

    One optimisation profile covers batch 1..max_batch (optimised for max_batch / 2, a typical
    crowd). A JSON file beside the engine (``<engine>.json``) keeps the pose_ros metadata of the
    ONNX file for :class:`TensorRTPoseRunner`.

    ``device`` is the GPU the engine is built on and for ("cuda" = torch's current one): an
    engine is specific to the GPU model, so the cache name holds that GPU's name.

    Raises:
        RuntimeBackendError: TensorRT or CUDA missing, or the ONNX file does not parse/build.
    """
    trt = _import_tensorrt()
    if not torch.cuda.is_available():
        raise RuntimeBackendError("building a TensorRT engine needs a CUDA GPU; none is visible")
    gpu = _cuda_device(device)
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise RuntimeBackendError(f"ONNX model {onnx_path} not found")
    metadata = read_onnx_metadata(onnx_path)
    engine_path = tensorrt_engine_path(
        onnx_path,
        tensorrt_version=trt.__version__,
        gpu_name=torch.cuda.get_device_name(gpu),
        max_batch=max_batch,
        fp16=fp16,
        cache_dir=cache_dir,
    )
    sidecar = engine_path.with_name(engine_path.name + ".json")
    if engine_path.is_file() and sidecar.is_file() and not rebuild:
        return engine_path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    # TensorRT < 10 needs the explicit-batch flag; 10 has only explicit batch and no such flag.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeBackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    network_input = network.get_input(0)
    _, channels, height, width = network_input.shape
    opt_batch = max(1, max_batch // 2)
    profile.set_shape(
        network_input.name,
        (1, channels, height, width),
        (opt_batch, channels, height, width),
        (max_batch, channels, height, width),
    )
    config.add_optimization_profile(profile)
    with torch.cuda.device(gpu):  # TensorRT builds on the current CUDA device
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeBackendError(
            f"TensorRT failed to build an engine from {onnx_path} (see its log)"
        )
    with atomic_write(engine_path) as stream:
        stream.write(bytes(serialized))
    onnx_precision = metadata.get(META_PRECISION) or onnx_graph_precision(onnx_path)
    info = {
        **metadata,
        # An int8 (QDQ) graph stays int8 in TensorRT; otherwise the engine computes as built.
        META_PRECISION: onnx_precision if onnx_precision == "int8" else precision_name(fp16),
        "tensorrt_version": trt.__version__,
        "gpu_name": torch.cuda.get_device_name(gpu),
        "max_batch": str(max_batch),
        "fp16": str(fp16),
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
    }
    with atomic_write(sidecar, "w") as stream:
        stream.write(json.dumps(info, indent=1))
    return engine_path


def precision_name(fp16: bool) -> str:
    return "fp16" if fp16 else "fp32"


class TensorRTPoseRunner(_RunnerBase):
    """A TensorRT engine of a pose network (built by :func:`build_tensorrt_engine`), on CUDA.

    Input crops of any float dtype are cast to fp32 on the GPU (the engine computes in fp16 where
    it was built so); batches larger than the engine's profile are run in chunks. ``device`` is
    the GPU the engine is loaded on and runs on ("cuda" = torch's current device, "cuda:N").
    """

    engine = "tensorrt"

    def __init__(
        self, engine_path: str | os.PathLike, *, device: str | torch.device = "cuda"
    ) -> None:
        trt = _import_tensorrt()
        engine_path = Path(engine_path)
        sidecar = engine_path.with_name(engine_path.name + ".json")
        if not engine_path.is_file() or not sidecar.is_file():
            raise RuntimeBackendError(
                f"TensorRT engine {engine_path} or its metadata {sidecar.name} not found; build "
                "them with `pose-ros-export --tensorrt` or build_tensorrt_engine()"
            )
        if not torch.cuda.is_available():
            raise RuntimeBackendError("TensorRT engines run on a CUDA GPU; none is visible")
        info = json.loads(sidecar.read_text())
        super().__init__(info, engine_path)
        if META_PRECISION not in info:  # engines built before the precision was recorded
            self.precision = precision_name(info.get("fp16") == "True")
        self.max_batch = int(info.get("max_batch", "1"))
        self.device = _cuda_device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):  # deserialised onto the chosen GPU, not GPU 0
            self.trt_engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self.trt_engine is not None:
                self.context = self.trt_engine.create_execution_context()
        if self.trt_engine is None:
            raise RuntimeBackendError(
                f"TensorRT cannot load {engine_path}: built for another TensorRT version or GPU? "
                "(rebuild it from the ONNX file)"
            )
        engine = self.trt_engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._input, self._output = inputs[0], outputs[0]
        if self.output_kind == OUTPUT_SIMCC:
            self._outputs = list(SIMCC_OUTPUT_NAMES)
            # Per output: its shape without the batch axis (static in these engines).
            self._output_shapes = {
                name: tuple(int(v) for v in engine.get_tensor_shape(name))[1:]
                for name in self._outputs
            }

    @classmethod
    def from_onnx(
        cls,
        onnx_path: str | os.PathLike,
        *,
        max_batch: int = 32,
        fp16: bool = True,
        device: str | torch.device = "cuda",
        cache_dir: str | os.PathLike | None = None,
    ) -> TensorRTPoseRunner:
        """Build (or reuse the cached) engine of ``onnx_path`` on ``device`` and load it."""
        engine = build_tensorrt_engine(
            onnx_path, max_batch=max_batch, fp16=fp16, device=device, cache_dir=cache_dir
        )
        return cls(engine, device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """(N, 3, H, W) normalised crops -> float32 on x's device: (N, K, H/4, W/4) heatmaps, or
        (simcc_x, simcc_y) for SimCC networks."""
        batch = x.detach().to(self.device, torch.float32).contiguous()
        if self.output_kind == OUTPUT_SIMCC:
            parts = [self._run_outputs(part) for part in batch.split(self.max_batch)]
            return tuple(torch.cat(column).to(x.device) for column in zip(*parts, strict=True))
        chunks = [self._run(part) for part in batch.split(self.max_batch)]
        return torch.cat(chunks).to(x.device)

    def _run_outputs(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """One chunk through an engine with several outputs (SimCC), in ``_outputs`` order."""
        outputs = [
            torch.empty(
                (batch.shape[0], *self._output_shapes[name]),
                dtype=torch.float32,
                device=self.device,
            )
            for name in self._outputs
        ]
        self.context.set_input_shape(self._input, tuple(batch.shape))
        self.context.set_tensor_address(self._input, batch.data_ptr())
        for name, out in zip(self._outputs, outputs, strict=True):
            self.context.set_tensor_address(name, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        with torch.cuda.device(self.device):
            ok = self.context.execute_async_v3(stream.cuda_stream)
        if not ok:
            raise RuntimeBackendError(f"TensorRT execution failed for {self.source}")
        return outputs

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        height, width = self.heatmap_size
        out = torch.empty(
            (batch.shape[0], self.num_keypoints, height, width),
            dtype=torch.float32,
            device=self.device,
        )
        self.context.set_input_shape(self._input, tuple(batch.shape))
        self.context.set_tensor_address(self._input, batch.data_ptr())
        self.context.set_tensor_address(self._output, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        with torch.cuda.device(self.device):
            ok = self.context.execute_async_v3(stream.cuda_stream)
        if not ok:
            raise RuntimeBackendError(f"TensorRT execution failed for {self.source}")
        return out


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeBackendError(
            "ONNX Runtime is not installed: `pip install onnxruntime` (or onnxruntime-gpu)"
        ) from None
    return onnxruntime


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise RuntimeBackendError(TENSORRT_MISSING) from None
    return tensorrt


def _cuda_device(device: str | torch.device) -> torch.device:
    """``device`` as an indexed CUDA device ("cuda" = torch's current device)."""
    device = torch.device(device)
    if device.type != "cuda":
        raise RuntimeBackendError(f"TensorRT runs on a CUDA device, got {str(device)!r}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise RuntimeBackendError(
            f"device {str(device)!r} does not exist: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, *, opset: int = MIN_OPSET) -> Path:
    """Write a pose network (fp32, CPU, eval mode) as ONNX with a dynamic batch axis and metadata.

    The graph takes ``input`` (N, 3, H, W) normalised crops and gives ``heatmaps``
    (N, K, H/4, W/4), or for SimCC networks (``model.output_names``) ``simcc_x`` (N, K, W * r)
    and ``simcc_y`` (N, K, H * r); ``metadata_props`` carry the preprocessing, architecture and
    output kind, so that :class:`OnnxPoseRunner` needs nothing else. The file is written
    atomically (a crash leaves the old file or none, never half of one).

    Args:
        model: any PoseNet; it is copied to the CPU in eval mode, the original is not changed.
        path: the ``.onnx`` file to write (parent folders created).
        opset: ONNX opset version, at least 17.

    Returns:
        The path written.
    """
    import io

    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be at least {MIN_OPSET}, got {opset}")
    path = Path(path)
    network = _cpu_eval_copy(model)
    height, width = model.input_size
    example = torch.zeros(2, 3, height, width)
    output_names = list(getattr(model, "output_names", (OUTPUT_NAME,)))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; it still exports these convolutional graphs exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *output_names]},
            do_constant_folding=True,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    output_kind = getattr(model, "output_kind", OUTPUT_HEATMAPS)
    metadata = export_metadata(
        model.preprocessing,
        dict(model.arch),
        model.num_keypoints,
        tuple(model.heatmap_size),
        output_kind,
        getattr(model, "simcc_split_ratio", None) if output_kind == OUTPUT_SIMCC else None,
    )
    del graph.metadata_props[:]
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    with atomic_write(path) as stream:
        stream.write(graph.SerializeToString())
    return path


def compare_with_onnxruntime(
    model: torch.nn.Module,
    onnx_path: str | os.PathLike,
    *,
    inputs: torch.Tensor | None = None,
    batch_size: int = 3,
    seed: int = 0,
) -> float:
    """Max abs output difference (heatmaps, or both SimCC vectors) between PyTorch (fp32, CPU)
    and ONNX Runtime (CPU).

    Args:
        inputs: (N, 3, H, W) normalised crops; default normal noise of that scale, ``batch_size``
            crops (not the export's example batch of 2, which also checks the dynamic batch axis).
    """
    network = _cpu_eval_copy(model)
    height, width = model.input_size
    if inputs is None:
        generator = torch.Generator().manual_seed(seed)
        inputs = torch.randn(batch_size, 3, height, width, generator=generator)
    x = inputs.to("cpu", torch.float32)
    with torch.inference_mode():
        expected = network(x)
    actual = OnnxPoseRunner(onnx_path, device="cpu")(x)
    pairs = list(zip(*(_as_tuple(v) for v in (actual, expected)), strict=True))
    difference = 0.0
    for got, want in pairs:
        if got.shape != want.shape:
            raise RuntimeBackendError(
                f"ONNX output shape {tuple(got.shape)} != PyTorch {tuple(want.shape)}"
            )
        difference = max(difference, float(np.abs(got.numpy() - want.numpy()).max()))
    return difference


def _as_tuple(value: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _cpu_eval_copy(model: torch.nn.Module) -> torch.nn.Module:
    network = copy.deepcopy(model).to("cpu", torch.float32).eval()
    return network.to(memory_format=torch.contiguous_format)


#: Crops ONNX Runtime's calibration needs at least, for activation ranges worth the name.
MIN_CALIBRATION_CROPS = 8


def quantize_int8(
    onnx_path: str | os.PathLike,
    output: str | os.PathLike,
    calibration_crops: np.ndarray,
) -> Path:
    """An int8 copy of an exported pose network, for the CPU: ONNX Runtime's static
    quantization in QDQ form (int8 weights per output channel, uint8 activations whose ranges
    come from ``calibration_crops``), with the export's metadata, written atomically.

    The activation ranges are those of the calibration crops: give real person crops of the
    cameras the model will see (normalised as the model wants, (N, 3, H, W) float32), not
    noise. What int8 costs in accuracy depends on the weights: measure it
    (``pose-ros-export --int8`` compares the keypoints with the fp32 export's).

    Raises:
        RuntimeBackendError: onnxruntime's quantization tools missing, or the quantization failed.
        ValueError: fewer than :data:`MIN_CALIBRATION_CROPS` crops, or crops of another shape.
    """
    ort = _import_onnxruntime()
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quant_pre_process,
            quantize_static,
        )
    except ImportError as error:
        raise RuntimeBackendError(
            f"int8 quantization needs the onnx package and onnxruntime's quantization tools: "
            f"{error} (pip install onnx onnxruntime)"
        ) from None
    onnx_path, output = Path(onnx_path), Path(output)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = tuple(session.get_inputs()[0].shape[1:])
    crops = np.ascontiguousarray(calibration_crops, np.float32)
    if crops.ndim != 4 or crops.shape[1:] != expected:
        raise ValueError(
            f"calibration crops must be (N, {', '.join(map(str, expected))}), got {crops.shape}"
        )
    if len(crops) < MIN_CALIBRATION_CROPS:
        raise ValueError(
            f"{len(crops)} calibration crops: at least {MIN_CALIBRATION_CROPS} are needed"
        )

    class Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{INPUT_NAME: crops[i : i + 1]} for i in range(len(crops))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix="pose_ros_int8_") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quantized = Path(scratch) / "int8.onnx"
        try:
            quant_pre_process(str(onnx_path), str(prepared))
            quantize_static(
                str(prepared),
                str(quantized),
                Crops(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        except Exception as error:  # the quantizer raises many types; all mean "cannot"
            raise RuntimeBackendError(f"int8 quantization of {onnx_path} failed: {error}") from None
        graph = onnx.load(str(quantized))
    # The quantizer keeps the graph, not the file's metadata: carry the export's over, with the
    # precision the graph now computes in.
    source = onnx.load(str(onnx_path), load_external_data=False)
    metadata = {prop.key: prop.value for prop in source.metadata_props}
    metadata[META_PRECISION] = "int8"
    del graph.metadata_props[:]
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_write(output) as stream:
        stream.write(graph.SerializeToString())
    return output
