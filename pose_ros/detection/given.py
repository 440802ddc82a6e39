"""Person boxes supplied from outside: ground truth or a detection-results file in evaluation, an
external detector on ROS. They go through the same post-processing as detected boxes."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torchvision import ops

from pose_ros.images import check_image
from pose_ros.keypoints import COCO_PERSON_CATEGORY_ID

from .base import (
    DetectionFilter,
    Detections,
    DetectorError,
    PersonDetector,
    RawDetections,
)


class GivenBoxesDetector(PersonDetector):
    """Returns the boxes it is given, clipped, thresholded and capped like detected ones.

    Boxes are set once with :meth:`set_boxes` (they stay until replaced) or passed to
    :meth:`detect` for one call. The image only gives the size to clip to.

    Args:
        detection_filter: the shared post-processing thresholds.
        nms: run NMS at the filter's IoU threshold. Off by default: evaluation runs its own
            OKS-NMS on the poses.
    """

    def __init__(
        self, *, detection_filter: DetectionFilter | None = None, nms: bool = False
    ) -> None:
        super().__init__(detection_filter, "cpu")
        self.apply_nms = nms
        self._boxes, self._scores = _check_boxes(np.zeros((0, 4)), None)

    def set_boxes(self, boxes: np.ndarray, scores: np.ndarray | None = None) -> None:
        """Boxes for the following :meth:`detect` calls.

        Args:
            boxes: (N, 4) x_min, y_min, width, height in source-image pixels.
            scores: (N,) in 0..1; None gives every box score 1.
        """
        self._boxes, self._scores = _check_boxes(boxes, scores)

    def detect(
        self,
        image: np.ndarray,
        color_order: str = "RGB",
        *,
        boxes: np.ndarray | None = None,
        scores: np.ndarray | None = None,
    ) -> Detections:
        """The given person boxes in ``image`` (H, W, 3) uint8, post-processed.

        Args:
            boxes: (N, 4) xywh boxes for this call only; None uses those of :meth:`set_boxes`.
            scores: (N,) scores of ``boxes``; None gives them score 1.
        """
        image = check_image(image, color_order)
        if boxes is None:
            if scores is not None:
                raise ValueError("scores given without boxes")
            raw = self._predict(image, color_order)
        else:
            raw = _raw_detections(*_check_boxes(boxes, scores))
        return self._postprocess(raw, image.shape[:2])

    def _predict(self, image: np.ndarray, color_order: str) -> RawDetections:
        return _raw_detections(self._boxes, self._scores)


class FullImageDetector(PersonDetector):
    """The whole frame is one person box with score 1: for cameras that already frame a single
    person (pre-cropped input), and for tests and demos that need no detector weights."""

    apply_nms = False

    def __init__(self, *, detection_filter: DetectionFilter | None = None) -> None:
        super().__init__(detection_filter, "cpu")

    def _predict(self, image: np.ndarray, color_order: str) -> RawDetections:
        height, width = image.shape[:2]
        box = np.array([[0.0, 0.0, width - 1.0, height - 1.0]], dtype=np.float32)
        return RawDetections(box, np.ones(1, dtype=np.float32))


def _raw_detections(boxes_xywh: np.ndarray, scores: np.ndarray) -> RawDetections:
    boxes_xyxy = ops.box_convert(torch.from_numpy(boxes_xywh), "xywh", "xyxy")
    return RawDetections(boxes_xyxy, torch.from_numpy(scores))


def _check_boxes(boxes: np.ndarray, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    # Copies: the caller may reuse its arrays while these are stored.
    boxes = np.array(boxes, dtype=np.float32, order="C")
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) (x, y, width, height), got {boxes.shape}")
    if scores is None:
        scores = np.ones(len(boxes), np.float32)
    scores = np.array(scores, dtype=np.float32, order="C").reshape(-1)
    if scores.shape != (len(boxes),):
        raise ValueError(f"{len(boxes)} boxes but {scores.shape[0]} scores")
    if not np.all((scores >= 0) & (scores <= 1)):
        raise ValueError("scores must be in [0, 1]")
    return boxes, scores


def load_coco_detections(
    path: str | os.PathLike, *, category_id: int = COCO_PERSON_CATEGORY_ID
) -> dict[int | str, Detections]:
    """Read a COCO detection-results file into person boxes per image.

    Args:
        path: JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        category_id: the category kept (COCO person: 1).

    Returns:
        {image_id: Detections} for the images with at least one such box, boxes sorted by score.
        No threshold is applied here: detectors built on them apply theirs.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DetectorError(f"COCO detection results file not found: {path}") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DetectorError(f"cannot read the COCO detection results {path}: {error}") from error
    if not isinstance(entries, list):
        raise DetectorError(
            f"{path} is not a COCO detection results file: expected a JSON list of "
            f'{{"image_id", "category_id", "bbox", "score"}} objects, '
            f"got a {type(entries).__name__}"
        )
    per_image: dict[int | str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for index, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            raise DetectorError(f"{path}: detection {index} ({entry!r:.120}) {problem}")
        if entry["category_id"] == category_id:
            boxes, scores = per_image[entry["image_id"]]
            boxes.append(entry["bbox"])
            scores.append(entry["score"])
    result = {}
    for image_id, (boxes, scores) in per_image.items():
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        result[image_id] = Detections(np.asarray(boxes)[order], np.asarray(scores)[order])
    return result


def _entry_problem(entry: object) -> str | None:
    """What is wrong with one results entry, or None."""
    if not isinstance(entry, dict):
        return "is not a JSON object"
    missing = [key for key in ("image_id", "category_id", "bbox", "score") if key not in entry]
    if missing:
        return f"lacks {', '.join(missing)}"
    if isinstance(entry["image_id"], bool) or not isinstance(entry["image_id"], (int, str)):
        return "has an image_id that is neither an integer nor a string"
    bbox = entry["bbox"]
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(_is_finite_number(value) for value in bbox)
    ):
        return "has a bbox that is not 4 finite numbers [x, y, width, height]"
    if bbox[2] < 0 or bbox[3] < 0:
        return "has a bbox with a negative width or height"
    if not _is_finite_number(entry["score"]) or not 0 <= entry["score"] <= 1:
        return "has a score that is not a number in [0, 1]"
    return None


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
