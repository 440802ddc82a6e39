"""``engine: triton`` benchmark, against a real Triton server on this machine (Triton's own server
binary from nvidia-pytriton, the repository's graph on ONNX Runtime, CPU, loopback; see
bench/triton_server.py):

* per frame (640x480, 1 and 5 persons, given boxes), in this process: the local ONNX Runtime
  engine (heatmaps decoded by numpy), the repository's graph on local ONNX Runtime, and
  ``engine: triton`` over gRPC and HTTP; then the client's own cost per frame (serialisation,
  the call, deserialisation): the time the runner waits minus the time the server's statistics
  give each request;
* three single-camera nodes (installed executable, DDS on loopback) sharing one server against
  three local nodes running the same graph: latency, frames/s, memory of every process.

On a machine without GPU the server computes on the same cores as the nodes: the figures show
what the client costs and what sharing one server does, not what a GPU server gains.

    python -m bench.triton_bench            # through scripts/ros-env (make bench)
    python -m bench.triton_bench --quick    # 128x96 crops, fewer frames
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sensor_msgs.msg import Image

from bench.node_bench import (
    FRAME_ID,
    HEIGHT,
    WIDTH,
    dds_profile,
    median_ms,
    percentile,
    sequential_latency,
    throughput,
)
from bench.triton_server import (
    CpuTritonServer,
    batching_summary,
    cpu_triton_server,
    unavailable_reason,
)
from devtools.ros_harness import (
    Peer,
    loopback_large_images_profile,
    make_header,
    reliable,
    running_pose_node,
)
from pose_ros.demo_scene import demo_frames
from pose_ros.engines import cpu_thread_count
from pose_ros.models import build_pose_model
from pose_ros.msg import PersonPoseArray
from pose_ros.pipeline import PoseEstimator
from pose_ros.ros.conversions import array_to_image_msg
from pose_ros.runtime import OnnxPoseRunner, export_onnx
from pose_ros.triton import TritonPoseRunner, export_triton_repository

NAMESPACE = "/pose_bench_triton"
MODEL_NAME = "pose"
#: A slow shared CPU must not turn a measurement into a timeout.
BENCH_TIMEOUT_MS = 30_000


def person_boxes(count: int) -> np.ndarray:
    """``count`` person boxes (x, y, w, h) spread over a 640x480 frame."""
    boxes = [(40 + 110 * i, 60 + 15 * (i % 2), 100, 260) for i in range(count)]
    return np.array(boxes, np.float32)


def server_ms_per_request(before: dict[str, Any], after: dict[str, Any]) -> float:
    """Mean time the server spent on each request between two statistics readings (queue,
    input, inference, output: its whole share), milliseconds."""
    success_before = before["inference_stats"]["success"]
    success_after = after["inference_stats"]["success"]
    count = int(success_after.get("count", 0)) - int(success_before.get("count", 0))
    nanoseconds = int(success_after.get("ns", 0)) - int(success_before.get("ns", 0))
    return nanoseconds / count / 1e6 if count else float("nan")


def measure_frames(
    args: argparse.Namespace,
    model: torch.nn.Module,
    heatmap_onnx: Path,
    graph_onnx: Path,
    server: CpuTritonServer,
) -> list[tuple[str, str]]:
    """Per-frame rows of the pipeline in this process, for each engine and person count."""
    threads = cpu_thread_count(0)
    frame = next(demo_frames(1, width=WIDTH, height=HEIGHT))[0]
    engines = {
        "local ONNX Runtime (heatmaps, numpy decoding)": OnnxPoseRunner(
            heatmap_onnx, device="cpu", threads=threads
        ),
        "local ONNX Runtime, the repository's graph": OnnxPoseRunner(
            graph_onnx, device="cpu", threads=threads
        ),
        "engine triton, gRPC on loopback": TritonPoseRunner(
            server.grpc_url, MODEL_NAME, timeout_ms=BENCH_TIMEOUT_MS
        ),
        "engine triton, HTTP on loopback": TritonPoseRunner(
            server.http_url, MODEL_NAME, timeout_ms=BENCH_TIMEOUT_MS
        ),
    }
    rows = []
    for persons in (1, 5):
        boxes = person_boxes(persons)
        for label, network in engines.items():
            estimator = PoseEstimator(network, device="cpu")
            total = median_ms(lambda e=estimator, b=boxes: e(frame, boxes=b), args.frames)
            value = f"{total:.1f} ms"
            if label.startswith("engine triton"):
                network_ms, server_ms, client_ms = _client_overhead(
                    estimator, frame, boxes, server, args.frames
                )
                value += (
                    f" (network call {network_ms:.1f} ms − server {server_ms:.1f} ms = the "
                    f"client's own cost {client_ms:.2f} ms per frame)"
                )
            rows.append((f"{persons} person{'s' if persons > 1 else ''}: {label}", value))
    return rows


def _client_overhead(
    estimator: PoseEstimator,
    frame: np.ndarray,
    boxes: np.ndarray,
    server: CpuTritonServer,
    repeats: int,
) -> tuple[float, float, float]:
    """Medians over frames of the pipeline's network time, the server's time of that frame's
    request (its statistics, read between frames), and their difference: serialisation, the
    gRPC/HTTP call and deserialisation on this side."""
    rows = []
    for _ in range(repeats):
        before = server.statistics(MODEL_NAME)
        estimator(frame, boxes=boxes)
        network_ms = estimator.last_timings.network_ms
        # The server counts a request once its answer is out: wait for that count.
        deadline = time.monotonic() + 2.0
        after = server.statistics(MODEL_NAME)
        while _requests(after) == _requests(before) and time.monotonic() < deadline:
            time.sleep(0.01)
            after = server.statistics(MODEL_NAME)
        server_ms = server_ms_per_request(before, after)
        if np.isfinite(server_ms):
            rows.append((network_ms, server_ms, network_ms - server_ms))
    network, on_server, client = np.median(np.array(rows), axis=0)
    return float(network), float(on_server), float(client)


def _requests(statistics: dict[str, Any]) -> int:
    return int(statistics["inference_stats"]["success"].get("count", 0))


def measure_nodes(
    args: argparse.Namespace, graph_onnx: Path, server: CpuTritonServer
) -> list[tuple[str, str]]:
    """Three single-camera nodes sharing the server against three local nodes on the same
    graph: sequential latency, throughput, memory of all processes."""
    frame = next(demo_frames(1, width=WIDTH, height=HEIGHT))[0]
    common = {
        "detector.backend": "full_image",
        "device": "cpu",
        "qos.reliability": "reliable",
        "use_camera_info": False,
    }
    setups = {
        "three nodes sharing one Triton server": {
            "engine": "triton",
            "triton.url": server.grpc_url,
            "triton.model": MODEL_NAME,
            "triton.timeout_ms": BENCH_TIMEOUT_MS,
            **common,
        },
        "three local nodes (ONNX Runtime, same graph)": {
            "engine": "onnxruntime",
            "model": str(graph_onnx),
            **common,
        },
    }
    rows = []
    for label, parameters in setups.items():
        namespaces = [f"{NAMESPACE}_robot{i}" for i in range(3)]
        before = server.statistics(MODEL_NAME)
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            nodes = [
                stack.enter_context(
                    running_pose_node(Path(tmp) / f"node{i}.log", namespace, parameters)
                )
                for i, namespace in enumerate(namespaces)
            ]
            peer = Peer("pose_bench_triton")
            try:
                publishers = [
                    peer.node.create_publisher(Image, f"{ns}/image", reliable(5))
                    for ns in namespaces
                ]
                poses = [
                    peer.collect(PersonPoseArray, f"{ns}/poses", reliable(100))[0]
                    for ns in namespaces
                ]
                warm = array_to_image_msg(frame, "rgb8", header=make_header(1, FRAME_ID))
                if not peer.publish_until(
                    lambda publishers=publishers, warm=warm: [p.publish(warm) for p in publishers],
                    lambda poses=poses: all(poses),
                    timeout=60,
                    period=1.0,
                ):
                    logs = "\n".join(node.log()[-1500:] for node in nodes)
                    raise RuntimeError(f"no answer from every node:\n{logs}")
                peer.spin_for(0.5)
                latencies = sequential_latency(peer, publishers, poses, frame, args.frames, 1000)
                sent, answered, per_second = throughput(
                    peer, publishers, poses, frame, args.rate, args.seconds, 10_000
                )
                node_rss = sum(node.rss_mb() for node in nodes)
            finally:
                peer.close()
        after = server.statistics(MODEL_NAME)
        remote = parameters["engine"] == "triton"
        rss = f"{node_rss:.0f} MB (nodes)"
        if remote:
            rss += f" + {server.rss_mb():.0f} MB (server) = {node_rss + server.rss_mb():.0f} MB"
        rows.append(
            (
                f"{label}: image -> all three /poses",
                f"p50 {percentile(latencies, 50):.1f} ms, p90 {percentile(latencies, 90):.1f} ms",
            )
        )
        rows.append(
            (
                f"{label}: {args.rate:g} Hz per camera for {args.seconds:g} s",
                f"{per_second:.1f} frames/s answered, all nodes ({answered}/{sent})",
            )
        )
        rows.append((f"{label}: memory (RSS, all processes)", rss))
        if remote:
            summary = batching_summary(after)
            earlier = batching_summary(before)
            requests = summary["requests"] - earlier["requests"]
            executions = summary["executions"] - earlier["executions"]
            merged = {
                size: count - earlier["batch_sizes"].get(size, 0)
                for size, count in summary["batch_sizes"].items()
                if count > earlier["batch_sizes"].get(size, 0)
            }
            rows.append(
                (
                    f"{label}: server's dynamic batching",
                    f"{requests} requests in {executions} executions (batch size: executions "
                    f"{merged})",
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch", default="simplebaseline_res18", help="network (random weights: timings only)"
    )
    parser.add_argument("--frames", type=int, default=30, help="frames per timing")
    parser.add_argument("--rate", type=float, default=10.0, help="input rate per node (Hz)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the throughput run")
    parser.add_argument("--quick", action="store_true", help="128x96 crops, 10 frames, 4 s")
    # make bench hands every benchmark the same arguments: the others' options are theirs.
    args, _ = parser.parse_known_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"## engine triton benchmark: skipped ({reason})")
        return 0
    if args.quick:
        args.frames, args.seconds = 10, 4.0
    input_size = (128, 96) if args.quick else (256, 192)
    torch.manual_seed(0)
    model = build_pose_model(args.arch, input_size=input_size).eval()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        stack.enter_context(dds_profile(loopback_large_images_profile(Path(tmp))))
        heatmap_onnx = export_onnx(model, Path(tmp) / "heatmaps.onnx")
        repository = export_triton_repository(model, Path(tmp) / "models", kind="cpu")
        threads = cpu_thread_count(0)
        server = stack.enter_context(
            cpu_triton_server(repository.directory, Path(tmp) / "server.log", threads=threads)
        )
        cpu = _cpu_name()
        print(
            f"## engine triton benchmark — {cpu}, {os.cpu_count()} cores, no GPU; "
            f"{args.arch} {input_size[0]}x{input_size[1]} (random weights), {WIDTH}x{HEIGHT} "
            f"frames; Triton {_server_version(server)} (nvidia-pytriton, CPU, ONNX Runtime "
            f"{threads} threads) on loopback, {time.strftime('%Y-%m-%d')}\n",
            flush=True,
        )
        rows = measure_frames(args, model, heatmap_onnx, repository.onnx_path, server)
        rows += measure_nodes(args, repository.onnx_path, server)
    print("| what | median |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    return 0


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _server_version(server: CpuTritonServer) -> str:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        return str(client.get_server_metadata().version)
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
