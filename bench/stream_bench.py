"""Stream core benchmark (printed figures): the cost of :class:`pose_ros.stream.StreamCore` itself,
everything but the networks (frame clock, tracker, detector plan, One-Euro smoothing in pixels and
metres, depth lookups and back-projection, clipping, results), per frame of a 640x480 camera with 5
tracked persons walking, with and without a registered depth image.

The core reports this time itself (``FrameResult.core_ms``: its own work before and after the
network call). The pose network is a small random ResNet-18 at 64x64 (its cost is not counted) and
every keypoint counts as confident (``keypoint_threshold`` 0), so every keypoint is smoothed and
gets a depth reading: the most work the core does for 5 persons.

    python -m bench.stream_bench [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from pose_ros.camera import PinholeCamera
from pose_ros.detection.given import GivenBoxesDetector
from pose_ros.models import build_pose_model
from pose_ros.pipeline import PoseEstimator
from pose_ros.stream import CameraFrame, StreamCore, StreamSettings
from pose_ros.tracking import TrackIds

WIDTH, HEIGHT, FPS, PERSONS = 640, 480, 30.0, 5
#: Most the core's own work may cost per frame (5 tracked persons with depth).
BUDGET_MS = 2.0


def _boxes(index: int) -> np.ndarray:
    """(5, 4) xywh: five persons side by side, each walking at about 1 px per frame."""
    x = 20.0 + 120.0 * np.arange(PERSONS) + 15.0 * np.sin(index / 20.0 + np.arange(PERSONS))
    return np.stack(
        [x, np.full(PERSONS, 100.0), np.full(PERSONS, 90.0), np.full(PERSONS, 260.0)], 1
    )


def run(frames: int, with_depth: bool) -> tuple[list[float], list[float]]:
    """(core ms per frame, network ms per frame) after 20 warm-up frames."""
    torch.manual_seed(0)
    model = build_pose_model("simplebaseline_res18", input_size=(64, 64)).eval()
    detector = GivenBoxesDetector()
    estimator = PoseEstimator(model, detector, device="cpu", keypoint_score_threshold=0.0)
    core = StreamCore(estimator, StreamSettings(keypoint_threshold=0.0), ids=TrackIds())
    camera = PinholeCamera.from_k([525.0, 0, 319.5, 0, 525.0, 239.5, 0, 0, 1], WIDTH, HEIGHT)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    depth = (2.5 + 0.01 * rng.standard_normal((HEIGHT, WIDTH))).astype(np.float32)
    core_ms, network_ms = [], []
    for index in range(frames + 20):
        detector.set_boxes(_boxes(index))
        frame = CameraFrame(
            image,
            "RGB",
            stamp_sec=1000.0 + index / FPS,
            arrival_sec=index / FPS,
            frame_id="camera",
            camera_model=camera,
            depth_m=depth if with_depth else None,
        )
        start = time.perf_counter()
        (result,) = core.process([frame])
        total_ms = (time.perf_counter() - start) * 1e3
        if result.error is not None:
            raise result.error
        if index >= 20:
            assert len(result.persons) == PERSONS, len(result.persons)
            if with_depth:
                assert all(p.center is not None for p in result.persons), "no 3D"
            core_ms.append(result.core_ms)
            network_ms.append(total_ms - result.core_ms)
    return core_ms, network_ms


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 frames instead of 300")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    frames = 60 if args.quick else 300
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"Stream core: 5 tracked persons, 640x480 at 30 fps, {frames} frames, CPU")
    print(f"  {'':28s} {'core p50':>9s} {'core p95':>9s} {'networks p50':>13s}")
    worst = 0.0
    for label, with_depth in (("without depth", False), ("with depth (32FC1, camera)", True)):
        core_ms, network_ms = run(frames, with_depth)
        median = statistics.median(core_ms)
        worst = max(worst, median)
        print(
            f"  {label:28s} {median:7.2f}ms {_p95(core_ms):7.2f}ms "
            f"{statistics.median(network_ms):11.1f}ms"
        )
    verdict = "within" if worst <= BUDGET_MS else "OVER"
    print(
        f"  core's own time p50 {worst:.2f} ms per frame: {verdict} the {BUDGET_MS:.0f} ms budget"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
