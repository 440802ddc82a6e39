"""Pipeline results → ``visualization_msgs/MarkerArray`` for RViz.

Per person: a SPHERE_LIST in namespace ``keypoints`` and a LINE_LIST in namespace ``skeleton``.
Spheres are coloured per body side with the colours of the annotated image
(:data:`pose_ros.drawing.SIDE_COLORS_RGB`). An untracked person (``track_id`` -1) has the marker id
of its index in the frame (score order) and side-coloured lines. A tracked person has its own
namespaces ``tracked_keypoints`` / ``tracked_skeleton`` with the track id as marker id, and its
skeleton lines in a colour chosen by the id (:func:`track_color_rgb`), so RViz shows each person
in a stable colour from frame to frame. Every array starts with one DELETEALL marker, so markers of
persons who left the picture vanish with the next frame and the remaining ones are replaced in
place (no blinking, nothing lingers), also when nobody is found.

With depth (``Person.positions``), each keypoint is drawn at its true 3D place, in metres in the
image's own (optical) frame (x right, y down, z forward); keypoints without a position are left
out (with the edges that touch them), not drawn at a guessed distance.

Without depth, keypoints are placed on a plane ``plane_distance`` metres in front of the camera,
in the same frame. With a CameraInfo the pixels are back-projected through its K matrix, so the
skeleton lines up with the camera image in RViz's Camera display; without one, a fixed
``pixel_scale`` (metres per pixel) around the image centre is used. Lens distortion is ignored (a
plane at a guessed distance is an illustration, not a measurement).

Non-finite points are never published (RViz refuses a whole marker for one of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from pose_ros.camera import PinholeCamera
from pose_ros.drawing import SIDE_COLORS_RGB, track_color_rgb
from pose_ros.keypoints import NUM_KEYPOINTS, SKELETON_EDGES, limb_side
from pose_ros.ros.params import MarkerStyle

if TYPE_CHECKING:
    from pose_ros.types import Person

KEYPOINTS_NAMESPACE = "keypoints"
SKELETON_NAMESPACE = "skeleton"
TRACKED_KEYPOINTS_NAMESPACE = "tracked_keypoints"
TRACKED_SKELETON_NAMESPACE = "tracked_skeleton"


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
    if camera is not None:
        return camera.for_image(image_width, image_height).back_project(uv, distance)
    points = np.empty((uv.shape[0], 3), np.float64)
    points[:, 0] = (uv[:, 0] - (image_width - 1) / 2.0) * pixel_scale
    points[:, 1] = (uv[:, 1] - (image_height - 1) / 2.0) * pixel_scale
    points[:, 2] = distance
    return points


def _color(rgb: tuple[int, int, int]) -> ColorRGBA:
    r, g, b = rgb
    return ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)


# Marker colours never change: build them once.
_SIDE_COLORS = {side: _color(rgb) for side, rgb in SIDE_COLORS_RGB.items()}
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
    LINE_LIST (only keypoints and edges whose scores reach ``style.keypoint_threshold`` and that
    have a finite place: a 3D position when the person has ``positions``, else the plane).

    ``header`` is the source image's: markers live in its frame, at its stamp.
    """
    clear = Marker(header=header, action=Marker.DELETEALL)
    markers = [clear]
    for index, person in enumerate(persons):
        keypoints = np.asarray(person.keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
        if person.positions is not None:
            xyz = np.asarray(person.positions, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
        else:
            xyz = pixels_to_plane(
                keypoints[:, :2],
                image_width=image_width,
                image_height=image_height,
                distance=style.plane_distance,
                pixel_scale=style.pixel_scale,
                camera=camera,
            )
        shown = (keypoints[:, 2] >= style.keypoint_threshold) & np.isfinite(xyz).all(axis=1)
        visible = shown.tolist()
        points = [Point(x=x, y=y, z=z) for x, y, z in xyz.tolist()]

        tracked = person.track_id >= 0
        marker_id = int(person.track_id) if tracked else index
        spheres = _marker(
            header,
            TRACKED_KEYPOINTS_NAMESPACE if tracked else KEYPOINTS_NAMESPACE,
            marker_id,
            Marker.SPHERE_LIST,
        )
        spheres.scale.x = spheres.scale.y = spheres.scale.z = style.sphere_size
        spheres.points = [points[k] for k in range(NUM_KEYPOINTS) if visible[k]]
        spheres.colors = [_KEYPOINT_COLORS[k] for k in range(NUM_KEYPOINTS) if visible[k]]

        lines = _marker(
            header,
            TRACKED_SKELETON_NAMESPACE if tracked else SKELETON_NAMESPACE,
            marker_id,
            Marker.LINE_LIST,
        )
        lines.scale.x = style.line_width
        track_color = _color(track_color_rgb(person.track_id)) if tracked else None
        for edge_index, (a, b) in enumerate(SKELETON_EDGES):
            if visible[a] and visible[b]:
                lines.points.extend((points[a], points[b]))
                color = track_color or _EDGE_COLORS[edge_index]
                lines.colors.extend((color, color))
        if track_color is not None:
            lines.color = track_color

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
