"""Run the installed ``pose_node`` in a child process and talk to it over DDS from this one.

The demo, the node benchmark and the tests use this: the node runs exactly as ``ros2 launch``
starts it (the executable of the colcon install, the installed config/pose.yaml, parameters as
``-p`` overrides), in the environment of the caller. DDS settings (discovery range, domain id)
are the caller's business: this module sets none.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from std_msgs.msg import Header

PACKAGE = "pose_ros"
EXECUTABLE = "pose_node"
#: What the node logs once it listens: start-up is over.
READY_PATTERN = "listening on"
#: What a managed node (managed:=true) logs once it waits for lifecycle transitions.
MANAGED_READY_PATTERN = "waiting for lifecycle transitions"


def install_prefix() -> Path:
    """The install prefix of pose_ros: the first entry of AMENT_PREFIX_PATH holding the package
    (what `ros2 run` searches)."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / "lib" / PACKAGE / EXECUTABLE).is_file():
            return Path(prefix)
    raise FileNotFoundError(
        f"{EXECUTABLE} is not installed on AMENT_PREFIX_PATH: build the package (`make build`) and "
        "run through scripts/ros-env (or source install/setup.bash)"
    )


def node_executable() -> Path:
    return install_prefix() / "lib" / PACKAGE / EXECUTABLE


def installed_params_file() -> Path:
    return install_prefix() / "share" / PACKAGE / "config" / "pose.yaml"


#: Fast DDS profile for large raw images (config/fastdds_large_images.xml, README "Several
#: cameras"): its UDP transport binds every interface, as a user's node should.
LARGE_IMAGES_DDS_PROFILE = "fastdds_large_images.xml"


def loopback_large_images_profile(directory: Path) -> Path:
    """The installed large-image Fast DDS profile, with its UDP transport restricted to loopback
    (the benchmarks' processes must not leave the machine), written into ``directory``. Set it as
    ``FASTRTPS_DEFAULT_PROFILES_FILE`` for every process of a run."""
    source = install_prefix() / "share" / PACKAGE / "config" / LARGE_IMAGES_DDS_PROFILE
    text = source.read_text()
    marker = "<!-- interfaces -->"
    if marker not in text:
        raise ValueError(f"{source}: no {marker!r} line to restrict the UDP transport at")
    loopback = "<interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>"
    path = Path(directory) / LARGE_IMAGES_DDS_PROFILE
    path.write_text(text.replace(marker, loopback))
    return path


def node_command(
    namespace: str, parameters: Mapping[str, Any], *, params_file: Path | None = None
) -> list[str]:
    """The node's command line: in ``namespace``, the installed params file (or ``params_file``),
    then ``parameters`` as ``-p name:=value`` overrides."""
    args = [str(node_executable()), "--ros-args", "-r", f"__ns:={namespace}"]
    args += ["--params-file", str(params_file or installed_params_file())]
    for name, value in parameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{name}:={text}"]
    return args


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment, with log lines written through at once (they are read while the
    node runs)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


class NodeProcess:
    """A running pose_node: its process, its log file, its memory."""

    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self, start: int = 0) -> str:
        return self.log_path.read_bytes()[start:].decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def wait_for_log(
        self,
        pattern: str,
        *,
        start: int = 0,
        timeout: float = 30.0,
        while_waiting: Callable[[], object] | None = None,
    ) -> re.Match[str]:
        """The first match of the regular expression ``pattern`` in the log after byte ``start``;
        ``while_waiting`` runs between polls (to keep publishing, spinning)."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log(start))
            if match:
                return match
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{EXECUTABLE} exited ({self.process.returncode}) before logging "
                    f"{pattern!r}:\n{self.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no {pattern!r} in the {EXECUTABLE} log after {timeout} s:\n"
                    f"{self.log()[-4000:]}"
                )
            if while_waiting is not None:
                while_waiting()
            else:
                time.sleep(0.05)

    def rss_mb(self) -> float:
        """Resident memory of the node process, from /proc (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError("no VmRSS in /proc/<pid>/status")

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C (SIGINT), as a terminal or launch sends it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)


@contextmanager
def running_pose_node(
    log_path: Path,
    namespace: str,
    parameters: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 120.0,
    ready_pattern: str = READY_PATTERN,
) -> Iterator[NodeProcess]:
    """Start the installed node, wait until its log matches ``ready_pattern`` (by default: it
    listens), and stop it with SIGINT on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            node_command(namespace, parameters),
            env=child_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    node = NodeProcess(process, log_path)
    try:
        node.wait_for_log(ready_pattern, timeout=startup_timeout)
        yield node
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_node_to_exit(
    namespace: str,
    parameters: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess:
    """Start the node and wait for it to end by itself (start-up errors); output in ``stdout``."""
    return subprocess.run(
        node_command(namespace, parameters),
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


class Peer:
    """This process's side of DDS: its own rclpy context, one node, one executor."""

    def __init__(self, name: str = "pose_peer") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def collect(self, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> tuple[list, Any]:
        """Subscribe; returns (the list messages are appended to, the subscription)."""
        received: list = []
        subscription = self.node.create_subscription(msg_type, topic, received.append, qos)
        return received, subscription

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(0.02, left))

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
            if condition():
                return True
        return condition()

    def publish_until(
        self,
        publish: Callable[[], None],
        condition: Callable[[], bool],
        *,
        timeout: float = 30.0,
        period: float = 0.5,
    ) -> bool:
        """Publish, spin, and publish again every ``period`` s until ``condition()`` holds: the
        first messages to a fresh subscription can go out before discovery has matched it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            publish()
            if self.spin_until(condition, min(period, max(deadline - time.monotonic(), 0))):
                return True
        return condition()


def reliable(depth: int = 10) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE)


def make_header(stamp_sec: int, frame_id: str, nanosec: int = 500) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec = stamp_sec
    header.stamp.nanosec = nanosec
    return header


def with_stamp(messages: Sequence[Any], stamp_sec: int) -> list[Any]:
    """The messages whose header stamp has ``stamp_sec`` seconds (answers to one frame)."""
    return [m for m in messages if m.header.stamp.sec == stamp_sec]
