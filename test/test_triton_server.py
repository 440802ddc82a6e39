"""``engine: triton`` against a real Triton Inference Server over real gRPC: Triton's own server
binary (nvidia-pytriton, CPU, loopback; bench/triton_server.py) serving a repository written by
pose-ros-export, real tritonclient, the installed node over DDS.

* the runner (gRPC and HTTP) answers as ONNX Runtime does locally on the same graph, and names
  an unreachable server, a missing model and a model of the wrong shape; the node refuses to
  start for each with that reason;
* the node's /poses equal the local ONNX Runtime engine's keypoints on the same frames;
* three nodes sending at once are batched by the server (its statistics);
* the server killed mid-stream and restarted: the node keeps running, counts the frames as
  failed, reports "inference server unreachable" on /diagnostics, answers again within 2 s of
  the server's return, and its memory comes back.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from bench.triton_server import (
    CpuTritonServer,
    batching_summary,
    cpu_triton_server,
    free_ports,
    unavailable_reason,
)
from pose_ros.factory import estimator_from_names
from pose_ros.models import load_pose_model
from pose_ros.msg import PersonPoseArray
from pose_ros.ros import diagnostics
from pose_ros.ros.conversions import array_to_image_msg
from pose_ros.runtime import OnnxPoseRunner
from pose_ros.triton import (
    INPUT_NAME,
    OUTPUT_NAME,
    TritonError,
    TritonPoseRunner,
    export_triton_repository,
    model_config_text,
)

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import Peer, make_header, pose_node, reliable, run_node_to_exit

pytest.importorskip(
    "tritonclient.grpc", reason="tritonclient is an optional extra (pose_ros[triton])"
)
_unavailable = unavailable_reason()
pytestmark = [
    pytest.mark.skipif(_unavailable is not None, reason=_unavailable or ""),
    pytest.mark.slow,
]

MODEL = "pose"
WRONG_MODEL = "pose_five_keypoints"
_stamps = itertools.count(9_000)


class _FiveKeypoints(torch.nn.Module):
    """A graph with the right input but 5 keypoints out: a model the node must refuse."""

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        mean = crops.float().mean(dim=(1, 2, 3))
        return mean[:, None, None].expand(-1, 5, 3).contiguous()


def _export_five_keypoints(path: Path) -> None:
    torch.onnx.export(
        _FiveKeypoints(),
        (torch.zeros(1, 3, 128, 96, dtype=torch.uint8),),
        str(path),
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )


def _add_five_keypoint_model(directory: Path) -> None:
    model_dir = directory / WRONG_MODEL
    (model_dir / "1").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        _export_five_keypoints(model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(
        model_config_text(
            WRONG_MODEL,
            platform="onnxruntime_onnx",
            input_size=(128, 96),
            num_keypoints=5,
            max_batch_size=8,
            max_queue_delay_us=0,
            instances=1,
            kind="cpu",
        )
    )


@pytest.fixture(scope="module")
def repository(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("triton_models")
    export_triton_repository(load_pose_model(tiny_checkpoint), directory, kind="cpu")
    _add_five_keypoint_model(directory)
    return directory


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> CpuTritonServer:
    log = tmp_path_factory.mktemp("triton_log") / "server.log"
    with cpu_triton_server(repository, log) as running:
        yield running


@pytest.fixture(scope="module")
def peer() -> Peer:
    peer = Peer("triton_peer")
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def frames(coco_dir: Path) -> list[np.ndarray]:
    """RGB frames: the COCO test images (real persons), at half size."""
    images = sorted(coco_dir.glob("*.jpg"))
    assert images, coco_dir
    frames = []
    for path in images:
        bgr = cv2.imread(str(path))
        frames.append(cv2.resize(bgr, None, fx=0.5, fy=0.5)[..., ::-1].copy())
    return frames


def _node_parameters(url: str, **extra: object) -> dict[str, object]:
    return {
        "engine": "triton",
        "triton.url": url,
        "triton.model": MODEL,
        "detector.backend": "full_image",
        "device": "cpu",
        "qos.reliability": "reliable",
        "qos.depth": 5,
        "tracking.enabled": False,
        "use_camera_info": False,
        **extra,
    }


# --- the runner in this process ---


def test_runner_answers_as_local_onnxruntime_over_grpc_and_http(
    server: CpuTritonServer, repository: Path
) -> None:
    crops = torch.from_numpy(
        np.random.default_rng(0).uniform(0, 255, (37, 3, 128, 96)).astype(np.float32)
    )
    local = OnnxPoseRunner(repository / MODEL / "1" / "model.onnx", device="cpu")(crops)
    for url in (server.grpc_url, server.http_url):
        runner = TritonPoseRunner(url, MODEL, timeout_ms=5000)
        assert runner.input_size == (128, 96) and runner.max_batch_size == 32
        remote = runner(crops)  # 37 crops: two requests of at most max_batch_size
        assert remote.shape == (37, 17, 3)
        np.testing.assert_allclose(remote.numpy(), local.numpy(), atol=1e-5, rtol=0)
        assert runner.problem is None and runner.requests == 1


def test_runner_names_what_is_wrong_at_start(server: CpuTritonServer) -> None:
    (unused_port,) = free_ports(1)
    with pytest.raises(TritonError, match=r"inference server unreachable: grpc://127\.0\.0\.1:"):
        TritonPoseRunner(f"127.0.0.1:{unused_port}", MODEL, timeout_ms=2000)
    with pytest.raises(TritonError, match="model 'no_such_model' is not ready"):
        TritonPoseRunner(server.grpc_url, "no_such_model")
    with pytest.raises(
        TritonError, match=r"output 'keypoints' has shape \[5, 3\], expected \[17, 3\]"
    ):
        TritonPoseRunner(server.grpc_url, WRONG_MODEL)


@pytest.mark.ros
def test_node_refuses_to_start_and_says_why(server: CpuTritonServer) -> None:
    (unused_port,) = free_ports(1)
    cases = [
        ({"triton.url": f"grpc://127.0.0.1:{unused_port}"}, "inference server unreachable"),
        ({"triton.model": "no_such_model"}, "model 'no_such_model' is not ready"),
        ({"triton.model": WRONG_MODEL}, "output 'keypoints' has shape [5, 3]"),
    ]
    for overrides, words in cases:
        parameters = {**_node_parameters(server.grpc_url), **overrides}
        result = run_node_to_exit("/pose_test_triton_start", parameters)
        assert result.returncode == 1, result.stdout[-3000:]
        assert words in result.stdout, result.stdout[-3000:]
        assert "Traceback" not in result.stdout, result.stdout[-3000:]


# --- the node over DDS ---


def _image(rgb: np.ndarray, stamp: int) -> Image:
    return array_to_image_msg(rgb, "rgb8", header=make_header(stamp, "camera"))


@pytest.mark.ros
def test_node_poses_equal_the_local_onnxruntime_engine(
    server: CpuTritonServer, repository: Path, peer: Peer, frames: list[np.ndarray], tmp_path: Path
) -> None:
    namespace = "/pose_test_triton_equal"
    poses, _ = peer.collect(PersonPoseArray, f"{namespace}/poses", reliable())
    publisher = peer.node.create_publisher(Image, f"{namespace}/image", reliable(5))
    local = estimator_from_names(
        str(repository / MODEL / "1" / "model.onnx"),
        detector="full_image",
        engine="onnxruntime",
        device="cpu",
    )
    with pose_node(tmp_path / "node.log", namespace, _node_parameters(server.grpc_url)) as node:
        assert "on triton" in node.log()
        stamps = []
        for rgb in frames * 2:
            stamp = next(_stamps)
            stamps.append((stamp, rgb))
            wanted = len(stamps)
            assert peer.publish_until(
                lambda rgb=rgb, stamp=stamp: publisher.publish(_image(rgb, stamp)),
                lambda wanted=wanted: len({m.header.stamp.sec for m in poses}) >= wanted,
                timeout=30,
                period=2.0,
            ), node.log()[-3000:]
    by_stamp = {m.header.stamp.sec: m for m in poses}
    largest = 0.0
    for stamp, rgb in stamps:
        (expected,) = local(rgb, color_order="RGB")
        (person,) = by_stamp[stamp].persons
        got = np.array([[k.x, k.y, k.score] for k in person.keypoints], np.float32)
        difference = np.abs(got[:, :2] - expected.keypoints[:, :2]).max()
        largest = max(largest, float(difference))
        np.testing.assert_allclose(got[:, 2], expected.keypoints[:, 2], atol=1e-4)
    print(f"/poses over Triton vs local ONNX Runtime: max keypoint difference {largest:.2e} px")
    assert largest <= 1e-3


@pytest.mark.ros
def test_three_nodes_share_server_batches(
    server: CpuTritonServer, peer: Peer, frames: list[np.ndarray], tmp_path: Path
) -> None:
    before = batching_summary(server.statistics(MODEL))
    namespaces = [f"/pose_test_triton_robot{i}" for i in range(3)]
    answered = []
    publishers = []
    for namespace in namespaces:
        answered.append(peer.collect(PersonPoseArray, f"{namespace}/poses", reliable())[0])
        publishers.append(peer.node.create_publisher(Image, f"{namespace}/image", reliable(2)))
    logs = [tmp_path / f"node{i}.log" for i in range(3)]
    with (
        pose_node(logs[0], namespaces[0], _node_parameters(server.grpc_url)),
        pose_node(logs[1], namespaces[1], _node_parameters(server.grpc_url)),
        pose_node(logs[2], namespaces[2], _node_parameters(server.grpc_url)),
    ):
        # The same camera rate on each robot for 8 s.
        end = time.monotonic() + 8.0
        index = 0
        while time.monotonic() < end:
            stamp = next(_stamps)
            message = _image(frames[index % len(frames)], stamp)
            for publisher in publishers:
                publisher.publish(message)
            index += 1
            peer.spin_for(0.1)
        peer.spin_for(1.0)
    after = batching_summary(server.statistics(MODEL))
    requests = after["requests"] - before["requests"]
    executions = after["executions"] - before["executions"]
    merged = {
        size: count - before["batch_sizes"].get(size, 0)
        for size, count in after["batch_sizes"].items()
        if size > 1 and count > before["batch_sizes"].get(size, 0)
    }
    print(f"3 nodes: {requests} requests in {executions} executions; batches above 1: {merged}")
    assert all(len(messages) > 10 for messages in answered), [len(m) for m in answered]
    assert requests >= sum(len(messages) for messages in answered)
    assert executions < requests
    assert merged, after


@pytest.mark.ros
def test_the_cameras_of_one_node_go_out_as_one_request(
    server: CpuTritonServer, peer: Peer, frames: list[np.ndarray], tmp_path: Path
) -> None:
    namespace = "/pose_test_triton_cameras"
    cameras = ("front", "left", "right")
    answers = [
        peer.collect(PersonPoseArray, f"{namespace}/{c}/poses", reliable())[0] for c in cameras
    ]
    publishers = [
        peer.node.create_publisher(Image, f"{namespace}/{c}/image", reliable(2)) for c in cameras
    ]
    parameters = _node_parameters(
        # A generous gather window: on a busy machine three frames published together can reach
        # the node's mailbox more than half a second apart (1 s: the most the parameter allows).
        server.grpc_url,
        cameras=f"[{', '.join(cameras)}]",
        batch_wait_sec=1.0,
    )
    with pose_node(tmp_path / "node.log", namespace, parameters) as node:
        # Warm-up until every camera answers (discovery), then three frames on all cameras.
        warm = next(_stamps)
        assert peer.publish_until(
            lambda: [p.publish(_image(frames[0], warm)) for p in publishers],
            lambda: all(answers),
            timeout=30,
            period=2.0,
        ), node.log()[-3000:]
        # The last warm-up cycle may have held only the cameras discovered by then, and after a
        # pause the worker waits only for the cameras of its last cycle: one round on all three.
        warm = next(_stamps)
        for publisher in publishers:
            publisher.publish(_image(frames[0], warm))
        assert peer.spin_until(
            lambda: all(any(m.header.stamp.sec == warm for m in a) for a in answers), timeout=20
        ), node.log()[-3000:]
        # Warm-up frames still on their way would count below: wait until the answers settle.
        counts = None
        while counts != [len(a) for a in answers]:
            counts = [len(a) for a in answers]
            peer.spin_for(1.5)
        # Three cycles of three cameras: three requests of three crops. A machine stalled for
        # longer than the gather window can split one cycle once; a node that sent the cameras
        # apart would split every cycle of every round.
        rounds = []
        for _ in range(3):
            before = batching_summary(server.statistics(MODEL))
            for index in range(3):
                stamp = next(_stamps)
                for publisher in publishers:
                    publisher.publish(_image(frames[index], stamp))
                assert peer.spin_until(
                    lambda stamp=stamp: all(
                        any(m.header.stamp.sec == stamp for m in a) for a in answers
                    ),
                    timeout=20,
                ), node.log()[-3000:]
            after = batching_summary(server.statistics(MODEL))
            requests = after["requests"] - before["requests"]
            crops = after["inferences"] - before["inferences"]
            rounds.append((requests, crops))
            if (requests, crops) == (3, 9):
                break
    assert rounds[-1] == (3, 9), f"(requests, crops) per round of 3 cycles: {rounds}"


@pytest.mark.ros
def test_server_killed_and_restarted_mid_stream(
    repository: Path, peer: Peer, frames: list[np.ndarray], tmp_path: Path
) -> None:
    namespace = "/pose_test_triton_restart"
    grpc_port, http_port, metrics_port = free_ports(3)
    server = CpuTritonServer(
        repository, tmp_path / "server.log", grpc_port, http_port, metrics_port
    )
    server.start()
    poses, _ = peer.collect(PersonPoseArray, f"{namespace}/poses", reliable())
    arrays, _ = peer.collect(DiagnosticArray, "/diagnostics", reliable())
    publisher = peer.node.create_publisher(Image, f"{namespace}/image", reliable(2))
    status_name = f"pose_node: {namespace}/image"
    published: dict[int, float] = {}
    answered: dict[int, float] = {}

    def statuses(since: int) -> list:
        return [s for a in arrays[since:] for s in a.status if s.name == status_name]

    def stream(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stamp = next(_stamps)
            published[stamp] = time.monotonic()
            publisher.publish(_image(frames[stamp % len(frames)], stamp))
            peer.spin_for(0.1)
            for message in poses:
                answered.setdefault(message.header.stamp.sec, time.monotonic())

    parameters = _node_parameters(server.grpc_url, **{"triton.timeout_ms": 500})
    try:
        with pose_node(tmp_path / "node.log", namespace, parameters) as node:
            stream(6.0)
            assert len(answered) > 20, node.log()[-3000:]
            rss_before = node.rss_mb()

            # The server crashes (SIGKILL of all its processes) while frames keep coming.
            server.kill()
            killed_at = time.monotonic()
            since = len(arrays)
            stream(5.0)
            assert node.process.poll() is None, node.log()[-3000:]
            lost = [s for s, t in published.items() if t > killed_at + 0.5 and s not in answered]
            assert len(lost) >= 30
            errors = [
                s
                for s in statuses(since)
                if diagnostics.level_value(s.level) == diagnostics.ERROR
                and f"inference server unreachable: {server.grpc_url}" in s.message
            ]
            assert errors, [(s.level, s.message) for s in statuses(since)]
            values = {kv.key: kv.value for kv in errors[-1].values}
            assert int(values["failed"]) >= 20, values

            # Back: answers resume within 2 s of the server's return, without a restart.
            restart = threading.Thread(target=server.start)
            restart.start()
            while restart.is_alive():
                stream(0.2)
            restart.join()
            back_at = time.monotonic()
            since = len(arrays)
            stream(4.0)
            resumed = [answered[s] for s, t in published.items() if t >= back_at and s in answered]
            assert resumed, node.log()[-3000:]
            first = min(resumed) - back_at
            print(f"first answer {first:.2f} s after the server's return")
            assert first <= 2.0
            ok = [
                s
                for s in statuses(since)
                if diagnostics.level_value(s.level) == diagnostics.OK
                and "processing at" in s.message
            ]
            assert ok, [(s.level, s.message) for s in statuses(since)]

            # Memory: a few more seconds of frames, then back within 20 MB of before the crash.
            stream(6.0)
            rss_after = node.rss_mb()
            print(f"node RSS {rss_before:.1f} MB before the crash, {rss_after:.1f} MB after")
            assert rss_after - rss_before <= 20.0
            log = node.log()
            assert "Traceback" not in log
            assert "inference server unreachable" in log
            assert node.interrupt() == 0
    finally:
        server.stop()
