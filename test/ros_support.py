"""Helpers for tests that talk to ROS processes over real DDS (loopback only)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def ros_subprocess_env(**extra: str) -> dict[str, str]:
    """Environment of a child ROS process: this run's loopback-only DDS settings, unbuffered."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", os.environ["ROS_DOMAIN_ID"])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextmanager
def running_process(
    args: list[str], *, env: dict[str, str] | None = None, log_path: Path | None = None
) -> Iterator[subprocess.Popen]:
    """Start a child process (stdout+stderr to ``log_path`` or a pipe); stop it on exit with SIGINT,
    as Ctrl-C would, and kill it if it does not end within 10 s."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        args, env=env or ros_subprocess_env(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log_path:
            out.close()


def python_args(script: str | Path, *args: str) -> list[str]:
    return [sys.executable, str(script), *args]


def spin_until(node, executor, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin ``executor`` until ``condition()`` is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if condition():
            return True
    return condition()
