"""`ros2 launch pose_ros pose.launch.py`, for real: each launch argument changes what the started
node does (name, namespace, subscriptions, parameters, answers), Ctrl-C ends it cleanly, and a bad
argument ends the launch with a clear message and a non-zero code. Also the static agreement of
config/pose.yaml (and the other presets) with the parameters the node declares, and
config/pose.rviz.

The launched node uses a tiny real checkpoint and the `full_image` detector (a params file the
test writes), so it answers in a fraction of a second on 2 CPU cores; launches start once per
module. Needs the ros2 tools (see test/ros2_tools.py for where they come from).
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from devtools import ros_harness as harness
from pose_ros.ros import params
from pose_ros.ros.markers import (
    KEYPOINTS_NAMESPACE,
    SKELETON_NAMESPACE,
    TRACKED_KEYPOINTS_NAMESPACE,
    TRACKED_SKELETON_NAMESPACE,
)
from ros2_tools import NO_DAEMON, cli, launch_args, launched, needs_ros2, tools_env

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "pose.launch.py"
PARAMS_FILE = REPO / "config" / "pose.yaml"
RVIZ_FILE = REPO / "config" / "pose.rviz"
#: launch argument preset -> params file of config/ (what launch/pose.launch.py documents)
PRESET_FILES = {"default": "pose.yaml", "cpu": "pose_cpu.yaml"}
#: the presets whose file exists in this tree (config/pose_cpu.yaml comes with the CPU preset)
PRESETS = [name for name, file in PRESET_FILES.items() if (REPO / "config" / file).is_file()]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """ROS params-file nesting → dotted parameter names."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _params_file_values() -> dict[str, Any]:
    document = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(document) == ["/**/pose_node"], "one node section, matching any namespace"
    return _flatten(document["/**/pose_node"]["ros__parameters"])


def test_params_file_sets_exactly_the_declared_parameters_to_their_defaults() -> None:
    values = _params_file_values()
    declared = {spec.name for spec in params.PARAMETERS}
    assert set(values) - declared == set(), "keys the node does not declare (typos are ignored)"
    assert declared - set(values) == set(), "declared parameters missing from config/pose.yaml"
    for name, value in values.items():
        default = params.DEFAULTS[name]
        assert type(value) is type(default), f"{name}: {value!r} is not a {type(default).__name__}"
        assert value == default, f"{name}: pose.yaml says {value!r}, params.py {default!r}"


def test_every_parameter_has_a_description_and_a_valid_default() -> None:
    assert len(params.SPECS) == len(params.PARAMETERS), "duplicate parameter names"
    for spec in params.PARAMETERS:
        assert len(spec.description) > 20, spec.name
        assert spec.problem(spec.default) is None, spec.name
        descriptor = spec.descriptor()
        assert descriptor.description == spec.description
        assert descriptor.read_only == spec.read_only
        if spec.float_range:
            (rng,) = descriptor.floating_point_range
            assert (rng.from_value, rng.to_value) == spec.float_range
        if spec.int_range:
            (rng,) = descriptor.integer_range
            assert (rng.from_value, rng.to_value) == spec.int_range


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("device", "gpu", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("device", "cuda:x", "cuda:N"),
        ("fp16", "maybe", "true, false or 'auto'"),
        ("decode", "best", "quarter, dark"),
        ("input_type", "video", "raw, compressed"),
        ("qos.reliability", "sometimes", "best_effort, reliable"),
        ("qos.depth", 0, "[1, 100]"),
        ("markers.plane_distance", -1.0, "[0.01, 1000]"),
        ("markers.plane_distance", math.nan, "[0.01, 1000]"),
        ("detector.score_threshold", 1.5, "[0, 1]"),
        ("markers.line_width", 1, "must be a double"),
        ("debug_image.enabled", "yes", "must be a bool"),
        ("model", " ", "must not be empty"),
        ("max_persons", True, "must be a integer"),
    ],
)
def test_bad_values_are_refused_with_a_reason(name: str, value: Any, words: str) -> None:
    problem = params.parameter_problem(name, value)
    assert problem is not None and words in problem, problem
    assert name in problem


def test_good_values_pass() -> None:
    for name, value in [
        ("device", "cuda:1"),
        ("fp16", True),
        ("fp16", "auto"),
        ("markers.plane_distance", 0.5),
        ("qos.reliability", "reliable"),
    ]:
        assert params.parameter_problem(name, value) is None, (name, value)
    assert params.parameter_problem("not_ours", object()) is None


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_sets_only_declared_parameters_to_valid_values(preset: str) -> None:
    document = yaml.safe_load((REPO / "config" / PRESET_FILES[preset]).read_text())
    assert list(document) == ["/**/pose_node"], "one node section, matching any namespace"
    values = _flatten(document["/**/pose_node"]["ros__parameters"])
    unknown = set(values) - set(params.SPECS)
    assert not unknown, f"{PRESET_FILES[preset]}: keys the node does not declare: {unknown}"
    for name, value in values.items():
        assert params.parameter_problem(name, value) is None, (name, value)


# --- ros2 launch, for real ---

LAUNCH_NS = "launch_a"
CAMERA = "/launch_cam"
FRAME_ID = "launch_camera_optical_frame"


@pytest.fixture(scope="module")
def test_params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a user's own params file looks like: only the keys that differ from the defaults."""
    path = tmp_path_factory.mktemp("launch_params") / "my_pose.yaml"
    path.write_text(
        "/**/pose_node:\n"
        "  ros__parameters:\n"
        "    detector:\n"
        "      backend: full_image\n"
        "    debug_image:\n"
        "      enabled: false\n"
    )
    return path


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """The demo's drawn figure, 160 x 106 RGB: small enough for DDS shared memory, so a
    best-effort subscription (the node's default) gets every frame; needs no test data, so these
    tests also run under `colcon test` in a user's workspace."""
    from pose_ros.demo_scene import figure_keypoints, render_figure

    return render_figure(figure_keypoints(0.0, 160, 106), 160, 106)


@pytest.fixture(scope="module")
def peer():
    peer = harness.Peer("launch_test_peer")
    yield peer
    peer.close()


def _wait_for_node(peer: harness.Peer, name: str, namespace: str, launch, timeout=120.0) -> None:
    launch.wait_for_log(harness.READY_PATTERN, timeout=timeout)
    found = peer.spin_until(
        lambda: (name, namespace) in peer.node.get_node_names_and_namespaces(), timeout=30.0
    )
    assert found, f"{namespace}/{name} not in the ROS graph: {launch.log()[-3000:]}"


def _topics(pairs: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    return dict(pairs)


def _answer(peer: harness.Peer, launch, publisher, msg, answers: list, stamp: int):
    arrived = peer.publish_until(
        lambda: publisher.publish(msg),
        lambda: bool(harness.with_stamp(answers, stamp)),
        timeout=60.0,
    )
    assert arrived, f"no answer to the frame stamped {stamp}; launch log:\n{launch.log()[-3000:]}"
    return harness.with_stamp(answers, stamp)[0]


def _parameters(peer: harness.Peer, node: str, names: list[str]) -> dict[str, Any]:
    from rclpy.parameter import parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(peer.node, node)
    assert client.wait_for_services(timeout_sec=30.0), f"no parameter services of {node}"
    future = client.get_parameters(names)
    assert peer.spin_until(future.done, timeout=30.0), "get_parameters did not answer"
    return {
        n: parameter_value_to_python(v) for n, v in zip(names, future.result().values, strict=True)
    }


def _assert_clean_finish(launch) -> None:
    code = launch.interrupt(timeout=60.0)
    log = launch.log()
    assert code == 0, f"ros2 launch ended with {code} after Ctrl-C:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert re.search(r"\[pose_node-1\]: process has finished cleanly", log), log[-3000:]
    assert "Caught exception in launch" not in log, log[-3000:]


@pytest.fixture(scope="module")
def launch_a(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, test_params_file: Path
):
    """Every remapping and override argument at once: namespace, image, camera_info, depth,
    params_file, model, device."""
    log = tmp_path_factory.mktemp("launch_a") / "launch.log"
    with launched(
        log,
        f"namespace:={LAUNCH_NS}",
        f"image:={CAMERA}/image",
        f"camera_info:={CAMERA}/info",
        f"depth:={CAMERA}/depth",
        f"params_file:={test_params_file}",
        f"model:={tiny_checkpoint}",
        "device:=cpu",
    ) as launch:
        yield launch


@needs_ros2
@pytest.mark.ros
@pytest.mark.slow
def test_launch_starts_the_node_in_the_namespace_with_the_remapped_topics(
    peer: harness.Peer, launch_a
) -> None:
    _wait_for_node(peer, "pose_node", f"/{LAUNCH_NS}", launch_a)
    node = peer.node
    subscribed = _topics(node.get_subscriber_names_and_types_by_node("pose_node", f"/{LAUNCH_NS}"))
    assert subscribed.get(f"{CAMERA}/image") == ["sensor_msgs/msg/Image"], subscribed
    assert subscribed.get(f"{CAMERA}/info") == ["sensor_msgs/msg/CameraInfo"], subscribed
    # The relative input names are always remapped: none stays inside the namespace.
    for relative in ("image", "image/compressed", "camera_info", "depth"):
        assert f"/{LAUNCH_NS}/{relative}" not in subscribed, subscribed
    published = _topics(node.get_publisher_names_and_types_by_node("pose_node", f"/{LAUNCH_NS}"))
    assert published.get(f"/{LAUNCH_NS}/poses") == ["pose_ros/msg/PersonPoseArray"], published
    assert published.get(f"/{LAUNCH_NS}/poses/markers") == ["visualization_msgs/msg/MarkerArray"], (
        published
    )


@needs_ros2
@pytest.mark.ros
@pytest.mark.slow
def test_launch_arguments_and_params_file_reach_the_node(
    peer: harness.Peer, launch_a, tiny_checkpoint: Path
) -> None:
    _wait_for_node(peer, "pose_node", f"/{LAUNCH_NS}", launch_a)
    values = _parameters(
        peer,
        f"/{LAUNCH_NS}/pose_node",
        ["model", "device", "detector.backend", "debug_image.enabled", "input_type"],
    )
    assert values == {
        "model": str(tiny_checkpoint),  # model:=
        "device": "cpu",  # device:=
        "detector.backend": "full_image",  # params_file:=
        "debug_image.enabled": False,  # params_file:=
        "input_type": "raw",  # the default, not given
    }


#: Every parameter the launched node declares: pose_node's own and rclpy's (use_sim_time,
#: start_type_description_service). Written out, not read from params.py: a parameter added,
#: removed or renamed must show up here.
NODE_PARAMETERS = {
    "allow_random_weights",
    "batch_wait_sec",
    "camera.rectified",
    "cameras",
    "cpu_threads",
    "debug_image.enabled",
    "debug_image.keypoint_threshold",
    "decode",
    "depth.allow_rescale",
    "depth.max_m",
    "depth.min_m",
    "depth.patch_radius",
    "depth.person_band_m",
    "depth.slop_sec",
    "detector.backend",
    "detector.engine",
    "detector.interval",
    "detector.reuse_score_threshold",
    "detector.score_threshold",
    "detector.weights",
    "detector.yolo_layout",
    "device",
    "engine",
    "flip_test",
    "fp16",
    "input_type",
    "keypoint_score_threshold",
    "log_period_sec",
    "managed",
    "markers.keypoint_threshold",
    "markers.line_width",
    "markers.pixel_scale",
    "markers.plane_distance",
    "markers.sphere_size",
    "max_image_pixels",
    "max_persons",
    "model",
    "no_input_warning_sec",
    "qos.depth",
    "qos.reliability",
    "smoothing.beta",
    "smoothing.d_cutoff",
    "smoothing.enabled",
    "smoothing.min_cutoff",
    "smoothing.position_beta",
    "smoothing.position_min_cutoff",
    "tracking.enabled",
    "tracking.iou_weight",
    "tracking.match_threshold",
    "tracking.max_age_sec",
    "tracking.min_hits",
    "triton.model",
    "triton.timeout_ms",
    "triton.url",
    "use_camera_info",
    "use_depth",
    # rclpy's own
    "use_sim_time",
    "start_type_description_service",
}
#: The ones a running node accepts changes of (not read-only): thresholds, drawing, smoothing,
#: tracking, depth sampling, the detector interval. Model, device, engines (the Triton server
#: too), topics, QoS, the cameras and their camera model are fixed at start (read-only).
RUNTIME_CHANGEABLE = {
    "batch_wait_sec",
    "debug_image.enabled",
    "debug_image.keypoint_threshold",
    "depth.allow_rescale",
    "depth.max_m",
    "depth.min_m",
    "depth.patch_radius",
    "depth.person_band_m",
    "detector.interval",
    "detector.reuse_score_threshold",
    "detector.score_threshold",
    "keypoint_score_threshold",
    "markers.keypoint_threshold",
    "markers.line_width",
    "markers.pixel_scale",
    "markers.plane_distance",
    "markers.sphere_size",
    "max_image_pixels",
    "max_persons",
    "smoothing.beta",
    "smoothing.d_cutoff",
    "smoothing.enabled",
    "smoothing.min_cutoff",
    "smoothing.position_beta",
    "smoothing.position_min_cutoff",
    "tracking.enabled",
    "tracking.iou_weight",
    "tracking.match_threshold",
    "tracking.max_age_sec",
    "tracking.min_hits",
    "use_sim_time",  # rclpy's
}


@needs_ros2
@pytest.mark.ros
@pytest.mark.slow
def test_launched_node_declares_exactly_these_parameters_and_these_change_at_runtime(
    peer: harness.Peer, launch_a
) -> None:
    """Asked of the running node through its parameter services (what `ros2 param list` and
    `ros2 param describe` use): the names it declares and the read-only flag of each."""
    from rclpy.parameter_client import AsyncParameterClient

    _wait_for_node(peer, "pose_node", f"/{LAUNCH_NS}", launch_a)
    client = AsyncParameterClient(peer.node, f"/{LAUNCH_NS}/pose_node")
    assert client.wait_for_services(timeout_sec=30.0), "no parameter services"
    listed = client.list_parameters()
    assert peer.spin_until(listed.done, timeout=30.0), "list_parameters did not answer"
    names = sorted(listed.result().result.names)
    assert len(names) == len(set(names))
    assert set(names) - NODE_PARAMETERS == set(), "declared but not expected"
    assert NODE_PARAMETERS - set(names) == set(), "expected but not declared"
    described = client.describe_parameters(names)
    assert peer.spin_until(described.done, timeout=30.0), "describe_parameters did not answer"
    descriptors = described.result().descriptors
    assert [d.name for d in descriptors] == names
    changeable = {d.name for d in descriptors if not d.read_only}
    assert changeable - RUNTIME_CHANGEABLE == set(), "changeable at runtime but not expected"
    assert RUNTIME_CHANGEABLE - changeable == set(), "expected changeable but read-only"
    # The node's own list of them agrees (the parameter callback refuses the others).
    assert set(params.RUNTIME_PARAMETERS) == changeable - {"use_sim_time"}


@needs_ros2
@pytest.mark.ros
@pytest.mark.slow
def test_launched_node_answers_frames_on_the_namespaced_outputs(
    peer: harness.Peer, launch_a, frame: np.ndarray
) -> None:
    from sensor_msgs.msg import Image

    from pose_ros.msg import PersonPoseArray
    from pose_ros.ros.conversions import array_to_image_msg

    _wait_for_node(peer, "pose_node", f"/{LAUNCH_NS}", launch_a)
    answers, _ = peer.collect(PersonPoseArray, f"/{LAUNCH_NS}/poses", harness.reliable())
    publisher = peer.node.create_publisher(Image, f"{CAMERA}/image", harness.reliable(2))
    msg = array_to_image_msg(frame, "rgb8", header=harness.make_header(4242, FRAME_ID))
    result = _answer(peer, launch_a, publisher, msg, answers, 4242)
    assert result.header.frame_id == FRAME_ID
    assert (result.image_width, result.image_height) == (160, 106)
    # full_image detector: the whole frame is one person
    assert len(result.persons) == 1


@needs_ros2
@pytest.mark.ros
@pytest.mark.slow
def test_ctrl_c_ends_the_launch_cleanly(peer: harness.Peer, launch_a) -> None:
    _wait_for_node(peer, "pose_node", f"/{LAUNCH_NS}", launch_a)
    _assert_clean_finish(launch_a)


@needs_ros2
@pytest.mark.ros
@pytest.mark.slow
def test_compressed_input_without_namespace(
    tmp_path: Path,
    peer: harness.Peer,
    tiny_checkpoint: Path,
    test_params_file: Path,
    frame: np.ndarray,
) -> None:
    """input_type:=compressed reads <image>/compressed; without a namespace the outputs are the
    README's /poses."""
    from sensor_msgs.msg import CompressedImage

    from pose_ros.msg import PersonPoseArray

    with launched(
        tmp_path / "launch.log",
        "input_type:=compressed",
        f"params_file:={test_params_file}",
        f"model:={tiny_checkpoint}",
        "device:=cpu",
    ) as launch:
        _wait_for_node(peer, "pose_node", "/", launch)
        subscribed = _topics(peer.node.get_subscriber_names_and_types_by_node("pose_node", "/"))
        assert subscribed.get("/image_raw/compressed") == ["sensor_msgs/msg/CompressedImage"]
        assert "/image_raw" not in subscribed, subscribed
        answers, _ = peer.collect(PersonPoseArray, "/poses", harness.reliable())
        publisher = peer.node.create_publisher(
            CompressedImage, "/image_raw/compressed", harness.reliable(2)
        )
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]))
        assert ok
        msg = CompressedImage(
            header=harness.make_header(4343, FRAME_ID), format="jpeg", data=jpeg.tobytes()
        )
        result = _answer(peer, launch, publisher, msg, answers, 4343)
        assert (result.image_width, result.image_height) == (160, 106)
        _assert_clean_finish(launch)


@needs_ros2
@pytest.mark.ros
@pytest.mark.slow
def test_managed_launch_starts_a_lifecycle_node(
    tmp_path: Path,
    peer: harness.Peer,
    tiny_checkpoint: Path,
    test_params_file: Path,
    frame: np.ndarray,
) -> None:
    """managed:=true: the node waits unconfigured, without subscribing, until `ros2 lifecycle set`
    configures and activates it; then it answers frames, and Ctrl-C still ends cleanly."""
    from sensor_msgs.msg import Image

    from pose_ros.msg import PersonPoseArray
    from pose_ros.ros.conversions import array_to_image_msg

    node = "/managed_ns/pose_node"
    with launched(
        tmp_path / "launch.log",
        "managed:=true",
        "namespace:=managed_ns",
        f"image:={CAMERA}/managed_image",
        f"params_file:={test_params_file}",
        f"model:={tiny_checkpoint}",
        "device:=cpu",
    ) as launch:
        launch.wait_for_log(harness.MANAGED_READY_PATTERN, timeout=120.0)
        state = cli(["lifecycle", "get", *NO_DAEMON, node], tmp_path)
        assert state.stdout.strip() == "unconfigured [1]", state.stdout
        subscribed = _topics(
            peer.node.get_subscriber_names_and_types_by_node("pose_node", "/managed_ns")
        )
        assert f"{CAMERA}/managed_image" not in subscribed, subscribed
        for transition in ("configure", "activate"):
            result = cli(["lifecycle", "set", *NO_DAEMON, node, transition], tmp_path)
            assert result.stdout.strip() == "Transitioning successful", (
                result.stdout + launch.log()[-3000:]
            )
        state = cli(["lifecycle", "get", *NO_DAEMON, node], tmp_path)
        assert state.stdout.strip() == "active [3]", state.stdout
        answers, _ = peer.collect(PersonPoseArray, "/managed_ns/poses", harness.reliable())
        publisher = peer.node.create_publisher(
            Image, f"{CAMERA}/managed_image", harness.reliable(2)
        )
        msg = array_to_image_msg(frame, "rgb8", header=harness.make_header(4444, FRAME_ID))
        result = _answer(peer, launch, publisher, msg, answers, 4444)
        assert len(result.persons) == 1
        _assert_clean_finish(launch)


@needs_ros2
@pytest.mark.ros
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_chooses_the_installed_params_file(
    tmp_path: Path, preset: str, install_prefix: Path
) -> None:
    """Without params_file the node gets the installed file of the preset (launch logs which)."""
    expected = install_prefix / "share" / "pose_ros" / "config" / PRESET_FILES[preset]
    with launched(tmp_path / "launch.log", f"preset:={preset}", "device:=cpu") as launch:
        match = launch.wait_for_log(r"pose_node parameters: (\S+)", timeout=60.0)
    assert Path(match.group(1)) == expected, launch.log()[-2000:]


@needs_ros2
@pytest.mark.ros
def test_cameras_argument_gives_one_node_for_several_cameras(
    tmp_path: Path,
    peer: harness.Peer,
    tiny_checkpoint: Path,
    test_params_file: Path,
    frame: np.ndarray,
) -> None:
    """cameras:=[front, left] use_depth:=true: one node reading /<camera>/image_raw,
    /<camera>/camera_info and the registered depth /<camera>/aligned_depth_to_color/image_raw,
    publishing <namespace>/<camera>/poses; each camera's frame answered on its own topic."""
    from sensor_msgs.msg import Image

    from pose_ros.msg import PersonPoseArray
    from pose_ros.ros.conversions import array_to_image_msg

    namespace = "pose_launch_cameras"
    with launched(
        tmp_path / "launch.log",
        "cameras:=[front, left]",
        "use_depth:=true",
        f"namespace:={namespace}",
        f"params_file:={test_params_file}",
        f"model:={tiny_checkpoint}",
        "device:=cpu",
    ) as launch:
        _wait_for_node(peer, "pose_node", f"/{namespace}", launch)
        subscribed = _topics(
            peer.node.get_subscriber_names_and_types_by_node("pose_node", f"/{namespace}")
        )
        for camera in ("front", "left"):
            assert subscribed.get(f"/{camera}/image_raw") == ["sensor_msgs/msg/Image"], subscribed
            assert subscribed.get(f"/{camera}/camera_info") == ["sensor_msgs/msg/CameraInfo"]
            depth = f"/{camera}/aligned_depth_to_color/image_raw"
            assert subscribed.get(depth) == ["sensor_msgs/msg/Image"], subscribed
        assert not any(topic.endswith("/image") for topic in subscribed), subscribed
        values = _parameters(peer, f"/{namespace}/pose_node", ["cameras"])
        assert values == {"cameras": ["front", "left"]}
        for stamp, camera in ((4401, "front"), (4402, "left")):
            answers, _ = peer.collect(
                PersonPoseArray, f"/{namespace}/{camera}/poses", harness.reliable()
            )
            publisher = peer.node.create_publisher(
                Image, f"/{camera}/image_raw", harness.reliable(2)
            )
            header = harness.make_header(stamp, f"{camera}_optical_frame")
            msg = array_to_image_msg(frame, "rgb8", header=header)
            result = _answer(peer, launch, publisher, msg, answers, stamp)
            assert result.header.frame_id == f"{camera}_optical_frame"
        _assert_clean_finish(launch)


@needs_ros2
@pytest.mark.ros
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # said by the launch file, before anything starts
        (["params_file:=/nonexistent/my_pose.yaml"], "params_file:=/nonexistent/my_pose.yaml: no"),
        (["preset:=gpu"], "preset:='gpu' is not one of cpu, default"),
        (["managed:=maybe"], "managed:='maybe' is not a boolean"),
        # said by the node, which then exits: launch fails with it
        (["device:=gpu"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        (["input_type:=video"], "input_type"),
    ],
)
def test_bad_arguments_end_the_launch_with_a_clear_message(
    tmp_path: Path, arguments: list[str], message: str, test_params_file: Path
) -> None:
    given = {a.split(":=")[0] for a in arguments}
    if "params_file" not in given:
        arguments = [*arguments, f"params_file:={test_params_file}"]
    result = subprocess.run(
        launch_args(*arguments),
        env=tools_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=180,
    )
    assert result.returncode != 0, result.stdout[-3000:]
    assert message in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in result.stdout, result.stdout[-3000:]
    if "input_type" in given:
        assert "raw, compressed" in result.stdout, result.stdout[-3000:]


def test_launch_file_and_configs_are_installed(install_prefix: Path) -> None:
    share = install_prefix / "share" / "pose_ros"
    for relative in ("launch/pose.launch.py", "config/pose.rviz"):
        assert (share / relative).is_file(), relative
    for preset in PRESETS:
        assert (share / "config" / PRESET_FILES[preset]).is_file(), preset
    assert (install_prefix / "lib" / "pose_ros" / "pose_node").is_file()


# --- RViz config ---


def test_rviz_config_shows_the_markers_and_the_annotated_image() -> None:
    config = yaml.safe_load(RVIZ_FILE.read_text())
    displays = {d["Class"]: d for d in config["Visualization Manager"]["Displays"]}
    markers = displays["rviz_default_plugins/MarkerArray"]
    assert markers["Topic"]["Value"] == "/poses/markers"
    assert set(markers["Namespaces"]) == {
        KEYPOINTS_NAMESPACE,
        SKELETON_NAMESPACE,
        TRACKED_KEYPOINTS_NAMESPACE,
        TRACKED_SKELETON_NAMESPACE,
    }
    image = displays["rviz_default_plugins/Image"]
    assert image["Topic"]["Value"] == "/poses/image"
    # The node publishes both reliably: a reliable subscription matches.
    assert (
        markers["Topic"]["Reliability Policy"] == image["Topic"]["Reliability Policy"] == "Reliable"
    )
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"]
