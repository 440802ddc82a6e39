"""Pipeline results → ``pose_ros/PersonPoseArray`` (see msg/*.msg for the meaning of each field)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import Header

from pose_ros.keypoints import NUM_KEYPOINTS
from pose_ros.msg import Keypoint, PersonPose, PersonPoseArray

if TYPE_CHECKING:
    from pose_ros.types import Person


def persons_to_msg(
    persons: Sequence[Person], header: Header, image_width: int, image_height: int
) -> PersonPoseArray:
    """One PersonPoseArray for one processed image.

    Args:
        persons: the pipeline's persons, best first (their order is kept).
        header: the source image's header; stamp and frame_id are copied, so consumers can match
            the poses to the image and its camera_info.
        image_width, image_height: size of the source image (the pixel frame of all coordinates).

    The keypoint pixel convention of the pipeline (integer = pixel centre) is the message's, so
    coordinates are copied unchanged. Scores are clipped to 0..1 as the message promises. ``id`` is
    the person's ``track_id`` (-1 untracked). Keypoints with a finite ``positions`` row (depth)
    get ``has_position`` and the position in metres; the others keep an all-zero position, as does
    ``center`` without ``has_center``.
    """
    msg = PersonPoseArray()
    msg.header = _copy_header(header)
    msg.image_width = int(image_width)
    msg.image_height = int(image_height)
    msg.persons = [_person_msg(person) for person in persons]
    return msg


def _person_msg(person: Person) -> PersonPose:
    keypoints = np.asarray(person.keypoints, dtype=np.float64)
    if keypoints.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"expected ({NUM_KEYPOINTS}, 3) keypoints, got {keypoints.shape}")
    x_min, y_min, width, height = (float(v) for v in np.asarray(person.box).reshape(4))
    # tolist() once: messages build much faster from Python floats than from numpy scalars.
    rows = keypoints.tolist()
    msg = PersonPose(
        id=int(person.track_id),
        score=_unit(person.score),
        x_min=x_min,
        y_min=y_min,
        width=width,
        height=height,
        box_score=_unit(person.box_score),
        keypoints=[Keypoint(x=x, y=y, score=_unit(score)) for x, y, score in rows],
    )
    if person.positions is not None:
        positions = np.asarray(person.positions, dtype=np.float64)
        if positions.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f"expected ({NUM_KEYPOINTS}, 3) positions, got {positions.shape}")
        valid = np.isfinite(positions).all(axis=1).tolist()
        for keypoint, ok, (x, y, z) in zip(msg.keypoints, valid, positions.tolist(), strict=True):
            if ok:
                keypoint.position = Point(x=x, y=y, z=z)
                keypoint.has_position = True
    if person.center is not None:
        center = np.asarray(person.center, dtype=np.float64).reshape(3)
        if np.isfinite(center).all():
            x, y, z = center.tolist()
            msg.center = Point(x=x, y=y, z=z)
            msg.has_center = True
    return msg


def _unit(value: float) -> float:
    value = float(value)
    if math.isnan(value):
        return 0.0
    return min(max(value, 0.0), 1.0)


def _copy_header(header: Header) -> Header:
    # A copy, so a message built now never aliases the (mutable) header of the input message.
    copy = Header()
    copy.stamp.sec = header.stamp.sec
    copy.stamp.nanosec = header.stamp.nanosec
    copy.frame_id = header.frame_id
    return copy
