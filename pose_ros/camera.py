"""The pinhole camera model: pixel ⇄ ray through the intrinsic matrix K (no ROS here).

Pixel convention of the whole package (COCO, ``sensor_msgs/CameraInfo``): integer coordinates are
pixel centres, x to the right (column), y down (row). Points are in the camera's optical frame
(REP 103): x right, y down, z forward along the optical axis, in metres. Lens distortion is
ignored: the depth images this package reads are rectified and registered to the colour image by
the camera driver, and the colour image's K is the one that applies.

K is checked against a physically sane range when a camera is built from it
(:meth:`PinholeCamera.from_k`): a CameraInfo with a focal length of 5e-324 px or a principal point
at 1e308 px is finite and positive, yet back-projecting through it gives infinities (RViz refuses
such markers). Such calibrations are refused with a sentence that names the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

#: Focal lengths (pixels) a real pinhole camera can have. Below 1 px, one pixel spans more than
#: 90 degrees of view; 1e6 px is a 10-degree field of view on a 175-megapixel-wide sensor.
FOCAL_RANGE_PX: Final[tuple[float, float]] = (1.0, 1e6)
#: The principal point may lie outside the image (cropped or shifted sensors), but not by more
#: than this many image widths (heights) on either side.
PRINCIPAL_POINT_MARGIN: Final[float] = 1.0
#: Bound of |cx|, |cy| when the CameraInfo gives no image size (width or height 0).
PRINCIPAL_POINT_LIMIT_PX: Final[float] = 1e6


class CameraModelError(ValueError):
    """K cannot describe a camera: ``uncalibrated`` is True for the all-zero K that drivers
    publish for a camera without calibration (a normal case, not a fault)."""

    def __init__(self, message: str, *, uncalibrated: bool = False) -> None:
        super().__init__(message)
        self.uncalibrated = uncalibrated


@dataclass(frozen=True)
class PinholeCamera:
    """The intrinsics of an image of ``width`` x ``height`` pixels (K's fx, fy, cx, cy; skew is
    taken as zero). Build with :meth:`from_k` to have the values checked."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> PinholeCamera:
        """The camera of a row-major 3x3 K (``CameraInfo.k``) for an image of the given size.

        Raises:
            CameraModelError: K all zero (uncalibrated), non-finite values, a focal length outside
                :data:`FOCAL_RANGE_PX`, or a principal point far outside the image.
        """
        values = np.asarray(k, dtype=np.float64).reshape(-1)
        if values.size != 9:
            raise CameraModelError(f"K must have 9 values (3x3, row-major), got {values.size}")
        if not np.isfinite(values).all():
            bad = ", ".join(
                f"K[{i}] = {float(values[i])!r}" for i in np.flatnonzero(~np.isfinite(values))[:4]
            )
            raise CameraModelError(f"K has non-finite values ({bad})")
        if not values.any():
            raise CameraModelError("K is all zero (uncalibrated camera)", uncalibrated=True)
        fx, fy, cx, cy = (float(values[i]) for i in (0, 4, 2, 5))
        width, height = int(width), int(height)
        low, high = FOCAL_RANGE_PX
        for name, focal in (("fx", fx), ("fy", fy)):
            if not low <= focal <= high:
                raise CameraModelError(
                    f"{name} = {focal:g} px is outside the physically sane range "
                    f"[{low:g}, {high:g}] px"
                )
        for name, centre, size in (("cx", cx, width), ("cy", cy, height)):
            if size > 0:
                lo, hi = -PRINCIPAL_POINT_MARGIN * size, (1 + PRINCIPAL_POINT_MARGIN) * size
            else:
                lo, hi = -PRINCIPAL_POINT_LIMIT_PX, PRINCIPAL_POINT_LIMIT_PX
            if not lo <= centre <= hi:
                raise CameraModelError(
                    f"{name} = {centre:g} px is far outside the image ({width}x{height}): "
                    f"expected within [{lo:g}, {hi:g}] px"
                )
        return cls(fx, fy, cx, cy, width, height)

    def for_image(self, width: int, height: int) -> PinholeCamera:
        """K for an image of ``width`` x ``height`` (a resized stream of the calibrated camera).

        Scales about pixel edges: with integer = pixel centre, a centre c maps to
        (c + 0.5) * s - 0.5. A camera without a size (0) is returned unchanged.
        """
        if self.width <= 0 or self.height <= 0 or (self.width, self.height) == (width, height):
            return self
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            width,
            height,
        )

    def back_project(self, uv: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
        """Pixels and their depth → points in the optical frame.

        Args:
            uv: (..., 2) pixel coordinates (x, y) of the image this camera describes.
            depth: (...) z in metres (broadcast against ``uv[..., 0]``); NaN gives NaN points.

        Returns:
            (..., 3) float64 points (x right, y down, z forward), metres:
            x = (u - cx) / fx * z, y = (v - cy) / fy * z.
        """
        uv = np.asarray(uv, dtype=np.float64)
        z = np.broadcast_to(np.asarray(depth, dtype=np.float64), uv.shape[:-1])
        points = np.empty((*uv.shape[:-1], 3), np.float64)
        points[..., 0] = (uv[..., 0] - self.cx) / self.fx * z
        points[..., 1] = (uv[..., 1] - self.cy) / self.fy * z
        points[..., 2] = z
        return points

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) points in the optical frame → (..., 2) pixel coordinates (inverse of
        :meth:`back_project` for z > 0)."""
        points = np.asarray(points, dtype=np.float64)
        z = points[..., 2]
        return np.stack(
            [points[..., 0] / z * self.fx + self.cx, points[..., 1] / z * self.fy + self.cy],
            axis=-1,
        )

    def describe(self) -> str:
        return (
            f"fx {self.fx:.1f}, fy {self.fy:.1f}, cx {self.cx:.1f}, cy {self.cy:.1f} "
            f"({self.width}x{self.height})"
        )
