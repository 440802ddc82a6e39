"""pose_node end to end: the installed executable in its own process, with the installed
config/pose.yaml, fed real COCO images over real DDS (loopback) from this process.

A tiny real checkpoint (ResNet-18, 128x96, untrained but saved and loaded like any checkpoint) and
the "full_image" detector keep it fast on 2 CPU cores; the nodes start once per module.
"""

from __future__ import annotations

import array
import itertools
import re
import signal
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import Marker, MarkerArray

from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import array_to_image_msg

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import (
    NodeProcess,
    Peer,
    make_header,
    pack_yuv422,
    pose_node,
    reliable,
    run_node_to_exit,
    with_stamp,
)

pytestmark = pytest.mark.ros

RAW_NS = "/pose_test_raw"
JPEG_NS = "/pose_test_jpeg"
FRAME_ID = "test_camera_optical_frame"
_stamps = itertools.count(1_000)


def node_parameters(checkpoint: Path, **extra: object) -> dict[str, object]:
    return {
        "model": checkpoint,
        "detector.backend": "full_image",
        "device": "cpu",
        # untrained weights give low scores: show every keypoint so marker content can be checked
        "markers.keypoint_threshold": 0.0,
        **extra,
    }


@pytest.fixture(scope="module")
def picture(coco_dir: Path) -> np.ndarray:
    """A real COCO image (people in it), RGB, 640 x 425."""
    bgr = cv2.imread(str(coco_dir / "000000000785.jpg"))
    assert bgr is not None
    return np.ascontiguousarray(bgr[..., ::-1])


@pytest.fixture(scope="module")
def peer() -> Peer:
    peer = Peer()
    yield peer
    peer.close()


def _stop_cleanly(node: NodeProcess) -> None:
    code = node.interrupt()
    log = node.log()
    assert code == 0, f"pose_node exit code {code} after SIGINT:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert "stopped:" in log


@pytest.fixture(scope="module")
def raw_node(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> NodeProcess:
    """The node on raw images, subscribed *reliably*: Fast DDS sends messages larger than its
    shared-memory segment (0.5 MB; a 640x425 rgb8 frame is 0.8 MB) as UDP fragments, and on
    default socket buffers a best-effort reader loses most of them on a busy machine. Tests need
    every frame; the default best-effort path is exercised with JPEG frames below."""
    log = tmp_path_factory.mktemp("raw_node") / "pose_node.log"
    parameters = node_parameters(tiny_checkpoint, **{"qos.reliability": "reliable"})
    with pose_node(log, RAW_NS, parameters) as node:
        yield node
        _stop_cleanly(node)


@pytest.fixture(scope="module")
def raw_io(peer: Peer, raw_node: NodeProcess):
    """(image publisher, received /poses) of the raw node."""
    publisher = peer.node.create_publisher(Image, f"{RAW_NS}/image", reliable(5))
    poses, _ = peer.collect(PersonPoseArray, f"{RAW_NS}/poses", reliable())
    return publisher, poses


def _roundtrip(peer: Peer, node: NodeProcess, publisher, msg, poses: list, timeout: float = 30.0):
    stamp = msg.header.stamp.sec
    arrived = peer.publish_until(
        lambda: publisher.publish(msg), lambda: bool(with_stamp(poses, stamp)), timeout=timeout
    )
    assert arrived, f"no /poses for the frame stamped {stamp}; node log:\n{node.log()[-3000:]}"
    return with_stamp(poses, stamp)[0]


def _check_poses(result: PersonPoseArray, width: int, height: int, stamp: int) -> np.ndarray:
    """Header, size and keypoint layout of one answer; returns the keypoints (persons, 17, 3)."""
    assert result.header.frame_id == FRAME_ID
    assert (result.header.stamp.sec, result.header.stamp.nanosec) == (stamp, 500)
    assert (result.image_width, result.image_height) == (width, height)
    assert len(result.persons) == 1  # full_image: the frame is the person box
    person = result.persons[0]
    assert [person.x_min, person.y_min] == [0.0, 0.0]
    keypoints = np.array([[[k.x, k.y, k.score] for k in p.keypoints] for p in result.persons])
    assert keypoints.shape == (1, 17, 3)
    assert (keypoints[..., 0] >= -0.5).all() and (keypoints[..., 0] < width - 0.5).all()
    assert (keypoints[..., 1] >= -0.5).all() and (keypoints[..., 1] < height - 0.5).all()
    assert ((keypoints[..., 2] >= 0) & (keypoints[..., 2] <= 1)).all()
    return keypoints


def _frame(kind: str, rgb: np.ndarray, stamp: int) -> Image:
    header = make_header(stamp, FRAME_ID)
    width = rgb.shape[1]
    if kind == "rgb8":
        return array_to_image_msg(rgb, "rgb8", header=header)
    if kind == "bgr8":
        return array_to_image_msg(rgb[..., ::-1], "bgr8", header=header)
    if kind == "rgba8":
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        return array_to_image_msg(rgba, "rgba8", header=header)
    if kind == "rgb8_padded_step":
        return array_to_image_msg(rgb, "rgb8", header=header, step=width * 3 + 64)
    if kind == "mono8":
        return array_to_image_msg(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), "mono8", header=header)
    if kind == "yuv422":  # UYVY
        return array_to_image_msg(pack_yuv422(rgb, "UYVY"), "yuv422", header=header)
    if kind == "yuv422_yuy2":  # YUYV
        return array_to_image_msg(pack_yuv422(rgb, "YUYV"), "yuv422_yuy2", header=header)
    raise ValueError(kind)


@pytest.fixture(scope="module")
def rgb8_keypoints(peer: Peer, raw_node: NodeProcess, raw_io, picture: np.ndarray) -> np.ndarray:
    publisher, poses = raw_io
    stamp = next(_stamps)
    result = _roundtrip(peer, raw_node, publisher, _frame("rgb8", picture, stamp), poses)
    return _check_poses(result, picture.shape[1], picture.shape[0], stamp)


@pytest.mark.parametrize(
    "kind", ["rgb8", "bgr8", "rgba8", "rgb8_padded_step", "mono8", "yuv422", "yuv422_yuy2"]
)
def test_poses_for_each_encoding(peer, raw_node, raw_io, picture, rgb8_keypoints, kind) -> None:
    publisher, poses = raw_io
    stamp = next(_stamps)
    result = _roundtrip(peer, raw_node, publisher, _frame(kind, picture, stamp), poses)
    keypoints = _check_poses(result, picture.shape[1], picture.shape[0], stamp)
    if kind in ("rgb8", "bgr8", "rgba8", "rgb8_padded_step"):
        # The same pixels in another layout: the same keypoints as rgb8 (a channel swap, a
        # misread alpha or a wrong row stride would change them).
        np.testing.assert_allclose(keypoints, rgb8_keypoints, atol=1e-3)
        return
    # Grey and chroma-subsampled frames hold other pixel values than the picture: compare with
    # the same pixels sent as rgb8 (grey: the grey value in all three channels; YUV: the colours
    # the standard BT.601 decoding gives). A misread byte order, a wrong chroma position or a
    # wrong grey expansion changes the pixels, and with them the keypoints.
    same_pixels = _same_pixels_as_rgb8(kind, picture)
    stamp = next(_stamps)
    reference = _roundtrip(peer, raw_node, publisher, _frame("rgb8", same_pixels, stamp), poses)
    reference_keypoints = _check_poses(reference, picture.shape[1], picture.shape[0], stamp)
    np.testing.assert_allclose(keypoints, reference_keypoints, atol=1e-3)


def _same_pixels_as_rgb8(kind: str, picture: np.ndarray) -> np.ndarray:
    """The RGB pixels that ``_frame(kind, picture)`` stands for."""
    if kind == "mono8":
        grey = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
        return np.ascontiguousarray(np.dstack([grey, grey, grey]))
    order = {"yuv422": "UYVY", "yuv422_yuy2": "YUYV"}[kind]
    code = cv2.COLOR_YUV2RGB_UYVY if order == "UYVY" else cv2.COLOR_YUV2RGB_YUY2
    return cv2.cvtColor(pack_yuv422(picture, order), code)


# --- bad input: each frame refused with a clear error, the next good frame still answered ---


def _bad_raw(stamp: int, width: int, height: int, encoding: str, step: int, data_len: int) -> Image:
    msg = Image(header=make_header(stamp, FRAME_ID), width=width, height=height, encoding=encoding)
    msg.step = step
    msg.data = array.array("B", bytes(data_len))
    return msg


BAD_RAW_FRAMES = {
    "wrong_step": ((640, 480, "rgb8", 100, 100 * 480), r"step 100 is smaller than a row"),
    "data_too_short": ((640, 480, "rgb8", 1920, 1920 * 100), r"fewer than height x step"),
    "unknown_encoding": ((640, 480, "hsv8", 1920, 1920 * 480), r"unsupported encoding 'hsv8'"),
    "zero_size": ((0, 0, "rgb8", 0, 0), r"empty image \(0x0"),
    "enormous_header": (
        (20000, 20000, "rgb8", 60000, 64),
        r"20000x20000 .* exceeds max_image_pixels",
    ),
    # Valid frames, but smaller than the pose network can use: bad input, not a failure.
    "one_pixel": ((1, 1, "rgb8", 3, 3), r"1x1 is smaller than the 2x2 pixels"),
    "one_column": ((1, 100, "rgb8", 3, 300), r"1x100 is smaller than the 2x2 pixels"),
    "one_row": ((100, 1, "mono8", 100, 100), r"100x1 is smaller than the 2x2 pixels"),
}


@pytest.mark.parametrize("case", list(BAD_RAW_FRAMES))
def test_bad_raw_frame_is_refused_and_the_next_good_frame_answered(
    peer, raw_node, raw_io, picture, case
) -> None:
    publisher, poses = raw_io
    layout, message = BAD_RAW_FRAMES[case]
    bad_stamp = next(_stamps)
    bad = _bad_raw(bad_stamp, *layout)
    start = raw_node.log_size()
    raw_node.wait_for_log(
        r"\[ERROR\].*bad frame on " + RAW_NS + "/image: .*" + message,
        start=start,
        timeout=30,
        while_waiting=lambda: (publisher.publish(bad), peer.spin_for(0.3)),
    )
    good_stamp = next(_stamps)
    result = _roundtrip(peer, raw_node, publisher, _frame("rgb8", picture, good_stamp), poses)
    _check_poses(result, picture.shape[1], picture.shape[0], good_stamp)
    assert not with_stamp(poses, bad_stamp), "a refused frame must not produce poses"
    assert raw_node.process.poll() is None
    # Reported once, as bad input: not also as a processing failure.
    log = raw_node.log(start)
    assert "processing a frame failed" not in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]


# --- markers, camera_info, the annotated image, runtime parameters ---


def test_markers_in_the_image_frame_on_a_plane(peer, raw_node, raw_io, picture) -> None:
    publisher, poses = raw_io
    marker_arrays, subscription = peer.collect(MarkerArray, f"{RAW_NS}/poses/markers", reliable(5))
    try:
        stamp = next(_stamps)
        frame = _frame("rgb8", picture, stamp)
        arrived = peer.publish_until(
            lambda: publisher.publish(frame),
            lambda: (
                bool(_markers_with_stamp(marker_arrays, stamp)) and bool(with_stamp(poses, stamp))
            ),
        )
        assert arrived, raw_node.log()[-3000:]
        markers = _markers_with_stamp(marker_arrays, stamp)[0].markers
        keypoints = _check_poses(
            with_stamp(poses, stamp)[0], picture.shape[1], picture.shape[0], stamp
        )
        assert markers[0].action == Marker.DELETEALL
        assert [(m.ns, m.id, m.type) for m in markers[1:]] == [
            ("keypoints", 0, Marker.SPHERE_LIST),
            ("skeleton", 0, Marker.LINE_LIST),
        ]
        assert all(m.header.frame_id == FRAME_ID for m in markers)
        spheres = markers[1]
        assert len(spheres.points) == 17  # markers.keypoint_threshold 0: all shown
        # No camera_info yet: the default plane (2 m) and pixel scale (0.002 m/px) about the centre.
        x_expected = (keypoints[0, 0, 0] - (picture.shape[1] - 1) / 2) * 0.002
        assert spheres.points[0].z == pytest.approx(2.0)
        assert spheres.points[0].x == pytest.approx(x_expected, abs=1e-4)

        # With a camera_info, the same keypoint is back-projected through K.
        info = CameraInfo(
            header=make_header(0, FRAME_ID), width=picture.shape[1], height=picture.shape[0]
        )
        info.k = [500.0, 0.0, 300.0, 0.0, 500.0, 200.0, 0.0, 0.0, 1.0]
        info_pub = peer.node.create_publisher(CameraInfo, f"{RAW_NS}/camera_info", reliable(1))
        raw_node.wait_for_log(
            "camera_info received",
            timeout=20,
            while_waiting=lambda: (info_pub.publish(info), peer.spin_for(0.2)),
        )
        stamp = next(_stamps)
        frame = _frame("rgb8", picture, stamp)
        assert peer.publish_until(
            lambda: publisher.publish(frame),
            lambda: (
                bool(_markers_with_stamp(marker_arrays, stamp)) and bool(with_stamp(poses, stamp))
            ),
        )
        point = _markers_with_stamp(marker_arrays, stamp)[0].markers[1].points[0]
        u = with_stamp(poses, stamp)[0].persons[0].keypoints[0].x
        assert point.x == pytest.approx((u - 300.0) / 500.0 * 2.0, abs=1e-4)
    finally:
        peer.node.destroy_subscription(subscription)


def _markers_with_stamp(arrays: list[MarkerArray], stamp: int) -> list[MarkerArray]:
    return [a for a in arrays if a.markers and a.markers[0].header.stamp.sec == stamp]


def test_annotated_image_only_while_subscribed(peer, raw_node, raw_io, picture) -> None:
    publisher, poses = raw_io
    # Nobody subscribes to poses/image: frames are processed, no image is drawn.
    time.sleep(1.2)  # let the status line of earlier frames pass
    start = raw_node.log_size()
    for _ in range(2):
        stamp = next(_stamps)
        _roundtrip(peer, raw_node, publisher, _frame("bgr8", picture, stamp), poses)
    status = raw_node.wait_for_log(r"frames in \d+, out [1-9].*", start=start, timeout=10)
    assert "annotated images" not in raw_node.log(start), status.group(0)

    images, subscription = peer.collect(Image, f"{RAW_NS}/poses/image", reliable(2))
    try:
        stamp = next(_stamps)
        frame = _frame("bgr8", picture, stamp)
        assert peer.publish_until(
            lambda: publisher.publish(frame), lambda: bool(with_stamp(images, stamp))
        ), raw_node.log()[-3000:]
        image = with_stamp(images, stamp)[0]
        assert image.header.frame_id == FRAME_ID
        assert (image.width, image.height, image.encoding) == (640, 425, "bgr8")  # input's order
        drawn = np.frombuffer(image.data, np.uint8).reshape(425, 640, 3)[..., ::-1]
        assert not np.array_equal(drawn, picture), "the annotated image must show the skeleton"
        raw_node.wait_for_log(r"annotated images [1-9]", start=start, timeout=10)
    finally:
        peer.node.destroy_subscription(subscription)


def _set_parameters(peer: Peer, namespace: str, parameters: list[Parameter]):
    client = peer.node.create_client(SetParameters, f"{namespace}/pose_node/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=20), "no parameter service"
        future = client.call_async(
            SetParameters.Request(parameters=[p.to_parameter_msg() for p in parameters])
        )
        assert peer.spin_until(future.done, 20), "parameter service did not answer"
        return future.result().results
    finally:
        peer.node.destroy_client(client)


def test_runtime_parameter_changes(peer, raw_node, raw_io, picture) -> None:
    publisher, _ = raw_io
    # Refused by rclpy from the descriptors (range, type, read-only) or by the node's own check;
    # either way the caller (`ros2 param set`) gets the reason.
    refused = [
        (Parameter("markers.plane_distance", value=-1.0), ["markers.plane_distance", "range"]),
        (Parameter("detector.score_threshold", value=1.5), ["detector.score_threshold", "range"]),
        (Parameter("debug_image.enabled", value="yes"), ["type"]),
        (Parameter("model", value="other.pt"), ["read-only", "model"]),
        (Parameter("device", value="cuda"), ["read-only", "device"]),
    ]
    for parameter, words in refused:
        (result,) = _set_parameters(peer, RAW_NS, [parameter])
        assert not result.successful, parameter.name
        for word in words:
            assert word in result.reason, result.reason

    marker_arrays, subscription = peer.collect(MarkerArray, f"{RAW_NS}/poses/markers", reliable(5))
    try:
        (result,) = _set_parameters(peer, RAW_NS, [Parameter("markers.plane_distance", value=4.5)])
        assert result.successful, result.reason
        stamp = next(_stamps)
        frame = _frame("rgb8", picture, stamp)
        assert peer.publish_until(
            lambda: publisher.publish(frame),
            lambda: bool(_markers_with_stamp(marker_arrays, stamp)),
        )
        assert _markers_with_stamp(marker_arrays, stamp)[0].markers[1].points[0].z == pytest.approx(
            4.5
        )
    finally:
        peer.node.destroy_subscription(subscription)
        (result,) = _set_parameters(peer, RAW_NS, [Parameter("markers.plane_distance", value=2.0)])
        assert result.successful


# --- a burst: latest frame only, bounded memory, drops counted ---


def test_burst_of_100_frames_at_60_hz(peer, raw_node, raw_io, picture) -> None:
    publisher, poses = raw_io
    frame_rgb = cv2.resize(picture, (640, 480))
    # Warm up and let earlier frames' status line pass, so the lines read below are the burst's.
    _roundtrip(peer, raw_node, publisher, _frame("rgb8", frame_rgb, next(_stamps)), poses)
    time.sleep(1.5)
    rss_before = raw_node.rss_mb()
    start = raw_node.log_size()
    first = next(_stamps)
    stamps = [first] + [next(_stamps) for _ in range(99)]
    frames = [_frame("rgb8", frame_rgb, s) for s in stamps]
    begin = time.monotonic()
    for index, frame in enumerate(frames):
        publisher.publish(frame)
        peer.spin_until(lambda: False, max(0.0, begin + (index + 1) / 60.0 - time.monotonic()))
    sent_s = time.monotonic() - begin
    answered_during = {p.header.stamp.sec for p in poses if first <= p.header.stamp.sec}

    # Still responsive: a fresh frame after the burst is answered promptly.
    after = next(_stamps)
    t0 = time.monotonic()
    _roundtrip(peer, raw_node, publisher, _frame("rgb8", frame_rgb, after), poses, timeout=10)
    response_s = time.monotonic() - t0
    peer.spin_for(2.5)  # the last status lines
    rss_after = raw_node.rss_mb()

    lines = re.findall(
        r"frames in (\d+), out (\d+) .*?dropped (\d+) \(total \d+\)", raw_node.log(start)
    )
    received, processed, dropped = (sum(int(line[i]) for line in lines) for i in range(3))
    summary = (
        f"sent 100 in {sent_s:.2f} s; node: in {received}, out {processed}, dropped {dropped}; "
        f"answered {len(answered_during)} during the burst; fresh frame after {response_s:.2f} s; "
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MB"
    )
    print(summary)
    assert sent_s < 3.0, summary
    assert received >= 50, summary  # best effort over loopback: most frames arrive
    # Every frame the node received was processed or dropped for a newer one, none queued up.
    assert received == processed + dropped, summary
    # What holds on any machine, fast or slow: every received frame that got no answer on /poses
    # was counted as dropped, and every answer is a processed frame (the fresh frame included).
    answered = {p.header.stamp.sec for p in poses if first <= p.header.stamp.sec <= after}
    assert len(answered) == processed, summary
    assert dropped == received - len(answered), summary
    assert response_s < 5.0, summary
    assert rss_after - rss_before < 150, summary


# --- compressed input ---


@pytest.fixture(scope="module")
def jpeg_node(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> NodeProcess:
    log = tmp_path_factory.mktemp("jpeg_node") / "pose_node.log"
    with pose_node(log, JPEG_NS, node_parameters(tiny_checkpoint, input_type="compressed")) as node:
        yield node
        _stop_cleanly(node)


def _compressed(stamp: int, data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage(header=make_header(stamp, FRAME_ID), format=fmt)
    msg.data = array.array("B", data)
    return msg


def test_compressed_input_jpeg_png_and_a_corrupt_jpeg(peer, jpeg_node, picture, coco_dir) -> None:
    # The default QoS (best effort, depth 1) with a best-effort publisher, as cameras publish.
    publisher = peer.node.create_publisher(
        CompressedImage, f"{JPEG_NS}/image/compressed", qos_profile_sensor_data
    )
    poses, _ = peer.collect(PersonPoseArray, f"{JPEG_NS}/poses", reliable())
    jpeg = (coco_dir / "000000000785.jpg").read_bytes()  # the file as a camera would send it
    stamp = next(_stamps)
    result = _roundtrip(peer, jpeg_node, publisher, _compressed(stamp, jpeg, "jpeg"), poses)
    _check_poses(result, 640, 425, stamp)

    _, png = cv2.imencode(".png", picture[..., ::-1])
    stamp = next(_stamps)
    result = _roundtrip(peer, jpeg_node, publisher, _compressed(stamp, png.tobytes(), "png"), poses)
    _check_poses(result, 640, 425, stamp)

    corrupt = _compressed(next(_stamps), jpeg[:2] + bytes(reversed(jpeg[2:200])), "jpeg")
    jpeg_node.wait_for_log(
        r"\[ERROR\].*bad frame on " + JPEG_NS + r"/image/compressed: not a readable JPEG or PNG",
        timeout=30,
        while_waiting=lambda: (publisher.publish(corrupt), peer.spin_for(0.3)),
    )
    stamp = next(_stamps)
    result = _roundtrip(peer, jpeg_node, publisher, _compressed(stamp, jpeg, "jpeg"), poses)
    _check_poses(result, 640, 425, stamp)
    assert not with_stamp(poses, corrupt.header.stamp.sec)


# --- start-up: bad parameters and missing weights stop the node with a clear message ---


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"markers.plane_distance": -1.0}, ["markers.plane_distance", "[0.01, 1000]"]),
        ({"device": "gpu"}, ["device must be 'auto', 'cpu', 'cuda' or 'cuda:N'", "'gpu'"]),
        ({"input_type": "video"}, ["input_type must be one of raw, compressed"]),
        ({"qos.depth": 2.5}, ["qos.depth"]),
    ],
    ids=["out-of-range", "bad-device", "bad-choice", "wrong-type"],
)
def test_bad_parameter_at_start_up(tiny_checkpoint, override, words) -> None:
    result = run_node_to_exit("/pose_test_bad", node_parameters(tiny_checkpoint, **override))
    assert result.returncode == 1, result.stdout
    assert "[FATAL]" in result.stdout and "invalid parameter" in result.stdout, result.stdout
    for word in words:
        assert word in result.stdout, result.stdout
    assert "Traceback" not in result.stdout, result.stdout


def test_missing_weights_stop_the_node_with_instructions(tmp_path: Path, tiny_checkpoint) -> None:
    missing = tmp_path / "no_such_weights.pt"
    result = run_node_to_exit("/pose_test_bad", node_parameters(tiny_checkpoint, model=missing))
    assert result.returncode == 1, result.stdout
    assert "[FATAL]" in result.stdout
    assert str(missing) in result.stdout and "not found" in result.stdout
    assert "docs/engines.md" in result.stdout and "published" in result.stdout  # how to get weights
    assert "Traceback" not in result.stdout, result.stdout

    random = run_node_to_exit(
        "/pose_test_bad", node_parameters(tiny_checkpoint, model="random:simplebaseline_res18")
    )
    assert random.returncode == 1, random.stdout
    assert "allow_random_weights" in random.stdout, random.stdout


# --- QoS: warnings about a missing or incompatible publisher; clean Ctrl-C ---


def test_qos_warnings_and_clean_shutdown(peer, tmp_path: Path) -> None:
    namespace = "/pose_test_qos"
    parameters = {
        "model": "random:simplebaseline_res18",
        "allow_random_weights": True,
        "detector.backend": "full_image",
        "device": "cpu",
        "qos.reliability": "reliable",
        "no_input_warning_sec": 1.0,
    }
    with pose_node(tmp_path / "pose_node.log", namespace, parameters) as node:
        assert "RANDOM WEIGHTS" in node.log()
        node.wait_for_log(rf"\[WARN\].*no publisher on {namespace}/image after 1 s", timeout=20)
        # A best-effort camera cannot feed a reliable subscription: the node says so, once.
        best_effort = QoSProfile(
            depth=1,
            reliability=QoSReliabilityPolicy.BEST_EFFORT,
            durability=QoSDurabilityPolicy.VOLATILE,
        )
        publisher = peer.node.create_publisher(Image, f"{namespace}/image", best_effort)
        try:
            node.wait_for_log(
                r"\[WARN\].*offers QoS incompatible .*policy RELIABILITY"
                r".*qos\.reliability:=best_effort",
                timeout=20,
                while_waiting=lambda: peer.spin_for(0.1),
            )
        finally:
            peer.node.destroy_publisher(publisher)
        assert len(re.findall("incompatible", node.log())) == 1
        code = node.interrupt()
    log = node.log()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert "stopped: 0 frames received" in log


# --- a real detector backend: several boxes per frame reach /poses; thresholds change them ---

DETECTOR_NS = "/pose_test_detector"
_YOLO_INPUT = 640
_YOLO_STRIDE = 32


class _RandomTinyYolo(torch.nn.Module):
    """A small convolutional network with YOLOv8's output layout, (1, 4 + 1 class, anchors):
    random weights (seeded), boxes of 32-320 px around a 20 x 20 grid, sigmoid scores. Its
    detections mean nothing, but they are many, spread, scored, and come from a real network run
    by the node's onnx_yolo backend (ONNX Runtime, letterbox, decoding, NMS)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=4, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=4, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 5, 3, stride=2, padding=1),
        )
        cells = _YOLO_INPUT // _YOLO_STRIDE
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys]).reshape(1, 2, -1).float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw = self.features(images).flatten(2)  # (1, 5, 400)
        centres = (self.grid + torch.sigmoid(raw[:, 0:2])) * _YOLO_STRIDE
        sizes = _YOLO_STRIDE + 288 * torch.sigmoid(raw[:, 2:4])
        return torch.cat([centres, sizes, torch.sigmoid(raw[:, 4:5])], dim=1)


@pytest.fixture(scope="module")
def yolo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("detector") / "random_tiny_yolov8.onnx"
    torch.onnx.export(
        _RandomTinyYolo().eval(),
        (torch.zeros(1, 3, _YOLO_INPUT, _YOLO_INPUT),),
        str(path),
        input_names=["images"],
        output_names=["output0"],
        opset_version=17,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def detector_node(
    tiny_checkpoint: Path, yolo_onnx: Path, tmp_path_factory: pytest.TempPathFactory
) -> NodeProcess:
    log = tmp_path_factory.mktemp("detector_node") / "pose_node.log"
    parameters = node_parameters(
        tiny_checkpoint,
        **{
            "detector.backend": "onnx_yolo",
            "detector.weights": yolo_onnx,
            "detector.yolo_layout": "yolov8",
            "detector.score_threshold": 0.0,
            "max_persons": 20,
            "keypoint_score_threshold": 0.2,
            "qos.reliability": "reliable",
        },
    )
    with pose_node(log, DETECTOR_NS, parameters) as node:
        yield node
        _stop_cleanly(node)


def _persons(result: PersonPoseArray) -> list[tuple[np.ndarray, float, float, np.ndarray]]:
    """(box xywh, box score, person score, (17, 3) keypoints) of each person."""
    return [
        (
            np.array([p.x_min, p.y_min, p.width, p.height]),
            p.box_score,
            p.score,
            np.array([[k.x, k.y, k.score] for k in p.keypoints]),
        )
        for p in result.persons
    ]


def _expected_score(box_score: float, keypoints: np.ndarray, threshold: float) -> float:
    """The reference's rescoring: box score x mean keypoint score above the threshold."""
    above = keypoints[:, 2][keypoints[:, 2] > threshold]
    return float(box_score * above.mean()) if len(above) else 0.0


def test_detector_boxes_reach_poses_and_thresholds_change_them(
    peer, detector_node, yolo_onnx, picture
) -> None:
    from pose_ros.detection import build_detector

    publisher = peer.node.create_publisher(Image, f"{DETECTOR_NS}/image", reliable(2))
    poses, _ = peer.collect(PersonPoseArray, f"{DETECTOR_NS}/poses", reliable())

    def answer() -> list[tuple[np.ndarray, float, float, np.ndarray]]:
        stamp = next(_stamps)
        frame = _frame("rgb8", picture, stamp)
        return _persons(_roundtrip(peer, detector_node, publisher, frame, poses))

    # The detector's own boxes for this frame, computed here from the same file.
    detector = build_detector(
        "onnx_yolo", weights=str(yolo_onnx), layout="yolov8", score_threshold=0.0, max_persons=20
    )
    detections = detector.detect(picture, "RGB")
    assert len(detections.boxes) >= 5, "the random detector should find several boxes"
    pairs = zip(detections.scores.tolist(), detections.boxes.tolist(), strict=True)
    expected = sorted(pairs, reverse=True)

    persons = answer()
    assert len(persons) == len(expected)
    got = sorted(((box_score, box.tolist()) for box, box_score, _, _ in persons), reverse=True)
    np.testing.assert_allclose([g[0] for g in got], [e[0] for e in expected], atol=1e-4)
    np.testing.assert_allclose([g[1] for g in got], [e[1] for e in expected], atol=1e-2)
    for _, box_score, score, keypoints in persons:
        assert score == pytest.approx(_expected_score(box_score, keypoints, 0.2), abs=1e-5)

    # Both in one request: at most 2 persons (the two best boxes), every keypoint counted.
    results = _set_parameters(
        peer,
        DETECTOR_NS,
        [Parameter("max_persons", value=2), Parameter("keypoint_score_threshold", value=0.0)],
    )
    assert all(r.successful for r in results), results
    persons = answer()
    assert sorted(p[1] for p in persons) == pytest.approx(sorted(e[0] for e in expected[:2]))
    for _, box_score, score, keypoints in persons:
        assert score == pytest.approx(_expected_score(box_score, keypoints, 0.0), abs=1e-5)
        assert score > 0

    # A threshold no keypoint reaches: every person scores 0 (the keypoints are still published).
    (result,) = _set_parameters(
        peer, DETECTOR_NS, [Parameter("keypoint_score_threshold", value=1.0)]
    )
    assert result.successful
    persons = answer()
    assert len(persons) == 2 and all(score == 0.0 for _, _, score, _ in persons)

    # The detector's score threshold: only boxes at or above it.
    cut = float(np.median(detections.scores))
    results = _set_parameters(
        peer,
        DETECTOR_NS,
        [Parameter("max_persons", value=20), Parameter("detector.score_threshold", value=cut)],
    )
    assert all(r.successful for r in results), results
    persons = answer()
    assert len(persons) == int((detections.scores >= cut).sum())
    assert min(p[1] for p in persons) >= cut - 1e-6


# --- runtime parameters are applied between frames, never inside one ---


def test_parameter_changes_wait_for_the_frame_in_progress(tiny_checkpoint: Path, picture) -> None:
    """The node in this process (its worker thread is real), with the estimator's batch call
    instrumented: a change requested while a frame is inside the estimator must not reach it
    before that frame is done, and both parameters of one request arrive together."""
    import rclpy

    from pose_ros.ros.node import PoseNode

    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = [
        Parameter(name, value=str(value) if isinstance(value, Path) else value)
        for name, value in node_parameters(tiny_checkpoint).items()
    ]
    node = PoseNode(context=context, parameter_overrides=overrides)
    try:
        estimator = node.estimator
        real_estimate_batch = estimator.estimate_batch
        inside = threading.Event()
        seen: list[tuple[tuple[float, int], tuple[float, int]]] = []

        def settings() -> tuple[float, int]:
            return (estimator.keypoint_score_threshold, estimator.max_persons)

        def instrumented(frames):
            before = settings()
            inside.set()
            time.sleep(0.5)  # a slow frame: the change arrives meanwhile
            result = real_estimate_batch(frames)
            seen.append((before, settings()))
            return result

        estimator.estimate_batch = instrumented
        # What the subscription does:
        node._inputs._on_image(node.streams[0], _frame("rgb8", picture, next(_stamps)))
        assert inside.wait(30), "the worker never reached the estimator"
        node.set_parameters(
            [Parameter("keypoint_score_threshold", value=0.7), Parameter("max_persons", value=3)]
        )
        assert settings() == (0.2, 20), "applied while the frame was inside the estimator"
        deadline = time.monotonic() + 10
        while (not seen or settings() != (0.7, 3)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == [((0.2, 20), (0.2, 20))]
        assert settings() == (0.7, 3), "the change must apply after the frame"
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


# --- Ctrl-C as a terminal running `ros2 launch` sends it: twice, while frames flow ---


def test_double_ctrl_c_while_processing_ends_cleanly(peer, tiny_checkpoint, picture, tmp_path):
    """The terminal's SIGINT and launch's own SIGINT arrive close together, mid-frame. The node
    must finish its frame, log its summary and exit 0: no traceback, and no "Failed to publish
    log message to rosout: publisher's context is invalid"."""
    namespace = "/pose_test_ctrl_c"
    publisher = peer.node.create_publisher(Image, f"{namespace}/image", reliable(2))
    poses, _ = peer.collect(PersonPoseArray, f"{namespace}/poses", reliable())
    parameters = node_parameters(tiny_checkpoint, **{"qos.reliability": "reliable"})
    with pose_node(tmp_path / "pose_node.log", namespace, parameters) as node:
        frame = _frame("rgb8", picture, next(_stamps))
        assert peer.publish_until(lambda: publisher.publish(frame), lambda: bool(poses))
        for _ in range(10):  # keep the worker busy
            publisher.publish(_frame("rgb8", picture, next(_stamps)))
            peer.spin_for(0.02)
        node.process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        node.process.send_signal(signal.SIGINT)
        code = node.process.wait(timeout=30)
    log = node.log()
    assert code == 0, log[-3000:]
    for problem in ("Traceback", "KeyboardInterrupt", "Failed to publish", "context is invalid"):
        assert problem not in log, log[-3000:]
    assert re.search(r"stopped: \d+ frames received, [1-9]\d* processed", log), log[-2000:]
