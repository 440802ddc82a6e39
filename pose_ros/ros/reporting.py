"""The node's log lines about its input: problems rate-limited per kind, warnings said once, and the
stream core's events. Thread-safe (the worker, the executor's callbacks and timers all report)."""

from __future__ import annotations

import threading
from typing import Any, Final

from rclpy.logging import get_logger

from pose_ros.stream import StreamEvent

#: Problems of one kind are reported at most once per this many seconds.
BAD_FRAME_LOG_PERIOD_S: Final[float] = 5.0


class Reporter:
    """Log lines of one node (``logger_name``: the node's logger)."""

    def __init__(self, logger_name: str) -> None:
        self._name = logger_name
        self._logger = get_logger(logger_name)
        self._throttled: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    @property
    def logger(self) -> Any:
        return self._logger

    def problem(self, kind: str, message: str, *, level: str = "error") -> None:
        """A problem that may repeat at the input's rate: logged at most every
        :data:`BAD_FRAME_LOG_PERIOD_S` per ``kind``. One logger object per kind: rclpy throttles
        per logger and call site, so a flood of one problem cannot hide the first report of
        another."""
        with self._lock:
            logger = self._throttled.get(kind)
            if logger is None:
                logger = self._throttled[kind] = get_logger(self._name)
        log = logger.error if level == "error" else logger.warning
        log(
            f"{message} (reported at most every {BAD_FRAME_LOG_PERIOD_S:g} s)",
            throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
        )

    def warn_once(self, key: str, message: str) -> None:
        """A warning said once per ``key`` for the life of the node."""
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        self._logger.warning(message)

    def stream_event(self, label: str, event: StreamEvent) -> None:
        """One event of the stream core for the camera whose log prefix is ``label``. Info (tracks
        ended) is always said; warnings are rate-limited per camera and kind (the core says most
        of them once; a depth image without a reading may come with every frame)."""
        text = f"{label}{event.message}"
        if event.level == "info":
            self._logger.info(text)
        else:
            self.problem(f"{label}{event.kind}", text, level=event.level)
