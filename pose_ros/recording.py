"""Recordings in, poses out: rosbag2 folders (sqlite3 or MCAP storage), single ``.mcap`` / ``.db3``
files and ROS 1 ``.bag`` files, read with `rosbags <https://gitlab.com/ternaris/rosbags>`_ (no ROS
install needed to read), every frame processed (nothing dropped, unlike a replay into a live node).

Which topics belong to an image topic (a "camera"), unless given explicitly:

* the image topic's **namespace** is its parent after dropping image_transport's ``/compressed``:
  ``/cam/color/image_raw/compressed`` → ``/cam/color``. The outputs go under it
  (``/cam/color/poses``, ``/cam/color/poses/markers``, ``/cam/color/poses/image/compressed``), as
  ``pose_node`` publishes ``<camera>/poses`` beside ``<camera>/image``.
* **camera_info**: ``<namespace>/camera_info`` (the convention of every ROS camera driver).
* **registered depth** (for 3D positions): the first of :func:`depth_candidates` that the
  recording holds as ``sensor_msgs/Image``: pose_node's own ``<namespace>/depth``,
  ``<namespace>/depth/image_raw``, ``<namespace>/depth_registered/image_raw`` and
  ``.../image_rect``, then the siblings of the namespace that drivers use for depth aligned to
  colour: RealSense ``aligned_depth_to_color/image_raw``, openni2 ``depth_registered/image_rect`` /
  ``depth_registered/image_raw``, Azure Kinect ``depth_to_rgb/image_raw``. An unregistered depth
  stream (RealSense ``depth/image_rect_raw``) is never picked: it does not line up with the colour
  pixels.

Messages are read in log-time order (the order the recorder received them) and streamed: the
recording is never loaded whole.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

RAW_IMAGE: Final[str] = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE: Final[str] = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO: Final[str] = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES: Final[tuple[str, ...]] = (RAW_IMAGE, COMPRESSED_IMAGE)

#: Suffixes of the single files a recording may be (a rosbag2 recording is a folder).
RECORDING_FILE_SUFFIXES: Final[tuple[str, ...]] = (".mcap", ".db3", ".bag")


class RecordingError(ValueError):
    """A recording (or a choice of its topics) that cannot be processed; the message says why."""


class CorruptMessageError(ValueError):
    """A message whose bytes do not decode as its type."""


@dataclass(frozen=True)
class TopicSummary:
    """A topic of a recording: its name, message type and message count."""

    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class CameraTopics:
    """An image topic and the topics that go with it.

    Attributes:
        image: the image topic (``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage``).
        compressed: whether it carries CompressedImage.
        frames: its message count.
        camera_info: its camera_info topic, or None (markers on a plane, no 3D).
        depth: its registered depth topic, or None (no 3D positions).
        namespace: where its outputs go ("" is the root).
    """

    image: str
    compressed: bool
    frames: int
    camera_info: str | None
    depth: str | None
    namespace: str

    def output_topic(self, relative: str) -> str:
        """An output topic of this camera: ``<namespace>/<relative>``."""
        return f"{self.namespace}/{relative}"

    @property
    def name(self) -> str:
        """The camera's name in logs and in the stream core: its image topic."""
        return self.image


def image_base(topic: str) -> str:
    """The raw image topic an image_transport topic belongs to: ``.../image_raw/compressed`` →
    ``.../image_raw``; other topics unchanged."""
    return topic[: -len("/compressed")] if topic.endswith("/compressed") else topic


def image_namespace(topic: str) -> str:
    """The namespace of an image topic (see the module's conventions); "" at the root."""
    parent = posixpath.dirname(image_base(topic))
    return "" if parent in ("", "/") else parent


def camera_info_candidates(topic: str) -> list[str]:
    """Where the camera_info of an image topic is looked for."""
    return [f"{image_namespace(topic)}/camera_info"]


def depth_candidates(topic: str) -> list[str]:
    """Where the registered depth of an image topic is looked for, in order of preference."""
    namespace = image_namespace(topic)
    parent = posixpath.dirname(namespace)
    parent = "" if parent in ("", "/") else parent
    own = [
        f"{namespace}/depth",
        f"{namespace}/depth/image_raw",
        f"{namespace}/depth_registered/image_raw",
        f"{namespace}/depth_registered/image_rect",
    ]
    siblings = [
        f"{parent}/aligned_depth_to_color/image_raw",
        f"{parent}/depth_registered/image_rect",
        f"{parent}/depth_registered/image_raw",
        f"{parent}/depth_to_rgb/image_raw",
    ]
    # A namespace at the root has no parent of its own: the siblings would repeat the own names.
    return own + ([] if not namespace else [name for name in siblings if name not in own])


def parse_topic_mapping(
    values: Sequence[str], option: str, images: Sequence[str]
) -> dict[str, str]:
    """``IMAGE=TOPIC`` items of an option (or a bare ``TOPIC`` with exactly one image topic) as
    image topic → topic.

    Raises:
        RecordingError: a bare topic with several image topics, or an image topic not chosen.
    """
    mapping: dict[str, str] = {}
    for value in values:
        image, separator, topic = value.partition("=")
        if not separator:
            if len(images) != 1:
                raise RecordingError(
                    f"{option} {value}: with several image topics say which one it belongs to, "
                    f"as {option} IMAGE_TOPIC=TOPIC"
                )
            image, topic = images[0], value
        if image not in images:
            raise RecordingError(
                f"{option} {value}: {image} is not one of the chosen image topics "
                f"({', '.join(images)})"
            )
        mapping[image] = topic
    return mapping


class Recording:
    """An open recording (a context manager). Opening checks that it exists and can be read.

    Raises:
        RecordingError: no such file or folder, or a storage that cannot be read (the reason).
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.highlevel import AnyReader

        self.path = Path(path)
        if not self.path.exists():
            raise RecordingError(f"{self.path}: no such recording (file or folder)")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise RecordingError(
                f"{self.path}: a folder without metadata.yaml is not a rosbag2 recording"
            )
        if self.path.is_file() and self.path.suffix not in RECORDING_FILE_SUFFIXES:
            raise RecordingError(
                f"{self.path}: not a recording (a rosbag2 folder, or a "
                f"{', '.join(RECORDING_FILE_SUFFIXES)} file)"
            )
        try:
            self._reader = AnyReader([self.path])
            self._reader.open()
        except Exception as error:  # every storage library has its own errors: all refusals
            raise RecordingError(
                f"{self.path}: cannot read the recording: {_reason(error)}"
            ) from None
        #: whether it is a ROS 2 recording (CDR messages); ROS 1 bags are read too
        self.is_ros2: bool = bool(self._reader.is2)
        self.topics: dict[str, TopicSummary] = {
            name: TopicSummary(name, info.msgtype or "(several types)", int(info.msgcount))
            for name, info in self._reader.topics.items()
        }

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader.stack is not None:
            self._reader.close()

    @property
    def start_ns(self) -> int:
        """Log time of the recording's first message (ns)."""
        return int(self._reader.start_time)

    @property
    def typestore(self) -> Any:
        """The rosbags typestore of the recording's own message definitions."""
        return self._reader.typestore

    def image_topics(self) -> list[TopicSummary]:
        """The image topics (Image or CompressedImage), by name."""
        return [t for name, t in sorted(self.topics.items()) if t.msgtype in IMAGE_TYPES]

    def describe_image_topics(self) -> str:
        """The image topics with their types and message counts, one per line."""
        images = self.image_topics()
        if not images:
            return f"{self.path} holds no image topics (sensor_msgs/Image or CompressedImage)"
        width = max(len(t.name) for t in images)
        lines = [f"image topics in {self.path}:"]
        lines += [
            f"  {t.name:<{width}}  {t.msgtype.rpartition('/')[2]:<15}  {t.count} message(s)"
            for t in images
        ]
        return "\n".join(lines)

    def select_cameras(
        self,
        image_topics: Sequence[str],
        *,
        camera_info: dict[str, str] | None = None,
        depth: dict[str, str] | None = None,
        use_depth: bool = True,
    ) -> list[CameraTopics]:
        """The cameras of the chosen image topics, their camera_info and depth found by the
        conventions (see the module) unless given in ``camera_info`` / ``depth`` (image topic →
        topic).

        Raises:
            RecordingError: a topic that is not in the recording, or not of the right type (an
                image topic that is not an image, a depth topic that is not an Image...).
        """
        camera_info = camera_info or {}
        depth = depth or {}
        if len(set(image_topics)) != len(image_topics):
            raise RecordingError("an image topic is named more than once")
        cameras = []
        for topic in image_topics:
            summary = self._topic(topic, "image topic", IMAGE_TYPES)
            info = camera_info.get(topic)
            if info is not None:
                self._topic(info, f"camera_info topic of {topic}", (CAMERA_INFO,))
            else:
                info = self._first(camera_info_candidates(topic), CAMERA_INFO)
            depth_topic = depth.get(topic)
            if depth_topic is not None:
                self._topic(depth_topic, f"depth topic of {topic}", (RAW_IMAGE,))
            elif use_depth:
                depth_topic = self._first(depth_candidates(topic), RAW_IMAGE)
            if not use_depth:
                depth_topic = None
            cameras.append(
                CameraTopics(
                    image=topic,
                    compressed=summary.msgtype == COMPRESSED_IMAGE,
                    frames=summary.count,
                    camera_info=info,
                    depth=depth_topic,
                    namespace=image_namespace(topic),
                )
            )
        return _distinct_namespaces(cameras)

    def _topic(self, name: str, what: str, types: tuple[str, ...]) -> TopicSummary:
        summary = self.topics.get(name)
        if summary is None:
            raise RecordingError(
                f"{what} {name} is not in {self.path}\n{self.describe_image_topics()}"
            )
        if summary.msgtype not in types:
            raise RecordingError(
                f"{what} {name} carries {summary.msgtype}, not {' or '.join(types)}"
            )
        return summary

    def _first(self, candidates: Sequence[str], msgtype: str) -> str | None:
        for name in candidates:
            summary = self.topics.get(name)
            if summary is not None and summary.msgtype == msgtype:
                return name
        return None

    def connections(self, topics: Sequence[str]) -> list[Any]:
        """The rosbags connections of ``topics``."""
        wanted = set(topics)
        return [c for c in self._reader.connections if c.topic in wanted]

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log time in ns, serialised bytes) of ``topics``, in log-time order.

        Raises:
            RecordingError: the storage fails part-way (a truncated file): the reason.
        """
        connections = self.connections(topics)
        if not connections:
            return
        try:
            yield from self._reader.messages(connections=connections)
        except Exception as error:
            raise RecordingError(
                f"{self.path}: reading stopped part-way: {_reason(error)}"
            ) from None

    def decode(self, connection: Any, raw: bytes) -> Any:
        """The message of ``raw`` (rosbags' message object: the fields of the ROS message).

        Raises:
            CorruptMessageError: the bytes do not decode as the connection's type.
        """
        try:
            # A writable copy: the arrays of the message (an image's pixels) are views on it, and
            # the pipeline hands pixels to PyTorch, which warns about read-only memory.
            return self._reader.deserialize(bytearray(raw), connection.msgtype)
        except Exception as error:  # rosbags raises several kinds for bytes that do not fit
            raise CorruptMessageError(
                f"{len(raw)} bytes do not decode as {connection.msgtype}: {_reason(error)}"
            ) from None


def _distinct_namespaces(cameras: list[CameraTopics]) -> list[CameraTopics]:
    """Cameras sharing a namespace (``/cam/image_raw`` and ``/cam/image_rect``) would write the
    same output topics: those get their image topic's base as namespace instead."""
    namespaces = [camera.namespace for camera in cameras]
    result = []
    for camera in cameras:
        if namespaces.count(camera.namespace) > 1:
            camera = CameraTopics(
                camera.image,
                camera.compressed,
                camera.frames,
                camera.camera_info,
                camera.depth,
                image_base(camera.image),
            )
        result.append(camera)
    return result


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def stamp_ns(header: Any) -> int:
    """A header's stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
