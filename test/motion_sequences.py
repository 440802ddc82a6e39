"""Box + keypoint sequences with known identities, built from the real keypoint layouts of the
annotated COCO persons (../shared/data/.../coco/test_coco.json) moved along smooth seeded
trajectories: crossing paths, a person hidden for a few frames, one leaving and a new one entering,
a person walking towards the camera (growing), five people weaving.

Used by test_tracking.py (identities kept on exact inputs; id switches and IDF1 with noise) and by
bench/tracking_bench.py (the accuracy cost of the detector interval). No images: the tracker's
inputs are boxes and keypoints. Where a pose network is needed (boxes carried over from the
previous frame), :func:`simulated_pose` stands in for it: it returns the true pose of the person
the crop holds, losing the keypoints outside the crop. That models what box reuse can cost (a crop
that misses part of the person, a person who enters between detections) and nothing else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from pose_ros import geometry
from pose_ros.pipeline import Person, rescore
from pose_ros.tracking import PoseTracker, oks

FPS = 30.0
IMAGE_SIZE = (480, 640)  # height, width
#: The score a labelled keypoint gets (a confident network).
KEYPOINT_SCORE = 0.9
#: Input aspect of the common 256x192 networks (what simulated_pose crops with).
ASPECT = 192 / 256


@dataclass(frozen=True)
class Body:
    """One annotated COCO person, normalised: keypoints relative to the box centre in units of
    the box height, the box's width/height ratio, which keypoints are labelled."""

    offsets: np.ndarray  # (17, 2)
    labelled: np.ndarray  # (17,) bool
    aspect: float
    annotation_id: int


@dataclass
class Observation:
    """One person in one frame as a detector + pose network would report it."""

    identity: int  # -1: a false detection
    box: np.ndarray  # (4,) x, y, w, h
    box_score: float
    keypoints: np.ndarray  # (17, 3)


@dataclass
class MotionSequence:
    name: str
    stamps: np.ndarray  # (F,) seconds
    frames: list[list[Observation]]
    #: Per frame, every person truly in view (also those the detector missed).
    truth: list[list[Observation]] = field(default_factory=list)
    image_size: tuple[int, int] = IMAGE_SIZE
    #: Pixel jitter of the keypoints the (simulated) network reports; 0 for exact inputs.
    keypoint_sigma: float = 0.0


def load_bodies(annotations: Path, min_keypoints: int = 8) -> list[Body]:
    """The annotated persons with at least ``min_keypoints`` labelled keypoints."""
    data = json.loads(Path(annotations).read_text())
    bodies = []
    for ann in data["annotations"]:
        if ann["num_keypoints"] < min_keypoints:
            continue
        keypoints = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        x, y, w, h = ann["bbox"]
        center = np.array([x + w / 2, y + h / 2])
        bodies.append(
            Body(
                offsets=(keypoints[:, :2] - center) / h,
                labelled=keypoints[:, 2] > 0,
                aspect=w / h,
                annotation_id=int(ann["id"]),
            )
        )
    return bodies


def place(body: Body, identity: int, cx: float, cy: float, height: float) -> Observation:
    """The body with its box centred at (cx, cy) and ``height`` pixels tall."""
    width = body.aspect * height
    box = np.array([cx - width / 2, cy - height / 2, width, height], np.float32)
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, :2] = np.array([cx, cy]) + body.offsets * height
    keypoints[~body.labelled, :2] = (cx, cy)
    keypoints[:, 2] = np.where(body.labelled, KEYPOINT_SCORE, 0.0)
    return Observation(identity, box, 0.9, keypoints)


Path2D = Callable[[float], tuple[float, float, float] | None]  # t -> (cx, cy, height) or None


def build(name: str, bodies: list[Body], paths: list[Path2D], frames: int) -> MotionSequence:
    """A sequence from per-actor paths (None = not in view at that time)."""
    stamps = 1_700_000_000.0 + np.arange(frames) / FPS
    truth = []
    for index in range(frames):
        t = index / FPS
        people = []
        for identity, path in enumerate(paths):
            where = path(t)
            if where is not None:
                people.append(place(bodies[identity % len(bodies)], identity, *where))
        truth.append(people)
    return MotionSequence(name, stamps, [list(people) for people in truth], truth)


def _hide(sequence: MotionSequence, identity: int, frames: range) -> None:
    """The detector misses ``identity`` during ``frames`` (the person is still in view)."""
    for index in frames:
        sequence.frames[index] = [o for o in sequence.frames[index] if o.identity != identity]


def standard_sequences(bodies: list[Body], seed: int = 0) -> list[MotionSequence]:
    """The scenarios of the tests and the benchmark, each 2-3 s at 30 frames/s."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE_SIZE
    sequences = []

    # Two people walking across each other's path; the rear one is unseen for 4 frames.
    crossing = build(
        "crossing",
        bodies,
        [
            lambda t: (100 + 180 * t, 250 + 10 * math.sin(3 * t), 260.0),
            lambda t: (540 - 170 * t, 240.0, 250.0),
        ],
        75,
    )
    _hide(crossing, 1, range(35, 39))
    sequences.append(crossing)

    # A person occluded for 10 frames (1/3 s, within max_age) next to a static one.
    occluded = build(
        "occlusion",
        bodies[2:],
        [lambda t: (150 + 60 * t, 260.0, 240.0), lambda t: (470.0, 250.0, 230.0)],
        75,
    )
    _hide(occluded, 0, range(25, 35))
    sequences.append(occluded)

    # One leaves on the right; a new one enters from the left later: a new id, never the old one.
    leaving = build(
        "leave_enter",
        bodies[4:],
        [
            lambda t: (350 + 250 * t, 250.0, 240.0) if t < 1.2 else None,
            lambda t: (200.0, 240.0, 220.0),
            lambda t: (-40 + 200 * t, 260.0, 230.0) if t >= 1.6 else None,
        ],
        90,
    )
    sequences.append(leaving)

    # Walking towards the camera: the box grows 2.5x; another person stands still.
    scale = build(
        "scale_change",
        bodies[6:],
        [
            lambda t: (260 + 20 * t, 200 + 50 * t, 150 + 110 * t),
            lambda t: (540.0, 250.0, 200.0),
        ],
        75,
    )
    sequences.append(scale)

    # Five people weaving on seeded smooth paths.
    phases = rng.uniform(0, 2 * math.pi, size=(5, 2))
    speeds = rng.uniform(0.4, 0.9, size=5)
    paths = []
    for k in range(5):
        base_x = 70 + k * 125

        def path(
            t: float,
            base_x: float = base_x,
            phase: np.ndarray = phases[k],
            speed: float = speeds[k],
        ) -> tuple[float, float, float]:
            return (
                base_x + 70 * math.sin(speed * 2 * t + phase[0]),
                height * 0.5 + 30 * math.sin(speed * t + phase[1]),
                190 + 30 * math.sin(speed * t),
            )

        paths.append(path)
    sequences.append(build("five_weaving", bodies, paths, 90))
    assert all(0 < s.frames[0][0].box[2] < width for s in sequences)
    return sequences


def add_noise(
    sequence: MotionSequence,
    seed: int,
    *,
    keypoint_sigma: float = 3.0,
    box_sigma: float = 4.0,
    drop_rate: float = 0.08,
    low_rate: float = 0.08,
    false_rate: float = 0.1,
) -> MotionSequence:
    """A noisy copy: jittered keypoints and boxes, detections dropped, detections with a low score
    (as when partly occluded), and false detections (random boxes, random keypoints)."""
    rng = np.random.default_rng(seed)
    height, width = sequence.image_size
    frames = []
    for people in sequence.frames:
        noisy = []
        for obs in people:
            if rng.random() < drop_rate:
                continue
            keypoints = obs.keypoints.copy()
            keypoints[:, :2] += rng.normal(0, keypoint_sigma, (17, 2))
            keypoints[:, 2] = np.where(
                keypoints[:, 2] > 0, np.clip(rng.normal(0.8, 0.1, 17), 0.3, 1.0), 0.0
            )
            box = obs.box + rng.normal(0, box_sigma, 4).astype(np.float32)
            score = rng.uniform(0.15, 0.45) if rng.random() < low_rate else rng.uniform(0.6, 0.98)
            noisy.append(Observation(obs.identity, box, float(score), keypoints.astype(np.float32)))
        if rng.random() < false_rate:
            w, h = rng.uniform(40, 120), rng.uniform(80, 240)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            keypoints = np.zeros((17, 3), np.float32)
            keypoints[:, 0] = rng.uniform(x, x + w, 17)
            keypoints[:, 1] = rng.uniform(y, y + h, 17)
            keypoints[:, 2] = rng.uniform(0.0, 0.5, 17)
            noisy.append(
                Observation(
                    -1, np.array([x, y, w, h], np.float32), rng.uniform(0.5, 0.7), keypoints
                )
            )
        frames.append(noisy)
    return MotionSequence(
        f"{sequence.name}+noise",
        sequence.stamps,
        frames,
        sequence.truth,
        sequence.image_size,
        keypoint_sigma,
    )


def simulated_pose(
    box: np.ndarray,
    truth: list[Observation],
    rng: np.random.Generator | None = None,
    sigma: float = 0.0,
) -> np.ndarray:
    """What a good pose network returns for a crop of ``box``: the true pose of the person whose
    labelled keypoints the crop (padded, at the network's aspect) holds most of, with the keypoints
    outside the crop lost (score 0, placed at the crop border); all zero scores if none. With
    ``sigma``, the keypoints are jittered as the noisy detections' are (a fair comparison)."""
    center, scale = geometry.box_to_center_scale(np.asarray(box, np.float32), ASPECT)
    low, high = center - scale / 2, center + scale / 2
    best, best_inside = None, 0
    for obs in truth:
        labelled = obs.keypoints[:, 2] > 0
        inside = labelled & np.all(
            (obs.keypoints[:, :2] >= low) & (obs.keypoints[:, :2] <= high), 1
        )
        if inside.sum() > best_inside:
            best, best_inside = (obs, inside), int(inside.sum())
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, :2] = center
    if best is not None:
        obs, inside = best
        keypoints[:, :2] = obs.keypoints[:, :2]
        if rng is not None and sigma > 0:
            keypoints[:, :2] += rng.normal(0, sigma, (17, 2))
        keypoints[:, :2] = np.clip(keypoints[:, :2], low, high)
        keypoints[:, 2] = np.where(inside, obs.keypoints[:, 2], 0.0)
    return keypoints


@dataclass
class RunResult:
    """Per frame, the published persons as (identity, track id, keypoints)."""

    outputs: list[list[tuple[int, int, np.ndarray]]]
    detector_runs: int


def run_tracker(sequence: MotionSequence, tracker: PoseTracker) -> RunResult:
    """Feed a sequence through the tracker as the pipeline would: detections when the plan says
    so (their keypoints as observed), :func:`simulated_pose` in the reused boxes otherwise."""
    outputs = []
    rng = np.random.default_rng(7)
    runs_before = tracker.stats.detector_runs
    for stamp, observed, truth in zip(
        sequence.stamps, sequence.frames, sequence.truth, strict=True
    ):
        plan = tracker.begin_frame(float(stamp), sequence.image_size)
        if plan.detect:
            boxes = np.array([o.box for o in observed], np.float32).reshape(-1, 4)
            scores = np.array([o.box_score for o in observed], np.float32)
            boxes, scores = tracker.select_detections(plan, boxes, scores)
            by_box = {o.box.tobytes(): o for o in observed}
            chosen = [by_box[b.tobytes()] for b in boxes]
            keypoints = [o.keypoints for o in chosen]
        else:
            boxes, scores = plan.boxes, plan.box_scores
            keypoints = [simulated_pose(b, truth, rng, sequence.keypoint_sigma) for b in boxes]
        persons = []
        if len(boxes):
            kp = np.array(keypoints, np.float32)
            person_scores = rescore(scores, kp[..., 2])
            persons = [
                Person(boxes[i].copy(), float(scores[i]), float(person_scores[i]), kp[i])
                for i in range(len(boxes))
            ]
        published = tracker.end_frame(persons)
        frame_out = []
        for person in published:
            frame_out.append((_identity_of(person, truth), person.track_id, person.keypoints))
        outputs.append(frame_out)
    return RunResult(outputs, tracker.stats.detector_runs - runs_before)


def _identity_of(person: Person, truth: list[Observation]) -> int:
    """The true identity of a published person: the true person whose pose it matches best
    (OKS >= 0.5 over the keypoints confident in both), else -1 (a false detection or a crop that
    lost its person). By pose rather than box: reused boxes are larger than detector boxes."""
    if not truth:
        return -1
    true_poses = np.array([o.keypoints for o in truth])
    areas = np.array([o.box[2] * o.box[3] for o in truth])
    similarity, _ = oks(true_poses, np.asarray(person.keypoints)[None], areas, 0.2)
    best = int(similarity[:, 0].argmax())
    return truth[best].identity if similarity[best, 0] >= 0.5 else -1


def id_switches(result: RunResult) -> int:
    """CLEAR-MOT id switches: times a true person's track id differs from the id it last had."""
    last: dict[int, int] = {}
    switches = 0
    for frame in result.outputs:
        for identity, track_id, _ in frame:
            if identity < 0 or track_id < 0:
                continue
            if identity in last and last[identity] != track_id:
                switches += 1
            last[identity] = track_id
    return switches


def idf1(result: RunResult, sequence: MotionSequence) -> float:
    """IDF1 (Ristani et al. 2016): the share of true and predicted detections whose identities
    agree under the best one-to-one map of true identities to track ids (scipy's assignment)."""
    gt_count = sum(len(people) for people in sequence.truth)
    predicted = [(i, k) for frame in result.outputs for i, k, _ in frame if k >= 0]
    identities = sorted({o.identity for people in sequence.truth for o in people})
    track_ids = sorted({k for _, k in predicted})
    if not identities or not track_ids:
        return 0.0
    overlap = np.zeros((len(identities), len(track_ids)))
    for identity, track_id in predicted:
        if identity >= 0:
            overlap[identities.index(identity), track_ids.index(track_id)] += 1
    rows, cols = linear_sum_assignment(-overlap)
    idtp = overlap[rows, cols].sum()
    return float(2 * idtp / (gt_count + len(predicted)))


def keypoint_error(result: RunResult, sequence: MotionSequence) -> tuple[float, float]:
    """Mean pixel error of the published keypoints against the truth (labelled keypoints of the
    persons published), and recall: the share of true person-frames published."""
    errors, found = [], 0
    total = sum(len(people) for people in sequence.truth)
    for frame, truth in zip(result.outputs, sequence.truth, strict=True):
        by_identity = {o.identity: o for o in truth}
        seen = set()
        for identity, _, keypoints in frame:
            if identity < 0 or identity in seen or identity not in by_identity:
                continue
            seen.add(identity)
            true = by_identity[identity].keypoints
            labelled = true[:, 2] > 0
            errors.extend(np.linalg.norm(keypoints[labelled, :2] - true[labelled, :2], axis=1))
        found += len(seen)
    return float(np.mean(errors)) if errors else math.nan, found / max(total, 1)
