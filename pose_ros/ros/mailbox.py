"""A one-slot mailbox between the subscription callback and the inference worker.

Cameras publish faster than a CPU runs pose networks. Queueing every frame would make latency grow
without bound (and memory with it), so the callback only *posts* the newest frame: a frame still
waiting when a newer one arrives is replaced, and counted as dropped. The worker always takes the
newest frame there is.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestFrameMailbox(Generic[T]):
    """Holds at most one item; ``put`` replaces, ``take`` waits. Thread-safe."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self._dropped = 0

    def put(self, item: T) -> bool:
        """Post ``item``; True when it replaced one the worker had not taken (a dropped frame)."""
        with self._condition:
            if self._closed:
                return False
            replaced = self._item is not None
            if replaced:
                self._dropped += 1
            self._item = item
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, removed from the box; None after ``timeout`` seconds or once closed."""
        with self._condition:
            if self._item is None and not self._closed:
                self._condition.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        """Wake a waiting ``take`` (it returns None) and refuse further items."""
        with self._condition:
            self._closed = True
            self._item = None
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        """Items replaced before they were taken, since construction."""
        return self._dropped
