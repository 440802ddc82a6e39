"""Several cameras in one pose_node (``cameras:=[front, left, right]``): each camera's topics under
its name, the crops of all cameras in one pose-network call per cycle, per-camera status and
diagnostics, and one camera's bad frame or silence costing only that camera.

The installed executable in its own process, real DDS (loopback), the tiny real checkpoint and the
"full_image" detector (one person box per frame: every frame calls the network).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, Image

from devtools.ros_harness import loopback_large_images_profile
from pose_ros.camera import PinholeCamera
from pose_ros.demo_scene import demo_frames
from pose_ros.msg import PersonPoseArray
from pose_ros.ros import diagnostics
from pose_ros.ros.camera_stream import camera_names, camera_names_problem
from pose_ros.ros.conversions import array_to_image_msg, depth_array_to_msg

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import Peer, make_header, pose_node, reliable, run_node_to_exit, with_stamp

NAMESPACE = "/pose_test_cameras"
CAMERAS = ("front", "left", "right")
_stamps = itertools.count(5_000)


def test_camera_names_are_checked() -> None:
    assert camera_names(["front", "arm/left"]) == ["front", "arm/left"]
    assert camera_names("[front, 'left']") == camera_names("front,left") == ["front", "left"]
    assert camera_names("") == camera_names("[]") == []
    assert camera_names_problem(["front", "arm/left", "rear_2"]) is None
    assert camera_names_problem("") is None and camera_names_problem("front, left") is None
    assert "must be a list of names" in camera_names_problem(5)
    assert "named more than once" in camera_names_problem(["front", "left", "front"])
    for bad in ("9lives", "front/", "/front", "a b", ""):
        assert "not a valid name" in camera_names_problem(["front", bad]), bad
    assert "at most 16" in camera_names_problem([f"cam{i}" for i in range(17)])


@pytest.fixture(scope="module")
def frames(coco_dir: Path) -> dict[str, np.ndarray]:
    """Each camera its own picture and size (answers must come back on the right camera's topic):
    a COCO image at half size, its mirror image, and a crop of it. Under Fast DDS's 0.5 MB
    shared-memory segment: larger frames travel as UDP fragments, whose losses are repaired on
    the next heartbeat (seconds later), and the arrival times would be the transport's, not the
    cameras'."""
    bgr = cv2.imread(str(coco_dir / "000000000785.jpg"))
    assert bgr is not None
    rgb = np.ascontiguousarray(cv2.resize(bgr, (320, 212), interpolation=cv2.INTER_AREA)[..., ::-1])
    return {
        "front": rgb,
        "left": np.ascontiguousarray(rgb[:, ::-1]),
        "right": np.ascontiguousarray(rgb[20:180, 50:170]),
    }


def _image(camera: str, pixels: np.ndarray, stamp: int) -> Image:
    return array_to_image_msg(pixels, "rgb8", header=make_header(stamp, f"{camera}_optical_frame"))


def _status_values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _node_statuses(array: DiagnosticArray) -> dict[str, DiagnosticStatus]:
    """camera name -> its status, for this node's statuses in one /diagnostics message."""
    return {
        _status_values(status).get("camera", ""): status
        for status in array.status
        if status.name.startswith(f"pose_node: {NAMESPACE}/")
    }


def _counts_when(peer: Peer, arrays: list, processed: int, timeout: float = 30.0) -> int:
    """The node's pose-network calls, read from the first /diagnostics message (received from
    now on) whose cameras together have processed ``processed`` frames."""
    start = len(arrays)

    def calls() -> int | None:
        for array in arrays[start:]:
            statuses = _node_statuses(array)
            if set(statuses) != set(CAMERAS):
                continue
            values = [_status_values(s) for s in statuses.values()]
            if sum(int(v["frames processed"]) for v in values) == processed:
                return int(values[0]["pose network calls (node)"])
        return None

    assert peer.spin_until(lambda: calls() is not None, timeout), (
        f"no /diagnostics with {processed} frames processed; last: "
        f"{[(s.name, _status_values(s)['frames processed']) for s in arrays[-1].status]}"
    )
    return calls()


@pytest.mark.ros
def test_three_cameras_one_network_call_per_cycle(
    tiny_checkpoint: Path, frames: dict[str, np.ndarray], tmp_path: Path
) -> None:
    peer = Peer("cameras_peer")
    parameters = {
        "model": tiny_checkpoint,
        "detector.backend": "full_image",
        "device": "cpu",
        "cameras": f"[{','.join(CAMERAS)}]",
        # Long enough that three frames published together always share a cycle on a loaded
        # machine; the default (20 ms) suits cameras on one clock.
        "batch_wait_sec": 0.5,
        "qos.reliability": "reliable",  # every frame reaches the node (see test_ros_node.py)
        "use_camera_info": False,
        "no_input_warning_sec": 1.0,
        "log_period_sec": 1.0,
    }
    try:
        arrays, _ = peer.collect(DiagnosticArray, "/diagnostics", reliable())
        publishers = {
            camera: peer.node.create_publisher(Image, f"{NAMESPACE}/{camera}/image", reliable(2))
            for camera in CAMERAS
        }
        answers = {
            camera: peer.collect(PersonPoseArray, f"{NAMESPACE}/{camera}/poses", reliable())[0]
            for camera in CAMERAS
        }
        with pose_node(tmp_path / "pose_node.log", NAMESPACE, parameters) as node:
            log_start = node.log_size()
            assert "3 cameras, their crops in one pose-network batch" in node.log()

            def cycle(cameras=CAMERAS, timeout: float = 30.0) -> int:
                """One frame on each camera, published together; waits for every answer."""
                stamp = next(_stamps)
                for camera in cameras:
                    publishers[camera].publish(_image(camera, frames[camera], stamp))
                answered = peer.spin_until(
                    lambda: all(with_stamp(answers[c], stamp) for c in cameras), timeout
                )
                assert answered, f"frame {stamp} not answered by all of {cameras}:\n{node.log()}"
                return stamp

            # Warm-up: until discovery has matched all three and every camera has been answered,
            # then twice together (the node then expects all three in each cycle).
            assert peer.spin_until(
                lambda: all(p.get_subscription_count() for p in publishers.values()), 30
            )
            for _ in range(3):
                cycle()
            processed = sum(len(a) for a in answers.values())
            calls_before = _counts_when(peer, arrays, processed)

            cycles = 6
            stamps = [cycle() for _ in range(cycles)]
            calls_after = _counts_when(peer, arrays, processed + 3 * cycles)
            assert calls_after - calls_before == cycles, (
                f"{calls_after - calls_before} pose-network calls for {cycles} cycles of "
                f"{len(CAMERAS)} cameras (one per cycle expected)"
            )
            # Each answer on its camera's topic, for its camera's frame.
            for camera in CAMERAS:
                height, width = frames[camera].shape[:2]
                for stamp in stamps:
                    (answer,) = with_stamp(answers[camera], stamp)
                    assert answer.header.frame_id == f"{camera}_optical_frame"
                    assert (answer.image_width, answer.image_height) == (width, height)
                    assert len(answer.persons) == 1

            # A bad frame on one camera costs that frame only: the others share the next batch.
            stamp = next(_stamps)
            bad = _image("left", frames["left"], stamp)
            bad.step = bad.step - 3  # a row step shorter than a row
            publishers["left"].publish(bad)
            for camera in ("front", "right"):
                publishers[camera].publish(_image(camera, frames[camera], stamp))
            assert peer.spin_until(
                lambda: all(with_stamp(answers[c], stamp) for c in ("front", "right")), 30
            )
            assert not with_stamp(answers["left"], stamp)

            # 'right' stops: its status warns, the others stay OK and keep being answered.
            def stopped_right() -> dict[str, DiagnosticStatus] | None:
                for array in reversed(arrays):
                    statuses = _node_statuses(array)
                    right = statuses.get("right")
                    if right is not None and "has the camera stopped" in right.message:
                        return statuses
                return None

            deadline_cycles = 0
            while stopped_right() is None and deadline_cycles < 40:
                cycle(("front", "left"))
                peer.spin_for(0.1)
                deadline_cycles += 1
            statuses = stopped_right()
            assert statuses is not None, f"no WARN for the silent camera:\n{node.log()[-3000:]}"
            assert diagnostics.level_value(statuses["right"].level) == diagnostics.WARN
            assert statuses["right"].name == f"pose_node: {NAMESPACE}/right/image"
            for camera in ("front", "left"):
                level = diagnostics.level_value(statuses[camera].level)
                assert level == diagnostics.OK, (camera, statuses[camera].message)
            left = _status_values(statuses["left"])
            assert int(left["bad frames"]) == 1 and left["cameras in node"] == "3"

            log = node.log(log_start)
            for camera in CAMERAS:  # a status line per camera
                assert re.search(rf"\[{camera}\] .*frames in", log), log[-3000:]
            assert f"no frame on {NAMESPACE}/right/image" in log, log[-3000:]
            assert "bad frame on " + f"{NAMESPACE}/left/image" in log, log[-3000:]
            code = node.interrupt()
        log = node.log()
        assert code == 0 and "Traceback" not in log, log[-3000:]
        assert "3 cameras, " in log and "pose-network batches" in log, log[-1000:]
    finally:
        peer.close()


@pytest.mark.ros
@pytest.mark.parametrize(
    ("cameras", "words"),
    [
        ("[front,left,front]", "cameras: front named more than once"),
        ("[front,9lives]", "'9lives' is not a valid name"),
    ],
    ids=["repeated", "bad-name"],
)
def test_bad_cameras_parameter_stops_the_node(tiny_checkpoint: Path, cameras, words) -> None:
    result = run_node_to_exit(
        "/pose_test_bad",
        {"model": tiny_checkpoint, "detector.backend": "full_image", "cameras": cameras},
    )
    assert result.returncode == 1, result.stdout
    assert "[FATAL]" in result.stdout and words in result.stdout, result.stdout
    assert "Traceback" not in result.stdout, result.stdout


@pytest.mark.ros
def test_each_camera_its_own_calibration_and_depth(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """use_depth with two cameras: each camera's keypoints are back-projected through its own
    camera_info and its own depth image (another K and another distance per camera)."""

    width, height = 320, 240  # every message under Fast DDS's shared-memory segment
    cameras = {
        "front": (
            PinholeCamera(fx=262.5, fy=260.0, cx=159.5, cy=120.5, width=320, height=240),
            2.0,
        ),
        "left": (PinholeCamera(fx=410.0, fy=405.0, cx=150.0, cy=110.0, width=320, height=240), 3.5),
    }
    ((picture, _),) = list(demo_frames(1, width=width, height=height))
    namespace = "/pose_test_cameras_depth"
    parameters = {
        "model": tiny_checkpoint,
        "detector.backend": "full_image",
        "device": "cpu",
        "cameras": "[front, left]",
        "use_depth": True,
        "qos.reliability": "reliable",
    }
    peer = Peer("cameras_depth_peer")
    try:
        io = {
            name: (
                peer.node.create_publisher(Image, f"{namespace}/{name}/image", reliable(2)),
                peer.node.create_publisher(Image, f"{namespace}/{name}/depth", reliable(2)),
                peer.node.create_publisher(CameraInfo, f"{namespace}/{name}/camera_info", 10),
                peer.collect(PersonPoseArray, f"{namespace}/{name}/poses", reliable())[0],
            )
            for name in cameras
        }
        with pose_node(tmp_path / "pose_node.log", namespace, parameters) as node:
            for name, (camera, _) in cameras.items():
                image_pub, depth_pub, info_pub, _ = io[name]
                assert peer.spin_until(
                    lambda p=(image_pub, depth_pub, info_pub): all(
                        x.get_subscription_count() for x in p
                    ),
                    30,
                )
                info = CameraInfo(
                    header=make_header(0, f"{name}_frame"), width=width, height=height
                )
                info.k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
                start = node.log_size()
                node.wait_for_log(
                    rf"\[{name}\] camera_info received",
                    start=start,
                    timeout=30,
                    while_waiting=lambda p=info_pub, i=info: (p.publish(i), peer.spin_for(0.3)),
                )
            for name, (camera, metres) in cameras.items():
                image_pub, depth_pub, _, answers = io[name]
                stamp = next(_stamps)
                depth = depth_array_to_msg(np.full((height, width), metres, np.float32), "32FC1")
                depth.header = make_header(stamp, f"{name}_frame")
                colour = array_to_image_msg(
                    picture, "rgb8", header=make_header(stamp, f"{name}_frame")
                )

                def publish(d=depth, c=colour, dp=depth_pub, ip=image_pub) -> None:
                    dp.publish(d)
                    ip.publish(c)

                assert peer.publish_until(
                    publish, lambda a=answers, s=stamp: bool(with_stamp(a, s)), timeout=30
                ), node.log()[-3000:]
                (person,) = with_stamp(answers, stamp)[0].persons
                uv = np.array([[k.x, k.y] for k in person.keypoints], np.float64)
                xyz = np.array(
                    [[k.position.x, k.position.y, k.position.z] for k in person.keypoints]
                )
                assert all(k.has_position for k in person.keypoints), name
                np.testing.assert_allclose(xyz, camera.back_project(uv, metres), atol=1e-4)
    finally:
        peer.close()


_PROFILE_PEER = """
import sys, time, numpy as np
from sensor_msgs.msg import Image
from pose_ros.ros.conversions import array_to_image_msg
from devtools.ros_harness import Peer, reliable
peer = Peer("profile_check_" + sys.argv[1])
if sys.argv[1] == "sub":
    got = []
    peer.node.create_subscription(Image, "/profile_check/image", got.append, reliable(2))
    peer.spin_until(lambda: bool(got), 60)
    print("received", len(got[0].data) if got else 0, flush=True)
else:
    pub = peer.node.create_publisher(Image, "/profile_check/image", reliable(2))
    msg = array_to_image_msg(np.zeros((480, 640, 3), np.uint8), "rgb8")
    for _ in range(300):
        pub.publish(msg)
        peer.spin_for(0.2)
peer.close()
"""


@pytest.mark.ros
def test_large_image_dds_profile_is_valid_fast_dds_xml(tmp_path: Path) -> None:
    """The shipped Fast DDS profile (its loopback copy, as the benchmark uses it) loads without a
    parser complaint, and a 0.9 MB frame goes through it from one process to another."""
    profile = loopback_large_images_profile(tmp_path)
    env = {**os.environ, "FASTRTPS_DEFAULT_PROFILES_FILE": str(profile)}
    logs = {role: tmp_path / f"{role}.log" for role in ("sub", "pub")}
    processes = {
        role: subprocess.Popen(
            [sys.executable, "-c", _PROFILE_PEER, role],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for role, log in logs.items()
    }
    try:
        processes["sub"].wait(timeout=90)
    finally:
        for process in processes.values():
            process.kill()
            process.wait()
    output = {role: log.read_text() for role, log in logs.items()}
    assert "received 921600" in output["sub"], output
    for text in output.values():
        for complaint in ("XMLPARSER", "Error", "error"):
            assert complaint not in text, output
