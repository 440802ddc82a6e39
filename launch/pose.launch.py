"""Start pose_node on a camera stream, optionally with RViz.

    ros2 launch pose_ros pose.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
    ros2 launch pose_ros pose.launch.py image:=/camera/image_raw rviz:=true \
        rviz_frame:=camera_optical_frame
    ros2 launch pose_ros pose.launch.py params_file:=/path/my.yaml device:=cuda namespace:=front

Outputs (without a namespace): /poses (pose_ros/PersonPoseArray), /poses/markers
(visualization_msgs/MarkerArray), /poses/image (annotated sensor_msgs/Image).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    (
        "image",
        "/image_raw",
        "sensor_msgs/Image topic of the camera (for input_type:=compressed, "
        "the node reads <image>/compressed)",
    ),
    ("camera_info", "/camera_info", "sensor_msgs/CameraInfo topic of the same camera"),
    ("params_file", "", "parameters YAML; empty: the installed config/pose.yaml"),
    ("model", "", "overrides the params file's 'model' (checkpoint path or registry name)"),
    ("device", "", "overrides the params file's 'device': auto, cpu, cuda or cuda:N"),
    ("input_type", "", "overrides the params file's 'input_type': raw or compressed"),
    ("namespace", "", "namespace of the node and its topics"),
    ("use_sim_time", "false", "use /clock (bag playback)"),
    ("rviz", "false", "also start rviz2 with config/pose.rviz"),
    ("rviz_frame", "camera_optical_frame", "RViz fixed frame: the camera's optical frame_id"),
)


def _nodes(context, *args, **kwargs):
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    def share(*parts: str) -> str:
        return PathJoinSubstitution([FindPackageShare("pose_ros"), *parts]).perform(context)

    params_file = value("params_file") or share("config", "pose.yaml")
    use_sim_time = value("use_sim_time").lower() in ("true", "1")
    # Only arguments given on the command line override the params file.
    overrides = {"use_sim_time": use_sim_time}
    for name in ("model", "device", "input_type"):
        if value(name):
            overrides[name] = value(name)
    namespace = value("namespace").strip("/")
    image = value("image")
    actions = [
        Node(
            package="pose_ros",
            executable="pose_node",
            name="pose_node",
            namespace=namespace,
            parameters=[params_file, overrides],
            remappings=[
                ("image", image),
                ("image/compressed", image.rstrip("/") + "/compressed"),
                ("camera_info", value("camera_info")),
            ],
            output="screen",
            emulate_tty=True,
        )
    ]
    if value("rviz").lower() in ("true", "1"):
        # config/pose.rviz names the topics of the default launch (/poses/...); follow a namespace.
        prefix = f"/{namespace}" if namespace else ""
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", share("config", "pose.rviz"), "-f", value("rviz_frame")],
                parameters=[{"use_sim_time": use_sim_time}],
                remappings=[
                    (f"/poses/{topic}", f"{prefix}/poses/{topic}") for topic in ("markers", "image")
                ],
                output="screen",
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, default, description in ARGUMENTS
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
