"""Test side of the node tests: the package's harness (devtools.ros_harness: the installed node in
a child process, a Peer in this one) with this run's loopback-only DDS environment, plus frame
builders the tests share."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from devtools import ros_harness as harness
from devtools.ros_harness import NodeProcess, Peer, make_header, reliable, with_stamp

__all__ = [
    "NodeProcess",
    "Peer",
    "make_header",
    "pack_yuv422",
    "pose_node",
    "reliable",
    "run_node_to_exit",
    "with_stamp",
]


def loopback_env() -> dict[str, str]:
    """This run's environment (scripts/ros-env, test/conftest.py), loopback discovery enforced."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


@contextmanager
def pose_node(
    log_path: Path, namespace: str, parameters: dict[str, Any], **options: Any
) -> Iterator[NodeProcess]:
    """The installed node (options: see harness.running_pose_node, e.g. ready_pattern)."""
    with harness.running_pose_node(
        log_path, namespace, parameters, env=loopback_env(), **options
    ) as node:
        yield node


def run_node_to_exit(namespace: str, parameters: dict[str, Any]) -> subprocess.CompletedProcess:
    return harness.run_node_to_exit(namespace, parameters, env=loopback_env())


def pack_yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """(H, W, 2) bytes of a packed 4:2:2 frame (video-range BT.601, chroma averaged over each
    pixel pair), in byte order "UYVY" (sensor_msgs "yuv422") or "YUYV" ("yuv422_yuy2")."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    height, width = y.shape
    out = np.empty((height, width // 2, 4))
    if order == "UYVY":
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = u2, y[:, 0::2], v2, y[:, 1::2]
    elif order == "YUYV":
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = y[:, 0::2], u2, y[:, 1::2], v2
    else:
        raise ValueError(order)
    return np.clip(np.round(out), 0, 255).astype(np.uint8).reshape(height, width, 2)
