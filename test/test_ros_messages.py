"""Pipeline results → PersonPoseArray and RViz markers, the one-slot-per-camera mailbox and the
status line of the node: pure functions and small classes, tested without DDS."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from pose_ros.camera import CameraModelError, PinholeCamera
from pose_ros.drawing import SIDE_COLORS_RGB
from pose_ros.keypoints import SKELETON_EDGES, limb_side
from pose_ros.pipeline import Person
from pose_ros.ros.conversions import camera_from_info
from pose_ros.ros.mailbox import LatestFramesMailbox
from pose_ros.ros.markers import build_marker_array, pixels_to_plane, track_color_rgb
from pose_ros.ros.messages import persons_to_msg
from pose_ros.ros.params import MarkerStyle
from pose_ros.ros.stats import NodeStats, format_status


def _header() -> Header:
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_123, 456
    return header


def _person(offset: float = 0.0, scores: np.ndarray | None = None) -> Person:
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, 0] = 100 + offset + np.arange(17) * 2
    keypoints[:, 1] = 50 + np.arange(17) * 10
    keypoints[:, 2] = np.linspace(0.05, 0.95, 17) if scores is None else scores
    box = np.array([90 + offset, 40, 60, 200], np.float32)
    return Person(box=box, box_score=0.9, score=0.6, keypoints=keypoints)


# --- PersonPoseArray ---


def test_persons_to_msg_copies_everything_in_order() -> None:
    header = _header()
    persons = [_person(0.0), _person(200.0)]
    msg = persons_to_msg(persons, header, 640, 480)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (
        "camera_optical_frame",
        1_700_000_123,
        456,
    )
    assert msg.header is not header  # a copy: later changes to the input do not leak
    assert (msg.image_width, msg.image_height) == (640, 480)
    assert len(msg.persons) == 2
    for person, sent in zip(msg.persons, persons, strict=True):
        assert person.id == -1
        assert person.score == pytest.approx(0.6)
        assert person.box_score == pytest.approx(0.9)
        assert [person.x_min, person.y_min, person.width, person.height] == pytest.approx(
            sent.box.tolist()
        )
        assert len(person.keypoints) == 17
        got = np.array([[k.x, k.y, k.score] for k in person.keypoints])
        np.testing.assert_allclose(got, sent.keypoints, rtol=1e-6)
        assert not any(k.has_position for k in person.keypoints)


def test_persons_to_msg_with_nobody_and_clipped_scores() -> None:
    empty = persons_to_msg([], _header(), 10, 20)
    assert empty.persons == [] and empty.image_width == 10
    odd = Person(
        box=np.zeros(4, np.float32),
        box_score=1.5,
        score=float("nan"),
        keypoints=np.tile(np.array([[1.0, 2.0, 1.2]], np.float32), (17, 1)),
    )
    person = persons_to_msg([odd], _header(), 10, 20).persons[0]
    assert person.box_score == 1.0 and person.score == 0.0
    assert all(k.score == 1.0 for k in person.keypoints)
    with pytest.raises(ValueError, match="17"):
        persons_to_msg([Person(odd.box, 1.0, 1.0, np.zeros((16, 3)))], _header(), 10, 20)


def _with_depth(person: Person, track_id: int = -1) -> Person:
    """``person`` with 3D positions (keypoint k at x = k, y = -k, z = 2 + k / 10 metres); no
    position for keypoints 3 and 9; centre from the torso."""
    positions = np.column_stack(
        [np.arange(17.0), -np.arange(17.0), 2.0 + np.arange(17.0) / 10]
    ).astype(np.float32)
    positions[[3, 9]] = np.nan
    return dataclasses.replace(
        person,
        track_id=track_id,
        positions=positions,
        center=np.array([0.5, -0.25, 2.75], np.float32),
    )


def test_persons_to_msg_carries_track_ids_positions_and_centre() -> None:
    persons = [_with_depth(_person(0.0), track_id=7), _person(200.0)]
    msg = persons_to_msg(persons, _header(), 640, 480)
    first, second = msg.persons
    assert (first.id, second.id) == (7, -1)
    for index, keypoint in enumerate(first.keypoints):
        if index in (3, 9):
            assert not keypoint.has_position
            assert (keypoint.position.x, keypoint.position.y, keypoint.position.z) == (0, 0, 0)
        else:
            assert keypoint.has_position
            got = (keypoint.position.x, keypoint.position.y, keypoint.position.z)
            assert got == pytest.approx((index, -index, 2.0 + index / 10), abs=1e-6)
    assert first.has_center
    assert (first.center.x, first.center.y, first.center.z) == pytest.approx((0.5, -0.25, 2.75))
    # without depth: nothing claimed
    assert not second.has_center and (second.center.x, second.center.z) == (0, 0)
    assert not any(k.has_position for k in second.keypoints)
    # a centre that is not finite is not published as one
    odd = dataclasses.replace(persons[0], center=np.array([np.nan, 0, 1], np.float32))
    assert not persons_to_msg([odd], _header(), 640, 480).persons[0].has_center


# --- markers ---


def test_marker_array_layout() -> None:
    style = MarkerStyle(keypoint_threshold=0.5, sphere_size=0.05, line_width=0.02)
    persons = [_person(0.0), _person(200.0)]
    array = build_marker_array(persons, _header(), 640, 480, style)
    first, *rest = array.markers
    assert first.action == Marker.DELETEALL  # old markers go first: nothing lingers
    assert first.header.frame_id == "camera_optical_frame"
    assert [(m.ns, m.id, m.type) for m in rest] == [
        ("keypoints", 0, Marker.SPHERE_LIST),
        ("skeleton", 0, Marker.LINE_LIST),
        ("keypoints", 1, Marker.SPHERE_LIST),
        ("skeleton", 1, Marker.LINE_LIST),
    ]
    visible = persons[0].keypoints[:, 2] >= 0.5
    spheres, lines = rest[0], rest[1]
    for marker in rest:
        assert marker.header.frame_id == "camera_optical_frame"
        assert marker.header.stamp.sec == 1_700_000_123
        assert marker.action == Marker.ADD
        assert marker.pose.orientation.w == 1.0
        assert len(marker.colors) == len(marker.points)
    assert len(spheres.points) == visible.sum()
    assert spheres.scale.x == pytest.approx(0.05)
    edges = [(a, b) for a, b in SKELETON_EDGES if visible[a] and visible[b]]
    assert edges, "the test person must have visible edges"
    assert len(lines.points) == 2 * len(edges)
    assert lines.scale.x == pytest.approx(0.02)
    # colours per body side, the same as the annotated image's
    for index, (a, b) in enumerate(edges):
        r, g, b_ = SIDE_COLORS_RGB[limb_side((a, b))]
        color = lines.colors[2 * index]
        assert (color.r, color.g, color.b, color.a) == pytest.approx(
            (r / 255, g / 255, b_ / 255, 1)
        )


def test_markers_of_nobody_still_clear_the_old_ones() -> None:
    array = build_marker_array([], _header(), 640, 480, MarkerStyle())
    assert [m.action for m in array.markers] == [Marker.DELETEALL]
    invisible = _person(scores=np.full(17, 0.1, np.float32))
    array = build_marker_array(
        [invisible], _header(), 640, 480, MarkerStyle(keypoint_threshold=0.3)
    )
    assert [m.action for m in array.markers] == [Marker.DELETEALL]  # no empty lists


def test_pixels_to_plane_without_camera_info_uses_the_pixel_scale() -> None:
    uv = np.array([[319.5, 239.5], [419.5, 239.5], [319.5, 39.5]])  # centre, 100 right, 200 up
    xyz = pixels_to_plane(uv, image_width=640, image_height=480, distance=3.0, pixel_scale=0.01)
    np.testing.assert_allclose(xyz, [[0, 0, 3], [1.0, 0, 3], [0, -2.0, 3]], atol=1e-12)


def test_pixels_to_plane_back_projects_through_k() -> None:
    info = CameraInfo(width=640, height=480)
    info.k = [500.0, 0.0, 320.0, 0.0, 400.0, 240.0, 0.0, 0.0, 1.0]
    camera = camera_from_info(info)
    uv = np.array([[320.0, 240.0], [820.0, 640.0]])
    xyz = pixels_to_plane(
        uv, image_width=640, image_height=480, distance=2.0, pixel_scale=1.0, camera=camera
    )
    np.testing.assert_allclose(xyz, [[0, 0, 2], [2.0, 2.0, 2]])
    # The projection of each point through K gives back its pixel.
    projected = xyz[:, :2] / xyz[:, 2:] * [500.0, 400.0] + [320.0, 240.0]
    np.testing.assert_allclose(projected, uv)
    # Same camera, image at half resolution: K scales with it.
    half = camera.for_image(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == pytest.approx((250, 200, 159.75, 119.75))
    with pytest.raises(CameraModelError, match="all zero"):  # uncalibrated: K all zero
        camera_from_info(CameraInfo())


def test_markers_use_the_camera_when_given() -> None:
    info = CameraInfo(width=640, height=480)
    info.k = [500.0, 0.0, 100.0, 0.0, 500.0, 50.0, 0.0, 0.0, 1.0]
    camera = camera_from_info(info)
    person = _person(scores=np.ones(17, np.float32))
    array = build_marker_array(
        [person], _header(), 640, 480, MarkerStyle(plane_distance=5.0), camera
    )
    point = array.markers[1].points[0]
    u, v = person.keypoints[0, :2]
    assert (point.x, point.y, point.z) == pytest.approx(((u - 100) / 100, (v - 50) / 100, 5.0))


def test_markers_with_depth_are_at_their_3d_places_and_skip_keypoints_without_one() -> None:
    person = _with_depth(_person(scores=np.ones(17, np.float32)))
    camera = PinholeCamera(500.0, 500.0, 320.0, 240.0, 640, 480)
    array = build_marker_array([person], _header(), 640, 480, MarkerStyle(), camera)
    spheres, lines = array.markers[1:]
    shown = [k for k in range(17) if k not in (3, 9)]
    got = np.array([[p.x, p.y, p.z] for p in spheres.points])
    np.testing.assert_allclose(got, person.positions[shown], atol=1e-6)  # not the plane
    edges = [(a, b) for a, b in SKELETON_EDGES if a in shown and b in shown]
    assert len(lines.points) == 2 * len(edges) < 2 * len(SKELETON_EDGES)
    ends = np.array([[p.x, p.y, p.z] for p in lines.points]).reshape(-1, 2, 3)
    np.testing.assert_allclose(ends[:, 0], person.positions[[a for a, _ in edges]], atol=1e-6)
    np.testing.assert_allclose(ends[:, 1], person.positions[[b for _, b in edges]], atol=1e-6)


def test_markers_of_tracked_persons_keep_their_id_and_colour() -> None:
    style = MarkerStyle(keypoint_threshold=0.0)
    frame_1 = [_person(0.0), dataclasses.replace(_person(200.0), track_id=12)]
    frame_2 = [dataclasses.replace(_person(30.0), track_id=12), _person(300.0)]  # order changed
    arrays = [
        build_marker_array(f, _header(), 640, 480, style).markers[1:] for f in (frame_1, frame_2)
    ]
    assert [(m.ns, m.id) for m in arrays[0]] == [
        ("keypoints", 0),
        ("skeleton", 0),
        ("tracked_keypoints", 12),
        ("tracked_skeleton", 12),
    ]
    assert [(m.ns, m.id) for m in arrays[1]] == [
        ("tracked_keypoints", 12),
        ("tracked_skeleton", 12),
        ("keypoints", 1),  # untracked persons keep their index in the frame
        ("skeleton", 1),
    ]
    tracked_lines = [arrays[0][3], arrays[1][1]]
    r, g, b = track_color_rgb(12)
    for lines in tracked_lines:
        assert {(c.r, c.g, c.b) for c in lines.colors} == {(r / 255, g / 255, b / 255)}
    # other ids, other colours; the same id, the same colour
    assert len({track_color_rgb(i) for i in range(8)}) == 8
    assert track_color_rgb(12) == track_color_rgb(12)


@pytest.mark.parametrize(
    "camera",
    [
        PinholeCamera(5e-324, 500.0, 320.0, 240.0, 640, 480),
        PinholeCamera(500.0, 500.0, 1e308, 240.0, 640, 480),
    ],
)
def test_markers_are_never_non_finite(camera: PinholeCamera) -> None:
    """A camera built around the K check (extreme but positive values): points that would be
    infinite are left out instead of making RViz refuse the marker."""
    person = _person(scores=np.ones(17, np.float32))
    with np.errstate(over="ignore"):  # the overflow is the point here
        array = build_marker_array([person], _header(), 1280, 960, MarkerStyle(), camera)
    coordinates = [c for m in array.markers for p in m.points for c in (p.x, p.y, p.z)]
    assert np.isfinite(coordinates).all()


# --- mailbox ---


def test_mailbox_keeps_only_the_newest_per_camera_and_counts_the_rest() -> None:
    box: LatestFramesMailbox[int, str] = LatestFramesMailbox()
    assert box.put(0, "a1") is False
    assert box.put(0, "a2") is True
    assert box.put(1, "b1") is False  # another camera's frame replaces nothing
    assert box.put(0, "a3") is True
    assert box.take_all(timeout=0) == {0: "a3", 1: "b1"}
    assert box.take_all(timeout=0.01) == {}
    assert box.dropped == 2


def test_mailbox_wakes_a_waiting_worker() -> None:
    box: LatestFramesMailbox[int, str] = LatestFramesMailbox()
    got: list[dict[int, str]] = []
    worker = threading.Thread(target=lambda: got.append(box.take_all(timeout=5)))
    worker.start()
    time.sleep(0.05)
    box.put(0, "frame")
    worker.join(2)
    assert got == [{0: "frame"}]
    closer = threading.Thread(target=lambda: got.append(box.take_all(timeout=5)))
    closer.start()
    time.sleep(0.05)
    start = time.monotonic()
    box.close()
    closer.join(2)
    assert got == [{0: "frame"}, {}] and time.monotonic() - start < 1
    assert box.put(0, "late") is False and box.take_all(timeout=0) == {}


def test_mailbox_gathers_the_live_cameras_of_one_cycle() -> None:
    """After the first frame of a cycle the worker waits (up to gather_sec) for the other live
    cameras, and not for a camera that stopped."""
    box: LatestFramesMailbox[int, str] = LatestFramesMailbox(live_sec=0.5)
    for camera in (0, 1, 2):  # all three live
        box.put(camera, "warm-up")
    box.take_all(timeout=0)
    got: list[dict[int, str]] = []
    worker = threading.Thread(target=lambda: got.append(box.take_all(5, gather_sec=2.0)))
    box.put(0, "front")
    worker.start()
    time.sleep(0.1)
    box.put(1, "left")
    time.sleep(0.1)
    assert not got, "taken before the third live camera's frame"
    start = time.monotonic()
    box.put(2, "right")
    worker.join(2)
    assert got == [{0: "front", 1: "left", 2: "right"}]
    assert time.monotonic() - start < 1, "waited on after every live camera had a frame"

    # Cameras 1 and 2 stop: the next cycle waits for them once (they were in the last cycle),
    # the one after does not.
    time.sleep(0.6)
    box.put(0, "alone")
    start = time.monotonic()
    assert box.take_all(5, gather_sec=0.3) == {0: "alone"}
    assert 0.25 < time.monotonic() - start < 1
    box.put(0, "alone again")
    start = time.monotonic()
    assert box.take_all(5, gather_sec=0.3) == {0: "alone again"}
    assert time.monotonic() - start < 0.2, "waited for cameras that stopped"


def test_mailbox_waits_for_the_cameras_of_the_last_cycle_however_slow_it_was() -> None:
    """A slow device (cycles longer than live_sec) must not break the batching: the cameras of
    the previous cycle are waited for."""
    box: LatestFramesMailbox[int, str] = LatestFramesMailbox(live_sec=0.1)
    box.put(0, "front")
    box.put(1, "left")
    assert box.take_all(timeout=0) == {0: "front", 1: "left"}
    time.sleep(0.3)  # the cycle took longer than live_sec
    got: list[dict[int, str]] = []
    box.put(0, "front 2")
    worker = threading.Thread(target=lambda: got.append(box.take_all(5, gather_sec=2.0)))
    worker.start()
    time.sleep(0.2)
    box.put(1, "left 2")
    worker.join(2)
    assert got == [{0: "front 2", 1: "left 2"}]


def test_mailbox_does_not_hold_frames_that_waited_already() -> None:
    """A frame posted while the worker was busy has waited: the gather time counts from its
    arrival, so a busy worker takes it at once even with a live camera missing."""
    box: LatestFramesMailbox[int, str] = LatestFramesMailbox(live_sec=5.0)
    box.put(1, "left")
    box.take_all(timeout=0)
    box.put(0, "front")
    time.sleep(0.3)  # the worker was busy
    start = time.monotonic()
    assert box.take_all(5, gather_sec=0.2) == {0: "front"}
    assert time.monotonic() - start < 0.1


# --- status line ---


def test_status_line_reports_rates_latency_and_drops() -> None:
    stats = NodeStats(now=0.0)
    assert format_status(stats.take_window(1.0)) is None  # idle: no line
    for dropped in (False, True, True, False):
        stats.frame_received(dropped)
    stats.frame_processed(latency_ms=100.0, pipeline_ms=80.0, persons=2)
    stats.frame_processed(latency_ms=300.0, pipeline_ms=90.0, persons=0)
    stats.frame_bad()
    line = format_status(stats.take_window(3.0), random_weights=True)
    assert line is not None
    assert "frames in 4, out 2 (1.0 Hz)" in line
    assert "latency p50 200 ms, max 300 ms" in line
    assert "pipeline p50 85 ms, node's own p50 115.0 ms" in line  # median of 20 and 210
    assert "persons 1.0/frame" in line
    assert "dropped 2 (total 2)" in line
    assert "bad frames 1 (total 1)" in line
    assert "RANDOM WEIGHTS" in line
    stats.frame_received(True)
    line = format_status(stats.take_window(4.0))
    assert "dropped 1 (total 3)" in line and "RANDOM" not in line
    assert stats.totals.received == 5 and stats.totals.processed == 2
