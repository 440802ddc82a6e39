"""The outputs of a processed recording as a new recording: one ``.mcap`` file (written with the
``mcap`` library) or a rosbag2 folder (``rosbags``' writer, MCAP or sqlite3 storage).

Per camera, under its namespace (:class:`pose_ros.recording.CameraTopics`): ``poses``
(pose_ros/PersonPoseArray), ``poses/markers`` (visualization_msgs/MarkerArray) and, when asked for,
``poses/image/compressed`` (sensor_msgs/CompressedImage, JPEG, the annotated image). Messages are
built by the node's own code (:mod:`pose_ros.ros.messages`, :mod:`pose_ros.ros.markers`) and
serialised by rclpy, so they are byte for byte what the node publishes. Each carries its source
image's header and is logged at its source image's log time, so a replay
(``ros2 bag play``) publishes them beside the images they belong to.

Every channel embeds its message definition (ros2msg text, with every type it uses), read from the
installed packages' ``.msg`` files: the definitions are exactly those the bytes were serialised
with, so any MCAP or rosbag2 reader decodes them without the pose_ros package.

The file (or folder) is written under a temporary name beside its destination and renamed when
closed, so a path that exists holds a complete, readable recording.
"""

from __future__ import annotations

import array
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from pose_ros.drawing import draw_persons
from pose_ros.fileio import atomic_write, fsync_dir
from pose_ros.recording import CameraTopics
from pose_ros.ros import markers, messages
from pose_ros.ros.params import MarkerStyle

POSES_TYPE: Final[str] = "pose_ros/msg/PersonPoseArray"
MARKERS_TYPE: Final[str] = "visualization_msgs/msg/MarkerArray"
COMPRESSED_IMAGE_TYPE: Final[str] = "sensor_msgs/msg/CompressedImage"
#: Output storages of a rosbag2 folder.
FOLDER_STORAGES: Final[tuple[str, ...]] = ("mcap", "sqlite3")
#: The format image_transport's ``compressed`` plugin writes for a bgr8 image (RViz, rqt and
#: Foxglove all read it).
JPEG_FORMAT: Final[str] = "bgr8; jpeg compressed bgr8"


class OutputError(ValueError):
    """An output that cannot be written (exists, a folder that is not a recording...)."""


def is_single_file(path: Path) -> bool:
    """An output path ending in ``.mcap`` is one MCAP file; anything else a rosbag2 folder."""
    return path.suffix == ".mcap"


def check_output(path: Path, *, overwrite: bool) -> None:
    """Refuse an output path before any work.

    Raises:
        OutputError: it exists (without ``overwrite``), or it is a folder that is not a rosbag2
            recording (never deleted, even with ``overwrite``), or a folder where a file belongs.
    """
    if not path.exists():
        if not path.parent.exists():
            raise OutputError(f"{path}: its folder {path.parent} does not exist")
        return
    if not overwrite:
        raise OutputError(f"{path} exists already (give --overwrite to replace it)")
    if is_single_file(path) and path.is_dir():
        raise OutputError(f"{path} is a folder: not replaced by an MCAP file")
    if not is_single_file(path) and (path.is_file() or not (path / "metadata.yaml").is_file()):
        raise OutputError(
            f"{path} exists and is not a rosbag2 recording (no metadata.yaml): not replaced"
        )


def message_definitions(msgtypes: Sequence[str]) -> dict[str, tuple[str, str]]:
    """msgtype → (ros2msg definition text with every type it uses, RIHS01 type hash), from the
    ``.msg`` files of the installed packages (the definitions rclpy serialises with).

    Raises:
        OutputError: a package or its ``.msg`` file is not installed.
    """
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    from rosbags.interfaces import Nodetype
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.EMPTY)
    pending = list(msgtypes)
    loaded: set[str] = set()
    while pending:
        msgtype = pending.pop()
        if msgtype in loaded:
            continue
        loaded.add(msgtype)
        package, _, name = msgtype.partition("/msg/")
        try:
            path = Path(get_package_share_directory(package)) / "msg" / f"{name}.msg"
            text = path.read_text()
        except (PackageNotFoundError, OSError) as error:
            raise OutputError(
                f"the definition of {msgtype} is not installed ({error}): source the ROS 2 "
                "environment with pose_ros built"
            ) from None
        types = get_types_from_msg(text, msgtype)
        store.register(types)
        for _, (node, details) in types[msgtype][1]:
            while node in (Nodetype.ARRAY, Nodetype.SEQUENCE):
                node, details = details[0]
            if node == Nodetype.NAME:
                pending.append(details)
    return {
        msgtype: (store.generate_msgdef(msgtype, ros_version=2)[0], store.hash_rihs01(msgtype))
        for msgtype in msgtypes
    }


class _McapFile:
    """One MCAP file (the ``mcap`` library), as rosbag2's MCAP storage lays it out."""

    def __init__(self, path: Path) -> None:
        from mcap.writer import CompressionType, Writer

        self._file = atomic_write(path, "wb")
        self._stream = self._file.__enter__()
        self._writer = Writer(self._stream, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="pose_ros")
        self._schemas: dict[str, int] = {}

    def add_topic(
        self, topic: str, msgtype: str, definition: str, encoding: str, type_hash: str, qos: str
    ) -> int:
        schema = self._schemas.get(msgtype)
        if schema is None:
            schema = self._schemas[msgtype] = self._writer.register_schema(
                name=msgtype, encoding=encoding, data=definition.encode()
            )
        metadata = {"offered_qos_profiles": qos}
        if type_hash:
            metadata["topic_type_hash"] = type_hash
        return self._writer.register_channel(
            topic=topic, message_encoding="cdr", schema_id=schema, metadata=metadata
        )

    def write(self, channel: int, log_time_ns: int, data: bytes) -> None:
        self._writer.add_message(channel, log_time_ns, data, log_time_ns)

    def close(self) -> None:
        self._writer.finish()
        self._file.__exit__(None, None, None)  # fsync, then the final name


class _Rosbag2Folder:
    """A rosbag2 folder (``rosbags``' writer), written beside its destination and renamed."""

    def __init__(self, path: Path, storage: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self._path = path
        self._temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self._temporary / path.name, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections: list[Any] = []

    def add_topic(
        self, topic: str, msgtype: str, definition: str, encoding: str, type_hash: str, qos: Any
    ) -> int:
        connection = self._writer.add_connection(
            topic,
            msgtype,
            msgdef=definition,
            rihs01=type_hash,
            offered_qos_profiles=qos if isinstance(qos, list) else [],
        )
        self._connections.append(connection)
        return len(self._connections) - 1

    def write(self, channel: int, log_time_ns: int, data: bytes) -> None:
        self._writer.write(self._connections[channel], log_time_ns, data)

    def close(self) -> None:
        self._writer.close()
        if self._path.exists():  # --overwrite of a recording (checked before any work)
            shutil.rmtree(self._path)
        os.replace(self._temporary / self._path.name, self._path)
        self._temporary.rmdir()
        fsync_dir(self._path.parent)


class RecordingOutput:
    """The output recording of :func:`pose_ros.cli_bag.run_bag` (see the module).

    Args:
        path: ``*.mcap`` for one file, anything else for a rosbag2 folder.
        cameras: the processed cameras.
        storage: a rosbag2 folder's storage (``mcap`` or ``sqlite3``).
        annotated: also write the annotated image (JPEG) of every frame.
        marker_style: the markers' look (the node's ``markers.*`` parameters).
        keypoint_threshold: the annotated image's drawing threshold.
    """

    def __init__(
        self,
        path: Path,
        cameras: Sequence[CameraTopics],
        *,
        storage: str = "mcap",
        annotated: bool = False,
        marker_style: MarkerStyle | None = None,
        keypoint_threshold: float = 0.3,
        jpeg_quality: int = 90,
    ) -> None:
        if storage not in FOLDER_STORAGES:
            raise OutputError(f"storage {storage!r}: one of {', '.join(FOLDER_STORAGES)}")
        types = [POSES_TYPE, MARKERS_TYPE] + ([COMPRESSED_IMAGE_TYPE] if annotated else [])
        definitions = message_definitions(types)
        self.path = path
        self._store = _McapFile(path) if is_single_file(path) else _Rosbag2Folder(path, storage)
        self._annotated = annotated
        self._style = marker_style or MarkerStyle()
        self._keypoint_threshold = keypoint_threshold
        self._jpeg_params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        self._channels: dict[tuple[str, str], int] = {}
        self._copied: dict[int, int] = {}
        self.messages_written = 0

        def add(camera: CameraTopics, relative: str, msgtype: str) -> None:
            definition, type_hash = definitions[msgtype]
            self._channels[camera.image, relative] = self._store.add_topic(
                camera.output_topic(relative), msgtype, definition, "ros2msg", type_hash, ""
            )

        for camera in cameras:
            add(camera, "poses", POSES_TYPE)
            add(camera, "poses/markers", MARKERS_TYPE)
            if annotated:
                add(camera, "poses/image/compressed", COMPRESSED_IMAGE_TYPE)

    def copy_topics(self, connections: Sequence[Any], typestore: Any) -> None:
        """Write these input connections' messages too (:meth:`write_input`), with their own
        definitions (``--copy-input``)."""
        from rosbags.interfaces import MessageDefinitionFormat

        for connection in connections:
            if connection.id in self._copied:
                continue
            definition, encoding = connection.msgdef.data, "ros2msg"
            if connection.msgdef.format == MessageDefinitionFormat.IDL:
                encoding = "ros2idl"
            elif connection.msgdef.format == MessageDefinitionFormat.NONE or not definition:
                definition = typestore.generate_msgdef(connection.msgtype, ros_version=2)[0]
            type_hash = connection.digest or typestore.hash_rihs01(connection.msgtype)
            qos = getattr(connection.ext, "offered_qos_profiles", [])
            self._copied[connection.id] = self._store.add_topic(
                connection.topic,
                connection.msgtype,
                definition,
                encoding,
                type_hash,
                qos if isinstance(self._store, _Rosbag2Folder) else "",
            )

    def write_input(self, connection: Any, log_time_ns: int, raw: bytes) -> None:
        """Copy one input message unchanged (a topic given to :meth:`copy_topics`)."""
        channel = self._copied.get(connection.id)
        if channel is not None:
            self._store.write(channel, log_time_ns, bytes(raw))
            self.messages_written += 1

    def write_frame(
        self,
        camera: CameraTopics,
        header: Any,
        log_time_ns: int,
        pixels: np.ndarray,
        color_order: str,
        persons: Sequence[Any],
        camera_model: Any,
    ) -> None:
        """The outputs of one processed frame, with its image's header and log time."""
        height, width = pixels.shape[:2]
        ros_header = Header(
            stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
            frame_id=str(header.frame_id),
        )
        poses = messages.persons_to_msg(persons, ros_header, width, height)
        self._write(camera, "poses", log_time_ns, poses)
        marker_array = markers.build_marker_array(
            persons, ros_header, width, height, self._style, camera_model
        )
        self._write(camera, "poses/markers", log_time_ns, marker_array)
        if self._annotated:
            canvas = draw_persons(
                pixels,
                persons,
                keypoint_threshold=self._keypoint_threshold,
                color_order=color_order,
            )
            if color_order == "RGB":
                canvas = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
            ok, jpeg = cv2.imencode(".jpg", canvas, self._jpeg_params)
            if not ok:
                raise OutputError(f"JPEG encoding of a {width}x{height} annotated image failed")
            image = CompressedImage(header=ros_header, format=JPEG_FORMAT)
            image.data = array.array("B", jpeg.tobytes())
            self._write(camera, "poses/image/compressed", log_time_ns, image)

    def _write(self, camera: CameraTopics, relative: str, log_time_ns: int, msg: Any) -> None:
        self._store.write(
            self._channels[camera.image, relative], log_time_ns, serialize_message(msg)
        )
        self.messages_written += 1

    def close(self) -> None:
        """Finish the recording and give it its name (a complete, readable file or folder)."""
        self._store.close()
