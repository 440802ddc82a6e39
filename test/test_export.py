"""Export: ONNX equal to PyTorch (SimpleBaseline-R18 and CRF attention), the ONNX runner in the
pipeline, and the TensorRT path's message where TensorRT is absent."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_support import OverfitRun, overfit_once

from pose_ros.models import (
    build_pose_model,
    init_from_simplebaseline,
    load_pose_model,
    save_checkpoint,
)
from pose_ros.pipeline import PoseEstimator
from pose_ros.runtime import (
    TENSORRT_MISSING,
    OnnxPoseRunner,
    RuntimeBackendError,
    TensorRTPoseRunner,
    build_tensorrt_engine,
    read_onnx_metadata,
    tensorrt_engine_path,
)
from training.dataset import load_coco_persons, read_image
from training.evaluate import main as evaluate_main
from training.export import annotated_person_crops, compare_with_onnxruntime, export_onnx
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


def test_tensorrt_engine_cache_name_holds_version_and_gpu(tmp_path: Path) -> None:
    path = tensorrt_engine_path(
        tmp_path / "tiny.onnx",
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        max_batch=32,
        fp16=True,
    )
    assert path == tmp_path / "tiny.trt10.3.0.nvidia-h100-80gb-hbm3.b32.fp16.engine"


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed"
)
def test_tensorrt_absent_gives_a_clear_message(
    overfit_run: OverfitRun, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(RuntimeBackendError) as error:
        build_tensorrt_engine(tmp_path / "any.onnx")
    assert str(error.value) == TENSORRT_MISSING
    assert (
        "TensorRT is not installed" in TENSORRT_MISSING
        and "pip install tensorrt" in TENSORRT_MISSING
    )
    with pytest.raises(RuntimeBackendError, match="TensorRT is not installed"):
        TensorRTPoseRunner(tmp_path / "any.engine")
    code = export_main(
        ["--model", str(overfit_run.best), "--output", str(tmp_path / "m.onnx"), "--tensorrt"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "TensorRT is not installed" in err and "Traceback" not in err
    assert (tmp_path / "m.onnx").is_file()  # the ONNX export itself still happened
    json.loads(json.dumps(read_onnx_metadata(tmp_path / "m.onnx")))


def test_int8_export_keeps_the_keypoints_and_the_ap(
    overfit_run: OverfitRun,
    coco_dir: Path,
    coco_annotations: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """--int8: a quantized graph (QDQ nodes, the export's metadata), calibrated on the annotated
    persons, whose keypoints stay where the fp32 model puts them; pycocotools AP with GT boxes
    within 0.05 of the fp32 export's on the 4 COCO images; a tolerance it misses fails."""
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
    match = re.search(r"calibrated on 12 person crops\); .* mean (\S+), p95 (\S+) heatmap", printed)
    assert match, printed
    assert float(match.group(1)) < 0.5 and float(match.group(2)) < 1.0, printed

    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, ops
    assert read_onnx_metadata(int8) == read_onnx_metadata(output)

    ap = {}
    for name, model in (("fp32", output), ("int8", int8)):
        argv = [
            *("--model", str(model), "--images", str(coco_dir)),
            *("--annotations", str(coco_annotations), "--device", "cpu"),
            *("--output-dir", str(tmp_path / f"eval_{name}")),
        ]
        assert evaluate_main(argv) == 0
        ap[name] = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())["AP"]
    assert ap["fp32"] > 0.5, ap  # the overfit network finds the persons
    assert abs(ap["int8"] - ap["fp32"]) <= 0.05, ap

    # A tolerance the int8 model cannot meet: exit 1 with the reason; without calibration: 2.
    strict = ["--model", str(overfit_run.best), "--output", str(tmp_path / "strict.onnx")]
    assert export_main([*strict, "--int8", *calibration, "--int8-tolerance", "0"]) == 1
    assert "int8 keypoints move" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        export_main([*strict, "--int8"])
    assert exit_info.value.code == 2
    assert "--int8 needs --calibration-annotations" in capsys.readouterr().err
