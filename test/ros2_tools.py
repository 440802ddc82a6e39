"""Tests that run the user's own ROS 2 tools (`ros2 launch`, `ros2 topic`, `ros2 param`, ...)
against the installed package, over real DDS on this run's loopback-only domain.

Where the tools come from: an apt ROS 2 install (its setup.bash sourced), or, without one, the
vendored Jazzy sources of ../shared/vendor/ros2-jazzy that `make setup` installs into .venv
(scripts/setup-venv.sh; scripts/ros-env puts them on the paths). Only where neither exists do these
tests skip, with one reason; where the vendor folder exists, missing tools are a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools.ros_harness import NodeProcess, child_env
from ros_support import REPO_ROOT

VENDOR = REPO_ROOT.parent / "shared" / "vendor" / "ros2-jazzy"


def _missing_tools() -> str | None:
    """Why the ros2 tools are not usable here, or None."""
    have_cli = shutil.which("ros2") is not None
    have_launch = all(importlib.util.find_spec(m) for m in ("launch_ros", "ros2launch"))
    if have_cli and have_launch:
        return None
    if VENDOR.is_dir() and not os.environ.get("ROS_DISTRO"):
        # `make setup` installs them from there: their absence is a broken setup, not a skip.
        return None
    return (
        "the ros2 CLI / launch tools are not installed: source a ROS 2 install (setup.bash), or "
        "keep ../shared/vendor/ros2-jazzy beside the repository so `make setup` installs them"
    )


SKIP_REASON = _missing_tools()
needs_ros2 = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def tools_env(log_dir: Path) -> dict[str, str]:
    """Environment of a ros2 tool: this run's (scripts/ros-env: loopback discovery, own domain),
    uncoloured and unbuffered output, and launch/node log files under ``log_dir``."""
    env = child_env()
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    env["ROS_LOG_DIR"] = str(log_dir)
    return env


def ros2(
    args: Sequence[str], log_dir: Path, *, timeout: float = 90.0
) -> subprocess.CompletedProcess:
    """`ros2 <args>` to its end; stdout and stderr together in ``.stdout``."""
    return subprocess.run(
        ["ros2", *args],
        env=tools_env(log_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


#: --no-daemon: this CLI process discovers the graph itself, for --spin-time seconds (default 0.5:
#: too short on a busy 2-core machine).
NO_DAEMON = ["--no-daemon", "--spin-time", "3"]
#: what the CLI says when its discovery has not seen the node yet
NOT_DISCOVERED = ("Node not found", "Unable to find node", "does not appear to be published yet")


def cli(args: list[str], log_dir: Path) -> subprocess.CompletedProcess:
    """`ros2 <args>`, again (up to 5 tries) while discovery has not yet seen the node."""
    for _ in range(5):
        result = ros2(args, log_dir)
        if not any(words in result.stdout for words in NOT_DISCOVERED):
            break
    return result


def launch_args(*arguments: str) -> list[str]:
    return ["ros2", "launch", "pose_ros", "pose.launch.py", *arguments]


@contextmanager
def launched(log_path: Path, *arguments: str) -> Iterator[NodeProcess]:
    """`ros2 launch pose_ros pose.launch.py <arguments>` in the background (output in
    ``log_path``); Ctrl-C (SIGINT) on exit unless a test already stopped it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            launch_args(*arguments),
            env=tools_env(log_path.parent),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    launch = NodeProcess(process, log_path)
    try:
        yield launch
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
