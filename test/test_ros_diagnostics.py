"""/diagnostics of pose_node: the judgement (pose_ros.ros.diagnostics.assess) on constructed
snapshots, then the node itself over real DDS: WARN before the first frame, OK while frames are
answered, WARN again after the camera stopped (with the same words in the log), ERROR while every
frame is bad, OK once good frames return, ERROR for random weights."""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image

from pose_ros.ros import diagnostics
from pose_ros.ros.conversions import array_to_image_msg
from pose_ros.ros.stats import NodeStats, Recent, Totals

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import Peer, make_header, pose_node, reliable

NAMESPACE = "/pose_test_diag"
_stamps = itertools.count(7_000)


# --- the judgement, without ROS ---


def _recent(**counts: float) -> Recent:
    fields = {"received": 0, "processed": 0, "dropped": 0, "bad": 0, "failed": 0}
    fields.update({k: v for k, v in counts.items() if k in fields})
    return Recent(
        seconds=5.0,
        latency_ms=tuple(counts.get("latency_ms", ())),
        last_received=counts.get("last_received"),
        last_processed=None,
        **fields,
    )


def _health(**overrides: object) -> diagnostics.InputHealth:
    values: dict[str, object] = {
        "node_name": "pose_node",
        "input_topic": "/cam/image",
        "input_type": "raw",
        "lifecycle_state": "active",
        "recent": _recent(received=50, processed=50, latency_ms=[10.0] * 50, last_received=99.0),
        "totals": Totals(received=500, processed=480, dropped=20),
        "seconds_without_input": 0.1,
        "no_input_warning_sec": 5.0,
        "publishers": 1,
        "model": "mmpose_res50_coco_256x192",
        "device": "cpu",
        "detector": "TorchvisionDetector",
        "random_weights": False,
    }
    values.update(overrides)
    return diagnostics.InputHealth(**values)  # type: ignore[arg-type]


def test_processing_is_ok_with_its_rate() -> None:
    level, message = diagnostics.assess(_health())
    assert level == diagnostics.OK
    assert message == "processing at 10.0 Hz"


def test_no_frame_before_the_first_one_is_a_warning_naming_the_cause() -> None:
    never = _recent()
    level, message = diagnostics.assess(
        _health(recent=never, seconds_without_input=6.0, publishers=0)
    )
    assert level == diagnostics.WARN
    assert message.startswith("no publisher on /cam/image after 6 s")
    level, message = diagnostics.assess(
        _health(recent=never, seconds_without_input=6.0, publishers=2)
    )
    assert level == diagnostics.WARN
    assert "2 publisher(s) on /cam/image but no frame received" in message
    # Not yet past no_input_warning_sec: fine.
    level, _ = diagnostics.assess(_health(recent=never, seconds_without_input=4.0))
    assert level == diagnostics.OK


def test_frames_that_stopped_are_a_warning() -> None:
    stopped = _recent(last_received=10.0)  # frames came once, none in the window
    level, message = diagnostics.assess(_health(recent=stopped, seconds_without_input=12.0))
    assert level == diagnostics.WARN
    assert "no frame on /cam/image for 12 s after 500 received" in message
    assert "camera stopped" in message


def test_every_recent_frame_failing_is_an_error() -> None:
    failing = _recent(received=30, bad=20, failed=10, last_received=99.0)
    level, message = diagnostics.assess(_health(recent=failing))
    assert level == diagnostics.ERROR
    assert "every frame of the last 5 s failed (20 bad, 10 failed" in message
    # One answered frame in the window: not "every frame".
    mixed = _recent(received=30, processed=1, bad=29, last_received=99.0)
    assert diagnostics.assess(_health(recent=mixed))[0] == diagnostics.OK


def test_random_weights_are_an_error_whatever_else_holds() -> None:
    level, message = diagnostics.assess(_health(random_weights=True))
    assert level == diagnostics.ERROR
    assert message.startswith("RANDOM WEIGHTS")
    assert "processing at 10.0 Hz" in message


def test_a_pose_network_that_does_not_answer_is_an_error() -> None:
    """engine triton: the estimator's inference_problem while its server does not answer."""
    problem = "inference server unreachable: grpc://gpu-server:8001"
    failing = _recent(received=30, failed=30, last_received=99.0)
    level, message = diagnostics.assess(_health(recent=failing, inference_problem=problem))
    assert level == diagnostics.ERROR
    assert message.startswith(problem) and "every frame of the last 5 s failed" in message
    status = diagnostics.build_status(_health(inference_problem=problem), hardware_id="cpu")
    assert {kv.key: kv.value for kv in status.values}["inference problem"] == problem
    # Not active: nothing is expected of the server.
    level, _ = diagnostics.assess(
        _health(lifecycle_state="inactive", seconds_without_input=None, inference_problem=problem)
    )
    assert level == diagnostics.OK


def test_an_inactive_node_is_ok_and_says_its_state() -> None:
    level, message = diagnostics.assess(
        _health(lifecycle_state="inactive", seconds_without_input=None, recent=_recent())
    )
    assert level == diagnostics.OK
    assert message == "not processing: lifecycle state inactive"


def test_status_follows_diagnostic_updater_conventions() -> None:
    status = diagnostics.build_status(_health(), hardware_id="cuda:0")
    assert status.name == "pose_node: /cam/image"
    assert status.hardware_id == "cuda:0"
    assert diagnostics.level_value(status.level) == diagnostics.OK
    values = {kv.key: kv.value for kv in status.values}
    assert values["input rate (Hz)"] == "10.0"
    assert values["latency p50 (ms)"] == "10.0" and values["latency p90 (ms)"] == "10.0"
    assert (values["dropped"], values["model"], values["random weights"]) == (
        "20",
        "mmpose_res50_coco_256x192",
        "false",
    )


def test_the_pose_networks_precision_is_in_the_log_the_status_line_and_diagnostics(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """An int8 export says int8 (not the fp32 of the graph it came from) wherever the node
    describes its model: the start-up log line (PoseEstimator.describe), the status line and the
    /diagnostics key "precision"; read from the estimator the node holds."""
    from pose_ros.models import load_pose_model
    from pose_ros.pipeline import PoseEstimator
    from pose_ros.ros.stats import format_status, network_precision
    from pose_ros.runtime import OnnxPoseRunner, export_onnx, quantize_int8

    model = load_pose_model(tiny_checkpoint)
    fp32 = export_onnx(model, tmp_path / "tiny.onnx")
    crops = np.random.default_rng(0).normal(size=(8, 3, *model.input_size)).astype(np.float32)
    int8 = quantize_int8(fp32, tmp_path / "tiny.int8.onnx", crops)
    estimators = {
        "fp32": PoseEstimator(OnnxPoseRunner(fp32, device="cpu"), device="cpu"),
        "int8": PoseEstimator(OnnxPoseRunner(int8, device="cpu"), device="cpu"),
    }
    for precision, estimator in estimators.items():
        assert f" on onnxruntime cpu {precision}, " in estimator.describe()
        assert network_precision(estimator) == precision
        stats = NodeStats(now=0.0)
        stats.frame_received(False, now=0.5)
        stats.frame_processed(latency_ms=20.0, pipeline_ms=18.0, persons=1, now=0.5)
        line = format_status(stats.take_window(1.0), precision=network_precision(estimator))
        assert line is not None and line.startswith(f"pose network {precision} | frames in 1")
        health = _health(model=str(int8), precision=network_precision(estimator))
        values = {kv.key: kv.value for kv in diagnostics.build_status(health, "cpu").values}
        assert values["precision"] == precision
    # PyTorch eager on the CPU computes in fp32; no estimator yet (unconfigured): n/a.
    assert network_precision(PoseEstimator(model, device="cpu")) == "fp32"
    assert network_precision(None) == "n/a"


def test_stats_recent_window_slides() -> None:
    stats = NodeStats(now=0.0)
    for t in range(10):
        stats.frame_received(False, now=float(t))
        stats.frame_processed(latency_ms=float(t), pipeline_ms=1.0, persons=1, now=float(t))
    recent = stats.recent(now=9.5, seconds=5.0)
    assert (recent.received, recent.processed) == (5, 5)  # t = 5..9
    assert recent.latency_ms == (5.0, 6.0, 7.0, 8.0, 9.0)
    assert recent.last_received == 9.0
    assert stats.recent(now=100.0, seconds=5.0).received == 0
    assert stats.totals.received == 10


# --- the node over DDS ---


@pytest.fixture(scope="module")
def peer() -> Peer:
    peer = Peer("diagnostics_peer")
    yield peer
    peer.close()


def _statuses(arrays: list[DiagnosticArray], name: str) -> list[DiagnosticStatus]:
    return [s for a in arrays for s in a.status if s.name == name]


def _wait_status(
    peer: Peer,
    arrays: list,
    name: str,
    level: int,
    words: str,
    timeout: float,
    start: int | None = None,
):
    """The first status of ``name`` at ``level`` whose message holds ``words``, among the arrays
    received from index ``start`` (default: from now on), spinning meanwhile."""
    start = len(arrays) if start is None else start

    def found() -> DiagnosticStatus | None:
        for array in arrays[start:]:
            for status in array.status:
                if (
                    status.name == name
                    and diagnostics.level_value(status.level) == level
                    and words in status.message
                ):
                    return status
        return None

    peer.spin_until(lambda: found() is not None, timeout)
    status = found()
    seen = [(diagnostics.level_name(s.level), s.message) for s in _statuses(arrays[start:], name)]
    assert status is not None, f"no {diagnostics.level_name(level)} with {words!r}; saw {seen}"
    return status


@pytest.mark.ros
def test_node_diagnostics_over_dds(peer: Peer, tiny_checkpoint: Path, tmp_path: Path) -> None:
    arrays, _ = peer.collect(DiagnosticArray, "/diagnostics", reliable())
    publisher = peer.node.create_publisher(Image, f"{NAMESPACE}/image", reliable(2))
    name = f"pose_node: {NAMESPACE}/image"
    parameters = {
        "model": tiny_checkpoint,
        "detector.backend": "full_image",
        "device": "cpu",
        "qos.reliability": "reliable",
        "no_input_warning_sec": 1.0,
    }
    rgb = np.random.default_rng(5).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    bad = Image(header=make_header(1, "cam"), width=64, height=48, encoding="rgb8", step=10)
    bad.data = bytes(480)  # step smaller than a row: refused as bad input

    def feed(frame_factory, seconds: float, rate: float = 10.0) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            publisher.publish(frame_factory())
            peer.spin_for(1.0 / rate)

    def good() -> Image:
        return array_to_image_msg(rgb, "rgb8", header=make_header(next(_stamps), "cam"))

    with pose_node(tmp_path / "pose_node.log", NAMESPACE, parameters) as node:
        # Before any frame: WARN, the status named as diagnostic_updater names it.
        status = _wait_status(peer, arrays, name, diagnostics.WARN, "after", timeout=30)
        assert "on /pose_test_diag/image" in status.message
        assert status.hardware_id == "cpu"

        # Frames answered: OK with the rates and latencies.
        start = len(arrays)
        feed(good, 4.0)
        status = _wait_status(
            peer, arrays, name, diagnostics.OK, "processing at", timeout=5, start=start
        )
        values = {kv.key: kv.value for kv in status.values}
        assert float(values["input rate (Hz)"]) > 0 and float(values["processed rate (Hz)"]) > 0
        assert float(values["latency p50 (ms)"]) > 0
        assert float(values["latency p90 (ms)"]) >= float(values["latency p50 (ms)"])
        assert values["model"] == str(tiny_checkpoint) and values["random weights"] == "false"
        # The node names its pose network's precision (the CPU's ONNX Runtime export: fp32) in
        # /diagnostics and at the start of its status line.
        assert values["precision"] == "fp32", values
        node.wait_for_log(r"pose network fp32 \| frames in [1-9]", timeout=15)

        # The camera stops: WARN again, and the log says the same (it used to go silent).
        log_start = node.log_size()
        status = _wait_status(peer, arrays, name, diagnostics.WARN, "camera stopped", timeout=10)
        assert f"no frame on {NAMESPACE}/image for" in status.message
        node.wait_for_log(
            rf"\[WARN\].*no frame on {NAMESPACE}/image for \d+ s after \d+ received: has the "
            "camera stopped",
            start=log_start,
            timeout=10,
        )

        # Only bad frames: ERROR.
        start = len(arrays)
        feed(lambda: bad, 6.5)
        _wait_status(
            peer, arrays, name, diagnostics.ERROR, "every frame of the last", 5, start=start
        )

        # Good frames again: OK, and the log says frames are back.
        start = len(arrays)
        feed(good, 6.5)
        _wait_status(peer, arrays, name, diagnostics.OK, "processing at", timeout=5, start=start)
        assert f"frames arriving again on {NAMESPACE}/image" in node.log(log_start)

        # About 1 Hz.
        stamps = [
            a.header.stamp.sec + a.header.stamp.nanosec * 1e-9
            for a in arrays
            if any(s.name == name for s in a.status)
        ]
        periods = np.diff(stamps)
        assert 0.8 < float(np.median(periods)) < 1.2, periods


@pytest.mark.ros
def test_random_weights_are_an_error_on_diagnostics(peer: Peer, tmp_path: Path) -> None:
    arrays, _ = peer.collect(DiagnosticArray, "/diagnostics", reliable())
    namespace = "/pose_test_diag_random"
    parameters = {
        "model": "random:simplebaseline_res18",
        "allow_random_weights": True,
        "detector.backend": "full_image",
        "device": "cpu",
    }
    with pose_node(tmp_path / "pose_node.log", namespace, parameters):
        status = _wait_status(
            peer, arrays, f"pose_node: {namespace}/image", diagnostics.ERROR, "RANDOM", timeout=30
        )
        values = {kv.key: kv.value for kv in status.values}
        assert values["random weights"] == "true"
