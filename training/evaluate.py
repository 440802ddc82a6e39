"""COCO keypoint evaluation through the inference pipeline.

The persons come from :class:`pose_ros.pipeline.PoseEstimator` with given boxes (the GT boxes or a
detection-results file), so evaluation measures exactly what the node and the CLI run: crops,
normalisation, flip test, decoding and rescoring (box score x mean keypoint score above 0.2).
Then OKS-NMS per image (threshold 0.9), a COCO results file, and pycocotools'
``COCOeval(gt, dt, "keypoints")`` on that file.

Standalone::

    python -m training.evaluate --model runs/tiny/best.pth --images data/coco/val2017 \\
        --annotations data/coco/annotations/person_keypoints_val2017.json \\
        [--detections COCO_val2017_detections_AP_H_56_person.json] [--output-dir runs/eval]

``--model`` takes a pose_ros checkpoint, a published-weights name, an ``.onnx`` file or a
TensorRT ``.engine`` (through :mod:`pose_ros.runtime`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pose_ros.fileio import atomic_write
from pose_ros.geometry import box_to_center_scale
from pose_ros.keypoints import OKS_SIGMAS
from pose_ros.pipeline import Person, PoseEstimator, coco_keypoint_results

from .config import EvalConfig
from .dataset import CocoPersons, DatasetError, load_coco_persons, load_detections, read_image

#: Names of ``COCOeval.stats`` for keypoints, in order.
METRIC_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APm",
    "APl",
    "AR",
    "AR50",
    "AR75",
    "ARm",
    "ARl",
)


def oks_matrix(
    keypoints: np.ndarray, areas: np.ndarray, sigmas: Sequence[float] = OKS_SIGMAS
) -> np.ndarray:
    """Pairwise object keypoint similarity, the form used by the reference's OKS-NMS.

    Args:
        keypoints: (N, K, 2 or 3) image pixels (a third column is ignored).
        areas: (N,) person areas in pixels^2; a pair uses their mean.
        sigmas: (K,) per-keypoint standard deviations (COCO's).

    Returns:
        (N, N) float64,
        ``oks[i, j] = mean_k exp(-d_ijk^2 / (2 * ((a_i + a_j) / 2) * (2 sigma_k)^2))``.
    """
    points = np.asarray(keypoints, dtype=np.float64)[..., :2]
    areas = np.asarray(areas, dtype=np.float64)
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    squared = ((points[:, None] - points[None, :]) ** 2).sum(-1)  # (N, N, K)
    scale = (areas[:, None] + areas[None, :]) / 2.0 + np.spacing(1)  # (N, N)
    e = squared / variances / scale[..., None] / 2.0
    return np.exp(-e).mean(axis=-1)


def oks_nms(
    keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float = 0.9
) -> np.ndarray:
    """Greedy non-maximum suppression by OKS: keep the best person, drop those with OKS > threshold.

    Args:
        keypoints: (N, K, 2+) image pixels; scores: (N,); areas: (N,).

    Returns:
        Indices of the kept persons, highest score first.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    similarity = oks_matrix(keypoints, areas)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        order = order[1:][similarity[best, order[1:]] <= threshold]
    return np.asarray(keep, dtype=np.int64)


def person_areas(boxes: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """(N,) areas for OKS-NMS: the crop region (box at the input's aspect, padded 1.25), as the
    reference uses."""
    _, scales = box_to_center_scale(np.asarray(boxes).reshape(-1, 4), input_size[1] / input_size[0])
    return scales.prod(axis=1).astype(np.float64)


def predict_image(
    estimator: PoseEstimator,
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    box_scores: np.ndarray,
    *,
    oks_nms_threshold: float,
) -> list[Person]:
    """All persons of one image through the pipeline (one batch), then OKS-NMS; best first."""
    if len(boxes) == 0:
        return []
    persons = estimator(image_bgr, color_order="BGR", boxes=boxes, box_scores=box_scores)
    if not persons:
        return []
    keypoints = np.stack([p.keypoints for p in persons])
    scores = np.array([p.score for p in persons])
    areas = person_areas(np.stack([p.box for p in persons]), tuple(estimator.model.input_size))
    keep = oks_nms(keypoints, scores, areas, oks_nms_threshold)
    return [persons[i] for i in keep]


def boxes_for_images(
    persons: CocoPersons, detections: dict[int, tuple[np.ndarray, np.ndarray]] | None
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Boxes and scores to evaluate on, per image: the detections, or the GT boxes with score 1."""
    if detections is not None:
        return detections
    per_image: dict[int, list[np.ndarray]] = {}
    for instance in persons.instances:
        per_image.setdefault(instance.image_id, []).append(instance.box)
    return {
        image_id: (np.stack(boxes).astype(np.float32), np.ones(len(boxes), dtype=np.float32))
        for image_id, boxes in per_image.items()
    }


def run_cocoeval(
    coco_gt: COCO, results_file: str | Path, *, verbose: bool = True
) -> dict[str, float]:
    """pycocotools keypoint evaluation of a results file; the 10 ``stats`` by name.

    With ``verbose`` pycocotools prints its own summary table. An empty results list scores 0.
    """
    with Path(results_file).open() as stream:
        results = json.load(stream)
    if not results:
        if verbose:
            print("no persons predicted: every metric is 0")
        return dict.fromkeys(METRIC_NAMES, 0.0)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_dt = coco_gt.loadRes(str(results_file))
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.useSegm = None
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats, strict=True)}


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file in the same folder, then ``os.replace``)."""
    with atomic_write(path, "w") as stream:
        json.dump(data, stream)


def evaluate_model(
    model: Any,
    persons: CocoPersons,
    config: EvalConfig,
    output_dir: str | Path,
    *,
    detections: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    device: str | torch.device = "auto",
    fp16: bool = False,
    rank: int = 0,
    world_size: int = 1,
    vis_count: int = 0,
    vis_dir: str | Path | None = None,
    verbose: bool = True,
) -> dict[str, float] | None:
    """Predict all images, write ``results.json`` and ``metrics.json`` in ``output_dir``.

    Under DDP every rank predicts every ``world_size``-th image and rank 0 gathers, writes and
    scores (the other ranks return None).

    Args:
        model: a PoseNet or a runner of ``pose_ros.runtime``; a PoseNet is left in eval mode.
        persons: the ground truth (``load_coco_persons``).
        config: flip test, decoding, OKS-NMS and score thresholds.
        detections: per-image boxes (``load_detections``); None = the GT boxes.
        fp16: half precision on CUDA (False during training, which owns the fp32 weights).
        vis_count: draw the predictions of this many images into ``vis_dir`` (rank 0).

    Returns:
        ``{"AP": ..., "AP50": ..., ...}`` as pycocotools computes it from the written file.
    """
    output_dir = Path(output_dir)
    estimator = PoseEstimator(
        model,
        device=device,
        fp16=fp16,
        flip_test=config.flip_test,
        decode=config.decode,
        keypoint_score_threshold=config.keypoint_score_threshold,
        max_persons=config.max_persons,
    )
    boxes = boxes_for_images(persons, detections)
    image_ids = sorted(boxes)[rank::world_size]
    vis_ids = set(sorted(boxes)[:vis_count]) if rank == 0 else set()
    results: list[dict[str, Any]] = []
    for image_id in image_ids:
        image = read_image(persons.image_paths[image_id])
        image_boxes, image_scores = boxes[image_id]
        predicted = predict_image(
            estimator, image, image_boxes, image_scores, oks_nms_threshold=config.oks_nms_threshold
        )
        results.extend(coco_keypoint_results(predicted, int(image_id)))
        if image_id in vis_ids and vis_dir is not None:
            save_visualisation(Path(vis_dir) / f"{image_id:012d}.png", image, predicted)

    if world_size > 1:
        gathered: list[Any] | None = [None] * world_size if rank == 0 else None
        torch.distributed.gather_object(results, gathered, dst=0)
        if rank != 0:
            return None
        results = [entry for part in gathered for entry in part]
    results.sort(key=lambda entry: (entry["image_id"], -entry["score"]))
    results_file = output_dir / "results.json"
    write_json(results_file, results)
    metrics = run_cocoeval(persons.coco, results_file, verbose=verbose)
    write_json(output_dir / "metrics.json", metrics)
    return metrics


#: persons drawn in the validation snapshots (detector boxes bring many weak duplicates)
VIS_MIN_SCORE = 0.3


def save_visualisation(path: Path, image_bgr: np.ndarray, persons: Sequence[Person]) -> None:
    """PNG of the image with the predicted skeletons (pose_ros.drawing, as the node draws)."""
    from pose_ros.drawing import draw_persons

    path.parent.mkdir(parents=True, exist_ok=True)
    shown = [p for p in persons if p.score >= VIS_MIN_SCORE]
    canvas = draw_persons(image_bgr, shown, color_order="BGR")
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"cannot write {path}")


def format_metrics(metrics: dict[str, float]) -> str:
    """One line with every metric at full precision (the values of ``metrics.json``)."""
    return " ".join(f"{name}={metrics[name]!r}" for name in METRIC_NAMES)


def load_model_for_eval(source: str, *, device: str = "auto") -> Any:
    """A PoseNet (checkpoint or published name), or a runner for ``.onnx`` / ``.engine`` files."""
    suffix = Path(source).suffix.lower()
    if suffix == ".onnx":
        from pose_ros.runtime import OnnxPoseRunner

        return OnnxPoseRunner(source, device=device)
    if suffix in (".engine", ".plan", ".trt"):
        from pose_ros.runtime import TensorRTPoseRunner

        return TensorRTPoseRunner(source)
    from pose_ros.models import load_pose_model

    return load_pose_model(source, map_location="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pose-ros-eval",
        description="COCO keypoint AP of a pose model through the inference pipeline.",
    )
    parser.add_argument(
        "--model", required=True, help="checkpoint, published name, .onnx or .engine"
    )
    parser.add_argument("--images", required=True, help="folder of the images (e.g. val2017)")
    parser.add_argument("--annotations", required=True, help="person_keypoints_*.json")
    parser.add_argument(
        "--detections", help="COCO results JSON of person boxes (default: GT boxes)"
    )
    defaults = EvalConfig()
    parser.add_argument("--det-score-threshold", type=float, default=defaults.det_score_threshold)
    parser.add_argument("--no-flip", action="store_true", help="no flip test")
    parser.add_argument("--decode", choices=("quarter", "dark"), default=defaults.decode)
    parser.add_argument("--oks-nms-threshold", type=float, default=defaults.oks_nms_threshold)
    parser.add_argument("--output-dir", default="runs/eval")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    parser.add_argument("--vis", type=int, default=0, help="draw this many images into OUTPUT/vis")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit code 2 on bad files or arguments, with one message line."""
    args = build_parser().parse_args(argv)
    from pose_ros.models import CheckpointError
    from pose_ros.pipeline import resolve_device
    from pose_ros.runtime import RuntimeBackendError

    config = EvalConfig(
        flip_test=not args.no_flip,
        decode=args.decode,
        oks_nms_threshold=args.oks_nms_threshold,
        det_score_threshold=args.det_score_threshold,
    )
    output_dir = Path(args.output_dir)
    try:
        device = resolve_device(args.device)
        if args.fp16 and device.type != "cuda":
            raise ValueError("--fp16 needs a CUDA device")
        persons = load_coco_persons(args.annotations, args.images)
        detections = None
        if args.detections:
            detections = load_detections(
                args.detections, persons, score_threshold=config.det_score_threshold
            )
        model = load_model_for_eval(args.model, device=str(device))
    except (DatasetError, CheckpointError, RuntimeBackendError, ValueError) as error:
        print(f"pose-ros-eval: error: {error}", file=sys.stderr)
        return 2
    metrics = evaluate_model(
        model,
        persons,
        config,
        output_dir,
        detections=detections,
        device=device,
        fp16=args.fp16,
        vis_count=args.vis,
        vis_dir=output_dir / "vis",
    )
    assert metrics is not None  # single process: rank 0
    print(format_metrics(metrics))
    print(f"results: {output_dir / 'results.json'}  metrics: {output_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
