"""Engines: ONNX Runtime chosen by default on the CPU with the same keypoints as PyTorch, the
export cache keyed by weights and input size, exported files as ``model``, the detector backbone
on ONNX Runtime, and the start-up guards (random detector weights, CUDA devices)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
    assert sorted(p.suffix for p in cache.iterdir()) == [".onnx"] * 3  # nothing half-checked


#: One exporter in a process of its own: loads the checkpoint, says it is ready, waits for the
#: start signal, then exports into the cache and prints the path.
EXPORTER = """
import pathlib, sys, time
from pose_ros.engines import cached_onnx_export
from pose_ros.models import load_pose_model
checkpoint, cache, ready, go = sys.argv[1:5]
model = load_pose_model(checkpoint)
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.005)
print(cached_onnx_export(model, cache_dir=cache))
"""


def test_exporters_started_together_on_an_empty_cache_all_succeed_with_one_file(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Three processes (three nodes started together) export the same model into one empty
    exports cache at the same moment: each succeeds with the same path, and the cache holds one
    complete, checked ONNX file and nothing else."""
    cache, signals = tmp_path / "exports", tmp_path / "signals"
    signals.mkdir()
    go = signals / "go"
    command = [sys.executable, "-c", EXPORTER, str(tiny_checkpoint), str(cache)]
    exporters = [
        subprocess.Popen(
            [*command, str(signals / f"ready{i}"), str(go)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    try:
        deadline = time.monotonic() + 300
        while len(list(signals.glob("ready*"))) < 3 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in exporters), [p.communicate() for p in exporters]
            time.sleep(0.05)
        go.touch()  # all three start exporting now
        results = [p.communicate(timeout=300) for p in exporters]
    finally:
        for process in exporters:
            if process.poll() is None:
                process.kill()
    for process, (_, err) in zip(exporters, results, strict=True):
        assert process.returncode == 0, err[-3000:]
    paths = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(paths) == 1, paths
    (path,) = (Path(p) for p in paths)
    assert sorted(cache.iterdir()) == [path]  # no temporary file or folder left behind
    model = load_pose_model(tiny_checkpoint)
    assert engines.compare_with_onnxruntime(model, path) <= engines.EXPORT_TOLERANCE


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
    """The engine each setting means on the CPU and on CUDA. The choice reads only the device's
    type (a torch.device("cuda") is a plain object: no GPU is needed to check the CUDA choices)
    and whether ONNX Runtime is installed (it is, here)."""
    cpu, cuda, cuda1 = torch.device("cpu"), torch.device("cuda"), torch.device("cuda", 1)
    pose = engines.resolve_pose_engine
    assert pose("auto", cpu) == "onnxruntime"  # measured faster than PyTorch eager on CPUs
    assert pose("auto", cuda) == pose("auto", cuda1) == "torch"  # PyTorch fp16 on CUDA
    for engine in ("torch", "onnxruntime"):  # named engines run where they are asked to
        assert pose(engine, cpu) == pose(engine, cuda) == engine
    assert pose("tensorrt", cuda) == pose("tensorrt", cuda1) == "tensorrt"
    with pytest.raises(ValueError, match="'tensorrt' runs on CUDA devices only, got device cpu"):
        pose("tensorrt", cpu)
    with pytest.raises(ValueError, match="engine must be one of auto, torch, onnxruntime"):
        pose("openvino", cuda)

    detector = engines.resolve_detector_engine
    torchvision_net = "ssdlite320_mobilenet_v3_large"
    assert detector("auto", torchvision_net, cpu) == "onnxruntime"
    assert detector("auto", torchvision_net, cuda) == "torch"
    assert detector("onnxruntime", torchvision_net, cuda) == "onnxruntime"
    assert detector("torch", torchvision_net, cpu) == "torch"
    # Backends that are no torchvision network keep their own engine, on any device.
    for device in (cpu, cuda):
        assert detector("auto", "full_image", device) == "torch"
        assert detector("onnxruntime", "full_image", device) == "torch"
    with pytest.raises(ValueError, match=r"detector\.engine must be one of"):
        detector("tensorrt", torchvision_net, cuda)


def test_cpu_thread_count_is_the_cores_this_process_may_use() -> None:
    usable = len(os.sched_getaffinity(0))  # Linux: the cores of this process's affinity mask
    assert engines.cpu_thread_count(0) == usable
    assert engines.cpu_thread_count() == usable
    assert engines.cpu_thread_count(3) == 3  # an explicit count is kept, even above the cores
    with pytest.raises(ValueError, match="cpu_threads must be >= 0"):
        engines.cpu_thread_count(-1)
    # One core less in the affinity mask (in a child process: the mask is per process).
    if usable > 1:
        code = (
            "import os; from pose_ros.engines import cpu_thread_count; "
            "os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[1:]); "
            "print(cpu_thread_count(0))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert int(result.stdout.split()[-1]) == usable - 1


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


#: How far fp16 may move a decoded keypoint, in heatmap pixels per axis. The "quarter" decoding
#: puts a keypoint at its heatmap's argmax, a quarter pixel toward the higher neighbour. Where
#: two neighbouring heatmap values are within fp16's precision, fp16 may move the argmax by one
#: pixel, and the quarter steps of the two results may point apart: 1 + 0.25 + 0.25 = 1.5.
#: (Where the values stay ordered the keypoints are the same up to rounding; a move of more than
#: one pixel needs two distant near-equal maxima, which a trained network's confident keypoint
#: does not have.)
FP16_SHIFT_HEATMAP_PX = 1.5


@needs_cuda
def test_gpu_pipeline_matches_the_cpu_and_stays_on_the_chosen_device(
    overfit_run, coco_dir: Path, coco_annotations: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """fp16, channels-last, device decode and pinned uploads on the last GPU (not GPU 0) give the
    CPU's keypoints within fp16 precision; the caller's model is not changed. The network is
    the trained tiny one on its annotated persons: real peaks, so that "one heatmap pixel" means
    something (an untrained network's flat heatmaps have near-ties anywhere)."""
    from pose_ros import geometry
    from training.dataset import load_coco_persons, read_image

    device = f"cuda:{torch.cuda.device_count() - 1}"
    model = load_pose_model(overfit_run.best)
    persons = load_coco_persons(coco_annotations, coco_dir)
    image_id = 196141
    boxes = np.stack([i.box for i in persons.instances if i.image_id == image_id])
    picture = read_image(persons.image_paths[image_id])
    reference = PoseEstimator(model, device="cpu")(picture, color_order="BGR", boxes=boxes)
    gpu = PoseEstimator(model, device=device)
    assert gpu.fp16 and gpu.device_decode and gpu.model is not model
    assert next(model.parameters()).device.type == "cpu"  # the caller's module stayed
    assert {p.device for p in gpu.model.parameters()} == {torch.device(device)}
    for _ in range(2):  # the second call reuses the pinned buffer
        found = gpu(picture, color_order="BGR", boxes=boxes)
    # One heatmap pixel in image pixels, per box: the crop region's height over the heatmap's
    # (the crop keeps the aspect ratio, so x and y scale alike). 128x96 input, 32x24 heatmaps.
    height, width = model.input_size
    _, scales = geometry.box_to_center_scale(boxes, width / height)
    heatmap_px = scales[:, 1] / model.heatmap_size[0]
    compared = 0
    for expected in reference:  # persons are sorted by score: pair them by their box
        row = int(np.flatnonzero((boxes == expected.box).all(axis=1))[0])
        (actual,) = [p for p in found if np.array_equal(p.box, expected.box)]
        confident = expected.keypoints[:, 2] > 0.5  # a real peak, not a flat heatmap
        shift = np.abs(actual.keypoints[confident, :2] - expected.keypoints[confident, :2])
        assert shift.max(initial=0.0) <= FP16_SHIFT_HEATMAP_PX * heatmap_px[row], (
            f"box {row}: keypoints moved {shift.max():.1f} px, one heatmap pixel is "
            f"{heatmap_px[row]:.1f} px"
        )
        np.testing.assert_allclose(actual.keypoints[:, 2], expected.keypoints[:, 2], atol=2e-2)
        compared += int(confident.sum())
    assert compared >= 20, compared  # the trained network is confident on most keypoints
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
