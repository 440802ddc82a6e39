"""Node benchmark: image-to-/poses latency and throughput of 640x480 frames through the real
``pose_node`` (installed executable, its own process, DDS on loopback), the pipeline alone in this
process for comparison, and what the node adds per frame (conversion, messages, markers, the
annotated image). Then three cameras: one node with ``cameras:=[cam0, cam1, cam2]`` (one
pose-network batch per cycle) against what a user would otherwise run, three single-camera nodes
(three processes, three models), fed the same synchronised streams side by side, and the one node
again on Fast DDS's default transports.

Every process runs with config/fastdds_large_images.xml (loopback-only here) unless
``--dds default``: on Fast DDS's defaults a raw 640x480 frame travels as UDP fragments, and the
repair of a lost fragment waits for a heartbeat (README, "Several cameras").
Medians; CPU contention from other processes shows up directly in the figures.

    python -m bench.node_bench                  # through scripts/ros-env (make bench)
    python -m bench.node_bench --quick          # ResNet-18, fewer frames
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from sensor_msgs.msg import CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from devtools.ros_harness import (
    NodeProcess,
    Peer,
    loopback_large_images_profile,
    make_header,
    reliable,
    running_pose_node,
    with_stamp,
)
from pose_ros.demo_scene import demo_frames
from pose_ros.drawing import draw_persons
from pose_ros.factory import estimator_from_names
from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import (
    array_to_image_msg,
    compressed_msg_to_array,
    image_msg_to_array,
)
from pose_ros.ros.markers import build_marker_array
from pose_ros.ros.messages import persons_to_msg
from pose_ros.ros.params import DEFAULT_MAX_IMAGE_PIXELS, MarkerStyle
from pose_ros.types import Person

NAMESPACE = "/pose_bench"
FRAME_ID = "bench_camera_optical_frame"
WIDTH, HEIGHT = 640, 480


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def fake_persons(count: int) -> list[Person]:
    rng = np.random.default_rng(count)
    persons = []
    for _ in range(count):
        keypoints = np.column_stack(
            [rng.uniform(0, WIDTH, 17), rng.uniform(0, HEIGHT, 17), rng.uniform(0.3, 1, 17)]
        ).astype(np.float32)
        box = np.array([10, 20, 100, 300], np.float32)
        persons.append(Person(box=box, box_score=0.9, score=0.8, keypoints=keypoints))
    return persons


def node_parts(frame: np.ndarray, repeats: int) -> list[tuple[str, float]]:
    """Per-frame work of the node besides the pipeline, in this process."""
    header = make_header(1, FRAME_ID)
    rows = []
    limit = DEFAULT_MAX_IMAGE_PIXELS
    for label, msg in (
        ("conversion rgb8 (zero-copy view)", array_to_image_msg(frame, "rgb8", header=header)),
        (
            "conversion bgr8, padded rows (view)",
            array_to_image_msg(frame[..., ::-1], "bgr8", header=header, step=WIDTH * 3 + 64),
        ),
        (
            "conversion mono8 -> RGB",
            array_to_image_msg(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), "mono8", header=header),
        ),
        (
            "conversion yuv422 (UYVY) -> RGB",
            array_to_image_msg(
                cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_UYVY)
                if hasattr(cv2, "COLOR_RGB2YUV_UYVY")
                else np.zeros((HEIGHT, WIDTH, 2), np.uint8),
                "yuv422",
                header=header,
            ),
        ),
    ):
        rows.append(
            (label, median_ms(lambda msg=msg: image_msg_to_array(msg, max_pixels=limit), repeats))
        )
    _, jpeg = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    compressed = CompressedImage(header=header, format="jpeg")
    compressed.data = jpeg.tobytes()
    rows.append(
        (
            "conversion JPEG decode (compressed input)",
            median_ms(lambda: compressed_msg_to_array(compressed, max_pixels=limit), repeats),
        )
    )
    for count in (1, 10):
        persons = fake_persons(count)
        rows.append(
            (
                f"PersonPoseArray, {count} person(s)",
                median_ms(lambda p=persons: persons_to_msg(p, header, WIDTH, HEIGHT), repeats),
            )
        )
        rows.append(
            (
                f"MarkerArray, {count} person(s)",
                median_ms(
                    lambda p=persons: build_marker_array(p, header, WIDTH, HEIGHT, MarkerStyle()),
                    repeats,
                ),
            )
        )
    persons = fake_persons(1)
    rows.append(
        (
            "annotated image (draw + Image message), 1 person",
            median_ms(
                lambda: array_to_image_msg(draw_persons(frame, persons), "rgb8", header=header),
                repeats,
            ),
        )
    )
    return rows


def sequential_latency(
    peer: Peer,
    publishers: Sequence[Any],
    poses: Sequence[list],
    frame: np.ndarray,
    count: int,
    first_stamp: int,
) -> list[float]:
    """Image -> /poses latency of ``count`` frames sent one at a time (no queueing); with several
    cameras, one frame on each camera at once, until every camera has answered it."""
    latencies = []
    for index in range(count):
        stamp = first_stamp + index
        msg = array_to_image_msg(frame, "rgb8", header=make_header(stamp, FRAME_ID))
        start = time.perf_counter()
        for publisher in publishers:
            publisher.publish(msg)
        if peer.spin_until(
            lambda stamp=stamp: all(with_stamp(answers, stamp) for answers in poses), timeout=30
        ):
            latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def throughput(
    peer: Peer,
    publishers: Sequence[Any],
    poses: Sequence[list],
    frame: np.ndarray,
    rate: float,
    seconds: float,
    first_stamp: int,
) -> tuple[int, int, float]:
    """(frames sent, frames answered, answers per second) while publishing at ``rate`` Hz on
    every camera (all cameras together)."""
    count = int(rate * seconds)
    messages = [
        array_to_image_msg(frame, "rgb8", header=make_header(first_stamp + i, FRAME_ID))
        for i in range(count)
    ]
    start = time.monotonic()
    for index, msg in enumerate(messages):
        for publisher in publishers:
            publisher.publish(msg)
        peer.spin_for(max(0.0, start + (index + 1) / rate - time.monotonic()))
    last = first_stamp + count - 1
    peer.spin_until(lambda: all(with_stamp(answers, last) for answers in poses), timeout=10)
    elapsed = time.monotonic() - start
    answered = sum(
        len({p.header.stamp.sec for p in answers if first_stamp <= p.header.stamp.sec <= last})
        for answers in poses
    )
    return count * len(publishers), answered, answered / elapsed


def _node_parameters(args: argparse.Namespace, random_weights: bool) -> dict[str, Any]:
    return {
        "model": args.model,
        "allow_random_weights": random_weights,
        "detector.backend": "full_image",
        "device": args.device,
        # every frame must arrive: 640x480 rgb8 exceeds Fast DDS's shared-memory segment
        "qos.reliability": "reliable",
    }


def measure_node(
    args: argparse.Namespace, frame: np.ndarray, pipeline_ms: float, random_weights: bool
) -> list[tuple[str, str]]:
    """Latency, overhead and throughput rows of the real node."""
    parameters = _node_parameters(args, random_weights)
    rows: list[tuple[str, str]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_pose_node(Path(tmp) / "pose_node.log", NAMESPACE, parameters) as node,
    ):
        peer = Peer("pose_bench")
        try:
            publisher = peer.node.create_publisher(Image, f"{NAMESPACE}/image", reliable(5))
            poses, _ = peer.collect(PersonPoseArray, f"{NAMESPACE}/poses", reliable(100))
            warm = array_to_image_msg(frame, "rgb8", header=make_header(1, FRAME_ID))
            if not peer.publish_until(
                lambda: publisher.publish(warm), lambda: bool(poses), timeout=60
            ):
                raise RuntimeError(f"no answer from pose_node:\n{node.log()[-3000:]}")
            peer.spin_for(1.5)  # the warm-up's status line goes out first
            log_start = node.log_size()
            plain = sequential_latency(peer, [publisher], [poses], frame, args.frames, 1000)
            rows.append(
                (
                    "node: image -> /poses (only /poses subscribed)",
                    f"p50 {percentile(plain, 50):.1f} ms, p90 {percentile(plain, 90):.1f} ms",
                )
            )
            peer.spin_for(1.5)  # the last status line of the run
            own = [
                float(value)
                for value in re.findall(r"node's own p50 ([\d.]+) ms", node.log(log_start))
            ]
            rows.append(
                (
                    "node's own work per frame (its status lines: callback to /poses published, "
                    "minus the pipeline)",
                    f"{statistics.median(own):.2f} ms (median of {len(own)} status lines)"
                    if own
                    else "no status line",
                )
            )
            peer.collect(MarkerArray, f"{NAMESPACE}/poses/markers", reliable(5))
            peer.collect(Image, f"{NAMESPACE}/poses/image", reliable(2))
            peer.spin_for(1.0)  # discovery of the new subscriptions by the node
            visual = sequential_latency(peer, [publisher], [poses], frame, args.frames, 2000)
            rows.append(
                (
                    "node: image -> /poses (+ markers and annotated image subscribed)",
                    f"p50 {percentile(visual, 50):.1f} ms, p90 {percentile(visual, 90):.1f} ms",
                )
            )
            rows.append(
                (
                    "node overhead beyond the pipeline (p50, incl. DDS both ways)",
                    f"{percentile(plain, 50) - pipeline_ms:.1f} ms "
                    f"(+ visual outputs: {percentile(visual, 50) - pipeline_ms:.1f} ms)",
                )
            )
            sent, answered, per_second = throughput(
                peer, [publisher], [poses], frame, args.rate, args.seconds, 10_000
            )
            rows.append(
                (
                    f"node throughput, {args.rate:g} Hz input for {args.seconds:g} s",
                    f"{per_second:.1f} frames/s answered ({answered}/{sent}; the rest dropped "
                    "for newer frames)",
                )
            )
            rows.append(("node memory (RSS)", f"{node.rss_mb():.0f} MB"))
        finally:
            peer.close()

    return rows


CAMERAS = ("cam0", "cam1", "cam2")
#: The three-camera setups publish no camera_info.
NO_CAMERA_INFO = {"use_camera_info": False}
DDS_PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"


@contextmanager
def dds_profile(path: Path | None) -> Iterator[None]:
    """Fast DDS profile of the processes started (and the Peer created) inside: ``path``, or
    Fast DDS's defaults for None."""
    saved = os.environ.get(DDS_PROFILE_VARIABLE)
    if path is None:
        os.environ.pop(DDS_PROFILE_VARIABLE, None)
    else:
        os.environ[DDS_PROFILE_VARIABLE] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(DDS_PROFILE_VARIABLE, None)
        else:
            os.environ[DDS_PROFILE_VARIABLE] = saved


def _network_calls(node: NodeProcess) -> str:
    """The closing summary's count of pose-network batches (a node with several cameras)."""
    match = re.search(r"(\d+) pose-network batches", node.log())
    return match.group(1) if match else "?"


def measure_cameras(
    args: argparse.Namespace, frame: np.ndarray, random_weights: bool
) -> list[tuple[str, str]]:
    """Three synchronised cameras: one node with ``cameras`` against three single-camera nodes,
    and the one node on Fast DDS's default transports. Each setup gets the same
    sequential-latency run and the same throughput run."""
    rows: list[tuple[str, str]] = []
    rate = args.rate
    one_node = [(f"{NAMESPACE}_multi", {"cameras": f"[{','.join(CAMERAS)}]", **NO_CAMERA_INFO})]
    profile = os.environ.get(DDS_PROFILE_VARIABLE)
    setups = {
        "one node, cameras:=[cam0, cam1, cam2]": (one_node, profile),
        "three single-camera nodes (the alternative)": (
            [(f"{NAMESPACE}_{camera}", NO_CAMERA_INFO) for camera in CAMERAS],
            profile,
        ),
    }
    if profile is not None:
        setups["one node, Fast DDS default transports"] = (one_node, None)
    for label, (nodes, dds) in setups.items():
        with (
            tempfile.TemporaryDirectory() as tmp,
            ExitStack() as stack,
            dds_profile(Path(dds) if dds else None),
        ):
            processes = [
                stack.enter_context(
                    running_pose_node(
                        Path(tmp) / f"node{index}.log",
                        namespace,
                        {**_node_parameters(args, random_weights), **extra},
                    )
                )
                for index, (namespace, extra) in enumerate(nodes)
            ]
            topics = (
                [f"{nodes[0][0]}/{camera}" for camera in CAMERAS]
                if len(nodes) == 1
                else [namespace for namespace, _ in nodes]
            )
            peer = Peer("pose_bench_cameras")
            try:
                publishers = [
                    peer.node.create_publisher(Image, f"{topic}/image", reliable(5))
                    for topic in topics
                ]
                poses = [
                    peer.collect(PersonPoseArray, f"{topic}/poses", reliable(100))[0]
                    for topic in topics
                ]
                warm = array_to_image_msg(frame, "rgb8", header=make_header(1, FRAME_ID))

                def publish_warm(publishers=publishers, warm=warm) -> None:
                    for publisher in publishers:
                        publisher.publish(warm)

                if not peer.publish_until(
                    publish_warm, lambda poses=poses: all(poses), timeout=60, period=1.0
                ):
                    logs = "\n".join(p.log()[-1500:] for p in processes)
                    raise RuntimeError(f"no answer from every camera:\n{logs}")
                peer.spin_for(0.5)
                latencies = sequential_latency(peer, publishers, poses, frame, args.frames, 1000)
                sent, answered, per_second = throughput(
                    peer, publishers, poses, frame, rate, args.seconds, 10_000
                )
                rss = sum(process.rss_mb() for process in processes)
            finally:
                peer.close()
            for process in processes:
                process.interrupt()
            batches = f", {_network_calls(processes[0])} network calls" if len(nodes) == 1 else ""
        rows.append(
            (
                f"3 cameras, {label}: image -> all three /poses",
                f"p50 {percentile(latencies, 50):.1f} ms, p90 {percentile(latencies, 90):.1f} ms",
            )
        )
        rows.append(
            (
                f"3 cameras, {label}: {rate:g} Hz per camera for {args.seconds:g} s",
                f"{per_second:.1f} frames/s answered, all cameras ({answered}/{sent}{batches})",
            )
        )
        rows.append((f"3 cameras, {label}: memory (RSS, all processes)", f"{rss:.0f} MB"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="random:simplebaseline_res50",
        help="network (default: ResNet-50 SimpleBaseline, random weights: timings do not depend "
        "on them); a checkpoint path or registry name also works",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=30, help="frames for the latency runs")
    parser.add_argument("--rate", type=float, default=30.0, help="input rate of the throughput run")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the throughput run")
    parser.add_argument("--quick", action="store_true", help="ResNet-18, 10 frames, 4 s")
    parser.add_argument(
        "--dds",
        choices=("large-images", "default"),
        default="large-images",
        help="Fast DDS transports of every process: config/fastdds_large_images.xml (loopback "
        "only) or Fast DDS's defaults",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        if args.dds == "large-images":
            stack.enter_context(dds_profile(loopback_large_images_profile(Path(tmp))))
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.quick:
        args.model = (
            "random:simplebaseline_res18" if args.model.startswith("random:") else args.model
        )
        args.frames, args.seconds = 10, 4.0
    random_weights = args.model.startswith("random:")
    frame = next(demo_frames(1, width=WIDTH, height=HEIGHT))[0]

    estimator = estimator_from_names(
        args.model, detector="full_image", device=args.device, allow_random_weights=random_weights
    )
    print(
        f"## pose_ros node benchmark — torch {torch.__version__}, device {estimator.device} "
        f"({torch.get_num_threads()} CPU threads), {WIDTH}x{HEIGHT} rgb8 frames, "
        f"model {args.model} ({estimator.describe().split(' on ')[0]}), detector full_image "
        f"(1 person), DDS: {args.dds}\n",
        flush=True,
    )
    rows: list[tuple[str, str]] = []
    for label, ms in node_parts(frame, repeats=50):
        rows.append((f"node part: {label}", f"{ms:.3f} ms" if ms < 1 else f"{ms:.2f} ms"))
    pipeline_ms = median_ms(lambda: estimator(frame), repeats=max(args.frames // 2, 5))
    rows.append(("pipeline alone, in this process", f"{pipeline_ms:.1f} ms"))
    estimator = None  # free it: the node loads its own

    rows += measure_node(args, frame, pipeline_ms, random_weights)
    rows += measure_cameras(args, frame, random_weights)

    print("| what | median |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
