"""Recordings benchmark (``pose-ros-infer --bag``), printed figures:

1. Speed: frames/s of the bag path (read, decode, the stream core: pipeline, tracking and
   smoothing; build, serialise and write poses and markers) beside the stream core's own frames/s
   on the same frames already decoded in memory: one camera of 320x240 rgb8 frames showing a drawn
   person (the full-image detector boxes it), the node's default network (ResNet-50 SimpleBaseline
   256x192, random weights: the cost does not depend on them), the same estimator object for
   both. Best of three runs of each, alternating.
2. Memory: the process's resident memory (RSS) over a 5,000-frame recording of small frames
   (ResNet-18 96x64, poses and markers written), after the first 100 frames and at its highest
   afterwards: the recording is streamed, so it stays flat.

    scripts/ros-env python -m bench.bag_bench [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))
import recordings  # noqa: E402

from pose_ros import cli  # noqa: E402
from pose_ros.cli_bag import run_bag  # noqa: E402
from pose_ros.stream import CameraFrame, StreamCore  # noqa: E402

TOPIC = recordings.CameraSpec("bench", "raw")
#: Runs of each path, alternating; the best counts (other work only ever slows a run down).
RUNS = 3


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc), in MB."""
    with open("/proc/self/statm") as stream:
        pages = int(stream.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def bag_args(bag: Path, output: Path, model: str, device: str, threads: int) -> argparse.Namespace:
    return cli.build_parser().parse_args(
        [
            "--bag",
            str(bag),
            "--topic",
            TOPIC.image_topic,
            "--model",
            model,
            "--allow-random-weights",
            "--detector",
            "full_image",
            "--device",
            device,
            "--cpu-threads",
            str(threads),
            "--output",
            str(output),
            "--overwrite",
        ]
    )


def run_bag_path(args: argparse.Namespace, estimator=None, **kwargs) -> tuple[float, float, int]:
    """(seconds and processor seconds of the processing loop, frames processed) of one bag run
    (its output silenced)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run = run_bag(
            args,
            lambda: estimator if estimator is not None else cli.estimator_from_args(args),
            cli.stream_settings(args, True),
            **kwargs,
        )
    if run.exit_code != 0:
        raise RuntimeError(f"the bag run ended with exit code {run.exit_code}")
    return run.seconds, run.cpu_seconds, run.processed


def run_pipeline(args: argparse.Namespace, estimator, frames: list) -> tuple[float, float]:
    """(seconds, processor seconds) for the frames through the same stream core (pipeline,
    tracking, smoothing), the frames already decoded."""
    core = StreamCore(estimator, cli.stream_settings(args, True))
    start, cpu_start = time.perf_counter(), time.process_time()
    for index, frame in enumerate(frames):
        stamp = recordings.START_NS * 1e-9 + index * 0.1
        (result,) = core.process(
            [CameraFrame(frame, "RGB", stamp_sec=stamp, arrival_sec=stamp, topic=TOPIC.image_topic)]
        )
        if result.error is not None:
            raise result.error
    return time.perf_counter() - start, time.process_time() - cpu_start


def speed(tmp: Path, frames: int, device: str, threads: int) -> None:
    width, height = 320, 240
    bag = tmp / "speed"
    recordings.write_recording(bag, [TOPIC], frames, width=width, height=height)
    images = [rgb for rgb, _ in recordings.camera_frames(frames, width, height)]
    model = "random:simplebaseline_res50"
    args = bag_args(bag, tmp / "speed_out.mcap", model, device, threads)
    estimator = cli.estimator_from_args(args)
    run_pipeline(args, estimator, images[:5])  # warm-up
    pipeline_runs, bag_runs = [], []
    for _ in range(RUNS):
        pipeline_runs.append(run_pipeline(args, estimator, images))
        # The same estimator object: only what the bag path adds differs.
        seconds, cpu_seconds, processed = run_bag_path(args, estimator)
        assert processed == frames, processed
        bag_runs.append((seconds, cpu_seconds))
    # Best of the runs: other work on the machine only ever slows a run down.
    pipeline_wall, pipeline_cpu = (min(run[i] for run in pipeline_runs) for i in (0, 1))
    bag_wall, bag_cpu = (min(run[i] for run in bag_runs) for i in (0, 1))
    print(
        f"  speed ({frames} frames {width}x{height} rgb8, ResNet-50 256x192, {device}, "
        f"{threads or 'all'} thread(s), best of {RUNS}):"
    )
    for name, wall, cpu in (
        ("pipeline alone (decoded frames in memory)", pipeline_wall, pipeline_cpu),
        ("bag path (read, decode, pipeline, write) ", bag_wall, bag_cpu),
    ):
        print(
            f"    {name}: {frames / wall:7.2f} frames/s, processor {cpu / frames * 1e3:7.1f} ms "
            "per frame"
        )
    print(
        f"    bag path cost over the pipeline: {100 * (bag_wall / pipeline_wall - 1):+.1f} % "
        f"wall time, {100 * (bag_cpu / pipeline_cpu - 1):+.1f} % processor time "
        f"({(bag_cpu - pipeline_cpu) / frames * 1e3:+.2f} ms per frame)"
    )


def memory(tmp: Path, frames: int, device: str, threads: int) -> None:
    import torch

    from pose_ros.models import build_pose_model, save_checkpoint

    bag = tmp / "memory"
    recordings.write_recording(bag, [TOPIC], frames, width=96, height=72)
    torch.manual_seed(0)
    checkpoint = tmp / "res18_96x64.pt"
    save_checkpoint(build_pose_model("simplebaseline_res18", input_size=(96, 64)), checkpoint)
    args = bag_args(bag, tmp / "memory_out.mcap", str(checkpoint), device, threads)
    probe: dict[str, float] = {}

    def on_progress(done: int) -> None:
        if done >= 100:
            now = rss_mb()
            probe.setdefault("after_100", now)
            probe["highest"] = max(probe.get("highest", 0.0), now)

    seconds, _, processed = run_bag_path(args, on_progress=on_progress)
    growth = probe["highest"] - probe["after_100"]
    print(f"  memory ({processed} frames 96x72 rgb8, ResNet-18 96x64, {seconds:.0f} s):")
    print(
        f"    RSS after 100 frames {probe['after_100']:.0f} MB, highest afterwards "
        f"{probe['highest']:.0f} MB: {growth:+.1f} MB over the recording"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 and 1,000 frames")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="threads of the networks (1: processor time per frame is then the work itself, "
        "whatever else runs on the machine; 0 = all cores)",
    )
    args, _ = parser.parse_known_args(argv)
    print("recordings benchmark (pose-ros-infer --bag)")
    with tempfile.TemporaryDirectory() as tmp:
        speed(Path(tmp), 40 if args.quick else 200, args.device, args.cpu_threads)
        memory(Path(tmp), 1000 if args.quick else 5000, args.device, args.cpu_threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
