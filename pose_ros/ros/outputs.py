"""The node's outputs per camera: ``poses`` (every processed frame, also when nobody is found),
``poses/markers`` and ``poses/image`` (only while someone subscribes: they cost more than the
message itself). Every output carries the source image's header (stamp and frame_id)."""

from __future__ import annotations

from typing import Any

from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from pose_ros.msg import PersonPoseArray
from pose_ros.ros import conversions, markers, messages
from pose_ros.ros.camera_stream import CameraStream
from pose_ros.ros.params import RuntimeSettings
from pose_ros.ros.startup import DEBUG_IMAGE_QOS, MARKERS_QOS, POSES_QOS
from pose_ros.types import Person


def create_publishers(node: LifecycleNode, stream: CameraStream) -> None:
    """The camera's lifecycle publishers (they exist from configure, so subscribers can match
    early, and publish only while active)."""
    stream.poses_pub = node.create_lifecycle_publisher(
        PersonPoseArray, stream.topic("poses"), POSES_QOS
    )
    stream.markers_pub = node.create_lifecycle_publisher(
        MarkerArray, stream.topic("poses/markers"), MARKERS_QOS
    )
    stream.image_pub = node.create_lifecycle_publisher(
        Image, stream.topic("poses/image"), DEBUG_IMAGE_QOS
    )


def destroy_publishers(node: LifecycleNode, stream: CameraStream) -> None:
    for publisher in (stream.poses_pub, stream.markers_pub, stream.image_pub):
        if publisher is not None:
            node.destroy_lifecycle_publisher(publisher)
    stream.poses_pub = stream.markers_pub = stream.image_pub = None


def publish(
    stream: CameraStream,
    header: Any,
    image: conversions.ConvertedImage,
    persons: list[Person],
    settings: RuntimeSettings,
) -> None:
    """The outputs of one processed frame."""
    stream.poses_pub.publish(messages.persons_to_msg(persons, header, image.width, image.height))
    if stream.markers_pub.get_subscription_count() > 0:
        stream.markers_pub.publish(
            markers.build_marker_array(
                persons, header, image.width, image.height, settings.markers, stream.camera
            )
        )
    if settings.debug_image_enabled and stream.image_pub.get_subscription_count() > 0:
        from pose_ros.drawing import draw_persons

        canvas = draw_persons(
            image.pixels,
            persons,
            keypoint_threshold=settings.debug_image_keypoint_threshold,
            color_order=image.color_order,
        )
        encoding = "rgb8" if image.color_order == "RGB" else "bgr8"
        stream.image_pub.publish(conversions.array_to_image_msg(canvas, encoding, header=header))
        stream.stats.image_annotated()
