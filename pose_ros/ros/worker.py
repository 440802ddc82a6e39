"""The node's inference worker: a thread that takes the newest frame of every camera from the
mailbox, converts the messages, runs one cycle of the stream core (detector per frame, one
pose-network batch for all cameras, depth, tracks, smoothing) and publishes each camera's results.

The executor thread stays free for parameters, camera_info, lifecycle services and timers. Queued
parameter changes are applied by the worker between cycles (``between_cycles``): nothing is inside
the estimator then. There is never more than one worker: a worker that does not stop within its
join timeout is kept (not forgotten), and a new one is refused while it still runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sensor_msgs.msg import Image

from pose_ros.ros import conversions, outputs
from pose_ros.ros.camera_stream import CameraStream
from pose_ros.ros.inputs import Frame, stamp_sec
from pose_ros.ros.mailbox import LatestFramesMailbox
from pose_ros.ros.params import RuntimeSettings
from pose_ros.ros.reporting import Reporter
from pose_ros.stream import CameraFrame, StreamCore
from pose_ros.types import MIN_IMAGE_SIDE


class WorkerStillRunningError(RuntimeError):
    """The previous worker has not stopped yet (a frame still inside the estimator)."""


class PoseWorker:
    """Runs the cycles of one node.

    Args:
        streams: the cameras (index = mailbox key).
        core: the stream core of the configured estimator.
        settings: returns the current runtime settings snapshot.
        convert: message → :class:`~pose_ros.ros.conversions.ConvertedImage` (raw or compressed).
        reporter: the node's log lines.
        between_cycles: called by the worker thread before each cycle (pending parameters).
    """

    def __init__(
        self,
        streams: list[CameraStream],
        core: StreamCore,
        *,
        settings: Callable[[], RuntimeSettings],
        convert: Callable[..., conversions.ConvertedImage],
        reporter: Reporter,
        between_cycles: Callable[[], None],
    ) -> None:
        self._streams = streams
        self.core = core
        self._settings = settings
        self._convert = convert
        self._reporter = reporter
        self._between_cycles = between_cycles
        self._thread: threading.Thread | None = None
        self._mailbox: LatestFramesMailbox[int, Frame] | None = None

    # --- thread ---

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, mailbox: LatestFramesMailbox[int, Frame]) -> None:
        """Start the thread on ``mailbox``.

        Raises:
            WorkerStillRunningError: a previous thread of this worker has not ended.
        """
        if self.running:
            raise WorkerStillRunningError(
                "the previous inference worker is still finishing a frame; try again when it has "
                "stopped"
            )
        self._mailbox = mailbox
        self._thread = threading.Thread(
            target=self._work, args=(mailbox,), name="pose_worker", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Close the mailbox and wait up to ``timeout`` for the frame in progress; True when the
        thread has ended (else it is kept, and :meth:`start` refuses until it has)."""
        if self._mailbox is not None:
            self._mailbox.close()
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _work(self, mailbox: LatestFramesMailbox[int, Frame]) -> None:
        while True:
            items = mailbox.take_all(timeout=0.5, gather_sec=self._settings().batch_wait_sec)
            if mailbox.closed:
                return
            self._between_cycles()  # nothing is inside the estimator now
            if not items:
                continue
            try:
                self.run_cycle(items)
            except Exception as error:  # a failing cycle must never stop the worker
                if mailbox.closed:
                    return  # shutting down: publishers are gone
                self._frames_failed([self._streams[index] for index in items], error)

    # --- one cycle ---

    def run_cycle(self, items: dict[int, Frame]) -> None:
        """The newest frame of each camera that has one: convert, one core cycle, publish."""
        settings = self._settings()
        frames: list[CameraFrame] = []
        sources: list[tuple[CameraStream, Any, float, conversions.ConvertedImage]] = []
        for index in sorted(items):
            stream = self._streams[index]
            msg, arrival, depth_msg = items[index]
            try:
                converted = self._to_frame(stream, msg, arrival, depth_msg, settings)
            except Exception as error:
                self._frames_failed([stream], error)
                continue
            if converted is not None:
                frames.append(converted[0])
                sources.append((stream, msg, arrival, converted[1]))
        if not frames:
            return
        results = self.core.process(frames)
        for (stream, msg, arrival, image), result in zip(sources, results, strict=True):
            for event in result.events:
                self._reporter.stream_event(stream.label, event)
            if result.error is not None:
                self._frames_failed([stream], result.error)
                continue
            try:
                outputs.publish(stream, msg.header, image, result.persons, settings)
            except Exception as error:
                self._frames_failed([stream], error)
                continue
            latency_ms = (time.monotonic() - arrival) * 1e3
            pipeline_ms = result.detect_ms + result.network_ms + result.core_ms
            stream.stats.frame_processed(latency_ms, pipeline_ms, len(result.persons))

    def _to_frame(
        self,
        stream: CameraStream,
        msg: Any,
        arrival: float,
        depth_msg: Image | None,
        settings: RuntimeSettings,
    ) -> tuple[CameraFrame, conversions.ConvertedImage] | None:
        """The stream core's frame of one message; None for a bad frame (counted, reported)."""
        topic = stream.input_topic
        try:
            image = self._convert(msg, max_pixels=settings.max_image_pixels)
        except conversions.ImageConversionError as error:
            stream.stats.frame_bad()
            self._reporter.problem(error.kind, f"bad frame on {topic}: {error}")
            return None
        if min(image.width, image.height) < MIN_IMAGE_SIDE:
            stream.stats.frame_bad()
            side = MIN_IMAGE_SIDE
            self._reporter.problem(
                "too_small",
                f"bad frame on {topic}: {image.width}x{image.height} is smaller than the "
                f"{side}x{side} pixels the pose network needs",
            )
            return None
        if not msg.header.frame_id:
            self._reporter.warn_once(
                f"empty_frame_id:{stream.name}",
                f"input images on {topic} have an empty header.frame_id: poses keep it, but RViz "
                "cannot place the markers (set the camera driver's frame_id)",
            )
        depth_m = None
        if depth_msg is not None:
            try:
                depth_m = conversions.depth_msg_to_array(
                    depth_msg, max_pixels=settings.max_image_pixels
                )
            except conversions.ImageConversionError as error:
                self._reporter.problem(
                    f"depth_{error.kind}",
                    f"bad depth frame on {stream.depth_topic}: {error}; frame processed without "
                    "positions",
                )
        frame = CameraFrame(
            image.pixels,
            image.color_order,
            stamp_sec=stamp_sec(msg),
            arrival_sec=arrival,
            camera=stream.name,
            frame_id=msg.header.frame_id,
            camera_model=stream.camera,
            depth_m=depth_m,
            topic=topic,
            depth_topic=stream.depth_topic,
        )
        return frame, image

    def _frames_failed(self, streams: list[CameraStream], error: BaseException) -> None:
        """Frames on which processing raised: counted per camera, reported (rate-limited) with
        the camera's name when it was one camera's frame."""
        for stream in streams:
            stream.stats.frame_failed()
        label = streams[0].label if len(streams) == 1 else ""
        self._reporter.problem(
            "inference", f"{label}processing a frame failed: {type(error).__name__}: {error}"
        )
