"""pose-ros-infer --bag on recordings written by the tests with rosbags: several cameras (raw,
compressed, RGB-D), corrupt frames, both storages, refusals, Ctrl-C; the output read back with two
independent readers (rosbags, and the mcap library with mcap-ros2-support)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from recordings import CameraSpec, write_recording
from rosbags.highlevel import AnyReader

from pose_ros.demo_scene import FIGURE_DISTANCE_M, WALL_DISTANCE_M
from pose_ros.recording import Recording, RecordingError, depth_candidates, image_namespace

IMAGE_TYPE = "sensor_msgs/msg/Image"
FAST = ("--detector", "full_image", "--device", "cpu", "--cpu-threads", "1")


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pose_ros.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_with_rosbags(path: Path) -> dict[str, list]:
    """topic → [(log time, message)] of a recording, decoded by rosbags from its own definitions."""
    topics: dict[str, list] = defaultdict(list)
    with AnyReader([path]) as reader:
        for connection, log_time, raw in reader.messages():
            topics[connection.topic].append((log_time, reader.deserialize(raw, connection.msgtype)))
    return topics


def read_with_mcap(path: Path) -> dict[str, list]:
    """topic → [decoded message] of an MCAP file, decoded by mcap-ros2-support."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    topics: dict[str, list] = defaultdict(list)
    with open(path, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for _, channel, _, decoded in reader.iter_decoded_messages(log_time_order=True):
            topics[channel.topic].append(decoded)
    return topics


def stamp_of(msg) -> tuple[int, str]:
    return (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, msg.header.frame_id)


@pytest.fixture(scope="module")
def three_camera_bag(tmp_path_factory: pytest.TempPathFactory):
    """60 frames of each of three cameras: rgb8 with repeated stamps, JPEG with one corrupt
    frame, and an RGB-D camera (bgr8, 16UC1 aligned depth, camera_info)."""
    path = tmp_path_factory.mktemp("bags") / "three_cameras"
    cameras = [
        CameraSpec("cam_a", "raw", repeated={10, 11, 40}),
        CameraSpec("cam_b", "compressed", corrupt={30}, offset_ns=33_000_000),
        CameraSpec("cam_c", "rgbd", repeated={20}, offset_ns=66_000_000),
    ]
    return path, cameras, write_recording(path, cameras, 60)


def test_three_cameras_give_one_poses_message_per_frame_readable_by_two_readers(
    tmp_path: Path, three_camera_bag, tiny_checkpoint: Path
) -> None:
    bag, cameras, written = three_camera_bag
    out = tmp_path / "poses.mcap"
    topics = [spec.image_topic for spec in cameras]
    result = run_cli(
        "--bag",
        str(bag),
        *[arg for topic in topics for arg in ("--topic", topic)],
        "--model",
        str(tiny_checkpoint),
        *FAST,
        "--output",
        str(out),
        "--annotated",
    )
    assert result.returncode == 0, result.stderr
    # The corrupt JPEG is reported once, by topic, and counted.
    assert result.stderr.count("/cam_b/image_raw/compressed: bad frame skipped") == 1
    assert "59 processed, 1 corrupt (skipped)" in result.stdout
    assert "179 frame(s) processed" in result.stdout

    by_rosbags = read_with_rosbags(out)
    by_mcap = read_with_mcap(out)
    namespaces = {"cam_a": "/cam_a", "cam_b": "/cam_b", "cam_c": "/cam_c/color"}
    for spec in cameras:
        namespace = namespaces[spec.name]
        expected = list(written[spec.image_topic])
        if spec.corrupt:
            expected = [s for i, s in enumerate(expected) if i not in spec.corrupt]
        poses = [msg for _, msg in by_rosbags[f"{namespace}/poses"]]
        # One message per input frame (less the corrupt one), in order, with the input's header.
        assert [stamp_of(msg) for msg in poses] == expected, spec.name
        assert [stamp_of(msg) for msg in by_mcap[f"{namespace}/poses"]] == expected
        assert len(by_rosbags[f"{namespace}/poses/markers"]) == len(expected)
        annotated = by_mcap[f"{namespace}/poses/image/compressed"]
        assert [stamp_of(msg) for msg in annotated] == expected
        assert annotated[0].format.endswith("jpeg compressed bgr8")
        assert all(len(msg.persons) == 1 for msg in poses)  # the full-image detector's one box
        # The two readers decode the same keypoints.
        first_rosbags = poses[0].persons[0].keypoints[5]
        first_mcap = by_mcap[f"{namespace}/poses"][0].persons[0].keypoints[5]
        assert (first_rosbags.x, first_rosbags.y) == (first_mcap.x, first_mcap.y)
        with_positions = [any(k.has_position for k in msg.persons[0].keypoints) for msg in poses]
        if spec.kind == "rgbd":
            # The synthetic depth holds the figure and the wall behind it (demo_scene); the
            # untrained network's keypoints land on either.
            assert all(with_positions)
            centre = poses[-1].persons[0].center
            assert poses[-1].persons[0].has_center
            assert FIGURE_DISTANCE_M - 0.01 <= centre.z <= WALL_DISTANCE_M + 0.01
        else:
            assert not any(with_positions)

    results = json.loads((tmp_path / "poses_results.json").read_text())
    assert len(results) == 179
    assert {r["topic"] for r in results} == set(topics)
    assert all(len(r["keypoints"]) == 51 and "track_id" in r for r in results)
    # Each camera's person keeps one id once confirmed; the ids of the cameras differ.
    ids = {
        topic: {r["track_id"] for r in results if r["topic"] == topic} - {-1} for topic in topics
    }
    assert all(len(found) == 1 for found in ids.values()), ids
    assert len(set.union(*ids.values())) == 3


def test_without_topic_the_image_topics_are_listed(three_camera_bag) -> None:
    bag, _, _ = three_camera_bag
    result = run_cli("--bag", str(bag), "--model", "unused.pt")
    assert result.returncode == 2
    listed = result.stdout
    assert re.search(r"/cam_a/image_raw\s+Image\s+60 message\(s\)", listed)
    assert re.search(r"/cam_b/image_raw/compressed\s+CompressedImage\s+60 message\(s\)", listed)
    assert "/cam_c/color/camera_info" not in listed  # not an image
    assert "--topic" in result.stderr


def test_refusals_come_before_any_work(tmp_path: Path, three_camera_bag) -> None:
    """Each problem is one line naming it, without a traceback, before the model loads (the
    model named here does not exist: loading it would be a different error)."""
    bag, _, _ = three_camera_bag
    no_model = ("--model", str(tmp_path / "no_such_model.pt"))

    def refused(*args: str) -> str:
        result = run_cli(*args, *no_model)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and "no_such_model" not in result.stderr
        return result.stderr

    assert "no such recording" in refused("--bag", str(tmp_path / "missing_bag"))
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"this is not an mcap file" * 10)
    assert "cannot read the recording" in refused("--bag", str(garbage), "--topic", "/x")
    not_a_bag = tmp_path / "folder"
    not_a_bag.mkdir()
    assert "not a rosbag2 recording" in refused("--bag", str(not_a_bag))
    assert "carries sensor_msgs/msg/CameraInfo, not" in refused(
        "--bag", str(bag), "--topic", "/cam_c/color/camera_info"
    )
    assert "/nothing/image is not in" in refused("--bag", str(bag), "--topic", "/nothing/image")
    out = tmp_path / "exists.mcap"
    out.write_bytes(b"")
    assert "exists already (give --overwrite" in refused(
        "--bag", str(bag), "--topic", "/cam_a/image_raw", "--output", str(out)
    )
    assert "depth topic of /cam_a/image_raw /cam_a/image_raw/x is not in" in refused(
        "--bag", str(bag), "--topic", "/cam_a/image_raw", "--depth-topic", "/cam_a/image_raw/x"
    )


def test_wrong_step_is_skipped_and_a_sqlite3_folder_is_written(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    bag = tmp_path / "steps"
    camera = CameraSpec("front", "raw", corrupt={3, 7})
    written = write_recording(bag, [camera], 12, storage="sqlite3")
    out = tmp_path / "out_folder"
    result = run_cli(
        "--bag",
        str(bag),
        "--topic",
        camera.image_topic,
        "--model",
        str(tiny_checkpoint),
        *FAST,
        "--output",
        str(out),
        "--output-storage",
        "sqlite3",
        "--copy-input",
    )
    assert result.returncode == 0, result.stderr
    skipped = re.findall(r"bad frame skipped: .*step 479 is smaller than a row", result.stderr)
    assert len(skipped) == 1, result.stderr
    assert "10 processed, 2 corrupt (skipped)" in result.stdout
    assert (out / "metadata.yaml").is_file() and list(out.glob("*.db3"))
    topics = read_with_rosbags(out)
    kept = [s for i, s in enumerate(written[camera.image_topic]) if i not in camera.corrupt]
    assert [stamp_of(msg) for _, msg in topics["/front/poses"]] == kept
    # --copy-input: the input images are in the output too, at their own log times.
    assert len(topics[camera.image_topic]) == 12
    assert (tmp_path / "out_folder_results.json").is_file()
    # The same output again is refused.
    again = run_cli(
        "--bag", str(bag), "--topic", camera.image_topic, "--model", "x.pt", "--output", str(out)
    )
    assert again.returncode == 2 and "exists already" in again.stderr


def test_ctrl_c_leaves_readable_outputs_with_the_frames_done(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    bag = tmp_path / "long"
    camera = CameraSpec("front", "raw")
    frames = 400
    write_recording(bag, [camera], frames, width=96, height=72)
    out = tmp_path / "partial.mcap"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pose_ros.cli",
            "--bag",
            str(bag),
            "--topic",
            camera.image_topic,
            "--model",
            str(tiny_checkpoint),
            *FAST,
            "--output",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress: list[int] = []
    stderr_text: list[str] = []

    def watch() -> None:
        # tqdm redraws its line with carriage returns: "  5%|...| 21/400 [...]"
        buffer = ""
        while True:
            chunk = proc.stderr.read(1)
            if not chunk:
                return
            buffer += chunk
            stderr_text.append(chunk)
            for done in re.findall(rf"\| *(\d+)/{frames} ", buffer[-200:]):
                progress.append(int(done))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not progress or max(progress) < 20):
        time.sleep(0.1)
    assert progress and max(progress) >= 20, "".join(stderr_text)
    proc.send_signal(signal.SIGINT)
    # Not communicate(): it would read stderr too, racing the watcher for its last lines.
    stdout = proc.stdout.read()
    proc.wait(timeout=120)
    watcher.join(30)
    stderr = "".join(stderr_text)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    poses = read_with_rosbags(out)["/front/poses"]
    results = json.loads((tmp_path / "partial_results.json").read_text())
    done = int(re.search(r"(\d+) frame\(s\) processed", stdout).group(1))
    assert 20 <= done < frames and len(poses) == done and len(results) == done
    assert len(read_with_mcap(out)["/front/poses"]) == done


def test_conventions_for_camera_info_and_depth(three_camera_bag) -> None:
    assert image_namespace("/cam/color/image_raw/compressed") == "/cam/color"
    assert image_namespace("image") == ""
    realsense = depth_candidates("/camera/camera/color/image_raw")
    assert "/camera/camera/aligned_depth_to_color/image_raw" in realsense
    # The unregistered depth stream never pairs with the colour pixels.
    assert "/camera/camera/depth/image_rect_raw" not in realsense
    assert depth_candidates("/front/image")[0] == "/front/depth"  # pose_node's own names
    bag, _, _ = three_camera_bag
    with Recording(bag) as recording:
        (rgbd,) = recording.select_cameras(["/cam_c/color/image_raw"])
        assert rgbd.camera_info == "/cam_c/color/camera_info"
        assert rgbd.depth == "/cam_c/aligned_depth_to_color/image_raw"
        (plain,) = recording.select_cameras(["/cam_c/color/image_raw"], use_depth=False)
        assert plain.depth is None
        (explicit,) = recording.select_cameras(
            ["/cam_a/image_raw"], camera_info={"/cam_a/image_raw": "/cam_c/color/camera_info"}
        )
        assert explicit.camera_info == "/cam_c/color/camera_info" and explicit.depth is None
        with pytest.raises(RecordingError, match="carries sensor_msgs/msg/Image, not"):
            recording.select_cameras(
                ["/cam_a/image_raw"], camera_info={"/cam_a/image_raw": "/cam_a/image_raw"}
            )


def test_a_ros1_bag_is_read_too(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from recordings import camera_frames
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    bag = tmp_path / "old.bag"
    with Writer(bag) as writer:
        connection = writer.add_connection("/cam/image_raw", IMAGE_TYPE, typestore=store)
        for index, (rgb, _) in enumerate(camera_frames(5, 160, 120)):
            stamp = types["builtin_interfaces/msg/Time"](sec=100 + index, nanosec=0)
            head = types["std_msgs/msg/Header"](seq=index, stamp=stamp, frame_id="cam")
            msg = types[IMAGE_TYPE](
                header=head,
                height=120,
                width=160,
                encoding="rgb8",
                is_bigendian=0,
                step=480,
                data=rgb.reshape(-1),
            )
            writer.write(connection, (100 + index) * 10**9, store.serialize_ros1(msg, IMAGE_TYPE))
    out = tmp_path / "old_poses.mcap"
    args = ("--bag", str(bag), "--topic", "/cam/image_raw", "--model", str(tiny_checkpoint))
    result = run_cli(*args, *FAST, "--output", str(out))
    assert result.returncode == 0, result.stderr
    poses = [msg for _, msg in read_with_rosbags(out)["/cam/poses"]]
    assert [(m.header.stamp.sec, m.header.frame_id) for m in poses] == [
        (100 + i, "cam") for i in range(5)
    ]
    copy = run_cli(*args, "--copy-input", "--output", str(tmp_path / "copy.mcap"))
    assert copy.returncode == 2 and "a ROS 1 bag's messages are not" in copy.stderr
