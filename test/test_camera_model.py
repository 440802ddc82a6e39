"""The camera model as image_geometry defines it (pose_ros.camera): pixels of a raw image are
undistorted with K and D and turned into rays through P; pixels of a rectified image go through P
alone. Judged against OpenCV's own projection of known 3D points."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from pose_ros.camera import CameraModelError, PinholeCamera
from pose_ros.ros.conversions import camera_from_info

K = np.array([[610.0, 0.0, 318.0], [0.0, 605.0, 242.0], [0.0, 0.0, 1.0]])
DISTORTIONS = {
    "plumb_bob": np.array([-0.28, 0.09, 0.001, -0.0005, -0.012]),
    "rational_polynomial": np.array([0.5, -0.1, 0.001, 0.0005, 0.02, 0.8, -0.05, 0.05]),
}


def _points(count: int = 60) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.stack(
        [rng.uniform(-0.8, 0.8, count), rng.uniform(-0.6, 0.6, count), rng.uniform(1.5, 4, count)],
        axis=1,
    )


def _projection(model: str) -> np.ndarray:
    """P as a calibration tool writes it for a monocular camera: the new camera matrix of the
    rectified image, no translation."""
    new_k, _ = cv2.getOptimalNewCameraMatrix(K, DISTORTIONS[model], (640, 480), 0)
    return np.hstack([new_k, np.zeros((3, 1))])


def _info(model: str, p: np.ndarray) -> CameraInfo:
    return CameraInfo(
        width=640,
        height=480,
        distortion_model=model,
        d=DISTORTIONS[model].tolist(),
        k=K.reshape(-1).tolist(),
        r=np.eye(3).reshape(-1).tolist(),
        p=p.reshape(-1).tolist(),
    )


@pytest.mark.parametrize("model", sorted(DISTORTIONS))
def test_raw_pixels_are_undistorted_with_k_and_d(model: str) -> None:
    points = _points()
    raw, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, DISTORTIONS[model])
    camera = camera_from_info(_info(model, _projection(model)))
    recovered = camera.back_project(raw[:, 0], points[:, 2])
    np.testing.assert_allclose(recovered, points, atol=1e-5)
    # K alone (the distortion ignored) is centimetres off at the image border.
    ideal = PinholeCamera.from_k(K.reshape(-1), 640, 480).back_project(raw[:, 0], points[:, 2])
    assert np.abs(ideal - points).max() > 0.01


@pytest.mark.parametrize("model", sorted(DISTORTIONS))
def test_rectified_pixels_go_through_p_and_d_is_not_applied(model: str) -> None:
    points = _points()
    p = _projection(model)
    rectified, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), p[:, :3], None)
    camera = camera_from_info(_info(model, p), rectified=True)
    np.testing.assert_allclose(
        camera.back_project(rectified[:, 0], points[:, 2]), points, atol=1e-9
    )
    # Undistorting pixels that are rectified already moves them.
    raw_reading = camera_from_info(_info(model, p)).back_project(rectified[:, 0], points[:, 2])
    assert np.abs(raw_reading - points).max() > 0.01


def test_a_resized_stream_scales_k_and_p() -> None:
    model = "plumb_bob"
    points = _points()
    camera = camera_from_info(_info(model, _projection(model)))
    raw, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, DISTORTIONS[model])
    half = camera.for_image(320, 240)
    # pixel centres: c -> (c + 0.5) / 2 - 0.5
    np.testing.assert_allclose(
        half.back_project((raw[:, 0] + 0.5) / 2 - 0.5, points[:, 2]), points, atol=1e-5
    )


def test_unknown_models_and_bad_coefficients_are_refused_with_the_reason() -> None:
    info = _info("plumb_bob", _projection("plumb_bob"))
    info.distortion_model = "kannala_brandt"
    with pytest.raises(CameraModelError, match=r"'kannala_brandt' is not supported.*rectified"):
        camera_from_info(info)
    # a rectified image does not need its D understood
    assert camera_from_info(info, rectified=True).rectified
    info = _info("plumb_bob", _projection("plumb_bob"))
    info.d = [0.1, 0.2, 0.0]
    with pytest.raises(CameraModelError, match="takes 5 coefficients, D has 3"):
        camera_from_info(info)
    info = _info("plumb_bob", _projection("plumb_bob"))
    info.p = [0.0] * 11 + [1.0]
    with pytest.raises(CameraModelError, match="focal length of P"):
        camera_from_info(info)


def test_zero_d_and_p_keep_the_ideal_pinhole() -> None:
    info = CameraInfo(width=640, height=480, k=K.reshape(-1).tolist(), distortion_model="plumb_bob")
    info.d = [0.0] * 5
    camera = camera_from_info(info)
    assert camera.is_ideal
    uv = np.array([[100.0, 50.0], [np.nan, np.nan]])
    points = camera.back_project(uv, 2.0)
    np.testing.assert_allclose(points[0], [(100 - 318) / 610 * 2, (50 - 242) / 605 * 2, 2.0])
    assert np.isnan(points[1, :2]).all()  # no keypoint, no point
