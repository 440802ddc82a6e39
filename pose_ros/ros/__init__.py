"""The ROS 2 side of pose_ros: the ``pose_node`` node and the pieces it is made of.

* :mod:`pose_ros.ros.params`: every parameter of the node, declared once (defaults, ranges,
  descriptions, which ones may change at runtime).
* :mod:`pose_ros.ros.conversions`: sensor_msgs Image / CompressedImage ⇄ numpy, without cv_bridge.
* :mod:`pose_ros.ros.messages`: pipeline results → ``pose_ros/PersonPoseArray``.
* :mod:`pose_ros.ros.markers`: pipeline results → ``visualization_msgs/MarkerArray`` for RViz.
* :mod:`pose_ros.ros.camera_stream`: what belongs to one camera of the node (``cameras``).
* :mod:`pose_ros.ros.mailbox`: the newest frame of each camera, between callbacks and the worker.
* :mod:`pose_ros.ros.startup`: the pipeline from the parameters, the QoS of the topics.
* :mod:`pose_ros.ros.inputs`: subscriptions, colour/depth pairing, camera_info.
* :mod:`pose_ros.ros.worker`: the inference thread and one cycle through the stream core.
* :mod:`pose_ros.ros.outputs`: poses, markers and the annotated image per camera.
* :mod:`pose_ros.ros.health`: /diagnostics, the no-input warning, the status line.
* :mod:`pose_ros.ros.node`: the lifecycle node that wires them; :mod:`pose_ros.ros.main` runs it.

What happens to frames over time is the ROS-free stream core, :mod:`pose_ros.stream`.

Everything here imports rclpy or ROS messages; the library outside this package does not.
"""
