"""Person detection with YOLO-family ONNX exports (YOLOv5, YOLOv8/YOLO11, YOLOX raw, decoded or
with NMS inside) on ONNX Runtime.

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

#: Output layouts:
#:
#: * "yolov8" (1, 4+nc, A): cx, cy, w, h, class scores (also YOLO11).
#: * "yolov5" (1, A, 5+nc): cx, cy, w, h, objectness, class scores.
#: * "yolox" (1, A, 5+nc): YOLOX's own ``tools/export_onnx.py`` by default and its released
#:   ``yolox_*.onnx`` files: box offsets per grid cell (x, y relative to the cell, log w, h) on
#:   strides 8, 16, 32 (and 64 for P6 models), sigmoid objectness and class scores; decoded here
#:   as YOLOX's ``demo_postprocess`` does.
#: * "yolox_decoded": the same exported with ``--decode_in_inference`` (boxes in pixels).
#: * "yolox_nms": an end-to-end export with NMS inside (mmyolo / mmdeploy easydeploy, TensorRT
#:   EfficientNMS style): four outputs num_dets (1, 1), boxes (1, N, 4) x1, y1, x2, y2,
#:   scores (1, N), labels (1, N).
#: * "auto" tells "yolov8" from "yolov5" by the output shape (more anchors than channels); YOLOX
#:   files must be named, as their preprocessing differs.
#:
#: All YOLOX layouts feed BGR pixels unscaled (0..255), letterboxed top-left (padding right and
#: bottom, gray 114), as YOLOX's ``preproc``.
YOLO_LAYOUTS: tuple[str, ...] = ("auto", "yolov8", "yolov5", "yolox", "yolox_decoded", "yolox_nms")
YOLOX_LAYOUTS: tuple[str, ...] = ("yolox", "yolox_decoded", "yolox_nms")

_DEFAULT_INPUT_SIZE = (640, 640)


@dataclass(frozen=True)
class YoloPreprocess:
    """How an image becomes the network input: letterbox, channel order, scaling.

    Attributes:
        color_order: channel order the network expects, "RGB" or "BGR".
        scale: multiplies the uint8 pixel values (1/255 for YOLOv5/v8, 1 for YOLOX).
        center: center the resized image in the letterbox (YOLOv5/v8) or put it top-left and pad
            right and bottom (YOLOX, whose resize also truncates the scaled size to integers).
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
    if layout in YOLOX_LAYOUTS:
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
        center: pad both sides equally (sizes rounded), else only right and bottom (sizes
            truncated, as YOLOX's ``preproc`` does with ``int(w * r)``).

    Returns:
        (canvas (height, width, 3) uint8, scale, (pad_x, pad_y)): a source pixel (x, y) lands at
        (x * scale + pad_x, y * scale + pad_y).
    """
    height, width = image.shape[:2]
    out_h, out_w = size
    scale = min(out_h / height, out_w / width)
    size_of = round if center else int
    new_w, new_h = max(1, size_of(width * scale)), max(1, size_of(height * scale))
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
        output: (1, 4+nc, A) for "yolov8", (1, A, 5+nc) for "yolov5" and the YOLOX layouts
            (raw "yolox" outputs already grid-decoded by :func:`decode_yolox_grid`); "auto" picks.
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


def decode_yolox_grid(output: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Boxes of a raw YOLOX output in pixels, as YOLOX's ``demo_postprocess``.

    Args:
        output: (1, A, 5+nc) or (A, 5+nc); A = sum over strides s of (H/s)(W/s), anchors ordered
            stride by stride, row-major within each.
        input_size: (H, W) of the network input.

    Returns:
        (A, 5+nc) copy with x, y = (offset + cell) * stride and w, h = exp(value) * stride.
    """
    rows = np.array(output[0] if output.ndim == 3 else output, dtype=np.float32)
    height, width = input_size
    for strides in ((8, 16, 32), (8, 16, 32, 64)):
        grids, expanded = [], []
        for stride in strides:
            ys, xs = np.meshgrid(
                np.arange(height // stride), np.arange(width // stride), indexing="ij"
            )
            grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
            expanded.append(np.full((xs.size, 1), stride, np.float32))
        grid = np.concatenate(grids)
        if len(grid) == len(rows):
            stride_column = np.concatenate(expanded)
            rows[:, :2] = (rows[:, :2] + grid) * stride_column
            # exp of a wild value is inf, not an error: such anchors then fail the size checks.
            with np.errstate(over="ignore"):
                rows[:, 2:4] = np.exp(rows[:, 2:4]) * stride_column
            return rows
    raise DetectorError(
        f"raw YOLOX output has {len(rows)} anchors, which matches no stride 8/16/32(/64) grid of "
        f"a {height}x{width} input; set the input size the model was exported at, or the layout "
        f"'yolox_decoded' if it was exported with --decode_in_inference"
    )


def split_nms_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """boxes (n, 4) x1, y1, x2, y2, scores (n,), labels (n,) of an NMS-included export's four
    outputs num_dets (1, 1), boxes (1, N, 4), scores (1, N), labels (1, N), in any order."""
    if len(outputs) != 4:
        raise DetectorError(
            f"an NMS-included export has 4 outputs (num_dets, boxes, scores, labels), this one "
            f"has {len(outputs)}: {[tuple(o.shape) for o in outputs]}"
        )
    arrays = [np.asarray(o) for o in outputs]
    boxes = [a for a in arrays if a.ndim == 3 and a.shape[-1] == 4]
    count = [a for a in arrays if a.size == 1]
    per_box = [a for a in arrays if a.ndim == 2 and a.size != 1]
    if len(boxes) != 1 or len(count) != 1 or len(per_box) != 2:
        raise DetectorError(
            "cannot tell num_dets (1, 1), boxes (1, N, 4), scores (1, N) and labels (1, N) apart "
            f"in outputs of shapes {[tuple(a.shape) for a in arrays]}"
        )
    # Labels are integers in these exports; if both are floats, scores come first (their order).
    first, second = per_box
    if np.issubdtype(first.dtype, np.integer) and not np.issubdtype(second.dtype, np.integer):
        first, second = second, first
    n = int(np.clip(count[0].reshape(()), 0, boxes[0].shape[1]))
    return (
        boxes[0][0, :n].astype(np.float32),
        first[0, :n].astype(np.float32),
        second[0, :n].astype(np.int64),
    )


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
        outputs = self.session.run(None, {self.input_name: blob.astype(self.input_dtype)})
        if self.layout == "yolox_nms":
            boxes_xyxy, scores, labels = split_nms_outputs(outputs)
            boxes = torch.from_numpy(boxes_xyxy)
        else:
            output = np.asarray(outputs[0], dtype=np.float32)
            if self.layout == "yolox":
                output = decode_yolox_grid(output, self.input_size)
            boxes_cxcywh, scores, labels = decode_yolo_output(output, self.layout)
            boxes = ops.box_convert(torch.from_numpy(boxes_cxcywh), "cxcywh", "xyxy")
        # Undo the letterbox: back to source-image pixels.
        boxes = (boxes - torch.tensor([pad_x, pad_y, pad_x, pad_y], dtype=boxes.dtype)) / scale
        return RawDetections(
            boxes, torch.from_numpy(np.ascontiguousarray(scores)), torch.from_numpy(labels)
        )
