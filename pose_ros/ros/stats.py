"""Counters of the node for its status line: frames in, out, dropped, refused; latency; persons.

The worker and the subscription callback record events; the status timer takes one window per
period and formats one line, so the log stays at one line per period in steady state. The
diagnostics timer reads a sliding window of the last seconds (:meth:`NodeStats.recent`) without
disturbing the status line's windows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Totals:
    """Counts since the node started."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    bad: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Window:
    """What happened during one status period."""

    seconds: float
    received: int
    processed: int
    dropped: int
    bad: int
    failed: int
    persons: int
    annotated: int  # annotated images drawn and published (only while someone subscribes)
    latency_ms: tuple[float, ...]  # subscription callback → /poses published, per processed frame
    pipeline_ms: tuple[float, ...]  # the PoseEstimator call alone, per processed frame
    totals: Totals

    @property
    def idle(self) -> bool:
        return not (self.received or self.processed or self.bad or self.failed)


@dataclass(frozen=True)
class Recent:
    """The events of the last ``seconds`` (a sliding window, for /diagnostics)."""

    seconds: float
    received: int
    processed: int
    dropped: int
    bad: int
    failed: int
    latency_ms: tuple[float, ...]
    #: monotonic time of the newest frame received / processed since construction (None: none yet)
    last_received: float | None
    last_processed: float | None

    @property
    def input_hz(self) -> float:
        return self.received / self.seconds

    @property
    def processed_hz(self) -> float:
        return self.processed / self.seconds

    def latency_percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0..100) of the latencies, or None without processed frames."""
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else None

    @property
    def all_failed(self) -> bool:
        """Frames were handled in the window and not one of them gave poses."""
        return self.processed == 0 and (self.bad + self.failed) > 0


#: Longest sliding window :meth:`NodeStats.recent` can answer for; events older are forgotten.
RECENT_HORIZON_S = 30.0
# Bound on remembered events whatever the rate (a flood of tiny frames must not grow memory).
_MAX_RECENT_EVENTS = 20_000


class NodeStats:
    """Thread-safe event counters (callback thread, worker thread, timer)."""

    def __init__(self, now: float) -> None:
        self._lock = threading.Lock()
        self._totals = Totals()
        self._window_start = now
        self._reset_window()
        self._start = now
        # (monotonic time, kind, latency ms) of the last RECENT_HORIZON_S seconds
        self._events: deque[tuple[float, str, float]] = deque(maxlen=_MAX_RECENT_EVENTS)
        self._last_received: float | None = None
        self._last_processed: float | None = None

    def _event(self, kind: str, now: float | None, latency_ms: float = 0.0) -> None:
        # Called with the lock held.
        now = time.monotonic() if now is None else now
        self._events.append((now, kind, latency_ms))
        while self._events and self._events[0][0] < now - RECENT_HORIZON_S:
            self._events.popleft()

    def _reset_window(self) -> None:
        self._received = self._processed = self._dropped = self._bad = self._failed = 0
        self._persons = 0
        self._annotated = 0
        self._latency: list[float] = []
        self._pipeline: list[float] = []

    def frame_received(self, dropped_older: bool, now: float | None = None) -> None:
        """A frame arrived; ``dropped_older``: it replaced one that was never processed."""
        with self._lock:
            self._event("received", now)
            if dropped_older:
                self._event("dropped", now)
            self._last_received = self._events[-1][0]
            self._received += 1
            self._dropped += int(dropped_older)
            t = self._totals
            self._totals = Totals(
                t.received + 1, t.processed, t.dropped + int(dropped_older), t.bad, t.failed
            )

    def frame_dropped(self, now: float | None = None) -> None:
        """A received frame was replaced by a newer one before it was processed."""
        with self._lock:
            self._event("dropped", now)
            self._dropped += 1
            t = self._totals
            self._totals = Totals(t.received, t.processed, t.dropped + 1, t.bad, t.failed)

    def frame_processed(
        self, latency_ms: float, pipeline_ms: float, persons: int, now: float | None = None
    ) -> None:
        with self._lock:
            self._event("processed", now, latency_ms)
            self._last_processed = self._events[-1][0]
            self._processed += 1
            self._persons += persons
            self._latency.append(latency_ms)
            self._pipeline.append(pipeline_ms)
            t = self._totals
            self._totals = Totals(t.received, t.processed + 1, t.dropped, t.bad, t.failed)

    def image_annotated(self) -> None:
        """An annotated image was drawn and published."""
        with self._lock:
            self._annotated += 1

    def frame_bad(self) -> None:
        """A frame that could not be converted (bad header, corrupt data...)."""
        with self._lock:
            self._event("bad", None)
            self._bad += 1
            t = self._totals
            self._totals = Totals(t.received, t.processed, t.dropped, t.bad + 1, t.failed)

    def frame_failed(self) -> None:
        """A frame on which inference raised."""
        with self._lock:
            self._event("failed", None)
            self._failed += 1
            t = self._totals
            self._totals = Totals(t.received, t.processed, t.dropped, t.bad, t.failed + 1)

    @property
    def totals(self) -> Totals:
        return self._totals

    def recent(self, now: float, seconds: float) -> Recent:
        """The events of the last ``seconds`` (at most RECENT_HORIZON_S; shorter right after
        construction), without resetting anything."""
        seconds = min(seconds, RECENT_HORIZON_S)
        since = now - seconds
        with self._lock:
            events = [event for event in self._events if event[0] >= since]
            last_received, last_processed = self._last_received, self._last_processed
        counts = {kind: 0 for kind in ("received", "dropped", "processed", "bad", "failed")}
        for _, kind, _ in events:
            counts[kind] += 1
        return Recent(
            seconds=max(min(seconds, now - self._start), 1e-9),
            latency_ms=tuple(latency for _, kind, latency in events if kind == "processed"),
            last_received=last_received,
            last_processed=last_processed,
            **counts,
        )

    def take_window(self, now: float) -> Window:
        """The counts since the last call (or construction), and start a new window."""
        with self._lock:
            window = Window(
                seconds=max(now - self._window_start, 1e-9),
                received=self._received,
                processed=self._processed,
                dropped=self._dropped,
                bad=self._bad,
                failed=self._failed,
                persons=self._persons,
                annotated=self._annotated,
                latency_ms=tuple(self._latency),
                pipeline_ms=tuple(self._pipeline),
                totals=self._totals,
            )
            self._window_start = now
            self._reset_window()
            return window


def network_precision(estimator: object | None) -> str:
    """What the estimator's pose network computes in: "fp32", "fp16" or "int8".

    An exported model's runner says it (``precision``, from the export's metadata: an int8
    export is int8 whatever the device); a PyTorch module runs in fp16 where the estimator casts
    it (``fp16``), else fp32. "n/a" without an estimator (an unconfigured node).
    """
    if estimator is None:
        return "n/a"
    precision = getattr(getattr(estimator, "model", None), "precision", None)
    if precision:
        return str(precision)
    return "fp16" if getattr(estimator, "fp16", False) else "fp32"


def format_status(
    window: Window, *, random_weights: bool = False, precision: str | None = None
) -> str | None:
    """The status line of one window, or None when nothing happened (an idle node stays quiet).
    ``precision``: the pose network's (:func:`network_precision`), named at the line's start."""
    if window.idle:
        return None
    parts = [] if precision is None else [f"pose network {precision}"]
    parts.append(
        f"frames in {window.received}, out {window.processed} "
        f"({window.processed / window.seconds:.1f} Hz)"
    )
    if window.processed:
        latency = np.asarray(window.latency_ms)
        pipeline = np.asarray(window.pipeline_ms)
        # What the node adds to the pipeline per frame: waiting in the mailbox, conversion,
        # messages, publishing (frame by frame, then the median).
        own = np.median(latency - pipeline)
        parts.append(
            f"latency p50 {np.median(latency):.0f} ms, max {latency.max():.0f} ms "
            f"(pipeline p50 {np.median(pipeline):.0f} ms, node's own p50 {own:.1f} ms)"
        )
        parts.append(f"persons {window.persons / window.processed:.1f}/frame")
    if window.annotated:
        parts.append(f"annotated images {window.annotated}")
    totals = window.totals
    parts.append(f"dropped {window.dropped} (total {totals.dropped})")
    if window.bad or totals.bad:
        parts.append(f"bad frames {window.bad} (total {totals.bad})")
    if window.failed or totals.failed:
        parts.append(f"failed {window.failed} (total {totals.failed})")
    line = " | ".join(parts)
    if random_weights:
        line += " | RANDOM WEIGHTS: keypoints are meaningless"
    return line
