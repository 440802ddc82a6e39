"""The node's subscriptions: per camera its image (paired with its registered depth image when
``use_depth``) and its camera_info. Callbacks run in the executor thread and stay short: a frame is
counted as received when it arrives (so "has the camera stopped?" is decided by arrival, never by
stamps), paired with depth by :class:`pose_ros.depth_pairing.DepthPairing` (the same pairing a
recording gets), and posted into the worker's mailbox, which keeps the newest frame per camera.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image

from pose_ros.camera import CameraModelError, PinholeCamera
from pose_ros.depth_pairing import DEPTH_WAIT_SEC, DepthPairing, Paired
from pose_ros.ros import conversions
from pose_ros.ros.camera_stream import CameraStream
from pose_ros.ros.mailbox import LatestFramesMailbox
from pose_ros.ros.reporting import Reporter
from pose_ros.ros.startup import input_qos

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks
try:
    from rclpy.qos import qos_policy_name_from_kind
except ImportError:  # older rclpy: name the policy by its number

    def qos_policy_name_from_kind(kind: Any) -> str:
        return str(kind)


#: What the worker's mailbox holds per camera: (colour message, arrival time, depth image or None).
Frame = tuple[Any, float, Image | None]


def stamp_sec(msg: Any) -> float:
    """A message's header stamp in seconds (0.0 when unset)."""
    stamp = msg.header.stamp
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


class CameraInputs:
    """Subscribes every camera of the node and posts its frames into a mailbox.

    Args:
        node: the node that owns the subscriptions and the timer.
        streams: the cameras.
        msg_type: Image or CompressedImage; ``image_topic``: ``image`` or ``image/compressed``.
        values: the node's parameter values (QoS, use_depth, use_camera_info, camera.rectified).
        slop_sec: colour/depth pairing slop (``depth.slop_sec``).
        reporter: the node's log lines.
    """

    def __init__(
        self,
        node: Node,
        streams: list[CameraStream],
        *,
        msg_type: type,
        image_topic: str,
        values: dict[str, Any],
        slop_sec: float,
        reporter: Reporter,
    ) -> None:
        self._node = node
        self._streams = streams
        self._msg_type = msg_type
        self._image_topic = image_topic
        self._values = values
        self._slop_sec = slop_sec
        self._reporter = reporter
        self._mailbox: LatestFramesMailbox[int, Frame] | None = None
        self._expire_timer: Any = None
        self._lock = threading.Lock()

    def open(self, mailbox: LatestFramesMailbox[int, Frame]) -> None:
        """Subscribe every camera; frames go into ``mailbox``."""
        self._mailbox = mailbox
        values = self._values
        qos = input_qos(values["qos.reliability"], values["qos.depth"])
        for stream in self._streams:
            self._subscribe(stream, qos)
        if values["use_depth"]:
            self._expire_timer = self._node.create_timer(DEPTH_WAIT_SEC / 4, self._expire)

    def close(self) -> None:
        """Unsubscribe everything; frames still waiting for depth are forgotten."""
        self._mailbox = None
        node = self._node
        if self._expire_timer is not None:
            node.destroy_timer(self._expire_timer)
            self._expire_timer = None
        for stream in self._streams:
            for subscription in (stream.image_sub, stream.depth_sub, stream.camera_info_sub):
                if subscription is not None:
                    node.destroy_subscription(subscription)
            stream.image_sub = stream.depth_sub = stream.camera_info_sub = None
            stream.depth_pairing = None

    def _subscribe(self, stream: CameraStream, qos: QoSProfile) -> None:
        node = self._node
        events = SubscriptionEventCallbacks(
            incompatible_qos=functools.partial(self._on_incompatible_qos, stream)
        )
        with_depth = bool(self._values["use_depth"])
        stream.image_sub = node.create_subscription(
            self._msg_type,
            stream.topic(self._image_topic),
            functools.partial(self._on_colour if with_depth else self._on_image, stream),
            qos,
            event_callbacks=events,
        )
        stream.input_topic = stream.image_sub.topic_name
        stream.no_input_logged_at = None
        if with_depth:
            # The depth subscription uses the colour's QoS (drivers publish both alike).
            stream.depth_sub = node.create_subscription(
                Image, stream.topic("depth"), functools.partial(self._on_depth, stream), qos
            )
            stream.depth_topic = stream.depth_sub.topic_name
            stream.depth_pairing = DepthPairing(
                self._slop_sec, depth_topic=stream.depth_topic, start=time.monotonic()
            )
        if self._values["use_camera_info"]:
            # Best effort matches every publisher; only the latest calibration matters.
            stream.camera_info_sub = node.create_subscription(
                CameraInfo,
                stream.topic("camera_info"),
                functools.partial(self._on_camera_info, stream),
                input_qos("best_effort", 1),
            )

    # --- executor thread: short callbacks only ---

    def _on_image(self, stream: CameraStream, msg: Any) -> None:
        stream.stats.frame_received(False)
        self._post(stream, [Paired(msg, None, None, time.monotonic())])

    def _on_colour(self, stream: CameraStream, msg: Any) -> None:
        now = time.monotonic()
        stream.stats.frame_received(False, now)
        with self._lock:
            pairing = stream.depth_pairing
            out = [] if pairing is None else pairing.add_colour(msg, stamp_sec(msg), now)
        self._post(stream, out)

    def _on_depth(self, stream: CameraStream, msg: Image) -> None:
        now = time.monotonic()
        with self._lock:
            pairing = stream.depth_pairing
            out = [] if pairing is None else pairing.add_depth(msg, stamp_sec(msg), now)
        self._post(stream, out)

    def _expire(self) -> None:
        now = time.monotonic()
        for stream in self._streams:
            with self._lock:
                pairing = stream.depth_pairing
                out = [] if pairing is None else pairing.expire(now)
            self._post(stream, out)

    def _post(self, stream: CameraStream, frames: list[Paired]) -> None:
        mailbox = self._mailbox
        if mailbox is None:
            return  # closed while this callback was queued
        for paired in frames:
            if paired.why is not None:
                stream.frames_without_depth += 1
                count = stream.frames_without_depth
                self._reporter.problem(
                    f"{stream.label}without_depth",
                    f"{stream.label}frame processed without depth ({count} "
                    f"frame{'s' if count > 1 else ''} so far): {paired.why}",
                    level="warning",
                )
            if mailbox.put(stream.index, (paired.colour, paired.arrival, paired.depth)):
                stream.stats.frame_dropped()

    def _on_camera_info(self, stream: CameraStream, msg: CameraInfo) -> None:
        try:
            camera: PinholeCamera | None = conversions.camera_from_info(
                msg, rectified=bool(self._values["camera.rectified"])
            )
        except CameraModelError as error:
            camera = None
            consequence = "markers use markers.pixel_scale" + (
                ", keypoints get no 3D position" if self._values["use_depth"] else ""
            )
            if error.uncalibrated:
                self._reporter.warn_once(
                    f"uncalibrated:{stream.name}",
                    f"{stream.label}camera_info has no calibration (K is all zero): {consequence}",
                )
            else:
                # Once per kind of problem (the value named first): a driver repeats it at its rate.
                self._reporter.warn_once(
                    f"camera_info_refused:{stream.name}:{str(error).split()[0]}",
                    f"{stream.label}camera_info refused: {error}; {consequence}",
                )
        if camera is not None and stream.camera is None:
            self._reporter.logger.info(
                f"{stream.label}camera_info received: markers and 3D keypoints through "
                f"{camera.describe()}"
            )
        stream.camera = camera

    def _on_incompatible_qos(self, stream: CameraStream, event: Any) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        hint = ""
        if policy == "RELIABILITY" and self._values["qos.reliability"] == "reliable":
            hint = " The publisher is best effort: set qos.reliability:=best_effort."
        self._reporter.warn_once(
            f"incompatible_qos:{stream.name}",
            f"a publisher on {stream.input_topic} offers QoS incompatible with this "
            f"subscription (policy {policy}); no frames will arrive from it.{hint}",
        )
