"""The inference pipeline on real COCO images with their ground-truth boxes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose_ros import codec, geometry
from pose_ros.factory import estimator_from_names
from pose_ros.models import Preprocessing, build_pose_model
from pose_ros.pipeline import FrameBoxes, PoseEstimator, rescore

INPUT_SIZE = (128, 96)


def _coco(coco_annotations: Path) -> tuple[dict, dict[int, list[dict]]]:
    data = json.loads(coco_annotations.read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    return {img["id"]: img for img in data["images"]}, by_image


class OracleHeatmaps(torch.nn.Module):
    """A stand-in network that returns heatmaps prepared by the test (the Gaussians of the
    annotated keypoints in each crop), so the pipeline's plumbing is checked exactly."""

    def __init__(self, heatmaps: torch.Tensor, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("heatmaps", heatmaps)
        self.num_keypoints = heatmaps.shape[1]
        self.preprocessing = Preprocessing(
            color_order="RGB",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            input_size=input_size,
        )
        self.input_size = input_size
        self.heatmap_size = (input_size[0] // 4, input_size[1] // 4)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        assert x.shape[0] == self.heatmaps.shape[0]
        return self.heatmaps


def test_pipeline_maps_heatmaps_back_to_the_annotated_keypoints(
    coco_dir: Path, coco_annotations: Path
) -> None:
    """Annotations → crop heatmaps → pipeline (decode, uncrop) → the annotations again."""
    images, by_image = _coco(coco_annotations)
    input_size = (256, 192)
    heatmap_size = (64, 48)
    checked = strict = 0
    for image_id, anns in by_image.items():
        anns = [a for a in anns if a["num_keypoints"] > 0]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32)
        gt = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, 17, 3)
        centers, scales = geometry.box_to_center_scale(boxes, input_size[1] / input_size[0])
        crop_coords = geometry.image_to_crop(gt[..., :2], centers, scales, heatmap_size)
        heatmaps = np.stack(
            [
                codec.encode_heatmaps(c, v, heatmap_size)[0]
                for c, v in zip(crop_coords, gt[..., 2], strict=True)
            ]
        )
        oracle = OracleHeatmaps(torch.from_numpy(heatmaps), input_size).eval()
        estimator = PoseEstimator(oracle, device="cpu", decode="dark")
        image = cv2.imread(str(coco_dir / images[image_id]["file_name"]))
        persons = estimator(image, color_order="BGR", boxes=boxes)
        assert oracle.calls == [len(boxes)]  # all persons of the frame in one batch
        by_box = {tuple(np.round(p.box, 2)): p for p in persons}
        for n, box in enumerate(boxes):
            keypoints = by_box[tuple(np.round(box, 2))].keypoints
            labelled = gt[n, :, 2] > 0
            # DARK decodes within 0.1 heatmap px where the heatmap holds the whole Gaussian (its
            # 3-sigma window); near the crop border the Gaussian is cut and within 1 px.
            # One heatmap px is scale / 48 image px.
            inside = np.all(
                (crop_coords[n] >= 6) & (crop_coords[n] <= np.array([47 - 6, 63 - 6])), axis=1
            )
            pixel = scales[n, 0] / heatmap_size[1]
            tolerance = np.where(inside, 0.1, 1.0)[labelled] * pixel + 1e-3
            errors = np.abs(keypoints[labelled, :2] - gt[n, labelled, :2]).max(axis=1)
            assert (errors <= tolerance).all(), (image_id, n, errors, tolerance)
            # Peak of a sub-pixel Gaussian sampled at the nearest pixel: >= exp(-0.5 / 8).
            assert (keypoints[labelled & inside, 2] > 0.93).all()
            strict += int((labelled & inside).sum())
            checked += int(labelled.sum())
    assert checked > 100 and strict > 80


@pytest.fixture(scope="module")
def random_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_pose_model("simplebaseline_res18", input_size=INPUT_SIZE).eval()


def test_pipeline_on_real_images_with_gt_boxes(
    coco_dir: Path, coco_annotations: Path, random_model
) -> None:
    images, by_image = _coco(coco_annotations)
    calls: list[int] = []
    hook = random_model.register_forward_hook(
        lambda _m, inputs, _o: calls.append(inputs[0].shape[0])
    )
    estimator = PoseEstimator(random_model, device="cpu")
    try:
        for image_id, anns in by_image.items():
            image = cv2.cvtColor(
                cv2.imread(str(coco_dir / images[image_id]["file_name"])), cv2.COLOR_BGR2RGB
            )
            height, width = image.shape[:2]
            boxes = np.array([a["bbox"] for a in anns], dtype=np.float32)
            persons = estimator(image, boxes=boxes, box_scores=np.linspace(1.0, 0.5, len(boxes)))
            assert len(persons) == len(boxes)
            assert calls[-1] == len(boxes)
            scores = [p.score for p in persons]
            assert scores == sorted(scores, reverse=True)
            for person in persons:
                assert person.keypoints.shape == (17, 3) and person.keypoints.dtype == np.float32
                assert person.box.shape == (4,)
                xs, ys, ks = person.keypoints.T
                assert (xs >= 0).all() and (xs <= width - 1).all()
                assert (ys >= 0).all() and (ys <= height - 1).all()
                assert ((ks >= 0) & (ks <= 1)).all()
                expected = rescore(np.array([person.box_score]), person.keypoints[None, :, 2])[0]
                assert person.score == pytest.approx(expected)
            t = estimator.last_timings
            assert t.persons == len(boxes) and t.total_ms >= t.network_ms > 0
    finally:
        hook.remove()
    assert len(calls) == len(by_image)


def test_colour_order_is_honoured(coco_dir: Path, random_model) -> None:
    bgr = cv2.imread(str(coco_dir / "000000196141.jpg"))
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    boxes = np.array([[100.0, 50.0, 150.0, 300.0]], dtype=np.float32)
    estimator = PoseEstimator(random_model, device="cpu")
    from_rgb = estimator(rgb, color_order="RGB", boxes=boxes)[0].keypoints
    from_bgr = estimator(bgr, color_order="BGR", boxes=boxes)[0].keypoints
    # Untrained heatmaps are tiny (init std 0.001): compare scores relatively.
    np.testing.assert_allclose(from_rgb, from_bgr, rtol=1e-4, atol=0)
    # Telling the pipeline the wrong order changes what the network sees.
    wrong = estimator(bgr, color_order="RGB", boxes=boxes)[0].keypoints
    assert not np.allclose(wrong[:, 2], from_rgb[:, 2], rtol=1e-3, atol=0)


def test_flip_test_runs_mirrored_crops_in_the_same_batch(coco_dir: Path, random_model) -> None:
    image = cv2.imread(str(coco_dir / "000000040083.jpg"))
    boxes = np.array([[10.0, 10.0, 100.0, 200.0], [200.0, 40.0, 80.0, 160.0]], dtype=np.float32)
    calls: list[int] = []
    hook = random_model.register_forward_hook(
        lambda _m, inputs, _o: calls.append(inputs[0].shape[0])
    )
    try:
        plain = PoseEstimator(random_model, device="cpu")(image, color_order="BGR", boxes=boxes)
        flipped = PoseEstimator(random_model, device="cpu", flip_test=True)(
            image, color_order="BGR", boxes=boxes
        )
    finally:
        hook.remove()
    assert calls == [2, 4]
    assert len(plain) == len(flipped) == 2


def test_bad_calls_give_clear_errors(random_model) -> None:
    estimator = PoseEstimator(random_model, device="cpu")
    image = np.zeros((50, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="no detector"):
        estimator(image)
    with pytest.raises(ValueError, match="color_order"):
        estimator(image, color_order="RGBA", boxes=np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        estimator(np.zeros((50, 40), np.uint8), boxes=np.zeros((0, 4)))
    with pytest.raises(ValueError, match="uint8"):
        estimator(image.astype(np.float32), boxes=np.zeros((0, 4)))
    with pytest.raises(ValueError, match="box scores"):
        estimator(image, boxes=np.ones((2, 4)), box_scores=np.ones(3))
    assert estimator(image, boxes=np.zeros((0, 4))) == []
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        PoseEstimator(random_model, device="cpu", fp16=True)
    with pytest.raises(ValueError, match="decode"):
        PoseEstimator(random_model, device="cpu", decode="argmax")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            PoseEstimator(random_model, device="cuda")


def test_from_names_refuses_random_weights_unless_asked_and_missing_files(tmp_path: Path) -> None:
    from pose_ros.models import CheckpointError

    with pytest.raises(ValueError, match="allow_random_weights"):
        estimator_from_names("random:simplebaseline_res18", detector="given", device="cpu")
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=r"nope\.pth"):
        estimator_from_names(str(missing), detector="given", device="cpu")


def test_device_decode_matches_the_numpy_codec_exactly() -> None:
    """The torch decoding (the GPU path) gives the numpy codec's numbers, ties and borders too."""
    generator = torch.Generator().manual_seed(0)
    heatmaps = torch.rand(6, 17, 64, 48, generator=generator)
    heatmaps[0, 0] = 0.0  # all equal: the first maximum
    heatmaps[0, 1, 5, 7] = heatmaps[0, 1, 9, 3] = 2.0  # a tie: the first one in memory order
    heatmaps[1, :, 0, 0] = 3.0  # peaks in the corners and on the edges
    heatmaps[2, :, 63, 47] = 3.0
    heatmaps[3, :, 1, 20] = 3.0
    heatmaps[4, :, 30, 46] = 3.0
    heatmaps[5] = heatmaps[5].round(decimals=1)  # equal neighbours: no move
    for rule in codec.DECODE_RULES:
        coords, scores = codec.decode_heatmaps(heatmaps, "quarter", rule=rule)
        coords_t, scores_t = codec.decode_heatmaps_torch(heatmaps, rule=rule)
        np.testing.assert_array_equal(coords_t.numpy(), coords)
        np.testing.assert_array_equal(scores_t.numpy(), scores)


def test_device_decode_path_gives_the_same_persons(coco_dir: Path, random_model) -> None:
    image = cv2.imread(str(coco_dir / "000000040083.jpg"))
    boxes = np.array([[10.0, 10.0, 100.0, 200.0], [200.0, 40.0, 80.0, 160.0]], dtype=np.float32)
    host = PoseEstimator(random_model, device="cpu", device_decode=False)
    device = PoseEstimator(random_model, device="cpu", device_decode=True)
    for flip_test in (False, True):
        host.flip_test = device.flip_test = flip_test
        expected = host(image, color_order="BGR", boxes=boxes)
        actual = device(image, color_order="BGR", boxes=boxes)
        for a, e in zip(actual, expected, strict=True):
            np.testing.assert_array_equal(a.keypoints, e.keypoints)
            assert a.score == e.score


def test_estimate_batch_equals_one_call_per_frame(coco_dir: Path, random_model) -> None:
    """Several frames (sizes, colour orders, an empty one) in one batch: the persons of separate
    calls, in one network call."""
    bgr = cv2.imread(str(coco_dir / "000000196141.jpg"))
    other = cv2.imread(str(coco_dir / "000000040083.jpg"))
    frames = [
        FrameBoxes(bgr, np.array([[100.0, 50.0, 150.0, 300.0]], np.float32), None, "BGR"),
        FrameBoxes(np.zeros((40, 30, 3), np.uint8), np.zeros((0, 4), np.float32), None, "RGB"),
        FrameBoxes(
            np.ascontiguousarray(other[..., ::-1]),
            np.array([[10.0, 10.0, 100.0, 200.0], [200.0, 40.0, 80.0, 160.0]], np.float32),
            np.array([0.4, 0.9], np.float32),
            "RGB",
        ),
    ]
    calls: list[int] = []
    hook = random_model.register_forward_hook(
        lambda _m, inputs, _o: calls.append(inputs[0].shape[0])
    )
    estimator = PoseEstimator(random_model, device="cpu")
    try:
        batched = estimator.estimate_batch(frames)
        assert calls == [3]  # the crops of all frames in one network batch
        assert estimator.last_timings.persons == 3
        single = [
            estimator(f.image, color_order=f.color_order, boxes=f.boxes, box_scores=f.box_scores)
            for f in frames
        ]
    finally:
        hook.remove()
    assert [len(persons) for persons in batched] == [1, 0, 2]
    for got, want in zip(batched, single, strict=True):
        assert len(got) == len(want)
        for a, e in zip(got, want, strict=True):
            np.testing.assert_array_equal(a.box, e.box)
            assert a.box_score == e.box_score
            np.testing.assert_allclose(a.keypoints, e.keypoints, rtol=1e-5, atol=1e-4)
            assert a.score == pytest.approx(e.score, rel=1e-5)


def test_the_callers_model_is_not_changed(random_model) -> None:
    """A model in training mode (as training evaluates it) stays as it was; the estimator works
    on its own copy. A model already as the estimator needs it is used as it is."""
    model = build_pose_model("simplebaseline_res18", input_size=INPUT_SIZE).train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    estimator = PoseEstimator(model, device="cpu")
    image = np.full((200, 150, 3), 128, np.uint8)
    estimator(image, boxes=np.array([[10.0, 10.0, 100.0, 150.0]], np.float32))
    assert model.training and estimator.model is not model and not estimator.model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # BatchNorm statistics untouched
    assert PoseEstimator(random_model, device="cpu").model is random_model
    owned = build_pose_model("simplebaseline_res18", input_size=INPUT_SIZE).train()
    assert PoseEstimator(owned, device="cpu", copy_model=False).model is owned
    assert not owned.training
