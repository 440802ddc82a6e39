"""The node's health: ``/diagnostics`` at 1 Hz (one status per camera, in every lifecycle state), a
warning while no frame arrives (decided by arrival time, never by stamps), and the status line per
camera every ``log_period_sec``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import Header

from pose_ros.ros import diagnostics
from pose_ros.ros.camera_stream import CameraStream
from pose_ros.ros.reporting import Reporter
from pose_ros.ros.startup import DIAGNOSTICS_QOS
from pose_ros.ros.stats import format_status, network_precision

#: While no frame arrives, the warning is repeated at most this often (/diagnostics says it at
#: 1 Hz; the log is for people reading it, so it repeats slowly).
NO_INPUT_LOG_PERIOD_S: Final[float] = 30.0


class NodeHealth:
    """Publishes the node's diagnostics and logs its status.

    Args:
        node: the node (publisher, timer, clock, graph queries).
        streams: its cameras.
        values: its parameter values (read at every report: model, device, thresholds).
        reporter: the node's log lines.
        state: returns (lifecycle state, active since (monotonic) or None, estimator or None,
            stream core or None).
    """

    def __init__(
        self,
        node: Any,
        streams: list[CameraStream],
        values: Callable[[], dict[str, Any]],
        reporter: Reporter,
        state: Callable[[], tuple[str, float | None, Any, Any]],
    ) -> None:
        self._node = node
        self._streams = streams
        self._values = values
        self._reporter = reporter
        self._state = state
        self._publisher = node.create_publisher(
            DiagnosticArray, diagnostics.DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS
        )
        self._timer = node.create_timer(diagnostics.DIAGNOSTICS_PERIOD_S, self._on_timer)

    def snapshot(self, stream: CameraStream, now: float) -> diagnostics.InputHealth:
        """A snapshot of one camera's health (for /diagnostics and the no-input warning)."""
        values = self._values()
        lifecycle_state, active_since, estimator, core = self._state()
        recent = stream.stats.recent(now, diagnostics.DIAGNOSTICS_WINDOW_S)
        waited = None
        if active_since is not None:
            last = recent.last_received
            waited = now - max(active_since, last if last is not None else -1.0)
        detector = getattr(estimator, "detector", None)
        camera_state = None if core is None else core.cameras.get(stream.name)
        return diagnostics.InputHealth(
            node_name=self._node.get_name(),
            input_topic=stream.input_topic,
            input_type=values["input_type"],
            lifecycle_state=lifecycle_state,
            recent=recent,
            totals=stream.stats.totals,
            seconds_without_input=waited,
            no_input_warning_sec=float(values["no_input_warning_sec"]),
            publishers=self._node.count_publishers(stream.input_topic),
            model=str(values["model"]),
            precision=network_precision(estimator),
            device=str(getattr(estimator, "device", values["device"])),
            detector=values["detector.backend"] if detector is None else type(detector).__name__,
            random_weights=bool(getattr(estimator, "uses_random_weights", False)),
            camera=stream.name,
            cameras=len(self._streams),
            network_calls=getattr(estimator, "network_calls", None),
            zero_stamps=0 if camera_state is None else camera_state.zero_stamps,
            repeated_stamps=0 if camera_state is None else camera_state.repeated_stamps,
            inference_problem=getattr(estimator, "inference_problem", None),
        )

    def _on_timer(self) -> None:
        """1 Hz: publish /diagnostics, and warn (throttled) while no frame arrives."""
        try:
            self.report()
        except Exception as error:  # diagnostics must never stop the node
            self._reporter.problem(
                "diagnostics", f"diagnostics failed: {type(error).__name__}: {error}"
            )

    def report(self) -> None:
        now = time.monotonic()
        healths = [(stream, self.snapshot(stream, now)) for stream in self._streams]
        header = Header(stamp=self._node.get_clock().now().to_msg())
        self._publisher.publish(
            diagnostics.diagnostic_array(
                [diagnostics.build_status(h, hardware_id=h.device) for _, h in healths], header
            )
        )
        seconds = self._values()["no_input_warning_sec"]
        for stream, health in healths:
            first = stream.no_input_logged_at is None
            message = diagnostics.no_input_message(health, seconds=seconds if first else None)
            if message is not None:
                if first or now - stream.no_input_logged_at >= NO_INPUT_LOG_PERIOD_S:
                    stream.no_input_logged_at = now
                    self._reporter.logger.warning(message)
            elif not first and health.seconds_without_input is not None:
                stream.no_input_logged_at = None
                self._reporter.logger.info(f"frames arriving again on {stream.input_topic}")

    def log_status(self) -> None:
        """One status line per camera that did something since the last one."""
        now = time.monotonic()
        _, _, estimator, _ = self._state()
        random_weights = bool(getattr(estimator, "uses_random_weights", False))
        precision = network_precision(estimator)
        for stream in self._streams:
            line = format_status(
                stream.stats.take_window(now), random_weights=random_weights, precision=precision
            )
            if line is not None:
                self._reporter.logger.info(f"{stream.label}{line}")
