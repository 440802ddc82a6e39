"""People over time: track ids, smoothed keypoints, and detection reuse. No ROS here: the node, the
command-line tool and the benchmarks drive one :class:`PoseTracker` per camera stream.

Per frame::

    plan = tracker.begin_frame(stamp_sec, (height, width))   # detect, or reuse the tracks' boxes
    if plan.detect:
        boxes, scores = tracker.select_detections(plan, *estimator.detect(image))
    else:
        boxes, scores = plan.boxes, plan.box_scores
    persons = estimator.estimate_batch([FrameBoxes(image, boxes, scores)])[0]
    persons = tracker.end_frame(persons)                      # ids, smoothing, dropping

(:class:`pose_ros.stream.StreamCore` does this, for the frames of several cameras at once.)
Association is ByteTrack's (Zhang et al., ECCV 2022): detections at or above the high threshold
are matched first to every track, with a similarity that weighs the box IoU against the keypoint
OKS of the track's last pose (moved by its velocity); then the low-score detections
(``low_score_threshold`` up to the high threshold) are matched by IoU alone to the tracks left
over: an occluded person whose detector score dropped keeps its id, and a low-score box never
starts a track. Both stages solve the assignment with ``scipy.optimize.linear_sum_assignment``.

Time is the image header stamp, never the wall clock: bag playback at any speed and ``use_sim_time``
behave the same (the stream core, :mod:`pose_ros.stream`, stands in the arrival time for missing
and repeated stamps). A stamp earlier than the previous one (a looping bag) resets the tracks.
Ids come from a :class:`TrackIds` counter: every tracker of a process draws from the same one by
default (:data:`PROCESS_TRACK_IDS`), so an id is never reused within a process, across cameras and
restarts.

Smoothing never blends two unrelated poses: when a track's new raw pose is far from where its
smoothed pose was heading (OKS below :data:`JUMP_OKS`: a scene cut, a wrong match, a network that
jumped to another person), its filters restart from the raw pose. Published keypoints always lie
inside the image.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment

from pose_ros import geometry
from pose_ros.keypoints import NUM_KEYPOINTS, OKS_SIGMAS
from pose_ros.smoothing import OneEuroFilter, SmoothingConfig

if TYPE_CHECKING:
    from pose_ros.types import Person

__all__ = [
    "JUMP_OKS",
    "PROCESS_TRACK_IDS",
    "FramePlan",
    "PoseTracker",
    "SmoothingConfig",
    "TrackIds",
    "TrackerStats",
    "TrackingConfig",
    "box_iou",
    "keypoint_box",
    "oks",
]

#: Default reuse threshold: a person found in a reused box whose score (box score × mean confident
#: keypoint score) falls below this is dropped, and the next frame runs the detector.
DEFAULT_REUSE_SCORE_THRESHOLD = 0.3
_KAPPA2 = (2.0 * np.asarray(OKS_SIGMAS, dtype=np.float64)) ** 2
#: Weight of a new velocity measurement (exponential average): damps detector box jitter.
_VELOCITY_GAIN = 0.5
#: Fewest confident keypoints a reused box is built from.
_MIN_REUSE_KEYPOINTS = 3
#: Reused boxes overlapping more than this (IoU) mean the detector runs instead.
_MAX_REUSE_OVERLAP = 0.2
#: A track's filters restart when its new raw pose has an OKS below this with the smoothed pose
#: moved by the track's velocity. OKS 0.5 is the middle of COCO's AP thresholds (0.5..0.95): a pose
#: below it would not even count as the same detection in COCO's evaluation. For a 200 px tall
#: person it means keypoints about 20 px off on average, several times the lag the One-Euro
#: defaults leave at walking speed, so ordinary motion never restarts a filter.
JUMP_OKS = 0.5


class TrackIds:
    """A thread-safe source of track ids 1, 2, 3...; trackers that share one never give the same
    id twice."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._counter)


#: The ids of every tracker that is not given its own counter by the stream core: ids are unique
#: across the cameras of a process and across node restarts (cleanup → configure).
PROCESS_TRACK_IDS = TrackIds()


@dataclass(frozen=True)
class TrackingConfig:
    """Tracker settings (defaults are the node's parameter defaults).

    Attributes:
        enabled: False: every person keeps ``track_id`` -1, no smoothing, the detector every frame.
        min_hits: frames a track must be matched before it gets an id (until then -1).
        max_age_sec: seconds (header time) a track survives unseen before it is forgotten.
        iou_weight: weight of box IoU against keypoint OKS in the similarity of the first stage
            (1 = boxes only); without confident keypoints in common, IoU alone.
        match_threshold: the least similarity (0..1) of a matched pair, in both stages.
        score_threshold: detections at or above this take part in the first stage and may start
            tracks (the node and CLI pass ``detector.score_threshold``).
        low_score_threshold: detections from this up to ``score_threshold`` take part in the
            second stage only (IoU with the tracks left over); lower ones are ignored.
    """

    enabled: bool = True
    min_hits: int = 3
    max_age_sec: float = 1.0
    iou_weight: float = 0.5
    match_threshold: float = 0.2
    score_threshold: float = 0.5
    low_score_threshold: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.min_hits, bool) or not isinstance(self.min_hits, int):
            raise ValueError(f"tracking.min_hits must be an integer >= 1, got {self.min_hits!r}")
        if self.min_hits < 1:
            raise ValueError(f"tracking.min_hits must be an integer >= 1, got {self.min_hits!r}")
        if not (_real(self.max_age_sec) and self.max_age_sec > 0):
            raise ValueError(f"tracking.max_age_sec must be > 0 s, got {self.max_age_sec!r}")
        for name in ("iou_weight", "match_threshold", "score_threshold", "low_score_threshold"):
            value = getattr(self, name)
            if not (_real(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"tracking.{name} must be in [0, 1], got {value!r}")
        if self.low_score_threshold > self.score_threshold:
            raise ValueError(
                f"tracking.low_score_threshold ({self.low_score_threshold}) must not exceed "
                f"score_threshold ({self.score_threshold})"
            )


def _real(value: object) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


@dataclass(frozen=True)
class FramePlan:
    """What to do with one frame (from :meth:`PoseTracker.begin_frame`).

    Attributes:
        detect: run the person detector (then :meth:`PoseTracker.select_detections`).
        boxes: (N, 4) ``x, y, w, h`` boxes carried over from the tracks when not detecting.
        box_scores: (N,) their scores (the score of the track each came from).
        reset_reason: why the tracks were just reset (a stamp that went backwards), for one log
            line; None normally.
        stamp_sec: the frame's header time.
        image_size: (height, width) of the frame.
    """

    detect: bool
    boxes: np.ndarray
    box_scores: np.ndarray
    reset_reason: str | None = None
    stamp_sec: float = 0.0
    image_size: tuple[int, int] = (0, 0)


@dataclass
class TrackerStats:
    """Counters since the tracker was made (for logs, diagnostics and tests)."""

    frames: int = 0
    detector_runs: int = 0
    reused_frames: int = 0
    dropped_reused: int = 0
    resets: int = 0
    tracks_started: int = 0
    #: Times a track's filters restarted from the raw pose (:data:`JUMP_OKS`).
    filter_restarts: int = 0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), ``x, y, w, h``: (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def oks(
    a: np.ndarray, b: np.ndarray, areas: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Object keypoint similarity (COCO's, sigmas of :mod:`pose_ros.keypoints`) of every pose of
    ``a`` with every pose of ``b``, over the keypoints confident (score >= ``threshold``) in both.

    Args:
        a: (N, 17, 3) ``x, y, score``.
        b: (M, 17, 3).
        areas: (N,) object areas in pixels² (the scale of ``a``'s poses).

    Returns:
        (N, M) OKS in 0..1, and (N, M) bool: whether any keypoint was shared (else OKS is 0).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    b = np.asarray(b, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)  # (N, M, 17)
    scale = 2.0 * np.maximum(np.asarray(areas, dtype=np.float64), 1.0)[:, None, None] * _KAPPA2
    similarity = np.exp(-d2 / scale)
    shared = (a[:, None, :, 2] >= threshold) & (b[None, :, :, 2] >= threshold)
    count = shared.sum(-1)
    total = np.where(shared, similarity, 0.0).sum(-1)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0), count > 0


def keypoint_box(keypoints: np.ndarray, threshold: float) -> np.ndarray | None:
    """The person box a pose implies: the box around the keypoints scoring at least ``threshold``,
    enlarged about its centre by the crop padding (``geometry.DEFAULT_PADDING``), as mmpose's pose
    tracking does. None with fewer than 3 such keypoints or a degenerate extent.

    Args:
        keypoints: (17, 3) ``x, y, score``.

    Returns:
        (4,) float32 ``x, y, w, h`` or None.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    confident = keypoints[keypoints[:, 2] >= threshold, :2]
    if len(confident) < _MIN_REUSE_KEYPOINTS:
        return None
    low, high = confident.min(0), confident.max(0)
    size = (high - low) * geometry.DEFAULT_PADDING
    if size.min() < 2.0:
        return None
    center = (low + high) * 0.5
    return np.array([*(center - size * 0.5), *size], dtype=np.float32)


def _to_cxcywh(box: np.ndarray) -> np.ndarray:
    x, y, w, h = np.asarray(box, dtype=np.float64)
    return np.array([x + w * 0.5, y + h * 0.5, w, h])


def _to_xywh(state: np.ndarray) -> np.ndarray:
    cx, cy, w, h = state
    w, h = max(w, 1.0), max(h, 1.0)
    return np.array([cx - w * 0.5, cy - h * 0.5, w, h], dtype=np.float32)


@dataclass
class _Track:
    """One person over time. ``state`` is the box as (cx, cy, w, h) at ``last_seen``."""

    key: int
    state: np.ndarray
    keypoints: np.ndarray
    score: float
    last_seen: float
    track_id: int = -1
    hits: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    seen_last_frame: bool = True
    has_velocity: bool = False
    filters: dict[str, OneEuroFilter] = field(default_factory=dict)
    #: The last published (smoothed) keypoints (17, 3) and their time: the jump rule's reference.
    smoothed: np.ndarray | None = None
    smoothed_at: float = 0.0
    #: The box of the last detection and its own velocity: between detections the box is carried
    #: by the network's keypoints, which can drift (a poor or untrained network); the detection
    #: that follows is matched against this anchor as well.
    anchor_state: np.ndarray | None = None
    anchor_time: float = 0.0
    anchor_velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))

    def __post_init__(self) -> None:
        if self.anchor_state is None:
            self.anchor_state, self.anchor_time = self.state.copy(), self.last_seen

    def predicted_anchor_box(self, stamp: float) -> np.ndarray:
        elapsed = max(stamp - self.anchor_time, 0.0)
        return _to_xywh(self.anchor_state + self.anchor_velocity * elapsed)

    def predicted_state(self, stamp: float) -> np.ndarray:
        return self.state + self.velocity * max(stamp - self.last_seen, 0.0)

    def predicted_box(self, stamp: float) -> np.ndarray:
        return _to_xywh(self.predicted_state(stamp))

    def predicted_keypoints(self, stamp: float) -> np.ndarray:
        """The last pose moved with the box centre and scaled with its size."""
        predicted = self.predicted_state(stamp)
        out = self.keypoints.astype(np.float64, copy=True)
        ratio = predicted[2:] / np.maximum(self.state[2:], 1.0)
        out[:, :2] = predicted[:2] + (out[:, :2] - self.state[:2]) * ratio
        return out

    def observe(
        self, state: np.ndarray, keypoints: np.ndarray, score: float, t: float, detected: bool
    ) -> None:
        if detected:
            elapsed = t - self.anchor_time
            if elapsed > 0:
                measured = (state - self.anchor_state) / elapsed
                gain = _VELOCITY_GAIN if self.has_velocity else 1.0
                self.anchor_velocity = (1 - gain) * self.anchor_velocity + gain * measured
            self.anchor_state, self.anchor_time = state.copy(), t
        dt = t - self.last_seen
        if dt > 0:
            measured = (state - self.state) / dt
            if self.has_velocity:
                self.velocity = (1 - _VELOCITY_GAIN) * self.velocity + _VELOCITY_GAIN * measured
            else:
                self.velocity = measured
                self.has_velocity = True
        self.state = state
        self.keypoints = np.asarray(keypoints, dtype=np.float64)
        self.score = score
        self.last_seen = t
        self.hits += 1
        self.seen_last_frame = True


class PoseTracker:
    """Track ids, One-Euro smoothing and detection reuse for one camera stream.

    Args:
        tracking: tracker settings.
        smoothing: One-Euro settings.
        detector_interval: run the detector every N-th frame (1 = every frame); in between the
            confirmed tracks' boxes are reused (built from their last keypoints).
        reuse_score_threshold: a person found in a reused box and scoring below this is dropped
            and the next frame detects.
        keypoint_threshold: keypoints scoring at least this count as confident (OKS, reused boxes,
            smoothing updates); the pipeline's keypoint threshold.
        ids: where track ids come from; None: a counter of this tracker's own (ids from 1).
    """

    def __init__(
        self,
        tracking: TrackingConfig | None = None,
        smoothing: SmoothingConfig | None = None,
        detector_interval: int = 1,
        reuse_score_threshold: float = DEFAULT_REUSE_SCORE_THRESHOLD,
        keypoint_threshold: float = 0.2,
        ids: TrackIds | None = None,
    ) -> None:
        self.tracking = TrackingConfig()
        self.smoothing = SmoothingConfig()
        self.detector_interval = 1
        self.reuse_score_threshold = DEFAULT_REUSE_SCORE_THRESHOLD
        self.keypoint_threshold = 0.2
        self.configure(
            tracking=tracking or TrackingConfig(),
            smoothing=smoothing or SmoothingConfig(),
            detector_interval=detector_interval,
            reuse_score_threshold=reuse_score_threshold,
            keypoint_threshold=keypoint_threshold,
        )
        self.stats = TrackerStats()
        self._tracks: list[_Track] = []
        self._next_key = 0
        self._ids = ids if ids is not None else TrackIds()
        self._last_stamp: float | None = None
        self._plan: FramePlan | None = None
        #: The plan of the latest frame (its ``reset_reason`` is for the caller's log).
        self.last_plan: FramePlan | None = None
        self._frames_since_detection = 0
        self._force_detection = True

    # ----------------------------------------------------------------- settings
    def configure(
        self,
        *,
        tracking: TrackingConfig | None = None,
        smoothing: SmoothingConfig | None = None,
        detector_interval: int | None = None,
        reuse_score_threshold: float | None = None,
        keypoint_threshold: float | None = None,
    ) -> None:
        """Apply new settings (between frames). Tracks and ids are kept; turning tracking off
        forgets the tracks."""
        if detector_interval is not None:
            if (
                isinstance(detector_interval, bool)
                or not isinstance(detector_interval, int)
                or detector_interval < 1
            ):
                raise ValueError(
                    f"detector.interval must be an integer >= 1, got {detector_interval!r}"
                )
            self.detector_interval = detector_interval
        for name, value in (
            ("reuse_score_threshold", reuse_score_threshold),
            ("keypoint_threshold", keypoint_threshold),
        ):
            if value is not None:
                if not (_real(value) and 0.0 <= value <= 1.0):
                    raise ValueError(f"{name} must be in [0, 1], got {value!r}")
                setattr(self, name, float(value))
        if smoothing is not None:
            self.smoothing = smoothing
            for track in getattr(self, "_tracks", []):
                for name, one_euro in track.filters.items():
                    one_euro.reconfigure(smoothing if name == "xy" else smoothing.for_positions())
        if tracking is not None:
            if not tracking.enabled and getattr(self, "_tracks", None):
                self._tracks.clear()
            self.tracking = tracking

    def reset(self) -> None:
        """Forget every track (ids keep counting: an id is never reused within a run)."""
        self._tracks.clear()
        self._last_stamp = None
        self._plan = None
        self._force_detection = True
        self._frames_since_detection = 0

    @property
    def track_count(self) -> int:
        """Tracks alive (confirmed or not)."""
        return len(self._tracks)

    # ----------------------------------------------------------------- per frame
    def begin_frame(self, stamp_sec: float, image_size: tuple[int, int]) -> FramePlan:
        """Start a frame: age the tracks and decide whether the detector runs.

        Args:
            stamp_sec: the image's header time in seconds.
            image_size: (height, width) of the image (reused boxes are clipped to it).
        """
        if not math.isfinite(stamp_sec):
            raise ValueError(f"stamp must be a finite number of seconds, got {stamp_sec!r}")
        reset_reason = None
        if self._last_stamp is not None and stamp_sec < self._last_stamp:
            reset_reason = (
                f"image stamp went backwards ({self._last_stamp:.3f} s -> {stamp_sec:.3f} s, "
                f"a looping bag?): {len(self._tracks)} track(s) reset"
            )
            self.reset()
            self.stats.resets += 1
        self._last_stamp = stamp_sec
        self.stats.frames += 1
        max_age = self.tracking.max_age_sec
        alive = [t for t in self._tracks if stamp_sec - t.last_seen <= max_age]
        if len(alive) < len(self._tracks):
            self._force_detection = True
        self._tracks = alive
        empty = np.zeros((0, 4), np.float32)
        plan = FramePlan(
            True, empty, np.zeros(0, np.float32), reset_reason, stamp_sec, tuple(image_size)
        )
        reuse = self._reuse_boxes(stamp_sec, image_size) if self._may_reuse() else None
        if reuse is not None:
            plan = dataclasses.replace(plan, detect=False, boxes=reuse[0], box_scores=reuse[1])
            self._frames_since_detection += 1
            self.stats.reused_frames += 1
        else:
            self._frames_since_detection = 0
            self._force_detection = False
            self.stats.detector_runs += 1
        self._plan = self.last_plan = plan
        return plan

    def _may_reuse(self) -> bool:
        if not self.tracking.enabled or self.detector_interval <= 1 or self._force_detection:
            return False
        if self._frames_since_detection + 1 >= self.detector_interval:
            return False
        confirmed = [t for t in self._tracks if t.track_id >= 0]
        # A track not yet confirmed or not seen last frame needs the detector to (re)find it.
        return (
            bool(confirmed)
            and len(confirmed) == len(self._tracks)
            and all(t.seen_last_frame for t in confirmed)
        )

    def _reuse_boxes(
        self, stamp: float, image_size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        height, width = image_size
        boxes, scores = [], []
        for track in self._tracks:
            box = keypoint_box(track.keypoints, self.keypoint_threshold)
            if box is None:
                return None
            # Move the keypoint box as the track moves: its centre by the velocity, its size by
            # the predicted change of the box size.
            predicted = track.predicted_state(stamp)
            ratio = predicted[2:] / np.maximum(track.state[2:], 1.0)
            state = _to_cxcywh(box)
            state[:2] += predicted[:2] - track.state[:2]
            state[2:] *= ratio
            clipped = geometry.clip_boxes(_to_xywh(state)[None], width, height)[0]
            if clipped[2] < 2 or clipped[3] < 2:
                return None
            boxes.append(clipped)
            scores.append(track.score)
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        overlap = box_iou(boxes, boxes)
        np.fill_diagonal(overlap, 0.0)
        if overlap.size and overlap.max() > _MAX_REUSE_OVERLAP:
            # People close together: a crop holds two of them and may follow the wrong one.
            return None
        return boxes, np.array(scores, np.float32)

    def select_detections(
        self, plan: FramePlan, boxes: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The detector's boxes worth estimating: every box at or above the high threshold, and the
        low-score boxes that overlap the predicted box of a track no high box covers (the only ones
        the second stage could match). Keeps one network call per frame.

        Args:
            plan: this frame's plan.
            boxes: (N, 4) ``x, y, w, h`` from the detector (its threshold lowered to the floor).
            scores: (N,) their scores.

        Returns:
            (M, 4) boxes and (M,) scores, a subset in the given order.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        config = self.tracking
        high = scores >= config.score_threshold
        if not config.enabled:
            return boxes[high], scores[high]
        low = ~high & (scores >= config.low_score_threshold)
        keep = high.copy()
        if low.any() and self._tracks:
            predicted = np.array([t.predicted_box(plan.stamp_sec) for t in self._tracks])
            anchors = np.array([t.predicted_anchor_box(plan.stamp_sec) for t in self._tracks])
            open_tracks = np.ones(len(self._tracks), bool)
            if high.any():
                iou = np.maximum(box_iou(predicted, boxes[high]), box_iou(anchors, boxes[high]))
                rows, cols = linear_sum_assignment(-iou)
                matched = rows[iou[rows, cols] >= config.match_threshold]
                open_tracks[matched] = False
            if open_tracks.any():
                low_index = np.flatnonzero(low)
                iou = np.maximum(
                    box_iou(predicted[open_tracks], boxes[low_index]),
                    box_iou(anchors[open_tracks], boxes[low_index]),
                )
                keep[low_index[(iou >= config.match_threshold).any(axis=0)]] = True
        return boxes[keep], scores[keep]

    def end_frame(self, persons: Sequence[Person]) -> list[Person]:
        """Finish a frame: match the persons to the tracks, give ids, smooth keypoints (and 3D
        positions), drop reused persons that scored too low.

        Args:
            persons: the pipeline's persons for this frame's boxes (the detector's, after
                :meth:`select_detections`, or ``plan.boxes``), positions attached or not.

        Returns:
            the persons to publish, sorted by score (descending): ``track_id`` set for confirmed
            tracks (-1 otherwise), ``x, y`` (and positions) smoothed when smoothing is on.
        """
        if self._plan is None:
            raise RuntimeError("end_frame() without begin_frame()")
        plan, self._plan = self._plan, None
        persons = list(persons)
        if not self.tracking.enabled:
            return sorted(persons, key=lambda p: p.score, reverse=True)
        stamp = plan.stamp_sec
        for track in self._tracks:
            track.seen_last_frame = False
        if plan.detect:
            pairs = self._associate(persons, stamp)
        else:
            pairs = self._match_reused(plan, persons)
        out = []
        matched_tracks = set()
        for index, person in enumerate(persons):
            track = pairs.get(index)
            if track is None:
                if not plan.detect or person.box_score < self.tracking.score_threshold:
                    continue  # a low-score box never starts a track
                track = self._start_track(person, stamp)
            else:
                if not plan.detect and person.score < self.reuse_score_threshold:
                    # The reused box lost the person: drop it and let the detector look again.
                    self.stats.dropped_reused += 1
                    self._force_detection = True
                    continue
                state = (
                    _to_cxcywh(person.box) if plan.detect else self._carried_state(track, person)
                )
                track.observe(state, person.keypoints, person.box_score, stamp, plan.detect)
                if track.track_id < 0 and track.hits >= self.tracking.min_hits:
                    track.track_id = self._ids.next()
            matched_tracks.add(track.key)
            out.append(self._finish_person(track, person, stamp, plan.image_size))
        lost_confirmed = False
        kept = []
        for track in self._tracks:
            if track.key in matched_tracks:
                kept.append(track)
            elif track.track_id >= 0:
                kept.append(track)  # confirmed: survives up to max_age unseen
                lost_confirmed = True
            # an unconfirmed track missed once is dropped (a false detection, most likely)
        self._tracks = kept
        if lost_confirmed:
            self._force_detection = True
        out.sort(key=lambda p: p.score, reverse=True)
        return out

    # ----------------------------------------------------------------- internals
    def _associate(self, persons: list[Person], stamp: float) -> dict[int, _Track]:
        """Two-stage ByteTrack matching: person index -> track."""
        config = self.tracking
        pairs: dict[int, _Track] = {}
        if not self._tracks or not persons:
            return pairs
        scores = np.array([p.box_score for p in persons])
        boxes = np.array([p.box for p in persons], np.float64)
        keypoints = np.array([p.keypoints for p in persons], np.float64)
        predicted_boxes = np.array([t.predicted_box(stamp) for t in self._tracks])
        anchors = np.array([t.predicted_anchor_box(stamp) for t in self._tracks])
        iou = np.maximum(box_iou(predicted_boxes, boxes), box_iou(anchors, boxes))
        high = np.flatnonzero(scores >= config.score_threshold)
        low = np.flatnonzero(scores < config.score_threshold)
        open_tracks = np.arange(len(self._tracks))
        if len(high):
            predicted_poses = np.array([t.predicted_keypoints(stamp) for t in self._tracks])
            areas = predicted_boxes[:, 2] * predicted_boxes[:, 3]
            pose_similarity, shared = oks(
                predicted_poses, keypoints[high], areas, self.keypoint_threshold
            )
            w = config.iou_weight
            similarity = np.where(
                shared, w * iou[:, high] + (1 - w) * pose_similarity, iou[:, high]
            )
            unmatched = np.ones(len(self._tracks), bool)
            unmatched[self._assign(similarity, open_tracks, high, pairs)] = False
            open_tracks = np.flatnonzero(unmatched)
        if len(low) and len(open_tracks):
            self._assign(iou[np.ix_(open_tracks, low)], open_tracks, low, pairs)
        return pairs

    def _assign(
        self,
        similarity: np.ndarray,
        track_rows: np.ndarray,
        person_cols: np.ndarray,
        pairs: dict[int, _Track],
    ) -> np.ndarray:
        """Optimal assignment on ``similarity`` (rows: tracks ``track_rows``, columns: persons
        ``person_cols``) above the match threshold; returns the matched track indices."""
        similarity = np.asarray(similarity)
        if similarity.shape[0] != len(track_rows):
            similarity = similarity[track_rows]
        rows, cols = linear_sum_assignment(1.0 - similarity)
        good = similarity[rows, cols] >= self.tracking.match_threshold
        for row, col in zip(rows[good], cols[good], strict=True):
            pairs[int(person_cols[col])] = self._tracks[int(track_rows[row])]
        return track_rows[rows[good]]

    def _match_reused(self, plan: FramePlan, persons: list[Person]) -> dict[int, _Track]:
        """On a reuse frame each person's box is one of ``plan.boxes``, in track order."""
        pairs: dict[int, _Track] = {}
        for index, person in enumerate(persons):
            diff = np.abs(plan.boxes - np.asarray(person.box, np.float32)[None]).sum(axis=1)
            if len(diff) and diff.min() < 1e-3:
                pairs[index] = self._tracks[int(diff.argmin())]
        return pairs

    def _carried_state(self, track: _Track, person: Person) -> np.ndarray:
        """A track's box on a reuse frame: its detector-sized box moved and scaled as the box
        around its confident keypoints moved and scaled (the reused box itself is larger than a
        detector's, and taking it as is would look like a change of size)."""
        old = keypoint_box(track.keypoints, self.keypoint_threshold)
        new = keypoint_box(person.keypoints, self.keypoint_threshold)
        if old is None or new is None:
            return track.state.copy()
        old_state, new_state = _to_cxcywh(old), _to_cxcywh(new)
        state = track.state.copy()
        state[:2] += new_state[:2] - old_state[:2]
        state[2:] *= new_state[2:] / np.maximum(old_state[2:], 1.0)
        return state

    def _start_track(self, person: Person, stamp: float) -> _Track:
        track = _Track(
            key=self._next_key,
            state=_to_cxcywh(person.box),
            keypoints=np.asarray(person.keypoints, np.float64),
            score=float(person.box_score),
            last_seen=stamp,
        )
        self._next_key += 1
        self.stats.tracks_started += 1
        if self.tracking.min_hits <= 1:
            track.track_id = self._ids.next()
        self._tracks.append(track)
        return track

    def _finish_person(
        self, track: _Track, person: Person, stamp: float, image_size: tuple[int, int]
    ) -> Person:
        """The person with its track id and, with smoothing on, smoothed ``x, y`` / positions
        (restarted from the raw pose after a jump), kept inside the image."""
        changes: dict[str, object] = {"track_id": track.track_id}
        if self.smoothing.enabled:
            keypoints = np.array(person.keypoints, dtype=np.float32, copy=True)
            if self._jumped(track, keypoints, person.box, stamp):
                track.filters.clear()  # the first sample of a new filter passes unchanged
                self.stats.filter_restarts += 1
            confident = keypoints[:, 2] >= self.keypoint_threshold
            xy = self._filter(track, "xy", (NUM_KEYPOINTS, 2))(
                stamp, keypoints[:, :2], confident[:, None]
            )
            keypoints[:, :2] = _inside(xy, image_size)
            track.smoothed, track.smoothed_at = keypoints.copy(), stamp
            changes["keypoints"] = keypoints
            if person.positions is not None or person.center is not None:
                # Positions and centre share the metre settings: one filter over both, the
                # centre as an 18th row (a missing value is NaN: it passes through, no update).
                metres = np.full((NUM_KEYPOINTS + 1, 3), np.nan)
                if person.positions is not None:
                    metres[:NUM_KEYPOINTS] = person.positions
                if person.center is not None:
                    metres[NUM_KEYPOINTS] = person.center
                update = np.append(confident, True)[:, None]
                smoothed = self._filter(track, "metres", metres.shape)(stamp, metres, update)
                smoothed = smoothed.astype(np.float32)
                if person.positions is not None:
                    changes["positions"] = smoothed[:NUM_KEYPOINTS]
                if person.center is not None:
                    changes["center"] = smoothed[NUM_KEYPOINTS]
        return dataclasses.replace(person, **changes)

    def _jumped(self, track: _Track, keypoints: np.ndarray, box: np.ndarray, stamp: float) -> bool:
        """Whether the raw pose is too far (OKS < :data:`JUMP_OKS`) from the last smoothed pose
        moved by the track's velocity to ``stamp``; False without a smoothed pose or without
        confident keypoints in common."""
        if track.smoothed is None or "xy" not in track.filters:
            return False
        # The OKS of :func:`oks` for this one pair, over the raw pose's confident keypoints
        # (written out: this runs for every tracked person of every frame).
        expected = track.smoothed[:, :2] + track.velocity[:2] * max(stamp - track.smoothed_at, 0.0)
        confident = keypoints[:, 2] >= self.keypoint_threshold
        if not confident.any():
            return False
        area = max(float(box[2]), 1.0) * max(float(box[3]), 1.0)
        d2 = ((keypoints[confident, :2] - expected[confident]) ** 2).sum(-1)
        similarity = np.exp(-d2 / (2.0 * area * _KAPPA2[confident])).mean()
        return bool(similarity < JUMP_OKS)

    def _filter(self, track: _Track, name: str, shape: tuple[int, ...]) -> OneEuroFilter:
        one_euro = track.filters.get(name)
        if one_euro is None:
            # Pixels with the pixel settings, metres (positions and centre) with the metre ones.
            config = self.smoothing if name == "xy" else self.smoothing.for_positions()
            one_euro = track.filters[name] = OneEuroFilter(shape, config)
        return one_euro


def _inside(xy: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(17, 2) pixels clipped into an image of (height, width) (no clipping for an unknown size):
    a smoothed keypoint can overshoot the border the raw keypoints were clipped to."""
    height, width = image_size
    if height <= 0 or width <= 0:
        return xy
    return np.minimum(np.maximum(xy, 0.0), (width - 1, height - 1))
