"""``pose_node``: camera images in, ``pose_ros/PersonPoseArray`` and RViz markers out.

Topics (relative names: remap or namespace them):

* subscribes ``image`` (sensor_msgs/Image), or ``image/compressed`` (sensor_msgs/CompressedImage)
  with ``input_type:=compressed``; ``camera_info`` (sensor_msgs/CameraInfo) for marker placement.
* publishes ``poses`` (pose_ros/PersonPoseArray, one per processed frame, also when nobody is
  found), ``poses/markers`` (visualization_msgs/MarkerArray, while subscribed) and
  ``poses/image`` (sensor_msgs/Image, annotated, drawn only while subscribed).

Threading, in the manner of image_pipeline: the subscription callback only posts the frame into a
one-slot mailbox (:mod:`pose_ros.ros.mailbox`); a worker thread converts, runs the pipeline and
publishes. A frame still waiting when a newer one arrives is dropped and counted, so latency stays
one frame deep however slow the device. The executor thread stays free for parameters, camera_info
and the status timer.

The node is thin: conversion, messages, markers and parameters live in their own modules, the
inference in :class:`pose_ros.pipeline.PoseEstimator`.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from typing import Any

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from pose_ros.msg import PersonPoseArray
from pose_ros.ros import conversions, markers, messages
from pose_ros.ros.mailbox import LatestFrameMailbox
from pose_ros.ros.params import PARAMETERS, RUNTIME_PARAMETERS, RuntimeSettings, parameter_problem
from pose_ros.ros.stats import NodeStats, format_status

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks
try:
    from rclpy.qos import qos_policy_name_from_kind
except ImportError:  # older rclpy: name the policy by its number

    def qos_policy_name_from_kind(kind: Any) -> str:
        return str(kind)


NODE_NAME = "pose_node"
#: Bad frames of one kind are reported at most once per this many seconds.
BAD_FRAME_LOG_PERIOD_S = 5.0
#: How long shutdown waits for a frame in progress.
WORKER_JOIN_TIMEOUT_S = 10.0


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing weights...): the message says why and how to
    fix it; ``main`` logs it and exits non-zero."""


# QoS of the outputs. Reliable publishers match both reliable and best-effort subscribers (RViz,
# `ros2 topic echo`, recorders), so no consumer is left out. Poses are small: keep a few so a
# briefly busy consumer loses none; markers and images are replaced by the next frame anyway.
POSES_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.VOLATILE,
)
MARKERS_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST, depth=2, reliability=QoSReliabilityPolicy.RELIABLE
)
DEBUG_IMAGE_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST, depth=1, reliability=QoSReliabilityPolicy.RELIABLE
)


def input_qos(reliability: str, depth: int) -> QoSProfile:
    """QoS of the image subscription.

    The default (best effort, keep last 1, volatile) is the sensor-data profile camera drivers
    publish with: a best-effort subscription matches reliable and best-effort publishers alike,
    and a depth of 1 never keeps an old frame around. ``reliable`` only matches reliable
    publishers (the node warns when one does not match).
    """
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(
            QoSReliabilityPolicy.RELIABLE
            if reliability == "reliable"
            else QoSReliabilityPolicy.BEST_EFFORT
        ),
        durability=QoSDurabilityPolicy.VOLATILE,
    )


def build_estimator(values: dict[str, Any]) -> Any:
    """The PoseEstimator the parameters describe (imported here: torch loads with it).

    Raises:
        StartupError: missing or unusable weights, an unknown detector, a device not present.
    """
    from pose_ros.detection import DetectorError
    from pose_ros.models import CheckpointError
    from pose_ros.pipeline import PoseEstimator

    backend = values["detector.backend"]
    if backend == "given":
        raise StartupError(
            "detector.backend 'given' needs person boxes from outside, and this node has no box "
            "input: use 'full_image' for pre-cropped single-person images, or a detector"
        )
    fp16 = None if values["fp16"] == "auto" else bool(values["fp16"])
    try:
        return PoseEstimator.from_names(
            values["model"],
            detector=backend,
            detector_weights=values["detector.weights"] or None,
            device=values["device"],
            fp16=fp16,
            allow_random_weights=values["allow_random_weights"],
            score_threshold=values["detector.score_threshold"],
            max_persons=values["max_persons"],
            flip_test=values["flip_test"],
            decode=values["decode"],
            keypoint_score_threshold=values["keypoint_score_threshold"],
        )
    except CheckpointError as error:
        raise StartupError(
            f"cannot load the pose model {values['model']!r}: {error} "
            "(set the 'model' parameter to a checkpoint file or a published-weights name; "
            "see the README section 'Weights')"
        ) from None
    except DetectorError as error:
        raise StartupError(
            f"cannot build the person detector {backend!r}: {error} (set detector.backend / "
            "detector.weights; 'full_image' needs no weights)"
        ) from None
    except ValueError as error:
        raise StartupError(f"invalid configuration: {error}") from None


def _parameter_error(error: ParameterException) -> str:
    """The reason inside rclpy's parameter exception text ("... Reason: <why>: <name>")."""
    match = re.search(r"Reason: (.*): [^:]+$", str(error))
    return match.group(1) if match else str(error)


class PoseNode(Node):
    """The pose estimation node. Construct after ``rclpy.init()``; raises StartupError."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._ready = False
        # Registered before declaring, so values from the command line and params files go
        # through the same checks as runtime changes (rclpy calls it for each declaration).
        self.add_on_set_parameters_callback(self._on_set_parameters)
        try:
            # Declared without ranges first, so a bad value from a params file or `-p` is refused
            # by _on_set_parameters with one clear sentence; then the full descriptors (ranges for
            # `ros2 param describe` and GUIs, read-only flags) are attached.
            self.declare_parameters(
                "", [(s.name, s.default, s.descriptor(constraints=False)) for s in PARAMETERS]
            )
            for spec in PARAMETERS:
                descriptor = spec.descriptor()
                descriptor.type = self.describe_parameter(spec.name).type  # as declared
                self.set_descriptor(spec.name, descriptor)
        except ParameterException as error:
            raise StartupError(f"invalid parameter: {_parameter_error(error)}") from None
        values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        self._settings = RuntimeSettings.from_values(values)
        self._values = values

        self._estimator = build_estimator(values)
        self._random_weights = bool(getattr(self._estimator, "uses_random_weights", False))
        self.get_logger().info(f"pose pipeline: {self._describe_estimator()}")
        if self._random_weights:
            self.get_logger().warning(
                "RANDOM WEIGHTS (allow_random_weights): the published keypoints are meaningless; "
                "use this only for testing"
            )

        self._stats = NodeStats(time.monotonic())
        self._mailbox: LatestFrameMailbox[tuple[Image | CompressedImage, float]] = (
            LatestFrameMailbox()
        )
        self._camera: markers.PinholeCamera | None = None
        self._bad_frame_loggers: dict[str, Any] = {}
        self._warned: set[str] = set()

        self._poses_pub = self.create_publisher(PersonPoseArray, "poses", POSES_QOS)
        self._markers_pub = self.create_publisher(MarkerArray, "poses/markers", MARKERS_QOS)
        self._image_pub = self.create_publisher(Image, "poses/image", DEBUG_IMAGE_QOS)

        compressed = values["input_type"] == "compressed"
        self._convert = (
            conversions.compressed_msg_to_array if compressed else conversions.image_msg_to_array
        )
        self._image_sub = self.create_subscription(
            CompressedImage if compressed else Image,
            "image/compressed" if compressed else "image",
            self._on_image,
            input_qos(values["qos.reliability"], values["qos.depth"]),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos),
        )
        if values["use_camera_info"]:
            # Best effort matches every publisher; only the latest calibration matters.
            self.create_subscription(
                CameraInfo, "camera_info", self._on_camera_info, input_qos("best_effort", 1)
            )

        self._status_timer = self.create_timer(values["log_period_sec"], self._log_status)
        self._watchdog = self.create_timer(values["no_input_warning_sec"], self._check_input)
        self._worker = threading.Thread(target=self._work, name="pose_worker", daemon=True)
        self._worker.start()
        self._ready = True
        self.get_logger().info(
            f"listening on {self._image_sub.topic_name} "
            f"({'CompressedImage' if compressed else 'Image'}, {values['qos.reliability']}, "
            f"depth {values['qos.depth']}); publishing {self._poses_pub.topic_name}"
        )

    # --- executor thread: short callbacks only ---

    def _on_image(self, msg: Image | CompressedImage) -> None:
        dropped = self._mailbox.put((msg, time.monotonic()))
        self._stats.frame_received(dropped)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        camera = markers.PinholeCamera.from_camera_info(msg)
        if camera is None:
            self._warn_once(
                "uncalibrated",
                "camera_info has no calibration (K is zero): markers use markers.pixel_scale",
            )
        elif self._camera is None:
            self.get_logger().info(
                f"camera_info received: markers placed through K (fx {camera.fx:.1f}, "
                f"fy {camera.fy:.1f}, cx {camera.cx:.1f}, cy {camera.cy:.1f})"
            )
        self._camera = camera

    def _on_incompatible_qos(self, event: Any) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        hint = ""
        if policy == "RELIABILITY" and self._values["qos.reliability"] == "reliable":
            hint = " The publisher is best effort: set qos.reliability:=best_effort."
        self._warn_once(
            "incompatible_qos",
            f"a publisher on {self._image_sub.topic_name} offers QoS incompatible with this "
            f"subscription (policy {policy}); no frames will arrive from it.{hint}",
        )

    def _check_input(self) -> None:
        """One-shot: after no_input_warning_sec, say why no frame has arrived."""
        self._watchdog.cancel()
        if self._stats.totals.received:
            return
        topic = self._image_sub.topic_name
        publishers = self.count_publishers(topic)
        after = f"{self._values['no_input_warning_sec']:g} s"
        if publishers == 0:
            self._warn_once(
                "no_publisher",
                f"no publisher on {topic} after {after}: is the camera running, and is the topic "
                "remapped to it (e.g. image:=/camera/image_raw)?",
            )
        else:
            self._warn_once(
                "no_frames",
                f"{publishers} publisher(s) on {topic} but no frame received after {after}: "
                "check QoS compatibility and the message type "
                f"(input_type={self._values['input_type']})",
            )

    def _log_status(self) -> None:
        line = format_status(
            self._stats.take_window(time.monotonic()), random_weights=self._random_weights
        )
        if line is not None:
            self.get_logger().info(line)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        problems = [
            problem
            for problem in (parameter_problem(p.name, p.value) for p in parameters)
            if problem is not None
        ]
        if problems:
            reason = "; ".join(problems)
            if self._ready:
                self.get_logger().warning(f"parameter change refused: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        if self._ready:
            changed = {p.name: p.value for p in parameters if p.name in RUNTIME_PARAMETERS}
            if changed:
                # Applied here: this is the node's only on-set callback, so success is final.
                self._apply(changed)
        return SetParametersResult(successful=True)

    def _apply(self, changed: dict[str, Any]) -> None:
        self._values = {**self._values, **changed}
        settings = RuntimeSettings.from_values(self._values)
        estimator = self._estimator
        estimator.keypoint_score_threshold = settings.keypoint_score_threshold
        estimator.max_persons = settings.max_persons
        detector = getattr(estimator, "detector", None)
        if detector is not None and hasattr(detector, "detection_filter"):
            detector.detection_filter = dataclasses.replace(
                detector.detection_filter,
                score_threshold=settings.detector_score_threshold,
                max_persons=settings.max_persons,
            )
        self._settings = settings  # one reference swap: the worker sees all or nothing
        described = ", ".join(f"{name}={value!r}" for name, value in sorted(changed.items()))
        self.get_logger().info(f"parameters updated: {described}")

    # --- worker thread ---

    def _work(self) -> None:
        while True:
            item = self._mailbox.take(timeout=0.5)
            if self._mailbox.closed:
                return
            if item is None:
                continue
            msg, received_at = item
            try:
                self._process(msg, received_at)
            except Exception as error:  # a failing frame must never stop the worker
                if self._mailbox.closed or not rclpy.ok(context=self.context):
                    return  # shutting down: publishers are gone
                self._stats.frame_failed()
                self._report_bad_frame(
                    "inference", f"processing a frame failed: {type(error).__name__}: {error}"
                )

    def _process(self, msg: Image | CompressedImage, received_at: float) -> None:
        settings = self._settings
        try:
            image = self._convert(msg, max_pixels=settings.max_image_pixels)
        except conversions.ImageConversionError as error:
            self._stats.frame_bad()
            self._report_bad_frame(
                error.kind, f"bad frame on {self._image_sub.topic_name}: {error}"
            )
            return
        if not msg.header.frame_id:
            self._warn_once(
                "empty_frame_id",
                "input images have an empty header.frame_id: poses keep it, but RViz cannot place "
                "the markers (set the camera driver's frame_id)",
            )

        persons = self._estimator(image.pixels, color_order=image.color_order)
        pipeline_ms = float(self._estimator.last_timings.total_ms)
        self._poses_pub.publish(
            messages.persons_to_msg(persons, msg.header, image.width, image.height)
        )
        latency_ms = (time.monotonic() - received_at) * 1e3

        # Visual outputs only for someone watching: they cost more than the message itself.
        if self._markers_pub.get_subscription_count() > 0:
            self._markers_pub.publish(
                markers.build_marker_array(
                    persons, msg.header, image.width, image.height, settings.markers, self._camera
                )
            )
        if settings.debug_image_enabled and self._image_pub.get_subscription_count() > 0:
            self._publish_debug_image(msg, image, persons, settings)
        self._stats.frame_processed(latency_ms, pipeline_ms, len(persons))

    def _publish_debug_image(
        self,
        msg: Image | CompressedImage,
        image: conversions.ConvertedImage,
        persons: list[Any],
        settings: RuntimeSettings,
    ) -> None:
        from pose_ros.drawing import draw_persons

        canvas = draw_persons(
            image.pixels,
            persons,
            keypoint_threshold=settings.debug_image_keypoint_threshold,
            color_order=image.color_order,
        )
        encoding = "rgb8" if image.color_order == "RGB" else "bgr8"
        self._image_pub.publish(conversions.array_to_image_msg(canvas, encoding, header=msg.header))
        self._stats.image_annotated()

    # --- helpers ---

    def _report_bad_frame(self, kind: str, message: str) -> None:
        # One logger object per kind: rclpy throttles per logger and call site, so a flood of one
        # problem cannot hide the first report of another.
        logger = self._bad_frame_loggers.get(kind)
        if logger is None:
            logger = get_logger(self.get_logger().name)
            self._bad_frame_loggers[kind] = logger
        logger.error(
            f"{message} (reported at most every {BAD_FRAME_LOG_PERIOD_S:g} s)",
            throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(message)

    def _describe_estimator(self) -> str:
        describe = getattr(self._estimator, "describe", None)
        return describe() if callable(describe) else type(self._estimator).__name__

    def close(self) -> str:
        """Stop the worker (waiting for a frame in progress); returns the closing summary line.

        Call ``destroy_node()`` before logging it: after Ctrl-C the context is already shut down,
        and a destroyed node no longer tries to forward its log lines to /rosout.
        """
        self._mailbox.close()
        if self._worker.is_alive():
            self._worker.join(WORKER_JOIN_TIMEOUT_S)
        t = self._stats.totals
        return (
            f"stopped: {t.received} frames received, {t.processed} processed, {t.dropped} dropped, "
            f"{t.bad} bad, {t.failed} failed"
        )


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``pose_node`` executable; returns the exit code."""
    rclpy.init(args=args)
    node: PoseNode | None = None
    code = 0
    try:
        node = PoseNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C / launch shutdown: a normal end
    except StartupError as error:
        get_logger(NODE_NAME).fatal(str(error))
        code = 1
    finally:
        if node is not None:
            summary = node.close()
            node.destroy_node()
            get_logger(NODE_NAME).info(summary)
        rclpy.try_shutdown()
    return code
