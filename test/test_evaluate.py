"""Evaluation: OKS-NMS, and printed/written metrics that are exactly pycocotools' on the file."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_training_support import OverfitRun, overfit_once

from pose_ros.keypoints import OKS_SIGMAS
from training.evaluate import METRIC_NAMES, main, oks_matrix, oks_nms


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory: pytest.TempPathFactory, coco_dir: Path) -> OverfitRun:
    return overfit_once(tmp_path_factory, coco_dir)


def test_oks_matrix_is_the_reference_formula() -> None:
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0, 100, size=(4, 17, 3))
    areas = rng.uniform(500, 5000, size=4)
    matrix = oks_matrix(keypoints, areas)
    for i in range(4):
        for j in range(4):
            values = []
            for k in range(17):
                d2 = (keypoints[i, k, 0] - keypoints[j, k, 0]) ** 2 + (
                    keypoints[i, k, 1] - keypoints[j, k, 1]
                ) ** 2
                variance = (2 * OKS_SIGMAS[k]) ** 2
                values.append(math.exp(-d2 / variance / ((areas[i] + areas[j]) / 2) / 2))
            assert matrix[i, j] == pytest.approx(sum(values) / 17, rel=1e-9)
    np.testing.assert_allclose(np.diag(matrix), 1.0)


def test_oks_nms_drops_near_duplicates_only() -> None:
    rng = np.random.default_rng(1)
    person = rng.uniform(0, 50, size=(17, 3))
    far = person + np.array([200.0, 0.0, 0.0])
    keypoints = np.stack([person, person + 0.3, far])
    scores = np.array([0.5, 0.9, 0.7])
    areas = np.full(3, 2500.0)
    assert oks_nms(keypoints, scores, areas, 0.9).tolist() == [1, 2]  # 0 is a duplicate of 1
    assert oks_nms(keypoints, scores, areas, 1.0).tolist() == [1, 2, 0]  # nothing above 1
    assert oks_nms(np.zeros((0, 17, 3)), np.zeros(0), np.zeros(0)).size == 0


def _cocoeval_independently(annotations: Path, results: Path) -> tuple[list[float], str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        gt = COCO(str(annotations))
        evaluator = COCOeval(gt, gt.loadRes(str(results)), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    table = [line for line in printed.getvalue().splitlines() if line.startswith(" Average")]
    return [float(v) for v in evaluator.stats], "\n".join(table)


def test_detection_boxes_metrics_equal_pycocotools_on_the_written_file(
    overfit_run: OverfitRun,
    coco_dir: Path,
    coco_annotations: Path,
    coco_detections: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    output = tmp_path / "eval_det"
    argv = [
        *("--model", str(overfit_run.best), "--images", str(coco_dir)),
        *("--annotations", str(coco_annotations), "--detections", str(coco_detections)),
        *("--output-dir", str(output), "--device", "cpu"),
    ]
    assert main(argv) == 0  # flip test and quarter decoding: the defaults
    printed = capsys.readouterr().out
    results = json.loads((output / "results.json").read_text())
    assert results and {r["image_id"] for r in results} <= {785, 40083, 196141, 197388}
    assert all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in results)
    # OKS-NMS at 0.9 leaves fewer persons than the 118 boxes
    assert len(results) < 118

    stats, table = _cocoeval_independently(coco_annotations, output / "results.json")
    metrics = json.loads((output / "metrics.json").read_text())
    assert [metrics[name] for name in METRIC_NAMES] == stats  # exactly, not approximately
    assert table in printed
    assert f"AP={stats[0]!r} AP50={stats[1]!r}" in printed


def test_gt_boxes_evaluation_repeats_the_training_evaluation(
    overfit_run: OverfitRun, coco_dir: Path, coco_annotations: Path, tmp_path: Path
) -> None:
    """The standalone command on GT boxes gives the AP that training recorded for best.pth."""
    output = tmp_path / "eval_gt"
    argv = [
        *("--model", str(overfit_run.best), "--images", str(coco_dir)),
        *("--annotations", str(coco_annotations), "--output-dir", str(output)),
        *("--no-flip", "--device", "cpu"),
    ]
    assert main(argv) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    best_ap = torch.load(overfit_run.best, weights_only=True)["extra"]["AP"]
    assert metrics["AP"] == best_ap >= 0.9


def test_bad_detection_file_is_named(
    coco_dir: Path, coco_annotations: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps([{"image_id": 785, "bbox": [1, 2, 3], "score": 0.5}]))
    argv = [
        *("--model", "random-unused.pth", "--images", str(coco_dir)),
        *("--annotations", str(coco_annotations), "--detections", str(detections)),
        *("--output-dir", str(tmp_path)),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "dets.json" in err and "Traceback" not in err
