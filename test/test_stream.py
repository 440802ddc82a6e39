"""The stream core's temporal rules (pose_ros.stream), on real poses: the network trained on the 4
COCO images (the overfit run of test_training_support) in camera frames made of those images, with
a detector that knows their boxes (coco_scenes.py). Each rule is judged on what the core returns."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from coco_scenes import Scene, SceneBoxesDetector, load_scenes

from pose_ros.camera import PinholeCamera
from pose_ros.models import load_pose_model
from pose_ros.pipeline import PoseEstimator
from pose_ros.smoothing import SmoothingConfig
from pose_ros.stream import CameraFrame, StreamCore, StreamSettings, settings_from_values
from pose_ros.tracking import PoseTracker, TrackIds, TrackingConfig
from pose_ros.types import Person

FPS = 30.0
#: A published keypoint may differ from the untracked answer by this much after a reset (float
#: rounding of the same network on the same crop; the requirement is 0.5 px).
SAME_PX = 0.5


@pytest.fixture(scope="module")
def scenes(coco_dir: Path) -> list[Scene]:
    return load_scenes(coco_dir)


@pytest.fixture(scope="module")
def estimator(overfit_run) -> PoseEstimator:
    detector = SceneBoxesDetector()
    return PoseEstimator(load_pose_model(overfit_run.best), detector, device="cpu")


def _learn(estimator: PoseEstimator, *scenes: Scene) -> None:
    for scene in scenes:
        estimator.detector.learn(scene)


def _frame(scene: Scene, index: int, **kwargs) -> CameraFrame:
    values = {"stamp_sec": 100.0 + index / FPS, "arrival_sec": index / FPS, "frame_id": "cam"}
    values.update(kwargs)
    return CameraFrame(scene.image, "RGB", **values)


def _untracked(estimator: PoseEstimator, frame: CameraFrame) -> list[Person]:
    """The answer without any temporal state: a fresh core with tracking off."""
    off = StreamSettings(tracking=TrackingConfig(enabled=False))
    (result,) = StreamCore(estimator, off, ids=TrackIds()).process([frame])
    assert result.error is None
    return result.persons


def _assert_same_poses(actual: list[Person], expected: list[Person], tolerance: float) -> None:
    assert len(actual) == len(expected) > 0
    for person in expected:  # matched by box (the detector's boxes are exact)
        other = min(actual, key=lambda p: float(np.abs(p.box - person.box).sum()))
        np.testing.assert_allclose(other.box, person.box, atol=1e-3)
        error = np.abs(other.keypoints[:, :2] - person.keypoints[:, :2]).max()
        assert error <= tolerance, f"keypoints {error:.2f} px from the untracked answer"


def _inside(result, width: int, height: int) -> bool:
    return all(
        (p.keypoints[:, 0] >= 0).all()
        and (p.keypoints[:, 0] <= width - 1).all()
        and (p.keypoints[:, 1] >= 0).all()
        and (p.keypoints[:, 1] <= height - 1).all()
        for p in result.persons
    )


def _walk(core: StreamCore, scene: Scene, frames: int, start: int = 0, **kwargs) -> list:
    """``frames`` frames of ``scene`` moving right 3 px a frame; the results."""
    results = []
    for index in range(start, start + frames):
        (result,) = core.process([_frame(scene.shifted(3 * (index - start)), index, **kwargs)])
        assert result.error is None, result.error
        results.append(result)
    return results


def _learn_walk(estimator: PoseEstimator, scene: Scene, frames: int) -> None:
    _learn(estimator, *(scene.shifted(3 * i) for i in range(frames)))


def test_a_scene_cut_gives_the_untracked_answer_at_once(estimator, scenes) -> None:
    """A person walking, then a cut to another image whose person stands where the first one
    stood: the tracker carries the track over (the boxes overlap), and without the jump rule its
    smoothing would blend the two poses. The first answer after the cut is the untracked one."""
    walking, after_cut = scenes[0], scenes[2]
    _learn_walk(estimator, walking, 8)
    _learn(estimator, after_cut)
    core = StreamCore(estimator, StreamSettings(), ids=TrackIds())
    before = _walk(core, walking, 8)
    assert before[-1].persons[0].track_id > 0  # confirmed, smoothed
    cut = _frame(after_cut, 8)
    (result,) = core.process([cut])
    _assert_same_poses(result.persons, _untracked(estimator, cut), SAME_PX)
    # The case is the one the rule exists for: a track was carried across the cut.
    assert core.camera("").tracker.stats.filter_restarts >= 1


def test_unrelated_stills_on_one_topic_are_answered_as_they_are(estimator, scenes) -> None:
    """A topic carrying stills of several sources, the same still in several colour orders in a
    row: every answer is that still's own, within 0.5 px (smoothing never mixes stills)."""
    core = StreamCore(estimator, StreamSettings(), ids=TrackIds())
    _learn(estimator, *scenes)
    sequence = [scenes[0], scenes[2], scenes[2], scenes[2], scenes[3], scenes[0], scenes[0]]
    orders = ["RGB", "RGB", "BGR", "RGB", "RGB", "BGR", "RGB"]
    for index, (scene, order) in enumerate(zip(sequence, orders, strict=True)):
        pixels = scene.image if order == "RGB" else np.ascontiguousarray(scene.image[..., ::-1])
        frame = dataclasses.replace(_frame(scene, index), image=pixels, color_order=order)
        (result,) = core.process([frame])
        _assert_same_poses(result.persons, _untracked(estimator, frame), SAME_PX)


def test_a_new_image_size_or_frame_id_ends_the_tracks(estimator, scenes) -> None:
    scene = scenes[0]
    _learn_walk(estimator, scene, 4)
    big = scene.resized(1280, 960)
    _learn(estimator, big)
    core = StreamCore(estimator, StreamSettings(), ids=TrackIds())
    walked = _walk(core, scene, 4)
    old_id = walked[-1].persons[0].track_id
    assert old_id > 0
    frame = _frame(big, 4)
    (result,) = core.process([frame])
    (event,) = [e for e in result.events if e.kind == "tracks_ended"]
    assert "image size 640x480 -> 1280x960" in event.message and "1 track(s) ended" in event.message
    assert [p.track_id for p in result.persons] == [-1]  # a new track, not yet confirmed
    _assert_same_poses(result.persons, _untracked(estimator, frame), SAME_PX)
    assert _inside(result, 1280, 960)
    # The same image from another frame_id: another camera on the same topic.
    (result,) = core.process([_frame(big, 5, frame_id="other_camera")])
    (event,) = [e for e in result.events if e.kind == "tracks_ended"]
    assert "frame_id 'cam' -> 'other_camera'" in event.message


def test_the_tracker_keeps_smoothed_keypoints_inside_the_image() -> None:
    """A track smoothed in a large image just beyond where a smaller image ends, then continued in
    the smaller one (a tracker used without the stream core's size rule): the raw keypoints are
    clipped to the small image, close enough to the smoothed pose to be the same person, and the
    published keypoints stay inside the image too."""
    tracker = PoseTracker(TrackingConfig(min_hits=1), SmoothingConfig())
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, 0] = np.linspace(650, 670, 17)
    keypoints[:, 1] = np.linspace(485, 495, 17)
    keypoints[:, 2] = 0.9
    box = np.array([560, 340, 200, 300], np.float32)
    for index in range(5):
        tracker.begin_frame(index / FPS, (960, 1280))
        tracker.end_frame([Person(box, 0.9, 0.9, keypoints)])
    small = keypoints.copy()
    small[:, :2] = np.minimum(small[:, :2], [[639, 479]])  # as the pipeline clips them
    tracker.begin_frame(5 / FPS, (480, 640))
    (person,) = tracker.end_frame([Person(box, 0.9, 0.9, small)])
    assert tracker.stats.filter_restarts == 0  # the same person: smoothed, not restarted
    assert (person.keypoints[:, 0] <= 639).all() and (person.keypoints[:, 1] <= 479).all()


def test_zero_stamps_are_answered_on_arrival_time_with_one_warning(estimator, scenes) -> None:
    scene = scenes[0]
    _learn_walk(estimator, scene, 10)
    core = StreamCore(estimator, StreamSettings(), ids=TrackIds())
    # one frame a second, every header stamp 0
    results = []
    for index in range(10):
        frame = _frame(scene.shifted(3 * index), index, stamp_sec=0.0, arrival_sec=5.0 + index)
        (result,) = core.process([dataclasses.replace(frame, topic="/cam/image")])
        results.append(result)
    assert all(r.error is None and len(r.persons) == 1 for r in results)
    warnings = [e for r in results for e in r.events if e.kind == "zero_stamp"]
    assert len(warnings) == 1 and "/cam/image" in warnings[0].message
    np.testing.assert_allclose([r.time_sec for r in results], 5.0 + np.arange(10))
    ids = [r.persons[0].track_id for r in results]
    assert ids[:2] == [-1, -1] and len(set(ids[2:])) == 1 and ids[2] > 0  # one track throughout
    assert core.camera("").zero_stamps == 10


def test_repeated_stamps_are_each_answered_and_counted(estimator, scenes) -> None:
    scene = scenes[0]
    _learn_walk(estimator, scene, 6)
    core = StreamCore(estimator, StreamSettings(), ids=TrackIds())
    results = _walk(core, scene, 6, stamp_sec=42.0)  # a driver that repeats one stamp
    assert all(len(r.persons) == 1 for r in results)
    times = np.array([r.time_sec for r in results])
    assert times[0] == 42.0 and (np.diff(times) > 0).all()
    np.testing.assert_allclose(np.diff(times), 1 / FPS, atol=1e-9)  # by arrival interval
    warnings = [e for r in results for e in r.events if e.kind == "repeated_stamp"]
    assert len(warnings) == 1
    assert core.camera("").repeated_stamps == 5
    assert len({r.persons[0].track_id for r in results[2:]}) == 1


def test_a_stamp_that_goes_back_ends_the_tracks(estimator, scenes) -> None:
    scene = scenes[0]
    _learn_walk(estimator, scene, 4)
    core = StreamCore(estimator, StreamSettings(), ids=TrackIds())
    _walk(core, scene, 4)
    (result,) = core.process([_frame(scene, 0, stamp_sec=50.0)])  # a looping recording
    (event,) = [e for e in result.events if e.kind == "tracks_ended"]
    assert "went backwards" in event.message
    assert result.persons[0].track_id == -1


def test_ids_are_unique_across_cameras_and_restarts(estimator, scenes) -> None:
    """Two cameras seeing the same person get two ids; a new core (a node's cleanup and
    configure) draws new ids from the same counter."""
    scene = scenes[0]
    _learn(estimator, scene)
    ids = TrackIds()
    seen = []
    for _ in range(2):  # the core built twice: ids keep counting
        core = StreamCore(estimator, StreamSettings(), ids=ids)
        for index in range(3):
            results = core.process(
                [_frame(scene, index, camera="left"), _frame(scene, index, camera="right")]
            )
        seen.extend(p.track_id for r in results for p in r.persons)
    assert len(seen) == 4 and len(set(seen)) == 4 and min(seen) > 0, seen


def test_the_cameras_of_a_cycle_share_one_network_call_and_fail_alone(estimator, scenes) -> None:
    _learn(estimator, *scenes)
    core = StreamCore(estimator, StreamSettings(), ids=TrackIds())
    calls = estimator.network_calls
    frames = [_frame(scene, 0, camera=f"cam{i}") for i, scene in enumerate(scenes[:3])]
    broken = dataclasses.replace(frames[1], image=np.zeros((1, 1, 3), np.uint8))  # too small
    results = core.process([frames[0], broken, frames[2]])
    assert estimator.network_calls == calls + 1
    assert results[1].error is not None and results[1].persons == []
    assert len(results[0].persons) == 1 and len(results[2].persons) == 4
    with pytest.raises(ValueError, match="one frame per camera"):
        core.process([frames[0], frames[0]])


def _camera() -> PinholeCamera:
    return PinholeCamera(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480)


def test_depth_of_another_size_is_refused_unless_rescaling_is_allowed(estimator, scenes) -> None:
    scene = scenes[0]
    _learn(estimator, scene)
    half = np.full((240, 320), 2.0, np.float32)  # half size, same aspect ratio
    frame = _frame(scene, 0, camera_model=_camera(), depth_m=half, depth_topic="/cam/depth")
    core = StreamCore(estimator, StreamSettings(), ids=TrackIds())
    (refused,) = core.process([frame])
    assert refused.persons and all(p.positions is None for p in refused.persons)
    (event,) = refused.events
    assert (
        event.kind == "depth_size"
        and "320x240" in event.message
        and "allow_rescale" in event.message
    )
    assert "/cam/depth" in event.message
    (again,) = core.process([dataclasses.replace(frame, stamp_sec=frame.stamp_sec + 0.1)])
    assert again.events == []  # said once
    allowed = StreamCore(estimator, StreamSettings(depth_rescale=True), ids=TrackIds())
    (result,) = allowed.process([frame])
    assert result.has_positions
    z = np.concatenate([p.positions[:, 2] for p in result.persons])
    np.testing.assert_allclose(z[np.isfinite(z)], 2.0)


def test_positions_are_smoothed_in_metres_without_lag() -> None:
    """A person walking at 1.5 m/s across the camera, at 30 Hz and with irregular frame times:
    the smoothed centre lags the true one by at most 5 cm once walking, and standing still its
    depth noise is smoothed. With the pixel settings on metres (what position_* replaced) the lag
    is about 0.2 m."""
    rng = np.random.default_rng(3)

    def run(smoothing: SmoothingConfig) -> tuple[float, float]:
        tracker = PoseTracker(TrackingConfig(min_hits=1), smoothing)
        times = np.cumsum(rng.uniform(0.6, 1.4, 120) / FPS)  # jittered frame intervals
        lags, rest = [], []
        for index, t in enumerate(times):
            walking = index < 90
            x = 1.5 * t if walking else 1.5 * times[89]
            noisy = np.array([x, 0.0, 3.0 + rng.normal(0, 0.01)], np.float32)
            keypoints = np.tile(np.array([[320.0, 240.0, 0.9]], np.float32), (17, 1))
            keypoints[:, 0] += np.arange(17)
            positions = np.tile(noisy, (17, 1))
            person = Person(
                np.array([300, 200, 60, 120], np.float32), 0.9, 0.9, keypoints, 1, positions, noisy
            )
            tracker.begin_frame(float(t), (480, 640))
            (out,) = tracker.end_frame([person])
            if 30 <= index < 90:
                lags.append(x - out.center[0])
            if index >= 110:
                rest.append(out.center[2])
        return max(np.abs(lags)), float(np.std(rest))

    lag, rest_std = run(SmoothingConfig())
    assert lag <= 0.05, f"lag {lag:.3f} m"
    assert rest_std < 0.005, f"standing still: {rest_std:.4f} m std (raw 0.01)"
    old_lag, _ = run(SmoothingConfig(position_min_cutoff=1.0, position_beta=0.05))
    assert old_lag > 0.15, old_lag


def test_settings_from_values_take_the_node_parameter_names() -> None:
    settings = settings_from_values(
        {
            "tracking.enabled": False,
            "detector.score_threshold": 0.05,
            "smoothing.position_beta": 7.0,
            "detector.interval": 3,
            "depth.allow_rescale": True,
        }
    )
    assert not settings.tracking.enabled
    assert settings.tracking.score_threshold == 0.05
    assert settings.tracking.low_score_threshold == 0.05  # never above the high threshold
    assert settings.smoothing.for_positions().beta == 7.0
    assert settings.detector_interval == 3 and settings.depth_rescale
    assert settings_from_values({}) == StreamSettings()  # the defaults are the node's


class _UnreachableNetwork(torch.nn.Module):
    """A pose network whose server went away: every call raises, chained to the connection error
    (as a remote engine's client reports it)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.preprocessing = network.preprocessing
        self.num_keypoints = network.num_keypoints
        self.input_size = network.input_size
        self.heatmap_size = network.heatmap_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            raise ConnectionError("connection refused")
        except ConnectionError as error:
            raise RuntimeError("inference server unreachable") from error


def test_a_failed_cycle_frees_its_frames_at_once(overfit_run, scenes) -> None:
    """Results keep the error of a failed frame, but not its tracebacks (nor those of the errors
    it chains): they would hold the cycle's images in a reference cycle until a full collection,
    and a node whose inference server is down would grow by every frame that failed."""
    network = _UnreachableNetwork(load_pose_model(overfit_run.best))
    detector = SceneBoxesDetector()
    estimator = PoseEstimator(network, detector, device="cpu", copy_model=False)
    scene = scenes[0]
    detector.learn(scene)
    core = StreamCore(estimator, StreamSettings(), ids=TrackIds())
    image = scene.image.copy()
    alive = weakref.ref(image)
    gc.disable()
    try:
        (result,) = core.process([dataclasses.replace(_frame(scene, 0), image=image)])
        assert isinstance(result.error, RuntimeError) and result.persons == []
        assert result.error.__traceback__ is None and result.error.__cause__.__traceback__ is None
        del result, image
        assert alive() is None, "the failed frame's image is still referenced"
    finally:
        gc.enable()
