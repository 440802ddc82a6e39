"""Pose networks on a shared NVIDIA Triton Inference Server: the model repository the exporter
writes, and the runner the pipeline calls instead of a local engine (``engine: triton``).

What crosses the network is small: per person a uint8 crop in (3 x H x W bytes, RGB), 17
decoded keypoints out (17 x 3 float32). The repository's graph does the rest on the server:

    uint8 RGB crops (N, 3, H, W) -> the weights' channel order -> (x / 255 - mean) / std
    -> pose network -> heatmaps -> the quarter decoding of the weights' authors
    (:func:`pose_ros.codec.decode_heatmaps_torch`, equal to the numpy rule) -> (N, K, 3)
    ``x, y, score`` with x, y in pixels of the input crop

so the robot side needs neither the weights nor the heatmap decoder, and the pipeline maps the
keypoints back to the image as it maps decoded heatmaps (:data:`pose_ros.types.OUTPUT_KEYPOINTS`).
Each model directory's ``config.pbtxt`` turns on Triton's dynamic batching, which merges the
requests of many robots into one network call.

``tritonclient`` is optional (``pip install 'pose_ros[triton]'``) and imported only by the runner.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch

from pose_ros import codec, simcc
from pose_ros.fileio import atomic_write
from pose_ros.models import Preprocessing
from pose_ros.runtime import (
    MIN_OPSET,
    RuntimeBackendError,
    export_metadata,
    uint8_crops,
)
from pose_ros.triton_endpoint import (
    DEFAULT_MODEL_NAME,
    DEFAULT_TIMEOUT_MS,
    DEFAULT_URL,
    TritonEndpoint,
    parse_triton_url,
)
from pose_ros.types import OUTPUT_HEATMAPS, OUTPUT_KEYPOINTS, OUTPUT_SIMCC

if TYPE_CHECKING:
    import os

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_TIMEOUT_MS",
    "DEFAULT_URL",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "KeypointGraph",
    "TritonEndpoint",
    "TritonError",
    "TritonPoseRunner",
    "TritonRepository",
    "export_keypoint_onnx",
    "export_triton_repository",
    "keypoint_graph_agreement",
    "keypoint_graph_outputs",
    "model_config_text",
    "parse_triton_url",
    "served_precision",
    "wire_preprocessing",
]

#: Names of the repository graph's tensors (the contract between exporter, server and node).
INPUT_NAME: Final[str] = "crops"
OUTPUT_NAME: Final[str] = "keypoints"
#: Channel order of the crops on the wire; the graph reorders them for BGR weights.
WIRE_COLOR_ORDER: Final[str] = "RGB"
#: Suffix of the TensorRT variant's model directory.
TENSORRT_SUFFIX: Final[str] = "_tensorrt"
INSTANCE_KINDS: Final[tuple[str, ...]] = ("gpu", "cpu")
#: Keypoints of the repository graph and of the pipeline's own decoding agree within this (input
#: pixels; the same for scores).
KEYPOINT_TOLERANCE_PX: Final[float] = 1e-3

TRITONCLIENT_MISSING = (
    "engine 'triton' needs the Triton client: pip install 'tritonclient[grpc,http]' "
    "(or pip install 'pose_ros[triton]')"
)


class TritonError(RuntimeBackendError):
    """The inference server cannot serve the pose network: unreachable, model missing or not
    ready, or a model whose inputs and outputs are not those of a pose_ros repository."""


def wire_preprocessing(input_size: tuple[int, int], decode_rule: str = "mmpose") -> Preprocessing:
    """What the pipeline must hand a repository graph: 0..255 pixel values in RGB order (an
    identity normalisation: mean 0, std 1/255), crops of ``input_size``."""
    return Preprocessing(
        WIRE_COLOR_ORDER,
        mean=(0.0, 0.0, 0.0),
        std=(1 / 255, 1 / 255, 1 / 255),
        input_size=tuple(input_size),
        decode_rule=decode_rule,
    )


# --------------------------------------------------------------------------- the graph


class KeypointGraph(torch.nn.Module):
    """A pose network with its normalisation and decoding inside: (N, 3, H, W) uint8 RGB crops
    in, (N, K, 3) ``x, y, score`` out, x and y in input-crop pixels."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        preprocessing = network.preprocessing
        self.reverse_channels = preprocessing.color_order != WIRE_COLOR_ORDER
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))
        self.decode_rule = preprocessing.decode_rule
        # SimCC networks (RTMPose) decode to input pixels by their split ratio; heatmap networks
        # to heatmap pixels, scaled by the stride.
        self.simcc_split_ratio = (
            float(network.simcc_split_ratio)
            if getattr(network, "output_kind", OUTPUT_HEATMAPS) == OUTPUT_SIMCC
            else None
        )
        (in_h, in_w), (hm_h, hm_w) = network.input_size, network.heatmap_size
        # Heatmap pixels to input pixels: crop_to_image maps both alike (a linear scale).
        self.register_buffer("stride", torch.tensor([in_w / hm_w, in_h / hm_h]))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        pixels = crops.float()
        if self.reverse_channels:
            pixels = pixels.flip(1)
        # The operations and their order of Preprocessing.normalize.
        output = self.network((pixels / 255.0 - self.mean) / self.std)
        if self.simcc_split_ratio is not None:
            simcc_x, simcc_y = output
            coords, scores = simcc.decode_simcc_torch(simcc_x, simcc_y, self.simcc_split_ratio)
            return torch.cat([coords, scores[..., None]], dim=-1)
        coords, scores = codec.decode_heatmaps_torch(output.float(), rule=self.decode_rule)
        return torch.cat([coords * self.stride, scores[..., None]], dim=-1)


def export_keypoint_onnx(
    model: torch.nn.Module, path: str | os.PathLike, *, opset: int = MIN_OPSET
) -> Path:
    """Write :class:`KeypointGraph` of ``model`` (a PoseNet; copied to the CPU in fp32, eval
    mode) as ONNX with a dynamic batch axis and the pose_ros metadata (the wire preprocessing,
    ``output_kind`` keypoints), atomically. It also runs locally: ``OnnxPoseRunner(path)``."""
    import copy

    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be at least {MIN_OPSET}, got {opset}")
    network = copy.deepcopy(model).to("cpu", torch.float32).eval()
    graph_module = KeypointGraph(network).eval()
    height, width = model.input_size
    example = torch.zeros(2, 3, height, width, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            graph_module,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    metadata = export_metadata(
        wire_preprocessing(model.input_size, model.preprocessing.decode_rule),
        {**dict(model.arch), "weights_preprocessing": model.preprocessing.to_dict()},
        model.num_keypoints,
        tuple(model.heatmap_size),
        OUTPUT_KEYPOINTS,
    )
    del graph.metadata_props[:]
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    path = Path(path)
    with atomic_write(path) as stream:
        stream.write(graph.SerializeToString())
    return path


def keypoint_graph_agreement(
    model: torch.nn.Module, onnx_path: str | os.PathLike, crops: np.ndarray
) -> tuple[float, float]:
    """(max abs difference, share of keypoints whose x, y and score agree within
    :data:`KEYPOINT_TOLERANCE_PX`) between the exported graph on ONNX Runtime and the same
    steps in PyTorch with the numpy decoder of the pipeline (:func:`pose_ros.codec.
    decode_heatmaps`, the weights' rule), on uint8 RGB ``crops``. (Two heatmap values within
    float rounding of each other may pick another argmax on either side: hence the share.)"""
    actual, expected = _graph_and_reference(model, onnx_path, crops)
    difference = np.abs(actual - expected)
    within = (difference <= KEYPOINT_TOLERANCE_PX).all(axis=-1)
    return float(difference.max()), float(within.mean())


def keypoint_graph_outputs(
    model: torch.nn.Module, onnx_path: str | os.PathLike, crops: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(the graph's (N, K, 3) keypoints on ONNX Runtime, the reference: PyTorch heatmaps of
    the same crops decoded by :func:`pose_ros.codec.decode_heatmaps` and scaled to input
    pixels)."""
    return _graph_and_reference(model, onnx_path, crops)


def _graph_and_reference(
    model: torch.nn.Module, onnx_path: str | os.PathLike, crops: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    from pose_ros.runtime import OnnxPoseRunner

    crops = np.ascontiguousarray(crops, dtype=np.uint8)
    pixels = torch.from_numpy(crops).float()
    network = model.to("cpu", torch.float32).eval()
    normalized = network.preprocessing.normalize(pixels, input_color_order=WIRE_COLOR_ORDER)
    with torch.inference_mode():
        output = network(normalized)
    if getattr(network, "output_kind", OUTPUT_HEATMAPS) == OUTPUT_SIMCC:
        coords, scores = simcc.decode_simcc(
            output[0].numpy(), output[1].numpy(), network.simcc_split_ratio
        )
        expected = np.concatenate([coords, scores[..., None]], axis=-1)
    else:
        coords, scores = codec.decode_heatmaps(
            output.numpy(), "quarter", rule=network.preprocessing.decode_rule
        )
        (in_h, in_w), (hm_h, hm_w) = network.input_size, network.heatmap_size
        expected = np.concatenate(
            [coords * np.array([in_w / hm_w, in_h / hm_h], np.float32), scores[..., None]],
            axis=-1,
        )
    actual = OnnxPoseRunner(onnx_path, device="cpu")(pixels).numpy()
    if actual.shape != expected.shape:
        raise RuntimeBackendError(f"graph output {actual.shape} != expected {expected.shape}")
    return actual, expected


# --------------------------------------------------------------------------- the repository


def model_config_text(
    name: str,
    *,
    platform: str,
    input_size: tuple[int, int],
    num_keypoints: int,
    max_batch_size: int,
    max_queue_delay_us: int,
    instances: int,
    kind: str,
) -> str:
    """A Triton ``config.pbtxt`` (protobuf text of ``inference.ModelConfig``) for a repository
    graph: batch axis up to ``max_batch_size``, dynamic batching that waits at most
    ``max_queue_delay_us`` to fill a batch, ``instances`` copies on the GPU or the CPU."""
    height, width = input_size
    return f"""# pose_ros keypoint graph (pose-ros-export --triton-repository): uint8 RGB crops in,
# decoded keypoints (x, y in input-crop pixels, score) out.
name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_UINT8
    dims: [ 3, {height}, {width} ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {num_keypoints}, 3 ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {max_queue_delay_us}
}}
instance_group [
  {{
    count: {instances}
    kind: KIND_{kind.upper()}
  }}
]
"""


def tensorrt_build_script(
    name: str, onnx_model: str, input_size: tuple[int, int], max_batch_size: int
) -> str:
    """Shell script that builds ``1/model.plan`` of the TensorRT variant on the server, with the
    server's own TensorRT (a plan runs only on the TensorRT version and GPU it was built on)."""
    height, width = input_size
    optimal = max(1, max_batch_size // 2)
    shape = f"3x{height}x{width}"
    return f"""#!/usr/bin/env bash
# Builds {name}/1/model.plan from ../{onnx_model}/1/model.onnx with trtexec, on the GPU server (run
# inside the tritonserver container, whose TensorRT is the one that will load the plan). Skipped
# when the plan exists; delete it after a change of GPU or server version.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
plan="$here/1/model.plan"
[ -f "$plan" ] && exit 0
trtexec=$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)
mkdir -p "$here/1"
"$trtexec" --onnx="$here/../{onnx_model}/1/model.onnx" --saveEngine="$plan.partial" --fp16 \\
  --minShapes={INPUT_NAME}:1x{shape} --optShapes={INPUT_NAME}:{optimal}x{shape} \\
  --maxShapes={INPUT_NAME}:{max_batch_size}x{shape}
mv "$plan.partial" "$plan"
"""


@dataclass(frozen=True)
class TritonRepository:
    """What :func:`export_triton_repository` wrote."""

    directory: Path
    model_name: str
    onnx_path: Path
    config_path: Path
    #: The TensorRT variant (config.pbtxt and build_plan.sh), when asked for.
    tensorrt_config_path: Path | None = None
    tensorrt_build_script: Path | None = None


def export_triton_repository(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    max_batch_size: int = 32,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    kind: str = "gpu",
    tensorrt: bool = False,
    opset: int = MIN_OPSET,
) -> TritonRepository:
    """Write a Triton model repository for a pose network (a PoseNet):
    ``<directory>/<model_name>/1/model.onnx`` (:class:`KeypointGraph`, run by Triton's ONNX
    Runtime backend) and its ``config.pbtxt``; with ``tensorrt`` also
    ``<model_name>_tensorrt/`` (``config.pbtxt`` of platform ``tensorrt_plan`` and
    ``build_plan.sh``, which builds the plan on the GPU server from the same ONNX file).

    Raises:
        ValueError: a bad name, batch size, delay, instance count or kind.
    """
    if not model_name or not all(c.isalnum() or c in "._-" for c in model_name):
        raise ValueError(f"model name {model_name!r}: use letters, digits, '.', '_' and '-' only")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if max_queue_delay_us < 0:
        raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
    if instances < 1:
        raise ValueError(f"instances must be at least 1, got {instances}")
    if kind not in INSTANCE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(INSTANCE_KINDS)}, got {kind!r}")
    directory = Path(directory)
    model_dir = directory / model_name
    onnx_path = export_keypoint_onnx(model, model_dir / "1" / "model.onnx", opset=opset)
    common = {
        "input_size": tuple(model.input_size),
        "num_keypoints": int(model.num_keypoints),
        "max_batch_size": max_batch_size,
        "max_queue_delay_us": max_queue_delay_us,
        "instances": instances,
    }
    config_path = model_dir / "config.pbtxt"
    with atomic_write(config_path, "w") as stream:
        stream.write(
            model_config_text(model_name, platform="onnxruntime_onnx", kind=kind, **common)
        )
    if not tensorrt:
        return TritonRepository(directory, model_name, onnx_path, config_path)
    trt_name = model_name + TENSORRT_SUFFIX
    trt_dir = directory / trt_name
    trt_config = trt_dir / "config.pbtxt"
    with atomic_write(trt_config, "w") as stream:
        stream.write(model_config_text(trt_name, platform="tensorrt_plan", kind="gpu", **common))
    script = trt_dir / "build_plan.sh"
    with atomic_write(script, "w") as stream:
        stream.write(
            tensorrt_build_script(trt_name, model_name, tuple(model.input_size), max_batch_size)
        )
    script.chmod(0o755)
    return TritonRepository(directory, model_name, onnx_path, config_path, trt_config, script)


# --------------------------------------------------------------------------- the runner


def _import_client(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
    except ImportError:
        raise TritonError(TRITONCLIENT_MISSING) from None
    return client_module


def served_precision(config: dict[str, Any]) -> str:
    """What a served model computes in, from its configuration (as the client reads it): "fp16"
    for a TensorRT plan (the repository's TensorRT variant is built with ``--fp16``), else "fp32"
    (the repository's ONNX graph, exported in fp32)."""
    tensorrt = config.get("platform") == "tensorrt_plan" or config.get("backend") == "tensorrt"
    return "fp16" if tensorrt else "fp32"


def _expected_io(
    config: dict[str, Any], num_keypoints: int
) -> tuple[list[str], tuple[int, int] | None]:
    """What is wrong with a served model's inputs and outputs (sentences), and the crop size
    (H, W) when the input is right."""
    problems: list[str] = []
    size = None
    inputs = config.get("input", [])
    outputs = config.get("output", [])
    max_batch = int(config.get("max_batch_size", 0))
    if max_batch < 1:
        problems.append(
            f"max_batch_size is {max_batch}: a pose_ros repository model has a batch axis"
        )
    names = [tensor.get("name") for tensor in inputs]
    if names != [INPUT_NAME]:
        problems.append(f"inputs are {names}, expected one named {INPUT_NAME!r}")
    else:
        tensor = inputs[0]
        dims = [int(d) for d in tensor.get("dims", [])]
        if tensor.get("data_type") != "TYPE_UINT8":
            problems.append(f"input {INPUT_NAME!r} is {tensor.get('data_type')}, not TYPE_UINT8")
        if len(dims) != 3 or dims[0] != 3 or min(dims) < 1:
            problems.append(
                f"input {INPUT_NAME!r} has shape {dims}, expected [3, height, width] (RGB crops)"
            )
        else:
            size = (dims[1], dims[2])
    names = [tensor.get("name") for tensor in outputs]
    if names != [OUTPUT_NAME]:
        problems.append(f"outputs are {names}, expected one named {OUTPUT_NAME!r}")
    else:
        tensor = outputs[0]
        dims = [int(d) for d in tensor.get("dims", [])]
        if tensor.get("data_type") != "TYPE_FP32":
            problems.append(f"output {OUTPUT_NAME!r} is {tensor.get('data_type')}, not TYPE_FP32")
        if dims != [num_keypoints, 3]:
            problems.append(
                f"output {OUTPUT_NAME!r} has shape {dims}, expected [{num_keypoints}, 3] "
                "(x, y, score of each keypoint)"
            )
    return problems, size


class TritonPoseRunner:
    """The pose network of a Triton server, in the pipeline's place of a local engine.

    At construction the server must be live, the model ready, and its inputs and outputs those
    of a pose_ros repository graph; else :class:`TritonError` says which of them is wrong. A call
    sends the crops (as uint8 RGB, in requests of at most the model's ``max_batch_size``) and
    returns the (N, K, 3) keypoints; a failure raises :class:`TritonError` and sets
    :attr:`problem` until a call succeeds again. The gRPC channel retries its connection every
    half second at most, so answers resume within about that after the server's return.

    Args:
        url: ``grpc://host:port`` (default port 8001), ``http://host:port`` (8000), or
            ``host:port`` (gRPC).
        model: the model's name in the server's repository.
        timeout_ms: longest wait for a check or a request (then it counts as failed).
        num_keypoints: what the pipeline needs (17, COCO order).
    """

    engine = "triton"
    output_kind = OUTPUT_KEYPOINTS
    #: Longest pause of the gRPC channel between connection attempts to a server gone away.
    RECONNECT_BACKOFF_MS: Final[int] = 500

    def __init__(
        self,
        url: str,
        model: str = DEFAULT_MODEL_NAME,
        *,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        num_keypoints: int = 17,
    ) -> None:
        try:
            self.endpoint = parse_triton_url(url)
        except ValueError as error:
            raise TritonError(str(error)) from None
        if not model:
            raise TritonError("triton.model must name the model in the server's repository")
        if timeout_ms < 1:
            raise TritonError(f"triton.timeout_ms must be at least 1, got {timeout_ms}")
        self.url = self.endpoint.url
        self.model_name = model
        self.timeout_s = timeout_ms / 1000.0
        self.num_keypoints = num_keypoints
        self._module = _import_client(self.endpoint.protocol)
        self._local = threading.local()
        #: Why the server does not answer at present ("inference server unreachable: <url>"),
        #: None while it answers.
        self.problem: str | None = None
        #: Requests that failed, and those answered, since construction.
        self.failed_requests = 0
        self.requests = 0
        config = self._check_server()
        self.max_batch_size = int(config["max_batch_size"])
        problems, size = _expected_io(config, num_keypoints)
        if problems or size is None:
            raise TritonError(
                f"model {model!r} on the inference server {self.url} is not a pose_ros keypoint "
                f"graph: {'; '.join(problems)} (export it with pose-ros-export "
                "--triton-repository)"
            )
        self.preprocessing = wire_preprocessing(size)
        self.arch: dict[str, Any] = {"name": f"{model} at {self.url}"}
        #: "fp32" or "fp16" (a TensorRT plan): the status line and /diagnostics show it.
        self.precision = served_precision(config)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessing.input_size

    @property
    def heatmap_size(self) -> tuple[int, int]:
        # Keypoints come back decoded, in input pixels: no heatmap grid on this side.
        return self.preprocessing.input_size

    def _client(self) -> Any:
        """This thread's client (the HTTP client must stay on the thread that made it)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client()
            self._local.client = client
        return client

    def _new_client(self) -> Any:
        address = self.endpoint.address
        if self.endpoint.protocol == "grpc":
            limit = 2**31 - 1
            return self._module.InferenceServerClient(
                address,
                channel_args=[
                    ("grpc.max_send_message_length", limit),
                    ("grpc.max_receive_message_length", limit),
                    # Fast reconnection after the server's return (gRPC's default backoff
                    # grows to two minutes).
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", self.RECONNECT_BACKOFF_MS),
                ],
            )
        return self._module.InferenceServerClient(
            address,
            connection_timeout=self.timeout_s,
            network_timeout=self.timeout_s,
            concurrency=1,
        )

    def _timeout(self) -> dict[str, float]:
        return {"client_timeout": self.timeout_s} if self.endpoint.protocol == "grpc" else {}

    def _check_server(self) -> dict[str, Any]:
        """The served model's configuration, after checking that the server is live and the
        model ready."""
        client = self._client()
        try:
            live = client.is_server_live(**self._timeout())
        except Exception as error:  # tritonclient, grpc and socket errors alike
            raise TritonError(
                f"inference server unreachable: {self.url} ({_reason(error)}); check triton.url "
                "and that tritonserver runs there"
            ) from None
        if not live:
            raise TritonError(f"the inference server at {self.url} is not live")
        try:
            ready = client.is_model_ready(self.model_name, **self._timeout())
        except Exception as error:
            raise TritonError(
                f"inference server {self.url}: cannot ask for model {self.model_name!r}: "
                f"{_reason(error)}"
            ) from None
        if not ready:
            raise TritonError(
                f"model {self.model_name!r} is not ready on the inference server {self.url}"
                f"{self._available_models()}: check triton.model, and the server's log for why "
                "it did not load"
            )
        try:
            if self.endpoint.protocol == "grpc":
                config = client.get_model_config(self.model_name, as_json=True, **self._timeout())[
                    "config"
                ]
            else:
                config = client.get_model_config(self.model_name)
        except Exception as error:
            raise TritonError(
                f"inference server {self.url}: cannot read the configuration of model "
                f"{self.model_name!r}: {_reason(error)}"
            ) from None
        return config

    def _available_models(self) -> str:
        """ " (it serves: a, b)" when the server lists its repository, else ""."""
        try:
            index = self._client().get_model_repository_index(**self._timeout())
        except Exception:  # the listing may be restricted: only a hint
            return ""
        if not isinstance(index, list):  # gRPC: a protobuf message
            index = [{"name": model.name} for model in index.models]
        names = sorted({str(entry.get("name")) for entry in index})
        return f" (it serves: {', '.join(names)})" if names else " (it serves no model)"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) crops of 0..255 RGB pixel values -> (N, K, 3) float32 keypoints
        (x, y in input-crop pixels, score) on x's device."""
        crops = uint8_crops(x)
        try:
            parts = [
                self._infer(crops[start : start + self.max_batch_size])
                for start in range(0, len(crops), self.max_batch_size)
            ]
        except Exception as error:
            self.failed_requests += 1
            self.problem = self._failure(error)
            raise TritonError(f"{self.problem} ({_reason(error)})") from None
        self.requests += 1
        self.problem = None
        return torch.from_numpy(np.concatenate(parts)).to(x.device)

    def _infer(self, crops: np.ndarray) -> np.ndarray:
        module = self._module
        tensor = module.InferInput(INPUT_NAME, list(crops.shape), "UINT8")
        if self.endpoint.protocol == "grpc":
            tensor.set_data_from_numpy(crops)
            wanted = [module.InferRequestedOutput(OUTPUT_NAME)]
        else:
            tensor.set_data_from_numpy(crops, binary_data=True)
            wanted = [module.InferRequestedOutput(OUTPUT_NAME, binary_data=True)]
        result = self._client().infer(self.model_name, [tensor], outputs=wanted, **self._timeout())
        keypoints = result.as_numpy(OUTPUT_NAME)
        if keypoints is None or keypoints.shape != (len(crops), self.num_keypoints, 3):
            shape = None if keypoints is None else keypoints.shape
            raise TritonError(
                f"model {self.model_name!r} answered {shape}, expected "
                f"{(len(crops), self.num_keypoints, 3)}"
            )
        return keypoints.astype(np.float32, copy=False)

    def _failure(self, error: Exception) -> str:
        """The condition a failed request shows (for /diagnostics)."""
        text = _reason(error)
        if "unknown model" in text or "is not found" in text or "not ready" in text:
            return f"model {self.model_name!r} not available on the inference server {self.url}"
        if isinstance(error, TritonError):
            return str(error)
        status = getattr(error, "status", None)
        code = status() if callable(status) else None
        # No status: a socket or timeout error of the HTTP client; these gRPC codes: no
        # connection, or no answer within triton.timeout_ms.
        if code is None or code in _UNREACHABLE_CODES:
            return f"inference server unreachable: {self.url}"
        return f"inference server {self.url} refused the request"


#: gRPC status codes of a server that cannot be reached or does not answer in time.
_UNREACHABLE_CODES = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}
)


def _reason(error: BaseException) -> str:
    """One line of what a client error says."""
    message = getattr(error, "message", None)
    text = message() if callable(message) else str(error)
    status = getattr(error, "status", None)
    code = status() if callable(status) else None
    text = (text or type(error).__name__).strip().splitlines()[0]
    return f"{code}: {text}" if code else text
