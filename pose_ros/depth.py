"""Keypoints in metres: 3D positions from a depth image registered to the colour image.

Every RGB-D driver (RealSense ``aligned_depth_to_color``, Orbbec, ZED, Azure Kinect) publishes a
depth image whose pixel (u, v) sees the same point as the colour pixel (u, v), with the colour
camera's K. For each keypoint this module takes the depth of a small patch around its pixel and
back-projects the pixel through K (:mod:`pose_ros.camera`) into the image's optical frame.

Robust depth of a keypoint (vectorised over all persons and keypoints):

1. the (2r+1)² window around the keypoint's pixel (``patch_radius`` r); pixels outside the image,
   and readings that are no reading (NaN) or outside [``min_m``, ``max_m``], do not count;
2. the person's own depth: the median of all valid readings in all 17 windows of that person;
3. per keypoint, only readings within ``person_band_m`` of the person's depth are kept (a wrist
   pixel whose window also sees the wall behind it must not take the wall's depth, and a
   keypoint that lies on the wall altogether gets no position rather than the wall's);
4. the keypoint's depth is the median of what is left; none left → no position (NaN).

Medians here are lower medians (of an even count, the smaller middle value), so every depth is a
real reading: never a value between two surfaces, as interpolation or a mean would give. A depth
image of another size is scaled with nearest-neighbour sampling for the same reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

from pose_ros.camera import PinholeCamera
from pose_ros.keypoints import COCO_KEYPOINT_NAMES

if TYPE_CHECKING:
    from pose_ros.types import Person

#: Keypoints whose positions give a person's 3D centre (median): shoulders and hips.
TORSO_KEYPOINTS: Final[tuple[int, ...]] = tuple(
    COCO_KEYPOINT_NAMES.index(name)
    for name in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
)


class DepthError(ValueError):
    """A depth image that cannot give positions. ``kind`` names the class of problem (one rate
    limit per kind in the node): ``size`` (aspect ratio differs from the colour image's),
    ``no_reading`` (not one valid reading in the whole image)."""

    KINDS: Final[tuple[str, ...]] = ("size", "no_reading")

    def __init__(self, kind: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown DepthError kind {kind!r}")
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DepthConfig:
    """How keypoint depths are read (the ``depth.*`` parameters of the node; these defaults are
    theirs).

    Attributes:
        min_m, max_m: readings outside this range (metres) are no reading. 0.1 m is below the
            minimum range of common RGB-D cameras, 10 m beyond their useful range.
        patch_radius: r of the (2r+1)² window of depth pixels around each keypoint.
        person_band_m: only readings within this distance (metres) of the person's own median
            depth count for the person's keypoints (a body with arms stretched towards the camera
            spans about ±0.75 m).
        slop_sec: the node pairs a colour and a depth image when their header stamps are at most
            this far apart (pose_ros.depth_pairing; drivers that align
            depth to colour give both the same stamp).
    """

    min_m: float = 0.1
    max_m: float = 10.0
    patch_radius: int = 2
    person_band_m: float = 0.75
    slop_sec: float = 0.03

    def __post_init__(self) -> None:
        if not (0.0 <= self.min_m < self.max_m and np.isfinite(self.max_m)):
            raise ValueError(
                f"depth range must satisfy 0 <= min_m < max_m < inf, got [{self.min_m}, "
                f"{self.max_m}]"
            )
        if not 0 <= self.patch_radius <= 50:
            raise ValueError(f"patch_radius must be in [0, 50], got {self.patch_radius}")
        if not self.person_band_m > 0:
            raise ValueError(f"person_band_m must be positive, got {self.person_band_m}")
        if not self.slop_sec > 0:  # the synchroniser pairs stamps strictly closer than the slop
            raise ValueError(f"slop_sec must be positive, got {self.slop_sec}")


def match_depth_size(depth_m: np.ndarray, width: int, height: int) -> np.ndarray:
    """The depth image at the colour image's size.

    A registered depth image of another resolution (a driver that publishes it at half size)
    is scaled by nearest-neighbour sampling: every output pixel holds a real reading, never a
    blend of the person and the wall behind it.

    Args:
        depth_m: (h, w) float32 metres.
        width, height: the colour image's size.

    Returns:
        (height, width) float32; ``depth_m`` itself when the sizes agree.

    Raises:
        DepthError("size"): the aspect ratios differ (scaling cannot align the two images; the
            depth image is probably not registered to this colour stream).
    """
    h, w = depth_m.shape[:2]
    if (w, h) == (width, height):
        return depth_m
    # The aspect ratios agree when the width predicted from the height's scale is within a pixel.
    if abs(w * height / h - width) > 1.0:
        raise DepthError(
            "size",
            f"depth image is {w}x{h} but the colour image is {width}x{height}: different aspect "
            "ratios, so the depth is not registered to this image (subscribe 'depth' to the "
            "depth stream aligned to the colour camera, e.g. aligned_depth_to_color/image_raw)",
        )
    return cv2.resize(depth_m, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def keypoint_depths(
    depth_m: np.ndarray, uv: np.ndarray, config: DepthConfig = DepthConfig()
) -> np.ndarray:
    """Robust depth of each keypoint (see the module docstring), vectorised.

    Args:
        depth_m: (H, W) float32 metres, NaN where there is no reading; the keypoints' image size.
        uv: (P, K, 2) keypoint pixel coordinates (integer = pixel centre).
        config: window radius, valid range, person band.

    Returns:
        (P, K) float32 metres, NaN where no valid reading is left.
    """
    uv = np.asarray(uv, dtype=np.float64)
    persons, keypoints = uv.shape[:2]
    if persons == 0:
        return np.empty((0, keypoints), np.float32)
    height, width = depth_m.shape
    r = int(config.patch_radius)
    offsets = np.arange(-r, r + 1)
    # Nearest pixel of each keypoint (floor(x + 0.5): integer coordinates are pixel centres).
    finite = np.isfinite(uv).all(axis=-1)
    centre = np.floor(np.where(finite[..., None], uv, -1e9) + 0.5)
    cols = (centre[..., 0, None, None] + offsets[None, :]).astype(np.int64)  # (P, K, 1, n)
    rows = (centre[..., 1, None, None] + offsets[:, None]).astype(np.int64)  # (P, K, n, 1)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)  # (P, K, n, n)
    # Outside pixels read a clipped index and are then masked: a border keypoint uses only the
    # part of its window inside the image (repeating the border pixels would weight them twice).
    patch = depth_m[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)]
    patch = patch.reshape(persons, keypoints, -1).astype(np.float32, copy=False)
    inside = inside.reshape(persons, keypoints, -1)
    # NaN compares false: no reading and out of range fall out in one test.
    valid = inside & (patch >= config.min_m) & (patch <= config.max_m)
    readings = np.where(valid, patch, np.float32(np.nan))

    person_depth = _nan_median(readings.reshape(persons, -1))  # (P,)
    in_band = np.abs(readings - person_depth[:, None, None]) <= config.person_band_m
    return _nan_median(np.where(in_band, readings, np.float32(np.nan)))


def attach_positions(
    persons: Sequence[Person],
    depth_m: np.ndarray,
    camera: PinholeCamera,
    config: DepthConfig = DepthConfig(),
    *,
    image_size: tuple[int, int] | None = None,
) -> list[Person]:
    """The persons with ``positions`` and ``center`` filled from a registered depth image.

    Args:
        persons: the pipeline's persons; their keypoints are pixels of the colour image.
        depth_m: (h, w) float32 metres, NaN where there is no reading (REP 118 units, as
            :func:`pose_ros.ros.conversions.depth_msg_to_array` returns them).
        camera: the colour camera's intrinsics (scaled here to the colour image's size).
        config: see :class:`DepthConfig`.
        image_size: (height, width) of the colour image; default: the depth image's size. A depth
            image of another size is scaled to it (:func:`match_depth_size`).

    Returns:
        New persons (``dataclasses.replace``): ``positions`` (17, 3) float32 metres in the optical
        frame, NaN rows where no valid reading exists; ``center`` (3,) float32, the median of the
        torso keypoints' positions, None when none of them has one.

    Raises:
        DepthError: ``size`` (aspect ratio differs), ``no_reading`` (no valid reading at all).
    """
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth_m.shape}")
    height, width = image_size if image_size is not None else depth_m.shape
    depth_m = match_depth_size(depth_m, int(width), int(height))
    if not persons:
        return []
    uv = np.stack([np.asarray(p.keypoints, np.float64)[:, :2] for p in persons])
    z = keypoint_depths(depth_m, uv, config)
    if np.isnan(z).all() and not _has_reading(depth_m):
        # Checked only when nothing was found: a whole-image scan costs more than the lookup.
        raise DepthError(
            "no_reading",
            f"depth image ({width}x{height}) has no valid reading: every pixel is 0, NaN or "
            "infinite (sensor covered, or the wrong topic)",
        )
    positions = camera.for_image(int(width), int(height)).back_project(uv, z).astype(np.float32)
    # Centre: per axis, the median of the torso keypoints that have a position (all persons at
    # once: (P, 3, 4) with NaN where missing). A centre may lie between readings: the true median.
    torso = positions[:, list(TORSO_KEYPOINTS)].transpose(0, 2, 1)
    centers = _nan_median(torso, lower=False)
    return [
        dataclasses.replace(
            person, positions=points, center=None if np.isnan(center).any() else center
        )
        for person, points, center in zip(persons, positions, centers, strict=True)
    ]


def _has_reading(depth_m: np.ndarray) -> bool:
    return bool((np.isfinite(depth_m) & (depth_m > 0)).any())


def _nan_median(values: np.ndarray, *, lower: bool = True) -> np.ndarray:
    """Median over the last axis, ignoring NaN; NaN where a row has no value.

    ``lower``: of an even count, the smaller middle value, so the result is always one of the
    readings (depths): the usual mean of the two middle values would invent a depth between the
    person and the wall when a window sees as much of one as of the other. ``np.nanmedian`` would
    also be several times slower on the many short rows of a keypoint lookup, and it warns on
    empty rows.
    """
    ordered = np.sort(values, axis=-1)  # NaN sorts last
    count = np.count_nonzero(~np.isnan(values), axis=-1)
    low = np.maximum((count - 1) // 2, 0)[..., None]
    median = np.take_along_axis(ordered, low, axis=-1)[..., 0]
    if not lower:
        high = np.maximum(count // 2, 0)[..., None]
        median = 0.5 * (median + np.take_along_axis(ordered, high, axis=-1)[..., 0])
    return np.where(count > 0, median, np.float32(np.nan)).astype(np.float32)
