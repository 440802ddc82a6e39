"""Engines: ONNX Runtime chosen by default on the CPU with the same keypoints as PyTorch, the
export cache keyed by weights and input size, exported files as ``model``, the detector backbone
on ONNX Runtime, and the start-up guards (random detector weights, CUDA devices)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose_ros import engines
from pose_ros.factory import estimator_from_names
from pose_ros.models import build_pose_model, load_pose_model, save_checkpoint
from pose_ros.pipeline import PoseEstimator
from pose_ros.runtime import OnnxPoseRunner, export_onnx

BOXES = np.array([[100.0, 50.0, 150.0, 300.0], [300.0, 80.0, 120.0, 260.0]], np.float32)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """estimator_from_names sets PyTorch's process-wide thread count: give the next tests theirs
    back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image(coco_dir: Path) -> np.ndarray:
    bgr = cv2.imread(str(coco_dir / "000000196141.jpg"))
    assert bgr is not None
    return bgr


def _from_names(model: str | Path, cache: Path, **kwargs) -> PoseEstimator:
    kwargs.setdefault("device", "cpu")
    return estimator_from_names(str(model), detector="full_image", cache_dir=str(cache), **kwargs)


def test_auto_runs_onnxruntime_on_the_cpu_with_the_keypoints_of_pytorch(
    tiny_checkpoint: Path, tmp_path: Path, image: np.ndarray
) -> None:
    auto = _from_names(tiny_checkpoint, tmp_path)
    assert auto.engine == "onnxruntime" and isinstance(auto.model, OnnxPoseRunner)
    assert torch.get_num_threads() == 1  # ONNX Runtime takes the cores, PyTorch one thread
    assert "on onnxruntime cpu" in auto.describe()
    eager = _from_names(tiny_checkpoint, tmp_path, engine="torch")
    assert torch.get_num_threads() == engines.cpu_thread_count(0)
    assert eager.engine == "torch" and isinstance(eager.model, torch.nn.Module)
    expected = eager(image, color_order="BGR", boxes=BOXES)
    actual = auto(image, color_order="BGR", boxes=BOXES)
    assert len(actual) == len(expected) == 2
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a.box, e.box)
        np.testing.assert_allclose(a.keypoints[:, :2], e.keypoints[:, :2], atol=1e-3)
        np.testing.assert_allclose(a.keypoints[:, 2], e.keypoints[:, 2], rtol=1e-3, atol=1e-6)


def test_export_cache_is_keyed_by_weights_and_input_size(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "exports"
    _from_names(tiny_checkpoint, cache, engine="onnxruntime")
    (first,) = cache.glob("*.onnx")
    torch_version = torch.__version__.split("+")[0]
    assert first.name.startswith("simplebaseline_res18-") and "-128x96-" in first.name
    assert f"torch{torch_version}" in first.name and "opset17" in first.name
    stamp = first.stat().st_mtime_ns
    _from_names(tiny_checkpoint, cache, engine="onnxruntime")  # same weights: the same file
    assert list(cache.glob("*.onnx")) == [first] and first.stat().st_mtime_ns == stamp

    model = load_pose_model(tiny_checkpoint)
    with torch.no_grad():
        model.final_layer.bias.add_(0.5)  # other weights, same architecture and size
    changed = save_checkpoint(model, tmp_path / "changed.pt")
    _from_names(changed, cache, engine="onnxruntime")
    torch.manual_seed(0)
    other_size = save_checkpoint(
        build_pose_model("simplebaseline_res18", input_size=(64, 64)), tmp_path / "size.pt"
    )
    _from_names(other_size, cache, engine="onnxruntime")
    names = sorted(p.name for p in cache.glob("*.onnx"))
    assert len(names) == 3 and sum("-64x64-" in n for n in names) == 1, names
    assert not list(cache.glob("*.check"))  # no half-checked exports stay behind


def test_model_may_name_an_exported_file(tiny_checkpoint: Path, tmp_path: Path, image) -> None:
    model = load_pose_model(tiny_checkpoint)
    onnx_path = export_onnx(model, tmp_path / "tiny.onnx")
    estimator = _from_names(onnx_path, tmp_path / "cache", cpu_threads=1)
    assert estimator.engine == "onnxruntime"
    assert torch.get_num_threads() == 1  # cpu_threads reaches PyTorch (and the ORT session)
    reference = PoseEstimator(model, device="cpu")(image, color_order="BGR", boxes=BOXES)
    persons = estimator(image, color_order="BGR", boxes=BOXES)
    for a, e in zip(persons, reference, strict=True):
        np.testing.assert_allclose(a.keypoints[:, :2], e.keypoints[:, :2], atol=1e-3)
    with pytest.raises(ValueError, match="engine 'torch' needs a checkpoint"):
        _from_names(onnx_path, tmp_path, engine="torch")
    with pytest.raises(ValueError, match="tensorrt' runs on CUDA"):
        _from_names(tiny_checkpoint, tmp_path, engine="tensorrt")
    with pytest.raises(ValueError, match="engine must be one of"):
        _from_names(tiny_checkpoint, tmp_path, engine="openvino")


def test_engine_resolution_per_device() -> None:
    cpu = torch.device("cpu")
    assert engines.resolve_pose_engine("auto", cpu) == "onnxruntime"
    assert engines.resolve_pose_engine("torch", cpu) == "torch"
    assert engines.resolve_detector_engine("auto", "ssdlite320_mobilenet_v3_large", cpu) == (
        "onnxruntime"
    )
    # Backends that are no torchvision network keep their own engine.
    assert engines.resolve_detector_engine("auto", "full_image", cpu) == "torch"
    with pytest.raises(ValueError, match="cpu_threads"):
        engines.cpu_thread_count(-1)
    assert engines.cpu_thread_count(0) >= 1


def test_detector_backbone_on_onnxruntime_gives_torchvision_features_and_boxes(
    tmp_path: Path, image: np.ndarray
) -> None:
    detectors = {}
    for engine in ("torch", "onnxruntime"):
        torch.manual_seed(0)  # the same untrained weights for both
        detectors[engine] = engines.build_person_detector(
            "ssdlite320_mobilenet_v3_large",
            weights=None,
            device=torch.device("cpu"),
            engine=engine,
            score_threshold=0.0,
            cache_dir=tmp_path,
        )
    eager, onnx = detectors["torch"], detectors["onnxruntime"]
    assert eager.engine == "torch" and onnx.engine == "onnxruntime"
    assert isinstance(onnx.model.backbone, engines.OnnxBackbone)
    assert len(list(tmp_path.glob("ssdlite320_mobilenet_v3_large-backbone-*.onnx"))) == 1
    rgb = np.ascontiguousarray(image[..., ::-1])
    pixels = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        batch, _ = eager.model.transform([pixels])
        want = eager.model.backbone(batch.tensors)
        got = onnx.model.backbone(batch.tensors)
    for name in want:
        scale = float(want[name].abs().max())
        assert scale > 0
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-4 * scale)
    # torchvision's own code after the backbone: the same raw boxes (all classes).
    with torch.inference_mode():
        raw_eager = eager._predict(rgb, "RGB")
        raw_onnx = onnx._predict(rgb, "RGB")
    assert len(raw_eager.scores) == len(raw_onnx.scores) > 0
    np.testing.assert_allclose(
        np.sort(raw_onnx.scores.numpy()), np.sort(raw_eager.scores.numpy()), atol=1e-5
    )
    assert len(onnx.detect(rgb)) == len(eager.detect(rgb))


@pytest.mark.ros  # pose_ros.ros needs the ROS 2 Python packages
def test_a_detector_without_weights_needs_allow_random_weights(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    for weights in ("", None):
        with pytest.raises(ValueError, match="allow_random_weights") as error:
            estimator_from_names(
                str(tiny_checkpoint),
                detector="ssdlite320_mobilenet_v3_large",
                detector_weights=weights,
                device="cpu",
            )
        assert "detector 'ssdlite320_mobilenet_v3_large' without weights" in str(error.value)
    from pose_ros.ros.node import StartupError, build_estimator
    from pose_ros.ros.params import DEFAULTS

    values = dict(DEFAULTS)
    values.update(
        {
            "model": str(tiny_checkpoint),
            "detector.backend": "ssdlite320_mobilenet_v3_large",
            "detector.weights": "",
            "device": "cpu",
        }
    )
    with pytest.raises(StartupError, match="allow_random_weights"):
        build_estimator(values)
    values["allow_random_weights"] = True
    estimator = build_estimator(values)
    assert estimator.random_weight_parts == ("detector",)
    assert "RANDOM WEIGHTS (detector)" in estimator.describe()


@pytest.mark.ros  # pose_ros.ros needs the ROS 2 Python packages
def test_a_cuda_device_that_is_not_there_is_a_clear_startup_error(tiny_checkpoint: Path) -> None:
    from pose_ros.ros.node import StartupError, build_estimator
    from pose_ros.ros.params import DEFAULTS

    values = dict(DEFAULTS)
    values.update(
        {"model": str(tiny_checkpoint), "detector.backend": "full_image", "device": "cuda:7"}
    )
    expected = "does not exist" if torch.cuda.is_available() else "CUDA is not available"
    with pytest.raises(StartupError, match=expected) as error:
        build_estimator(values)
    assert "'cuda:7'" in str(error.value)


@pytest.mark.ros
def test_the_node_exits_with_the_message_on_a_missing_cuda_device(tiny_checkpoint: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
    from pose_node_harness import run_node_to_exit

    result = run_node_to_exit(
        "/pose_test_cuda",
        {"model": tiny_checkpoint, "detector.backend": "full_image", "device": "cuda:7"},
    )
    assert result.returncode == 1, result.stdout
    assert "[FATAL]" in result.stdout and "'cuda:7'" in result.stdout, result.stdout
    assert "Traceback" not in result.stdout, result.stdout


def _params_file(name: str) -> dict[str, object]:
    import yaml

    def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
        flat: dict[str, object] = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                flat.update(flatten(value, f"{prefix}{key}."))
            else:
                flat[f"{prefix}{key}"] = value
        return flat

    document = yaml.safe_load((Path(__file__).parents[1] / "config" / name).read_text())
    return flatten(document["/**/pose_node"]["ros__parameters"])


@pytest.mark.ros  # pose_ros.ros needs the ROS 2 Python packages
def test_cpu_preset_differs_from_the_default_only_in_its_documented_choices() -> None:
    from pose_ros.ros.params import DEFAULTS, parameter_problem

    default, cpu = _params_file("pose.yaml"), _params_file("pose_cpu.yaml")
    assert set(cpu) == set(default) == set(DEFAULTS)
    changed = {name: cpu[name] for name in cpu if cpu[name] != default[name]}
    expected = {
        "model": "rtmpose_s_aic_coco_256x192",
        "detector.backend": "rtmdet_nano",
        "detector.engine": "onnxruntime",
        "engine": "onnxruntime",
        "device": "cpu",
    }
    if "detector.interval" in DEFAULTS:  # the tracking's parameter
        expected["detector.interval"] = 5
    assert changed == expected
    assert all(parameter_problem(name, value) is None for name, value in cpu.items())


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_gpu_pipeline_matches_the_cpu_and_stays_on_the_chosen_device(
    tiny_checkpoint: Path, tmp_path: Path, image: np.ndarray
) -> None:
    """fp16, channels-last, device decode and pinned uploads on the last GPU (not GPU 0) give the
    CPU's keypoints within fp16 precision; the caller's model is not changed."""
    device = f"cuda:{torch.cuda.device_count() - 1}"
    model = load_pose_model(tiny_checkpoint)
    reference = PoseEstimator(model, device="cpu")(image, color_order="BGR", boxes=BOXES)
    gpu = PoseEstimator(model, device=device)
    assert gpu.fp16 and gpu.device_decode and gpu.model is not model
    assert next(model.parameters()).device.type == "cpu"  # the caller's module stayed
    assert {p.device for p in gpu.model.parameters()} == {torch.device(device)}
    for _ in range(2):  # the second call reuses the pinned buffer
        persons = gpu(image, color_order="BGR", boxes=BOXES)
    for a, e in zip(persons, reference, strict=True):
        # fp16 may move a peak by one heatmap pixel (4 input pixels, scaled by the box).
        assert np.abs(a.keypoints[:, :2] - e.keypoints[:, :2]).max() < 0.1 * BOXES[:, 3].max()
        np.testing.assert_allclose(a.keypoints[:, 2], e.keypoints[:, 2], atol=2e-2)
    auto = _from_names(tiny_checkpoint, tmp_path, device=device)
    assert auto.engine == "torch" and auto.fp16


@needs_cuda
def test_onnxruntime_cuda_provider_gets_the_device_index(tiny_checkpoint: Path, tmp_path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime without the CUDA provider (onnxruntime-gpu not installed)")
    index = torch.cuda.device_count() - 1
    estimator = _from_names(tiny_checkpoint, tmp_path, engine="onnxruntime", device=f"cuda:{index}")
    options = estimator.model.session.get_provider_options()["CUDAExecutionProvider"]
    assert int(options["device_id"]) == index
