"""The camera model of ``sensor_msgs/CameraInfo`` as ROS's image_geometry defines it: pixel ⇄ ray
(no ROS here).

Pixel convention of the whole package (COCO, ``sensor_msgs/CameraInfo``): integer coordinates are
pixel centres, x to the right (column), y down (row). Points are in the camera's optical frame
(REP 103): x right, y down, z forward along the optical axis, in metres.

What a pixel means depends on the image (image_geometry's ``PinholeCameraModel``):

* a **raw** image (``image_raw``, the default): its pixels are distorted by the lens. A keypoint is
  first rectified with K, the distortion D (``plumb_bob``, ``rational_polynomial`` or
  ``equidistant``), the rectification R and the projection P (``rectifyPoint``: OpenCV's
  ``undistortPoints``), then turned into a ray through P (``projectPixelTo3dRay``).
* a **rectified** image (``image_rect``, or a driver that rectifies itself): its pixels are already
  those of P, so the ray comes through P directly and D is not applied (``rectified=True``).

Without a P (all zero, as some drivers publish) K stands in for it and R is the identity. For a
monocular camera R is the identity and P's left 3x3 block a camera matrix, so the points are in
the camera's own optical frame; for one camera of a stereo pair, in the rectified frame of the
pair. A registered depth image gives each pixel's z in that frame.

K is checked against a physically sane range when a camera is built from it
(:meth:`PinholeCamera.from_k`): a CameraInfo with a focal length of 5e-324 px or a principal point
at 1e308 px is finite and positive, yet back-projecting through it gives infinities (RViz refuses
such markers). Such calibrations are refused with a sentence that names the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

#: Distortion models of ``CameraInfo.distortion_model`` this model undistorts (REP 104 names), with
#: the numbers of coefficients each takes ("" or a D of zeros: no distortion).
DISTORTION_MODELS: Final[dict[str, tuple[int, ...]]] = {
    "plumb_bob": (5,),
    "rational_polynomial": (8, 12, 14),
    "equidistant": (4,),
}

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
    """The camera of an image of ``width`` x ``height`` pixels: K's fx, fy, cx, cy (skew taken as
    zero) and, from a full CameraInfo, the distortion, R and P. Build with :meth:`from_k` or
    :meth:`from_camera_info` to have the values checked.

    Attributes:
        distortion_model: "" (none), ``plumb_bob``, ``rational_polynomial`` or ``equidistant``.
        d: the distortion coefficients (empty: none).
        r: row-major 3x3 rectification, None for the identity.
        p: row-major 3x4 projection, None to use K (and no translation).
        rectified: the image's pixels are rectified already: D and R are not applied.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ""
    d: tuple[float, ...] = ()
    r: tuple[float, ...] | None = None
    p: tuple[float, ...] | None = None
    rectified: bool = False

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

    @classmethod
    def from_camera_info(
        cls,
        k: Sequence[float],
        width: int,
        height: int,
        *,
        distortion_model: str = "",
        d: Sequence[float] = (),
        r: Sequence[float] = (),
        p: Sequence[float] = (),
        rectified: bool = False,
    ) -> PinholeCamera:
        """The camera of a whole ``CameraInfo`` (K, D, R, P as its fields hold them).

        ``rectified``: the images are rectified (``image_rect``): D and R do not apply to them.

        Raises:
            CameraModelError: as :meth:`from_k`; an unknown distortion model or a wrong number of
                coefficients (for a raw image); a non-finite D, R or P; a P whose focal lengths
                are outside the sane range.
        """
        camera = cls.from_k(k, width, height)
        coefficients = tuple(float(v) for v in np.asarray(d, dtype=np.float64).reshape(-1))
        if not all(np.isfinite(coefficients)):
            raise CameraModelError(f"D has non-finite values: {coefficients}")
        model = distortion_model.strip()
        if not any(coefficients):
            model, coefficients = "", ()  # a D of zeros (or none): an ideal lens
        elif not rectified:
            counts = DISTORTION_MODELS.get(model)
            if counts is None:
                raise CameraModelError(
                    f"distortion model {model!r} is not supported (supported: "
                    f"{', '.join(DISTORTION_MODELS)}); if the images are rectified already, say "
                    "so (camera.rectified:=true) and D is not applied"
                )
            if len(coefficients) not in counts:
                raise CameraModelError(
                    f"distortion model {model!r} takes {' or '.join(map(str, counts))} "
                    f"coefficients, D has {len(coefficients)}"
                )
        rotation = _matrix_or_none(r, 9, "R")
        if rotation is not None and np.allclose(rotation, np.eye(3).reshape(-1)):
            rotation = None
        projection = _matrix_or_none(p, 12, "P")
        if projection is not None:
            low, high = FOCAL_RANGE_PX
            for name, focal in (("P[0]", projection[0]), ("P[5]", projection[5])):
                if not low <= focal <= high:
                    raise CameraModelError(
                        f"{name} (focal length of P) = {focal:g} px is outside the physically "
                        f"sane range [{low:g}, {high:g}] px"
                    )
        return replace(
            camera,
            distortion_model=model,
            d=coefficients,
            r=rotation,
            p=projection,
            rectified=bool(rectified),
        )

    @property
    def is_ideal(self) -> bool:
        """Whether a pixel maps to its ray through K alone (no distortion to undo, no R or P)."""
        applies_d = bool(self.d) and not self.rectified
        return not applies_d and self.p is None and (self.r is None or self.rectified)

    def for_image(self, width: int, height: int) -> PinholeCamera:
        """K for an image of ``width`` x ``height`` (a resized stream of the calibrated camera).

        Scales about pixel edges: with integer = pixel centre, a centre c maps to
        (c + 0.5) * s - 0.5. A camera without a size (0) is returned unchanged.
        """
        if self.width <= 0 or self.height <= 0 or (self.width, self.height) == (width, height):
            return self
        sx, sy = width / self.width, height / self.height
        projection = None
        if self.p is not None:
            p = np.asarray(self.p, np.float64).reshape(3, 4).copy()
            p[0, :] *= sx
            p[1, :] *= sy
            p[0, 2] += 0.5 * sx - 0.5  # pixel centres, as for K
            p[1, 2] += 0.5 * sy - 0.5
            projection = tuple(p.reshape(-1).tolist())
        return replace(
            self,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
            p=projection,
        )

    def back_project(self, uv: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
        """Pixels of this camera's image and their depth → points (image_geometry's
        ``rectifyPoint`` for a raw image, then ``projectPixelTo3dRay`` scaled to the depth).

        Args:
            uv: (..., 2) pixel coordinates (x, y) of the image this camera describes.
            depth: (...) z in metres (broadcast against ``uv[..., 0]``); NaN gives NaN points.

        Returns:
            (..., 3) float64 points (x right, y down, z forward), metres: with an ideal camera
            x = (u - cx) / fx * z, y = (v - cy) / fy * z.
        """
        uv = np.asarray(uv, dtype=np.float64)
        z = np.broadcast_to(np.asarray(depth, dtype=np.float64), uv.shape[:-1])
        rays = self.rays(uv)
        return rays * z[..., None]

    def rays(self, uv: np.ndarray) -> np.ndarray:
        """(..., 2) pixels → (..., 3) rays with z = 1 (NaN pixels give NaN rays)."""
        uv = np.asarray(uv, dtype=np.float64)
        rays = np.ones((*uv.shape[:-1], 3), np.float64)
        if self.is_ideal:
            rays[..., 0] = (uv[..., 0] - self.cx) / self.fx
            rays[..., 1] = (uv[..., 1] - self.cy) / self.fy
            return rays
        rectified_uv = uv if self.rectified else self._rectify(uv)
        p = self._projection()
        # projectPixelTo3dRay of image_geometry (C++): (u - cx - Tx) / fx, Tx = P[0, 3]; zero for
        # a monocular camera and the left camera of a stereo pair.
        rays[..., 0] = (rectified_uv[..., 0] - p[0, 2] - p[0, 3]) / p[0, 0]
        rays[..., 1] = (rectified_uv[..., 1] - p[1, 2] - p[1, 3]) / p[1, 1]
        return rays

    def _projection(self) -> np.ndarray:
        if self.p is not None:
            return np.asarray(self.p, np.float64).reshape(3, 4)
        return np.array(
            [[self.fx, 0.0, self.cx, 0.0], [0.0, self.fy, self.cy, 0.0], [0.0, 0.0, 1.0, 0.0]]
        )

    def _rectify(self, uv: np.ndarray) -> np.ndarray:
        """Raw pixels → rectified pixels of P (OpenCV's undistortPoints with K, D, R, P)."""
        import cv2  # only a distorted camera needs it

        k = np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])
        r = np.eye(3) if self.r is None else np.asarray(self.r, np.float64).reshape(3, 3)
        p = self._projection()[:, :3]
        flat = uv.reshape(-1, 1, 2)
        finite = np.isfinite(flat).all(axis=-1)[:, 0]
        out = np.full_like(flat, np.nan)
        if finite.any():
            d = np.asarray(self.d, np.float64)
            points = np.ascontiguousarray(flat[finite])
            if self.distortion_model == "equidistant":
                out[finite] = cv2.fisheye.undistortPoints(points, k, d, R=r, P=p)
            elif len(d):
                out[finite] = cv2.undistortPoints(points, k, d, R=r, P=p)
            else:  # no distortion, but R and P still apply
                out[finite] = cv2.undistortPoints(points, k, None, R=r, P=p)
        return out.reshape(uv.shape)

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
        text = (
            f"fx {self.fx:.1f}, fy {self.fy:.1f}, cx {self.cx:.1f}, cy {self.cy:.1f} "
            f"({self.width}x{self.height})"
        )
        if self.rectified:
            text += ", rectified image (through P)" if self.p is not None else ", rectified image"
        elif self.d:
            text += f", {self.distortion_model} distortion undone"
        return text


def _matrix_or_none(values: Sequence[float], size: int, name: str) -> tuple[float, ...] | None:
    """A row-major matrix of ``size`` values, or None when absent or all zero."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0 or not array.any():
        return None
    if array.size != size:
        raise CameraModelError(f"{name} must have {size} values, got {array.size}")
    if not np.isfinite(array).all():
        raise CameraModelError(f"{name} has non-finite values")
    return tuple(array.tolist())
