"""Test peer: publishes a fixed PersonPoseArray with two persons on /poses_roundtrip until stopped.

The message content is a pure function of its index, so the receiving test can rebuild it and
compare field by field.
"""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from pose_ros.msg import Keypoint, PersonPose, PersonPoseArray


def make_pose_array() -> PersonPoseArray:
    msg = PersonPoseArray()
    msg.header.stamp.sec = 1_700_000_000
    msg.header.stamp.nanosec = 123_456_789
    msg.header.frame_id = "camera_optical_frame"
    msg.image_width = 640
    msg.image_height = 480
    for person_index in range(2):
        person = PersonPose()
        person.id = 7 + person_index
        person.score = 0.5 + 0.25 * person_index
        person.x_min, person.y_min = 10.0 + 100 * person_index, 20.0
        person.width, person.height = 80.0, 200.0
        person.box_score = 0.9 - 0.1 * person_index
        keypoints = []
        for k in range(Keypoint.NUM_KEYPOINTS):
            kp = Keypoint()
            kp.x = 12.5 + k + 100 * person_index
            kp.y = 30.25 + 10 * k
            kp.score = k / 16.0
            kp.has_position = k % 2 == 0
            if kp.has_position:
                kp.position.x, kp.position.y, kp.position.z = 0.1 * k, -0.2 * k, 2.0 + person_index
            keypoints.append(kp)
        person.keypoints = keypoints
        msg.persons.append(person)
    return msg


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("pose_array_publisher")
    qos = QoSProfile(
        depth=1,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
    )
    publisher = node.create_publisher(PersonPoseArray, "poses_roundtrip", qos)
    message = make_pose_array()
    node.create_timer(0.1, lambda: publisher.publish(message))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
