"""The tracker: ids on synthetic boxes (crossing, occlusion within max_age, leaving, a stamp going
backwards), ByteTrack's low-score stage, detection reuse, and on real COCO poses in motion
(test/motion_sequences.py): no id switch on exact inputs; id switches and IDF1 with seeded noise."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pose_ros.pipeline import Person
from pose_ros.tracking import PoseTracker, SmoothingConfig, TrackingConfig, box_iou, keypoint_box

sys.path.insert(0, str(Path(__file__).parent))
from motion_sequences import (
    add_noise,
    id_switches,
    idf1,
    keypoint_error,
    load_bodies,
    run_tracker,
    standard_sequences,
)

SIZE = (480, 640)


def person(box: tuple[float, float, float, float], score: float = 0.9) -> Person:
    """A person with a plausible upright pose filling ``box``."""
    x, y, w, h = box
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, 0] = x + w * np.linspace(0.2, 0.8, 17)
    keypoints[:, 1] = y + h * np.linspace(0.1, 0.9, 17)
    keypoints[:, 2] = 0.9
    return Person(np.array(box, np.float32), score, score * 0.9, keypoints)


def step(tracker: PoseTracker, stamp: float, persons: list[Person]) -> list[Person]:
    plan = tracker.begin_frame(stamp, SIZE)
    assert plan.detect
    boxes = np.array([p.box for p in persons], np.float32).reshape(-1, 4)
    scores = np.array([p.box_score for p in persons], np.float32)
    kept, _ = tracker.select_detections(plan, boxes, scores)
    chosen = [p for p in persons if any(np.array_equal(p.box, b) for b in kept)]
    return tracker.end_frame(chosen)


def ids_by_x(out: list[Person]) -> list[int]:
    return [p.track_id for p in sorted(out, key=lambda p: p.box[0])]


def test_crossing_persons_keep_their_ids() -> None:
    tracker = PoseTracker(TrackingConfig(min_hits=2), SmoothingConfig(enabled=False))
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    for frame in range(40):
        t = frame / 10
        a = (50 + 12 * frame, 100, 80, 200)  # left to right
        b = (530 - 12 * frame, 110, 80, 200)  # right to left
        out = step(tracker, t, [person(a), person(b)])
        if frame >= 1:
            by_box = {tuple(np.round(p.box, 3)): p.track_id for p in out}
            seen["a"].add(by_box[tuple(np.round(np.array(a, np.float32), 3))])
            seen["b"].add(by_box[tuple(np.round(np.array(b, np.float32), 3))])
    assert seen == {"a": {1}, "b": {2}}


def test_ids_wait_for_min_hits_and_are_never_reused() -> None:
    tracker = PoseTracker(TrackingConfig(min_hits=3, max_age_sec=0.3))
    box = (100, 100, 80, 200)
    assert [step(tracker, t / 10, [person(box)])[0].track_id for t in range(4)] == [-1, -1, 1, 1]
    # Gone for longer than max_age: the same place later is a new person with a new id.
    for t in range(4, 9):
        assert step(tracker, t / 10, []) == []
    assert tracker.track_count == 0
    later = [step(tracker, t / 10, [person(box)])[0].track_id for t in range(9, 12)]
    assert later == [-1, -1, 2]


def test_occluded_person_comes_back_with_its_id_within_max_age() -> None:
    tracker = PoseTracker(TrackingConfig(min_hits=2, max_age_sec=1.0))
    out = []
    for frame in range(30):
        box = (50 + 8 * frame, 100, 80, 200)
        hidden = 10 <= frame < 16  # 0.6 s unseen, moving on: prediction keeps up
        out.append(step(tracker, frame / 10, [] if hidden else [person(box)]))
    ids = {p.track_id for frame_out in out[1:] for p in frame_out}
    assert ids == {1}
    assert out[16][0].track_id == 1


def test_person_leaving_and_a_new_one_entering() -> None:
    tracker = PoseTracker(TrackingConfig(min_hits=1, max_age_sec=0.5))
    first = [step(tracker, f / 10, [person((100 + 40 * f, 100, 80, 200))]) for f in range(10)]
    assert {p.track_id for out in first for p in out} == {1}
    for f in range(10, 20):
        step(tracker, f / 10, [])
    entering = step(tracker, 2.0, [person((20, 100, 80, 200))])
    assert entering[0].track_id == 2


def test_stamp_going_backwards_resets_with_a_reason() -> None:
    tracker = PoseTracker(TrackingConfig(min_hits=1))
    for f in range(5):
        step(tracker, 100 + f / 10, [person((100, 100, 80, 200))])
    plan = tracker.begin_frame(50.0, SIZE)
    assert plan.reset_reason is not None and "backwards" in plan.reset_reason
    assert tracker.stats.resets == 1
    out = tracker.end_frame([person((100, 100, 80, 200))])
    assert out[0].track_id == 2  # a new track after the reset; 1 is not reused
    assert tracker.begin_frame(50.1, SIZE).reset_reason is None


def test_low_score_box_keeps_a_track_but_never_starts_one() -> None:
    tracker = PoseTracker(TrackingConfig(min_hits=1, score_threshold=0.5))
    for f in range(3):
        step(tracker, f / 10, [person((100 + 5 * f, 100, 80, 200))])
    # The tracked person is partly occluded: the detector's score drops to 0.3.
    out = step(tracker, 0.3, [person((115, 100, 80, 200), 0.3), person((400, 50, 60, 150), 0.3)])
    assert [p.track_id for p in out] == [1]  # the other low box is not kept, starts nothing
    assert tracker.track_count == 1


def test_select_detections_keeps_only_useful_low_boxes() -> None:
    tracker = PoseTracker(TrackingConfig(min_hits=1, score_threshold=0.5, low_score_threshold=0.1))
    step(tracker, 0.0, [person((100, 100, 80, 200)), person((300, 100, 80, 200))])
    plan = tracker.begin_frame(0.1, SIZE)
    boxes = np.array(
        [[100, 100, 80, 200], [305, 100, 80, 200], [500, 100, 80, 200], [102, 98, 80, 200]],
        np.float32,
    )
    scores = np.array([0.9, 0.3, 0.3, 0.05], np.float32)
    kept, kept_scores = tracker.select_detections(plan, boxes, scores)
    # The high box, and the low box on the track the high box does not cover; not the low box far
    # from any track, not the one under the floor.
    np.testing.assert_array_equal(kept, boxes[:2])
    np.testing.assert_array_equal(kept_scores, scores[:2])


def test_tracking_disabled_gives_minus_one_and_raw_keypoints() -> None:
    tracker = PoseTracker(TrackingConfig(enabled=False))
    raw = person((100, 100, 80, 200))
    for f in range(5):
        out = step(tracker, f / 10, [raw])
        assert out[0].track_id == -1 and out[0].keypoints is raw.keypoints


def test_smoothing_removes_jitter_and_stays_on_the_pose_keeping_scores() -> None:
    """A still person whose keypoints jitter (3 px noise per axis, 10 Hz): the smoothed
    keypoints move far less from frame to frame than the raw ones and lie closer to the true
    pose; scores, keypoints below the threshold and positions pass unchanged."""
    tracker = PoseTracker(TrackingConfig(min_hits=1), SmoothingConfig(beta=0.0))
    rng = np.random.default_rng(0)
    clean = person((100, 100, 80, 200)).keypoints[:, :2].copy()
    raw_xy, smooth_xy = [], []
    for f in range(40):
        keypoints = person((100, 100, 80, 200)).keypoints.copy()
        keypoints[:, :2] = clean + rng.normal(0, 3, (17, 2))
        keypoints[:, 2] = rng.uniform(0.3, 1.0, 17)
        keypoints[3, 2] = 0.05  # below the keypoint threshold: never drags the filter
        noisy = Person(
            np.array((100, 100, 80, 200), np.float32),
            0.9,
            0.8,
            keypoints,
            positions=np.full((17, 3), np.nan),
        )
        out = step(tracker, f / 10, [noisy])[0]
        np.testing.assert_array_equal(out.keypoints[:, 2], keypoints[:, 2])
        np.testing.assert_array_equal(out.keypoints[3], keypoints[3])
        assert np.isnan(out.positions).all()
        raw_xy.append(np.delete(keypoints[:, :2], 3, axis=0))
        smooth_xy.append(np.delete(out.keypoints[:, :2], 3, axis=0))
    raw, smooth, truth = np.array(raw_xy), np.array(smooth_xy), np.delete(clean, 3, axis=0)
    np.testing.assert_array_equal(smooth[0], raw[0])  # the first sample passes unchanged

    def jitter(xy: np.ndarray) -> float:  # mean frame-to-frame movement, pixels
        return float(np.linalg.norm(np.diff(xy, axis=0), axis=-1).mean())

    def error(xy: np.ndarray) -> float:  # RMS distance to the true pose, pixels
        return float(np.sqrt((np.linalg.norm(xy - truth, axis=-1) ** 2).mean()))

    settled = slice(5, None)  # after the first frames (the filter starts at the first sample)
    print(
        f"jitter raw {jitter(raw):.2f} px, smoothed {jitter(smooth):.2f} px; error raw "
        f"{error(raw[settled]):.2f} px, smoothed {error(smooth[settled]):.2f} px"
    )
    # One-Euro at rest is an exponential average with alpha = 1 / (1 + 1 / (2 pi 1 Hz 0.1 s))
    # = 0.386: the frame-to-frame movement falls to about 0.3 of the raw one and the noise to
    # about 0.5; the bounds leave room for the 40-frame sample.
    assert jitter(smooth) < 0.45 * jitter(raw)
    assert error(smooth[settled]) < 0.6 * error(raw[settled])
    bias = np.abs((smooth[settled] - truth).mean(axis=(0, 1)))  # no offset on either axis
    assert bias.max() < 0.5, bias


def test_detection_reuse_runs_the_detector_one_frame_in_n() -> None:
    tracker = PoseTracker(TrackingConfig(min_hits=1), detector_interval=5)
    detected = []
    for f in range(20):
        box = (100 + 4 * f, 100, 80, 200)
        plan = tracker.begin_frame(f / 10, SIZE)
        detected.append(plan.detect)
        if plan.detect:
            out = tracker.end_frame([person(box)])
        else:
            assert len(plan.boxes) == 1
            # The reused box is the padded box around the last keypoints, moved by the velocity.
            assert box_iou(plan.boxes, np.array([box]))[0, 0] > 0.5
            out = tracker.end_frame([Person(plan.boxes[0], 0.9, 0.8, person(box).keypoints)])
        assert [p.track_id for p in out] == [1]
    assert detected == [f % 5 == 0 for f in range(20)]
    assert tracker.stats.detector_runs == 4


def test_reused_person_scoring_low_is_dropped_and_forces_detection() -> None:
    tracker = PoseTracker(TrackingConfig(min_hits=1), detector_interval=5)
    box = (100, 100, 80, 200)
    tracker.begin_frame(0.0, SIZE)
    tracker.end_frame([person(box)])
    plan = tracker.begin_frame(0.1, SIZE)
    assert not plan.detect
    lost = Person(plan.boxes[0], 0.9, 0.05, np.zeros((17, 3), np.float32))
    assert tracker.end_frame([lost]) == []
    assert tracker.stats.dropped_reused == 1
    assert tracker.begin_frame(0.2, SIZE).detect


def test_keypoint_box_is_padded_like_the_crop() -> None:
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, 0] = np.linspace(100, 180, 17)
    keypoints[:, 1] = np.linspace(50, 250, 17)
    keypoints[:, 2] = 0.9
    np.testing.assert_allclose(keypoint_box(keypoints, 0.2), [90, 25, 100, 250])
    keypoints[2:, 2] = 0.0
    assert keypoint_box(keypoints, 0.2) is None  # fewer than 3 confident keypoints


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="min_hits"):
        TrackingConfig(min_hits=0)
    with pytest.raises(ValueError, match="max_age_sec"):
        TrackingConfig(max_age_sec=0.0)
    with pytest.raises(ValueError, match=r"detector\.interval"):
        PoseTracker(detector_interval=0)


# ------------------------------------------------------------- real poses in motion
@pytest.fixture(scope="module")
def sequences(coco_annotations: Path) -> list:
    bodies = load_bodies(coco_annotations)
    assert len(bodies) >= 10
    return standard_sequences(bodies, seed=0)


def test_exact_real_pose_sequences_have_no_id_switch(sequences: list) -> None:
    expected_ids = {
        "crossing": 2,
        "occlusion": 2,
        "leave_enter": 3,
        "scale_change": 2,
        "five_weaving": 5,
    }
    for sequence in sequences:
        for interval in (1, 5):
            result = run_tracker(sequence, PoseTracker(detector_interval=interval))
            ids = {k for frame in result.outputs for _, k, _ in frame if k >= 0}
            assert id_switches(result) == 0, (sequence.name, interval)
            assert len(ids) == expected_ids[sequence.name], (sequence.name, interval, ids)
            assert idf1(result, sequence) > 0.95, sequence.name


def test_noisy_real_pose_sequences_report_id_switches_and_idf1(sequences: list) -> None:
    lines, switches = [], 0
    for sequence in sequences:
        noisy = add_noise(sequence, seed=1)
        result = run_tracker(noisy, PoseTracker())
        score = idf1(result, noisy)
        error, recall = keypoint_error(result, sequence)
        switches += id_switches(result)
        lines.append(
            f"{noisy.name:20s} id switches {id_switches(result)}  IDF1 {score:.3f}  "
            f"keypoint error {error:.2f} px  recall {recall:.3f}"
        )
        assert score > 0.85, lines[-1]
    print("\n" + "\n".join(lines))
    assert switches <= 2
