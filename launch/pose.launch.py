"""Start pose_node on a camera stream, optionally with RViz.

    ros2 launch pose_ros pose.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
    ros2 launch pose_ros pose.launch.py image:=/camera/image_raw rviz:=true \
        rviz_frame:=camera_optical_frame
    ros2 launch pose_ros pose.launch.py params_file:=/path/my.yaml device:=cuda namespace:=front
    ros2 launch pose_ros pose.launch.py preset:=cpu image:=/camera/color/image_raw \
        depth:=/camera/aligned_depth_to_color/image_raw use_depth:=true
    ros2 launch pose_ros pose.launch.py managed:=true   # then: ros2 lifecycle set /pose_node ...
    ros2 launch pose_ros pose.launch.py "cameras:=[front, left, right]"   # one node, one batch

Several cameras (``cameras``): the node reads each camera's ``<camera>/image``, ``camera_info`` and
``depth``, which this launch file connects to ``/<camera>/image_raw``, ``/<camera>/camera_info``
and ``/<camera>/<camera_depth>`` (camera drivers launched in a namespace named after the camera),
and publishes ``/<camera>/poses``... (under ``namespace`` when given).

Outputs (without a namespace): /poses (pose_ros/PersonPoseArray), /poses/markers
(visualization_msgs/MarkerArray), /poses/image (annotated sensor_msgs/Image).

The launch ends with the node. When the node ends with an error (a bad parameter value, missing
weights), launch reports it and exits with code 1.
"""

from __future__ import annotations

from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from pose_ros.ros.camera_stream import camera_names, camera_names_problem

#: preset name -> params file of config/ (used when params_file is not given)
PRESETS = {"default": "pose.yaml", "cpu": "pose_cpu.yaml"}

ARGUMENTS = (
    (
        "image",
        "/image_raw",
        "sensor_msgs/Image topic of the camera (for input_type:=compressed, "
        "the node reads <image>/compressed)",
    ),
    ("camera_info", "/camera_info", "sensor_msgs/CameraInfo topic of the same camera"),
    (
        "depth",
        "/aligned_depth_to_color/image_raw",
        "depth image registered to the camera image (16UC1 mm or 32FC1 m), read with "
        "use_depth:=true, e.g. /camera/aligned_depth_to_color/image_raw of a RealSense",
    ),
    (
        "camera_depth",
        "aligned_depth_to_color/image_raw",
        "with cameras: each camera's registered depth topic under /<camera>/: "
        "aligned_depth_to_color/image_raw (RealSense), depth_registered/image_rect "
        "(depth_image_proc's register), depth_registered/image_raw (openni2), "
        "depth_to_rgb/image_raw (Azure Kinect); never the unregistered depth/image_raw",
    ),
    ("use_depth", "", "overrides the params file's 'use_depth': true or false"),
    (
        "cameras",
        "",
        "several cameras in one node, e.g. [front, left, right] (or front,left,right): each reads "
        "/<camera>/image_raw, /<camera>/camera_info, /<camera>/<camera_depth> and publishes "
        "<camera>/poses...; the single-camera arguments image, camera_info, depth do not apply",
    ),
    ("params_file", "", "parameters YAML; empty: the installed params file of 'preset'"),
    (
        "preset",
        "default",
        "installed params file when params_file is empty: 'default' (config/pose.yaml) or "
        "'cpu' (config/pose_cpu.yaml: settings for a machine without a GPU)",
    ),
    ("model", "", "overrides the params file's 'model' (checkpoint path or registry name)"),
    ("device", "", "overrides the params file's 'device': auto, cpu, cuda or cuda:N"),
    ("input_type", "", "overrides the params file's 'input_type': raw or compressed"),
    ("namespace", "", "namespace of the node and its topics"),
    (
        "managed",
        "false",
        "true: a lifecycle (managed) node that waits for 'configure' and 'activate' "
        "(ros2 lifecycle set, or a lifecycle manager)",
    ),
    ("use_sim_time", "false", "use /clock (bag playback)"),
    ("rviz", "false", "also start rviz2 with config/pose.rviz"),
    ("rviz_frame", "camera_optical_frame", "RViz fixed frame: the camera's optical frame_id"),
)


class LaunchArgumentError(ValueError):
    """A launch argument with a value the launch file cannot use."""


def _flag(context: LaunchContext, name: str) -> bool:
    text = LaunchConfiguration(name).perform(context).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise LaunchArgumentError(f"{name}:={text!r} is not a boolean: use true or false")


def _on_node_exit(event: ProcessExited, context: LaunchContext) -> list:
    """The launch ends with the node; a node that failed makes `ros2 launch` fail too (launch
    itself returns 0 when a process dies, which would hide a start-up error from scripts)."""
    if event.returncode != 0:
        raise RuntimeError(
            f"{event.action.name} exited with code {event.returncode} (its message is above)"
        )
    # After Ctrl-C launch is already ending: a Shutdown would only log a misleading line.
    return [] if context.is_shutdown else [Shutdown(reason="pose_node finished")]


def _nodes(context: LaunchContext, *args, **kwargs) -> list:
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    def share(*parts: str) -> str:
        return PathJoinSubstitution([FindPackageShare("pose_ros"), *parts]).perform(context)

    preset = value("preset").strip()
    if preset not in PRESETS:
        raise LaunchArgumentError(f"preset:={preset!r} is not one of {', '.join(sorted(PRESETS))}")
    params_file = value("params_file") or share("config", PRESETS[preset])
    # Said here, by name: launch_ros would otherwise fail later with a bare path.
    if not Path(params_file).is_file():
        raise LaunchArgumentError(f"params_file:={params_file}: no such file")
    use_sim_time = _flag(context, "use_sim_time")
    managed = _flag(context, "managed")
    # Only arguments given on the command line override the params file.
    overrides: dict[str, object] = {"use_sim_time": use_sim_time}
    if managed:
        overrides["managed"] = True
    for name in ("model", "device", "input_type"):
        if value(name):
            overrides[name] = value(name)
    if value("use_depth").strip():
        overrides["use_depth"] = _flag(context, "use_depth")
    namespace = value("namespace").strip("/")
    image = value("image")
    problem = camera_names_problem(value("cameras"))
    if problem is not None:
        raise LaunchArgumentError(problem)
    cameras = camera_names(value("cameras"))
    if cameras:
        overrides["cameras"] = cameras
        # Each camera's driver in a namespace named after it, with the usual topic names.
        remappings = [
            (f"{camera}/{topic}", f"/{camera}/{target}")
            for camera in cameras
            for topic, target in (
                ("image", "image_raw"),
                ("image/compressed", "image_raw/compressed"),
                ("camera_info", "camera_info"),
                # The registered stream: pixels of the colour image (depth.md).
                ("depth", value("camera_depth").strip("/")),
            )
        ]
    else:
        remappings = [
            ("image", image),
            ("image/compressed", image.rstrip("/") + "/compressed"),
            ("camera_info", value("camera_info")),
            ("depth", value("depth")),
        ]
    # Both executables are pose_node: the `managed` parameter makes it a lifecycle node, and
    # LifecycleNode lets launch event handlers follow its transitions.
    node_action = LifecycleNode if managed else Node
    actions = [
        # Which params file and overrides the node gets: the first thing to check in a launch log.
        LogInfo(msg=f"pose_node parameters: {params_file} + {overrides}"),
        node_action(
            package="pose_ros",
            executable="pose_node",
            name="pose_node",
            namespace=namespace,
            parameters=[params_file, overrides],
            remappings=remappings,
            output="screen",
            emulate_tty=True,
            on_exit=_on_node_exit,
        ),
    ]
    if _flag(context, "rviz"):
        # config/pose.rviz names the topics of the default launch (/poses/...); follow a namespace.
        prefix = f"/{namespace}" if namespace else ""
        if cameras:  # RViz shows the first camera's results (add displays for the others)
            prefix += f"/{cameras[0]}"
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
