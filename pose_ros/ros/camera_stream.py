"""The ROS side of one camera inside ``pose_node``: its topics, publishers, subscriptions,
calibration and counters (its temporal state lives in the stream core, pose_ros.stream).

A node serves one camera (``cameras`` unset: the topics ``image``, ``camera_info``, ``depth``,
``poses``... as before) or several (``cameras:=[front, left, right]``: ``front/image``,
``front/poses``... relative to the node's namespace). Everything that belongs to one camera lives
in a :class:`CameraStream`; the node owns the model, the worker and the parameters, shared by all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pose_ros.ros.stats import NodeStats, Totals

if TYPE_CHECKING:  # kept light: the launch file reads camera_names from here
    from pose_ros.camera import PinholeCamera

#: A camera name: ROS name tokens joined by '/' (a relative namespace, e.g. "front", "arm/left").
CAMERA_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
#: More cameras than this per node is a configuration error rather than a robot.
MAX_CAMERAS = 16


def camera_names(value: Any) -> list[str]:
    """The camera names of a ``cameras`` value: a list (``cameras:=[front, left]``), or a string
    ``"front, left"`` / ``"[front, left]"`` (launch arguments, params files); "" is none.

    Raises:
        ValueError: neither a string nor a list of strings.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        return [name.strip().strip("'\"") for name in text.split(",") if name.strip()]
    if isinstance(value, list | tuple) and all(isinstance(name, str) for name in value):
        return [name.strip() for name in value]
    raise ValueError(f"cameras must be a list of names, e.g. cameras:=[front, left], got {value!r}")


def camera_names_problem(value: Any) -> str | None:
    """What is wrong with a ``cameras`` value (a sentence), or None. Empty: one unnamed camera."""
    try:
        names = camera_names(value)
    except ValueError as error:
        return str(error)
    bad = [name for name in names if not CAMERA_NAME_PATTERN.match(name)]
    if bad:
        return (
            f"cameras: {', '.join(repr(name) for name in bad)} "
            f"{'is not a valid name' if len(bad) == 1 else 'are not valid names'} (relative ROS "
            "names: letters, digits, '_', '/' between parts, e.g. cameras:=[front, left])"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"cameras: {', '.join(repeated)} named more than once"
    if len(names) > MAX_CAMERAS:
        return f"cameras: at most {MAX_CAMERAS} cameras per node, got {len(names)}"
    return None


@dataclass(eq=False)
class CameraStream:
    """One camera of the node. ``name`` is "" for the single unnamed camera."""

    index: int
    name: str
    stats: NodeStats
    #: resolved names, for logs and /diagnostics (updated once subscribed)
    input_topic: str = ""
    depth_topic: str = ""
    # What configure builds.
    poses_pub: Any = None
    markers_pub: Any = None
    image_pub: Any = None
    # What activate builds.
    image_sub: Any = None
    depth_sub: Any = None
    camera_info_sub: Any = None
    #: colour frames paired with depth images (pose_ros.depth_pairing.DepthPairing), use_depth
    depth_pairing: Any = None
    # Latest usable calibration from camera_info (None: none yet, or refused).
    camera: PinholeCamera | None = None
    frames_without_depth: int = 0
    #: monotonic time of the last "no frame" warning (None: none since frames last arrived)
    no_input_logged_at: float | None = None

    def topic(self, relative: str) -> str:
        """The relative topic name of this camera: ``image`` or ``front/image``."""
        return f"{self.name}/{relative}" if self.name else relative

    @property
    def label(self) -> str:
        """Prefix of this camera's log lines ("" for the single unnamed camera)."""
        return f"[{self.name}] " if self.name else ""


def total_counts(streams: list[CameraStream]) -> Totals:
    """The counts of all cameras together."""
    totals = [stream.stats.totals for stream in streams]
    return Totals(
        received=sum(t.received for t in totals),
        processed=sum(t.processed for t in totals),
        dropped=sum(t.dropped for t in totals),
        bad=sum(t.bad for t in totals),
        failed=sum(t.failed for t in totals),
    )
