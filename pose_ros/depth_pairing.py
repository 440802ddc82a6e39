"""Colour frames paired with their registered depth images, without ROS: the node feeds it from its
subscriptions (clock: ``time.monotonic()``), a recording from its messages in log-time order (clock:
the log time), so both pair the same frames the same way.

Each colour frame comes out exactly once, in arrival order, with its depth image or without one and
the reason. A colour frame pairs with the nearest depth image not paired yet whose time is within
``slop_sec`` of its own; it never waits long for a partner that is not coming. It goes on without
depth when

* a depth image arrives whose time is beyond the frame's time + slop (depth images arrive in time
  order, so no partner can follow: the streams are not synchronised), or
* no partner has arrived ``wait_sec`` after the frame (a depth image lost, or a depth stream far
  behind), or
* the depth stream is silent (no depth image for ``silent_sec``): the frame goes on at once, so a
  missing depth stream costs no latency.

The time of a message is its header stamp; where a stamp is 0 (unset by a hand-written publisher
or driver), the arrival times of the colour frame and of the depth image are compared instead.
Frames with repeated stamps are each paired, each with a depth image of its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

#: How long (seconds of the caller's clock) a colour frame waits for its depth partner at most.
#: Large uncompressed images can take a few hundred milliseconds through DDS on a busy machine.
DEPTH_WAIT_SEC: Final[float] = 1.0
#: Without any depth image for this long (seconds), colour frames do not wait at all.
DEPTH_SILENT_SEC: Final[float] = 3.0
#: Depth images kept while looking for partners (the newest; older ones cannot pair any more).
DEPTH_QUEUE_SIZE: Final[int] = 8

C = TypeVar("C")
D = TypeVar("D")


@dataclass(frozen=True)
class Paired(Generic[C, D]):
    """One colour frame as it leaves the pairing.

    Attributes:
        colour: the colour item as it was given.
        depth: its depth item, or None.
        why: why there is no depth (a sentence for the log), None when paired.
        arrival: the colour frame's arrival time (the caller's clock).
    """

    colour: C
    depth: D | None
    why: str | None
    arrival: float


@dataclass
class _Entry(Generic[C]):
    item: C
    stamp: float  # header stamp, 0 when unset
    arrival: float
    paired: bool = False  # a depth image pairs with one colour frame only


def _gap(a: _Entry, b: _Entry) -> float:
    """b's time minus a's: stamps, or arrival times where either stamp is unset."""
    if a.stamp > 0 and b.stamp > 0:
        return b.stamp - a.stamp
    return b.arrival - a.arrival


class DepthPairing(Generic[C, D]):
    """Pairs colour frames with depth images of one camera (not thread-safe: one caller, or the
    caller's lock).

    Args:
        slop_sec: the largest time difference of a pair (``depth.slop_sec``).
        wait_sec: longest wait of a colour frame for its partner.
        silent_sec: without a depth image for this long, colour frames do not wait.
        depth_topic: named in the reasons.
        start: the caller's clock at construction (the depth stream counts as silent
            ``silent_sec`` after it when no depth image arrives).
    """

    def __init__(
        self,
        slop_sec: float,
        *,
        wait_sec: float = DEPTH_WAIT_SEC,
        silent_sec: float = DEPTH_SILENT_SEC,
        depth_topic: str = "depth",
        start: float = 0.0,
    ) -> None:
        if not slop_sec > 0:
            raise ValueError(f"slop_sec must be positive, got {slop_sec}")
        self.slop_sec = float(slop_sec)
        self.wait_sec = float(wait_sec)
        self.silent_sec = float(silent_sec)
        self.depth_topic = depth_topic
        self._pending: deque[_Entry[C]] = deque()
        self._depths: deque[_Entry[D]] = deque(maxlen=DEPTH_QUEUE_SIZE)
        self._latest_depth: _Entry[D] | None = None
        self._depth_arrived = start
        #: Colour frames delivered with a depth image / without one.
        self.pairs = 0
        self.unpaired = 0

    def add_colour(self, colour: C, stamp_sec: float, now: float) -> list[Paired[C, D]]:
        """A colour frame arrived at ``now``; returns the frames that leave (this one included
        when its partner is already here)."""
        self._pending.append(_Entry(colour, float(stamp_sec), float(now)))
        return self._resolve(now)

    def add_depth(self, depth: D, stamp_sec: float, now: float) -> list[Paired[C, D]]:
        """A depth image arrived at ``now``; returns the frames that leave."""
        entry = _Entry(depth, float(stamp_sec), float(now))
        self._depths.append(entry)
        self._latest_depth = entry
        self._depth_arrived = float(now)
        return self._resolve(now)

    def expire(self, now: float) -> list[Paired[C, D]]:
        """The frames that cannot get a partner any more by ``now`` (call it periodically)."""
        return self._resolve(now)

    def flush(self, why: str = "the input ended") -> list[Paired[C, D]]:
        """Every waiting frame, without depth where it has no partner yet (end of a recording)."""
        out = self._resolve(None)
        while self._pending:
            out.append(self._without(self._pending.popleft(), why))
        return out

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def _resolve(self, now: float | None) -> list[Paired[C, D]]:
        out: list[Paired[C, D]] = []
        while self._pending:
            head = self._pending[0]
            partner = self._partner(head)
            if partner is not None:
                self._pending.popleft()
                partner.paired = True
                self.pairs += 1
                out.append(Paired(head.item, partner.item, None, head.arrival))
                continue
            why = self._why_not(head, now)
            if why is None:
                break  # the oldest frame waits, and the newer ones behind it (arrival order)
            out.append(self._without(self._pending.popleft(), why))
        return out

    def _without(self, entry: _Entry[C], why: str) -> Paired[C, D]:
        self.unpaired += 1
        return Paired(entry.item, None, why, entry.arrival)

    def _partner(self, colour: _Entry[C]) -> _Entry[D] | None:
        best, best_gap = None, None
        for depth in self._depths:
            if depth.paired:
                continue
            gap = abs(_gap(colour, depth))
            if gap <= self.slop_sec and (best_gap is None or gap < best_gap):
                best, best_gap = depth, gap
        return best

    def _why_not(self, colour: _Entry[C], now: float | None) -> str | None:
        """Why ``colour`` goes on without depth now, or None while it may still get a partner."""
        latest = self._latest_depth
        if latest is not None and _gap(colour, latest) > self.slop_sec:
            by_stamp = colour.stamp > 0 and latest.stamp > 0
            return (
                f"a depth image {'stamped' if by_stamp else 'arriving'} "
                f"{_gap(colour, latest):.3f} s after this frame arrived, none within "
                f"depth.slop_sec = {self.slop_sec:g} s of it: its depth image was lost or late, "
                "or colour and depth streams are not synchronised"
            )
        if now is None:
            return None
        silent = now - self._depth_arrived >= self.silent_sec
        if latest is None and silent:
            return (
                f"no depth image has arrived on {self.depth_topic} (is 'depth' remapped to the "
                "depth topic registered to the colour image, e.g. "
                "depth:=/camera/aligned_depth_to_color/image_raw?)"
            )
        if silent:
            return f"no depth image on {self.depth_topic} for {now - self._depth_arrived:.1f} s"
        if now - colour.arrival >= self.wait_sec:
            return (
                f"no depth image within depth.slop_sec = {self.slop_sec:g} s of its stamp "
                f"arrived within {self.wait_sec:g} s"
            )
        return None
