"""The bag path and the node give the same poses: the same 30 frames are sent to the installed
node over DDS (reliable QoS, one frame at a time, so the node drops none) and written to a
recording processed by pose-ros-infer --bag. Keypoints, scores and track ids must agree frame by
frame: both run the frames through the same stream core with the node's parameter defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from recordings import PERIOD_NS, START_NS, CameraSpec, camera_frames, write_recording
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import Image

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import Peer, make_header, pose_node, reliable

from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import array_to_image_msg

pytestmark = pytest.mark.ros

FRAMES = 30
NAMESPACE = "/bag_vs_node"


def keypoints_and_ids(messages) -> list[tuple[np.ndarray, list[int]]]:
    """Per message: (persons x 17 x 3 keypoints, track ids)."""
    out = []
    for msg in messages:
        keypoints = np.array(
            [[(k.x, k.y, k.score) for k in person.keypoints] for person in msg.persons],
            np.float64,
        ).reshape(-1, 17, 3)
        out.append((keypoints, [int(person.id) for person in msg.persons]))
    return out


def test_bag_path_gives_the_node_keypoints_and_ids(tmp_path: Path, tiny_checkpoint: Path) -> None:
    camera = CameraSpec("front", "raw")
    bag = tmp_path / "recording"
    write_recording(bag, [camera], FRAMES)
    out = tmp_path / "poses.mcap"
    result = subprocess.run(
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
            "--detector",
            "full_image",
            "--device",
            "cpu",
            "--cpu-threads",
            "1",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    with AnyReader([out]) as reader:
        from_bag = [
            reader.deserialize(raw, connection.msgtype)
            for connection, _, raw in reader.messages()
            if connection.topic == "/front/poses"
        ]
    assert len(from_bag) == FRAMES

    # The same frames, with the same headers, to the node: every parameter at its default but
    # the model, detector, device and a reliable input that keeps every frame.
    parameters = {
        "model": tiny_checkpoint,
        "detector.backend": "full_image",
        "device": "cpu",
        "cpu_threads": 1,
        "qos.reliability": "reliable",
        "qos.depth": 10,
        "use_camera_info": False,
    }
    peer = Peer("bag_vs_node_peer")
    try:
        with pose_node(tmp_path / "pose_node.log", NAMESPACE, parameters) as node:
            received, _ = peer.collect(PersonPoseArray, f"{NAMESPACE}/poses", reliable(10))
            publisher = peer.node.create_publisher(Image, f"{NAMESPACE}/image", reliable(10))
            assert peer.spin_until(lambda: publisher.get_subscription_count() > 0, 30.0)
            for index, (rgb, _) in enumerate(camera_frames(FRAMES, 160, 120)):
                stamp = START_NS + index * PERIOD_NS
                header = make_header(stamp // 1_000_000_000, camera.frame_id, stamp % 1_000_000_000)
                publisher.publish(array_to_image_msg(rgb, "rgb8", header=header))
                # Paced: the next frame only once this one is answered (the node keeps only the
                # newest frame of a camera, and every frame must count here).
                arrived = peer.spin_until(lambda n=index: len(received) > n, 60.0)
                assert arrived, f"no poses for frame {index}:\n{node.log()[-3000:]}"
    finally:
        peer.close()

    assert [(m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) for m in received] == [
        (m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) for m in from_bag
    ]
    ids_seen = set()
    for index, ((node_kp, node_ids), (bag_kp, bag_ids)) in enumerate(
        zip(keypoints_and_ids(received), keypoints_and_ids(from_bag), strict=True)
    ):
        assert node_ids == bag_ids, f"frame {index}"
        np.testing.assert_allclose(node_kp, bag_kp, atol=1e-3, err_msg=f"frame {index}")
        ids_seen.update(node_ids)
    # Tracking ran: the person got an id once confirmed (the untracked -1 before).
    assert len(ids_seen - {-1}) == 1
