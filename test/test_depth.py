"""Keypoints in metres (pose_ros.depth, pose_ros.camera) and depth images → metres
(pose_ros.ros.conversions), without DDS: back-projection against hand-computed points, each depth
encoding and unit, invalid readings, the image border, the person's foreground band, mismatched
sizes, byte order, and K validation."""

from __future__ import annotations

import array

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from pose_ros.camera import CameraModelError, PinholeCamera
from pose_ros.depth import (
    TORSO_KEYPOINTS,
    DepthConfig,
    DepthError,
    attach_positions,
    keypoint_depths,
    match_depth_size,
)
from pose_ros.keypoints import COCO_KEYPOINT_NAMES
from pose_ros.pipeline import Person
from pose_ros.ros.conversions import (
    ImageConversionError,
    camera_from_info,
    depth_array_to_msg,
    depth_msg_to_array,
)

MAX_PIXELS = 10_000_000
CAMERA = PinholeCamera(fx=500.0, fy=400.0, cx=320.0, cy=240.0, width=640, height=480)
NAN = np.float32(np.nan)


def _person(uv: np.ndarray) -> Person:
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, :2] = uv
    keypoints[:, 2] = 0.9
    return Person(box=np.zeros(4, np.float32), box_score=1.0, score=0.9, keypoints=keypoints)


def _wall(depth: float = 4.0, width: int = 640, height: int = 480) -> np.ndarray:
    return np.full((height, width), depth, np.float32)


# --- the camera model ---


def test_back_projection_against_hand_computed_points() -> None:
    uv = np.array([[320.0, 240.0], [820.0, 640.0], [70.0, 40.0], [320.5, 239.0]])
    z = np.array([2.0, 1.0, 4.0, 3.0])
    points = CAMERA.back_project(uv, z)
    # x = (u - cx) / fx * z, y = (v - cy) / fy * z
    expected = [
        [0.0, 0.0, 2.0],  # the principal point is on the optical axis
        [1.0, 1.0, 1.0],  # (500 / 500, 400 / 400) * 1 m
        [-2.0, -2.0, 4.0],  # (-250 / 500, -200 / 400) * 4 m: left and up are negative
        [0.003, -0.0075, 3.0],
    ]
    np.testing.assert_allclose(points, expected, atol=1e-12)
    np.testing.assert_allclose(CAMERA.project(points), uv, atol=1e-9)
    assert np.isnan(CAMERA.back_project(uv[:1], np.nan)).all()


def test_k_for_a_resized_stream() -> None:
    half = CAMERA.for_image(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == pytest.approx((250, 200, 159.75, 119.75))
    # the same point projects to the same place in both images (pixel-edge scaling)
    point = CAMERA.back_project(np.array([100.0, 50.0]), 2.0)
    np.testing.assert_allclose(half.project(point), [(100 + 0.5) / 2 - 0.5, (50 + 0.5) / 2 - 0.5])


def _info(k: list[float], width: int = 640, height: int = 480) -> CameraInfo:
    info = CameraInfo(width=width, height=height)
    info.k = [float(v) for v in k]
    return info


def test_camera_info_gives_the_camera() -> None:
    camera = camera_from_info(_info([500, 0, 320, 0, 400, 240, 0, 0, 1]))
    assert camera == CAMERA


@pytest.mark.parametrize(
    ("k", "words"),
    [
        ([5e-324, 0, 320, 0, 500, 240, 0, 0, 1], ["fx = 4.94066e-324 px", "sane range"]),
        ([500, 0, 320, 0, 1e9, 240, 0, 0, 1], ["fy = 1e+09 px", "sane range"]),
        ([500, 0, 1e308, 0, 500, 240, 0, 0, 1], ["cx = 1e+308 px", "far outside the image"]),
        ([500, 0, 320, 0, 500, -5000, 0, 0, 1], ["cy = -5000 px", "far outside"]),
        ([500, 0, 320, 0, -500, 240, 0, 0, 1], ["fy = -500 px"]),
        ([np.nan] * 9, ["non-finite", "K[0] = nan"]),
        ([500, 0, 320, 0, 500, np.inf, 0, 0, 1], ["non-finite", "K[5] = inf"]),
    ],
)
def test_insane_k_is_refused_with_the_reason(k: list[float], words: list[str]) -> None:
    with pytest.raises(CameraModelError) as caught:
        camera_from_info(_info(k))
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert "zero" not in message  # an all-NaN K is not "K is zero"
    assert not caught.value.uncalibrated


def test_all_zero_k_is_an_uncalibrated_camera() -> None:
    with pytest.raises(CameraModelError, match="all zero") as caught:
        camera_from_info(CameraInfo())
    assert caught.value.uncalibrated


def test_principal_point_bound_without_image_size() -> None:
    # A CameraInfo without width/height: an absolute bound still refuses 1e308.
    assert camera_from_info(_info([500, 0, 320, 0, 500, 240, 0, 0, 1], 0, 0)).cx == 320
    with pytest.raises(CameraModelError, match="cx = 1e\\+308"):
        camera_from_info(_info([500, 0, 1e308, 0, 500, 240, 0, 0, 1], 0, 0))


# --- depth images: encodings and units ---


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
@pytest.mark.parametrize("padding", [0, 6])
def test_16bit_depth_is_millimetres(encoding: str, padding: int) -> None:
    mm = np.array([[1000, 2500, 0], [65535, 1, 4000]], np.uint16)
    msg = depth_array_to_msg(mm, encoding, step=3 * 2 + padding)
    metres = depth_msg_to_array(msg, max_pixels=MAX_PIXELS)
    assert metres.dtype == np.float32 and metres.shape == (2, 3)
    np.testing.assert_allclose(
        metres, [[1.0, 2.5, np.nan], [65.535, 0.001, 4.0]], rtol=1e-6, equal_nan=True
    )


def test_big_endian_16bit_depth() -> None:
    mm = np.array([[1000, 2500], [258, 4000]], np.uint16)  # 258 = 0x0102: a swap reads 513
    msg = depth_array_to_msg(mm, "16UC1", big_endian=True)
    assert msg.is_bigendian == 1 and bytes(msg.data[:2]) == b"\x03\xe8"
    metres = depth_msg_to_array(msg, max_pixels=MAX_PIXELS)
    np.testing.assert_allclose(metres, [[1.0, 2.5], [0.258, 4.0]], rtol=1e-6)


@pytest.mark.parametrize("big_endian", [False, True])
def test_32bit_float_depth_is_metres_and_invalid_values_are_no_reading(big_endian: bool) -> None:
    values = np.array([[2.0, 0.0, np.nan, np.inf], [-np.inf, -1.0, 0.5, 12.25]], np.float32)
    msg = depth_array_to_msg(values, "32FC1", step=4 * 4 + 3, big_endian=big_endian)
    metres = depth_msg_to_array(msg, max_pixels=MAX_PIXELS)
    expected = [[2.0, np.nan, np.nan, np.nan], [np.nan, np.nan, 0.5, 12.25]]
    np.testing.assert_array_equal(metres, np.array(expected, np.float32))


def _raw_depth(width: int, height: int, encoding: str, step: int, data_len: int) -> Image:
    msg = Image(width=width, height=height, encoding=encoding, step=step)
    msg.data = array.array("B", bytes(data_len))
    return msg


@pytest.mark.parametrize(
    ("msg", "kind", "words"),
    [
        (_raw_depth(4, 2, "rgb8", 12, 24), "encoding", ["'rgb8'", "16UC1", "32FC1 (metres)"]),
        (_raw_depth(4, 2, "16UC1", 8, 15), "data_size", ["15 bytes", "2 x 8 = 16"]),
        (_raw_depth(4, 2, "32FC1", 12, 24), "step", ["step 12", "16 bytes"]),
        (_raw_depth(0, 2, "16UC1", 0, 0), "empty", ["empty depth image"]),
        (_raw_depth(5000, 4000, "16UC1", 10000, 8), "too_large", ["exceeds max_image_pixels"]),
    ],
)
def test_bad_depth_images_are_refused(msg: Image, kind: str, words: list[str]) -> None:
    with pytest.raises(ImageConversionError) as caught:
        depth_msg_to_array(msg, max_pixels=MAX_PIXELS)
    assert caught.value.kind == kind
    for word in words:
        assert word in str(caught.value), str(caught.value)


# --- the lookup: patches, range, border, band ---


def test_patch_median_ignores_nan_zero_and_out_of_range_readings() -> None:
    depth = _wall(2.0)
    # Around (100, 100): a 5x5 window with NaN, 0 (converted: NaN), too near, too far and two
    # real readings of 2.1 that move the median of the 25 - 7 = 18 valid 2.0/2.1 readings nowhere.
    window = depth[98:103, 98:103]
    window[0, :3] = np.nan
    window[1, 0] = 0.0  # a raw zero that slipped through: below min_m
    window[1, 1] = 0.05  # below min_m
    window[1, 2] = 55.0  # beyond max_m
    window[4, 4] = 2.1
    uv = np.array([[[100.0, 100.0]]])
    config = DepthConfig(min_m=0.1, max_m=10.0, patch_radius=2)
    assert keypoint_depths(depth, uv, config)[0, 0] == pytest.approx(2.0)
    # all 25 invalid: no position (NaN), not a zero, not a neighbour's value
    depth[98:103, 98:103] = np.nan
    depth[98, 98] = 0.0
    assert np.isnan(keypoint_depths(depth, uv, config)[0, 0])
    # radius 3 reaches valid readings again
    assert keypoint_depths(depth, uv, DepthConfig(patch_radius=3))[0, 0] == pytest.approx(2.0)


def test_keypoint_at_the_border_uses_the_part_of_its_window_inside_the_image() -> None:
    depth = _wall(3.0, 64, 48)
    depth[:, 0] = 1.0  # the first column is nearer
    config = DepthConfig(patch_radius=2, person_band_m=5.0)
    # A keypoint on the left edge: 5 rows x 3 columns of its window lie inside, 5 of them 1.0
    # and 10 of them 3.0: median 3.0. Clipping the indices instead of masking them would count
    # the edge column three times (15 x 1.0 against 10 x 3.0: median 1.0).
    uv = np.array([[[-0.5, 20.0], [0.0, 20.0], [63.4, 47.4], [-0.5, -0.5]]])
    z = keypoint_depths(depth, uv, config)[0]
    assert z[0] == pytest.approx(3.0) and z[1] == pytest.approx(3.0)
    assert z[2] == pytest.approx(3.0)  # the bottom-right corner: 3 x 3 inside
    assert z[3] == pytest.approx(3.0)  # the top-left corner: 3 x 3 inside, 3 of them 1.0
    depth[:, 1] = 1.0
    assert keypoint_depths(depth, uv, config)[0, 0] == pytest.approx(1.0)  # now 10 of 15


def test_wrist_surrounded_by_wall_takes_the_persons_depth() -> None:
    """A thin forearm at 2.0 m in front of a wall at 4.0 m: the wrist's 7x7 window sees more wall
    than arm, yet the wrist gets the arm's depth; a keypoint wholly on the wall gets none."""
    depth = _wall(4.0)
    depth[100:400, 250:350] = 2.0  # torso
    depth[200:203, 350:450] = 2.0  # forearm, 3 pixels thick
    uv = np.full((17, 2), 300.0)
    uv[:, 1] = np.linspace(120, 380, 17)  # 16 keypoints on the torso
    uv[9] = (430.0, 201.0)  # left wrist on the forearm
    uv[10] = (600.0, 50.0)  # right wrist on the wall
    config = DepthConfig(patch_radius=3, person_band_m=0.75)
    z = keypoint_depths(depth, uv[None], config)[0]
    assert z[9] == pytest.approx(2.0)  # 21 arm readings against 28 wall readings
    assert np.isnan(z[10])  # on the wall: no position, never the wall taken for the person
    assert np.allclose(np.delete(z, [9, 10]), 2.0)
    # Without the band (wide enough to hold the wall), the wrist's median would be the wall's.
    wide = keypoint_depths(depth, uv[None], DepthConfig(patch_radius=3, person_band_m=5.0))[0]
    assert wide[9] == pytest.approx(4.0) and wide[10] == pytest.approx(4.0)


def test_the_median_never_interpolates_between_surfaces() -> None:
    """A window that sees two readings of the person (2.0) and two of the wall (4.0), the rest no
    reading: the depth is one of them, not the 3.0 between (the mean of the middle two)."""
    depth = np.full((40, 40), np.nan, np.float32)
    depth[19:21, 19] = 2.0
    depth[19:21, 20] = 4.0
    uv = np.array([[[20.0, 20.0]]])
    z = keypoint_depths(depth, uv, DepthConfig(patch_radius=1, person_band_m=10.0))[0, 0]
    assert z in (2.0, 4.0), z


def test_persons_are_independent() -> None:
    depth = _wall(6.0)
    depth[:, :300] = 1.5
    depth[:, 340:] = 3.0
    near = np.column_stack([np.full(17, 150.0), np.linspace(50, 400, 17)])
    far = near + np.array([350.0, 0.0])
    z = keypoint_depths(depth, np.stack([near, far]), DepthConfig())
    assert np.allclose(z[0], 1.5) and np.allclose(z[1], 3.0)


def test_non_finite_keypoints_get_no_position() -> None:
    uv = np.array([[[np.nan, 10.0], [10.0, np.inf], [10.0, 10.0]]])
    z = keypoint_depths(_wall(2.0, 20, 20), uv, DepthConfig())
    assert np.isnan(z[0, :2]).all() and z[0, 2] == pytest.approx(2.0)


# --- attach_positions ---


def _standing_person() -> tuple[np.ndarray, np.ndarray]:
    """(uv (17, 2), depth) of a person at 2.0 m in front of a wall at 4.0 m (right wrist off the
    body, on the wall)."""
    depth = _wall(4.0)
    depth[60:440, 240:400] = 2.0
    uv = np.column_stack([np.linspace(250, 390, 17), np.linspace(70, 430, 17)])
    uv[COCO_KEYPOINT_NAMES.index("right_wrist")] = (560.0, 300.0)
    return uv, depth


def test_attach_positions_back_projects_each_keypoint_and_finds_the_centre() -> None:
    uv, depth = _standing_person()
    (person,) = attach_positions([_person(uv)], depth, CAMERA, DepthConfig())
    assert person.positions.shape == (17, 3) and person.positions.dtype == np.float32
    wrist = COCO_KEYPOINT_NAMES.index("right_wrist")
    on_body = np.delete(np.arange(17), wrist)
    expected = np.column_stack(
        [(uv[:, 0] - 320.0) / 500.0 * 2.0, (uv[:, 1] - 240.0) / 400.0 * 2.0, np.full(17, 2.0)]
    )
    np.testing.assert_allclose(person.positions[on_body], expected[on_body], atol=1e-5)
    assert np.isnan(person.positions[wrist]).all()
    torso = expected[list(TORSO_KEYPOINTS)]
    np.testing.assert_allclose(person.center, np.median(torso, axis=0), atol=1e-5)
    # the rest of the person is unchanged
    np.testing.assert_array_equal(person.keypoints[:, :2], uv.astype(np.float32))


def test_centre_is_none_without_torso_positions() -> None:
    uv, depth = _standing_person()
    uv[list(TORSO_KEYPOINTS)] = (600.0, 20.0)  # torso keypoints on the wall
    (person,) = attach_positions([_person(uv)], depth, CAMERA, DepthConfig())
    assert person.center is None
    assert not np.isnan(person.positions[0]).any()


def test_depth_of_half_size_is_scaled_without_inventing_values() -> None:
    uv, depth = _standing_person()
    half = depth[::2, ::2].copy()
    assert half.shape == (240, 320)
    (person,) = attach_positions([_person(uv)], half, CAMERA, DepthConfig(), image_size=(480, 640))
    (full,) = attach_positions([_person(uv)], depth, CAMERA, DepthConfig())
    np.testing.assert_allclose(person.positions, full.positions, atol=1e-5)
    scaled = match_depth_size(half, 640, 480)
    assert scaled.shape == (480, 640)
    assert set(np.unique(scaled).tolist()) == {2.0, 4.0}  # nearest neighbour: no blend
    # the camera describes the colour image: the depth's own size does not change K
    assert match_depth_size(depth, 640, 480) is depth


@pytest.mark.parametrize("shape", [(480, 480), (360, 640), (100, 101)])
def test_depth_of_another_aspect_ratio_is_refused(shape: tuple[int, int]) -> None:
    uv, _ = _standing_person()
    with pytest.raises(DepthError) as caught:
        attach_positions(
            [_person(uv)], _wall(2.0, shape[1], shape[0]), CAMERA, image_size=(480, 640)
        )
    assert caught.value.kind == "size"
    assert f"{shape[1]}x{shape[0]}" in str(caught.value) and "640x480" in str(caught.value)


def test_depth_without_any_reading_is_an_error() -> None:
    uv, _ = _standing_person()
    with pytest.raises(DepthError, match="no valid reading") as caught:
        attach_positions([_person(uv)], np.full((480, 640), np.nan, np.float32), CAMERA)
    assert caught.value.kind == "no_reading"
    # readings exist but none near the keypoints: not an error, just no positions
    depth = np.full((480, 640), np.nan, np.float32)
    depth[0, 0] = 3.0
    (person,) = attach_positions([_person(uv)], depth, CAMERA)
    assert np.isnan(person.positions).all() and person.center is None


def test_nobody_gives_nobody() -> None:
    assert attach_positions([], _wall(), CAMERA) == []


def test_depth_config_is_checked() -> None:
    with pytest.raises(ValueError, match="min_m < max_m"):
        DepthConfig(min_m=3.0, max_m=2.0)
    with pytest.raises(ValueError, match="person_band_m"):
        DepthConfig(person_band_m=0.0)


def test_demo_scene_depth_gives_the_figure_its_true_positions() -> None:
    """The demo's depth image of its figure: with the keypoints the figure was drawn from, every
    keypoint comes back at the figure's distance, at its pixel's back-projection (the demo reports
    the 3D error of the node's keypoints against exactly this truth)."""
    from pose_ros.demo_scene import (
        FIGURE_DISTANCE_M,
        WALL_DISTANCE_M,
        figure_keypoints,
        render_depth,
    )

    for t in (0.0, 0.7, 1.9):
        truth = figure_keypoints(t)
        depth = render_depth(truth)
        assert depth.shape == (480, 640) and depth.dtype == np.float32
        assert set(np.unique(depth).tolist()) == {FIGURE_DISTANCE_M, WALL_DISTANCE_M}
        assert (depth == WALL_DISTANCE_M).mean() > 0.8  # a figure, not a flat wall
        (person,) = attach_positions([_person(truth)], depth, CAMERA)
        np.testing.assert_allclose(
            person.positions, CAMERA.back_project(truth, FIGURE_DISTANCE_M), atol=1e-4
        )
