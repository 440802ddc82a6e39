"""Recordings written by the tests with rosbags' writer (no ROS involved): cameras that show the
demo scene's drawn figure (so the full-image detector has a person to find), in raw, compressed and
RGB-D form, with their camera_info."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from pose_ros.demo_scene import figure_keypoints, render_depth, render_figure

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
T = TYPESTORE.types
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
#: Stamps of the recordings start here (a plausible wall-clock time) and advance at 10 Hz.
START_NS = 1_700_000_000 * 1_000_000_000
PERIOD_NS = 100_000_000


@dataclass
class CameraSpec:
    """One camera of a test recording.

    Attributes:
        name: its namespace (``/name/...`` topics).
        kind: "raw" (rgb8 Image), "compressed" (JPEG) or "rgbd" (bgr8 Image + 16UC1 aligned
            depth + camera_info, RealSense topic names).
        repeated: frame indices whose stamp repeats the previous frame's.
        corrupt: frame indices whose data is damaged.
        offset_ns: added to this camera's stamps and log times.
    """

    name: str
    kind: str
    repeated: set[int] = field(default_factory=set)
    corrupt: set[int] = field(default_factory=set)
    offset_ns: int = 0

    @property
    def image_topic(self) -> str:
        if self.kind == "compressed":
            return f"/{self.name}/image_raw/compressed"
        if self.kind == "rgbd":
            return f"/{self.name}/color/image_raw"
        return f"/{self.name}/image_raw"

    @property
    def camera_info_topic(self) -> str:
        return f"/{self.name}/color/camera_info"

    @property
    def depth_topic(self) -> str:
        return f"/{self.name}/aligned_depth_to_color/image_raw"

    @property
    def frame_id(self) -> str:
        return f"{self.name}_optical_frame"


def header(stamp_ns: int, frame_id: str):
    stamp = T["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
    )
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image_msg(pixels: np.ndarray, encoding: str, head, *, step: int | None = None):
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    row = data.shape[1]
    step = row if step is None else step
    if step > row:
        data = np.hstack([data, np.zeros((height, step - row), np.uint8)])
    elif step < row:
        data = data[:, :step]
    return T[IMAGE](
        header=head,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=np.ascontiguousarray(data).reshape(-1),
    )


def compressed_msg(data: bytes, head):
    return T[COMPRESSED](
        header=head, format="rgb8; jpeg compressed bgr8", data=np.frombuffer(data, np.uint8)
    )


def camera_info_msg(width: int, height: int, head):
    focal = 0.8 * width
    k = np.array([focal, 0, (width - 1) / 2, 0, focal, (height - 1) / 2, 0, 0, 1], np.float64)
    p = np.array([focal, 0, (width - 1) / 2, 0, 0, focal, (height - 1) / 2, 0, 0, 0, 1, 0], float)
    roi = T["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return T[CAMERA_INFO](
        header=head,
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k,
        r=np.eye(3).reshape(-1),
        p=p,
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def camera_frames(count: int, width: int, height: int, phase: float = 0.0):
    """(RGB frame, keypoints) of the demo figure, 10 frames per second."""
    for index in range(count):
        keypoints = figure_keypoints(phase + index / 10.0, width, height)
        yield render_figure(keypoints, width, height), keypoints


def stamps(spec: CameraSpec, count: int) -> list[int]:
    values = []
    for index in range(count):
        if index in spec.repeated and values:
            values.append(values[-1])
        else:
            values.append(START_NS + spec.offset_ns + index * PERIOD_NS)
    return values


def write_recording(
    path: Path,
    cameras: list[CameraSpec],
    frames: int,
    *,
    width: int = 160,
    height: int = 120,
    storage: str = "mcap",
    extra: Callable[[Writer], None] | None = None,
) -> dict[str, list[tuple[int, str]]]:
    """A rosbag2 recording of ``cameras``; returns each image topic's (stamp ns, frame_id) per
    message, in order."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    written: dict[str, list[tuple[int, str]]] = {}
    messages: list[tuple[int, str, object, str]] = []
    for number, spec in enumerate(cameras):
        written[spec.image_topic] = []
        for index, ((rgb, keypoints), stamp) in enumerate(
            zip(
                camera_frames(frames, width, height, 0.7 * number),
                stamps(spec, frames),
                strict=True,
            )
        ):
            log = START_NS + spec.offset_ns + index * PERIOD_NS + 5_000_000
            head = header(stamp, spec.frame_id)
            written[spec.image_topic].append((stamp, spec.frame_id))
            if spec.kind == "compressed":
                data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
                if index in spec.corrupt:
                    # The header (size) is intact, the entropy-coded data is garbage.
                    data = data[:200] + bytes(len(data) - 200)
                msg, msgtype = compressed_msg(data, head), COMPRESSED
            elif spec.kind == "rgbd":
                msg, msgtype = image_msg(rgb[:, :, ::-1], "bgr8", head), IMAGE
                info = camera_info_msg(width, height, head)
                messages.append((log - 1_000_000, spec.camera_info_topic, info, CAMERA_INFO))
                millimetres = np.round(render_depth(keypoints, width, height) * 1000)
                depth = image_msg(millimetres.astype("<u2"), "16UC1", head)
                messages.append((log + 2_000_000, spec.depth_topic, depth, IMAGE))
            else:
                step = width * 3 - 1 if index in spec.corrupt else None
                msg, msgtype = image_msg(rgb, "rgb8", head, step=step), IMAGE
            messages.append((log, spec.image_topic, msg, msgtype))
    messages.sort(key=lambda item: item[0])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for _, topic, _, msgtype in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
        for log, topic, msg, msgtype in messages:
            writer.write(connections[topic], log, TYPESTORE.serialize_cdr(msg, msgtype))
        if extra is not None:
            extra(writer)
    return written
