"""The Triton model repository (pose_ros.triton, pose-ros-export --triton-repository), without a
server: the graph decodes its heatmaps exactly as the pipeline's numpy codec does (both authors'
sub-pixel rules, both colour orders), its config.pbtxt parses with Triton's own model-config
protobuf and agrees with the ONNX graph, the graph runs locally in the pipeline, and triton.url
values are checked."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pose_ros import codec
from pose_ros.factory import estimator_from_names
from pose_ros.models import Preprocessing, load_pose_model
from pose_ros.pipeline import PoseEstimator
from pose_ros.ros.params import parameter_problem
from pose_ros.runtime import OnnxPoseRunner
from pose_ros.triton import (
    INPUT_NAME,
    KEYPOINT_TOLERANCE_PX,
    OUTPUT_NAME,
    export_keypoint_onnx,
    export_triton_repository,
    keypoint_graph_outputs,
    served_precision,
)
from pose_ros.triton_endpoint import parse_triton_url
from training.export import main as export_main

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="tritonclient is an optional extra (pip install 'pose_ros[triton]')",
)
text_format = pytest.importorskip("google.protobuf.text_format")
json_format = pytest.importorskip("google.protobuf.json_format")


class PeakNetwork(nn.Module):
    """A stand-in pose network whose heatmaps are a fixed mix of the pooled crop: on noise crops
    their maxima fall anywhere, the border rows and columns included, where the two authors'
    sub-pixel rules differ."""

    def __init__(self, color_order: str, rule: str, input_size: tuple[int, int] = (64, 48)):
        super().__init__()
        self.preprocessing = Preprocessing(color_order, input_size=input_size, decode_rule=rule)
        self.num_keypoints = 17
        self.arch = {"name": "peak_test_network"}
        generator = torch.Generator().manual_seed(3)
        self.mix = nn.Conv2d(3, 17, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.randn(17, 3, 1, 1, generator=generator))
            self.mix.bias.zero_()

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessing.input_size

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return (self.input_size[0] // 4, self.input_size[1] // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(nn.functional.avg_pool2d(x, 4))


def _noise_crops(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 3, *size), dtype=np.uint8)


@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
@pytest.mark.parametrize("rule", ["mmpose", "microsoft"])
def test_graph_decodes_as_the_numpy_codec(tmp_path: Path, rule: str, color_order: str) -> None:
    network = PeakNetwork(color_order, rule).eval()
    path = export_keypoint_onnx(network, tmp_path / "model.onnx")
    crops = _noise_crops(24, network.input_size)
    actual, expected = keypoint_graph_outputs(network, path, crops)
    # The reference, step by step: the pipeline's normalisation of RGB crops (reordered for
    # BGR weights), the heatmaps, the numpy decoder with the weights' rule, heatmap -> input px.
    pixels = torch.from_numpy(crops).float()
    with torch.inference_mode():
        heatmaps = network(network.preprocessing.normalize(pixels, input_color_order="RGB"))
    coords, scores = codec.decode_heatmaps(heatmaps.numpy(), "quarter", rule=rule)
    np.testing.assert_allclose(expected[..., :2], coords * 4, atol=1e-6)
    np.testing.assert_allclose(expected[..., 2], scores, atol=1e-6)

    assert actual.shape == (24, 17, 3) and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, atol=KEYPOINT_TOLERANCE_PX, rtol=0)
    # The crops reach the borders, where the rules differ: the rule is really exercised.
    heatmap_coords = expected[..., :2] / 4
    on_border = (heatmap_coords[..., 0] < 1.5) | (heatmap_coords[..., 1] < 1.5)
    assert on_border.sum() >= 20, on_border.sum()


def test_the_two_rules_give_different_graphs(tmp_path: Path) -> None:
    crops = _noise_crops(24, (64, 48))
    outputs = []
    for rule in ("mmpose", "microsoft"):
        network = PeakNetwork("RGB", rule).eval()
        path = export_keypoint_onnx(network, tmp_path / f"{rule}.onnx")
        outputs.append(OnnxPoseRunner(path, device="cpu")(torch.from_numpy(crops).float()))
    differs = (outputs[0] - outputs[1]).abs().amax(dim=-1) > 0.5
    assert differs.any(), "the sub-pixel rules should disagree at the borders"


def test_a_pose_network_graph_matches_pytorch_and_numpy(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    model = load_pose_model(tiny_checkpoint)
    path = export_keypoint_onnx(model, tmp_path / "model.onnx")
    actual, expected = keypoint_graph_outputs(model, path, _noise_crops(6, (128, 96), seed=1))
    difference = np.abs(actual - expected).max()
    print(f"SimpleBaseline-R18 keypoint graph vs PyTorch + numpy: {difference:.2e}")
    np.testing.assert_allclose(actual, expected, atol=KEYPOINT_TOLERANCE_PX, rtol=0)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


ONNX_TO_TRITON_TYPES = {
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
}


def test_config_pbtxt_parses_with_tritons_protobuf_and_agrees_with_the_graph(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    model = load_pose_model(tiny_checkpoint)
    repository = export_triton_repository(
        model,
        tmp_path / "models",
        model_name="robot_pose",
        max_batch_size=48,
        max_queue_delay_us=1500,
        instances=2,
        kind="gpu",
        tensorrt=True,
    )
    assert repository.onnx_path == tmp_path / "models" / "robot_pose" / "1" / "model.onnx"
    graph = onnx.load(str(repository.onnx_path)).graph
    (graph_input,), (graph_output,) = graph.input, graph.output

    for config_path, platform in (
        (repository.config_path, "onnxruntime_onnx"),
        (repository.tensorrt_config_path, "tensorrt_plan"),
    ):
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        assert config.name == config_path.parent.name  # Triton wants the directory's name
        assert config.platform == platform
        # The node names what the served model computes in, from the configuration as the
        # client reads it (gRPC's as_json form): the TensorRT variant is built in fp16.
        as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
        assert served_precision(as_json) == ("fp16" if platform == "tensorrt_plan" else "fp32")
        assert config.max_batch_size == 48
        assert config.dynamic_batching.max_queue_delay_microseconds == 1500
        (group,) = config.instance_group
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert group.count == 2
        for tensors, value_info in ((config.input, graph_input), (config.output, graph_output)):
            (tensor,) = tensors
            assert tensor.name == value_info.name
            assert (
                model_config_pb2.DataType.Name(tensor.data_type)
                == (ONNX_TO_TRITON_TYPES[value_info.type.tensor_type.elem_type])
            )
            # Triton's dims leave out the batch axis, which the graph keeps dynamic.
            graph_dims = _dims(value_info)
            assert isinstance(graph_dims[0], str), graph_dims
            assert list(tensor.dims) == graph_dims[1:]
    assert (graph_input.name, graph_output.name) == (INPUT_NAME, OUTPUT_NAME)
    assert _dims(graph_input)[1:] == [3, 128, 96] and _dims(graph_output)[1:] == [17, 3]

    script = repository.tensorrt_build_script.read_text()
    assert repository.tensorrt_build_script.stat().st_mode & 0o111
    assert "../robot_pose/1/model.onnx" in script
    for option in ("--minShapes=crops:1x3x128x96", "--maxShapes=crops:48x3x128x96", "--fp16"):
        assert option in script


def test_repository_options_are_checked(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model = load_pose_model(tiny_checkpoint)
    for options, words in (
        ({"model_name": "a/b"}, "model name"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"instances": 0}, "instances"),
        ({"kind": "tpu"}, "kind"),
    ):
        with pytest.raises(ValueError, match=words):
            export_triton_repository(model, tmp_path, **options)


def test_export_command_writes_the_repository(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    directory = tmp_path / "triton_models"
    argv = ["--model", str(tiny_checkpoint), "--triton-repository", str(directory)]
    assert export_main([*argv, "--triton-kind", "cpu"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"vs PyTorch \+ numpy decoding: max abs difference (\S+), (\S+)% within", out)
    assert match, out
    assert float(match.group(2)) == 100.0
    config = text_format.Parse(
        (directory / "pose" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert not (directory / "pose_tensorrt").exists()
    assert not tiny_checkpoint.with_suffix(".onnx").exists()  # no --output: repository only


def test_the_graph_runs_in_the_pipeline_on_onnxruntime(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """The repository's model.onnx is also a local engine: model:=<repo>/pose/1/model.onnx."""
    repository = export_triton_repository(load_pose_model(tiny_checkpoint), tmp_path)
    estimator = estimator_from_names(
        str(repository.onnx_path), detector="full_image", engine="onnxruntime", device="cpu"
    )
    assert estimator.engine == "onnxruntime" and estimator.model.output_kind == "keypoints"
    image = np.random.default_rng(2).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    (person,) = estimator(image, color_order="BGR")
    assert person.keypoints.shape == (17, 3)
    assert (person.keypoints[:, 0] >= 0).all() and (person.keypoints[:, 0] <= 89).all()
    with pytest.raises(ValueError, match="flip_test and decode 'dark' are not available"):
        PoseEstimator(estimator.model, device="cpu", flip_test=True)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("grpc://gpu-server:9001", ("grpc", "gpu-server:9001")),
        ("gpu-server", ("grpc", "gpu-server:8001")),
        ("http://10.0.0.5", ("http", "10.0.0.5:8000")),
        ("grpc://[::1]:8001", ("grpc", "[::1]:8001")),
    ],
)
def test_triton_urls(url: str, expected: tuple[str, str]) -> None:
    endpoint = parse_triton_url(url)
    assert (endpoint.protocol, endpoint.address) == expected
    assert parameter_problem("triton.url", url) is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://server:8001", "scheme must be grpc:// or http://"),
        ("grpc://:8001", "names no host"),
        ("grpc://server:port", "port is not a number"),
        ("grpc://server:8001/v2/models", "only scheme, host and port"),
        ("", "must not be empty"),
    ],
)
def test_bad_triton_urls_are_named(url: str, words: str) -> None:
    problem = parameter_problem("triton.url", url)
    assert problem is not None and words in problem, problem
    assert parameter_problem("triton.timeout_ms", 0) is not None
    assert parameter_problem("triton.model", " ") == "triton.model must not be empty"


def test_an_rtmpose_graph_decodes_simcc_as_the_pipeline(tmp_path: Path, coco_dir: Path) -> None:
    """RTMPose in a Triton repository: the graph's SimCC argmax (input pixels, by the split
    ratio) agrees with PyTorch + the numpy SimCC decoder, and as a local engine it gives the
    pipeline's keypoints on a real image."""
    import cv2

    from pose_ros.models import build_pose_model

    torch.manual_seed(0)
    model = build_pose_model("rtmpose_t").eval()
    repository = export_triton_repository(model, tmp_path)
    actual, expected = keypoint_graph_outputs(
        model, repository.onnx_path, _noise_crops(4, model.input_size, seed=5)
    )
    np.testing.assert_allclose(actual, expected, atol=KEYPOINT_TOLERANCE_PX, rtol=0)
    assert (expected[..., :2] > 2 * model.input_size[1] / 4).any()  # pixels, not bins / 4

    image = cv2.imread(str(sorted(coco_dir.glob("*.jpg"))[0]))
    local = PoseEstimator(OnnxPoseRunner(repository.onnx_path, device="cpu"), device="cpu")
    reference = PoseEstimator(model, device="cpu")
    height, width = image.shape[:2]
    boxes = np.array([[width * 0.2, height * 0.1, width * 0.5, height * 0.8]], np.float32)
    ours = local(image, boxes=boxes, color_order="BGR")
    theirs = reference(image, boxes=boxes, color_order="BGR")
    assert len(ours) == len(theirs) == 1
    np.testing.assert_allclose(ours[0].keypoints, theirs[0].keypoints, atol=0.05)
