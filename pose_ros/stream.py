"""The stream core: camera frames over time in, persons with ids, smoothed keypoints and 3D
positions out. No ROS here: the node, ``pose-ros-infer`` (images, videos, recordings) and the
benchmarks all run their frames through :class:`StreamCore`, so the temporal rules below hold
alike everywhere.

One call, :meth:`StreamCore.process`, takes one cycle: at most one frame per camera. Per frame the
detector runs (or the tracks' boxes are reused, ``detector_interval``), then the crops of all
cameras go through the pose network as one batch, then per frame the depth, the tracker and the
smoothing. A frame that fails in its own steps costs only that frame.

Temporal rules, per camera (each with its event, for the caller's log):

* **Time** is the image's header stamp. A stamp of 0 (unset) is replaced by the arrival time; a
  stamp equal to the previous one advances the camera's clock by the arrival interval. Either way
  every frame is answered, and the first occurrence is reported with the topic's name. A stamp
  earlier than the previous one (a looping recording) ends every track.
* **A new image size or frame_id** ends every track of the camera: the driver was reconfigured, or
  the topic carries images of another source.
* **Jumps**: a track whose new raw pose is far from its smoothed pose restarts its filters from the
  raw pose (:data:`pose_ros.tracking.JUMP_OKS`), so a published pose never lies between two
  unrelated poses.
* **Published keypoints lie inside the image.**
* **Ids** come from one counter per process (:data:`pose_ros.tracking.PROCESS_TRACK_IDS`): unique
  across cameras and across restarts of the core.
* **Depth** of another size than the colour image is refused (no 3D for that frame, poses still
  published) unless ``depth_rescale``: a registered depth image has the colour image's size.

Usage::

    core = StreamCore(estimator, StreamSettings())
    results = core.process([CameraFrame(image, stamp_sec=t, arrival_sec=now, camera="front")])
    for result in results:
        result.persons, result.events, result.error
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from pose_ros.camera import PinholeCamera
from pose_ros.depth import DepthConfig, DepthError, attach_positions
from pose_ros.smoothing import SmoothingConfig
from pose_ros.tracking import (
    DEFAULT_REUSE_SCORE_THRESHOLD,
    PROCESS_TRACK_IDS,
    PoseTracker,
    TrackIds,
    TrackingConfig,
)
from pose_ros.types import FrameBoxes, Person

if TYPE_CHECKING:
    from pose_ros.pipeline import PoseEstimator

__all__ = [
    "CameraFrame",
    "CameraState",
    "FrameResult",
    "StreamCore",
    "StreamEvent",
    "StreamSettings",
    "settings_from_values",
]

#: Smallest step (seconds) of a camera's clock between two frames: repeated and zero stamps never
#: give two frames the same time.
MIN_CLOCK_STEP_SEC: Final[float] = 1e-3


@dataclass(frozen=True)
class StreamSettings:
    """What the core does over time (the node's parameters of the same names; these defaults are
    theirs).

    Attributes:
        tracking: tracker settings (``tracking.*``; its ``score_threshold`` is the detector's).
        smoothing: One-Euro settings (``smoothing.*``), pixels and metres.
        detector_interval: run the detector every N-th frame (``detector.interval``).
        reuse_score_threshold: ``detector.reuse_score_threshold``.
        keypoint_threshold: keypoints at or above this are confident (``keypoint_score_threshold``).
        max_persons: at most this many persons per frame (``max_persons``).
        depth: how keypoint depths are read (``depth.*``).
        depth_rescale: accept depth of another size with the colour image's aspect ratio, scaled
            to it (``depth.allow_rescale``); off: such depth is refused (no 3D).
    """

    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    detector_interval: int = 1
    reuse_score_threshold: float = DEFAULT_REUSE_SCORE_THRESHOLD
    keypoint_threshold: float = 0.2
    max_persons: int = 20
    depth: DepthConfig = field(default_factory=DepthConfig)
    depth_rescale: bool = False


@dataclass(frozen=True)
class CameraFrame:
    """One frame of one camera.

    Attributes:
        image: (H, W, 3) uint8 in ``color_order``.
        color_order: "RGB" or "BGR".
        stamp_sec: the header stamp in seconds; 0 when unset.
        arrival_sec: when the frame arrived, on the caller's clock (the node: ``time.monotonic()``;
            a recording: the message's log time; a video: its frame time).
        camera: the camera's name ("" for a single camera).
        frame_id: the header's frame_id.
        camera_model: the camera's calibration (from camera_info), or None.
        depth_m: (h, w) float32 metres registered to the image, NaN where no reading; or None.
        topic: where the frame came from, for messages (a topic, a file).
        depth_topic: where its depth image came from, for messages.
    """

    image: np.ndarray
    color_order: str = "RGB"
    stamp_sec: float = 0.0
    arrival_sec: float = 0.0
    camera: str = ""
    frame_id: str = ""
    camera_model: PinholeCamera | None = None
    depth_m: np.ndarray | None = None
    topic: str = ""
    depth_topic: str = ""


@dataclass(frozen=True)
class StreamEvent:
    """Something the caller should tell its user (once per occurrence; the caller may rate-limit
    by ``kind``).

    ``level`` is "info", "warning" or "error" (bad input); ``kind`` one of ``tracks_ended``,
    ``zero_stamp``, ``repeated_stamp``, ``depth_size``, ``depth_no_reading``,
    ``depth_without_camera``.
    """

    level: str
    kind: str
    message: str


@dataclass
class FrameResult:
    """What the core made of one frame.

    Attributes:
        frame: the frame.
        persons: sorted by score (descending); empty when the frame failed.
        time_sec: the camera clock's time of the frame (the stamp, or what stands in for it).
        detected: whether the detector ran on it (else the tracks' boxes were reused).
        error: the exception that cost this frame, or None.
        events: what happened to the camera's state with this frame.
        has_positions: whether 3D positions were attached.
        detect_ms: the detector's time on this frame.
        network_ms: the shared pose-network batch's time (the same for every frame of a cycle).
        core_ms: the core's own time for this frame: everything but the networks.
    """

    frame: CameraFrame
    persons: list[Person] = field(default_factory=list)
    time_sec: float = 0.0
    detected: bool = False
    error: Exception | None = None
    events: list[StreamEvent] = field(default_factory=list)
    has_positions: bool = False
    detect_ms: float = 0.0
    network_ms: float = 0.0
    core_ms: float = 0.0


@dataclass
class CameraState:
    """The temporal state of one camera."""

    tracker: PoseTracker
    size_and_frame: tuple[int, int, str] | None = None
    last_stamp: float | None = None  # the last non-zero header stamp
    clock: float | None = None  # the camera's time of its last frame
    last_arrival: float = 0.0
    zero_stamps: int = 0
    repeated_stamps: int = 0
    warned: set[str] = field(default_factory=set)

    def next_time(self, frame: CameraFrame, events: list[StreamEvent]) -> float:
        """The time of ``frame`` on this camera's clock (see the module's rules)."""
        stamp, arrival = float(frame.stamp_sec), float(frame.arrival_sec)
        if not np.isfinite(stamp) or stamp <= 0.0:
            self.zero_stamps += 1
            self.warn_once(
                events,
                "zero_stamp",
                f"images on {frame.topic or 'this camera'} have header.stamp 0 (unset): their "
                "arrival time stands in for tracking, smoothing and depth pairing (set the "
                "publisher's stamps from the capture time)",
            )
            return self._advance_by_arrival(arrival)
        if self.last_stamp is not None and stamp == self.last_stamp:
            self.repeated_stamps += 1
            self.warn_once(
                events,
                "repeated_stamp",
                f"images on {frame.topic or 'this camera'} repeat the previous header.stamp "
                f"({stamp:.6f} s): each is answered, its time advanced by its arrival interval",
            )
            return self._advance_by_arrival(arrival)
        if self.last_stamp is not None and stamp < self.last_stamp:
            ended = self.tracker.track_count
            self.tracker.reset()
            self.tracker.stats.resets += 1
            self.clock = None
            events.append(
                StreamEvent(
                    "info",
                    "tracks_ended",
                    f"image stamp went backwards ({self.last_stamp:.3f} s -> {stamp:.3f} s, a "
                    f"looping recording?): {ended} track(s) ended",
                )
            )
        self.last_stamp = stamp
        time_sec = stamp if self.clock is None else max(stamp, self.clock + MIN_CLOCK_STEP_SEC)
        self.clock, self.last_arrival = time_sec, arrival
        return time_sec

    def check_source(self, frame: CameraFrame, events: list[StreamEvent]) -> None:
        """End every track when the image size or frame_id changes."""
        height, width = frame.image.shape[:2]
        current = (width, height, frame.frame_id)
        previous, self.size_and_frame = self.size_and_frame, current
        if previous is None or previous == current:
            return
        ended = self.tracker.track_count
        self.tracker.reset()
        self.tracker.stats.resets += 1
        what = []
        if previous[:2] != current[:2]:
            what.append(f"image size {previous[0]}x{previous[1]} -> {width}x{height}")
        if previous[2] != current[2]:
            what.append(f"frame_id {previous[2]!r} -> {current[2]!r}")
        events.append(
            StreamEvent(
                "info",
                "tracks_ended",
                f"{frame.topic or 'camera'}: {' and '.join(what)}: {ended} track(s) ended",
            )
        )

    def _advance_by_arrival(self, arrival: float) -> float:
        if self.clock is None:
            time_sec = arrival
        else:
            time_sec = self.clock + max(arrival - self.last_arrival, MIN_CLOCK_STEP_SEC)
        self.clock, self.last_arrival = time_sec, arrival
        return time_sec

    def warn_once(
        self, events: list[StreamEvent], kind: str, message: str, level: str = "warning"
    ) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            events.append(StreamEvent(level, kind, message))


@dataclass
class _Pending:
    """One frame between its own first steps and the shared network batch."""

    result: FrameResult
    state: CameraState
    boxes: np.ndarray
    box_scores: np.ndarray
    started: float
    own_s: float = 0.0

    @property
    def frame(self) -> CameraFrame:
        return self.result.frame


class StreamCore:
    """The temporal path of one or several cameras over one pose estimator.

    Args:
        estimator: the pipeline (its detector's threshold and the person limit are set from the
            settings here).
        settings: see :class:`StreamSettings`.
        ids: where track ids come from (default: the process-wide counter).
    """

    def __init__(
        self,
        estimator: PoseEstimator,
        settings: StreamSettings | None = None,
        *,
        ids: TrackIds = PROCESS_TRACK_IDS,
    ) -> None:
        self.estimator = estimator
        self.settings = settings or StreamSettings()
        self._ids = ids
        self._cameras: dict[str, CameraState] = {}
        self.configure(self.settings)

    # ----------------------------------------------------------------- settings
    def configure(self, settings: StreamSettings) -> None:
        """Apply new settings (between cycles): trackers, smoothing and the estimator's filters.
        With tracking on, the detector keeps boxes down to the low floor of ByteTrack's second
        stage (the tracker keeps what is high-scoring or near a track)."""
        self.settings = settings
        for state in self._cameras.values():
            self._configure_tracker(state.tracker)
        estimator = self.estimator
        estimator.keypoint_score_threshold = settings.keypoint_threshold
        estimator.max_persons = settings.max_persons
        detector = getattr(estimator, "detector", None)
        if detector is not None and hasattr(detector, "detection_filter"):
            tracking = settings.tracking
            threshold = tracking.low_score_threshold if tracking.enabled else None
            detector.detection_filter = dataclasses.replace(
                detector.detection_filter,
                score_threshold=tracking.score_threshold if threshold is None else threshold,
                max_persons=settings.max_persons,
            )

    def _configure_tracker(self, tracker: PoseTracker) -> None:
        settings = self.settings
        tracker.configure(
            tracking=settings.tracking,
            smoothing=settings.smoothing,
            detector_interval=settings.detector_interval,
            reuse_score_threshold=settings.reuse_score_threshold,
            keypoint_threshold=settings.keypoint_threshold,
        )

    def camera(self, name: str) -> CameraState:
        """The state of camera ``name`` (made on first use)."""
        state = self._cameras.get(name)
        if state is None:
            tracker = PoseTracker(ids=self._ids)
            self._configure_tracker(tracker)
            state = self._cameras[name] = CameraState(tracker)
        return state

    @property
    def cameras(self) -> dict[str, CameraState]:
        return dict(self._cameras)

    def reset(self) -> None:
        """Forget every camera's tracks and clock (ids keep counting)."""
        self._cameras.clear()

    # ----------------------------------------------------------------- per cycle
    def process(self, frames: Sequence[CameraFrame]) -> list[FrameResult]:
        """One cycle: at most one frame per camera; their results in the same order.

        Raises:
            ValueError: two frames of the same camera in one cycle.
        """
        names = [frame.camera for frame in frames]
        if len(set(names)) != len(names):
            raise ValueError(f"one frame per camera and cycle, got cameras {names}")
        results = [FrameResult(frame) for frame in frames]
        pending: list[_Pending] = []
        for result in results:
            try:
                pending.append(self._begin(result))
            except Exception as error:  # this frame's own steps: only it is lost
                result.error = _without_traceback(error)
        if pending:
            self._estimate(pending)
        return results

    def _begin(self, result: FrameResult) -> _Pending:
        started = time.perf_counter()
        frame = result.frame
        state = self.camera(frame.camera)
        state.check_source(frame, result.events)
        result.time_sec = state.next_time(frame, result.events)
        tracker = state.tracker
        plan = tracker.begin_frame(result.time_sec, frame.image.shape[:2])
        result.detected = plan.detect
        boxes, box_scores = plan.boxes, plan.box_scores
        if plan.detect:
            detect_start = time.perf_counter()
            detected = self.estimator.detect(frame.image, color_order=frame.color_order)
            result.detect_ms = (time.perf_counter() - detect_start) * 1e3
            boxes, box_scores = tracker.select_detections(plan, *detected)
        own_s = time.perf_counter() - started - result.detect_ms * 1e-3
        return _Pending(result, state, boxes, box_scores, started, own_s)

    def _estimate(self, pending: list[_Pending]) -> None:
        start = time.perf_counter()
        try:
            batches = self.estimator.estimate_batch(
                [
                    FrameBoxes(p.frame.image, p.boxes, p.box_scores, p.frame.color_order)
                    for p in pending
                ]
            )
        except Exception as error:  # the batch failed: every frame in it did
            error = _without_traceback(error)
            for item in pending:
                item.result.error = error
            return
        network_ms = (time.perf_counter() - start) * 1e3
        for item, persons in zip(pending, batches, strict=True):
            result = item.result
            result.network_ms = network_ms
            finish_start = time.perf_counter()
            try:
                persons = self._attach_depth(item.state, result, persons)
                result.persons = item.state.tracker.end_frame(persons)
            except Exception as error:
                result.error = _without_traceback(error)
                result.persons = []
            result.core_ms = (item.own_s + time.perf_counter() - finish_start) * 1e3

    def _attach_depth(
        self, state: CameraState, result: FrameResult, persons: list[Person]
    ) -> list[Person]:
        """The persons with 3D positions from the frame's depth image; unchanged (no positions)
        when that cannot be done, with an event saying why."""
        frame = result.frame
        if frame.depth_m is None:
            return persons
        height, width = frame.image.shape[:2]
        if frame.camera_model is None:
            self._depth_event(
                state,
                result,
                "depth_without_camera",
                f"depth images arrive for {frame.topic or 'the camera'} but no camera_info with "
                "a usable calibration has been received: keypoints get no 3D position until one "
                "arrives",
                once=True,
                level="warning",
            )
            return persons
        depth_height, depth_width = frame.depth_m.shape[:2]
        where = f"bad depth frame on {frame.depth_topic or 'the depth input'}"
        if (depth_width, depth_height) != (width, height) and not self.settings.depth_rescale:
            self._depth_event(
                state,
                result,
                "depth_size",
                f"{where}: depth image is {depth_width}x{depth_height} but the colour image on "
                f"{frame.topic or 'the camera'} is {width}x{height}: no 3D positions. Depth must "
                "be registered to the colour image (e.g. RealSense aligned_depth_to_color/"
                "image_raw); if it is the same view at another resolution, set "
                "depth.allow_rescale:=true",
                once=True,
            )
            return persons
        try:
            positioned = attach_positions(
                persons,
                frame.depth_m,
                frame.camera_model,
                self.settings.depth,
                image_size=(height, width),
            )
        except DepthError as error:
            message = f"{where}: {error}; frame processed without positions"
            self._depth_event(state, result, f"depth_{error.kind}", message, once=False)
            return persons
        result.has_positions = True
        return positioned

    @staticmethod
    def _depth_event(
        state: CameraState,
        result: FrameResult,
        kind: str,
        message: str,
        *,
        once: bool,
        level: str = "error",
    ) -> None:
        if once:
            state.warn_once(result.events, kind, message, level=level)
        else:
            result.events.append(StreamEvent(level, kind, message))


def _without_traceback(error: Exception) -> Exception:
    """The error as a result keeps it: without the tracebacks of it and of the errors it chains
    (``__cause__``, ``__context__``), whose frames hold the cycle's images, crops and results (a
    reference cycle that would keep them alive until a full collection)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending += [current.__cause__, current.__context__]
    return error


def settings_from_values(values: dict[str, Any]) -> StreamSettings:
    """Stream settings from parameter values (name → value, the node's parameter names); names
    not given take their default."""
    defaults = StreamSettings()
    tracking, smoothing, depth = defaults.tracking, defaults.smoothing, defaults.depth

    def get(name: str, default: Any) -> Any:
        return values.get(name, default)

    score_threshold = float(get("detector.score_threshold", tracking.score_threshold))
    return StreamSettings(
        tracking=TrackingConfig(
            enabled=bool(get("tracking.enabled", tracking.enabled)),
            min_hits=int(get("tracking.min_hits", tracking.min_hits)),
            max_age_sec=float(get("tracking.max_age_sec", tracking.max_age_sec)),
            iou_weight=float(get("tracking.iou_weight", tracking.iou_weight)),
            match_threshold=float(get("tracking.match_threshold", tracking.match_threshold)),
            # The high threshold of ByteTrack's first stage is the detector's threshold.
            score_threshold=score_threshold,
            low_score_threshold=min(TrackingConfig.low_score_threshold, score_threshold),
        ),
        smoothing=SmoothingConfig(
            enabled=bool(get("smoothing.enabled", smoothing.enabled)),
            min_cutoff=float(get("smoothing.min_cutoff", smoothing.min_cutoff)),
            beta=float(get("smoothing.beta", smoothing.beta)),
            d_cutoff=float(get("smoothing.d_cutoff", smoothing.d_cutoff)),
            position_min_cutoff=float(
                get("smoothing.position_min_cutoff", smoothing.position_min_cutoff)
            ),
            position_beta=float(get("smoothing.position_beta", smoothing.position_beta)),
        ),
        detector_interval=int(get("detector.interval", defaults.detector_interval)),
        reuse_score_threshold=float(
            get("detector.reuse_score_threshold", defaults.reuse_score_threshold)
        ),
        keypoint_threshold=float(get("keypoint_score_threshold", defaults.keypoint_threshold)),
        max_persons=int(get("max_persons", defaults.max_persons)),
        depth=DepthConfig(
            min_m=float(get("depth.min_m", depth.min_m)),
            max_m=float(get("depth.max_m", depth.max_m)),
            patch_radius=int(get("depth.patch_radius", depth.patch_radius)),
            person_band_m=float(get("depth.person_band_m", depth.person_band_m)),
            slop_sec=float(get("depth.slop_sec", depth.slop_sec)),
        ),
        depth_rescale=bool(get("depth.allow_rescale", defaults.depth_rescale)),
    )
