"""One-slot-per-camera mailbox between the subscription callbacks and the inference worker.

Cameras publish faster than a CPU runs pose networks. Queueing every frame would make latency grow
without bound (and memory with it), so a callback only *posts* the newest frame of its camera: a
frame still waiting when a newer one of the same camera arrives is replaced, and counted as
dropped. The worker takes the newest frame of every camera that has one, all at once, so that the
crops of all cameras go through the pose network as one batch.

Cameras of one robot are rarely exposed at the same instant. After the first frame of a cycle the
worker may wait a little (``gather_sec``) for the other *live* cameras, so that their frames share
the batch. A camera is live when its frame was in the previous cycle (however long that cycle
took: a slow device must not break the batching) or when it posted in the last ``live_sec``
seconds. A camera that stopped holds the others back once, by at most ``gather_sec``, and not
again. When the worker was busy, the frames have waited already and it takes them at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: A camera counts as live (worth waiting for) this long after its last frame.
DEFAULT_LIVE_SEC = 1.0


class LatestFramesMailbox(Generic[K, T]):
    """Holds at most one item per key; ``put`` replaces, ``take_all`` waits. Thread-safe."""

    def __init__(self, *, live_sec: float = DEFAULT_LIVE_SEC) -> None:
        self._condition = threading.Condition()
        self._items: dict[K, tuple[float, T]] = {}  # key -> (time posted, item)
        self._last_put: dict[K, float] = {}
        self._previous: set[K] = set()  # the keys of the last non-empty take_all
        self._live_sec = live_sec
        self._closed = False
        self._dropped = 0

    def put(self, key: K, item: T) -> bool:
        """Post ``item`` for ``key``; True when it replaced one of that key the worker had not
        taken (a dropped frame)."""
        now = time.monotonic()
        with self._condition:
            if self._closed:
                return False
            replaced = key in self._items
            if replaced:
                self._dropped += 1
            self._items[key] = (now, item)
            self._last_put[key] = now
            self._condition.notify()
            return replaced

    def take_all(self, timeout: float | None = None, gather_sec: float = 0.0) -> dict[K, T]:
        """The newest item of every key that has one, removed from the box. Waits up to
        ``timeout`` for the first item, then up to ``gather_sec`` after the oldest waiting item was
        posted for the other live keys. Empty after ``timeout`` or once closed."""
        with self._condition:
            if not self._items and not self._closed:
                self._condition.wait(timeout)
            if self._items and gather_sec > 0:
                deadline = min(posted for posted, _ in self._items.values()) + gather_sec
                while not self._closed and (left := deadline - time.monotonic()) > 0:
                    if self._live_keys(time.monotonic()) <= self._items.keys():
                        break
                    self._condition.wait(left)
            items, self._items = self._items, {}
            if self._closed:
                return {}
            if items:
                self._previous = set(items)
            return {key: item for key, (_, item) in items.items()}

    def _live_keys(self, now: float) -> set[K]:
        recent = {key for key, last in self._last_put.items() if now - last <= self._live_sec}
        return recent | self._previous

    def close(self) -> None:
        """Wake a waiting ``take_all`` (it returns nothing) and refuse further items."""
        with self._condition:
            self._closed = True
            self._items = {}
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        """Items replaced before they were taken, since construction (all keys)."""
        return self._dropped
