"""The stream core's rules as a user meets them: the node over DDS with its default parameters
(tracking on, smoothing on, tracks confirmed after 3 hits), judged on the published messages.

- A scene cut, unrelated stills (the same image as rgb8, bgr8, bgra8 between other images) and a
  resolution change: each first answer equals the untracked answer, every keypoint lies inside
  the image, and the tracks of the old size end.
- Zero stamps on colour, depth and camera_info: every frame answered with 3D positions, one
  warning naming the topic, and never "has the camera stopped?" while frames arrive.
- Repeated stamps: every frame answered, and counted in /diagnostics.
- The node and ``pose-ros-infer`` give the same keypoints and ids on the same frames.

The first test runs the node in this process, so that a test-only detector that knows the COCO
scenes' boxes (coco_scenes.py) can replace the configured one; the others run the installed node
as users start it, with the whole-image detector. The pose network is the one trained on the 4
COCO images (the overfit run of test_training_support).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from coco_scenes import Scene, SceneBoxesDetector, load_scenes
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import array_to_image_msg, depth_array_to_msg
from pose_ros.ros.node import PoseNode
from pose_ros.stream import CameraFrame, StreamCore, StreamSettings
from pose_ros.tracking import TrackIds, TrackingConfig
from ros_support import ros_subprocess_env

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import Peer, make_header, pose_node, reliable

pytestmark = pytest.mark.ros

FPS = 30.0
#: A first answer after a reset may differ from the untracked one by float rounding only.
SAME_PX = 0.5


@pytest.fixture(scope="module")
def scenes(coco_dir: Path) -> list[Scene]:
    return load_scenes(coco_dir)


def _stamp(index: int) -> tuple[int, int]:
    nanosec = round(index / FPS * 1e9)
    return 1000 + nanosec // 1_000_000_000, nanosec % 1_000_000_000


def _image_msg(scene: Scene, encoding: str, sec: int, nanosec: int) -> Image:
    rgb = scene.image
    pixels = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)]),
    }[encoding]
    header = make_header(sec, "camera", nanosec)
    return array_to_image_msg(np.ascontiguousarray(pixels), encoding, header=header)


def _keypoints(msg: PersonPoseArray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(id, box xywh, keypoints (17, 2)) of each published person."""
    return [
        (
            p.id,
            np.array([p.x_min, p.y_min, p.width, p.height]),
            np.array([(k.x, k.y) for k in p.keypoints], np.float64),
        )
        for p in msg.persons
    ]


def _inside(msg: PersonPoseArray) -> bool:
    width, height = msg.image_width, msg.image_height
    return all(
        (k[:, 0] >= 0).all()
        and (k[:, 0] <= width - 1).all()
        and (k[:, 1] >= 0).all()
        and (k[:, 1] <= height - 1).all()
        for _, _, k in _keypoints(msg)
    )


@contextmanager
def _node_in_process(
    namespace: str, checkpoint: Path, detector: SceneBoxesDetector
) -> Iterator[tuple[PoseNode, Peer]]:
    """The node with its defaults (the COCO detector replaced) spinning in this process."""
    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = {
        "managed": True,
        "model": str(checkpoint),
        "detector.backend": "full_image",  # replaced below by the scenes' boxes
        "device": "cpu",
        "qos.reliability": "reliable",
        "qos.depth": 5,
        "use_camera_info": False,
    }
    node = PoseNode(
        context=context,
        namespace=namespace,
        parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Thread(target=executor.spin, daemon=True)
    peer = Peer("stream_test_peer")
    try:
        node.trigger_configure()
        node.estimator.detector = detector
        node.core.configure(node.settings.stream)
        node.trigger_activate()
        spinning.start()
        yield node, peer
    finally:
        executor.shutdown()
        node.close()
        node.destroy_node()
        peer.close()
        rclpy.try_shutdown(context=context)


def test_scene_cut_stills_and_resolution_change_over_dds(overfit_run, scenes) -> None:
    a, b = scenes[0], scenes[2]
    # A driver reconfigured to 960x720: the same view, the persons at the same pixels (a new
    # size alone must end the tracks, even where the boxes still overlap).
    canvas = np.zeros((720, 960, 3), np.uint8)
    canvas[: a.image.shape[0], : a.image.shape[1]] = a.image
    a_wide = Scene(a.image_id, canvas, a.boxes.copy())
    walk = [a.shifted(2 * i) for i in range(6)]
    wide_walk = [a_wide.shifted(3 * i) for i in range(4)]
    # (scene, encoding): a walk, a cut to another scene, stills alternating as three encodings,
    # the first scene again walking, then the same camera at 960x720.
    sequence = [(s, "rgb8") for s in walk]
    sequence += [(b, "rgb8")]
    for encoding in ("rgb8", "bgr8", "bgra8"):
        sequence += [(a, "rgb8"), (b, encoding)]
    sequence += [(s, "rgb8") for s in walk]
    sequence += [(s, "rgb8") for s in wide_walk]
    detector = SceneBoxesDetector()
    for scene in {id(s): s for s, _ in sequence}.values():
        detector.learn(scene)

    namespace = "/stream_test_cuts"
    with _node_in_process(namespace, overfit_run.best, detector) as (node, peer):
        received, _ = peer.collect(PersonPoseArray, f"{namespace}/poses", reliable(10))
        publisher = peer.node.create_publisher(Image, f"{namespace}/image", reliable(5))
        assert peer.spin_until(lambda: publisher.get_subscription_count() > 0, 30.0)
        for index, (scene, encoding) in enumerate(sequence):
            publisher.publish(_image_msg(scene, encoding, *_stamp(index)))
            # One frame at a time: the node keeps only the newest, and every frame must count.
            assert peer.spin_until(lambda n=index: len(received) > n, 60.0), f"frame {index}"
        # The untracked answers, from the node's own estimator once it is idle.
        untracked_core = StreamCore(
            node.estimator, StreamSettings(tracking=TrackingConfig(enabled=False)), ids=TrackIds()
        )

        def untracked(scene: Scene) -> list[tuple[np.ndarray, np.ndarray]]:
            (result,) = untracked_core.process([CameraFrame(scene.image, "RGB", frame_id="c")])
            assert result.error is None
            return [(p.box, p.keypoints[:, :2]) for p in result.persons]

        expected = {id(s): untracked(s) for s in (b, a, a_wide)}

    assert len(received) == len(sequence)
    outside = [i for i, msg in enumerate(received) if not _inside(msg)]
    assert not outside, f"answers with a keypoint outside the image: {outside}"

    def same_as_untracked(index: int, scene: Scene) -> None:
        published = _keypoints(received[index])
        wanted = expected[id(scene)]
        assert len(published) == len(wanted) > 0, index
        for box, keypoints in wanted:
            _, other_box, other = min(published, key=lambda p: float(np.abs(p[1] - box).sum()))
            np.testing.assert_allclose(other_box, box, atol=0.05)
            error = float(np.abs(other - keypoints).max())
            assert error <= SAME_PX, f"answer {index}: {error:.2f} px from the untracked answer"

    cut = len(walk)
    same_as_untracked(cut, b)  # the scene cut
    for still in (cut + 2, cut + 4, cut + 6):  # b as rgb8, bgr8, bgra8 after a
        same_as_untracked(still, b)
    wide = len(sequence) - len(wide_walk)
    same_as_untracked(wide, a_wide)  # the first frame of the new size
    assert (received[wide].image_width, received[wide].image_height) == (960, 720)
    # The tracks of the old size ended: the ids after the change are new ones.
    before = {i for msg in received[:wide] for i, _, _ in _keypoints(msg) if i >= 0}
    after = {i for msg in received[wide:] for i, _, _ in _keypoints(msg) if i >= 0}
    assert after and not before & after, (before, after)


# --- the installed node, with the whole-image detector ---

WIDTH, HEIGHT = 640, 480


def _node_parameters(checkpoint: Path, **extra: object) -> dict[str, object]:
    return {
        "model": str(checkpoint),
        "detector.backend": "full_image",
        "device": "cpu",
        "qos.reliability": "reliable",
        **extra,
    }


def test_zero_stamps_with_depth_are_all_answered_without_a_stopped_camera(
    overfit_run, scenes, tmp_path: Path
) -> None:
    namespace = "/stream_test_zero"
    parameters = _node_parameters(
        overfit_run.best,
        use_depth=True,
        no_input_warning_sec=1.5,
        log_period_sec=1.0,
        # Frames 0.8 s apart: a wide pairing window cannot pick another frame's depth, and a busy
        # machine may deliver depth and colour more than the default 30 ms apart.
        **{"depth.slop_sec": 0.3},
    )
    peer = Peer("stream_zero_peer")
    try:
        received, _ = peer.collect(PersonPoseArray, f"{namespace}/poses", reliable(20))
        images = peer.node.create_publisher(Image, f"{namespace}/image", reliable(5))
        depths = peer.node.create_publisher(Image, f"{namespace}/depth", reliable(5))
        infos = peer.node.create_publisher(CameraInfo, f"{namespace}/camera_info", reliable(5))
        info = CameraInfo(header=make_header(0, "camera", 0), width=WIDTH, height=HEIGHT)
        info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
        info.p = [500.0, 0.0, 320.0, 0.0, 0.0, 500.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        depth = depth_array_to_msg(np.full((HEIGHT, WIDTH), 2000, np.uint16), "16UC1")
        depth.header = make_header(0, "camera", 0)
        frames = 10
        with pose_node(tmp_path / "node.log", namespace, parameters) as node:
            assert peer.spin_until(lambda: images.get_subscription_count() > 0, 60.0)
            assert peer.spin_until(lambda: depths.get_subscription_count() > 0, 10.0)
            infos.publish(info)
            peer.spin_for(0.5)
            # One frame every 0.8 s (8 s in all, far longer than no_input_warning_sec).
            for index in range(frames):
                infos.publish(info)
                depths.publish(depth)
                images.publish(_image_msg(scenes[0].shifted(2 * index), "rgb8", 0, 0))
                assert peer.spin_until(lambda n=index: len(received) > n, 30.0), (
                    f"frame {index} not answered\n{node.log()[-3000:]}"
                )
                peer.spin_for(max(0.0, 0.8 - 0.1))
            log = node.log()
    finally:
        peer.close()
    assert len(received) == frames
    assert all(msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0 for msg in received)
    # Depth was paired with every frame: each answer has 3D positions at 2 m.
    for msg in received:
        assert msg.persons, "no person"
        assert all(p.has_center and abs(p.center.z - 2.0) < 0.05 for p in msg.persons)
    warnings = re.findall(r"\[WARN\].*header\.stamp 0.*", log)
    assert len(warnings) == 1 and f"{namespace}/image" in warnings[0], warnings
    assert "has the camera stopped" not in log, log[-3000:]


def test_repeated_stamps_are_answered_and_counted_in_diagnostics(
    overfit_run, scenes, tmp_path: Path
) -> None:
    namespace = "/stream_test_repeated"
    parameters = _node_parameters(overfit_run.best, use_camera_info=False, log_period_sec=1.0)
    peer = Peer("stream_repeated_peer")
    try:
        received, _ = peer.collect(PersonPoseArray, f"{namespace}/poses", reliable(20))
        arrays, _ = peer.collect(DiagnosticArray, "/diagnostics", reliable(20))
        images = peer.node.create_publisher(Image, f"{namespace}/image", reliable(5))
        frames = 6
        with pose_node(tmp_path / "node.log", namespace, parameters) as node:
            assert peer.spin_until(lambda: images.get_subscription_count() > 0, 60.0)
            for index in range(frames):  # all with the stamp 1000.5
                images.publish(_image_msg(scenes[0].shifted(2 * index), "rgb8", 1000, 500_000_000))
                assert peer.spin_until(lambda n=index: len(received) > n, 30.0), node.log()[-2000:]

            def repeated_count() -> str | None:
                for array in reversed(arrays):
                    for status in array.status:
                        if namespace.strip("/") in status.name:
                            values = {kv.key: kv.value for kv in status.values}
                            return values.get("frames with a repeated stamp")
                return None

            assert peer.spin_until(lambda: repeated_count() == str(frames - 1), 10.0), (
                repeated_count(),
                node.log()[-2000:],
            )
    finally:
        peer.close()
    assert len(received) == frames
    assert all(
        (m.header.stamp.sec, m.header.stamp.nanosec) == (1000, 500_000_000) for m in received
    )


def test_the_node_and_pose_ros_infer_give_the_same_keypoints_and_ids(
    overfit_run, scenes, tmp_path: Path
) -> None:
    walk = [scenes[0].shifted(3 * i) for i in range(12)]
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, scene in enumerate(walk):
        cv2.imwrite(str(folder / f"{index:06d}.png"), scene.image[..., ::-1])
    output = tmp_path / "infer"
    command = [
        *(sys.executable, "-m", "pose_ros.cli", str(folder)),
        *("--model", str(overfit_run.best), "--detector", "full_image", "--device", "cpu"),
        *("--tracking", "--fps", str(FPS), "--output", str(output)),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=ros_subprocess_env()
    )
    assert done.returncode == 0, done.stderr[-3000:]
    by_image: dict[int, list[dict]] = {}
    for entry in json.loads((output / "results.json").read_text()):
        by_image.setdefault(entry["image_id"], []).append(entry)
    cli = [by_image.get(image_id, []) for image_id in sorted(by_image)]
    assert len(cli) == len(walk)

    namespace = "/stream_test_same"
    parameters = _node_parameters(overfit_run.best, use_camera_info=False)
    peer = Peer("stream_same_peer")
    try:
        received, _ = peer.collect(PersonPoseArray, f"{namespace}/poses", reliable(20))
        images = peer.node.create_publisher(Image, f"{namespace}/image", reliable(5))
        with pose_node(tmp_path / "node.log", namespace, parameters) as node:
            assert peer.spin_until(lambda: images.get_subscription_count() > 0, 60.0)
            for index, scene in enumerate(walk):
                images.publish(_image_msg(scene, "rgb8", *_stamp(index)))
                assert peer.spin_until(lambda n=index: len(received) > n, 30.0), node.log()[-2000:]
    finally:
        peer.close()

    ids: dict[int, int] = {}  # node id -> pose-ros-infer id
    for index, (msg, entries) in enumerate(zip(received, cli, strict=True)):
        persons = _keypoints(msg)
        assert len(persons) == len(entries) > 0, index
        for (node_id, _, keypoints), entry in zip(persons, entries, strict=True):
            theirs = np.array(entry["keypoints"], np.float64).reshape(17, 3)[:, :2]
            np.testing.assert_allclose(keypoints, theirs, atol=1e-3, err_msg=f"frame {index}")
            if node_id < 0 or entry["track_id"] < 0:
                assert node_id == entry["track_id"] == -1, (index, node_id, entry["track_id"])
            else:
                assert ids.setdefault(node_id, entry["track_id"]) == entry["track_id"], index
    assert len(ids) == 1, ids  # one person, one id, in both
