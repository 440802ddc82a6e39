"""Person detection with YOLO-family ONNX exports (YOLOv5, YOLOv8/YOLO11, YOLOX) on ONNX Runtime.

ONNX Runtime is an optional dependency: it is imported when such a detector is built.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import ops

from pose_ros.images import check_color_order

from .base import DetectionFilter, DetectorError, PersonDetector, RawDetections

logger = logging.getLogger(__name__)

#: Output layouts: "yolov8" (1, 4+nc, A) cx, cy, w, h, class scores (also YOLO11);
#: "yolov5" and "yolox" (1, A, 5+nc) cx, cy, w, h, objectness, class scores (YOLOX decoded);
#: "auto" tells "yolov8" from "yolov5" by the output shape (more anchors than channels).
YOLO_LAYOUTS: tuple[str, ...] = ("auto", "yolov8", "yolov5", "yolox")

_DEFAULT_INPUT_SIZE = (640, 640)


@dataclass(frozen=True)
class YoloPreprocess:
    """How an image becomes the network input: letterbox, channel order, scaling.

    Attributes:
        color_order: channel order the network expects, "RGB" or "BGR".
        scale: multiplies the uint8 pixel values (1/255 for YOLOv5/v8, 1 for YOLOX).
        center: center the resized image in the letterbox (YOLOv5/v8) or put it top-left (YOLOX).
        pad_value: gray level of the letterbox border.
    """

    color_order: str = "RGB"
    scale: float = 1.0 / 255.0
    center: bool = True
    pad_value: int = 114

    def __post_init__(self) -> None:
        check_color_order(self.color_order)
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"pad_value must be in 0..255, got {self.pad_value!r}")


def default_preprocess(layout: str) -> YoloPreprocess:
    """The preprocessing each exporter's models were trained with."""
    if layout == "yolox":
        return YoloPreprocess(color_order="BGR", scale=1.0, center=False)
    return YoloPreprocess()


def letterbox(
    image: np.ndarray, size: tuple[int, int], *, pad_value: int = 114, center: bool = True
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize ``image`` to fit ``size`` keeping its aspect ratio, and pad the rest.

    Args:
        image: (H, W, 3) uint8.
        size: (height, width) of the output.
        pad_value: border gray level.
        center: pad both sides equally, else only right and bottom.

    Returns:
        (canvas (height, width, 3) uint8, scale, (pad_x, pad_y)): a source pixel (x, y) lands at
        (x * scale + pad_x, y * scale + pad_y).
    """
    height, width = image.shape[:2]
    out_h, out_w = size
    scale = min(out_h / height, out_w / width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x = (out_w - new_w) // 2 if center else 0
    pad_y = (out_h - new_h) // 2 if center else 0
    canvas = cv2.copyMakeBorder(
        image,
        pad_y,
        out_h - new_h - pad_y,
        pad_x,
        out_w - new_w - pad_x,
        cv2.BORDER_CONSTANT,
        value=(pad_value, pad_value, pad_value),
    )
    return canvas, scale, (pad_x, pad_y)


def decode_yolo_output(
    output: np.ndarray, layout: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a YOLO output into boxes, best-class scores and labels.

    Args:
        output: (1, 4+nc, A) for "yolov8", (1, A, 5+nc) for "yolov5"/"yolox"; "auto" picks.
        layout: one of :data:`YOLO_LAYOUTS`.

    Returns:
        boxes (A, 4) cx, cy, w, h in network-input pixels; scores (A,) of the best class (times
        objectness where there is one); labels (A,) the best class, 0-based.
    """
    if output.ndim == 3 and output.shape[0] == 1:
        output = output[0]
    if output.ndim != 2:
        raise DetectorError(
            f"unexpected YOLO output shape {output.shape}: expected (1, 4+nc, A) or (1, A, 5+nc)"
        )
    if layout == "auto":
        # Exports have thousands of anchors and at most a few hundred channels.
        layout = "yolov8" if output.shape[0] < output.shape[1] else "yolov5"
    if layout == "yolov8":
        rows = output.T
        if rows.shape[1] < 5:
            raise DetectorError(f"YOLOv8 output {output.shape} has no class scores")
        class_scores = rows[:, 4:]
    else:
        rows = output
        if rows.shape[1] < 6:
            raise DetectorError(f"{layout} output {output.shape} has no class scores")
        class_scores = rows[:, 5:] * rows[:, 4:5]
    labels = class_scores.argmax(axis=1)
    scores = np.take_along_axis(class_scores, labels[:, None], axis=1)[:, 0]
    return rows[:, :4], scores, labels


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise DetectorError(
            "the onnx_yolo detector needs ONNX Runtime, which is not installed: "
            "pip install onnxruntime (or onnxruntime-gpu for CUDA)."
        ) from error
    return onnxruntime


class OnnxYoloDetector(PersonDetector):
    """A YOLO ONNX export run by ONNX Runtime, keeping only people.

    Args:
        model_path: the .onnx file.
        device: "cuda[:i]" uses ONNX Runtime's CUDA provider when installed, else the CPU.
        detection_filter: the shared post-processing thresholds.
        layout: output layout, one of :data:`YOLO_LAYOUTS`.
        preprocess: overrides :func:`default_preprocess` of the layout.
        input_size: (height, width) of the network input; read from the model, 640x640 when the
            model's input is dynamic.
        person_class: 0-based class index of "person" (0 in COCO-trained YOLOs).
        num_threads: ONNX Runtime intra-op threads (None: its default).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        detection_filter: DetectionFilter | None = None,
        layout: str = "auto",
        preprocess: YoloPreprocess | None = None,
        input_size: tuple[int, int] | None = None,
        person_class: int = 0,
        num_threads: int | None = None,
    ) -> None:
        if layout not in YOLO_LAYOUTS:
            raise ValueError(f"layout must be one of {YOLO_LAYOUTS}, got {layout!r}")
        super().__init__(detection_filter, device)
        ort = _import_onnxruntime()
        path = Path(model_path)
        if not path.is_file():
            raise DetectorError(f"ONNX detector model not found: {path}")

        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                cuda = ("CUDAExecutionProvider", {"device_id": self.device.index or 0})
                providers = [cuda, "CPUExecutionProvider"]
            else:
                logger.warning(
                    "ONNX Runtime has no CUDA provider (pip install onnxruntime-gpu); "
                    "running %s on the CPU",
                    path,
                )
                self.device = torch.device("cpu")
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:
            raise DetectorError(f"cannot load the ONNX detector model {path}: {error}") from error

        model_input = self.session.get_inputs()[0]
        if len(model_input.shape) != 4:
            raise DetectorError(
                f"{path}: expected an image input (1, 3, H, W), got {model_input.shape}"
            )
        self.input_name = model_input.name
        self.input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        static_hw = model_input.shape[2:]
        if input_size is not None:
            self.input_size = (int(input_size[0]), int(input_size[1]))
        elif all(isinstance(dim, int) and dim > 0 for dim in static_hw):
            self.input_size = (int(static_hw[0]), int(static_hw[1]))
        else:
            self.input_size = _DEFAULT_INPUT_SIZE
        self.layout = layout
        self.preprocess = preprocess if preprocess is not None else default_preprocess(layout)
        self.person_label = person_class
        self.model_path = path

    def _predict(self, image: np.ndarray, color_order: str) -> RawDetections:
        pre = self.preprocess
        canvas, scale, (pad_x, pad_y) = letterbox(
            image, self.input_size, pad_value=pre.pad_value, center=pre.center
        )
        if color_order != pre.color_order:
            canvas = canvas[..., ::-1]  # the gray border is the same in either order
        blob = canvas.transpose(2, 0, 1)[None].astype(np.float32) * np.float32(pre.scale)
        output = self.session.run(None, {self.input_name: blob.astype(self.input_dtype)})[0]
        boxes_cxcywh, scores, labels = decode_yolo_output(
            np.asarray(output, dtype=np.float32), self.layout
        )
        boxes = ops.box_convert(torch.from_numpy(boxes_cxcywh), "cxcywh", "xyxy")
        # Undo the letterbox: back to source-image pixels.
        boxes = (boxes - torch.tensor([pad_x, pad_y, pad_x, pad_y], dtype=boxes.dtype)) / scale
        return RawDetections(boxes, torch.from_numpy(scores), torch.from_numpy(labels))
