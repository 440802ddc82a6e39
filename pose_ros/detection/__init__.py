"""Person detection: the boxes that the top-down pose network crops.

Backends: torchvision's COCO detectors, RTMDet ("rtmdet_nano", "rtmdet_tiny"), YOLO ONNX exports
on ONNX Runtime ("onnx_yolo"), and boxes supplied from outside ("given"). All share one
post-processing step (:func:`postprocess_detections`) and return :class:`Detections`. Build one
with :func:`build_detector`.
"""

from __future__ import annotations

import os

import torch

from pose_ros.images import COLOR_ORDERS
from pose_ros.keypoints import COCO_PERSON_CATEGORY_ID

from .base import (
    DetectionFilter,
    Detections,
    DetectorError,
    PersonDetector,
    RawDetections,
    postprocess_detections,
)
from .given import (
    FullImageDetector,
    GivenBoxesDetector,
    load_coco_detections,
)
from .onnx_yolo import (
    YOLO_LAYOUTS,
    OnnxYoloDetector,
    YoloPreprocess,
    decode_yolo_output,
    default_preprocess,
    letterbox,
)
from .rtmdet_backend import RTMDET_DETECTORS, RTMDetDetector
from .torchvision_backend import TORCHVISION_DETECTORS, TorchvisionDetector

#: Every name :func:`build_detector` accepts.
DETECTOR_BACKENDS: tuple[str, ...] = (
    *TORCHVISION_DETECTORS,
    *RTMDET_DETECTORS,
    "onnx_yolo",
    "given",
    "full_image",
)


def build_detector(
    backend: str,
    *,
    weights: str | os.PathLike | None = "DEFAULT",
    device: str | torch.device = "cpu",
    score_threshold: float = 0.5,
    nms_threshold: float = 0.6,
    max_persons: int = 20,
    min_box_size: float = 8.0,
    **backend_kwargs: object,
) -> PersonDetector:
    """Build a person detector.

    Args:
        backend: one of :data:`DETECTOR_BACKENDS`.
        weights: torchvision backends: a weights name ("DEFAULT", "COCO_V1"), a state_dict file,
            or None for random weights (tests). RTMDet backends: "DEFAULT" (the published
            person detector of the checkpoint registry), a registry name, a file in mmdet's key
            layout, or None (tests). "onnx_yolo": the .onnx file (required). "given" and
            "full_image": unused (leave the default or None).
        device: where the network runs ("cpu", "cuda", "cuda:1").
        score_threshold: keep boxes scoring at least this, in [0, 1].
        nms_threshold: IoU of class-agnostic NMS, in [0, 1].
        max_persons: keep at most this many boxes, >= 1.
        min_box_size: drop boxes narrower or lower than this many pixels.
        **backend_kwargs: passed to the backend class (:class:`TorchvisionDetector`,
            :class:`OnnxYoloDetector`, :class:`GivenBoxesDetector`).

    Raises:
        ValueError: an unknown backend or an invalid argument.
        DetectorError: weights or a model file that cannot be found, fetched or read.
    """
    if backend not in DETECTOR_BACKENDS:
        raise ValueError(
            f"unknown detector backend {backend!r}; valid: {', '.join(DETECTOR_BACKENDS)}"
        )
    detection_filter = DetectionFilter(
        score_threshold=score_threshold,
        nms_threshold=nms_threshold,
        max_persons=max_persons,
        min_box_size=min_box_size,
    )
    if backend in TORCHVISION_DETECTORS:
        return TorchvisionDetector(
            backend,
            weights=weights,
            device=device,
            detection_filter=detection_filter,
            **backend_kwargs,
        )
    if backend in RTMDET_DETECTORS:
        return RTMDetDetector(
            backend,
            weights=weights,
            device=device,
            detection_filter=detection_filter,
            **backend_kwargs,
        )
    if backend == "onnx_yolo":
        if weights is None or weights == "DEFAULT":
            raise ValueError("the onnx_yolo detector needs weights=<path to a YOLO .onnx export>")
        return OnnxYoloDetector(
            weights, device=device, detection_filter=detection_filter, **backend_kwargs
        )
    if weights not in (None, "DEFAULT"):
        raise ValueError(f"the {backend} detector takes no weights, got {weights!r}")
    if backend == "full_image":
        return FullImageDetector(detection_filter=detection_filter, **backend_kwargs)
    return GivenBoxesDetector(detection_filter=detection_filter, **backend_kwargs)


__all__ = [
    "COCO_PERSON_CATEGORY_ID",
    "COLOR_ORDERS",
    "DETECTOR_BACKENDS",
    "RTMDET_DETECTORS",
    "TORCHVISION_DETECTORS",
    "YOLO_LAYOUTS",
    "DetectionFilter",
    "Detections",
    "DetectorError",
    "FullImageDetector",
    "GivenBoxesDetector",
    "OnnxYoloDetector",
    "PersonDetector",
    "RTMDetDetector",
    "RawDetections",
    "TorchvisionDetector",
    "YoloPreprocess",
    "build_detector",
    "decode_yolo_output",
    "default_preprocess",
    "letterbox",
    "load_coco_detections",
    "postprocess_detections",
]
