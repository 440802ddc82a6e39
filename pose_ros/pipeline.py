"""The inference pipeline: an image in, persons with 17 keypoints out. No ROS here: the node, the
command-line tool and evaluation all call :class:`PoseEstimator`.

Per frame: person boxes (detector, or given) → centre/scale → all crops of the frame in one batch on
the compute device → normalisation in the weights' colour order → network (optionally with the flip
test in the same batch) → heatmap decoding → image pixels → rescoring.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from pose_ros import codec, geometry
from pose_ros.images import check_image
from pose_ros.keypoints import COCO_PERSON_CATEGORY_ID, NUM_KEYPOINTS

if TYPE_CHECKING:
    from pose_ros.detection import PersonDetector
    from pose_ros.models import Preprocessing

#: Prefix of a model name that asks for untrained weights (tests, demos without weights).
RANDOM_WEIGHTS_PREFIX = "random:"


class PoseNetwork(Protocol):
    """What the pipeline needs of a network: a PyTorch :class:`~pose_ros.models.PoseNet`, or a
    runner of an exported model (``pose_ros.runtime``) with the same attributes."""

    preprocessing: Preprocessing
    num_keypoints: int

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def heatmap_size(self) -> tuple[int, int]: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Person:
    """One person found in an image.

    Attributes:
        box: (4,) float32 ``x_min, y_min, width, height`` in source-image pixels.
        box_score: detector confidence 0..1 (1.0 for given boxes without scores; for a box carried
            over from the previous frame's keypoints, the score of the track it came from).
        score: ``box_score`` × the mean score of the keypoints above the keypoint threshold (0.2),
            the reference's rescoring; 0 when no keypoint passes.
        keypoints: (17, 3) float32 ``x, y, score``: pixels of the source image (integer values at
            pixel centres, clipped to the image) and confidence clipped to 0..1, COCO order. The
            scores are always the network's; only ``x, y`` may be smoothed over time.
        track_id: identity across frames (:mod:`pose_ros.tracking`), -1 when not tracked or not
            yet confirmed.
        positions: (17, 3) float32 metres in the camera's optical frame (x right, y down,
            z forward), NaN rows where no depth reading exists; None without depth.
        center: (3,) float32 metres, the person's 3D centre (median of the torso keypoints'
            positions); None without depth or without a torso position.
    """

    box: np.ndarray
    box_score: float
    score: float
    keypoints: np.ndarray
    track_id: int = -1
    positions: np.ndarray | None = None
    center: np.ndarray | None = None


@dataclass(frozen=True)
class FrameBoxes:
    """One frame and the person boxes to estimate in it (an input of
    :meth:`PoseEstimator.estimate_batch`).

    Attributes:
        image: (H, W, 3) uint8 in ``color_order``.
        boxes: (N, 4) ``x_min, y_min, width, height`` pixels.
        box_scores: (N,) scores of the boxes.
        color_order: "RGB" or "BGR".
    """

    image: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    color_order: str = "RGB"


@dataclass
class StageTimings:
    """Milliseconds spent in each stage of the last call."""

    detect_ms: float = 0.0
    crop_ms: float = 0.0
    network_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    persons: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when available, else ``cpu``; other names as torch reads them."""
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"invalid device {device!r}: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: only 'cpu', 'cuda' and 'cuda:N' are supported")
    return resolved


def coco_keypoint_results(
    persons: list[Person], image_id: int, *, decimals: int | None = None
) -> list[dict]:
    """Persons as COCO keypoint results (the format of pycocotools ``loadRes``).

    Each entry holds ``image_id``, ``category_id`` (person), ``keypoints`` (51 numbers x, y,
    score), ``score`` and, for readers other than COCOeval, ``bbox`` and ``box_score``.
    ``decimals`` rounds the numbers (smaller files); None keeps full precision.
    """

    def numbers(values: np.ndarray) -> list[float]:
        floats = np.asarray(values, dtype=np.float64).reshape(-1).tolist()
        return floats if decimals is None else [round(v, decimals) for v in floats]

    return [
        {
            "image_id": image_id,
            "category_id": COCO_PERSON_CATEGORY_ID,
            "keypoints": numbers(person.keypoints),
            "score": numbers(np.array([person.score]))[0],
            "bbox": numbers(person.box),
            "box_score": numbers(np.array([person.box_score]))[0],
        }
        for person in persons
    ]


def rescore(
    box_scores: np.ndarray, keypoint_scores: np.ndarray, threshold: float = 0.2
) -> np.ndarray:
    """Person scores: box score × mean of the keypoint scores above ``threshold`` (0 if none).

    Args:
        box_scores: (N,) detector scores.
        keypoint_scores: (N, K) keypoint confidences.
    """
    above = keypoint_scores > threshold
    counts = above.sum(axis=1)
    sums = np.where(above, keypoint_scores, 0.0).sum(axis=1)
    mean = np.divide(sums, counts, out=np.zeros_like(sums, dtype=np.float64), where=counts > 0)
    return (np.asarray(box_scores, dtype=np.float64) * mean).astype(np.float32)


class PoseEstimator:
    """Image → persons with 17 keypoints, all persons of a frame in one network batch.

    Args:
        model: a :class:`~pose_ros.models.PoseNet` (moved to ``device`` and put in eval mode) or
            a runner of an exported model with the same attributes.
        detector: person detector; None when boxes are always given (evaluation, external
            detector).
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        fp16: half precision for the network; default on for CUDA. Not available on the CPU.
        flip_test: also run the mirrored crops (same batch) and average the heatmaps.
        decode: "quarter" (argmax + quarter offset) or "dark".
        keypoint_score_threshold: keypoints counted in the person score (the reference's 0.2).
        max_persons: at most this many persons per frame, highest box scores first.
    """

    def __init__(
        self,
        model: PoseNetwork,
        detector: PersonDetector | None = None,
        *,
        device: str | torch.device = "auto",
        fp16: bool | None = None,
        flip_test: bool = False,
        decode: str = "quarter",
        keypoint_score_threshold: float = 0.2,
        max_persons: int = 20,
    ) -> None:
        if decode not in codec.DECODE_METHODS:
            raise ValueError(f"decode must be one of {codec.DECODE_METHODS}, got {decode!r}")
        if not 0.0 <= keypoint_score_threshold <= 1.0:
            raise ValueError(
                f"keypoint_score_threshold must be in [0, 1], got {keypoint_score_threshold}"
            )
        if max_persons < 1:
            raise ValueError(f"max_persons must be at least 1, got {max_persons}")
        if model.num_keypoints != NUM_KEYPOINTS:
            raise ValueError(
                f"the pipeline needs a {NUM_KEYPOINTS}-keypoint model, got {model.num_keypoints}"
            )
        self.device = resolve_device(device)
        self.fp16 = self.device.type == "cuda" if fp16 is None else bool(fp16)
        if self.fp16 and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device; use fp16=False on the CPU")
        self.model = model
        self.detector = detector
        self.flip_test = flip_test
        self.decode = decode
        self.keypoint_score_threshold = keypoint_score_threshold
        self.max_persons = max_persons
        self.uses_random_weights = False
        self.last_timings = StageTimings()
        if isinstance(model, torch.nn.Module):
            model.to(self.device).eval()
            if self.fp16:
                model.half()
            if self.device.type == "cuda":
                model.to(memory_format=torch.channels_last)
        self._dtype = torch.float16 if self.fp16 else torch.float32

    @classmethod
    def from_names(
        cls,
        model: str,
        *,
        detector: str = "fasterrcnn_mobilenet_v3_large_fpn",
        detector_weights: str | None = "DEFAULT",
        device: str | torch.device = "auto",
        fp16: bool | None = None,
        allow_random_weights: bool = False,
        score_threshold: float = 0.5,
        max_persons: int = 20,
        flip_test: bool = False,
        decode: str = "quarter",
        keypoint_score_threshold: float = 0.2,
    ) -> PoseEstimator:
        """Build from names: ``model`` is a checkpoint path, a published-weights registry name, or
        ``"random:<architecture>"`` (untrained weights: only with ``allow_random_weights``).

        Raises:
            pose_ros.models.CheckpointError: missing/corrupt weights (the message says how to get
                them); pose_ros.detection.DetectorError: detector weights; ValueError: bad values.
        """
        from pose_ros.detection import build_detector
        from pose_ros.models import build_pose_model, load_pose_model

        resolved = resolve_device(device)
        random_weights = model.startswith(RANDOM_WEIGHTS_PREFIX)
        if random_weights:
            if not allow_random_weights:
                raise ValueError(
                    f"model {model!r} means untrained random weights, whose keypoints are "
                    "meaningless; pass allow_random_weights=True to use it anyway (tests only)"
                )
            network = build_pose_model(model[len(RANDOM_WEIGHTS_PREFIX) :])
        else:
            network = load_pose_model(model, map_location="cpu")
        person_detector = build_detector(
            detector,
            weights=detector_weights,
            device=resolved,
            score_threshold=score_threshold,
            max_persons=max_persons,
        )
        estimator = cls(
            network,
            person_detector,
            device=resolved,
            fp16=fp16,
            flip_test=flip_test,
            decode=decode,
            keypoint_score_threshold=keypoint_score_threshold,
            max_persons=max_persons,
        )
        estimator.uses_random_weights = random_weights
        return estimator

    def describe(self) -> str:
        """One line for logs: network, input, colour order, device, precision, detector."""
        arch = getattr(self.model, "arch", {}).get("name", type(self.model).__name__)
        in_height, in_width = self.model.input_size
        detector = type(self.detector).__name__ if self.detector is not None else "given boxes"
        random_note = (
            " [RANDOM WEIGHTS: keypoints are meaningless]" if self.uses_random_weights else ""
        )
        return (
            f"{arch} {in_height}x{in_width} {self.model.preprocessing.color_order} "
            f"on {self.device} "
            f"{'fp16' if self.fp16 else 'fp32'}, flip_test={self.flip_test}, decode={self.decode}, "
            f"detector={detector}{random_note}"
        )

    def detect(
        self, image: np.ndarray, *, color_order: str = "RGB"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes of the detector: ((N, 4) ``x, y, w, h``, (N,) scores), best first, at
        most ``max_persons``."""
        if self.detector is None:
            raise ValueError("no detector configured: pass boxes=")
        _check_image(image, color_order)
        detections = self.detector.detect(image, color_order=color_order)
        return self._select_boxes(detections.boxes, detections.scores)

    def _select_boxes(
        self, boxes: np.ndarray, box_scores: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Valid boxes (positive size), highest scores first, at most ``max_persons``."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if box_scores is None:
            box_scores = np.ones(len(boxes), dtype=np.float32)
        box_scores = np.asarray(box_scores, dtype=np.float32).reshape(-1)
        if len(box_scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(box_scores)} box scores")
        keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        boxes, box_scores = boxes[keep], box_scores[keep]
        order = np.argsort(-box_scores, kind="stable")[: self.max_persons]
        return boxes[order], box_scores[order]

    def __call__(
        self,
        image: np.ndarray,
        *,
        color_order: str = "RGB",
        boxes: np.ndarray | None = None,
        box_scores: np.ndarray | None = None,
    ) -> list[Person]:
        """Persons in ``image``, sorted by score (descending).

        Args:
            image: (H, W, 3) uint8 in ``color_order``.
            color_order: "RGB" or "BGR".
            boxes: (N, 4) ``x, y, w, h`` person boxes to use instead of the detector.
            box_scores: (N,) scores of the given boxes (default 1.0).
        """
        start = time.perf_counter()
        _check_image(image, color_order)
        if boxes is None:
            boxes, box_scores = self.detect(image, color_order=color_order)
        detect_ms = (time.perf_counter() - start) * 1e3
        (persons,) = self.estimate_batch([FrameBoxes(image, boxes, box_scores, color_order)])
        timings = self.last_timings
        timings.detect_ms = detect_ms
        timings.total_ms = (time.perf_counter() - start) * 1e3
        return persons

    def estimate_batch(self, frames: Sequence[FrameBoxes]) -> list[list[Person]]:
        """Keypoints for the given boxes of several frames (e.g. several cameras) in one network
        batch; per frame its persons, sorted by score (descending). Boxes are filtered as the
        detector's are: positive size, at most ``max_persons`` per frame."""
        start = time.perf_counter()
        timings = StageTimings()
        selected = []
        for frame in frames:
            _check_image(frame.image, frame.color_order)
            boxes, box_scores = self._select_boxes(frame.boxes, frame.box_scores)
            selected.append((frame, boxes, box_scores))
        results: list[list[Person]] = [[] for _ in frames]
        if any(len(boxes) for _, boxes, _ in selected):
            keypoints = self._estimate_keypoints(
                [(frame.image, frame.color_order, boxes) for frame, boxes, _ in selected], timings
            )
            for index, (_, boxes, box_scores) in enumerate(selected):
                if len(boxes) == 0:
                    continue
                frame_keypoints = keypoints[index]
                scores = rescore(box_scores, frame_keypoints[..., 2], self.keypoint_score_threshold)
                persons = [
                    Person(
                        box=boxes[i].copy(),
                        box_score=float(box_scores[i]),
                        score=float(scores[i]),
                        keypoints=frame_keypoints[i],
                    )
                    for i in range(len(boxes))
                ]
                persons.sort(key=lambda person: person.score, reverse=True)
                results[index] = persons
        timings.persons = sum(len(persons) for persons in results)
        timings.total_ms = (time.perf_counter() - start) * 1e3
        self.last_timings = timings
        return results

    @torch.inference_mode()
    def _estimate_keypoints(
        self, frames: list[tuple[np.ndarray, str, np.ndarray]], timings: StageTimings
    ) -> list[np.ndarray]:
        """Per frame (image, colour order, (N, 4) boxes): (N, 17, 3) keypoints in image pixels.
        The crops of all frames go through the network as one batch."""
        t0 = time.perf_counter()
        input_size = tuple(self.model.input_size)
        aspect = input_size[1] / input_size[0]
        batches, geometry_per_frame = [], []
        for image, color_order, boxes in frames:
            if len(boxes) == 0:
                geometry_per_frame.append(None)
                continue
            centers, scales = geometry.box_to_center_scale(boxes, aspect)
            pixels = torch.from_numpy(np.ascontiguousarray(image)).to(
                self.device, non_blocking=True
            )
            pixels = pixels.permute(2, 0, 1).float()  # (3, H, W)
            crops = geometry.crop_batch(pixels, centers, scales, input_size)  # (N, 3, h, w) 0..255
            # Channel order and normalisation of the weights, on the small crops (not the frame).
            batches.append(self.model.preprocessing.normalize(crops, input_color_order=color_order))
            geometry_per_frame.append((centers, scales, image.shape[:2]))
        batch = torch.cat(batches).to(self._dtype)
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        count = batch.shape[0]
        if self.flip_test:
            batch = torch.cat([batch, batch.flip(-1)])
        t1 = time.perf_counter()
        heatmaps = self.model(batch).float()
        if self.flip_test:
            heatmaps = (heatmaps[:count] + codec.flip_heatmaps_back(heatmaps[count:])) * 0.5
        heatmaps = heatmaps.cpu()  # waits for the device: the network time includes the transfer
        t2 = time.perf_counter()
        coords, scores = codec.decode_heatmaps(heatmaps, self.decode)
        scores = np.clip(scores, 0.0, 1.0)
        results, offset = [], 0
        for frame_geometry in geometry_per_frame:
            if frame_geometry is None:
                results.append(np.zeros((0, NUM_KEYPOINTS, 3), np.float32))
                continue
            centers, scales, (height, width) = frame_geometry
            part = slice(offset, offset + len(centers))
            offset += len(centers)
            image_coords = geometry.crop_to_image(
                coords[part], centers, scales, tuple(self.model.heatmap_size)
            )
            # A crop can reach past the image border (box padding); keypoints stay inside it.
            image_coords[..., 0] = np.clip(image_coords[..., 0], 0, width - 1)
            image_coords[..., 1] = np.clip(image_coords[..., 1], 0, height - 1)
            keypoints = np.concatenate([image_coords, scores[part][..., None]], axis=-1)
            results.append(keypoints.astype(np.float32))
        t3 = time.perf_counter()
        timings.crop_ms = (t1 - t0) * 1e3
        timings.network_ms = (t2 - t1) * 1e3
        timings.decode_ms = (t3 - t2) * 1e3
        return results


def _check_image(image: np.ndarray, color_order: str) -> None:
    check_image(image, color_order)
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image too small: {image.shape[1]}x{image.shape[0]}")
