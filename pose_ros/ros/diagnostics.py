"""The node's health as ``diagnostic_msgs/DiagnosticStatus``, in the conventions of
``diagnostic_updater``: one status per input (per camera) named ``"<node name>: <input topic>"``,
the compute device as ``hardware_id``, a level (OK / WARN / ERROR), a one-line message, and
key/value pairs.

The judgement (:func:`assess`) is separate from ROS messages so that the node's throttled log line
and /diagnostics say the same thing: the node logs :func:`no_input_message` and publishes
:func:`build_status`, both from one :class:`InputHealth`.

Levels, worst first (the message joins every condition that holds):

* ERROR: the pose model has random weights (its keypoints are meaningless); the pose network
  does not answer (``engine: triton``: "inference server unreachable: <url>", until a request is
  answered again); every frame of the recent window failed (bad frames or inference errors, none
  answered).
* WARN: no frame for ``no_input_warning_sec`` while active, before the first frame (no publisher,
  or publishers whose frames do not arrive) or after frames stopped (the camera went away).
* OK: processing, or not active (lifecycle state unconfigured / inactive / finalized: nothing is
  expected of the node then, and the message names the state).
"""

from __future__ import annotations

from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from pose_ros.ros.stats import Recent, Totals

#: Period of /diagnostics (diagnostic_updater's default).
DIAGNOSTICS_PERIOD_S = 1.0
#: Sliding window of the rates, latencies and the "every recent frame failed" check.
DIAGNOSTICS_WINDOW_S = 5.0
#: The /diagnostics topic is absolute: aggregators and rqt_robot_monitor listen there.
DIAGNOSTICS_TOPIC = "/diagnostics"


def level_value(level: int | bytes) -> int:
    """A level as an int (the message holds it as one byte)."""
    return level[0] if isinstance(level, bytes | bytearray) else int(level)


OK = level_value(DiagnosticStatus.OK)
WARN = level_value(DiagnosticStatus.WARN)
ERROR = level_value(DiagnosticStatus.ERROR)
_LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR"}


def level_name(level: int | bytes) -> str:
    """The name of a level ("OK", "WARN", "ERROR")."""
    value = level_value(level)
    return _LEVEL_NAMES.get(value, str(value))


@dataclass(frozen=True)
class InputHealth:
    """Everything the status of one input is judged from (a snapshot taken by the node)."""

    node_name: str
    input_topic: str
    input_type: str  # "raw" or "compressed"
    lifecycle_state: str  # "unconfigured", "inactive", "active", "finalized"
    recent: Recent
    totals: Totals
    #: seconds since the last frame, or since activation when none arrived since (None: inactive)
    seconds_without_input: float | None
    no_input_warning_sec: float
    publishers: int
    model: str
    device: str
    detector: str
    random_weights: bool
    #: the camera's name ("" for a node with one unnamed camera) and the node's camera count
    camera: str = ""
    cameras: int = 1
    #: pose-network calls of the node since configure, all cameras together (None: no model)
    network_calls: int | None = None
    #: what the pose network computes in: fp32, fp16 or int8 (stats.network_precision)
    precision: str = "n/a"
    #: frames whose header stamp was 0 / repeated the previous one: their arrival time stood in
    zero_stamps: int = 0
    repeated_stamps: int = 0
    #: why the pose network does not answer at present (the estimator's ``inference_problem``,
    #: e.g. "inference server unreachable: grpc://gpu-server:8001"), None while it answers
    inference_problem: str | None = None


def no_input_message(health: InputHealth, seconds: float | None = None) -> str | None:
    """Why no frame arrives (a sentence for the log and /diagnostics), or None when frames do
    arrive or the node is not active. ``seconds``: the duration to name (default: measured)."""
    waited = health.seconds_without_input
    if health.lifecycle_state != "active" or waited is None:
        return None
    if waited < health.no_input_warning_sec:
        return None
    after = f"{waited if seconds is None else seconds:.0f} s"
    topic = health.input_topic
    if health.recent.last_received is not None:
        return (
            f"no frame on {topic} for {after} after {health.totals.received} received: has the "
            "camera stopped? (poses resume with the next frame)"
        )
    if health.publishers == 0:
        return (
            f"no publisher on {topic} after {after}: is the camera running, and is the topic "
            "remapped to it (e.g. image:=/camera/image_raw)?"
        )
    return (
        f"{health.publishers} publisher(s) on {topic} but no frame received after {after}: "
        f"check QoS compatibility and the message type (input_type={health.input_type})"
    )


def assess(health: InputHealth) -> tuple[int, str]:
    """(level, message) of one input: the worst condition decides the level, and the message
    names every condition that holds."""
    conditions: list[tuple[int, str]] = []
    if health.random_weights:
        conditions.append((ERROR, "RANDOM WEIGHTS: the keypoints are meaningless"))
    recent = health.recent
    if health.lifecycle_state == "active" and health.inference_problem:
        conditions.append((ERROR, health.inference_problem))
    if health.lifecycle_state == "active" and recent.all_failed:
        conditions.append(
            (
                ERROR,
                f"every frame of the last {recent.seconds:.0f} s failed ({recent.bad} bad, "
                f"{recent.failed} failed in inference, none answered)",
            )
        )
    missing = no_input_message(health)
    if missing is not None:
        conditions.append((WARN, missing))
    if health.lifecycle_state != "active":
        conditions.append((OK, f"not processing: lifecycle state {health.lifecycle_state}"))
    elif not conditions or all(level != WARN for level, _ in conditions):
        if recent.processed:
            conditions.append((OK, f"processing at {recent.processed_hz:.1f} Hz"))
        elif not recent.all_failed:
            conditions.append((OK, "waiting for frames"))
    level = max(level for level, _ in conditions)
    conditions.sort(key=lambda condition: -condition[0])
    return level, "; ".join(message for _, message in conditions)


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def build_status(health: InputHealth, hardware_id: str) -> DiagnosticStatus:
    """The DiagnosticStatus of one input (name ``"<node name>: <input topic>"``)."""
    level, message = assess(health)
    recent, totals = health.recent, health.totals
    values = {
        "lifecycle state": health.lifecycle_state,
        "input topic": health.input_topic,
        "input rate (Hz)": _number(recent.input_hz),
        "processed rate (Hz)": _number(recent.processed_hz),
        "latency p50 (ms)": _number(recent.latency_percentile(50)),
        "latency p90 (ms)": _number(recent.latency_percentile(90)),
        "window (s)": _number(recent.seconds),
        "dropped (window)": str(recent.dropped),
        "bad frames (window)": str(recent.bad),
        "failed (window)": str(recent.failed),
        "frames received": str(totals.received),
        "frames processed": str(totals.processed),
        "dropped": str(totals.dropped),
        "bad frames": str(totals.bad),
        "failed": str(totals.failed),
        "seconds without input": _number(health.seconds_without_input),
        "publishers": str(health.publishers),
        "model": health.model,
        "precision": health.precision,
        "device": health.device,
        "detector": health.detector,
        "random weights": str(health.random_weights).lower(),
        "cameras in node": str(health.cameras),
        # Node-wide: with several cameras, one call per cycle serves all of them.
        "pose network calls (node)": "n/a"
        if health.network_calls is None
        else str(health.network_calls),
        # Answered with the arrival time standing in for the stamp (never dropped).
        "frames with stamp 0": str(health.zero_stamps),
        "frames with a repeated stamp": str(health.repeated_stamps),
        "inference problem": health.inference_problem or "none",
    }
    if health.camera:
        values = {"camera": health.camera, **values}
    return DiagnosticStatus(
        level=bytes([level]),
        name=f"{health.node_name}: {health.input_topic}",
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in values.items()],
    )


def diagnostic_array(statuses: list[DiagnosticStatus], header: Header) -> DiagnosticArray:
    """The message published on /diagnostics (``header.stamp``: now, on the node's clock)."""
    return DiagnosticArray(header=header, status=statuses)
