"""``pose_node``: camera images in, ``pose_ros/PersonPoseArray`` and RViz markers out.

Topics (relative names: remap or namespace them; with ``cameras:=[front, left]`` each camera has
all of them under its own name: ``front/image``, ``front/poses``...):

* subscribes ``image`` (sensor_msgs/Image), or ``image/compressed`` with ``input_type:=compressed``;
  ``camera_info`` for marker placement and 3D positions; with ``use_depth:=true`` also ``depth``
  (registered to the colour image), paired with each colour frame by stamp.
* publishes ``poses`` (one per processed frame, also when nobody is found), ``poses/markers`` and
  ``poses/image`` (while subscribed) and ``/diagnostics`` (1 Hz).

The node is ROS wiring only, one concern per module: parameters (:mod:`.params`), the pipeline and
QoS (:mod:`.startup`), subscriptions and depth pairing (:mod:`.inputs`), the worker thread and its
cycle (:mod:`.worker`), publishing (:mod:`.outputs`), health (:mod:`.health`). Everything that
happens to frames over time (tracks, smoothing, detector interval, depth, stamp and size rules)
is the ROS-free stream core, :class:`pose_ros.stream.StreamCore`, which ``pose-ros-infer`` and the
recordings path run too.

Lifecycle (a managed node, rclpy.lifecycle): ``configure`` loads the model and the detector and
creates the publishers; ``activate`` subscribes and starts the worker; ``deactivate`` unsubscribes
and stops the worker, keeping the model; ``cleanup`` frees the model and device memory;
``shutdown`` works from any state. With ``managed:=false`` (the default) the node configures and
activates itself at start. Track ids are never reused within the process, across cleanup and
configure too. Runtime parameter changes are queued by the executor thread and applied by the
worker between cycles (or at once while no worker runs): the estimator never changes while a
frame is inside it.
"""

from __future__ import annotations

import gc
import re
import threading
import time
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from pose_ros.ros import conversions, outputs
from pose_ros.ros.camera_stream import CameraStream, camera_names, total_counts
from pose_ros.ros.health import NodeHealth
from pose_ros.ros.inputs import CameraInputs
from pose_ros.ros.mailbox import LatestFramesMailbox
from pose_ros.ros.params import (
    DEFAULTS,
    PARAMETERS,
    RUNTIME_PARAMETERS,
    RuntimeSettings,
    parameter_problem,
    settings_problem,
)
from pose_ros.ros.reporting import Reporter
from pose_ros.ros.startup import StartupError, build_estimator
from pose_ros.ros.stats import NodeStats
from pose_ros.ros.worker import PoseWorker
from pose_ros.stream import StreamCore

__all__ = ["NODE_NAME", "PoseNode", "StartupError", "build_estimator"]

NODE_NAME = "pose_node"
#: How long deactivate / shutdown wait for a frame in progress.
WORKER_JOIN_TIMEOUT_S = 10.0


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
            # Declared without ranges first, so a bad start-up value is refused by
            # _on_set_parameters with one clear sentence; then the full descriptors (ranges for
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
            s.name: self.get_parameter(s.name).value for s in PARAMETERS
        }
        self.settings = RuntimeSettings.from_values(self._values)
        # Accepted runtime changes not yet applied (_apply_pending), and the lock that keeps them
        # and the estimator apart from a running cycle.
        self._pending: dict[str, Any] = {}
        self._settings_lock = threading.Lock()
        self._managed = bool(self._values["managed"])
        if self._values["use_depth"] and not self._values["use_camera_info"]:
            raise StartupError(
                "use_depth:=true needs use_camera_info:=true: keypoint positions are "
                "back-projected through camera_info's calibration"
            )
        self._reporter = Reporter(self.get_logger().name)
        compressed = self._values["input_type"] == "compressed"
        image_topic = "image/compressed" if compressed else "image"
        names = camera_names(self._values["cameras"]) or [""]  # unset: one unnamed camera
        now = time.monotonic()
        self.streams = [CameraStream(i, name, NodeStats(now)) for i, name in enumerate(names)]
        for stream in self.streams:
            stream.input_topic = self._resolve(stream.topic(image_topic))
            stream.depth_topic = self._resolve(stream.topic("depth"))
        self._inputs = CameraInputs(
            self,
            self.streams,
            msg_type=CompressedImage if compressed else Image,
            image_topic=image_topic,
            values=self._values,
            slop_sec=self.settings.stream.depth.slop_sec,
            reporter=self._reporter,
        )
        self._convert = (
            conversions.compressed_msg_to_array if compressed else conversions.image_msg_to_array
        )
        self.core: StreamCore | None = None  # configure builds it (and the estimator)
        self._worker: PoseWorker | None = None
        self._status_timer: Any = None
        self._active_since: float | None = None
        self._lifecycle_state = "unconfigured"
        self._startup_error: BaseException | None = None
        # /diagnostics in every lifecycle state: a supervisor sees an unconfigured node too.
        self._health = NodeHealth(
            self, self.streams, lambda: self._values, self._reporter, self._state
        )
        self._declared = True

        if not self._managed:
            # A plain node: configure and activate now, failing as a start-up error.
            for trigger in (self.trigger_configure, self.trigger_activate):
                if trigger() != TransitionCallbackReturn.SUCCESS:
                    raise self._startup_error or StartupError(
                        f"the node could not start ({trigger.__name__})"
                    )
        else:
            self.get_logger().info(
                "managed node (managed:=true): waiting for lifecycle transitions, e.g. "
                f"`ros2 lifecycle set {self.get_fully_qualified_name()} configure`, then activate"
            )

    @property
    def estimator(self) -> Any:
        """The configured PoseEstimator (None while unconfigured)."""
        return None if self.core is None else self.core.estimator

    def _state(self) -> tuple[str, float | None, Any, StreamCore | None]:
        return self._lifecycle_state, self._active_since, self.estimator, self.core

    def _resolve(self, topic: str) -> str:
        try:
            return self.resolve_topic_name(topic)
        except Exception:  # rclpy without name resolution: the relative name says enough
            return topic

    # --- lifecycle transitions (executor thread) ---

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and the detector, create the publishers and the stream core."""
        self._startup_error = None
        try:
            self._apply_pending()  # no worker runs: changes made while unconfigured count
            estimator = build_estimator(self._values)
        except Exception as error:  # StartupError: a clear message; others: a bug or the device
            self._startup_error = error
            if self._managed:
                reason = str(error) if isinstance(error, StartupError) else repr(error)
                self.get_logger().error(f"configure failed: {reason}")
            return TransitionCallbackReturn.FAILURE
        # Ids come from the process-wide counter: a new core after cleanup never reuses one.
        self.core = StreamCore(estimator, self.settings.stream)
        self.get_logger().info(f"pose pipeline: {estimator.describe()}")
        if estimator.uses_random_weights:
            self.get_logger().warning(
                "RANDOM WEIGHTS (allow_random_weights): the published keypoints are meaningless; "
                "use this only for testing"
            )
        for stream in self.streams:
            outputs.create_publishers(self, stream)
            stream.camera = None
        self._lifecycle_state = "inactive"
        if self._managed:
            self.get_logger().info("configured: model loaded; activate to start processing")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and start the worker."""
        if self._worker is not None and self._worker.running:
            self.get_logger().error(
                "activate refused: the previous inference worker is still finishing a frame"
            )
            return TransitionCallbackReturn.FAILURE
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._apply_pending()  # before the worker exists: nothing is inside the estimator
        mailbox: LatestFramesMailbox = LatestFramesMailbox()
        self._worker = PoseWorker(
            self.streams,
            self.core,
            settings=lambda: self.settings,
            convert=self._convert,
            reporter=self._reporter,
            between_cycles=self._apply_pending,
        )
        self._worker.start(mailbox)
        self._inputs.open(mailbox)
        values = self._values
        self._status_timer = self.create_timer(values["log_period_sec"], self._health.log_status)
        self._active_since = time.monotonic()
        self._lifecycle_state = "active"
        paired = ""
        if values["use_depth"]:
            depth_topics = ", ".join(stream.depth_topic for stream in self.streams)
            paired = f", paired with depth images on {depth_topics}"
        batched = ""
        if len(self.streams) > 1:
            batched = f"; {len(self.streams)} cameras, their crops in one pose-network batch"
        self.get_logger().info(
            f"listening on {', '.join(stream.input_topic for stream in self.streams)} "
            f"({values['input_type']}, {values['qos.reliability']}, depth {values['qos.depth']})"
            f"{paired}; publishing "
            f"{', '.join(stream.poses_pub.topic_name for stream in self.streams)}{batched}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker (after the frame in progress); the model stays."""
        self._stop_processing()
        self._lifecycle_state = "inactive"
        topics = ", ".join(stream.input_topic for stream in self.streams)
        self.get_logger().info(f"deactivated: no longer listening on {topics} (the model stays)")
        return super().on_deactivate(state)  # disables the lifecycle publishers

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model, the detector and their device memory; destroy the publishers."""
        if self._worker is not None and self._worker.running:
            self.get_logger().error("cleanup refused: the inference worker is still running")
            return TransitionCallbackReturn.FAILURE
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
        """Undo activate: no callbacks, no worker (waits for the frame in progress). A worker
        that does not stop in time is kept: nothing else starts while it runs."""
        self._inputs.close()
        if self._status_timer is not None:
            self.destroy_timer(self._status_timer)
            self._status_timer = None
        if self._worker is not None and not self._worker.stop(WORKER_JOIN_TIMEOUT_S):
            self.get_logger().error(
                f"the inference worker did not stop within {WORKER_JOIN_TIMEOUT_S:g} s (a frame "
                "is still inside the estimator); activate and cleanup wait until it has"
            )
        self._active_since = None

    def _unload(self) -> None:
        """Undo configure: publishers and the model with its device memory (not while a worker
        still runs inside it: then it stays until that worker ends)."""
        for stream in self.streams:
            outputs.destroy_publishers(self, stream)
            stream.camera = None
        if self._worker is not None and self._worker.running:
            return
        device = getattr(self.estimator, "device", None)
        self.core = self._worker = None
        gc.collect()  # the model's tensors go now, not at some later collection
        if device is not None and getattr(device, "type", "") == "cuda":
            import torch

            torch.cuda.empty_cache()  # hand the cached blocks back to the driver

    # --- parameters: checked on the executor thread, applied between cycles ---

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
                # request, applied between two cycles (or now, when no worker runs).
                with self._settings_lock:
                    self._pending.update(changed)
                if self._worker is None or not self._worker.running:
                    self._apply_pending()
        return SetParametersResult(successful=True)

    def _apply_pending(self) -> None:
        """Apply the queued parameter changes, all together. Called by the worker between
        cycles, or by the executor thread while no worker runs: never while a frame is in the
        estimator."""
        with self._settings_lock:
            changed, self._pending = self._pending, {}
            if not changed:
                return
            self._values.update(changed)
            self.settings = RuntimeSettings.from_values(self._values)
            if self.core is not None:
                self.core.configure(self.settings.stream)
        described = ", ".join(f"{name}={value!r}" for name, value in sorted(changed.items()))
        self.get_logger().info(f"parameters updated: {described}")

    def close(self) -> str:
        """Stop the worker (waiting for a frame in progress); returns the closing summary line.

        Call ``destroy_node()`` before logging it: after Ctrl-C the context is already shut down,
        and a destroyed node no longer tries to forward its log lines to /rosout.
        """
        if self._worker is not None:
            self._worker.stop(WORKER_JOIN_TIMEOUT_S)
        t = total_counts(self.streams)
        summary = (
            f"stopped: {t.received} frames received, {t.processed} processed, {t.dropped} dropped, "
            f"{t.bad} bad, {t.failed} failed"
        )
        calls = getattr(self.estimator, "network_calls", None)
        if len(self.streams) > 1 and calls is not None:
            summary += f" ({len(self.streams)} cameras, {calls} pose-network batches)"
        return summary
