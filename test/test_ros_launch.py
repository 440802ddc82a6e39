"""Static checks of what `ros2 launch pose_ros pose.launch.py` uses (launch, launch_ros and rviz2 do
not exist here; the node executable itself is tested with the same params file in
test_ros_node.py): the launch file, config/pose.yaml against the parameters the node declares,
config/pose.rviz, and the parameter table itself."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pose_ros.ros import params
from pose_ros.ros.markers import KEYPOINTS_NAMESPACE, SKELETON_NAMESPACE

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "pose.launch.py"
PARAMS_FILE = REPO / "config" / "pose.yaml"
RVIZ_FILE = REPO / "config" / "pose.rviz"


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


def test_what_may_change_at_runtime() -> None:
    for name in ("model", "device", "fp16", "detector.backend", "input_type", "qos.reliability"):
        assert name not in params.RUNTIME_PARAMETERS, name
    for name in (
        "detector.score_threshold",
        "keypoint_score_threshold",
        "max_persons",
        "debug_image.enabled",
        "markers.plane_distance",
        "markers.keypoint_threshold",
        "markers.line_width",
        "markers.sphere_size",
        "markers.pixel_scale",
    ):
        assert name in params.RUNTIME_PARAMETERS, name


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


# --- launch file ---


def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name
    ]


def _keywords(call: ast.Call) -> dict[str, Any]:
    found = {}
    for keyword in call.keywords:
        try:
            found[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            found[keyword.arg] = ast.unparse(keyword.value)
    return found


def test_launch_file_starts_the_installed_executable_with_the_params_file() -> None:
    tree = _launch_tree()
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    nodes = [_keywords(call) for call in _calls(tree, "Node")]
    pose = [kw for kw in nodes if kw.get("package") == "pose_ros"]
    assert len(pose) == 1
    (pose_node,) = pose
    assert pose_node["executable"] == "pose_node" and pose_node["name"] == "pose_node"
    # The executable the launch file names is the one the build installs.
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(
        r"^install\(PROGRAMS scripts/pose_node DESTINATION lib/\$\{PROJECT_NAME\}\)", cmake, re.M
    )
    assert (REPO / "scripts" / "pose_node").stat().st_mode & 0o111, (
        "scripts/pose_node not executable"
    )
    # Default params file: the installed config/pose.yaml (share/pose_ros/config/pose.yaml), and
    # rviz2 gets the shipped config/pose.rviz.
    shared = [tuple(ast.literal_eval(arg) for arg in call.args) for call in _calls(tree, "share")]
    assert ("config", "pose.yaml") in shared and ("config", "pose.rviz") in shared
    assert "FindPackageShare('pose_ros')" in ast.unparse(tree)
    assert "params_file" in pose_node["parameters"]
    rviz = [kw for kw in nodes if kw.get("package") == "rviz2"]
    assert len(rviz) == 1 and "share('config', 'pose.rviz')" in rviz[0]["arguments"]


def test_launch_arguments() -> None:
    tree = _launch_tree()
    (assignment,) = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS"
    ]
    arguments = {name: default for name, default, _ in ast.literal_eval(assignment.value)}
    for required in ("image", "params_file", "device", "namespace", "use_sim_time", "rviz"):
        assert required in arguments, required
    assert arguments["rviz"] == "false" and arguments["use_sim_time"] == "false"
    assert _calls(tree, "DeclareLaunchArgument"), "arguments must be declared"
    # Remappings use the node's relative topic names.
    source = LAUNCH_FILE.read_text()
    for topic in ('"image"', '"image/compressed"', '"camera_info"'):
        assert f"({topic}," in source, topic


def test_launch_config_and_rviz_files_are_installed(install_prefix: Path) -> None:
    share = install_prefix / "share" / "pose_ros"
    for relative in ("launch/pose.launch.py", "config/pose.yaml", "config/pose.rviz"):
        assert (share / relative).is_file(), relative
    assert (install_prefix / "lib" / "pose_ros" / "pose_node").is_file()


# --- RViz config ---


def test_rviz_config_shows_the_markers_and_the_annotated_image() -> None:
    config = yaml.safe_load(RVIZ_FILE.read_text())
    displays = {d["Class"]: d for d in config["Visualization Manager"]["Displays"]}
    markers = displays["rviz_default_plugins/MarkerArray"]
    assert markers["Topic"]["Value"] == "/poses/markers"
    assert set(markers["Namespaces"]) == {KEYPOINTS_NAMESPACE, SKELETON_NAMESPACE}
    image = displays["rviz_default_plugins/Image"]
    assert image["Topic"]["Value"] == "/poses/image"
    # The node publishes both reliably: a reliable subscription matches.
    assert (
        markers["Topic"]["Reliability Policy"] == image["Topic"]["Reliability Policy"] == "Reliable"
    )
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"]
