"""What every person detector shares: the result type, the error type, the post-processing
(class filter, thresholds, clipping, NMS, top-k) and the detector base class."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torchvision import ops

from pose_ros.images import check_image


class DetectorError(RuntimeError):
    """A detector could not be built or run: missing or unreadable weights, a missing optional
    dependency, a malformed detections file. The message says what and where, and how to fix it."""


@dataclass(frozen=True, eq=False)
class Detections:
    """Person boxes found in one image, best first.

    Attributes:
        boxes: (N, 4) float32, x_min, y_min, width, height in source-image pixels.
        scores: (N,) float32 in 0..1, sorted descending.
    """

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.ascontiguousarray(self.boxes, dtype=np.float32)
        scores = np.ascontiguousarray(self.scores, dtype=np.float32)
        if boxes.size == 0 and scores.size == 0:
            boxes, scores = boxes.reshape(0, 4), scores.reshape(0)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"Detections.boxes must have shape (N, 4), got {boxes.shape}")
        if scores.shape != (boxes.shape[0],):
            raise ValueError(
                f"Detections.scores must have shape ({boxes.shape[0]},), got {scores.shape}"
            )
        # The dataclass is frozen; normalising dtype and layout once here is the only mutation.
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        """No detections: boxes (0, 4), scores (0,)."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


@dataclass(frozen=True)
class DetectionFilter:
    """The post-processing settings shared by every backend (see :func:`postprocess_detections`).

    Attributes:
        score_threshold: keep boxes with score >= this, in [0, 1].
        nms_threshold: IoU above which the lower-scored of two boxes is suppressed, in [0, 1].
        max_persons: keep at most this many boxes (the best ones), >= 1.
        min_box_size: drop boxes whose width or height (after clipping) is below this, in pixels.
    """

    score_threshold: float = 0.5
    nms_threshold: float = 0.6
    max_persons: int = 20
    min_box_size: float = 8.0

    def __post_init__(self) -> None:
        for name in ("score_threshold", "nms_threshold"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if isinstance(self.max_persons, bool) or not isinstance(self.max_persons, int):
            raise ValueError(f"max_persons must be an integer >= 1, got {self.max_persons!r}")
        if self.max_persons < 1:
            raise ValueError(f"max_persons must be an integer >= 1, got {self.max_persons!r}")
        if not _is_real(self.min_box_size) or not 0.0 <= self.min_box_size < math.inf:
            raise ValueError(f"min_box_size must be a number >= 0, got {self.min_box_size!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class RawDetections(NamedTuple):
    """A backend's output before post-processing, on any device.

    boxes_xyxy: (N, 4) x_min, y_min, x_max, y_max in source-image pixels.
    scores: (N,) confidence.
    labels: (N,) class ids, or None when every box is a person.
    """

    boxes_xyxy: torch.Tensor | np.ndarray
    scores: torch.Tensor | np.ndarray
    labels: torch.Tensor | np.ndarray | None = None


def postprocess_detections(
    raw: RawDetections,
    image_size: tuple[int, int],
    detection_filter: DetectionFilter,
    *,
    person_label: int = 0,
    apply_nms: bool = True,
) -> Detections:
    """Turn a backend's raw boxes into person :class:`Detections`.

    In order: keep class ``person_label`` (when labels are given) and finite boxes with
    score >= threshold; clip to the image; drop boxes narrower or lower than ``min_box_size`` (and
    empty ones); class-agnostic NMS (``apply_nms``); sort by score; keep ``max_persons``.

    Args:
        raw: boxes_xyxy (N, 4), scores (N,), labels (N,) or None; tensors or arrays.
        image_size: (height, width) of the source image, for clipping.
        detection_filter: the thresholds.
        person_label: the class id of "person" in ``raw.labels``.
        apply_nms: False to keep overlapping boxes (given boxes, evaluated with OKS-NMS later).
    """
    boxes = torch.as_tensor(raw.boxes_xyxy).to(torch.float32).reshape(-1, 4)
    scores = torch.as_tensor(raw.scores).to(boxes.device, torch.float32).reshape(-1)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    keep = (
        torch.isfinite(boxes).all(dim=1)
        & torch.isfinite(scores)
        & (scores >= detection_filter.score_threshold)
    )
    if raw.labels is not None:
        labels = torch.as_tensor(raw.labels).to(boxes.device).reshape(-1)
        if labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"{boxes.shape[0]} boxes but {labels.shape[0]} labels")
        keep &= labels == person_label
    boxes, scores = boxes[keep], scores[keep]

    boxes = ops.clip_boxes_to_image(boxes, image_size)
    # A box entirely outside the image clips to zero area: drop it even when min_box_size is 0.
    keep = ops.remove_small_boxes(boxes, detection_filter.min_box_size)
    keep = keep[ops.box_area(boxes[keep]) > 0]
    boxes, scores = boxes[keep], scores[keep]

    if apply_nms:
        order = ops.nms(boxes, scores, detection_filter.nms_threshold)  # sorted by score
    else:
        order = torch.sort(scores, descending=True, stable=True).indices
    order = order[: detection_filter.max_persons]
    boxes_xywh = ops.box_convert(boxes[order], "xyxy", "xywh")
    return Detections(boxes_xywh.cpu().numpy(), scores[order].cpu().numpy())


class PersonDetector(abc.ABC):
    """Finds people in an image. Subclasses implement :meth:`_predict`; post-processing is shared.

    Attributes:
        detection_filter: thresholds applied to every result.
        device: where the network runs.
        person_label: class id of "person" among the backend's labels.
        apply_nms: whether post-processing runs NMS.
    """

    person_label: int = 0
    apply_nms: bool = True

    def __init__(
        self,
        detection_filter: DetectionFilter | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if detection_filter is None:
            detection_filter = DetectionFilter()
        self.detection_filter = detection_filter
        self.device = torch.device(device)

    def detect(self, image: np.ndarray, color_order: str = "RGB") -> Detections:
        """Person boxes in ``image``, an (H, W, 3) uint8 array in channel order ``color_order``."""
        image = check_image(image, color_order)
        with torch.inference_mode():
            raw = self._predict(image, color_order)
            return self._postprocess(raw, image.shape[:2])

    def _postprocess(self, raw: RawDetections, image_size: tuple[int, int]) -> Detections:
        return postprocess_detections(
            raw,
            image_size,
            self.detection_filter,
            person_label=self.person_label,
            apply_nms=self.apply_nms,
        )

    @abc.abstractmethod
    def _predict(self, image: np.ndarray, color_order: str) -> RawDetections:
        """Raw boxes for a validated (H, W, 3) uint8 image, in source-image pixels."""
