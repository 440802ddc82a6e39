"""The node's tracking over real DDS: two moving figures of the demo scene, 30 frames; two stable
ids; with detector.interval:=5 the detector runs on 1 frame in 5 (counted), and on the frames in
between, the boxes carried over from the tracks stay on the figures and the keypoints stay where
the every-frame run puts them (and where the figures were drawn).

No detector or pose network with real weights is available offline, and untrained weights give
meaningless keypoints (boxes built from them wander off), so this test brings two small honest
stand-ins of its own, for the demo room only, registered nowhere in the package:

* a detector: background subtraction against the empty room (OpenCV connected components);
* a pose network: the ideal network for the drawn figures. It answers each crop with heatmaps
  peaked (a Gaussian of sigma 2 heatmap pixels, as training targets are) where the keypoints the
  test drew the figure from lie in that crop; a keypoint outside the crop gets an empty heatmap
  (score 0), as a real network's would be low. It knows the drawn keypoints of each frame (by the
  frame's pixels) and recovers each crop's box by cropping the frame as the pipeline does.

Both are put into the node in place of its configured detector and network between the
lifecycle's configure and activate (the node runs in this process, with its own rclpy context;
the frames and poses still go through DDS). Everything between them is the node's: the
tracker's plan, the boxes reused from the tracks' keypoints, cropping, decoding, association,
the messages.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from pose_ros import geometry
from pose_ros.demo_scene import render_room, two_figure_frames
from pose_ros.detection.base import PersonDetector, RawDetections
from pose_ros.msg import PersonPoseArray
from pose_ros.pipeline import FrameBoxes
from pose_ros.ros.conversions import array_to_image_msg
from pose_ros.ros.node import PoseNode
from pose_ros.tracking import box_iou

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import Peer, make_header, reliable

pytestmark = pytest.mark.ros

FRAMES = 30
FPS = 10.0


class RoomBackgroundDetector(PersonDetector):
    """Test-only: people are what differs from the empty demo room. Counts its runs."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    def _predict(self, image: np.ndarray, color_order: str) -> RawDetections:
        self.runs += 1
        room = render_room(image.shape[1], image.shape[0])
        if color_order == "BGR":
            room = room[..., ::-1]
        changed = (np.abs(image.astype(np.int16) - room).max(axis=2) > 25).astype(np.uint8)
        changed = cv2.dilate(changed, np.ones((9, 9), np.uint8))
        count, _, stats, _ = cv2.connectedComponentsWithStats(changed)
        boxes = [
            (x, y, x + w, y + h)
            for x, y, w, h, area in stats[1:count]
            if area > 2000  # a figure, not a stray pixel
        ]
        boxes_xyxy = np.array(boxes, np.float32).reshape(-1, 4)
        return RawDetections(boxes_xyxy, np.full(len(boxes_xyxy), 0.95, np.float32))


def _frame_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class DrawnFigurePoseNetwork:
    """Test-only: the ideal pose network for the drawn figures (see the module docstring).

    It has what the pipeline uses of a network: ``preprocessing``, ``input_size``,
    ``heatmap_size``, ``num_keypoints``, ``arch`` and ``__call__(crops) -> heatmaps``. The
    frames of the current call come from :meth:`estimate_batch` (the estimator's own, recorded on
    the way through).
    """

    SIGMA = 2.0  # heatmap pixels

    def __init__(self, network: object, figures: dict[str, list[np.ndarray]]) -> None:
        self.preprocessing = network.preprocessing
        self.input_size = tuple(network.input_size)
        self.heatmap_size = tuple(network.heatmap_size)
        self.num_keypoints = network.num_keypoints
        self.arch = dict(network.arch)
        self.figures = figures  # frame key -> [(17, 2) drawn keypoints of each figure]
        self.frames: list[FrameBoxes] = []

    def record(self, estimate_batch):  # wraps the estimator's estimate_batch
        def recording(frames):
            self.frames = list(frames)
            return estimate_batch(frames)

        return recording

    def _candidates(self) -> list[tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]]:
        """(crop, centre, scale, drawn keypoints of the figure in the box) of every box."""
        height, width = self.input_size
        found = []
        for frame in self.frames:
            boxes = np.asarray(frame.boxes, np.float32).reshape(-1, 4)
            centers, scales = geometry.box_to_center_scale(boxes, width / height)
            pixels = torch.from_numpy(np.ascontiguousarray(frame.image)).permute(2, 0, 1).float()
            crops = self.preprocessing.normalize(
                geometry.crop_batch(pixels, centers, scales, self.input_size),
                input_color_order=frame.color_order,
            )
            figures = self.figures[_frame_key(frame.image)]
            for box, crop, center, scale in zip(boxes, crops, centers, scales, strict=True):
                x, y, w, h = box
                inside = [
                    (
                        (f[:, 0] >= x) & (f[:, 0] <= x + w) & (f[:, 1] >= y) & (f[:, 1] <= y + h)
                    ).mean()
                    for f in figures
                ]
                found.append((crop, center, scale, figures[int(np.argmax(inside))]))
        return found

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        height, width = self.heatmap_size
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        candidates = self._candidates()
        heatmaps = np.zeros((len(batch), self.num_keypoints, height, width), np.float32)
        for index, crop in enumerate(batch.float().cpu()):
            (center, scale, drawn) = next(
                (c, s, d) for candidate, c, s, d in candidates if torch.allclose(candidate, crop)
            )
            points = geometry.image_to_crop(drawn[None], center[None], scale[None], (height, width))
            for k, (u, v) in enumerate(points[0]):
                if 0 <= u <= width - 1 and 0 <= v <= height - 1:
                    squared = (xs - u) ** 2 + (ys - v) ** 2
                    heatmaps[index, k] = np.exp(-squared / (2 * self.SIGMA**2))
        return torch.from_numpy(heatmaps).to(batch.device)


def run_node(
    checkpoint: Path, interval: int
) -> tuple[list[PersonPoseArray], int, list[list[np.ndarray]]]:
    """The node over DDS on the 30 frames; (pose messages in frame order, detector runs, the
    drawn keypoints of each frame's figures)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    namespace = f"/tracking_test_{interval}"
    overrides = {
        "managed": True,
        "model": str(checkpoint),  # loaded, then answered for by the test's network
        "detector.backend": "full_image",
        "device": "cpu",
        "engine": "torch",
        "flip_test": False,
        "qos.reliability": "reliable",
        "qos.depth": 5,
        "use_camera_info": False,
        "debug_image.enabled": False,
        "tracking.min_hits": 1,
        "smoothing.enabled": False,
        "detector.interval": interval,
    }
    node = PoseNode(
        context=context,
        namespace=namespace,
        parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Thread(target=executor.spin, daemon=True)
    peer = Peer("tracking_test_peer")
    frames = list(two_figure_frames(FRAMES, fps=FPS))
    try:
        node.trigger_configure()
        # The test's detector and network in place of the configured ones (module docstring).
        estimator = node.estimator
        detector = RoomBackgroundDetector()
        estimator.detector = detector
        network = DrawnFigurePoseNetwork(
            estimator.model, {_frame_key(frame): figures for frame, figures in frames}
        )
        estimator.model = network
        estimator.estimate_batch = network.record(estimator.estimate_batch)
        node.core.configure(node.settings.stream)  # the detector's threshold for the tracking
        node.trigger_activate()
        spinning.start()
        received, _ = peer.collect(PersonPoseArray, f"{namespace}/poses", reliable(10))
        publisher = peer.node.create_publisher(Image, f"{namespace}/image", reliable(5))
        assert peer.spin_until(lambda: publisher.get_subscription_count() > 0, 30.0)
        for index, (frame, _) in enumerate(frames):
            nanosec = round(index / FPS * 1e9)
            msg = array_to_image_msg(frame, "rgb8", header=make_header(1000, "camera", nanosec))
            publisher.publish(msg)
            # One frame at a time: the node keeps only the newest, and every frame must count.
            assert peer.spin_until(lambda n=index: len(received) > n, 60.0), f"frame {index}"
        return received, detector.runs, [figures for _, figures in frames]
    finally:
        executor.shutdown()
        node.close()
        node.destroy_node()
        peer.close()
        rclpy.try_shutdown(context=context)


def persons_of(msg: PersonPoseArray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Track id -> (box ``x, y, w, h``, (17, 3) keypoints ``x, y, score``)."""
    return {
        p.id: (
            np.array([p.x_min, p.y_min, p.width, p.height], np.float64),
            np.array([(k.x, k.y, k.score) for k in p.keypoints], np.float64),
        )
        for p in msg.persons
        if p.id >= 0
    }


#: Keypoint distance allowed on the frames both runs detect (pixels): the same box through the
#: same network gives the same keypoints, up to float rounding in the message.
TOLERANCE_PX = 0.01
#: Keypoints of the test's network count where they score this (a keypoint outside its crop
#: scores 0); the node's default keypoint threshold.
CONFIDENT = 0.2


def decode_bound_px(box: np.ndarray) -> float:
    """How far, per axis, a decoded keypoint may lie from the point its heatmap peaks at, in
    image pixels, for a person in ``box``. The quarter decoding takes the heatmap pixel nearest
    the peak (off by up to 0.5) and steps a quarter pixel toward the higher neighbour, which
    leaves at most 0.25; next to the heatmap's border it takes no step: 0.5 heatmap pixels. One
    heatmap pixel is the crop region's height over the heatmap's 32 rows (input 128x96)."""
    _, scale = geometry.box_to_center_scale(box, 96 / 128)
    return 0.5 * float(scale[1]) / 32


def test_two_figures_keep_two_ids_and_the_interval_keeps_boxes_and_keypoints_on_them(
    tiny_checkpoint: Path,
) -> None:
    every, runs_every, drawn = run_node(tiny_checkpoint, 1)
    assert runs_every == FRAMES
    ids = [sorted(p.id for p in msg.persons) for msg in every]
    first_ids = ids[0]
    assert len(first_ids) == 2 and all(frame_ids == first_ids for frame_ids in ids), ids
    stamps = [msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 for msg in every]
    np.testing.assert_allclose(stamps, 1000.0 + np.arange(FRAMES) / FPS, atol=1e-6)

    sparse, runs_sparse, _ = run_node(tiny_checkpoint, 5)
    assert runs_sparse == FRAMES // 5, f"detector ran {runs_sparse} times in {FRAMES} frames"
    ids = [sorted(p.id for p in msg.persons) for msg in sparse]
    second_ids = ids[0]
    assert len(second_ids) == 2 and all(frame_ids == second_ids for frame_ids in ids), ids
    # Ids are unique in the process: the second node (same process) never reuses the first's.
    assert not set(first_ids) & set(second_ids), (first_ids, second_ids)

    # The same person in both runs: each figure got its id in the same order on frame 0.
    same_person = dict(zip(first_ids, second_ids, strict=True))
    # Which drawn figure each id is (from the every-frame run's first frame).
    first = persons_of(every[0])
    figure_of = {
        track_id: int(np.argmin([np.abs(f - first[track_id][1][:, :2]).mean() for f in drawn[0]]))
        for track_id in first_ids
    }
    assert sorted(figure_of.values()) == [0, 1], figure_of

    ious, shifts, errors = [], [], []
    for index, (a, b) in enumerate(zip(every, sparse, strict=True)):
        pa, pb = persons_of(a), persons_of(b)
        for track_id in first_ids:
            (box_a, kp_a), (box_b, kp_b) = pa[track_id], pb[same_person[track_id]]
            truth = drawn[index][figure_of[track_id]]
            if index % 5 == 0:  # both runs detect: the same box, the same keypoints
                np.testing.assert_allclose(box_b, box_a, atol=TOLERANCE_PX)
                np.testing.assert_allclose(kp_b, kp_a, atol=TOLERANCE_PX)
            # Both runs put the confident keypoints where the figure was drawn, within what
            # decoding allows for their box, and nearly every keypoint is confident.
            for box, keypoints in ((box_a, kp_a), (box_b, kp_b)):
                confident = keypoints[:, 2] >= CONFIDENT
                assert confident.sum() >= 15, (index, track_id, keypoints[:, 2])
                error = np.abs(keypoints[confident, :2] - truth[confident])
                assert error.max() <= decode_bound_px(box), (index, track_id, error.max())
                errors.append(float(np.linalg.norm(error, axis=1).mean()))
            if index % 5:  # the interval-5 run reused the tracks' boxes on this frame
                ious.append(float(box_iou(box_b[None], box_a[None])[0, 0]))
                both = (kp_a[:, 2] >= CONFIDENT) & (kp_b[:, 2] >= CONFIDENT)
                shift = np.abs(kp_b[both, :2] - kp_a[both, :2])
                assert shift.max() <= decode_bound_px(box_a) + decode_bound_px(box_b)
                shifts.append(float(np.linalg.norm(shift, axis=1).mean()))
    print(
        f"interval 5 vs 1 on the frames between detections: box IoU min {min(ious):.2f}, mean "
        f"{np.mean(ious):.2f}; mean keypoint distance {np.mean(shifts):.2f} px; keypoints vs "
        f"drawn: mean {np.mean(errors):.2f} px"
    )
    # The reused boxes stay on the figures: the box around the keypoints, enlarged by the crop
    # padding (1.25) as the detector's is not, overlaps the detector's box by well over half.
    assert min(ious) > 0.5, ious
