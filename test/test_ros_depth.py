"""pose_node with ``use_depth:=true`` over real DDS: colour + a synthetic registered depth image +
camera_info in, 3D keypoint positions out.

The installed node runs in its own process with the tiny real checkpoint and the "full_image"
detector. Its untrained network puts keypoints anywhere in the image, so every assertion is made
per keypoint from the pixel the node published: the synthetic depth image is built around those
pixels (a region at 2.0 m in front of a wall at 4.0 m), and each keypoint must then report what
the depth image holds under it. The tests share one node and run in file order: the first one
needs the node before any camera_info has reached it.
"""

from __future__ import annotations

import array
import itertools
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import MarkerArray

from pose_ros.camera import PinholeCamera
from pose_ros.demo_scene import demo_frames
from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import array_to_image_msg, depth_array_to_msg

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import (
    NodeProcess,
    Peer,
    make_header,
    pose_node,
    reliable,
    run_node_to_exit,
    with_stamp,
)

pytestmark = pytest.mark.ros

NS = "/pose_test_depth"
FRAME_ID = "depth_test_camera_optical_frame"
# 320x240 keeps every message (colour 230 kB, depth 150 kB) below Fast DDS's shared-memory segment:
# larger ones travel as UDP fragments, and a lost fragment of a reliable sample can take seconds to
# repair on a busy machine, which the node (rightly) answers without depth.
WIDTH, HEIGHT = 320, 240
CAMERA = PinholeCamera(fx=262.5, fy=260.0, cx=159.25, cy=120.5, width=WIDTH, height=HEIGHT)
PERSON_M, WALL_M = 2.0, 4.0
#: Seconds between the stamps of successive test frames: far beyond the slop, so a depth image
#: left over from one test never pairs with the next test's colour frame.
STAMP_STEP = 100
_stamps = itertools.count(10_000, STAMP_STEP)


@pytest.fixture(scope="module")
def peer() -> Peer:
    peer = Peer("depth_test_peer")
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def depth_node(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> NodeProcess:
    log = tmp_path_factory.mktemp("depth_node") / "pose_node.log"
    parameters = {
        "model": tiny_checkpoint,
        "detector.backend": "full_image",
        "device": "cpu",
        "use_depth": True,
        # patch radius 2 (5x5) and the band are the defaults; raw frames need a reliable reader
        "qos.reliability": "reliable",
        "markers.keypoint_threshold": 0.0,
    }
    with pose_node(log, NS, parameters) as node:
        yield node
        code = node.interrupt()
        assert code == 0, node.log()[-3000:]
        assert "Traceback" not in node.log(), node.log()[-3000:]


class Io:
    """Publishers and collected outputs of the depth node."""

    def __init__(self, peer: Peer) -> None:
        self.image = peer.node.create_publisher(Image, f"{NS}/image", reliable(5))
        self.depth = peer.node.create_publisher(Image, f"{NS}/depth", reliable(5))
        self.info = peer.node.create_publisher(CameraInfo, f"{NS}/camera_info", reliable(5))
        self.poses, _ = peer.collect(PersonPoseArray, f"{NS}/poses", reliable(20))
        self.markers, _ = peer.collect(MarkerArray, f"{NS}/poses/markers", reliable(5))


@pytest.fixture(scope="module")
def io(peer: Peer, depth_node: NodeProcess) -> Io:
    io = Io(peer)
    # Discovery first: a colour frame whose depth image went out before the node's depth
    # subscription matched would (rightly) be processed without depth.
    publishers = (io.image, io.depth, io.info)
    assert peer.spin_until(
        lambda: all(p.get_subscription_count() > 0 for p in publishers), timeout=30
    ), depth_node.log()[-3000:]
    return io


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """The demo figure (any picture would do: the assertions follow the published pixels)."""
    ((rgb, _),) = list(demo_frames(1, width=WIDTH, height=HEIGHT))
    return rgb


def _camera_info(k: list[float] | None = None) -> CameraInfo:
    info = CameraInfo(header=make_header(0, FRAME_ID), width=WIDTH, height=HEIGHT)
    c = CAMERA
    info.k = k if k is not None else [c.fx, 0.0, c.cx, 0.0, c.fy, c.cy, 0.0, 0.0, 1.0]
    return info


def _exchange(
    peer: Peer,
    node: NodeProcess,
    io: Io,
    picture: np.ndarray,
    depth: Image | None,
    *,
    depth_offset_sec: int = 0,
    want_markers: bool = False,
) -> tuple[PersonPoseArray, MarkerArray | None]:
    """Publish depth (stamp + offset) and colour (stamp) until the node answers the colour frame;
    returns the answer (and the markers of that frame)."""
    stamp = next(_stamps)
    colour = array_to_image_msg(picture, "rgb8", header=make_header(stamp, FRAME_ID))
    if depth is not None:
        depth.header = make_header(stamp + depth_offset_sec, FRAME_ID)

    def publish() -> None:
        if depth is not None:
            io.depth.publish(depth)
        io.image.publish(colour)

    def answered() -> bool:
        markers_ok = not want_markers or bool(_markers_with_stamp(io.markers, stamp))
        return bool(with_stamp(io.poses, stamp)) and markers_ok

    assert peer.publish_until(publish, answered, timeout=60, period=2.0), (
        f"no answer for the frame stamped {stamp}:\n{node.log()[-3000:]}"
    )
    markers = _markers_with_stamp(io.markers, stamp)
    return with_stamp(io.poses, stamp)[0], (markers[0] if markers else None)


def _markers_with_stamp(arrays: list[MarkerArray], stamp: int) -> list[MarkerArray]:
    return [a for a in arrays if a.markers and a.markers[0].header.stamp.sec == stamp]


def _keypoints(result: PersonPoseArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uv (17, 2), positions (17, 3), has_position (17,)) of the one person (full_image)."""
    assert len(result.persons) == 1
    person = result.persons[0]
    uv = np.array([[k.x, k.y] for k in person.keypoints], np.float64)
    xyz = np.array([[k.position.x, k.position.y, k.position.z] for k in person.keypoints])
    has = np.array([k.has_position for k in person.keypoints])
    return uv, xyz, has


def _no_positions(result: PersonPoseArray) -> bool:
    return all(
        not k.has_position and (k.position.x, k.position.y, k.position.z) == (0, 0, 0)
        for p in result.persons
        for k in p.keypoints
    ) and not any(p.has_center for p in result.persons)


def _uniform_depth_mm(metres: float) -> Image:
    return depth_array_to_msg(np.full((HEIGHT, WIDTH), round(metres * 1000), np.uint16), "16UC1")


# --- before any camera_info ---


def test_depth_without_camera_info_gives_no_positions_and_one_warning(
    peer, depth_node, io, picture
) -> None:
    for _ in range(2):
        result, _ = _exchange(peer, depth_node, io, picture, _uniform_depth_mm(3.0))
        assert _no_positions(result)
    warnings = re.findall(r"\[WARN\].*no camera_info.*", depth_node.log())
    assert len(warnings) == 1, warnings
    assert "depth" in warnings[0] and "camera_info" in warnings[0]


# --- camera_info that cannot be a camera ---


@pytest.mark.parametrize(
    ("k", "reason"),
    [
        ([5e-324, 0, 300, 0, 500, 200, 0, 0, 1], r"fx = 4\.94066e-324 px is outside"),
        ([500, 0, 1e308, 0, 500, 200, 0, 0, 1], r"cx = 1e\+308 px is far outside the image"),
        ([float("nan")] * 9, r"K has non-finite values"),
    ],
)
def test_insane_camera_info_is_refused_with_the_reason(
    peer, depth_node, io, picture, k, reason
) -> None:
    start = depth_node.log_size()
    info = _camera_info([float(v) for v in k])
    depth_node.wait_for_log(
        r"camera_info refused: " + reason,
        start=start,
        timeout=30,
        while_waiting=lambda: (io.info.publish(info), peer.spin_for(0.3)),
    )
    assert "K is zero" not in depth_node.log(start)
    result, markers = _exchange(
        peer, depth_node, io, picture, _uniform_depth_mm(3.0), want_markers=True
    )
    assert _no_positions(result)  # no usable K: no positions
    coordinates = [c for m in markers.markers for p in m.points for c in (p.x, p.y, p.z)]
    assert coordinates and np.isfinite(coordinates).all()  # RViz would refuse the rest


# --- with camera_info: positions that match the synthetic truth ---


@pytest.fixture(scope="module")
def calibrated(peer, depth_node, io) -> None:
    start = depth_node.log_size()
    info = _camera_info()
    depth_node.wait_for_log(
        r"camera_info received",
        start=start,
        timeout=30,
        while_waiting=lambda: (io.info.publish(info), peer.spin_for(0.3)),
    )


def test_flat_depth_gives_every_keypoint_its_back_projection(
    peer, depth_node, io, picture, calibrated
) -> None:
    """32FC1 metres, one distance everywhere: every keypoint's position is its pixel back-projected
    at that distance."""
    depth = depth_array_to_msg(np.full((HEIGHT, WIDTH), 3.25, np.float32), "32FC1")
    result, _ = _exchange(peer, depth_node, io, picture, depth)
    uv, xyz, has = _keypoints(result)
    assert has.all()
    np.testing.assert_allclose(xyz, CAMERA.back_project(uv, 3.25), atol=1e-4)
    person = result.persons[0]
    assert person.has_center and person.center.z == pytest.approx(3.25, abs=1e-4)


def _person_region(uv: np.ndarray, person_ids: list[int], radius: int) -> np.ndarray:
    """(H, W) bool: discs of ``radius`` pixels around the given keypoints."""
    region = np.zeros((HEIGHT, WIDTH), np.uint8)
    for u, v in uv[person_ids]:
        cv2.circle(region, (round(u), round(v)), radius, 1, -1)
    return region.astype(bool)


def test_person_in_front_of_a_wall(peer, depth_node, io, picture, calibrated) -> None:
    """A region at 2.0 m around 12 of the keypoints the node finds in this picture, a wall at
    4.0 m elsewhere (16UC1 millimetres, equal stamps). Keypoints in the region: has_position, z
    within 2 cm of 2.0 m, x and y the back-projection of their pixel. Keypoints on the wall: the
    wall or no position, never a depth in between."""
    # The node's keypoints for this picture (deterministic: the same weights, the same pixels).
    first, _ = _exchange(peer, depth_node, io, picture, _uniform_depth_mm(3.0))
    uv0, _, _ = _keypoints(first)
    person_ids = list(range(12))
    region = _person_region(uv0, person_ids, radius=15)
    depth_mm = np.where(region, round(PERSON_M * 1000), round(WALL_M * 1000)).astype(np.uint16)
    result, markers = _exchange(
        peer, depth_node, io, picture, depth_array_to_msg(depth_mm, "16UC1"), want_markers=True
    )
    uv, xyz, has = _keypoints(result)
    # Each keypoint is judged by the pixel published with this answer (an untrained network's
    # near-tied heatmap peaks may move one between runs: the judgement stays honest).
    radius = 2  # depth.patch_radius default
    on_person = on_wall = 0
    for k in range(17):
        col, row = int(np.floor(uv[k, 0] + 0.5)), int(np.floor(uv[k, 1] + 0.5))
        window = region[
            max(row - radius, 0) : row + radius + 1, max(col - radius, 0) : col + radius + 1
        ]
        if window.all():  # the whole patch sees the person
            on_person += 1
            assert has[k], (k, uv[k])
            assert xyz[k, 2] == pytest.approx(PERSON_M, abs=0.02), k
            np.testing.assert_allclose(xyz[k], CAMERA.back_project(uv[k], xyz[k, 2]), atol=1e-4)
        elif not window.any():  # the whole patch sees the wall
            on_wall += 1
            assert not has[k] or xyz[k, 2] == pytest.approx(WALL_M, abs=0.02), (k, xyz[k])
        else:  # the patch sees both: one of them, never in between
            assert not has[k] or min(abs(xyz[k, 2] - PERSON_M), abs(xyz[k, 2] - WALL_M)) < 0.02
        if not has[k]:
            assert tuple(xyz[k]) == (0.0, 0.0, 0.0)
    # The region was drawn around 12 of the keypoints: most patches lie wholly on the person.
    assert on_person >= 9, (on_person, uv, uv0)
    print(
        f"keypoints: {has.sum()} with a position, {on_person} with their patch on the person, "
        f"{on_wall} on the wall"
    )

    # The centre: the median of the torso keypoints' positions (shoulders 5, 6, hips 11, 12).
    person = result.persons[0]
    torso = [k for k in (5, 6, 11, 12) if has[k]]
    assert person.has_center == bool(torso)
    if torso:
        centre = (person.center.x, person.center.y, person.center.z)
        np.testing.assert_allclose(centre, np.median(xyz[torso], axis=0), atol=1e-4)

    # Markers: the spheres are the keypoints with a position, at that position.
    spheres = markers.markers[1]
    assert spheres.header.frame_id == FRAME_ID
    got = np.array([[p.x, p.y, p.z] for p in spheres.points])
    np.testing.assert_allclose(got, xyz[has], atol=1e-5)


# --- unsynchronised streams ---


def test_unsynchronised_depth_is_not_used_and_the_frame_is_processed(
    peer, depth_node, io, picture, calibrated
) -> None:
    """Depth stamps 1 s after the colour stamps (slop 0.03 s): the frames are answered without
    positions, counted, and a throttled warning (at most every 5 s) says why."""
    start = depth_node.log_size()
    result, _ = _exchange(peer, depth_node, io, picture, _uniform_depth_mm(3.0), depth_offset_sec=1)
    assert _no_positions(result)
    warning = depth_node.wait_for_log(
        r"\[WARN\].*without depth \((\d+) frames? so far\): a depth image stamped 1.000 s after "
        r"this frame arrived, none within depth.slop_sec = 0.03 s of it: .* not synchronised",
        start=start,
        timeout=30,
        # more unsynchronised frames while the throttle of an earlier warning runs out
        while_waiting=lambda: _exchange(
            peer, depth_node, io, picture, _uniform_depth_mm(3.0), depth_offset_sec=1
        ),
    )
    assert int(warning.group(1)) >= 1
    # A synchronised pair still gets positions afterwards.
    result, _ = _exchange(peer, depth_node, io, picture, _uniform_depth_mm(3.0))
    assert _keypoints(result)[2].all()


# --- bad depth input: a clear error, the frame is answered without positions, the node goes on ---


def _bad_depth(kind: str) -> tuple[Image, str]:
    if kind == "wrong_encoding":
        msg = array_to_image_msg(np.zeros((HEIGHT, WIDTH, 3), np.uint8), "rgb8")
        return msg, r"encoding 'rgb8', which is not a depth encoding"
    if kind == "short_data":
        msg = Image(height=HEIGHT, width=WIDTH, encoding="16UC1", step=WIDTH * 2)
        msg.data = array.array("B", bytes(WIDTH * 2 * 10))
        return msg, r"fewer than height x step"
    if kind == "nan_only":
        nan = np.full((HEIGHT, WIDTH), np.nan, np.float32)
        return depth_array_to_msg(nan, "32FC1"), r"has no valid reading"
    if kind == "mismatched_size":
        square = np.full((HEIGHT, HEIGHT), 2000, np.uint16)
        return (
            depth_array_to_msg(square, "16UC1"),
            rf"depth image is {HEIGHT}x{HEIGHT} but the colour .*{WIDTH}x{HEIGHT}",
        )
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["wrong_encoding", "short_data", "nan_only", "mismatched_size"])
def test_bad_depth_is_refused_clearly_and_the_node_keeps_answering(
    peer, depth_node, io, picture, calibrated, kind
) -> None:
    bad, message = _bad_depth(kind)
    start = depth_node.log_size()
    result, _ = _exchange(peer, depth_node, io, picture, bad)
    assert _no_positions(result)
    depth_node.wait_for_log(
        r"\[ERROR\].*depth.*" + NS + "/depth: .*" + message, start=start, timeout=10
    )
    # The next good pair gets its positions.
    result, _ = _exchange(peer, depth_node, io, picture, _uniform_depth_mm(2.5))
    _, xyz, has = _keypoints(result)
    assert has.all(), depth_node.log(start)
    np.testing.assert_allclose(xyz[:, 2], 2.5, atol=1e-4)
    assert depth_node.process.poll() is None


# --- the depth parameters ---


def test_depth_range_ends_are_checked_together(peer, depth_node, io) -> None:
    client = peer.node.create_client(SetParameters, f"{NS}/pose_node/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=20), "no parameter service"

        def set_parameters(*parameters: Parameter):
            request = SetParameters.Request(parameters=[p.to_parameter_msg() for p in parameters])
            future = client.call_async(request)
            assert peer.spin_until(future.done, 20), "parameter service did not answer"
            return future.result().results

        # Each value is in its own range, but min_m >= max_m together: refused, with the reason.
        (result,) = set_parameters(Parameter("depth.max_m", value=0.05))
        assert not result.successful and "min_m < max_m" in result.reason, result.reason
        first, second = set_parameters(
            Parameter("depth.min_m", value=0.5), Parameter("depth.max_m", value=8.0)
        )
        assert first.successful and second.successful, (first.reason, second.reason)
        (result,) = set_parameters(Parameter("depth.slop_sec", value=0.1))
        assert not result.successful and "read-only" in result.reason, result.reason
    finally:
        peer.node.destroy_client(client)


def test_contradictory_depth_settings_stop_the_node_at_start(tiny_checkpoint) -> None:
    base = {"model": tiny_checkpoint, "detector.backend": "full_image", "device": "cpu"}
    for extra, words in (
        ({"use_depth": True, "depth.min_m": 20.0, "depth.max_m": 10.0}, ["min_m < max_m"]),
        ({"use_depth": True, "use_camera_info": False}, ["use_depth:=true needs use_camera_info"]),
    ):
        result = run_node_to_exit("/pose_test_depth_bad", {**base, **extra})
        assert result.returncode == 1, result.stdout
        assert "[FATAL]" in result.stdout and "Traceback" not in result.stdout, result.stdout
        for word in words:
            assert word in result.stdout, result.stdout
