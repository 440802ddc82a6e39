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
    "diagnostic_msgs": "diagnostic_msgs",
    "lifecycle_msgs": "lifecycle_msgs",
    "std_srvs": "std_srvs",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "PIL": "python3-pil",
    "yaml": "python3-yaml",
    "scipy": "python3-scipy",
    "tqdm": "python3-tqdm",
}
# Required, but from pip for ROS users (requirements-ros.txt), never from rosdep: the distribution
# packages (python3-torch, python3-torchvision) are CPU-only and older than the code needs, and
# ONNX Runtime has none (the names below are what package.xml must not name).
PIP_REQUIRED = {
    "torch": "python3-torch",
    "torchvision": "python3-torchvision",
    "onnxruntime": "python3-onnxruntime",
    "onnx": "python3-onnx",
}
# Extras installed with pip (README): allowed only as lazy imports, inside the function that needs
# them, so the node starts without them.
PIP_EXTRAS = {
    "pycocotools",
    "tensorrt",
    "safetensors",
    "tensorboard",
    "tritonclient",
    # recordings (pose-ros-infer --bag): in requirements-ros.txt, but the node never needs them
    "rosbags",
    "mcap",
}


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
            if module in PIP_REQUIRED:
                continue
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


def test_pytorch_and_onnx_runtime_come_from_pip_with_one_minimum_version() -> None:
    """rosdep must not install python3-torch; requirements-ros.txt, setup.py and the start-up
    check (pose_ros/_requirements.py) name the same minimum versions of PyTorch, torchvision,
    ONNX Runtime and onnx."""
    from pose_ros import _requirements

    deps = _package_xml_deps()
    declared = set().union(*deps.values())
    for key in PIP_REQUIRED.values():
        assert key not in declared, f"package.xml must not name {key} (pip: requirements-ros.txt)"
    pins = re.findall(
        r"^([A-Za-z0-9_-]+)>=([\d.]+)$",
        (REPO_ROOT / _requirements.REQUIREMENTS_FILE).read_text(),
        re.M,
    )
    assert {name: pin for name, pin in pins if name in PIP_REQUIRED} == (
        _requirements.MINIMUM_VERSIONS
    )
    assert set(PIP_REQUIRED) == set(_requirements.MINIMUM_VERSIONS)
    assert {"onnxruntime", "onnx"} <= set(_requirements.MINIMUM_VERSIONS)
    setup_py = (REPO_ROOT / "setup.py").read_text()
    install_requires = re.search(r"install_requires=\[(.*?)\]", setup_py, re.S)
    assert install_requires, "setup.py has no install_requires"
    for name, minimum in _requirements.MINIMUM_VERSIONS.items():
        assert f'"{name}>={minimum}"' in install_requires.group(1), name
    # The library block of requirements.txt (what an apt ROS install follows) holds them too.
    library = (REPO_ROOT / "requirements.txt").read_text().split("# --- ROS 2")[0]
    for name in _requirements.MINIMUM_VERSIONS:
        assert re.search(rf"^{name}(==|>=)", library, re.M), f"requirements.txt library: {name}"
    # This environment meets them (the node and the tests run on it) ...
    assert _requirements.version_problems(_requirements.installed_versions()) == []
    _requirements.check_requirements()
    # ... and an older or missing PyTorch is refused with what to do.
    problems = _requirements.version_problems(
        {"torch": "2.4.1+cu121", "torchvision": None, "onnxruntime": "1.20.0", "onnx": "1.17.0"}
    )
    assert problems == [
        "torch 2.4.1+cu121 is too old (needs >= 2.5)",
        "torchvision is not installed (needs >= 0.20)",
    ]
    message = _requirements.requirement_message(problems)
    assert "pip install -r requirements-ros.txt" in message
    installed = {"torch": "2.5.0", "torchvision": "0.20.1", "onnxruntime": "1.17.0", "onnx": "1.16"}
    assert _requirements.version_problems(installed) == []
    installed = {"torch": "2.10.0", "torchvision": "0.25", "onnxruntime": "1.22", "onnx": "1.18"}
    assert _requirements.version_problems(installed) == []


def test_a_missing_onnx_runtime_stops_the_start_with_the_pip_command() -> None:
    """The start-up check, run on this machine's real installed distributions, with ONNX Runtime
    looked up under a distribution name that is not installed: the message names what is
    missing and the pip command, as for PyTorch."""
    from pose_ros import _requirements

    distributions = dict(_requirements.DISTRIBUTIONS)
    distributions["onnxruntime"] = ("onnxruntime-not-installed-here",)
    with pytest.raises(ImportError) as error:
        _requirements.check_requirements(distributions)
    message = str(error.value)
    assert message.startswith("onnxruntime is not installed (needs >= 1.17). "), message
    assert "pip install -r requirements-ros.txt" in message
    assert "torch" not in message.split(".")[0]  # only what is missing is named
    # ONNX Runtime's GPU build is another distribution of the same module: it counts.
    assert "onnxruntime-gpu" in _requirements.DISTRIBUTIONS["onnxruntime"]
    # An old onnx is named with its version.
    problems = _requirements.version_problems(
        {**_requirements.installed_versions(), "onnx": "1.12.0"}
    )
    assert problems == ["onnx 1.12.0 is too old (needs >= 1.16)"]


def test_package_xml_declares_every_cmake_dependency() -> None:
    deps = _package_xml_deps()
    build = (
        deps.get("buildtool_depend", set())
        | deps.get("build_depend", set())
        | deps.get("depend", set())
    )
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    # Packages found only for tests (inside `if(BUILD_TESTING)`) are test dependencies.
    testing = re.search(r"^if\(BUILD_TESTING\)\n(.*?)^endif\(\)", cmake, re.M | re.S)
    assert testing, "CMakeLists.txt registers no tests for colcon test"
    for name in re.findall(r"find_package\((\w+)", testing.group(1)):
        assert name in deps.get("test_depend", set()), f"{name} must be a <test_depend>"
    cmake = cmake.replace(testing.group(0), "")
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
    from rclpy.serialization import deserialize_message, serialize_message

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
    # Every field equal to what was sent: the expected message goes through the same CDR round
    # trip first, so its float32 fields hold float32 values. (Bytes are not compared: CDR's
    # alignment padding carries whatever was in the buffer.)
    expected = deserialize_message(serialize_message(expected), PersonPoseArray)
    assert message == expected, (message, expected)
    assert len(message.persons) == 2
    assert message.persons[1].keypoints[16].x == pytest.approx(128.5)
    assert message.header.frame_id == "camera_optical_frame"


#: What `colcon test` runs in the workspace test below: a few tests that depend on the workspace's
#: own install (messages, installed files, DDS between processes); `make test` runs them all.
COLCON_TEST_SUBSET = (
    "test_generated_messages_import_with_the_documented_fields or "
    "test_person_pose_array_arrives_whole_in_another_process or "
    "test_launch_file_and_configs_are_installed"
)


def _without_repo_install(env: dict[str, str]) -> dict[str, str]:
    """``env`` without this checkout's own install/ on the search paths: a workspace test must
    find the workspace's copy, as on a user's machine."""
    own = str(REPO_ROOT / "install")
    for name in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH", "LD_LIBRARY_PATH"):
        kept = [p for p in env.get(name, "").split(os.pathsep) if p and not p.startswith(own)]
        env[name] = os.pathsep.join(kept)
    return env


@pytest.mark.slow
def test_colcon_build_and_test_in_a_workspace(tmp_path: Path) -> None:
    """A copy of the tracked files (no build/, install/) in a workspace's src/ builds with colcon,
    without symlinks and with BUILD_TESTING on (colcon's default), and `colcon test` runs the
    package's pytest suite through ament_cmake_pytest against that workspace's install (a subset,
    chosen with PYTEST_ADDOPTS)."""
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
    # The colcon and Python of this environment: the .venv of `make`, or an apt ROS install.
    colcon = shutil.which("colcon")
    assert colcon, "colcon not found on PATH"
    result = subprocess.run(
        [
            colcon,
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
            f"-DPython3_EXECUTABLE={sys.executable}",
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

    test_env = _without_repo_install(
        ros_subprocess_env(PYTEST_ADDOPTS=f"-p no:cacheprovider -k '{COLCON_TEST_SUBSET}'")
    )
    tested = subprocess.run(
        [
            *(colcon, "--log-base", str(tmp_path / "log"), "test"),
            *("--base-paths", str(tmp_path / "src"), "--build-base", str(tmp_path / "build")),
            *("--install-base", str(tmp_path / "install"), "--event-handlers", "console_direct+"),
        ],
        cwd=tmp_path,
        env=test_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-4000:]
    results = subprocess.run(
        [colcon, "test-result", "--test-result-base", str(tmp_path / "build"), "--all"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # colcon test itself ends 0 when tests fail: test-result says how they went.
    assert results.returncode == 0, results.stdout + tested.stdout[-4000:]
    assert (
        "pose_ros/pytest.xunit.xml: 3 tests, 0 errors, 0 failures, 0 skipped" in results.stdout
    ), results.stdout + tested.stdout[-4000:]
    # The tests ran against the workspace's install, not this checkout's.
    assert str(REPO_ROOT / "install") not in tested.stdout


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


# --- Python 3.10 and ROS 2 Humble (users' machines; this one runs 3.11 and Jazzy) ---

#: Standard-library names newer than Python 3.10 (module, attribute): ruff's py310 target does not
#: flag them, and they fail only at run time on Humble's Python.
NEWER_THAN_PY310 = {
    ("tomllib", None),
    ("datetime", "UTC"),
    ("typing", "Self"),
    ("typing", "Never"),
    ("typing", "LiteralString"),
    ("typing", "assert_never"),
    ("typing", "assert_type"),
    ("typing", "reveal_type"),
    ("typing", "Required"),
    ("typing", "NotRequired"),
    ("typing", "override"),
    ("enum", "StrEnum"),
    ("asyncio", "TaskGroup"),
    ("asyncio", "timeout"),
    ("hashlib", "file_digest"),
    ("contextlib", "chdir"),
    ("itertools", "batched"),
}


def _python310() -> str | None:
    """A working Python 3.10 interpreter (pyenv's shims exist even where they cannot run)."""
    candidates = sorted(Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"), reverse=True)
    candidates += [Path(p) for p in (shutil.which("python3.10"),) if p]
    for candidate in candidates:
        probe = subprocess.run([str(candidate), "--version"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.startswith("Python 3.10"):
            return str(candidate)
    return None


def _all_python_sources() -> list[Path]:
    return _python_sources() + sorted((REPO_ROOT / "training").rglob("*.py"))


def test_code_uses_nothing_newer_than_python_310() -> None:
    problems = []
    for path in _all_python_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            used: list[tuple[str, str | None]] = []
            if isinstance(node, ast.Import):
                used = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                used = [(node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                used = [(node.value.id, node.attr)]
            elif isinstance(node, ast.Name) and node.id in ("ExceptionGroup", "BaseExceptionGroup"):
                used = [("builtins", node.id)]
            elif isinstance(node, ast.TryStar):
                used = [("syntax", "except*")]
            for module, name in used:
                if (module, name) in NEWER_THAN_PY310 or module in ("builtins", "syntax"):
                    problems.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {module}.{name}")
    assert not problems, "newer than Python 3.10:\n" + "\n".join(problems)


def test_code_compiles_on_python_310(tmp_path: Path) -> None:
    """Syntax newer than 3.10 (e.g. 3.12 f-strings) fails here, not on a Humble user's robot."""
    python = _python310()
    if python is None:
        pytest.skip("no python3.10 interpreter on this machine (Humble's Python)")
    sources = [str(p) for p in _all_python_sources()]
    result = subprocess.run(
        [
            python,
            "-c",
            "import py_compile, sys\nfor f in sys.argv[1:]: py_compile.compile("
            "f, cfile=sys.argv[0] + '.pyc', doraise=True)",
            *sources,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_humble_fallbacks_of_the_node_import() -> None:
    """The rclpy fallbacks of the node's subscriptions for Humble, run for real:
    `rclpy.event_handler` (Iron+) made unimportable, so `rclpy.qos_event` (Humble's name, still a
    shim in Jazzy) is used; and `qos_policy_name_from_kind` removed, so the node's own fallback
    is."""
    probe = """
import importlib, sys, warnings
import pose_ros.ros.node  # everything it needs, loaded the normal way first
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Jazzy's shim warns that qos_event is deprecated
    import rclpy.qos_event
import rclpy.qos
sys.modules["rclpy.event_handler"] = None  # `from rclpy.event_handler import` fails, as on Humble
del rclpy.qos.qos_policy_name_from_kind
del sys.modules["pose_ros.ros.inputs"]
node = importlib.import_module("pose_ros.ros.inputs")  # the module body again, with the fallbacks
assert node.SubscriptionEventCallbacks.__name__ == "SubscriptionEventCallbacks"
assert node.qos_policy_name_from_kind(1) == "1"
print("humble fallbacks ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=ros_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "humble fallbacks ok" in result.stdout


def test_setup_is_done_once_and_installs_the_ros2_tools() -> None:
    """`make setup` (run by `make test` before this) left a venv and, without a system ROS, the
    vendored ros2 tools; running it again does nothing and says nothing."""
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "setup-venv.sh")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr
    vendor = REPO_ROOT.parent / "shared" / "vendor" / "ros2-jazzy"
    if vendor.is_dir() and not os.environ.get("ROS_DISTRO"):
        assert (REPO_ROOT / ".venv" / "ros2-tools" / ".ros2-jazzy-tools.stamp").is_file()
        # scripts/ros-env (this test's environment) makes them usable
        probe = subprocess.run(
            [sys.executable, "-c", "import launch_ros, composition_interfaces.srv"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert shutil.which("ros2"), "ros2 not on PATH"
