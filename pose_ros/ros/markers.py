"""Pipeline results → ``visualization_msgs/MarkerArray`` for RViz.

Per person ``i`` (in score order): a SPHERE_LIST in namespace ``keypoints`` and a LINE_LIST in
namespace ``skeleton``, both with id ``i``, coloured per body side with the colours of the
annotated image (:data:`pose_ros.drawing.SIDE_COLORS_RGB`). Every array starts with one DELETEALL
marker, so markers of persons who left the picture vanish with the next frame and the remaining
ones are replaced in place (no blinking, nothing lingers), also when nobody is found.

Without depth, keypoints are placed on a plane ``plane_distance`` metres in front of the camera,
in the image's own (optical) frame: x right, y down, z forward. With a CameraInfo the pixels are
back-projected through its K matrix, so the skeleton lines up with the camera image in RViz's
Camera display; without one, a fixed ``pixel_scale`` (metres per pixel) around the image centre is
used. Lens distortion is ignored (a plane at a guessed distance is an illustration, not a
measurement).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from pose_ros.drawing import SIDE_COLORS_RGB
from pose_ros.keypoints import NUM_KEYPOINTS, SKELETON_EDGES, limb_side
from pose_ros.ros.params import MarkerStyle

if TYPE_CHECKING:
    from pose_ros.pipeline import Person

KEYPOINTS_NAMESPACE = "keypoints"
SKELETON_NAMESPACE = "skeleton"


@dataclass(frozen=True)
class PinholeCamera:
    """The part of a CameraInfo that back-projection needs (K of the image's resolution)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_camera_info(cls, msg: CameraInfo) -> PinholeCamera | None:
        """K of ``msg``, or None for an uncalibrated camera (drivers publish K all zero then)."""
        fx, fy, cx, cy = float(msg.k[0]), float(msg.k[4]), float(msg.k[2]), float(msg.k[5])
        if not (fx > 0 and fy > 0 and np.isfinite([fx, fy, cx, cy]).all()):
            return None
        return cls(fx, fy, cx, cy, int(msg.width), int(msg.height))

    def for_image(self, width: int, height: int) -> PinholeCamera:
        """K for an image of ``width`` x ``height`` (a resized stream of the calibrated camera).

        Scales about pixel edges: with integer = pixel centre, a centre c maps to
        (c + 0.5) * s - 0.5.
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


def pixels_to_plane(
    uv: np.ndarray,
    *,
    image_width: int,
    image_height: int,
    distance: float,
    pixel_scale: float,
    camera: PinholeCamera | None = None,
) -> np.ndarray:
    """(N, 2) pixel coordinates → (N, 3) points on the plane z = ``distance`` (optical frame).

    With ``camera``: the ray through each pixel (K⁻¹ [u, v, 1]) meets the plane.
    Without: the image centre lies on the optical axis and one pixel spans ``pixel_scale`` metres.
    """
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    points = np.empty((uv.shape[0], 3), np.float64)
    if camera is not None:
        cam = camera.for_image(image_width, image_height)
        points[:, 0] = (uv[:, 0] - cam.cx) / cam.fx * distance
        points[:, 1] = (uv[:, 1] - cam.cy) / cam.fy * distance
    else:
        points[:, 0] = (uv[:, 0] - (image_width - 1) / 2.0) * pixel_scale
        points[:, 1] = (uv[:, 1] - (image_height - 1) / 2.0) * pixel_scale
    points[:, 2] = distance
    return points


def _color(side: str) -> ColorRGBA:
    r, g, b = SIDE_COLORS_RGB[side]
    return ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)


# Marker colours never change: build them once.
_SIDE_COLORS = {side: _color(side) for side in SIDE_COLORS_RGB}
_KEYPOINT_COLORS = [_SIDE_COLORS[limb_side((k, k))] for k in range(NUM_KEYPOINTS)]
_EDGE_COLORS = [_SIDE_COLORS[limb_side(edge)] for edge in SKELETON_EDGES]


def build_marker_array(
    persons: Sequence[Person],
    header: Header,
    image_width: int,
    image_height: int,
    style: MarkerStyle,
    camera: PinholeCamera | None = None,
) -> MarkerArray:
    """The markers of one frame: DELETEALL, then per person a keypoint SPHERE_LIST and a skeleton
    LINE_LIST (only keypoints and edges whose scores reach ``style.keypoint_threshold``).

    ``header`` is the source image's: markers live in its frame, at its stamp.
    """
    clear = Marker(header=header, action=Marker.DELETEALL)
    markers = [clear]
    for index, person in enumerate(persons):
        keypoints = np.asarray(person.keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
        xyz = pixels_to_plane(
            keypoints[:, :2],
            image_width=image_width,
            image_height=image_height,
            distance=style.plane_distance,
            pixel_scale=style.pixel_scale,
            camera=camera,
        ).tolist()
        visible = (keypoints[:, 2] >= style.keypoint_threshold).tolist()
        points = [Point(x=x, y=y, z=z) for x, y, z in xyz]

        spheres = _marker(header, KEYPOINTS_NAMESPACE, index, Marker.SPHERE_LIST)
        spheres.scale.x = spheres.scale.y = spheres.scale.z = style.sphere_size
        spheres.points = [points[k] for k in range(NUM_KEYPOINTS) if visible[k]]
        spheres.colors = [_KEYPOINT_COLORS[k] for k in range(NUM_KEYPOINTS) if visible[k]]

        lines = _marker(header, SKELETON_NAMESPACE, index, Marker.LINE_LIST)
        lines.scale.x = style.line_width
        for edge_index, (a, b) in enumerate(SKELETON_EDGES):
            if visible[a] and visible[b]:
                lines.points.extend((points[a], points[b]))
                color = _EDGE_COLORS[edge_index]
                lines.colors.extend((color, color))

        # An empty list draws nothing; RViz warns about them, so they are left out.
        markers.extend(marker for marker in (spheres, lines) if marker.points)
    return MarkerArray(markers=markers)


def _marker(header: Header, namespace: str, marker_id: int, marker_type: int) -> Marker:
    marker = Marker(header=header, ns=namespace, id=marker_id, type=marker_type, action=Marker.ADD)
    marker.pose.orientation.w = 1.0
    # The base colour is used by RViz only where per-point colours are missing; keep it opaque.
    marker.color = _SIDE_COLORS["center"]
    marker.lifetime = Duration()  # forever: the next array's DELETEALL removes it
    return marker
