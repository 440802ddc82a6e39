"""Tracking benchmark (printed figures):

1. Pipeline frames/s on a 640x480 sequence with 1 and 5 persons at ``detector.interval`` 1, 5 and
   10, side by side in one process: the real detector (``fasterrcnn_mobilenet_v3_large_fpn``) and
   the real pose network (``simplebaseline_res50`` 256x192, the default model's architecture) run
   on every frame the tracker asks them to. Both have random weights here (nothing is downloaded),
   which does not change their cost; so that the tracker sees meaningful boxes and poses, their
   outputs are replaced by the sequence's truth (COCO poses moved along paths) before the tracker.
   What is timed: detector (when the plan says so) + pose network on the plan's boxes + tracker.
2. Tracker + smoothing cost per frame for 20 persons.
3. The accuracy cost of the interval on the real-pose sequences of test/motion_sequences.py:
   keypoint error and recall of interval 5 and 10 against 1. A pose network is simulated there
   (the true pose of the person in the crop, keypoints outside the crop lost): the figure is the
   cost of reused boxes (crops that lag, people entering between detections), not of a network.

    python -m bench.tracking_bench [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pose_ros.detection import build_detector
from pose_ros.models import build_pose_model
from pose_ros.pipeline import FrameBoxes, Person, PoseEstimator, rescore
from pose_ros.tracking import PoseTracker, TrackingConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))
import motion_sequences as ms  # noqa: E402

ANNOTATIONS = (
    REPO.parent / "shared" / "data" / "mmpose" / "tests" / "data" / "coco" / "test_coco.json"
)
DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"
NETWORK = "simplebaseline_res50"
INTERVALS = (1, 5, 10)


def walking_sequence(bodies: list[ms.Body], persons: int, frames: int) -> ms.MotionSequence:
    """``persons`` people side by side, walking slowly (reused boxes do not overlap)."""
    height = 150.0 if persons > 1 else 300.0
    spacing = 640 / persons

    def path(k: int) -> ms.Path2D:
        return lambda t: (
            spacing * (k + 0.5) + 15 * np.sin(t + k),
            240.0 + 5 * np.sin(2 * t),
            height,
        )

    return ms.build(f"{persons} walking", bodies, [path(k) for k in range(persons)], frames)


def pipeline_fps(
    estimator: PoseEstimator, sequence: ms.MotionSequence, interval: int, image: np.ndarray
) -> tuple[float, int]:
    """Frames/s over the sequence and the number of detector runs."""
    tracker = PoseTracker(TrackingConfig(), detector_interval=interval)
    start = time.perf_counter()
    for stamp, truth in zip(sequence.stamps, sequence.truth, strict=True):
        plan = tracker.begin_frame(float(stamp), ms.IMAGE_SIZE)
        if plan.detect:
            estimator.detect(image)  # the cost; the boxes are the truth's (random weights)
            boxes = np.array([o.box for o in truth], np.float32).reshape(-1, 4)
            scores = np.full(len(boxes), 0.9, np.float32)
            boxes, scores = tracker.select_detections(plan, boxes, scores)
            keypoints = [o.keypoints for o in truth]
        else:
            boxes, scores = plan.boxes, plan.box_scores
            keypoints = [ms.simulated_pose(b, truth) for b in boxes]
        estimator.estimate_batch([FrameBoxes(image, boxes, scores)])  # the cost
        kp = np.array(keypoints, np.float32).reshape(-1, 17, 3)
        person_scores = rescore(scores, kp[..., 2])
        tracker.end_frame(
            [
                Person(boxes[i], float(scores[i]), float(person_scores[i]), kp[i])
                for i in range(len(boxes))
            ]
        )
    if estimator.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return len(sequence.stamps) / elapsed, tracker.stats.detector_runs


def tracker_cost_ms(bodies: list[ms.Body], repeats: int) -> float:
    """Median ms per frame of begin_frame + select_detections + end_frame for 20 persons (exact
    inputs, smoothing on)."""

    def path(k: int) -> ms.Path2D:
        return lambda t: (40 + (k % 5) * 140 + 20 * t, 70 + (k // 5) * 110, 100.0)

    paths = [path(k) for k in range(20)]
    sequence = ms.build("20 persons", bodies, paths, repeats + 5)
    tracker = PoseTracker()
    times = []
    for stamp, people in zip(sequence.stamps, sequence.frames, strict=True):
        persons = [Person(o.box, o.box_score, 0.8, o.keypoints) for o in people]
        boxes = np.array([o.box for o in people], np.float32)
        scores = np.array([o.box_score for o in people], np.float32)
        start = time.perf_counter()
        plan = tracker.begin_frame(float(stamp), ms.IMAGE_SIZE)
        tracker.select_detections(plan, boxes, scores)
        tracker.end_frame(persons)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[5:])


def accuracy_rows(bodies: list[ms.Body]) -> list[str]:
    rows = []
    for sequence in ms.standard_sequences(bodies, seed=0):
        for noisy in (False, True):
            seq = ms.add_noise(sequence, seed=1) if noisy else sequence
            cells = []
            for interval in INTERVALS:
                result = ms.run_tracker(seq, PoseTracker(detector_interval=interval))
                error, recall = ms.keypoint_error(result, sequence)
                runs = f"{result.detector_runs:3d}/{len(seq.stamps)}"
                cells.append(f"{error:5.2f} px {100 * recall:5.1f} % {runs}")
            rows.append(f"| {seq.name:20s} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    bodies = ms.load_bodies(ANNOTATIONS)
    frames, rounds = (10, 1) if args.quick else (20, 3)
    detector = build_detector(DETECTOR, weights=None, device=device, score_threshold=0.0)
    estimator = PoseEstimator(build_pose_model(NETWORK), detector, device=device)
    image = np.random.default_rng(0).integers(0, 256, (*ms.IMAGE_SIZE, 3), dtype=np.uint8)
    estimator.detect(image)  # warm-up
    print(
        f"## Tracking: pipeline frames/s, 640x480, {device.type}, {torch.get_num_threads()} "
        f"threads, {DETECTOR} + {NETWORK} 256x192 (random weights: cost only), {frames} frames, "
        f"median of {rounds} round(s)"
    )
    print("| persons | " + " | ".join(f"interval {n}" for n in INTERVALS) + " |")
    print("|---|" + "---|" * len(INTERVALS))
    # Round-robin over the configurations, median over the rounds: on a shared machine a load
    # change then hits every configuration alike rather than one of them.
    configs = [(persons, interval) for persons in (1, 5) for interval in INTERVALS]
    sequences = {persons: walking_sequence(bodies, persons, frames) for persons in (1, 5)}
    measured: dict[tuple[int, int], list[float]] = {config: [] for config in configs}
    runs: dict[tuple[int, int], int] = {}
    for _ in range(rounds):
        for persons, interval in configs:
            fps, count = pipeline_fps(estimator, sequences[persons], interval, image)
            measured[persons, interval].append(fps)
            runs[persons, interval] = count
    for persons in (1, 5):
        cells = [
            f"{statistics.median(measured[persons, n]):5.2f} fps (detector {runs[persons, n]}/"
            f"{frames})"
            for n in INTERVALS
        ]
        print(f"| {persons} | " + " | ".join(cells) + " |")
    cost = tracker_cost_ms(bodies, 50 if args.quick else 300)
    print(f"\ntracker + smoothing, 20 persons: {cost:.3f} ms per frame (median)")
    print(
        "\n## Accuracy cost of detector.interval (real COCO poses in motion, simulated network):"
        "\nkeypoint error | recall | detector runs"
    )
    print("| sequence | " + " | ".join(f"interval {n}" for n in INTERVALS) + " |")
    print("|---|" + "---|" * len(INTERVALS))
    for row in accuracy_rows(bodies):
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
