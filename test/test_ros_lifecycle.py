"""pose_node as a managed (lifecycle) node, driven by `ros2 lifecycle set` over real DDS.

``managed:=true``: the node starts unconfigured and loads nothing; ``configure`` loads the model and
creates the publishers; ``activate`` subscribes and answers frames; ``deactivate`` stops answering
without unloading; ``cleanup`` unloads; ``shutdown`` works from any state. Each step is checked
from outside: the lifecycle state the CLI reports, the DDS graph (publishers of /poses,
subscribers of the image topic), answers to frames, and the node's log.
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image

from devtools.ros_harness import MANAGED_READY_PATTERN
from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import array_to_image_msg

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import Peer, make_header, pose_node, reliable, with_stamp

from ros2_tools import needs_ros2, ros2

pytestmark = [pytest.mark.ros, needs_ros2]

NAMESPACE = "/pose_test_lifecycle"
NODE = f"{NAMESPACE}/pose_node"
_stamps = itertools.count(5_000)


@pytest.fixture(scope="module")
def peer() -> Peer:
    peer = Peer("lifecycle_peer")
    yield peer
    peer.close()


def _parameters(checkpoint: Path | str, **extra: object) -> dict[str, object]:
    return {
        "model": checkpoint,
        "detector.backend": "full_image",
        "device": "cpu",
        "qos.reliability": "reliable",
        "managed": True,
        **extra,
    }


def _cli(tmp_path: Path, *args: str) -> str:
    """`ros2 lifecycle <args> --no-daemon` (no daemon left behind); its output."""
    result = ros2(["lifecycle", *args, "--no-daemon", "--spin-time", "5"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout
    return result.stdout


def _state(tmp_path: Path) -> str:
    output = _cli(tmp_path, "get", NODE)
    match = re.search(r"^(\w+) \[\d+\]", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def _set(tmp_path: Path, transition: str) -> str:
    return _cli(tmp_path, "set", NODE, transition)


def _answered(peer: Peer, publisher, poses: list, rgb: np.ndarray, timeout: float) -> bool:
    stamp = next(_stamps)
    msg = array_to_image_msg(rgb, "rgb8", header=make_header(stamp, "cam"))
    return peer.publish_until(
        lambda: publisher.publish(msg), lambda: bool(with_stamp(poses, stamp)), timeout=timeout
    )


def _track_ids(peer: Peer, publisher, poses: list, rgb: np.ndarray, frames: int) -> set[int]:
    """The track ids of the answers to ``frames`` frames (each answered before the next)."""
    ids: set[int] = set()
    for _ in range(frames):
        stamp = next(_stamps)
        msg = array_to_image_msg(rgb, "rgb8", header=make_header(stamp, "cam"))
        assert peer.publish_until(
            lambda m=msg: publisher.publish(m),
            lambda s=stamp: bool(with_stamp(poses, s)),
            timeout=30,
        )
        (answer,) = with_stamp(poses, stamp)
        ids.update(person.id for person in answer.persons if person.id >= 0)
    return ids


def _graph(peer: Peer) -> tuple[int, int]:
    """(publishers of the poses topic, subscribers of the image topic), after discovery settles."""
    peer.spin_for(1.5)
    return (
        peer.node.count_publishers(f"{NAMESPACE}/poses"),
        peer.node.count_subscribers(f"{NAMESPACE}/image"),
    )


def _wait_graph(peer: Peer, expected: tuple[int, int], timeout: float = 20.0) -> tuple[int, int]:
    def counts() -> tuple[int, int]:
        return (
            peer.node.count_publishers(f"{NAMESPACE}/poses"),
            peer.node.count_subscribers(f"{NAMESPACE}/image"),
        )

    peer.spin_until(lambda: counts() == expected, timeout)
    return counts()


def test_lifecycle_transitions_with_the_ros2_cli(
    peer: Peer, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    rgb = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    publisher = peer.node.create_publisher(Image, f"{NAMESPACE}/image", reliable(2))
    poses, _ = peer.collect(PersonPoseArray, f"{NAMESPACE}/poses", reliable())
    log_path = tmp_path / "pose_node.log"
    with pose_node(
        log_path, NAMESPACE, _parameters(tiny_checkpoint), ready_pattern=MANAGED_READY_PATTERN
    ) as node:
        # Unconfigured: nothing loaded, nothing published or subscribed.
        assert _state(tmp_path) == "unconfigured"
        assert "pose pipeline:" not in node.log()
        assert _graph(peer) == (0, 0)

        # configure: the model loads, the publishers exist, nothing is subscribed yet.
        assert "Transitioning successful" in _set(tmp_path, "configure")
        assert _state(tmp_path) == "inactive"
        assert node.log().count("pose pipeline:") == 1
        assert _wait_graph(peer, (1, 0)) == (1, 0)
        assert not _answered(peer, publisher, poses, rgb, timeout=3), "inactive must not answer"

        # activate: subscribed, frames answered.
        assert "Transitioning successful" in _set(tmp_path, "activate")
        assert _state(tmp_path) == "active"
        assert _wait_graph(peer, (1, 1)) == (1, 1)
        assert _answered(peer, publisher, poses, rgb, timeout=30), node.log()[-3000:]
        # The whole frame is one person (full_image): tracked, an id once confirmed.
        first_ids = _track_ids(peer, publisher, poses, rgb, 4)
        assert len(first_ids) == 1, first_ids

        # deactivate: unsubscribed, no answers, the model stays loaded.
        assert "Transitioning successful" in _set(tmp_path, "deactivate")
        assert _state(tmp_path) == "inactive"
        assert _wait_graph(peer, (1, 0)) == (1, 0)
        assert not _answered(peer, publisher, poses, rgb, timeout=3)
        # ... so activating again answers without loading anything.
        assert "Transitioning successful" in _set(tmp_path, "activate")
        assert _answered(peer, publisher, poses, rgb, timeout=30), node.log()[-3000:]
        assert node.log().count("pose pipeline:") == 1, "re-activation must not reload the model"

        # cleanup (from inactive): the model and the publishers go.
        _set(tmp_path, "deactivate")
        assert "Transitioning successful" in _set(tmp_path, "cleanup")
        assert _state(tmp_path) == "unconfigured"
        assert "model and detector unloaded" in node.log()
        assert _wait_graph(peer, (0, 0)) == (0, 0)

        # configure + activate again: loads anew and answers.
        _set(tmp_path, "configure")
        _set(tmp_path, "activate")
        assert node.log().count("pose pipeline:") == 2
        assert _answered(peer, publisher, poses, rgb, timeout=30), node.log()[-3000:]
        # A new model, new tracks, but never an id of before: ids are unique in the process.
        second_ids = _track_ids(peer, publisher, poses, rgb, 4)
        assert len(second_ids) == 1 and min(second_ids) > max(first_ids), (first_ids, second_ids)

        # shutdown straight from active.
        assert "Transitioning successful" in _set(tmp_path, "shutdown")
        assert _state(tmp_path) == "finalized"
        assert _wait_graph(peer, (0, 0)) == (0, 0)
        code = node.interrupt()
    log = node.log()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "Failed to publish" not in log, log[-3000:]


def test_configure_failure_keeps_the_node_alive_and_shutdown_from_unconfigured(
    peer: Peer, tmp_path: Path
) -> None:
    """A managed node whose weights are missing: configure fails with the clear message, the node
    stays unconfigured (a lifecycle manager may retry or give up), and shutdown works there."""
    missing = tmp_path / "no_such_weights.pt"
    with pose_node(
        tmp_path / "pose_node.log",
        NAMESPACE,
        _parameters(missing),
        ready_pattern=MANAGED_READY_PATTERN,
    ) as node:
        output = _set(tmp_path, "configure")
        assert "Transitioning failed" in output, output
        node.wait_for_log(r"\[ERROR\].*configure failed: cannot load the pose model", timeout=10)
        assert str(missing) in node.log()
        assert _state(tmp_path) == "unconfigured"
        assert node.process.poll() is None
        assert "Transitioning successful" in _set(tmp_path, "shutdown")
        assert _state(tmp_path) == "finalized"
        code = node.interrupt()
    assert code == 0, node.log()[-3000:]
    assert "Traceback" not in node.log()


def test_unmanaged_node_is_active_at_start(
    peer: Peer, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """managed:=false (the default): the same node, already active, and still a lifecycle node
    (a manager can deactivate it)."""
    with pose_node(
        tmp_path / "pose_node.log", NAMESPACE, _parameters(tiny_checkpoint, managed=False)
    ) as node:
        assert _state(tmp_path) == "active"
        assert "Transitioning successful" in _set(tmp_path, "deactivate")
        assert _wait_graph(peer, (1, 0)) == (1, 0)
        code = node.interrupt()
    assert code == 0, node.log()[-3000:]
