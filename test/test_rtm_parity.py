"""RTMPose and RTMDet against their authors' code: the same weights give the same outputs.

test/fixtures/rtm_parity.npz was written by scripts/make_rtm_reference.py with mmpose 1.3.2 and
mmdet 3.3.0 (their own modules, data pipelines and decoders, reduced widths, fixed random
weights in the authors' key names; see that script for how to rerun it). Here the weights load
into pose_ros' modules through the published-file path, and what pose_ros computes from the same
images is compared with what mmpose and mmdet computed: network outputs to 1e-4, keypoints to
1e-3 px, boxes to 1e-4 px. The input conventions are part of the comparison: mmpose's crops are
fed in OpenCV's BGR order and pose_ros must turn them into the RGB its weights expect; RTMDet
reads BGR as it is. With the colour order swapped, each comparison fails by a wide margin.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose_ros import geometry
from pose_ros.detection import DetectionFilter, RTMDetDetector
from pose_ros.detection.rtmdet_backend import resize_pad
from pose_ros.models import load_pose_model
from pose_ros.models.rtmdet import RTMDET_VARIANTS, RTMDet, decode_rtmdet
from pose_ros.pipeline import PoseEstimator
from pose_ros.simcc import decode_simcc, decode_simcc_torch

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "rtm_parity.npz"
NETWORK_TOLERANCE = 1e-4
KEYPOINT_TOLERANCE_PX = 1e-3
BOX_TOLERANCE_PX = 1e-4


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _weights(reference: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    """The fixture's state dict (authors' key names), float32 as the authors' modules ran."""
    state = {}
    for key, value in reference.items():
        if key.startswith(prefix + "/"):
            tensor = torch.from_numpy(np.array(value))
            state[key[len(prefix) + 1 :]] = tensor.float() if tensor.is_floating_point() else tensor
    return state


@pytest.fixture(scope="module")
def pose_model(reference, tmp_path_factory):
    """The reference weights written as mmpose publishes them ({"meta", "state_dict"}) and
    loaded by path: the sizes come from the tensor shapes."""
    path = tmp_path_factory.mktemp("rtm") / "rtmpose-reduced_simcc-coco-128x96.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": _weights(reference, "pose_weight")}, path)
    return load_pose_model(path).eval()


@pytest.fixture(scope="module")
def detector_model(reference) -> RTMDet:
    config = json.loads(str(reference["det_config"]))
    # RTMDet-nano with the reduced widths and the thresholds the reference was made with.
    overrides = (
        "deepen_factor", "widen_factor", "neck_channels", "input_size",
        "score_threshold", "nms_pre", "nms_iou", "max_detections",
    )  # fmt: skip
    variant = dataclasses.replace(
        RTMDET_VARIANTS["rtmdet_nano"], **{key: config[key] for key in overrides}
    )
    model = RTMDet("rtmdet_reduced", variant)
    model.load_state_dict(_weights(reference, "det_weight"))
    return model.eval()


def _pose_batch(model, crops_bgr: np.ndarray, color_order: str = "BGR") -> torch.Tensor:
    pixels = torch.from_numpy(crops_bgr).permute(0, 3, 1, 2).float()
    return model.preprocessing.normalize(pixels, input_color_order=color_order)


def _max_difference(ours, theirs) -> float:
    return max(
        float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
        for a, b in zip(ours, theirs, strict=True)
    )


# --- RTMPose ------------------------------------------------------------------------------------


def test_reference_weights_load_key_for_key_into_rtmpose(reference, pose_model) -> None:
    config = json.loads(str(reference["pose_config"]))
    assert pose_model.arch["name"] == "rtmpose_t"
    assert pose_model.input_size == tuple(config["input_size"])
    assert pose_model.arch["widen_factor"] == config["widen_factor"]
    assert pose_model.arch["hidden_dims"] == config["hidden_dims"]
    assert set(pose_model.state_dict()) == set(_weights(reference, "pose_weight"))
    assert pose_model.preprocessing.color_order == "RGB"


def test_rtmpose_simcc_outputs_equal_mmpose(reference, pose_model) -> None:
    batch = _pose_batch(pose_model, reference["pose_crops_bgr"])
    with torch.inference_mode():
        simcc_x, simcc_y = pose_model(batch)
    theirs = (reference["pose_simcc_x"], reference["pose_simcc_y"])
    assert _max_difference((simcc_x, simcc_y), theirs) <= NETWORK_TOLERANCE
    # The same crops taken as RGB (no channel swap): far outside the tolerance.
    swapped = _pose_batch(pose_model, reference["pose_crops_bgr"], color_order="RGB")
    with torch.inference_mode():
        wrong = pose_model(swapped)
    assert _max_difference(wrong, theirs) > 100 * NETWORK_TOLERANCE


def test_simcc_decoding_equals_mmpose(reference) -> None:
    simcc_x, simcc_y = reference["pose_simcc_x"], reference["pose_simcc_y"]
    coords, scores = decode_simcc(simcc_x, simcc_y, 2.0)
    assert np.abs(coords - reference["pose_keypoints_input"]).max() <= KEYPOINT_TOLERANCE_PX
    assert np.abs(scores - reference["pose_scores_input"]).max() <= NETWORK_TOLERANCE
    coords_t, scores_t = decode_simcc_torch(torch.from_numpy(simcc_x), torch.from_numpy(simcc_y))
    np.testing.assert_array_equal(coords_t.numpy(), coords)
    np.testing.assert_array_equal(scores_t.numpy(), scores)


def test_flip_test_and_image_mapping_equal_mmpose(reference, pose_model) -> None:
    """mmpose's crops through the pipeline's SimCC path (flip test in the batch, mapped back,
    averaged, decoded) and back to image pixels with the crops' centres and scales: mmpose's
    final keypoints."""
    estimator = PoseEstimator(pose_model, device="cpu", flip_test=True)
    batch = _pose_batch(pose_model, reference["pose_crops_bgr"])
    with torch.inference_mode():
        coords, scores, size, _ = estimator._run_simcc_network(batch)
    aspect = size[1] / size[0]
    centers, scales = geometry.box_to_center_scale(reference["pose_boxes"], aspect)
    image = geometry.crop_to_image(coords, centers, scales, size)
    assert np.abs(image - reference["pose_keypoints_image_flip"]).max() <= KEYPOINT_TOLERANCE_PX
    assert np.abs(scores - reference["pose_scores_image_flip"]).max() <= NETWORK_TOLERANCE


def test_pipeline_crops_are_mmpose_crops(reference, pose_model, coco_dir: Path) -> None:
    """The pipeline's crop of each box (bilinear on the device) against mmpose's TopdownAffine
    (cv2.warpAffine, whose 8-bit output rounds) of the same box: the same region, pixel values
    within that rounding. (Keypoints of the random reference weights are not compared through
    this path: at random weights a change of one grey level can move an argmax anywhere.)"""
    (name,) = set(reference["pose_files"].tolist())
    image_bgr = cv2.imread(str(coco_dir / name))
    boxes = reference["pose_boxes"]
    aspect = pose_model.input_size[1] / pose_model.input_size[0]
    centers, scales = geometry.box_to_center_scale(boxes, aspect)
    pixels = torch.from_numpy(image_bgr).permute(2, 0, 1).float()
    crops = geometry.crop_batch(pixels, centers, scales, pose_model.input_size)
    theirs = torch.from_numpy(reference["pose_crops_bgr"]).permute(0, 3, 1, 2).float()
    difference = (crops - theirs).abs()
    assert float(difference.mean()) < 0.5 and float(difference.max()) <= 2.0


# --- RTMDet -------------------------------------------------------------------------------------


def _detector_images(reference, coco_dir: Path) -> list[tuple[int, np.ndarray]]:
    indices = sorted({int(k[3]) for k in reference if k.startswith("det") and k[3].isdigit()})
    return [(i, cv2.imread(str(coco_dir / str(reference[f"det{i}_file"])))) for i in indices]


def _match(ours_boxes, ours_scores, their_boxes, their_scores) -> float:
    """Largest difference of matched boxes (one to one, by position and score); NMS output
    order may differ between equal-scored boxes, the set may not."""
    assert len(ours_boxes) == len(their_boxes)
    used: set[int] = set()
    worst = 0.0
    for box, score in zip(their_boxes, their_scores, strict=True):
        distance = np.abs(ours_boxes - box).max(axis=1) + np.abs(ours_scores - score)
        distance[list(used)] = np.inf
        best = int(distance.argmin())
        used.add(best)
        worst = max(worst, float(distance[best]))
    return worst


def test_rtmdet_input_and_raw_outputs_equal_mmdet(reference, detector_model, coco_dir) -> None:
    detector = RTMDetDetector(weights=detector_model)
    for index, image in _detector_images(reference, coco_dir):
        canvas, _ = resize_pad(image, detector.input_size)
        np.testing.assert_array_equal(canvas, reference[f"det{index}_canvas_bgr"])
        tensor, _ = detector.preprocess(image, color_order="BGR")
        with torch.inference_mode():
            class_logits, distances = detector_model(tensor)
        for level in range(3):
            for ours, key in ((class_logits, "class_logits"), (distances, "distances")):
                theirs = reference[f"det{index}_{key}{level}"]
                assert np.abs(ours[level].numpy() - theirs).max() <= NETWORK_TOLERANCE, key
        # The image handed over as RGB while it is BGR: the network sees swapped channels.
        wrong, _ = detector.preprocess(image, color_order="RGB")
        with torch.inference_mode():
            wrong_logits, _ = detector_model(wrong)
        theirs = [reference[f"det{index}_class_logits{level}"] for level in range(3)]
        assert _max_difference(wrong_logits, theirs) > 100 * NETWORK_TOLERANCE


def test_rtmdet_decoding_and_boxes_equal_mmdet(reference, detector_model, coco_dir) -> None:
    config = json.loads(str(reference["det_config"]))
    detector = RTMDetDetector(
        weights=detector_model,
        detection_filter=DetectionFilter(
            score_threshold=config["score_threshold"],
            nms_threshold=config["nms_iou"],
            max_persons=config["max_detections"],
            min_box_size=0.0,
        ),
    )
    for index, image in _detector_images(reference, coco_dir):
        class_logits = [
            torch.from_numpy(reference[f"det{index}_class_logits{i}"]) for i in range(3)
        ]
        distances = [torch.from_numpy(reference[f"det{index}_distances{i}"]) for i in range(3)]
        boxes, scores, _ = decode_rtmdet(
            class_logits,
            distances,
            (8, 16, 32),
            max_shape=(config["input_size"],) * 2,
            score_threshold=config["score_threshold"],
            nms_pre=config["nms_pre"],
            nms_iou=config["nms_iou"],
            max_detections=config["max_detections"],
        )
        their_boxes = reference[f"det{index}_boxes_input"]
        their_scores = reference[f"det{index}_scores_input"]
        assert _match(boxes.numpy(), scores.numpy(), their_boxes, their_scores) <= BOX_TOLERANCE_PX
        detections = detector.detect(image, color_order="BGR")
        xyxy = detections.boxes.copy()
        xyxy[:, 2:] += xyxy[:, :2]
        assert len(detections) > 5
        # mmdet's boxes in image pixels, clipped to the image by the shared post-processing,
        # which drops those left without area (boxes entirely in the padding).
        height, width = image.shape[:2]
        their_boxes = reference[f"det{index}_boxes_image"].copy()
        their_boxes[:, 0::2] = their_boxes[:, 0::2].clip(0, width)
        their_boxes[:, 1::2] = their_boxes[:, 1::2].clip(0, height)
        inside = (their_boxes[:, 2] > their_boxes[:, 0]) & (their_boxes[:, 3] > their_boxes[:, 1])
        their_boxes = their_boxes[inside]
        their_scores = reference[f"det{index}_scores_image"][inside]
        assert _match(xyxy, detections.scores, their_boxes, their_scores) <= BOX_TOLERANCE_PX
