"""Person detection with RTMDet (:mod:`pose_ros.models.rtmdet`), the detector of the RTMPose
pipeline: ``rtmdet_nano`` (320x320, mmpose's COCO + Objects365 person detector, 0.31 GFLOPs) and
``rtmdet_tiny`` (640x640, HumanArt).

The image is prepared as mmdet's test pipeline prepares it: resized to fit the square input
keeping its aspect ratio (sizes rounded as ``mmcv.imrescale``, bilinear), padded right and
bottom with gray 114, in BGR order, minus mean (103.53, 116.28, 123.675) and over std
(57.375, 57.12, 58.395) (B, G, R). The boxes are mmdet's: the network's candidates
(:func:`decode_rtmdet`: above the weights' test score threshold, the best ``nms_pre`` per scale)
are scaled back to the image, and NMS (at the filter's IoU) keeps the weights' ``max_per_img``,
as mmdet's ``predict_by_feat`` with ``rescale=True``; then the shared post-processing of
:func:`pose_ros.detection.base.postprocess_detections` applies the person class, the score
threshold, clipping to the image, the smallest size and ``max_persons`` (no second NMS).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import cv2
import numpy as np
import torch
from torchvision import ops

from pose_ros.models.checkpoints import read_state_dict
from pose_ros.models.errors import CheckpointError
from pose_ros.models.registry import PUBLISHED_CHECKPOINTS
from pose_ros.models.rtmdet import RTMDET_VARIANTS, RTMDet, build_rtmdet, decode_rtmdet

from .base import DetectionFilter, DetectorError, PersonDetector, RawDetections

logger = logging.getLogger(__name__)

#: RTMDet backends :func:`pose_ros.detection.build_detector` accepts.
RTMDET_DETECTORS: tuple[str, ...] = tuple(RTMDET_VARIANTS)
#: The registry name of each backend's published weights (``weights="DEFAULT"``).
RTMDET_DEFAULT_WEIGHTS: dict[str, str] = {
    "rtmdet_nano": "rtmdet_nano_person",
    "rtmdet_tiny": "rtmdet_tiny_humanart",
}

#: What runs the network: (N, 3, S, S) normalised BGR -> (class logits, box distances) per level.
RTMDetNetwork = Callable[[torch.Tensor], tuple[list[torch.Tensor], list[torch.Tensor]]]


def resize_pad(
    image: np.ndarray, size: int, pad_value: int = 114
) -> tuple[np.ndarray, tuple[float, float]]:
    """``image`` (H, W, 3) uint8 resized to fit a ``size`` square keeping its aspect ratio and
    padded right and bottom, as mmdet's ``Resize(keep_ratio=True)`` and ``Pad`` do.

    Returns:
        (canvas (size, size, 3) uint8, (x scale, y scale)): a source pixel (x, y) lands at
        (x * x_scale, y * y_scale); the two differ slightly through the rounded sizes.
    """
    height, width = image.shape[:2]
    ratio = min(size / max(height, width), size / min(height, width))
    # mmcv.imrescale: int(w * ratio + 0.5), the same rounding for both sides.
    new_w, new_h = int(width * ratio + 0.5), int(height * ratio + 0.5)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = cv2.copyMakeBorder(
        resized,
        0,
        size - new_h,
        0,
        size - new_w,
        cv2.BORDER_CONSTANT,
        value=(pad_value, pad_value, pad_value),
    )
    return canvas, (new_w / width, new_h / height)


def load_rtmdet(
    model_name: str,
    weights: str | os.PathLike | None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> RTMDet:
    """An RTMDet network with its weights: ``"DEFAULT"`` (the backend's published file, from
    the checkpoint cache or downloaded and hash-checked), a registry name, a file in mmdet's
    key layout (``backbone.*``, ``neck.*``, ``bbox_head.*``) or None (random weights: tests).

    Raises:
        DetectorError: a missing, corrupt or unverifiable file, or weights that do not fit.
    """
    if model_name not in RTMDET_VARIANTS:
        raise ValueError(
            f"unknown RTMDet backend {model_name!r}; valid: {', '.join(RTMDET_DETECTORS)}"
        )
    if weights is None:
        logger.warning("%s has random weights: its detections are meaningless", model_name)
        return build_rtmdet(model_name)
    source = RTMDET_DEFAULT_WEIGHTS[model_name] if str(weights) == "DEFAULT" else weights
    entry = PUBLISHED_CHECKPOINTS.get(str(source))
    if entry is not None and entry.arch != model_name:
        raise DetectorError(
            f"{source!r} holds weights of {entry.arch}, not of the {model_name} detector"
        )
    try:
        state, path, _ = read_state_dict(source, cache_dir=cache_dir)
    except CheckpointError as error:
        raise DetectorError(f"{model_name} weights: {error}") from None
    classes = state.get("bbox_head.rtm_cls.0.bias")
    model = build_rtmdet(model_name, num_classes=None if classes is None else int(classes.numel()))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        raise DetectorError(
            f"the weights {path} do not fit {model_name} (mmdet layout: backbone.*, neck.*, "
            f"bbox_head.*): {len(missing)} missing ({', '.join(missing[:3])}), "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}), {len(mismatched)} "
            f"shape mismatches ({', '.join(mismatched[:3])})"
        )
    model.load_state_dict(state)
    return model


class RTMDetDetector(PersonDetector):
    """An RTMDet network keeping only people (see the module docstring).

    Args:
        model_name: one of :data:`RTMDET_DETECTORS`.
        weights: see :func:`load_rtmdet`; a loaded :class:`RTMDet` is accepted too.
        device: where the network runs.
        detection_filter: the shared post-processing thresholds.
        cache_dir: checkpoint cache for registry names.

    Attributes:
        apply_nms: False: NMS runs on the decoded boxes, before the shared post-processing.
        model: the :class:`RTMDet` module.
        network: what runs it: the module itself, or a runner of its ONNX export
            (``pose_ros.engines``) with the same call.
        engine: "torch" or "onnxruntime".
    """

    apply_nms = False

    def __init__(
        self,
        model_name: str = "rtmdet_nano",
        *,
        weights: str | os.PathLike | RTMDet | None = "DEFAULT",
        device: str | torch.device = "cpu",
        detection_filter: DetectionFilter | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(detection_filter, device)
        if isinstance(weights, RTMDet):
            model = weights
        else:
            model = load_rtmdet(model_name, weights, cache_dir=cache_dir)
        self.model_name = model_name
        self.model = model.eval().to(self.device)
        self.network: RTMDetNetwork = self.model
        self.engine = "torch"
        variant = model.variant
        self.person_label = variant.person_label
        self.input_size = variant.input_size
        # Candidates as mmdet's test_cfg keeps them; the shared filter decides after that.
        self.candidate_threshold = min(
            variant.score_threshold, self.detection_filter.score_threshold
        )
        self.nms_pre = variant.nms_pre
        self.max_detections = variant.max_detections
        self._mean = torch.tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1)

    def preprocess(
        self, image: np.ndarray, color_order: str = "RGB"
    ) -> tuple[torch.Tensor, tuple[float, float]]:
        """(1, 3, S, S) normalised BGR network input of an (H, W, 3) uint8 image, and the
        (x, y) scale from image to input pixels."""
        canvas, scale = resize_pad(image, self.input_size, RTMDet.pad_value)
        if color_order != RTMDet.color_order:
            canvas = canvas[..., ::-1]  # the gray border is the same in either order
        tensor = torch.from_numpy(np.ascontiguousarray(canvas)).permute(2, 0, 1)[None].float()
        return (tensor - self._mean) / self._std, scale

    def _predict(self, image: np.ndarray, color_order: str) -> RawDetections:
        tensor, (scale_x, scale_y) = self.preprocess(image, color_order)
        class_logits, distances = self.network(tensor.to(self.device))
        boxes, scores, labels = decode_rtmdet(
            class_logits,
            distances,
            self.model.strides,
            max_shape=(self.input_size, self.input_size),
            score_threshold=self.candidate_threshold,
            nms_pre=self.nms_pre,
            nms_iou=None,  # on the image's boxes below, as mmdet rescales before its NMS
        )
        factor = torch.tensor([scale_x, scale_y, scale_x, scale_y], device=boxes.device)
        boxes = boxes / factor
        keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        order = ops.batched_nms(boxes, scores, labels, self.detection_filter.nms_threshold)
        order = order[: self.max_detections]
        return RawDetections(boxes[order], scores[order], labels[order])
