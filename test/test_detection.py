"""Tests of pose_ros.detection: shared post-processing, torchvision detectors (random weights, real
COCO images), YOLO ONNX decoding on tiny real ONNX graphs, given boxes and COCO results files."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper, numpy_helper

from pose_ros.detection import (
    TORCHVISION_DETECTORS,
    DetectionFilter,
    Detections,
    DetectorError,
    GivenBoxesDetector,
    OnnxYoloDetector,
    RawDetections,
    TorchvisionDetector,
    build_detector,
    letterbox,
    load_coco_detections,
    postprocess_detections,
)
from pose_ros.detection.onnx_yolo import YoloPreprocess, decode_yolox_grid, split_nms_outputs
from pose_ros.detection.torchvision_backend import download_weights


@pytest.fixture(scope="module")
def coco_image_bgr(coco_dir: Path) -> np.ndarray:
    """A real COCO image; missing test data fails the test (conftest's coco_dir), never skips."""
    path = coco_dir / "000000196141.jpg"
    image = cv2.imread(str(path))
    if image is None:
        pytest.fail(f"test data missing or unreadable: {path}")
    return image


def _assert_well_formed(detections: Detections, image_shape: tuple[int, ...], max_persons: int):
    assert detections.boxes.dtype == np.float32 and detections.scores.dtype == np.float32
    assert detections.boxes.shape == (len(detections), 4)
    assert detections.scores.shape == (len(detections),)
    assert len(detections) <= max_persons
    assert np.all(np.diff(detections.scores) <= 0), "scores not sorted descending"
    assert np.all((detections.scores >= 0) & (detections.scores <= 1))
    x, y, w, h = detections.boxes.T
    height, width = image_shape[:2]
    assert np.all((x >= 0) & (y >= 0) & (w > 0) & (h > 0))
    assert np.all(x + w <= width + 1e-3) and np.all(y + h <= height + 1e-3)


# --- Detections and the shared post-processing ------------------------------------------------


def test_detections_normalises_dtype_and_validates_shapes():
    detections = Detections(np.array([[1, 2, 3, 4]], np.float64), np.array([0.5]))
    assert detections.boxes.dtype == np.float32 and detections.scores.dtype == np.float32
    assert len(detections) == 1
    empty = Detections.empty()
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.scores.shape == (0,)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Detections(np.zeros((2, 5)), np.zeros(2))
    with pytest.raises(ValueError, match="scores"):
        Detections(np.zeros((2, 4)), np.zeros(3))


# Image 200 wide, 100 high; person label 1. Each row: box xyxy, score, label, and its fate.
_RAW_BOXES = [
    ([10, 10, 50, 90], 0.90, 1),  # kept, best
    ([12, 10, 52, 90], 0.85, 1),  # IoU 0.9 with the first: suppressed by NMS
    ([100, 10, 140, 90], 0.95, 2),  # another class
    ([150, 20, 230, 80], 0.70, 1),  # clipped to x_max 200
    ([60, 10, 65, 90], 0.80, 1),  # 5 px wide < min_box_size 8
    ([60, 10, 100, 90], 0.40, 1),  # below score_threshold 0.5
    ([100, 40, 140, 60], 0.60, 1),  # kept
    ([-30, -30, -5, -5], 0.99, 1),  # outside the image: empty after clipping
    ([0, 0, 30, 30], 0.55, 1),  # kept, but 4th: cut by max_persons=3
    ([math.nan, 0, 30, 30], 0.99, 1),  # not finite
]


def _raw(rows=_RAW_BOXES) -> RawDetections:
    boxes, scores, labels = zip(*rows, strict=True)
    return RawDetections(np.array(boxes, np.float32), np.array(scores), np.array(labels))


def test_postprocess_keeps_exactly_the_expected_persons():
    filt = DetectionFilter(score_threshold=0.5, nms_threshold=0.6, max_persons=3, min_box_size=8)
    result = postprocess_detections(_raw(), (100, 200), filt, person_label=1)
    np.testing.assert_allclose(
        result.boxes, [[10, 10, 40, 80], [150, 20, 50, 60], [100, 40, 40, 20]]
    )
    np.testing.assert_allclose(result.scores, [0.90, 0.70, 0.60])

    more = DetectionFilter(score_threshold=0.5, nms_threshold=0.6, max_persons=20, min_box_size=8)
    result = postprocess_detections(_raw(), (100, 200), more, person_label=1)
    np.testing.assert_allclose(result.scores, [0.90, 0.70, 0.60, 0.55])


def test_postprocess_switches():
    filt = DetectionFilter(score_threshold=0.5, max_persons=20, min_box_size=0)
    without_nms = postprocess_detections(_raw(), (100, 200), filt, person_label=1, apply_nms=False)
    # No NMS: the overlapping 0.85 box survives; min size 0: the 5-px box too; the box outside
    # the image never does.
    np.testing.assert_allclose(without_nms.scores, [0.90, 0.85, 0.80, 0.70, 0.60, 0.55])
    # Without labels every box is a person, including the 0.95 one.
    unlabeled = _raw()._replace(labels=None)
    result = postprocess_detections(unlabeled, (100, 200), filt, apply_nms=False)
    assert result.scores[0] == pytest.approx(0.95)
    empty = postprocess_detections(RawDetections(np.zeros((0, 4)), np.zeros(0)), (100, 200), filt)
    assert empty.boxes.shape == (0, 4) and len(empty) == 0


# --- argument validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"score_threshold": 1.5},
        {"score_threshold": -0.1},
        {"score_threshold": math.nan},
        {"nms_threshold": 2.0},
        {"max_persons": 0},
        {"max_persons": 2.5},
        {"max_persons": True},
        {"min_box_size": -1.0},
    ],
)
def test_build_detector_rejects_bad_thresholds(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        build_detector("given", **kwargs)


def test_build_detector_rejects_unknown_backends_and_misplaced_weights():
    with pytest.raises(ValueError, match=r"fasterrcnn_resnet50_fpn_v2.*onnx_yolo.*given"):
        build_detector("yolo")
    with pytest.raises(ValueError, match="onnx"):
        build_detector("onnx_yolo")
    with pytest.raises(ValueError, match="no weights"):
        build_detector("given", weights="model.pt")


@pytest.mark.parametrize(
    ("image", "color_order"),
    [
        (np.zeros((8, 8, 3), np.float32), "RGB"),
        (np.zeros((8, 8), np.uint8), "RGB"),
        (np.zeros((8, 8, 4), np.uint8), "RGB"),
        (np.zeros((0, 8, 3), np.uint8), "RGB"),
        (np.zeros((8, 8, 3), np.uint8), "rgb"),
    ],
)
def test_detect_rejects_bad_images(image, color_order):
    with pytest.raises(ValueError):
        GivenBoxesDetector().detect(image, color_order)


# --- torchvision detectors --------------------------------------------------------------------

# Random COCO heads rank other classes above "person"; num_classes=2 (background, person), the
# layout of a person-only fine-tune, makes every foreground box a person. Small input sizes for
# the ResNet-50 models keep the test fast on a CPU.
_FAST_SIZES = {"min_size": 320, "max_size": 480}
_TORCHVISION_KWARGS = {
    "fasterrcnn_resnet50_fpn_v2": _FAST_SIZES,
    "fasterrcnn_resnet50_fpn": _FAST_SIZES,
    "fasterrcnn_mobilenet_v3_large_fpn": {},
    "retinanet_resnet50_fpn_v2": _FAST_SIZES,
    "ssdlite320_mobilenet_v3_large": {},
}


@pytest.mark.parametrize("name", TORCHVISION_DETECTORS)
def test_torchvision_detector_on_a_coco_image(name, coco_image_bgr):
    torch.manual_seed(0)
    detector = build_detector(
        name,
        weights=None,
        score_threshold=0.0,
        min_box_size=2.0,
        max_persons=10,
        num_classes=2,
        **_TORCHVISION_KWARGS[name],
    )
    assert detector.device == torch.device("cpu") and not detector.model.training
    from_bgr = detector.detect(coco_image_bgr, "BGR")
    from_rgb = detector.detect(cv2.cvtColor(coco_image_bgr, cv2.COLOR_BGR2RGB), "RGB")
    assert len(from_bgr) > 0
    _assert_well_formed(from_bgr, coco_image_bgr.shape, max_persons=10)
    np.testing.assert_array_equal(from_bgr.boxes, from_rgb.boxes)
    np.testing.assert_array_equal(from_bgr.scores, from_rgb.scores)
    if "min_size" in _TORCHVISION_KWARGS[name]:  # builder keyword arguments reach the model
        assert detector.model.transform.min_size == (320,)


def test_torchvision_model_limits_are_relaxed_to_ours():
    detector = build_detector(
        "fasterrcnn_mobilenet_v3_large_fpn",
        weights=None,
        score_threshold=0.3,
        nms_threshold=0.7,
        max_persons=500,
        half=True,  # CUDA only: ignored on the CPU
    )
    heads = detector.model.roi_heads
    assert heads.score_thresh == pytest.approx(0.05)  # torchvision's lower default stays
    assert heads.nms_thresh == pytest.approx(0.7)
    assert heads.detections_per_img == 500
    assert detector.half is False


@pytest.fixture(scope="module")
def ssdlite_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = torchvision.models.get_model(
        "ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=91
    )
    return model.state_dict()


def _assert_loaded(detector: TorchvisionDetector, state_dict: dict[str, torch.Tensor]) -> None:
    loaded = detector.model.state_dict()
    for key in (
        "head.classification_head.module_list.0.1.weight",
        "backbone.features.0.0.0.weight",
    ):
        torch.testing.assert_close(loaded[key], state_dict[key])


def test_torchvision_weights_from_a_file(tmp_path, ssdlite_state_dict):
    path = tmp_path / "ssdlite.pth"
    torch.save(ssdlite_state_dict, path)
    _assert_loaded(
        build_detector("ssdlite320_mobilenet_v3_large", weights=str(path)), ssdlite_state_dict
    )
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": ssdlite_state_dict, "epoch": 3}, checkpoint)
    _assert_loaded(
        build_detector("ssdlite320_mobilenet_v3_large", weights=checkpoint), ssdlite_state_dict
    )


def test_torchvision_weights_name_uses_a_hand_placed_cache_file(
    tmp_path, monkeypatch, ssdlite_state_dict
):
    # What the download error message tells offline users to do: no network is touched.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(ssdlite_state_dict, cache / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth")
    detector = build_detector("ssdlite320_mobilenet_v3_large", weights="COCO_V1")
    _assert_loaded(detector, ssdlite_state_dict)


def test_failed_download_names_the_file_and_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # Port 9 on loopback: the connection is refused at once, with or without internet.
    with pytest.raises(DetectorError) as error:
        download_weights("http://127.0.0.1:9/detector-0123abcd.pth", progress=False)
    assert "detector-0123abcd.pth" in str(error.value)
    assert str(tmp_path / "hub" / "checkpoints") in str(error.value)


def test_bad_torchvision_weights_raise_detector_errors(tmp_path, ssdlite_state_dict):
    name = "ssdlite320_mobilenet_v3_large"
    missing = tmp_path / "missing.pth"
    with pytest.raises(DetectorError, match=r"missing\.pth"):
        build_detector(name, weights=str(missing))
    with pytest.raises(DetectorError, match="COCO_V1"):  # a mistyped name lists the real ones
        build_detector(name, weights="COCO_V9")

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(DetectorError, match=r"corrupt\.pth"):
        build_detector(name, weights=str(corrupt))

    unrelated = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(3)}, unrelated)
    with pytest.raises(DetectorError, match=r"unrelated.pth do not fit.*missing"):
        build_detector(name, weights=str(unrelated))

    two_classes = tmp_path / "two_classes.pth"  # same keys, other head shapes
    torch.save(
        torchvision.models.get_model(
            name, weights=None, weights_backbone=None, num_classes=2
        ).state_dict(),
        two_classes,
    )
    with pytest.raises(DetectorError, match=r"two_classes\.pth do not fit"):
        build_detector(name, weights=str(two_classes))


# --- YOLO ONNX exports ------------------------------------------------------------------------

# Tiny YOLO-like graphs: output = CONSTANT + MASK * input[0, 0, 32, 32]. The constant holds known
# boxes; the mask makes one score equal the network-input value of channel 0 at the centre, which
# shows which channel order and scaling the detector fed in.
_INPUT = 64
# Source image 128 wide, 96 high: letterbox scale 0.5 to 64x48, 8 rows of padding above when
# centred. Channels R=204, G=10, B=51 (0.8, 0.04, 0.2 once divided by 255).
_IMAGE_RGB = np.empty((96, 128, 3), np.uint8)
_IMAGE_RGB[:] = (204, 10, 51)

# Rows: cx, cy, w, h in network pixels, class, score (of that class, the other one gets 0.05).
_YOLO_BOXES = [
    (32, 32, 20, 30, 0, 0.90),  # kept
    (33, 32, 20, 30, 0, 0.80),  # overlaps the first: NMS
    (10, 20, 8, 8, 1, 0.95),  # another class
    (50, 20, 8, 10, 0, 0.30),  # below threshold
    (12, 40, 10, 12, 0, None),  # score from the input pixel
    (60, 30, 16, 10, 0, 0.70),  # crosses the right border: clipped
    (20, 30, 3, 3, 0, 0.99),  # 6x6 source pixels < min_box_size 8
    (0, 0, 0, 0, 0, 0.0),  # empty anchor
]


def _yolo_rows(objectness: bool, input_score: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, C) constant and mask rows, C = 4 + [objectness] + 2 classes."""
    offset = 5 if objectness else 4
    const = np.zeros((len(_YOLO_BOXES), offset + 2), np.float32)
    mask = np.zeros_like(const)
    for row, (cx, cy, w, h, cls, score) in enumerate(_YOLO_BOXES):
        const[row, :4] = cx, cy, w, h
        if objectness:
            const[row, 4] = 1.0
        const[row, offset + 1 - cls] = 0.05
        if score is None:
            mask[row, offset + cls] = input_score
        else:
            const[row, offset + cls] = score
    if objectness:  # 0.5 objectness x 0.9 class: 0.45 < 0.5 although both pass alone
        const[3, 4], const[3, offset] = 0.5, 0.9
    return const, mask


def _write_yolo_graph(path: Path, const: np.ndarray, mask: np.ndarray, input_dims=None) -> Path:
    input_dims = input_dims or [1, 3, _INPUT, _INPUT]
    initializers = [
        numpy_helper.from_array(const[None], "constant"),
        numpy_helper.from_array(mask[None], "mask"),
        numpy_helper.from_array(np.array([0, 32, 32], np.int64), "starts"),
        numpy_helper.from_array(np.array([1, 33, 33], np.int64), "ends"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([1, 1, 1], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["pixel"]),
        helper.make_node("Reshape", ["pixel", "shape"], ["pixel3"]),
        helper.make_node("Mul", ["mask", "pixel3"], ["masked"]),
        helper.make_node("Add", ["constant", "masked"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, *const.shape])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _expected(center: bool) -> tuple[np.ndarray, np.ndarray]:
    """Surviving boxes (source xywh) and scores: source = (network - pad) / 0.5."""
    boxes = np.array([[44, 34, 40, 60], [14, 68, 20, 24], [104, 50, 24, 20]], np.float32)
    if center:  # 8 rows of padding above: 16 source rows
        boxes[:, 1] -= 16
    return boxes, np.array([0.9, 0.8, 0.7], np.float32)


@pytest.mark.parametrize(("layout", "objectness"), [("yolov8", False), ("yolov5", True)])
def test_onnx_yolo_layouts(tmp_path, layout, objectness):
    const, mask = _yolo_rows(objectness, input_score=1.0)
    if layout == "yolov8":  # (1, 4+nc, A)
        const, mask = const.T.copy(), mask.T.copy()
    path = _write_yolo_graph(tmp_path / f"{layout}.onnx", const, mask)
    expected_boxes, expected_scores = _expected(center=True)
    for requested_layout in ("auto", layout):
        detector = build_detector("onnx_yolo", weights=str(path), layout=requested_layout)
        assert detector.input_size == (_INPUT, _INPUT)
        result = detector.detect(_IMAGE_RGB, "RGB")
        np.testing.assert_allclose(result.boxes, expected_boxes, atol=1e-4)
        np.testing.assert_allclose(result.scores, expected_scores, atol=1e-6)
        same = detector.detect(np.ascontiguousarray(_IMAGE_RGB[..., ::-1]), "BGR")
        np.testing.assert_array_equal(same.boxes, result.boxes)
        # Declared BGR, the network sees B=51 first: the input-scored box (0.2) drops out.
        swapped = detector.detect(_IMAGE_RGB, "BGR")
        np.testing.assert_allclose(swapped.scores, [0.9, 0.7], atol=1e-6)


# YOLOX exports made with torch.onnx from tiny modules with YOLOX's output shapes. One person's
# score is the network input at (0, 0) of channel 0 divided by 255: it reaches 0.8 only when the
# detector feeds B (=204) first, unscaled, with the image at the top left (a centred letterbox
# puts the gray 114 there: 0.45 < 0.5). _BGR_128x96 is 128 wide, 96 high: scale 0.5 to 64x48.
_BGR_128x96 = np.empty((96, 128, 3), np.uint8)
_BGR_128x96[:] = (204, 10, 51)


class _FromPixel(torch.nn.Module):
    """outputs = constants + masks * images[0, 0, 0, 0] (labels and counts passed through)."""

    def __init__(self, *pairs: tuple[np.ndarray, np.ndarray | None]) -> None:
        super().__init__()
        self.count = len(pairs)
        for i, (const, mask) in enumerate(pairs):
            self.register_buffer(f"const{i}", torch.from_numpy(const))
            self.register_buffer(f"mask{i}", None if mask is None else torch.from_numpy(mask))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pixel = images[:, 0:1, 0:1, 0:1]
        outputs = []
        for i in range(self.count):
            const, mask = getattr(self, f"const{i}"), getattr(self, f"mask{i}")
            scaled = 0 if mask is None else mask * pixel.reshape([1] * const.ndim)
            outputs.append(const + scaled)
        return tuple(outputs)


def _export(module: torch.nn.Module, path: Path, outputs: list[str]) -> Path:
    torch.onnx.export(
        module,
        (torch.zeros(1, 3, _INPUT, _INPUT),),
        str(path),
        input_names=["images"],
        output_names=outputs,
        opset_version=17,
        dynamo=False,
    )
    return path


def _yolox_raw_rows() -> tuple[np.ndarray, np.ndarray]:
    """(1, 84, 7) raw YOLOX rows for a 64x64 input: 8x8 + 4x4 + 2x2 anchors, 2 classes."""
    const = np.zeros((1, 64 + 16 + 4, 7), np.float32)
    mask = np.zeros_like(const)
    # stride 8, cell (x=3, y=3): centre (3.5, 3.25) * 8 = (28, 26), 20 x 30 px; score from pixel
    const[0, 3 * 8 + 3, :6] = 0.5, 0.25, np.log(20 / 8), np.log(30 / 8), 1.0, 0.0
    mask[0, 3 * 8 + 3, 5] = 1.0 / 255.0
    # stride 16, cell (x=1, y=2): centre (16, 32), 16 x 32 px; 0.9 x 1.0
    const[0, 64 + 2 * 4 + 1, :6] = 0.0, 0.0, 0.0, np.log(2.0), 0.9, 1.0
    # stride 32, cell (1, 1): another class, high score: not a person
    const[0, 80 + 3, :] = 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.95
    return const, mask


def test_onnx_yolox_raw_export_is_grid_decoded_with_its_preprocessing(tmp_path):
    path = _export(_FromPixel(_yolox_raw_rows()), tmp_path / "yolox_s.onnx", ["output"])
    detector = build_detector("onnx_yolo", weights=path, layout="yolox")
    result = detector.detect(_BGR_128x96, "BGR")
    # Network boxes / 0.5 (top-left letterbox: no offset): (36, 22, 40, 60), (16, 32, 32, 64).
    np.testing.assert_allclose(result.boxes, [[16, 32, 32, 64], [36, 22, 40, 60]], atol=1e-3)
    np.testing.assert_allclose(result.scores, [0.9, 0.8], atol=1e-5)
    rgb = np.ascontiguousarray(_BGR_128x96[..., ::-1])
    np.testing.assert_allclose(detector.detect(rgb, "RGB").boxes, result.boxes)
    # Fed in the wrong order, scaled, or centred, the pixel-scored person drops out.
    np.testing.assert_allclose(detector.detect(rgb, "BGR").scores, [0.9], atol=1e-5)
    for preprocess in (
        YoloPreprocess(color_order="BGR", scale=1 / 255, center=False),
        YoloPreprocess(color_order="BGR", scale=1.0, center=True),
    ):
        other = OnnxYoloDetector(path, layout="yolox", preprocess=preprocess)
        assert len(other.detect(_BGR_128x96, "BGR")) == 1
    # Without the grid decoding (taken as already decoded) the boxes are offsets, not pixels.
    decoded = build_detector("onnx_yolo", weights=path, layout="yolox_decoded")
    wrong = decoded.detect(_BGR_128x96, "BGR").boxes
    assert wrong.shape != result.boxes.shape or not np.allclose(wrong, result.boxes, atol=1)
    with pytest.raises(DetectorError, match="matches no stride"):
        decode_yolox_grid(np.zeros((1, 83, 7), np.float32), (_INPUT, _INPUT))


def test_onnx_yolox_export_with_nms_inside(tmp_path):
    boxes = np.array(
        [[[10, 12, 30, 40], [40, 5, 60, 30], [0, 0, 20, 20], [30, 30, 50, 50]]], np.float32
    )
    scores = np.array([[0.0, 0.9, 0.95, 0.99]], np.float32)
    score_mask = np.array([[1 / 255, 0, 0, 0]], np.float32)
    labels = np.array([[0, 0, 1, 0]], np.int64)  # a non-person; the 4th row is past num_dets
    module = _FromPixel(
        (np.array([[3]], np.int64), None), (boxes, None), (scores, score_mask), (labels, None)
    )
    names = ["num_dets", "boxes", "scores", "labels"]
    path = _export(module, tmp_path / "yolox_end2end.onnx", names)
    detector = build_detector("onnx_yolo", weights=path, layout="yolox_nms")
    result = detector.detect(_BGR_128x96, "BGR")
    np.testing.assert_allclose(result.boxes, [[80, 10, 40, 50], [20, 24, 40, 56]], atol=1e-3)
    np.testing.assert_allclose(result.scores, [0.9, 0.8], atol=1e-5)
    with pytest.raises(DetectorError, match="4 outputs"):
        split_nms_outputs([np.zeros((1, 84, 7), np.float32)])


def test_every_yolo_layout_the_node_offers_is_one_the_detector_runs(tmp_path):
    from pose_ros.ros.params import PARAMETERS

    (spec,) = [p for p in PARAMETERS if p.name == "detector.yolo_layout"]
    path = _export(_FromPixel(_yolox_raw_rows()), tmp_path / "m.onnx", ["output"])
    for layout in spec.choices:
        assert OnnxYoloDetector(path, layout=layout).layout == layout
    with pytest.raises(ValueError, match="layout must be one of"):
        OnnxYoloDetector(path, layout="yolov9")


def test_onnx_yolox_decoded_preprocessing(tmp_path):
    # YOLOX feeds BGR values unscaled: the mask divides by 255 so that B=204 scores 0.8.
    const, mask = _yolo_rows(objectness=True, input_score=1.0 / 255.0)
    path = _write_yolo_graph(tmp_path / "yolox.onnx", const, mask)
    image_rgb = np.ascontiguousarray(_IMAGE_RGB[..., ::-1])  # B=204 now
    detector = build_detector("onnx_yolo", weights=path, layout="yolox_decoded")
    result = detector.detect(image_rgb, "RGB")
    expected_boxes, expected_scores = _expected(center=False)  # top-left letterbox
    np.testing.assert_allclose(result.boxes, expected_boxes, atol=1e-4)
    np.testing.assert_allclose(result.scores, expected_scores, atol=1e-6)
    # The YOLOv5 preprocessing (RGB / 255) on the same graph gives 0.8 / 255: dropped.
    as_v5 = build_detector("onnx_yolo", weights=path, layout="yolov5").detect(image_rgb)
    np.testing.assert_allclose(as_v5.scores, [0.9, 0.7], atol=1e-6)


def test_onnx_thresholds_and_input_size(tmp_path):
    const, mask = _yolo_rows(objectness=True, input_score=1.0)
    dynamic = ["batch", 3, "height", "width"]
    path = _write_yolo_graph(tmp_path / "dynamic.onnx", const, mask, input_dims=dynamic)
    assert build_detector("onnx_yolo", weights=path).input_size == (640, 640)
    expected_boxes, _ = _expected(center=True)
    strict = build_detector(
        "onnx_yolo", weights=path, input_size=(64, 64), score_threshold=0.75, num_threads=1
    )
    np.testing.assert_allclose(strict.detect(_IMAGE_RGB).scores, [0.9, 0.8], atol=1e-6)
    capped = build_detector("onnx_yolo", weights=path, input_size=(64, 64), max_persons=1)
    result = capped.detect(_IMAGE_RGB)
    np.testing.assert_allclose(result.scores, [0.9], atol=1e-6)
    np.testing.assert_allclose(result.boxes, expected_boxes[:1], atol=1e-4)


def test_onnx_yolo_bad_files(tmp_path, monkeypatch):
    with pytest.raises(DetectorError, match=r"nothere\.onnx"):
        OnnxYoloDetector(tmp_path / "nothere.onnx")
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is not an ONNX model")
    with pytest.raises(DetectorError, match=r"notes\.onnx"):
        OnnxYoloDetector(not_onnx)
    with pytest.raises(ValueError, match="layout"):
        OnnxYoloDetector(not_onnx, layout="yolov9")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(DetectorError, match="pip install onnxruntime"):
        OnnxYoloDetector(not_onnx)


def test_letterbox_geometry():
    image = np.full((50, 100, 3), 7, np.uint8)
    canvas, scale, pad = letterbox(image, (64, 64))
    assert canvas.shape == (64, 64, 3) and scale == pytest.approx(0.64) and pad == (0, 16)
    assert np.all(canvas[:16] == 114) and np.all(canvas[48:] == 114) and np.all(canvas[16:48] == 7)
    canvas, _, pad = letterbox(image, (64, 64), center=False, pad_value=0)
    assert pad == (0, 0) and np.all(canvas[:32] == 7) and np.all(canvas[32:] == 0)


# --- given boxes and COCO detection results ---------------------------------------------------


def test_given_boxes_are_post_processed():
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[10, 10, 40, 80], [12, 10, 40, 80], [150, 20, 80, 60], [60, 10, 5, 80]])
    scores = np.array([0.9, 0.85, 0.7, 0.95])
    detector = build_detector("given")
    assert len(detector.detect(image)) == 0  # nothing set yet
    detector.set_boxes(boxes, scores)
    result = detector.detect(image)
    # No NMS by default: both overlapping boxes stay; clipped; the 5-px-wide box is dropped.
    np.testing.assert_allclose(
        result.boxes, [[10, 10, 40, 80], [12, 10, 40, 80], [150, 20, 50, 60]]
    )
    np.testing.assert_allclose(result.scores, [0.9, 0.85, 0.7])

    with_nms = build_detector("given", nms=True)
    with_nms.set_boxes(boxes, scores)
    np.testing.assert_allclose(with_nms.detect(image).scores, [0.9, 0.7])

    # Per-call boxes are used once; scores default to 1.
    once = detector.detect(image, boxes=np.array([[0, 0, 20, 20]]))
    np.testing.assert_allclose(once.scores, [1.0])
    np.testing.assert_allclose(detector.detect(image).scores, [0.9, 0.85, 0.7])
    with pytest.raises(ValueError, match="scores"):
        detector.set_boxes(boxes, scores[:2])


@pytest.fixture()
def coco_results(coco_detections: Path) -> list[dict]:
    """The detections file of the shared data; missing data fails (conftest), never skips."""
    return json.loads(coco_detections.read_text())


def test_load_coco_detections_matches_the_file(coco_results, coco_detections):
    per_image = load_coco_detections(coco_detections)
    image_ids = {entry["image_id"] for entry in coco_results if entry["category_id"] == 1}
    assert set(per_image) == image_ids and len(image_ids) == 4
    for image_id, detections in per_image.items():
        entries = [e for e in coco_results if e["image_id"] == image_id and e["category_id"] == 1]
        assert len(detections) == len(entries)
        assert np.all(np.diff(detections.scores) <= 0)
        best = max(entries, key=lambda e: e["score"])
        np.testing.assert_allclose(detections.boxes[0], best["bbox"], rtol=1e-6)


def test_given_detector_with_coco_results_on_a_real_image(
    coco_detections, coco_results, coco_image_bgr
):
    detections = load_coco_detections(coco_detections)[196141]
    detector = build_detector("given", score_threshold=0.3, max_persons=50)
    result = detector.detect(
        coco_image_bgr, "BGR", boxes=detections.boxes, scores=detections.scores
    )
    _assert_well_formed(result, coco_image_bgr.shape, max_persons=50)
    # Expected straight from the file: score >= 0.3 and clipped sides >= 8 px.
    height, width = coco_image_bgr.shape[:2]
    expected = 0
    for entry in coco_results:
        x, y, w, h = entry["bbox"]
        clipped_w = min(x + w, width) - max(x, 0)
        clipped_h = min(y + h, height) - max(y, 0)
        if entry["image_id"] == 196141 and entry["score"] >= 0.3 and min(clipped_w, clipped_h) >= 8:
            expected += 1
    assert len(result) == expected > 0


def test_load_coco_detections_skips_other_categories(tmp_path):
    path = tmp_path / "dets.json"
    entries = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 20], "score": 0.4},
        {"image_id": 1, "category_id": 18, "bbox": [5, 5, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 20], "score": 0.8},
        {"image_id": 2, "category_id": 18, "bbox": [5, 5, 10, 10], "score": 0.9},
    ]
    path.write_text(json.dumps(entries))
    result = load_coco_detections(path)
    assert list(result) == [1]
    np.testing.assert_allclose(result[1].scores, [0.8, 0.4])
    np.testing.assert_allclose(result[1].boxes, [[1, 1, 10, 20], [0, 0, 10, 20]])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read"),
        ('{"image_id": 1}', "JSON list"),
        ('[{"image_id": 1, "category_id": 1, "score": 0.5}]', "lacks bbox"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}]', "4 finite"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 3}]', "score"),
        ('[{"image_id": null, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1}]', "image_id"),
        ('["box"]', "not a JSON object"),
    ],
)
def test_malformed_coco_results_raise(tmp_path, content, message):
    path = tmp_path / "bad_results.json"
    path.write_text(content)
    with pytest.raises(DetectorError, match=message) as error:
        load_coco_detections(path)
    assert "bad_results.json" in str(error.value)


def test_missing_coco_results_file(tmp_path):
    with pytest.raises(DetectorError, match=r"absent\.json"):
        load_coco_detections(tmp_path / "absent.json")


def test_full_image_detector_returns_the_whole_frame() -> None:
    from pose_ros.detection import build_detector

    detector = build_detector("full_image", weights=None, score_threshold=0.9, max_persons=1)
    detections = detector.detect(np.zeros((480, 640, 3), np.uint8), color_order="BGR")
    assert len(detections) == 1
    np.testing.assert_allclose(detections.boxes[0], [0, 0, 639, 479])
    assert detections.scores.tolist() == [1.0]
    with pytest.raises(ValueError, match="full_image detector takes no weights"):
        build_detector("full_image", weights="yolo.onnx")


def test_yolo_layout_reaches_the_detector_through_from_names(tmp_path):
    """The node's `detector.yolo_layout` goes through estimator_from_names: a raw YOLOX export
    read as YOLOX is grid-decoded (same boxes as above); read with the default layout it is not."""
    from pose_ros.factory import estimator_from_names

    path = _export(_FromPixel(_yolox_raw_rows()), tmp_path / "yolox_s.onnx", ["output"])

    def boxes(layout: str) -> np.ndarray:
        estimator = estimator_from_names(
            "random:simplebaseline_res18",
            allow_random_weights=True,
            detector="onnx_yolo",
            detector_weights=str(path),
            device="cpu",
            engine="torch",
            yolo_layout=layout,
        )
        assert estimator.detector.layout == layout
        return estimator.detector.detect(_BGR_128x96, "BGR").boxes

    np.testing.assert_allclose(boxes("yolox"), [[16, 32, 32, 64], [36, 22, 40, 60]], atol=1e-3)
    other = boxes("yolov5")
    assert other.shape != (2, 4) or not np.allclose(other, [[16, 32, 32, 64], [36, 22, 40, 60]])
