"""Counters of the node for its status line: frames in, out, dropped, refused; latency; persons.

The worker and the subscription callback record events; the status timer takes one window per
period and formats one line, so the log stays at one line per period in steady state.
"""

from __future__ import annotations

import threading
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


class NodeStats:
    """Thread-safe event counters (callback thread, worker thread, timer)."""

    def __init__(self, now: float) -> None:
        self._lock = threading.Lock()
        self._totals = Totals()
        self._window_start = now
        self._reset_window()

    def _reset_window(self) -> None:
        self._received = self._processed = self._dropped = self._bad = self._failed = 0
        self._persons = 0
        self._annotated = 0
        self._latency: list[float] = []
        self._pipeline: list[float] = []

    def frame_received(self, dropped_older: bool) -> None:
        """A frame arrived; ``dropped_older``: it replaced one that was never processed."""
        with self._lock:
            self._received += 1
            self._dropped += int(dropped_older)
            t = self._totals
            self._totals = Totals(
                t.received + 1, t.processed, t.dropped + int(dropped_older), t.bad, t.failed
            )

    def frame_processed(self, latency_ms: float, pipeline_ms: float, persons: int) -> None:
        with self._lock:
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
            self._bad += 1
            t = self._totals
            self._totals = Totals(t.received, t.processed, t.dropped, t.bad + 1, t.failed)

    def frame_failed(self) -> None:
        """A frame on which inference raised."""
        with self._lock:
            self._failed += 1
            t = self._totals
            self._totals = Totals(t.received, t.processed, t.dropped, t.bad, t.failed + 1)

    @property
    def totals(self) -> Totals:
        return self._totals

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


def format_status(window: Window, *, random_weights: bool = False) -> str | None:
    """The status line of one window, or None when nothing happened (an idle node stays quiet)."""
    if window.idle:
        return None
    parts = [
        f"frames in {window.received}, out {window.processed} "
        f"({window.processed / window.seconds:.1f} Hz)"
    ]
    if window.processed:
        latency = np.asarray(window.latency_ms)
        parts.append(
            f"latency p50 {np.median(latency):.0f} ms, max {latency.max():.0f} ms "
            f"(pipeline p50 {np.median(window.pipeline_ms):.0f} ms)"
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
