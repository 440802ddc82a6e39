"""The inference pipeline: an image in, persons with 17 keypoints out. No ROS here: the node, the
command-line tool and evaluation all call :class:`PoseEstimator`.

Per frame: person boxes (detector, or given) → centre/scale → all crops of the frame in one batch on
the compute device → normalisation in the weights' colour order → network (optionally with the flip
test in the same batch) → heatmap decoding → image pixels → rescoring.
"""

from __future__ import annotations

import time
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
        box_score: detector confidence 0..1 (1.0 for given boxes without scores).
        score: ``box_score`` × the mean score of the keypoints above the keypoint threshold (0.2),
            the reference's rescoring; 0 when no keypoint passes.
        keypoints: (17, 3) float32 ``x, y, score``: pixels of the source image (integer values at
            pixel centres, clipped to the image) and confidence clipped to 0..1, COCO order.
    """

    box: np.ndarray
    box_score: float
    score: float
    keypoints: np.ndarray


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
        timings = StageTimings()
        _check_image(image, color_order)

        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            if box_scores is None:
                box_scores = np.ones(len(boxes), dtype=np.float32)
            box_scores = np.asarray(box_scores, dtype=np.float32).reshape(-1)
            if len(box_scores) != len(boxes):
                raise ValueError(f"{len(boxes)} boxes but {len(box_scores)} box scores")
        elif self.detector is not None:
            detections = self.detector.detect(image, color_order=color_order)
            boxes, box_scores = detections.boxes, detections.scores
        else:
            raise ValueError("no detector configured: pass boxes=")
        keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        boxes, box_scores = boxes[keep], box_scores[keep]
        order = np.argsort(-box_scores, kind="stable")[: self.max_persons]
        boxes, box_scores = boxes[order], box_scores[order]
        timings.detect_ms = (time.perf_counter() - start) * 1e3
        if len(boxes) == 0:
            timings.total_ms = timings.detect_ms
            self.last_timings = timings
            return []

        keypoints = self._estimate_keypoints(image, color_order, boxes, timings)
        scores = rescore(box_scores, keypoints[..., 2], self.keypoint_score_threshold)
        persons = [
            Person(
                box=boxes[i].copy(),
                box_score=float(box_scores[i]),
                score=float(scores[i]),
                keypoints=keypoints[i],
            )
            for i in range(len(boxes))
        ]
        persons.sort(key=lambda person: person.score, reverse=True)
        timings.persons = len(persons)
        timings.total_ms = (time.perf_counter() - start) * 1e3
        self.last_timings = timings
        return persons

    @torch.inference_mode()
    def _estimate_keypoints(
        self, image: np.ndarray, color_order: str, boxes: np.ndarray, timings: StageTimings
    ) -> np.ndarray:
        """(N, 17, 3) keypoints in image pixels for the given boxes."""
        t0 = time.perf_counter()
        input_size = tuple(self.model.input_size)
        aspect = input_size[1] / input_size[0]
        centers, scales = geometry.box_to_center_scale(boxes, aspect)
        pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, non_blocking=True)
        pixels = pixels.permute(2, 0, 1).float()  # (3, H, W)
        crops = geometry.crop_batch(pixels, centers, scales, input_size)  # (N, 3, h, w) 0..255
        # Channel order and normalisation of the weights, on the small crops (not the frame).
        batch = self.model.preprocessing.normalize(crops, input_color_order=color_order)
        batch = batch.to(self._dtype)
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
        image_coords = geometry.crop_to_image(
            coords, centers, scales, tuple(self.model.heatmap_size)
        )
        # A crop can reach past the image border (box padding); keypoints stay inside the image.
        height, width = image.shape[:2]
        image_coords[..., 0] = np.clip(image_coords[..., 0], 0, width - 1)
        image_coords[..., 1] = np.clip(image_coords[..., 1], 0, height - 1)
        keypoints = np.concatenate([image_coords, np.clip(scores, 0.0, 1.0)[..., None]], axis=-1)
        t3 = time.perf_counter()
        timings.crop_ms = (t1 - t0) * 1e3
        timings.network_ms = (t2 - t1) * 1e3
        timings.decode_ms = (t3 - t2) * 1e3
        return keypoints.astype(np.float32)


def _check_image(image: np.ndarray, color_order: str) -> None:
    check_image(image, color_order)
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image too small: {image.shape[1]}x{image.shape[0]}")
