"""``pose_node``: camera images in, ``pose_ros/PersonPoseArray`` and RViz markers out.

Topics (relative names: remap or namespace them; with ``cameras:=[front, left]`` each camera has
all of them under its own name: ``front/image``, ``front/poses``...):

* subscribes ``image`` (sensor_msgs/Image), or ``image/compressed`` (sensor_msgs/CompressedImage)
  with ``input_type:=compressed``; ``camera_info`` (sensor_msgs/CameraInfo) for marker placement
  and 3D positions; with ``use_depth:=true`` also ``depth`` (sensor_msgs/Image registered to the
  colour image), paired with each colour frame by stamp (:mod:`pose_ros.ros.depth_input`).
* publishes ``poses`` (pose_ros/PersonPoseArray, one per processed frame, also when nobody is
  found), ``poses/markers`` (visualization_msgs/MarkerArray, while subscribed),
  ``poses/image`` (sensor_msgs/Image, annotated, drawn only while subscribed) and
  ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, 1 Hz, :mod:`pose_ros.ros.diagnostics`).

Lifecycle (a managed node, rclpy.lifecycle): ``configure`` loads the model and the detector (the
slow part: weights, device memory) and creates the publishers and per-stream state; ``activate``
subscribes and starts the worker; ``deactivate`` unsubscribes and stops the worker, keeping the
model; ``cleanup`` frees the model and device memory; ``shutdown`` works from any state. With
``managed:=false`` (the default) the node configures and activates itself at start, so a plain
``ros2 run pose_ros pose_node`` works without a lifecycle manager.

Threading, in the manner of image_pipeline: the subscription callback only posts the frame into a
one-slot-per-camera mailbox (:mod:`pose_ros.ros.mailbox`); a worker thread converts, runs the
pipeline and publishes. A frame still waiting when a newer one of its camera arrives is dropped and
counted, so latency stays one frame deep however slow the device. With several cameras the worker
takes the newest frame of every camera at once, runs the detector on each, and the pose network
on the crops of all of them as one batch (one network call per cycle): one GPU serves the cameras
of a robot without a model per camera. The executor thread stays free for parameters, camera_info,
lifecycle services and the timers. Runtime parameter changes are queued by the executor thread and
applied by the worker between frames, all of one request together: the estimator is never changed
while a frame is inside it.

The node is thin: conversion, messages, markers, diagnostics and parameters live in their own
modules, the inference in :class:`pose_ros.pipeline.PoseEstimator`.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import re
import signal
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from pose_ros.camera import CameraModelError, PinholeCamera
from pose_ros.depth import DepthError, attach_positions
from pose_ros.msg import PersonPoseArray
from pose_ros.ros import conversions, diagnostics, markers, messages
from pose_ros.ros.camera_stream import CameraStream, camera_names, total_counts
from pose_ros.ros.depth_input import ColourDepthPairing
from pose_ros.ros.mailbox import LatestFramesMailbox
from pose_ros.ros.params import (
    DEFAULTS,
    PARAMETERS,
    RUNTIME_PARAMETERS,
    RuntimeSettings,
    parameter_problem,
    settings_problem,
)
from pose_ros.ros.stats import NodeStats, format_status
from pose_ros.tracking import PoseTracker

try:  # rclpy with signal-handler options (Humble and later)
    from rclpy.signals import SignalHandlerOptions
except ImportError:  # main() then keeps rclpy's own handler
    SignalHandlerOptions = None
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
#: What the worker's mailbox holds per camera: (colour message, arrival time, depth image or None).
_Frame = tuple[Any, float, Image | None]
#: Bad frames of one kind are reported at most once per this many seconds.
BAD_FRAME_LOG_PERIOD_S = 5.0
#: How long shutdown waits for a frame in progress.
WORKER_JOIN_TIMEOUT_S = 10.0
#: Longest wait of the main loop between checks for Ctrl-C / SIGTERM.
STOP_POLL_S = 0.2
#: While no frame arrives, the warning is repeated at most this often (/diagnostics says it at
#: 1 Hz; the log is for people reading it, so it repeats slowly).
NO_INPUT_LOG_PERIOD_S = 30.0


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
# As diagnostic_updater publishes: reliable, volatile, a short history.
DIAGNOSTICS_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST, depth=10, reliability=QoSReliabilityPolicy.RELIABLE
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
        StartupError: missing or unusable weights (random ones without allow_random_weights, for
            the pose network and the detector alike), an unknown detector, an engine that cannot
            run here, a device that does not exist, CUDA errors (out of memory...).
    """
    import torch

    from pose_ros.detection import DetectorError
    from pose_ros.factory import estimator_from_names
    from pose_ros.models import CheckpointError
    from pose_ros.runtime import RuntimeBackendError
    from pose_ros.triton import TritonError

    backend = values["detector.backend"]
    if backend == "given":
        raise StartupError(
            "detector.backend 'given' needs person boxes from outside, and this node has no box "
            "input: use 'full_image' for pre-cropped single-person images, or a detector"
        )
    fp16 = None if values["fp16"] == "auto" else bool(values["fp16"])
    device = values["device"]
    try:
        return estimator_from_names(
            values["model"],
            detector=backend,
            detector_weights=values["detector.weights"] or None,
            device=device,
            fp16=fp16,
            allow_random_weights=values["allow_random_weights"],
            score_threshold=values["detector.score_threshold"],
            max_persons=values["max_persons"],
            flip_test=values["flip_test"],
            decode=values["decode"],
            keypoint_score_threshold=values["keypoint_score_threshold"],
            engine=values.get("engine", "auto"),
            detector_engine=values.get("detector.engine", "auto"),
            cpu_threads=values.get("cpu_threads", 0),
            yolo_layout=values.get("detector.yolo_layout", "auto"),
            # engine 'triton' (docs/triton.md)
            triton_url=values.get("triton.url", ""),
            triton_model=values.get("triton.model", ""),
            triton_timeout_ms=values.get("triton.timeout_ms", 1000),
        )
    except TritonError as error:
        raise StartupError(f"engine 'triton': {error}") from None
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
    except RuntimeBackendError as error:
        raise StartupError(
            f"cannot run the networks on engine {values.get('engine', 'auto')!r} / "
            f"detector.engine {values.get('detector.engine', 'auto')!r}: {error} "
            "(set engine / detector.engine to 'torch' or 'auto')"
        ) from None
    except ValueError as error:
        raise StartupError(f"invalid configuration: {error}") from None
    except torch.cuda.OutOfMemoryError as error:
        raise StartupError(
            f"out of GPU memory on device {device!r} while loading the networks "
            f"({str(error).splitlines()[0]}): free the GPU, pick another one (device:=cuda:N) or "
            "run on the CPU (device:=cpu)"
        ) from None
    except RuntimeError as error:
        # CUDA driver/runtime failures (no usable device, wrong driver, a busy GPU) surface as
        # RuntimeError (torch.AcceleratorError in recent torch): they are start-up failures.
        if "cuda" not in str(error).lower():
            raise
        raise StartupError(
            f"CUDA error on device {device!r} at start-up: {str(error).splitlines()[0]} (check "
            "the driver and `nvidia-smi`, pick another device, or use device:=cpu)"
        ) from None


def _parameter_error(error: ParameterException) -> str:
    """The reason inside rclpy's parameter exception text ("... Reason: <why>: <name>")."""
    match = re.search(r"Reason: (.*): [^:]+$", str(error))
    return match.group(1) if match else str(error)


class PoseNode(LifecycleNode):
    """The pose estimation node (a lifecycle node). Construct after ``rclpy.init()``.

    Raises:
        StartupError: an invalid parameter; with ``managed:=false`` also anything that stops
            ``configure`` (missing weights, an unknown detector...).
    """

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._declared = False
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
        self._values: dict[str, Any] = {
            spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS
        }
        self._settings = RuntimeSettings.from_values(self._values)
        # Accepted runtime changes not yet applied: the worker applies them between frames
        # (_apply_pending), the executor thread directly while no worker runs.
        self._pending: dict[str, Any] = {}
        self._settings_lock = threading.Lock()
        self._managed = bool(self._values["managed"])
        if self._values["use_depth"] and not self._values["use_camera_info"]:
            raise StartupError(
                "use_depth:=true needs use_camera_info:=true: keypoint positions are "
                "back-projected through camera_info's K"
            )

        # What configure builds (None while unconfigured).
        self._estimator: Any = None
        self._random_weights = False
        self._min_image_side = 1
        self._startup_error: BaseException | None = None
        # What activate builds (None while inactive).
        self._mailbox: LatestFramesMailbox[int, _Frame] | None = None
        self._worker: threading.Thread | None = None
        self._status_timer: Any = None
        self._active_since: float | None = None
        self._lifecycle_state = "unconfigured"

        self._bad_frame_loggers: dict[str, Any] = {}
        self._warned: set[str] = set()
        compressed = self._values["input_type"] == "compressed"
        self._input_msg_type = CompressedImage if compressed else Image
        self._image_topic = "image/compressed" if compressed else "image"
        self._convert = (
            conversions.compressed_msg_to_array if compressed else conversions.image_msg_to_array
        )
        # One stream per camera: cameras unset is one unnamed camera on the plain topic names.
        names = camera_names(self._values["cameras"]) or [""]
        now = time.monotonic()
        self._streams = [
            CameraStream(index, name, NodeStats(now)) for index, name in enumerate(names)
        ]
        for stream in self._streams:
            stream.input_topic = self._resolve(stream.topic(self._image_topic))
            stream.depth_topic = self._resolve(stream.topic("depth"))
            stream.depth_logger = get_logger(self.get_logger().name)

        # /diagnostics in every lifecycle state: a supervisor sees an unconfigured node too.
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray, diagnostics.DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS
        )
        self._health_timer = self.create_timer(
            diagnostics.DIAGNOSTICS_PERIOD_S, self._on_health_timer
        )
        self._declared = True

        if not self._managed:
            # A plain node: configure and activate now, failing as a start-up error.
            for trigger in (self.trigger_configure, self.trigger_activate):
                if trigger() != TransitionCallbackReturn.SUCCESS:
                    error = self._startup_error or StartupError(
                        f"the node could not start ({trigger.__name__})"
                    )
                    raise error
        else:
            self.get_logger().info(
                "managed node (managed:=true): waiting for lifecycle transitions, e.g. "
                f"`ros2 lifecycle set {self.get_fully_qualified_name()} configure`, then activate"
            )

    def _resolve(self, topic: str) -> str:
        try:
            return self.resolve_topic_name(topic)
        except Exception:  # rclpy without name resolution: the relative name says enough
            return topic

    # --- lifecycle transitions (executor thread) ---

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and the detector, create the publishers and the per-camera state."""
        self._startup_error = None
        try:
            self._apply_pending()  # no worker runs: changes made while unconfigured count
            self._estimator = build_estimator(self._values)
        except Exception as error:  # StartupError: a clear message; others: a bug or the device
            self._estimator = None
            self._startup_error = error
            if self._managed:
                reason = str(error) if isinstance(error, StartupError) else repr(error)
                self.get_logger().error(f"configure failed: {reason}")
            return TransitionCallbackReturn.FAILURE
        from pose_ros.types import MIN_IMAGE_SIDE

        self._min_image_side = MIN_IMAGE_SIDE
        self._random_weights = bool(getattr(self._estimator, "uses_random_weights", False))
        self.get_logger().info(f"pose pipeline: {self._describe_estimator()}")
        if self._random_weights:
            self.get_logger().warning(
                "RANDOM WEIGHTS (allow_random_weights): the published keypoints are meaningless; "
                "use this only for testing"
            )
        # Lifecycle publishers: they exist from configure (so subscribers can match early) and
        # publish only while active.
        for stream in self._streams:
            stream.poses_pub = self.create_lifecycle_publisher(
                PersonPoseArray, stream.topic("poses"), POSES_QOS
            )
            stream.markers_pub = self.create_lifecycle_publisher(
                MarkerArray, stream.topic("poses/markers"), MARKERS_QOS
            )
            stream.image_pub = self.create_lifecycle_publisher(
                Image, stream.topic("poses/image"), DEBUG_IMAGE_QOS
            )
            stream.camera = None
            stream.tracker = PoseTracker()
        self._configure_tracking(self._settings)
        self._lifecycle_state = "inactive"
        if self._managed:
            self.get_logger().info("configured: model loaded; activate to start processing")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and start the worker."""
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._apply_pending()  # before the worker exists: nothing is inside the estimator
        mailbox: LatestFramesMailbox[int, _Frame] = LatestFramesMailbox()
        self._mailbox = mailbox
        self._worker = threading.Thread(
            target=self._work, args=(mailbox,), name="pose_worker", daemon=True
        )
        self._worker.start()

        values = self._values
        image_qos = input_qos(values["qos.reliability"], values["qos.depth"])
        for stream in self._streams:
            self._subscribe(stream, image_qos)
        self._status_timer = self.create_timer(values["log_period_sec"], self._log_status)
        self._active_since = time.monotonic()
        self._lifecycle_state = "active"
        paired = ""
        if values["use_depth"]:
            depth_topics = ", ".join(stream.depth_topic for stream in self._streams)
            paired = (
                f", paired with depth images on {depth_topics} (stamps within "
                f"{self._settings.depth.slop_sec:g} s)"
            )
        batched = ""
        if len(self._streams) > 1:
            batched = f"; {len(self._streams)} cameras, their crops in one pose-network batch"
        outputs = ", ".join(stream.poses_pub.topic_name for stream in self._streams)
        self.get_logger().info(
            f"listening on {', '.join(stream.input_topic for stream in self._streams)} "
            f"({self._input_msg_type.__name__}, {values['qos.reliability']}, "
            f"depth {values['qos.depth']}){paired}; publishing {outputs}{batched}"
        )
        return TransitionCallbackReturn.SUCCESS

    def _subscribe(self, stream: CameraStream, image_qos: QoSProfile) -> None:
        """The subscriptions of one camera: image (paired with depth) and camera_info."""
        events = SubscriptionEventCallbacks(
            incompatible_qos=functools.partial(self._on_incompatible_qos, stream)
        )
        if self._values["use_depth"]:
            # Colour and depth paired by stamp (message_filters); the depth subscription uses the
            # colour's QoS (drivers publish both alike).
            stream.depth_pairing = ColourDepthPairing(
                self,
                self._input_msg_type,
                stream.topic(self._image_topic),
                image_qos,
                stream.topic("depth"),
                image_qos,
                self._settings.depth.slop_sec,
                functools.partial(self._on_colour_and_depth, stream),
                event_callbacks=events,
            )
            stream.image_sub = stream.depth_pairing.colour_subscription
            stream.depth_topic = stream.depth_pairing.depth_subscription.topic_name
        else:
            stream.image_sub = self.create_subscription(
                self._input_msg_type,
                stream.topic(self._image_topic),
                functools.partial(self._on_image, stream),
                image_qos,
                event_callbacks=events,
            )
        stream.input_topic = stream.image_sub.topic_name
        stream.no_input_logged_at = None
        if self._values["use_camera_info"]:
            # Best effort matches every publisher; only the latest calibration matters.
            stream.camera_info_sub = self.create_subscription(
                CameraInfo,
                stream.topic("camera_info"),
                functools.partial(self._on_camera_info, stream),
                input_qos("best_effort", 1),
            )

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker (after the frame in progress); the model stays."""
        self._stop_processing()
        self._lifecycle_state = "inactive"
        topics = ", ".join(stream.input_topic for stream in self._streams)
        self.get_logger().info(f"deactivated: no longer listening on {topics} (the model stays)")
        return super().on_deactivate(state)  # disables the lifecycle publishers

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model, the detector and their device memory; destroy the publishers."""
        self._unload()
        self._lifecycle_state = "unconfigured"
        self.get_logger().info("cleaned up: model and detector unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: stop processing and free everything."""
        self._stop_processing()
        self._unload()
        self._lifecycle_state = "finalized"
        self.get_logger().info(f"shut down (from {state.label}): Ctrl-C ends the process")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to unconfigured."""
        self.get_logger().error(f"lifecycle transition from {state.label} failed; unconfigured")
        self._stop_processing()
        self._unload()
        self._lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        """Undo activate: no callbacks, no worker (waits for the frame in progress)."""
        for stream in self._streams:
            if stream.depth_pairing is not None:
                stream.depth_pairing.close()  # its colour subscription is stream.image_sub
                stream.depth_pairing = stream.image_sub = None
            for subscription in (stream.image_sub, stream.camera_info_sub):
                if subscription is not None:
                    self.destroy_subscription(subscription)
            stream.image_sub = stream.camera_info_sub = None
        if self._status_timer is not None:
            self.destroy_timer(self._status_timer)
            self._status_timer = None
        if self._mailbox is not None:
            self._mailbox.close()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(WORKER_JOIN_TIMEOUT_S)
        self._mailbox = self._worker = None
        self._active_since = None

    def _unload(self) -> None:
        """Undo configure: publishers, per-camera state, the model and its device memory."""
        for stream in self._streams:
            for publisher in (stream.poses_pub, stream.markers_pub, stream.image_pub):
                if publisher is not None:
                    self.destroy_lifecycle_publisher(publisher)
            stream.poses_pub = stream.markers_pub = stream.image_pub = None
            stream.camera = None
            stream.tracker = None
        device = getattr(self._estimator, "device", None)
        self._estimator = None
        self._random_weights = False
        gc.collect()  # the model's tensors go now, not at some later collection
        if device is not None and getattr(device, "type", "") == "cuda":
            import torch

            torch.cuda.empty_cache()  # hand the cached blocks back to the driver

    def _configure_tracking(self, settings: RuntimeSettings) -> None:
        """Tracker settings of every camera, and the detector's threshold: with tracking on, the
        detector keeps boxes down to the low floor of ByteTrack's second stage (the tracker's
        select_detections drops what is neither high-scoring nor near a track)."""
        for stream in self._streams:
            if stream.tracker is not None:
                stream.tracker.configure(
                    tracking=settings.tracking,
                    smoothing=settings.smoothing,
                    detector_interval=settings.detector_interval,
                    reuse_score_threshold=settings.reuse_score_threshold,
                    keypoint_threshold=settings.keypoint_score_threshold,
                )
        detector = getattr(self._estimator, "detector", None)
        if detector is not None and hasattr(detector, "detection_filter"):
            threshold = settings.detector_score_threshold
            if settings.tracking.enabled:
                threshold = settings.tracking.low_score_threshold
            detector.detection_filter = dataclasses.replace(
                detector.detection_filter, score_threshold=threshold
            )

    # --- executor thread: short callbacks only ---

    def _on_image(self, stream: CameraStream, msg: Image | CompressedImage) -> None:
        mailbox = self._mailbox
        if mailbox is None:
            return  # deactivated while this callback was queued
        dropped = mailbox.put(stream.index, (msg, time.monotonic(), None))
        stream.stats.frame_received(dropped)

    def _on_colour_and_depth(
        self,
        stream: CameraStream,
        msg: Image | CompressedImage,
        depth: Image | None,
        why: str | None,
        arrived: float,
    ) -> None:
        """use_depth: a colour frame with its depth image, or without one and why (see
        pose_ros.ros.depth_input); a pair replaces the camera's waiting pair in the mailbox."""
        mailbox = self._mailbox
        if mailbox is None:
            return
        if why is not None:
            stream.frames_without_depth += 1
            count = stream.frames_without_depth
            stream.depth_logger.warning(
                f"{stream.label}frame processed without depth ({count} "
                f"frame{'s' if count > 1 else ''} so far): {why} (reported at most every "
                f"{BAD_FRAME_LOG_PERIOD_S:g} s)",
                throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
            )
        dropped = mailbox.put(stream.index, (msg, arrived, depth))
        stream.stats.frame_received(dropped)

    def _on_camera_info(self, stream: CameraStream, msg: CameraInfo) -> None:
        try:
            camera: PinholeCamera | None = conversions.camera_from_info(msg)
        except CameraModelError as error:
            camera = None
            consequence = "markers use markers.pixel_scale" + (
                ", keypoints get no 3D position" if self._values["use_depth"] else ""
            )
            if error.uncalibrated:
                self._warn_once(
                    f"uncalibrated:{stream.name}",
                    f"{stream.label}camera_info has no calibration (K is all zero): {consequence}",
                )
            else:
                # Once per kind of problem (the value named first): a driver repeats it at its rate.
                self._warn_once(
                    f"camera_info_refused:{stream.name}:{str(error).split()[0]}",
                    f"{stream.label}camera_info refused: {error}; {consequence}",
                )
        if camera is not None and stream.camera is None:
            self.get_logger().info(
                f"{stream.label}camera_info received: markers placed through K (fx "
                f"{camera.fx:.1f}, fy {camera.fy:.1f}, cx {camera.cx:.1f}, cy {camera.cy:.1f})"
            )
        stream.camera = camera

    def _on_incompatible_qos(self, stream: CameraStream, event: Any) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        hint = ""
        if policy == "RELIABILITY" and self._values["qos.reliability"] == "reliable":
            hint = " The publisher is best effort: set qos.reliability:=best_effort."
        self._warn_once(
            f"incompatible_qos:{stream.name}",
            f"a publisher on {stream.input_topic} offers QoS incompatible with this "
            f"subscription (policy {policy}); no frames will arrive from it.{hint}",
        )

    def _health(self, stream: CameraStream, now: float) -> diagnostics.InputHealth:
        """A snapshot of one camera's health (for /diagnostics and the no-input warning)."""
        recent = stream.stats.recent(now, diagnostics.DIAGNOSTICS_WINDOW_S)
        waited = None
        if self._active_since is not None:
            last = recent.last_received
            waited = now - max(self._active_since, last if last is not None else -1.0)
        estimator = self._estimator
        detector = getattr(estimator, "detector", None)
        detector_name = self._values["detector.backend"]
        if detector is not None:
            detector_name = type(detector).__name__
        return diagnostics.InputHealth(
            node_name=self.get_name(),
            input_topic=stream.input_topic,
            input_type=self._values["input_type"],
            lifecycle_state=self._lifecycle_state,
            recent=recent,
            totals=stream.stats.totals,
            seconds_without_input=waited,
            no_input_warning_sec=float(self._values["no_input_warning_sec"]),
            publishers=self.count_publishers(stream.input_topic),
            model=str(self._values["model"]),
            device=str(getattr(estimator, "device", self._values["device"])),
            detector=detector_name,
            random_weights=self._random_weights,
            camera=stream.name,
            cameras=len(self._streams),
            network_calls=getattr(estimator, "network_calls", None),
            inference_problem=getattr(estimator, "inference_problem", None),
        )

    def _on_health_timer(self) -> None:
        """1 Hz: publish /diagnostics, and warn (throttled) while no frame arrives."""
        try:
            self._report_health()
        except Exception as error:  # diagnostics must never stop the node
            self._report_bad_frame(
                "diagnostics", f"diagnostics failed: {type(error).__name__}: {error}"
            )

    def _report_health(self) -> None:
        now = time.monotonic()
        healths = [(stream, self._health(stream, now)) for stream in self._streams]
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics_pub.publish(
            diagnostics.diagnostic_array(
                [diagnostics.build_status(h, hardware_id=h.device) for _, h in healths], header
            )
        )
        for stream, health in healths:
            first = stream.no_input_logged_at is None
            message = diagnostics.no_input_message(
                health, seconds=self._values["no_input_warning_sec"] if first else None
            )
            if message is not None:
                if first or now - stream.no_input_logged_at >= NO_INPUT_LOG_PERIOD_S:
                    stream.no_input_logged_at = now
                    self.get_logger().warning(message)
            elif not first and health.seconds_without_input is not None:
                stream.no_input_logged_at = None
                self.get_logger().info(f"frames arriving again on {stream.input_topic}")

    def _log_status(self) -> None:
        now = time.monotonic()
        for stream in self._streams:
            line = format_status(stream.stats.take_window(now), random_weights=self._random_weights)
            if line is not None:
                self.get_logger().info(f"{stream.label}{line}")

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        problems = [
            problem
            for problem in (parameter_problem(p.name, p.value) for p in parameters)
            if problem is not None
        ]
        if not problems:
            # Values that pass alone but not together (depth.min_m >= depth.max_m).
            # (During declaration neither _values nor _pending exists yet.)
            current = {**DEFAULTS, **getattr(self, "_values", {}), **getattr(self, "_pending", {})}
            combined = settings_problem({**current, **{p.name: p.value for p in parameters}})
            if combined is not None:
                problems.append(combined)
        if problems:
            reason = "; ".join(problems)
            if self._declared:
                self.get_logger().warning(f"parameter change refused: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        if self._declared:
            changed = {p.name: p.value for p in parameters if p.name in RUNTIME_PARAMETERS}
            if changed:
                # This is the node's only on-set callback, so success is final: queue the whole
                # request, to be applied between two frames (or now, when no worker runs).
                with self._settings_lock:
                    self._pending.update(changed)
                if self._worker is None:
                    self._apply_pending()
        return SetParametersResult(successful=True)

    # --- runtime settings: applied between frames ---

    def _apply_pending(self) -> None:
        """Apply the queued parameter changes, all together. Called by the worker between frames,
        or by the executor thread while no worker runs: never while a frame is in the estimator."""
        with self._settings_lock:
            changed, self._pending = self._pending, {}
            if changed:
                self._apply(changed)

    def _apply(self, changed: dict[str, Any]) -> None:
        self._values = {**self._values, **changed}
        settings = RuntimeSettings.from_values(self._values)
        estimator = self._estimator
        if estimator is not None:
            estimator.keypoint_score_threshold = settings.keypoint_score_threshold
            estimator.max_persons = settings.max_persons
            detector = getattr(estimator, "detector", None)
            if detector is not None and hasattr(detector, "detection_filter"):
                detector.detection_filter = dataclasses.replace(
                    detector.detection_filter,
                    score_threshold=settings.detector_score_threshold,
                    max_persons=settings.max_persons,
                )
        self._configure_tracking(settings)
        self._settings = settings
        described = ", ".join(f"{name}={value!r}" for name, value in sorted(changed.items()))
        self.get_logger().info(f"parameters updated: {described}")

    # --- worker thread ---

    def _work(self, mailbox: LatestFramesMailbox[int, _Frame]) -> None:
        while True:
            items = mailbox.take_all(timeout=0.5, gather_sec=self._settings.batch_wait_sec)
            if mailbox.closed:
                return
            self._apply_pending()  # between cycles: nothing is inside the estimator now
            if not items:
                continue
            try:
                self._process_cycle(
                    [(self._streams[index], *items[index]) for index in sorted(items)]
                )
            except Exception as error:  # a failing cycle must never stop the worker
                if mailbox.closed or not rclpy.ok(context=self.context):
                    return  # shutting down: publishers are gone
                self._frames_failed([self._streams[index] for index in items], error)

    def _process_cycle(self, frames: list[tuple[CameraStream, Any, float, Image | None]]) -> None:
        """The newest frame of each camera that has one, in order: per frame convert -> boxes
        (detector, or the tracks' boxes); then keypoints for the boxes of all frames in one
        network batch; then per frame depth, tracking, and its outputs (each with its image's
        header). A frame that fails in its own steps costs only that frame."""
        from pose_ros.types import FrameBoxes

        settings = self._settings
        prepared: list[_PreparedFrame] = []
        for stream, msg, received_at, depth_msg in frames:
            try:
                frame = self._prepare(stream, msg, received_at, depth_msg, settings)
            except Exception as error:
                self._frames_failed([stream], error)
                continue
            if frame is not None:
                prepared.append(frame)
        if not prepared:
            return
        started = time.perf_counter()
        try:
            results = self._estimator.estimate_batch(
                [
                    FrameBoxes(f.image.pixels, f.boxes, f.box_scores, f.image.color_order)
                    for f in prepared
                ]
            )
        except Exception as error:  # the batch failed: every frame in it did
            self._frames_failed([frame.stream for frame in prepared], error)
            return
        batch_ms = (time.perf_counter() - started) * 1e3
        for frame, persons in zip(prepared, results, strict=True):
            try:
                self._finish(frame, persons, batch_ms, settings)
            except Exception as error:
                self._frames_failed([frame.stream], error)

    def _frames_failed(self, streams: list[CameraStream], error: Exception) -> None:
        """Frames on which processing raised: counted per camera, reported (rate-limited) with
        the camera's name when it was one camera's frame."""
        for stream in streams:
            stream.stats.frame_failed()
        label = streams[0].label if len(streams) == 1 else ""
        self._report_bad_frame(
            "inference", f"{label}processing a frame failed: {type(error).__name__}: {error}"
        )

    def _prepare(
        self,
        stream: CameraStream,
        msg: Image | CompressedImage,
        received_at: float,
        depth_msg: Image | None,
        settings: RuntimeSettings,
    ) -> _PreparedFrame | None:
        """Convert one frame and find its boxes; None for a bad frame (counted and reported)."""
        topic = stream.input_topic
        try:
            image = self._convert(msg, max_pixels=settings.max_image_pixels)
        except conversions.ImageConversionError as error:
            stream.stats.frame_bad()
            self._report_bad_frame(error.kind, f"bad frame on {topic}: {error}")
            return None
        if min(image.width, image.height) < self._min_image_side:
            # Bad input, not a failure of the pipeline: refused here, reported once as such.
            stream.stats.frame_bad()
            side = self._min_image_side
            self._report_bad_frame(
                "too_small",
                f"bad frame on {topic}: {image.width}x{image.height} is smaller than the "
                f"{side}x{side} pixels the pose network needs",
            )
            return None
        if not msg.header.frame_id:
            self._warn_once(
                f"empty_frame_id:{stream.name}",
                f"input images on {topic} have an empty header.frame_id: poses keep it, but RViz "
                "cannot place the markers (set the camera driver's frame_id)",
            )
        started = time.perf_counter()
        tracker = stream.tracker
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        plan = tracker.begin_frame(stamp, (image.height, image.width))
        if plan.reset_reason is not None:
            self.get_logger().warning(f"{stream.label}tracking: {plan.reset_reason}")
        if plan.detect:
            boxes, box_scores = tracker.select_detections(
                plan, *self._estimator.detect(image.pixels, color_order=image.color_order)
            )
        else:  # detector.interval > 1: the tracks' boxes carried over, only the pose network runs
            boxes, box_scores = plan.boxes, plan.box_scores
        detect_ms = (time.perf_counter() - started) * 1e3
        return _PreparedFrame(
            stream, msg, received_at, depth_msg, image, boxes, box_scores, detect_ms
        )

    def _finish(
        self,
        frame: _PreparedFrame,
        persons: list[Any],
        batch_ms: float,
        settings: RuntimeSettings,
    ) -> None:
        """Depth, tracking and the outputs of one frame (each with the image's header)."""
        stream, msg, image = frame.stream, frame.msg, frame.image
        started = time.perf_counter()
        if frame.depth_msg is not None:
            persons = self._attach_depth(stream, persons, frame.depth_msg, image, settings)
        persons = stream.tracker.end_frame(persons)
        # The frame's own steps and the batch it shared (with several cameras, the batch served
        # all of them).
        pipeline_ms = frame.detect_ms + batch_ms + (time.perf_counter() - started) * 1e3
        stream.poses_pub.publish(
            messages.persons_to_msg(persons, msg.header, image.width, image.height)
        )
        latency_ms = (time.monotonic() - frame.received_at) * 1e3

        # Visual outputs only for someone watching: they cost more than the message itself.
        if stream.markers_pub.get_subscription_count() > 0:
            stream.markers_pub.publish(
                markers.build_marker_array(
                    persons, msg.header, image.width, image.height, settings.markers, stream.camera
                )
            )
        if settings.debug_image_enabled and stream.image_pub.get_subscription_count() > 0:
            self._publish_debug_image(stream, msg, image, persons, settings)
        stream.stats.frame_processed(latency_ms, pipeline_ms, len(persons))

    def _attach_depth(
        self,
        stream: CameraStream,
        persons: list[Any],
        depth_msg: Image,
        image: conversions.ConvertedImage,
        settings: RuntimeSettings,
    ) -> list[Any]:
        """The persons with 3D positions from the frame's depth image; unchanged (no positions)
        when that cannot be done, with the reason logged (rate-limited)."""
        camera = stream.camera
        if camera is None:
            self._warn_once(
                f"depth_without_camera_info:{stream.name}",
                f"depth images arrive on {stream.depth_topic} but no camera_info with a usable K "
                "has been received: keypoints get no 3D position until one arrives",
            )
            return persons
        try:
            depth_m = conversions.depth_msg_to_array(
                depth_msg, max_pixels=settings.max_image_pixels
            )
            return attach_positions(
                persons, depth_m, camera, settings.depth, image_size=(image.height, image.width)
            )
        except (conversions.ImageConversionError, DepthError) as error:
            self._report_bad_frame(
                f"depth_{error.kind}",
                f"bad depth frame on {stream.depth_topic}: {error}; frame processed without "
                "positions",
            )
            return persons

    def _publish_debug_image(
        self,
        stream: CameraStream,
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
        stream.image_pub.publish(
            conversions.array_to_image_msg(canvas, encoding, header=msg.header)
        )
        stream.stats.image_annotated()

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
        if self._mailbox is not None:
            self._mailbox.close()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(WORKER_JOIN_TIMEOUT_S)
        t = total_counts(self._streams)
        summary = (
            f"stopped: {t.received} frames received, {t.processed} processed, {t.dropped} dropped, "
            f"{t.bad} bad, {t.failed} failed"
        )
        if len(self._streams) > 1:
            calls = getattr(self._estimator, "network_calls", None)
            if calls is not None:
                summary += f" ({len(self._streams)} cameras, {calls} pose-network batches)"
        return summary


@dataclasses.dataclass
class _PreparedFrame:
    """One camera's frame between its own steps and the shared network batch."""

    stream: CameraStream
    msg: Any
    received_at: float
    depth_msg: Image | None
    image: conversions.ConvertedImage
    boxes: Any  # (N, 4) x, y, w, h
    box_scores: Any  # (N,)
    detect_ms: float


def _install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``; the main loop then ends the node while its context is still
    valid. rclpy's own handler would shut the context down at once, so the worker's last frame and
    the closing log lines would fail ("Failed to publish log message to rosout: publisher's context
    is invalid"), and the second SIGINT that `ros2 launch` sends after the terminal's Ctrl-C would
    interrupt the shutdown with a traceback. A repeated signal only repeats the request."""

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``pose_node`` executable; returns the exit code."""
    stop = threading.Event()
    if SignalHandlerOptions is None:  # an rclpy without signal options: its handler stays
        rclpy.init(args=args)
    else:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        _install_stop_handlers(stop)
    node: PoseNode | None = None
    code = 0
    try:
        node = PoseNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        # Short waits: a signal handler runs between them (at most STOP_POLL_S after Ctrl-C).
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_POLL_S)
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
        if SignalHandlerOptions is not None:
            # The node is done: a Ctrl-C still on its way (launch repeats the terminal's) must
            # not kill the exiting interpreter, which puts Python handlers back to the default.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code
