"""Box and affine geometry: centre/scale, transforms and their inverses, batched crops."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from pose_ros import geometry

ASPECT = 192 / 256


def test_box_to_center_scale_fixes_the_aspect_ratio_and_pads() -> None:
    centers, scales = geometry.box_to_center_scale(
        np.array([[10, 20, 30, 100], [0, 0, 300, 100]]), ASPECT
    )
    np.testing.assert_allclose(centers, [[25, 70], [150, 50]])
    np.testing.assert_allclose(scales[0], [100 * ASPECT * 1.25, 100 * 1.25])  # tall: width grows
    np.testing.assert_allclose(scales[1], [300 * 1.25, 300 / ASPECT * 1.25])  # wide: height grows
    center, scale = geometry.box_to_center_scale(np.array([10, 20, 30, 100]), ASPECT)
    assert center.shape == (2,) and scale.shape == (2,)


def test_affine_maps_the_region_onto_the_crop_and_inverts() -> None:
    center, scale = np.array([100.0, 200.0]), np.array([96.0, 128.0])
    forward = geometry.crop_affine(center, scale, (256, 192))
    np.testing.assert_allclose(geometry.apply_affine(center, forward), [96, 128])
    corner = center + scale / 2
    np.testing.assert_allclose(geometry.apply_affine(corner, forward), [192, 256])
    for rotation in (0.0, 30.0, -45.0):
        fwd = geometry.crop_affine(center, scale, (256, 192), rotation)
        inv = geometry.crop_affine(center, scale, (256, 192), rotation, inverse=True)
        points = np.random.default_rng(0).uniform(0, 300, (10, 2))
        np.testing.assert_allclose(
            geometry.apply_affine(geometry.apply_affine(points, fwd), inv), points, atol=1e-9
        )


def test_rotation_matches_the_reference_direction() -> None:
    # The reference maps the image direction (sin r, -cos r) from the centre to the crop's "up".
    center, scale = np.array([50.0, 50.0]), np.array([40.0, 40.0])
    fwd = geometry.crop_affine(center, scale, (40, 40), 90.0)
    up_in_image = center + np.array([1.0, 0.0]) * 10  # r = 90 deg: image +x
    np.testing.assert_allclose(geometry.apply_affine(up_in_image, fwd), [20, 10], atol=1e-9)


def test_crop_to_image_is_the_inverse_of_the_crop_transform() -> None:
    rng = np.random.default_rng(1)
    centers = rng.uniform(50, 500, (4, 2))
    scales = rng.uniform(50, 300, (4, 2))
    points = rng.uniform(0, 600, (4, 17, 2))
    crop = geometry.image_to_crop(points, centers, scales, (64, 48))
    for n in range(4):
        expected = geometry.apply_affine(
            points[n], geometry.crop_affine(centers[n], scales[n], (64, 48))
        )
        np.testing.assert_allclose(crop[n], expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(
        geometry.crop_to_image(crop, centers, scales, (64, 48)), points, atol=1e-3
    )


def test_batched_crop_matches_opencv_warp_affine(coco_dir) -> None:
    image = cv2.imread(str(coco_dir / "000000196141.jpg"))
    boxes = np.array(
        [[100.0, 50.0, 120.0, 300.0], [300.5, 120.25, 80.0, 150.0], [-40, -30, 100, 100]]
    )
    centers, scales = geometry.box_to_center_scale(boxes, ASPECT)
    rotations = np.array([0.0, 25.0, -10.0])
    tensor = torch.from_numpy(image).permute(2, 0, 1).float()
    crops = geometry.crop_batch(tensor, centers, scales, (256, 192), rotations)
    assert crops.shape == (3, 3, 256, 192)
    for n in range(3):
        matrix = geometry.crop_affine(centers[n], scales[n], (256, 192), rotations[n])
        expected = cv2.warpAffine(
            image.astype(np.float32), matrix, (192, 256), flags=cv2.INTER_LINEAR
        )
        ours = crops[n].permute(1, 2, 0).numpy()
        inside = expected.sum(axis=2) > 0  # compare where OpenCV sampled the image
        inside = cv2.erode(inside.astype(np.uint8), np.ones((3, 3))) > 0  # borders differ by design
        assert np.abs(ours - expected)[inside].mean() < 0.5
        assert np.abs(ours - expected)[inside].max() < 8.0  # OpenCV interpolates in fixed point


def test_batched_crop_handles_no_boxes_and_keeps_dtype() -> None:
    image = torch.rand(3, 40, 30, dtype=torch.float16)
    assert geometry.crop_batch(image, np.zeros((0, 2)), np.zeros((0, 2)), (8, 6)).shape == (
        0,
        3,
        8,
        6,
    )
    crops = geometry.crop_batch(image, np.array([[15.0, 20.0]]), np.array([[30.0, 40.0]]), (8, 6))
    assert crops.dtype == torch.float16
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        geometry.crop_batch(image[0], np.zeros((1, 2)), np.ones((1, 2)), (8, 6))


def test_crop_uncrop_of_real_annotations_returns_them(coco_annotations) -> None:
    """Annotated keypoints -> heatmap coordinates of their person crop -> image: within 0.5 px."""
    data = json.loads(coco_annotations.read_text())
    annotations = [a for a in data["annotations"] if a["num_keypoints"] > 0]
    boxes = np.array([a["bbox"] for a in annotations])
    keypoints = np.array([a["keypoints"] for a in annotations], dtype=np.float64).reshape(-1, 17, 3)
    centers, scales = geometry.box_to_center_scale(boxes, ASPECT)
    crop = geometry.image_to_crop(keypoints[..., :2], centers, scales, (64, 48))
    back = geometry.crop_to_image(crop, centers, scales, (64, 48))
    labelled = keypoints[..., 2] > 0
    assert labelled.sum() > 100
    assert np.abs(back - keypoints[..., :2])[labelled].max() < 0.5


def test_clip_boxes() -> None:
    clipped = geometry.clip_boxes(
        np.array([[-10, -10, 50, 50], [90, 90, 50, 50], [200, 200, 5, 5]]), 100, 100
    )
    np.testing.assert_allclose(clipped, [[0, 0, 40, 40], [90, 90, 9, 9], [99, 99, 0, 0]])
