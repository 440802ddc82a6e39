"""The foundation is real: the package builds with colcon from a clean tree, the generated messages
import, a PersonPoseArray crosses from one process to another over DDS, package.xml declares what
the code and the build use, and DDS stays on loopback."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pose_ros import keypoints
from ros_support import REPO_ROOT, python_args, ros_subprocess_env, running_process, spin_until

# rosdep key of every third-party module the package's Python code may import (ROS packages map to
# themselves). A new import must be added here *and* to package.xml.
ROSDEP_KEYS = {
    "rclpy": "rclpy",
    "std_msgs": "std_msgs",
    "geometry_msgs": "geometry_msgs",
    "sensor_msgs": "sensor_msgs",
    "visualization_msgs": "visualization_msgs",
    "builtin_interfaces": "builtin_interfaces",
    "rcl_interfaces": "rcl_interfaces",
    "cv_bridge": "cv_bridge",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "torch": "python3-torch",
    "torchvision": "python3-torchvision",
    "scipy": "python3-scipy",
    "tqdm": "python3-tqdm",
}
# Extras installed with pip (README): allowed only as lazy imports, inside the function that needs
# them, so the node starts without them.
PIP_EXTRAS = {"onnxruntime", "onnx", "pycocotools", "tensorrt", "safetensors", "tensorboard"}


def _package_xml_deps() -> dict[str, set[str]]:
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    deps: dict[str, set[str]] = {}
    for element in root:
        if element.tag.endswith("depend"):
            deps.setdefault(element.tag, set()).add(element.text.strip())
    return deps


def _python_sources() -> list[Path]:
    files = sorted((REPO_ROOT / "pose_ros").rglob("*.py"))
    files += sorted((REPO_ROOT / "launch").glob("*.py"))
    files += [
        p
        for p in (REPO_ROOT / "scripts").iterdir()
        if p.read_text().startswith("#!/usr/bin/env python")
    ]
    return files


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported at module level) for each import of a Python file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # typing-only imports never run
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], module_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], module_level))
            in_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, module_level and not in_function)

    visit(tree, True)
    return found


def test_package_xml_declares_every_python_import() -> None:
    deps = _package_xml_deps()
    runtime = deps.get("depend", set()) | deps.get("exec_depend", set())
    problems = []
    for path in _python_sources():
        for module, module_level in _imports(path):
            if module in sys.stdlib_module_names or module == "pose_ros":
                continue
            where = path.relative_to(REPO_ROOT)
            if module in PIP_EXTRAS:
                if module_level:
                    problems.append(f"{where}: optional '{module}' must be imported lazily")
                continue
            key = ROSDEP_KEYS.get(module)
            if key is None:
                problems.append(
                    f"{where}: unknown third-party import '{module}' (add its rosdep key)"
                )
            elif key not in runtime:
                problems.append(
                    f"{where}: imports '{module}' but package.xml lacks <exec_depend>{key}"
                )
    assert not problems, "\n".join(problems)


def test_package_xml_declares_every_cmake_dependency() -> None:
    deps = _package_xml_deps()
    build = (
        deps.get("buildtool_depend", set())
        | deps.get("build_depend", set())
        | deps.get("depend", set())
    )
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    found = set(re.findall(r"find_package\((\w+)", cmake))
    interface_deps = re.search(r"DEPENDENCIES ([\w ]+)", cmake)
    assert found, "no find_package() found in CMakeLists.txt"
    assert interface_deps, "rosidl_generate_interfaces() lists no DEPENDENCIES"
    missing = sorted(found - build)
    assert not missing, (
        f"CMakeLists.txt find_package()s not declared as build dependencies: {missing}"
    )
    for msg_dep in interface_deps.group(1).split():
        assert msg_dep in deps.get("depend", set()), (
            f"message dependency {msg_dep} must be <depend>"
        )
    assert "rosidl_default_runtime" in deps.get("exec_depend", set())
    group = ET.parse(REPO_ROOT / "package.xml").getroot().find("member_of_group")
    assert group is not None and group.text == "rosidl_interface_packages"


def test_generated_messages_import_with_the_documented_fields() -> None:
    from pose_ros.msg import Keypoint, PersonPose, PersonPoseArray

    # Keypoint ids: one source of truth (pose_ros.keypoints) and the message constants agree.
    for index, name in enumerate(keypoints.COCO_KEYPOINT_NAMES):
        assert getattr(Keypoint, name.upper()) == index
    assert keypoints.NUM_KEYPOINTS == Keypoint.NUM_KEYPOINTS == 17

    kp_fields = Keypoint.get_fields_and_field_types()
    assert kp_fields == {
        "x": "float",
        "y": "float",
        "score": "float",
        "position": "geometry_msgs/Point",
        "has_position": "boolean",
    }
    person_fields = PersonPose.get_fields_and_field_types()
    assert person_fields["keypoints"] == "pose_ros/Keypoint[17]"
    assert person_fields["id"] == "int32"
    for name in ("score", "x_min", "y_min", "width", "height", "box_score"):
        assert person_fields[name] == "float"
    person = PersonPose()
    assert len(person.keypoints) == 17
    array_fields = PersonPoseArray.get_fields_and_field_types()
    assert array_fields == {
        "header": "std_msgs/Header",
        "image_width": "uint32",
        "image_height": "uint32",
        "persons": "sequence<pose_ros/PersonPose>",
    }


@pytest.mark.ros
def test_person_pose_array_arrives_whole_in_another_process(tmp_path: Path) -> None:
    import rclpy
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from rclpy.serialization import serialize_message

    from pose_ros.msg import PersonPoseArray

    sys.path.insert(0, str(REPO_ROOT / "test" / "ros_nodes"))
    from publish_pose_array import make_pose_array

    publisher_script = REPO_ROOT / "test" / "ros_nodes" / "publish_pose_array.py"
    received: list[PersonPoseArray] = []
    log = tmp_path / "publisher.log"
    with running_process(python_args(publisher_script), log_path=log) as publisher:
        context = rclpy.Context()
        rclpy.init(context=context)
        try:
            node = rclpy.create_node("pose_array_listener", context=context)
            qos = QoSProfile(
                depth=1,
                reliability=QoSReliabilityPolicy.RELIABLE,
                durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
            )
            node.create_subscription(PersonPoseArray, "poses_roundtrip", received.append, qos)
            executor = rclpy.executors.SingleThreadedExecutor(context=context)
            executor.add_node(node)
            arrived = spin_until(node, executor, lambda: bool(received), timeout=30.0)
            assert publisher.poll() is None, log.read_text()
        finally:
            rclpy.shutdown(context=context)
    assert arrived, f"no PersonPoseArray arrived within 30 s; publisher log:\n{log.read_text()}"
    message = received[0]
    expected = make_pose_array()
    # Byte-for-byte equal to what was sent (float32 fields make a Python-side == too strict).
    assert serialize_message(message) == serialize_message(expected)
    assert len(message.persons) == 2
    assert message.persons[1].keypoints[16].x == pytest.approx(128.5)
    assert message.header.frame_id == "camera_optical_frame"


def test_colcon_build_from_a_clean_tree(tmp_path: Path) -> None:
    """A copy of the tracked files (no build/, install/) builds with colcon, without symlinks."""
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    source = tmp_path / "src" / "pose_ros"
    for name in filter(None, tracked):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    venv = REPO_ROOT / ".venv"
    result = subprocess.run(
        [
            str(venv / "bin" / "colcon"),
            "--log-base",
            str(tmp_path / "log"),
            "build",
            "--base-paths",
            str(tmp_path / "src"),
            "--build-base",
            str(tmp_path / "build"),
            "--install-base",
            str(tmp_path / "install"),
            "--cmake-args",
            f"-DPython3_EXECUTABLE={venv / 'bin' / 'python'}",
            "-DBUILD_TESTING=OFF",
        ],
        cwd=tmp_path,
        env=ros_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    prefix = tmp_path / "install" / "pose_ros"
    site = (
        prefix
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    for expected in (
        site / "pose_ros" / "msg" / "_person_pose_array.py",
        site / "pose_ros" / "keypoints.py",
        prefix / "share" / "pose_ros" / "package.xml",
        prefix / "share" / "pose_ros" / "msg" / "PersonPoseArray.msg",
    ):
        assert expected.is_file(), f"{expected.relative_to(tmp_path)} not installed"
    # Our __init__.py (not the generated empty one) is the installed package's.
    assert "extend_path" in (site / "pose_ros" / "__init__.py").read_text()
    # The installed package alone (no source tree on the path) imports the messages.
    env = ros_subprocess_env(PYTHONPATH=str(site))
    env["LD_LIBRARY_PATH"] = f"{prefix / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pose_ros, pose_ros.msg as m; print(pose_ros.__file__, m.PersonPoseArray())",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert str(site) in probe.stdout


def test_pip_install_gives_the_library_without_ros(tmp_path: Path) -> None:
    """setup.py installs the same Python package (and training) for use without ROS."""
    target = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (target / "pose_ros" / "keypoints.py").is_file()
    assert (target / "pose_ros" / "training").is_dir()
    assert not (target / "pose_ros" / "msg").exists()  # messages come only from the ROS build
    probe = subprocess.run(
        [sys.executable, "-c", "import pose_ros.keypoints as k; print(k.NUM_KEYPOINTS)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "17", probe.stderr


def test_ros_processes_started_here_keep_discovery_on_loopback() -> None:
    env_script = (REPO_ROOT / "scripts" / "ros-env").read_text()
    assert "export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in env_script
    assert "ROS_DOMAIN_ID" in env_script
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert ros_subprocess_env()["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    # The node keeps normal discovery for users: nothing in the package sets these variables.
    for path in _python_sources():
        text = path.read_text()
        assert "ROS_AUTOMATIC_DISCOVERY_RANGE" not in text, path
        assert "ROS_LOCALHOST_ONLY" not in text, path
    for make_target in ("test", "demo", "bench"):
        recipe = re.search(
            rf"^{make_target}:.*\n((?:\t.*\n)+)", (REPO_ROOT / "Makefile").read_text(), re.M
        )
        assert recipe, make_target
        assert "$(ROS_ENV)" in recipe.group(1) or "$(PY)" in recipe.group(1), make_target
