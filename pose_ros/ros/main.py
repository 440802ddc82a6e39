"""The ``pose_node`` executable: one :class:`~pose_ros.ros.node.PoseNode` spun until Ctrl-C or
SIGTERM, a start-up error reported in one line with exit code 1."""

from __future__ import annotations

import signal
import threading
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger

from pose_ros.ros.node import NODE_NAME, PoseNode, StartupError

try:  # rclpy with signal-handler options (Humble and later)
    from rclpy.signals import SignalHandlerOptions
except ImportError:  # main() then keeps rclpy's own handler
    SignalHandlerOptions = None

#: Longest wait of the main loop between checks for Ctrl-C / SIGTERM.
STOP_POLL_S = 0.2


def _install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``; the main loop then ends the node while its context is still
    valid. rclpy's own handler would shut the context down at once, so the worker's last frame and
    the closing log lines would fail, and the second SIGINT that `ros2 launch` sends after the
    terminal's Ctrl-C would interrupt the shutdown with a traceback. A repeated signal only
    repeats the request."""

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``pose_node`` executable; returns the exit code."""
    stop = threading.Event()
    if SignalHandlerOptions is None:  # an rclpy without signal options: its handler stays
        rclpy.init(args=args)
    else:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        _install_stop_handlers(stop)
    node: PoseNode | None = None
    code = 0
    try:
        node = PoseNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        # Short waits: a signal handler runs between them (at most STOP_POLL_S after Ctrl-C).
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C / launch shutdown: a normal end
    except StartupError as error:
        get_logger(NODE_NAME).fatal(str(error))
        code = 1
    finally:
        if node is not None:
            summary = node.close()
            node.destroy_node()
            get_logger(NODE_NAME).info(summary)
        rclpy.try_shutdown()
        if SignalHandlerOptions is not None:
            # The node is done: a Ctrl-C still on its way (launch repeats the terminal's) must
            # not kill the exiting interpreter, which puts Python handlers back to the default.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code
