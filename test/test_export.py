"""Export: ONNX equal to PyTorch (SimpleBaseline-R18 and CRF attention), the ONNX runner in the
pipeline, TensorRT engines keyed by the ONNX file's content, equal to ONNX Runtime within fp16
and reused from the cache where CUDA and TensorRT exist (the command's message where TensorRT is
absent), and int8 judged on persons held out of its calibration."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_support import OverfitRun, overfit_once

from pose_ros import codec
from pose_ros.models import (
    build_pose_model,
    init_from_simplebaseline,
    load_pose_model,
    save_checkpoint,
)
from pose_ros.pipeline import PoseEstimator
from pose_ros.runtime import (
    META_PRECISION,
    OnnxPoseRunner,
    RuntimeBackendError,
    TensorRTPoseRunner,
    build_tensorrt_engine,
    quantize_int8,
    read_onnx_metadata,
    tensorrt_engine_path,
)
from training.dataset import load_coco_persons, read_image
from training.evaluate import main as evaluate_main
from training.export import (
    annotated_person_crops,
    compare_with_onnxruntime,
    export_onnx,
    held_out_split,
    int8_keypoint_shift,
)
from training.export import main as export_main

TOLERANCE = 1e-4


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory: pytest.TempPathFactory, coco_dir: Path) -> OverfitRun:
    return overfit_once(tmp_path_factory, coco_dir)


@pytest.fixture(scope="module")
def real_crops(overfit_run: OverfitRun, coco_dir: Path, coco_annotations: Path) -> torch.Tensor:
    """(12, 3, 128, 96) normalised crops of the annotated persons (RGB, as the model wants)."""
    model = load_pose_model(overfit_run.best)
    return annotated_person_crops(model, load_coco_persons(coco_annotations, coco_dir))


def _printed_difference(text: str) -> float:
    match = re.search(r"max abs heatmap difference PyTorch vs ONNX Runtime: (\S+)", text)
    assert match, text
    return float(match.group(1))


def test_simplebaseline_r18_onnx_matches_pytorch(
    overfit_run: OverfitRun, real_crops: torch.Tensor, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    onnx_path = tmp_path / "tiny.onnx"
    assert export_main(["--model", str(overfit_run.best), "--output", str(onnx_path)]) == 0
    assert _printed_difference(capsys.readouterr().out) <= TOLERANCE
    model = load_pose_model(overfit_run.best)
    with torch.inference_mode():
        heatmaps = model.eval()(real_crops)
    assert heatmaps.max() > 0.5  # a trained network: the comparison is on real peaks
    difference = compare_with_onnxruntime(model, onnx_path, inputs=real_crops)
    print(f"SimpleBaseline-R18 128x96 ONNX max abs diff on real crops: {difference:.2e}")
    assert difference <= TOLERANCE

    runner = OnnxPoseRunner(onnx_path, device="cpu")  # rebuilt from the file's metadata alone
    assert runner.preprocessing == model.preprocessing
    assert runner.arch == model.arch and runner.num_keypoints == 17
    assert runner.input_size == (128, 96) and runner.heatmap_size == (32, 24)
    assert set(read_onnx_metadata(onnx_path)) >= {"pose_ros.preprocessing", "pose_ros.arch"}


def test_attention_crf_onnx_matches_pytorch(
    overfit_run: OverfitRun, real_crops: torch.Tensor, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    trained = load_pose_model(overfit_run.best)
    model = build_pose_model(
        "attention_res18", num_deconv_filters=128, preprocessing=trained.preprocessing
    )
    init_from_simplebaseline(model, trained.state_dict())
    # Make the attention maps far from uniform so the exported CRF iterations really matter.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if (
                name.startswith(("holistic_attention", "part_attention"))
                and "part_conv" not in name
            ):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    checkpoint = save_checkpoint(model, tmp_path / "attention.pth")
    onnx_path = tmp_path / "attention.onnx"
    assert (
        export_main(["--model", str(checkpoint), "--output", str(onnx_path), "--opset", "18"]) == 0
    )
    assert _printed_difference(capsys.readouterr().out) <= TOLERANCE
    loaded = load_pose_model(checkpoint)
    with torch.inference_mode():
        heatmaps = loaded.eval()(real_crops)
    assert heatmaps.abs().max() > 0.1
    difference = compare_with_onnxruntime(loaded, onnx_path, inputs=real_crops)
    print(f"attention CRF R18 128x96 ONNX max abs diff on real crops: {difference:.2e}")
    assert difference <= TOLERANCE
    assert OnnxPoseRunner(onnx_path, device="cpu").arch["name"] == "attention_res18"


def test_pipeline_gives_the_same_keypoints_through_onnx(
    overfit_run: OverfitRun, coco_dir: Path, coco_annotations: Path, tmp_path: Path
) -> None:
    model = load_pose_model(overfit_run.best)
    onnx_path = export_onnx(model, tmp_path / "tiny.onnx")
    torch_estimator = PoseEstimator(model, device="cpu", flip_test=True, max_persons=50)
    onnx_estimator = PoseEstimator(
        OnnxPoseRunner(onnx_path, device="cpu"), device="cpu", flip_test=True, max_persons=50
    )
    persons = load_coco_persons(coco_annotations, coco_dir)
    compared = 0
    for image_id, path in sorted(persons.image_paths.items()):
        boxes = np.stack([i.box for i in persons.instances if i.image_id == image_id])
        image = read_image(path)
        expected = torch_estimator(image, color_order="BGR", boxes=boxes)
        actual = onnx_estimator(image, color_order="BGR", boxes=boxes)
        assert len(actual) == len(expected) == len(boxes)
        for a, e in zip(actual, expected, strict=True):
            np.testing.assert_array_equal(a.box, e.box)
            np.testing.assert_allclose(a.keypoints[:, :2], e.keypoints[:, :2], atol=1e-3)
            np.testing.assert_allclose(a.keypoints[:, 2], e.keypoints[:, 2], atol=1e-4)
            assert a.score == pytest.approx(e.score, abs=1e-4)
            compared += 1
    assert compared == 12


def test_tensorrt_engine_cache_is_keyed_by_the_onnx_content(
    overfit_run: OverfitRun, tmp_path: Path
) -> None:
    """Two different exports under the same file name get different engines (a re-exported
    model.onnx never runs the old engine); the same content under another folder, the same."""
    trt = {"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3", "max_batch": 32}
    model = load_pose_model(overfit_run.best)
    first = export_onnx(model, tmp_path / "a" / "model.onnx")
    copy = tmp_path / "b" / "model.onnx"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    with torch.no_grad():
        model.final_layer.bias.add_(0.01)  # other weights, same architecture and file name
    second = export_onnx(model, tmp_path / "c" / "model.onnx")
    assert first.name == second.name and first.read_bytes() != second.read_bytes()

    cache = tmp_path / "engines"
    engines = {
        path: tensorrt_engine_path(path, fp16=True, cache_dir=cache, **trt)
        for path in (first, copy, second)
    }
    assert engines[first] != engines[second]
    assert engines[first] == engines[copy]  # keyed by what the file holds, not where it is
    name = engines[first].name
    assert re.fullmatch(
        r"model-[0-9a-f]{16}\.trt10\.3\.0\.nvidia-h100-80gb-hbm3\.b32\.fp16\.engine", name
    )
    # Re-exported in place under the same name: a new engine name.
    export_onnx(model, first)
    assert tensorrt_engine_path(first, fp16=True, cache_dir=cache, **trt) == engines[second]
    # Without a cache folder the engine lives beside its ONNX file; fp32 is another engine.
    beside = tensorrt_engine_path(copy, fp16=False, **trt)
    assert beside.parent == copy.parent and beside.name.endswith(".b32.fp32.engine")
    with pytest.raises(RuntimeBackendError, match="not found"):
        tensorrt_engine_path(tmp_path / "missing.onnx", fp16=True, **trt)


HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(
    not (HAS_TENSORRT and torch.cuda.is_available()),
    reason="needs a CUDA GPU and the tensorrt package (bench/gpu_check.sh runs it)",
)
#: fp16 keeps about 3 significant digits; through the ~20 layers of ResNet-18 and the
#: deconvolutions the heatmaps (peaks near 1) differ from fp32 by a few 1e-3, here allowed 2e-2.
FP16_HEATMAP_TOLERANCE = 2e-2


@needs_tensorrt
def test_tensorrt_engine_matches_onnxruntime_and_is_reused_from_the_cache(
    overfit_run: OverfitRun, real_crops: torch.Tensor, tmp_path: Path
) -> None:
    model = load_pose_model(overfit_run.best)
    onnx_path = export_onnx(model, tmp_path / "tiny.onnx")
    reference = OnnxPoseRunner(onnx_path, device="cpu")(real_crops)
    cache = tmp_path / "engines"
    # max_batch 8 < the 12 crops: the runner also splits a batch larger than its profile.
    runner = TensorRTPoseRunner.from_onnx(onnx_path, max_batch=8, cache_dir=cache)
    (engine,) = cache.glob("*.engine")
    assert runner.precision == "fp16" and runner.engine == "tensorrt"
    sidecar = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert sidecar[META_PRECISION] == "fp16"
    heatmaps = runner(real_crops)
    assert heatmaps.shape == reference.shape and heatmaps.device == real_crops.device
    assert reference.max() > 0.5  # real peaks of the trained network
    difference = float((heatmaps - reference).abs().max())
    print(f"TensorRT fp16 vs ONNX Runtime fp32, max abs heatmap difference: {difference:.2e}")
    assert difference <= FP16_HEATMAP_TOLERANCE
    trt_coords, _ = codec.decode_heatmaps(heatmaps.numpy(), "quarter")
    ort_coords, _ = codec.decode_heatmaps(reference.numpy(), "quarter")
    confident = reference.amax(dim=(2, 3)).numpy() > 0.5  # a peak fp16 cannot reorder
    shift = np.abs(trt_coords - ort_coords)[confident]
    assert shift.max() <= 0.5, shift.max()  # the argmax stays, a quarter step may flip

    # A second call finds the cached engine: no rebuild, the same file, the same heatmaps.
    stamp = engine.stat().st_mtime_ns
    again = TensorRTPoseRunner.from_onnx(onnx_path, max_batch=8, cache_dir=cache)
    assert list(cache.glob("*.engine")) == [engine] and engine.stat().st_mtime_ns == stamp
    assert build_tensorrt_engine(onnx_path, max_batch=8, cache_dir=cache) == engine
    torch.testing.assert_close(again(real_crops), heatmaps, rtol=0, atol=1e-3)


def test_the_gpu_check_script_runs_the_tensorrt_tests() -> None:
    """bench/gpu_check.sh (run on machines with a GPU) names test files and test ids that
    pytest collects, the TensorRT engine test among them: a renamed test is not silently
    dropped from the only run that has TensorRT."""
    repo = Path(__file__).resolve().parents[1]
    script = (repo / "bench" / "gpu_check.sh").read_text()
    targets = re.findall(r"(test/[\w/]+\.py(?:::\w+)?)", script)
    wanted = (
        "test/test_export.py::test_tensorrt_engine_matches_onnxruntime_and_is_reused_from_the_cache"
    )
    assert wanted in targets, targets
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*collect, "-m", "not ros", *targets],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    collected = set(result.stdout.split())
    assert wanted in collected, result.stdout[-3000:]
    assert "test/test_export.py::test_tensorrt_engine_cache_is_keyed_by_the_onnx_content" in (
        collected
    )


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: the message is not shown")
def test_tensorrt_absent_gives_a_clear_message(
    overfit_run: OverfitRun, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """What a user without TensorRT sees: the command ``pose-ros-export --tensorrt`` (a real
    process) exits 2 with one line naming the missing package and the pip command, no
    traceback, and keeps the ONNX export; the library raises the same sentence."""
    onnx_path = tmp_path / "m.onnx"
    command = [sys.executable, "-m", "training.export", "--model", str(overfit_run.best)]
    result = subprocess.run(
        [*command, "--output", str(onnx_path), "--tensorrt"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    (line,) = errors
    assert line.startswith("pose-ros-export: error: TensorRT is not installed"), line
    assert "'tensorrt' Python package" in line and "`pip install tensorrt`" in line, line
    assert "Traceback" not in result.stderr + result.stdout
    assert onnx_path.is_file()  # the ONNX export itself still happened
    assert OnnxPoseRunner(onnx_path, device="cpu").num_keypoints == 17
    for call in (
        lambda: build_tensorrt_engine(onnx_path),
        lambda: TensorRTPoseRunner(tmp_path / "any.engine"),
    ):
        with pytest.raises(RuntimeBackendError) as error:
            call()
        assert "pip install tensorrt" in str(error.value)
        assert error.value.__cause__ is None and error.value.__suppress_context__


def test_int8_export_keeps_the_keypoints_and_the_ap(
    overfit_run: OverfitRun,
    coco_dir: Path,
    coco_annotations: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """--int8: a quantized graph (QDQ nodes, the export's metadata with precision int8),
    calibrated on 9 of the 12 annotated persons; its keypoints, measured on the 3 persons held
    out of the calibration, stay where the fp32 model puts them; pycocotools AP with GT boxes
    within 0.05 of the fp32 export's on the 4 COCO images; a tolerance it misses fails and
    leaves no int8 file."""
    import onnx

    output = tmp_path / "tiny.onnx"
    calibration = [
        *("--calibration-annotations", str(coco_annotations)),
        *("--calibration-images", str(coco_dir)),
    ]
    argv = ["--model", str(overfit_run.best), "--output", str(output), "--int8", *calibration]
    assert export_main(argv) == 0
    printed = capsys.readouterr().out
    int8 = tmp_path / "tiny.int8.onnx"
    match = re.search(
        r"calibrated on (\d+) person crops; keypoints against fp32 on (\d+) held-out person "
        r"crops: mean (\S+), p95 (\S+) heatmap px",
        printed,
    )
    assert match, printed
    calibrated, held, mean, p95 = int(match[1]), int(match[2]), float(match[3]), float(match[4])
    print(f"int8 on {held} held-out persons: mean {mean} p95 {p95} heatmap px")
    assert (calibrated, held) == (9, 3), printed
    assert mean < 0.5 and p95 < 1.0, printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.int8.onnx", "tiny.onnx"]

    # The split the command used: disjoint, every person in one part ...
    model = load_pose_model(overfit_run.best)
    crops = annotated_person_crops(model, load_coco_persons(coco_annotations, coco_dir))
    calibration_rows, held_rows = held_out_split(len(crops), 0.25)
    assert len(calibration_rows) == 9 and len(held_rows) == 3
    assert set(calibration_rows).isdisjoint(held_rows)
    assert set(calibration_rows) | set(held_rows) == set(range(12))
    # ... the int8 model is the one calibrated on the calibration persons alone (its weights and
    # activation ranges equal those of a quantization of exactly those crops) ...
    again = quantize_int8(
        output, tmp_path / "again" / "tiny.int8.onnx", crops[calibration_rows].numpy()
    )
    graph, expected = onnx.load(str(int8)).graph, onnx.load(str(again)).graph
    assert len(graph.initializer) == len(expected.initializer)
    for got, want in zip(graph.initializer, expected.initializer, strict=True):
        np.testing.assert_array_equal(
            onnx.numpy_helper.to_array(got), onnx.numpy_helper.to_array(want), err_msg=got.name
        )
    # ... and the reported shift is the one on the held-out persons.
    held_mean, held_p95, _ = int8_keypoint_shift(output, int8, crops[held_rows])
    assert (mean, p95) == (round(held_mean, 4), round(held_p95, 4))

    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, ops
    fp32_meta, int8_meta = read_onnx_metadata(output), read_onnx_metadata(int8)
    assert (fp32_meta.pop(META_PRECISION), int8_meta.pop(META_PRECISION)) == ("fp32", "int8")
    assert int8_meta == fp32_meta
    assert OnnxPoseRunner(int8, device="cpu").precision == "int8"

    ap = {}
    for name, exported in (("fp32", output), ("int8", int8)):
        argv = [
            *("--model", str(exported), "--images", str(coco_dir)),
            *("--annotations", str(coco_annotations), "--device", "cpu"),
            *("--output-dir", str(tmp_path / f"eval_{name}")),
        ]
        assert evaluate_main(argv) == 0
        ap[name] = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())["AP"]
    assert ap["fp32"] > 0.5, ap  # the overfit network finds the persons
    assert abs(ap["int8"] - ap["fp32"]) <= 0.05, ap

    # A tolerance the int8 model cannot meet: exit 1 with the reason, and no int8 file.
    strict_dir = tmp_path / "strict"
    strict_dir.mkdir()
    strict = ["--model", str(overfit_run.best), "--output", str(strict_dir / "strict.onnx")]
    assert export_main([*strict, "--int8", *calibration, "--int8-tolerance", "0"]) == 1
    err = capsys.readouterr().err
    assert "int8 keypoints move" in err and "strict.int8.onnx not written" in err, err
    assert not (strict_dir / "strict.int8.onnx").exists()
    assert [p.name for p in strict_dir.iterdir()] == ["strict.onnx"]  # nor a scratch copy
    # Too many persons held out to calibrate on the rest: 2, with the reason.
    assert export_main([*strict, "--int8", *calibration, "--int8-held-out", "0.5"]) == 2
    assert "leaves 6 to calibrate on, fewer than 8" in capsys.readouterr().err
    # Without calibration data: 2.
    with pytest.raises(SystemExit) as exit_info:
        export_main([*strict, "--int8"])
    assert exit_info.value.code == 2
    assert "--int8 needs --calibration-annotations" in capsys.readouterr().err
