"""The ros2 command line against a running pose_node, as a user inspects it: `ros2 topic echo`,
`ros2 param describe/get/set` (accepted and refused changes), `ros2 node info` and
`ros2 interface show`. Every call uses --no-daemon (a daemon left running keeps DDS ports and
CPU), and the last test checks that none was started.

One node for the module: the installed executable with a tiny real checkpoint and the
`full_image` detector, fed a small drawn frame (the demo's figure) over real DDS (loopback).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ros2_tools import NO_DAEMON, NOT_DISCOVERED, cli, needs_ros2, ros2, tools_env

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import Peer, make_header, pose_node

pytestmark = [pytest.mark.ros, needs_ros2]

NS = "/cli_test"
NODE = f"{NS}/pose_node"
FRAME_ID = "cli_camera_optical_frame"


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ros2_cli")


@pytest.fixture(scope="module")
def node(log_dir: Path, tiny_checkpoint: Path):
    parameters = {
        "model": tiny_checkpoint,
        "detector.backend": "full_image",
        "device": "cpu",
        "debug_image.enabled": False,
    }
    with pose_node(log_dir / "pose_node.log", NS, parameters) as process:
        yield process


@pytest.fixture(scope="module")
def peer():
    peer = Peer("cli_test_peer")
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def frame_msg():
    """The demo's drawn figure, 160 x 106 rgb8 (fits DDS shared memory: the node's best-effort
    subscription gets it whole; no test data needed)."""
    from pose_ros.demo_scene import figure_keypoints, render_figure
    from pose_ros.ros.conversions import array_to_image_msg

    rgb = render_figure(figure_keypoints(0.0, 160, 106), 160, 106)
    return array_to_image_msg(rgb, "rgb8", header=make_header(777, FRAME_ID))


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def test_interface_show_prints_the_message_definition(log_dir: Path) -> None:
    text = _ok(ros2(["interface", "show", "pose_ros/msg/PersonPoseArray"], log_dir))
    lines = [line.strip() for line in text.splitlines()]
    for field in (
        "std_msgs/Header header",
        "uint32 image_width",
        "uint32 image_height",
        "PersonPose[] persons",
        "Keypoint[17] keypoints",
        "uint8 RIGHT_ANKLE=16",
        "geometry_msgs/Point position",
    ):
        assert field in lines, f"{field!r} not in:\n{text}"


def test_topic_echo_once_prints_one_answer(log_dir: Path, node, peer: Peer, frame_msg) -> None:
    from pose_node_harness import reliable
    from sensor_msgs.msg import Image

    publisher = peer.node.create_publisher(Image, f"{NS}/image", reliable(2))
    deadline = time.monotonic() + 90.0
    while True:
        echo = subprocess.Popen(
            ["ros2", "topic", "echo", "--once", *NO_DAEMON, f"{NS}/poses"],
            env=tools_env(log_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # Keep feeding frames until echo has found the topic and printed one answer.
            while echo.poll() is None and time.monotonic() < deadline:
                publisher.publish(frame_msg)
                peer.spin_for(0.5)
        finally:
            if echo.poll() is None:
                echo.kill()
        output = echo.communicate()[0]
        discovered = not any(words in output for words in NOT_DISCOVERED)
        if discovered or time.monotonic() > deadline:
            break
    assert echo.returncode == 0, f"{output[-3000:]}\nnode log:\n{node.log()[-3000:]}"
    message = yaml.safe_load(output.split("---")[0])
    assert message["header"]["frame_id"] == FRAME_ID
    assert message["header"]["stamp"]["sec"] == 777
    assert (message["image_width"], message["image_height"]) == (160, 106)
    (person,) = message["persons"]  # full_image: the whole frame is one person
    assert len(person["keypoints"]) == 17
    assert {"x", "y", "score"} <= set(person["keypoints"][0])


def test_node_info_lists_the_node_interfaces(log_dir: Path, node) -> None:
    text = _ok(cli(["node", "info", *NO_DAEMON, NODE], log_dir))
    sections = {}
    current = None
    for line in text.splitlines():
        if line.strip().endswith(":") and line.startswith("  ") and not line.startswith("    "):
            current = line.strip()[:-1]
            sections[current] = []
        elif current and line.startswith("    "):
            sections[current].append(line.strip())
    assert f"{NS}/image: sensor_msgs/msg/Image" in sections["Subscribers"], text
    assert f"{NS}/camera_info: sensor_msgs/msg/CameraInfo" in sections["Subscribers"], text
    assert f"{NS}/poses: pose_ros/msg/PersonPoseArray" in sections["Publishers"], text
    assert f"{NS}/poses/markers: visualization_msgs/msg/MarkerArray" in sections["Publishers"]
    assert (
        f"{NODE}/set_parameters: rcl_interfaces/srv/SetParameters" in sections["Service Servers"]
    ), text


def test_param_describe_shows_descriptions_ranges_and_read_only(log_dir: Path, node) -> None:
    from pose_ros.ros import params

    text = _ok(
        ros2(
            ["param", "describe", *NO_DAEMON, NODE, "detector.score_threshold", "device"],
            log_dir,
        )
    )
    threshold, device = text.split("Parameter name: ")[1:]
    assert threshold.startswith("detector.score_threshold")
    assert "Type: double" in threshold
    assert params.SPECS["detector.score_threshold"].description in threshold
    assert "Min value: 0.0" in threshold and "Max value: 1.0" in threshold
    assert "Read only" not in threshold
    assert device.startswith("device") and "Type: string" in device
    assert "Read only: true" in device


def test_param_set_accepts_and_refuses_visibly(log_dir: Path, node) -> None:
    def get(name: str) -> str:
        return _ok(cli(["param", "get", *NO_DAEMON, NODE, name], log_dir)).strip()

    def set_(name: str, value: str) -> str:
        return cli(["param", "set", *NO_DAEMON, NODE, name, value], log_dir).stdout.strip()

    assert get("detector.score_threshold") == "Double value is: 0.5"
    assert set_("detector.score_threshold", "0.7") == "Set parameter successful"
    assert get("detector.score_threshold") == "Double value is: 0.7"

    refused = set_("detector.score_threshold", "1.5")
    assert refused.startswith("Setting parameter failed"), refused
    assert "1.5" in refused and "1.0" in refused, refused  # says why: the range
    read_only = set_("device", "cuda")
    assert read_only.startswith("Setting parameter failed") and "read-only" in read_only
    wrong_type = set_("max_persons", "many")
    assert wrong_type.startswith("Setting parameter failed"), wrong_type

    # None of the refused values arrived (one dump instead of a `get` per name).
    dump = yaml.safe_load(_ok(cli(["param", "dump", *NO_DAEMON, NODE], log_dir)))
    values = dump[NODE]["ros__parameters"]
    assert values["detector"]["score_threshold"] == 0.7
    assert values["device"] == "cpu"
    assert values["max_persons"] == 20
    # The node still runs after the refusals.
    assert node.process.poll() is None, node.log()[-3000:]


def test_no_ros2_daemon_was_left_running(log_dir: Path) -> None:
    text = ros2(["daemon", "status"], log_dir).stdout
    assert "The daemon is not running" in text, text
