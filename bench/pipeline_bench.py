"""Pipeline benchmark: network ms per crop and crops/s at several batch sizes, and pipeline ms per
640x480 frame with 1 and 5 persons, detector excluded and included. fp32 on the CPU; fp32 and fp16
on CUDA when present. Medians over repeated runs, measured side by side in one process.

    make bench                       # everything
    python -m bench.pipeline_bench --quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from pose_ros.detection import build_detector
from pose_ros.models import build_pose_model
from pose_ros.pipeline import PoseEstimator

NETWORKS = ("simplebaseline_res18", "simplebaseline_res50", "attention_res50")
BATCHES = (1, 4, 16)
FRAME_SIZE = (480, 640)
DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1, sync: bool = False) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def synthetic_frame(seed: int = 0) -> np.ndarray:
    """A 640x480 RGB frame of noise: the timings do not depend on the content."""
    return np.random.default_rng(seed).integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8)


def person_boxes(count: int) -> np.ndarray:
    xs = np.linspace(20, 520, count)
    return np.array([[x, 60.0, 100.0, 300.0] for x in xs], dtype=np.float32)


def bench_device(
    device: torch.device, fp16: bool, repeats: int, networks: tuple[str, ...]
) -> list[str]:
    rows = []
    precision = "fp16" if fp16 else "fp32"
    sync = device.type == "cuda"
    dtype = torch.float16 if fp16 else torch.float32
    for name in networks:
        model = build_pose_model(name).to(device).eval().to(dtype)
        height, width = model.input_size
        for batch in BATCHES:
            x = torch.randn(batch, 3, height, width, device=device, dtype=dtype)

            def forward(x: torch.Tensor = x, model: torch.nn.Module = model) -> None:
                with torch.inference_mode():
                    model(x)

            ms = median_ms(forward, repeats, sync=sync)
            rows.append(
                f"| {device.type} {precision} | network {name} | batch {batch:>2} | "
                f"{ms / batch:8.1f} ms/crop | {1e3 * batch / ms:8.1f} crops/s |"
            )
    frame = synthetic_frame()
    detector = build_detector(DETECTOR, weights=None, device=device, score_threshold=0.0)
    detector_ms = median_ms(lambda: detector.detect(frame), repeats, sync=sync)
    rows.append(
        f"| {device.type} {precision} | detector {DETECTOR} (640x480) | - "
        f"| {detector_ms:8.1f} ms/frame | |"
    )
    for name in ("simplebaseline_res50", "attention_res50"):
        if name not in networks:
            continue
        estimator = PoseEstimator(build_pose_model(name), device=device, fp16=fp16)
        for persons in (1, 5):
            boxes = person_boxes(persons)
            ms = median_ms(
                lambda boxes=boxes, estimator=estimator: estimator(frame, boxes=boxes),
                repeats,
                sync=sync,
            )
            rows.append(
                f"| {device.type} {precision} | pipeline {name}, {persons} person(s), "
                "given boxes | - | "
                f"{ms:8.1f} ms/frame | detector included: {ms + detector_ms:8.1f} ms/frame |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--quick", action="store_true", help="ResNet-18 only, 3 repeats")
    args = parser.parse_args(argv)
    networks = ("simplebaseline_res18",) if args.quick else NETWORKS
    repeats = 3 if args.quick else args.repeats
    cpu_name = "cpu"
    print(
        f"## pose_ros pipeline benchmark — torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, "
        f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}"
    )
    print(
        f"medians of {repeats} runs; 256x192 input; "
        "random weights (timings do not depend on them)\n"
    )
    print("| device | what | batch | time | throughput |")
    print("|---|---|---|---|---|")
    for row in bench_device(torch.device(cpu_name), False, repeats, networks):
        print(row, flush=True)
    if torch.cuda.is_available():
        for fp16 in (False, True):
            for row in bench_device(torch.device("cuda"), fp16, max(repeats, 20), networks):
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
