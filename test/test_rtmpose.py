"""RTMPose and RTMDet in pose_ros: the networks' shapes, the SimCC codec (numpy and torch), the
pipeline's SimCC path (flip test, device decoding), ONNX exports (ours and mmpose's end2end.onnx
form), and published files in the authors' key layouts loading by path and by registry name.

Published files are built here the way mmpose and mmdet write them, their keys and shapes
written out from the published architectures (CSPNeXt, RTMCCHead, CSPNeXtPAFPN,
RTMDetSepBNHead), not from pose_ros' modules; registry files go into a cache folder with their
hash computed here and patched into the entry. Nothing reaches the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose_ros import engines
from pose_ros.detection import DetectorError, build_detector
from pose_ros.factory import estimator_from_names
from pose_ros.keypoints import flip_permutation
from pose_ros.models import (
    PUBLISHED_CHECKPOINTS,
    CheckpointError,
    build_pose_model,
    load_pose_model,
    registry,
    save_checkpoint,
)
from pose_ros.models.rtmdet import build_rtmdet, decode_rtmdet, rtmdet_priors
from pose_ros.models.rtmpose import RTMPose
from pose_ros.pipeline import PoseEstimator
from pose_ros.runtime import OnnxPoseRunner, RuntimeBackendError, export_onnx
from pose_ros.simcc import (
    decode_simcc,
    decode_simcc_torch,
    encode_simcc,
    flip_simcc_back,
    simcc_lengths,
)
from pose_ros.types import OUTPUT_SIMCC

P5 = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False))
P5 = (*P5, (512, 1024, 3, False, True))


@pytest.fixture(scope="module")
def rtmpose_t() -> RTMPose:
    torch.manual_seed(0)
    return build_pose_model("rtmpose_t").eval()


# --- the networks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "channels", "parameters_m"),
    [("rtmpose_t", 384, 3.34), ("rtmpose_s", 512, 5.47)],
)
def test_rtmpose_shapes_and_size_are_the_published_ones(
    name: str, channels: int, parameters_m: float
) -> None:
    model = build_pose_model(name).eval()
    x = torch.zeros(2, 3, 256, 192)
    with torch.inference_mode():
        features = model.backbone(x)[-1]
        simcc_x, simcc_y = model(x)
    assert features.shape == (2, channels, 8, 6)
    assert simcc_x.shape == (2, 17, 384) and simcc_y.shape == (2, 17, 512)
    assert model.output_kind == OUTPUT_SIMCC and model.heatmap_size == (512, 384)
    # The parameter counts of mmpose's RTMPose table (M).
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(parameters_m, abs=0.01)


def test_rtmdet_nano_shapes_and_size() -> None:
    model = build_rtmdet("rtmdet_nano").eval()
    with torch.inference_mode():
        class_logits, distances = model(torch.zeros(1, 3, 320, 320))
    assert [tuple(t.shape) for t in class_logits] == [
        (1, 1, 40, 40),
        (1, 1, 20, 20),
        (1, 1, 10, 10),
    ]
    assert [tuple(t.shape) for t in distances] == [(1, 4, 40, 40), (1, 4, 20, 20), (1, 4, 10, 10)]
    # mmpose's RTMPose table: RTMDet-nano 0.99 M parameters.
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(0.99, abs=0.01)


def test_bad_model_options_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="num_deconv_filters"):
        build_pose_model("rtmpose_s", num_deconv_filters=128)
    with pytest.raises(ValueError, match="multiples of 32"):
        build_pose_model("rtmpose_s", input_size=(250, 192))
    with pytest.raises(ValueError, match="widen_factor"):
        build_pose_model("simplebaseline_res18", widen_factor=0.5)
    with pytest.raises(ValueError, match="rtmpose_t"):
        build_pose_model("rtmpose_x")


# --- SimCC codec --------------------------------------------------------------------------------


def test_simcc_targets_are_gaussians_on_the_rounded_bin() -> None:
    keypoints = np.array([[10.3, 20.0], [95.0, 127.6], [5.0, 5.0], [-20.0, 50.0]])
    visible = np.array([2, 1, 0, 1])
    x, y, weights = encode_simcc(keypoints, visible, (256, 192), sigma=(4.9, 5.66))
    assert x.shape == (4, 384) and y.shape == (4, 512) and x.dtype == np.float32
    assert weights.tolist() == [1.0, 1.0, 0.0, 0.0]  # unlabelled; 3-sigma window outside
    assert x[0].argmax() == 21 and y[0].argmax() == 40 and x[0].max() == pytest.approx(1.0)
    assert y[1].argmax() == 255  # round(127.6 * 2)
    assert x[0][26] == pytest.approx(np.exp(-25 / (2 * 4.9**2)), rel=1e-6)
    assert x[2].max() == 0 and x[3].max() == 0


def test_decode_inverts_encode_to_half_a_bin() -> None:
    rng = np.random.default_rng(0)
    keypoints = np.stack([rng.uniform(0, 191, 17), rng.uniform(0, 255, 17)], axis=1)
    x, y, _ = encode_simcc(keypoints, np.ones(17), (256, 192))
    coords, scores = decode_simcc(x[None], y[None])
    assert np.abs(coords[0] - keypoints).max() <= 0.25 + 1e-6
    np.testing.assert_allclose(scores, 1.0)


def test_numpy_and_torch_decoding_are_identical() -> None:
    rng = np.random.default_rng(1)
    simcc_x = rng.normal(size=(6, 17, 384)).astype(np.float32)
    simcc_y = rng.normal(size=(6, 17, 512)).astype(np.float32)
    simcc_x[0, 0] = -1.0  # no positive value: invalid
    simcc_x[0, 1, [10, 200]] = 50.0  # a tie: the first maximum
    simcc_y[0, 2] = -0.5
    simcc_y[0, 2, 7] = 0.0  # a zero maximum: invalid too
    coords, scores = decode_simcc(simcc_x, simcc_y)
    coords_t, scores_t = decode_simcc_torch(torch.from_numpy(simcc_x), torch.from_numpy(simcc_y))
    np.testing.assert_array_equal(coords_t.numpy(), coords)
    np.testing.assert_array_equal(scores_t.numpy(), scores)
    assert coords[0, 0].tolist() == [-0.5, -0.5] and scores[0, 0] <= 0
    assert coords[0, 1, 0] == 5.0 and coords[0, 2].tolist() == [-0.5, -0.5]
    assert scores[1, 3] == min(simcc_x[1, 3].max(), simcc_y[1, 3].max())


def test_flip_back_mirrors_x_and_swaps_sides() -> None:
    x = torch.zeros(1, 17, 384)
    y = torch.zeros(1, 17, 512)
    x[0, 5, 100] = 1.0  # left shoulder at bin 100 of the mirrored crop
    y[0, 5, 40] = 1.0
    back_x, back_y = flip_simcc_back(x, y)
    right = flip_permutation()[5]
    assert right == 6 and back_x[0, right].argmax() == 383 - 100 and back_y[0, right].argmax() == 40
    with pytest.raises(ValueError, match="17 COCO keypoints"):
        flip_simcc_back(x[:, :5], y[:, :5])


# --- the pipeline -------------------------------------------------------------------------------


def test_pipeline_decodes_simcc_with_the_flip_test_in_one_batch(
    rtmpose_t: RTMPose, coco_dir: Path
) -> None:
    image = cv2.imread(str(coco_dir / "000000196141.jpg"))
    boxes = np.array([[248.0, 74.0, 170.0, 301.0], [454.0, 207.0, 177.0, 211.0]], np.float32)
    calls: list[int] = []
    hook = rtmpose_t.register_forward_hook(lambda _m, i, _o: calls.append(i[0].shape[0]))
    try:
        estimator = PoseEstimator(rtmpose_t, device="cpu", flip_test=True)
        persons = estimator(image, color_order="BGR", boxes=boxes)
    finally:
        hook.remove()
    assert calls == [4]
    # The same by hand: network on the crops and on their mirror images, averaged, decoded.
    from pose_ros import geometry

    centers, scales = geometry.box_to_center_scale(boxes, 192 / 256)
    pixels = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1).float()
    crops = rtmpose_t.preprocessing.normalize(
        geometry.crop_batch(pixels, centers, scales, (256, 192))
    )
    with torch.inference_mode():
        x, y = rtmpose_t(crops)
        fx, fy = flip_simcc_back(*rtmpose_t(crops.flip(-1)))
    coords, scores = decode_simcc((x + fx) / 2, (y + fy) / 2)
    expected = geometry.crop_to_image(coords, centers, scales, (256, 192))
    by_box = {tuple(p.box.tolist()): p for p in persons}
    for i, box in enumerate(boxes):
        person = by_box[tuple(box.tolist())]
        height, width = image.shape[:2]
        want = np.clip(expected[i], 0, [width - 1, height - 1])
        np.testing.assert_allclose(person.keypoints[:, :2], want, atol=1e-3)
        np.testing.assert_allclose(person.keypoints[:, 2], np.clip(scores[i], 0, 1), atol=1e-6)
    device_decoded = PoseEstimator(rtmpose_t, device="cpu", flip_test=True, device_decode=True)
    again = device_decoded(image, color_order="BGR", boxes=boxes)
    for a, b in zip(persons, again, strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_own_checkpoint_round_trip_and_onnx_export(rtmpose_t: RTMPose, tmp_path: Path) -> None:
    path = save_checkpoint(rtmpose_t, tmp_path / "rtmpose_t.pt")
    loaded = load_pose_model(path).eval()
    assert isinstance(loaded, RTMPose) and loaded.arch == rtmpose_t.arch
    for key, value in rtmpose_t.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    onnx_path = export_onnx(loaded, tmp_path / "rtmpose_t.onnx")
    runner = OnnxPoseRunner(onnx_path, device="cpu")
    assert runner.output_kind == OUTPUT_SIMCC and runner.simcc_split_ratio == 2.0
    assert runner.heatmap_size == (512, 384) and runner.input_size == (256, 192)
    x = torch.randn(3, 3, 256, 192, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want = loaded(x)
    got = runner(x)
    for a, b in zip(got, want, strict=True):
        assert float((a - b).abs().max()) < 1e-4


def _export_like_mmdeploy(model: RTMPose, path: Path, *, output_names=("simcc_x", "simcc_y")):
    """The graph mmdeploy writes as end2end.onnx: input ``input`` (static 1x3xHxW), outputs
    ``simcc_x`` and ``simcc_y``, no normalisation inside and no pose_ros metadata."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, *model.input_size),),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=list(output_names),
        )
    path.write_bytes(buffer.getvalue())
    return path


def test_mmpose_end2end_onnx_loads_with_mmposes_input_convention(
    rtmpose_t: RTMPose, tmp_path: Path, coco_dir: Path
) -> None:
    path = _export_like_mmdeploy(rtmpose_t, tmp_path / "end2end.onnx")
    estimator = estimator_from_names(str(path), detector="full_image", cpu_threads=1)
    runner = estimator.model
    assert runner.output_kind == OUTPUT_SIMCC and runner.input_size == (256, 192)
    assert runner.preprocessing.color_order == "RGB"
    np.testing.assert_allclose(runner.preprocessing.mean, (0.485, 0.456, 0.406))
    np.testing.assert_allclose(
        np.array(runner.preprocessing.std) * 255, (58.395, 57.12, 57.375), rtol=1e-6
    )
    image = cv2.imread(str(coco_dir / "000000197388.jpg"))
    box = np.array([[139.0, 102.0, 222.0, 242.0]], np.float32)
    ours = estimator(image, color_order="BGR", boxes=box)[0].keypoints
    torch_estimator = PoseEstimator(rtmpose_t, device="cpu")
    want = torch_estimator(image, color_order="BGR", boxes=box)[0].keypoints
    np.testing.assert_allclose(ours, want, atol=1e-3)


def test_an_onnx_file_of_another_layout_is_a_clear_error(rtmpose_t, tmp_path: Path) -> None:
    path = _export_like_mmdeploy(rtmpose_t, tmp_path / "other.onnx", output_names=("a", "b"))
    with pytest.raises(RuntimeBackendError, match="lacks the pose_ros metadata"):
        OnnxPoseRunner(path, device="cpu")


# --- published files in the authors' layouts ---------------------------------------------------


class _Shapes(dict):
    """Key -> shape of a published state dict, written out from the published modules."""

    def conv_module(self, name: str, c_in: int, c_out: int, k: int, groups: int = 1) -> None:
        self[f"{name}.conv.weight"] = (c_out, c_in // groups, k, k)
        for part in ("weight", "bias", "running_mean", "running_var"):
            self[f"{name}.bn.{part}"] = (c_out,)
        self[f"{name}.bn.num_batches_tracked"] = ()

    def separable(self, name: str, c_in: int, c_out: int, k: int) -> None:
        self.conv_module(f"{name}.depthwise_conv", c_in, c_in, k, groups=c_in)
        self.conv_module(f"{name}.pointwise_conv", c_in, c_out, 1)

    def conv3x3(self, name: str, c_in: int, c_out: int, depthwise: bool) -> None:
        (self.separable if depthwise else self.conv_module)(name, c_in, c_out, 3)

    def csp_layer(self, name, c_in, c_out, blocks, depthwise, attention) -> None:
        mid = int(c_out * 0.5)
        self.conv_module(f"{name}.main_conv", c_in, mid, 1)
        self.conv_module(f"{name}.short_conv", c_in, mid, 1)
        self.conv_module(f"{name}.final_conv", 2 * mid, c_out, 1)
        for b in range(blocks):
            self.conv3x3(f"{name}.blocks.{b}.conv1", mid, mid, depthwise)
            self.separable(f"{name}.blocks.{b}.conv2", mid, mid, 5)
        if attention:
            self[f"{name}.attention.fc.weight"] = (2 * mid, 2 * mid, 1, 1)
            self[f"{name}.attention.fc.bias"] = (2 * mid,)

    def cspnext(self, widen: float, deepen: float, depthwise: bool) -> None:
        half, stem = int(64 * widen // 2), int(64 * widen)
        self.conv_module("backbone.stem.0", 3, half, 3)
        self.conv_module("backbone.stem.1", half, half, 3)
        self.conv_module("backbone.stem.2", half, stem, 3)
        for i, (c_in, c_out, blocks, _, spp) in enumerate(P5, start=1):
            c_in, c_out = int(c_in * widen), int(c_out * widen)
            self.conv3x3(f"backbone.stage{i}.0", c_in, c_out, depthwise)
            if spp:
                self.conv_module(f"backbone.stage{i}.1.conv1", c_out, c_out // 2, 1)
                self.conv_module(f"backbone.stage{i}.1.conv2", c_out // 2 * 4, c_out, 1)
            n = max(round(blocks * deepen), 1)
            self.csp_layer(f"backbone.stage{i}.{1 + spp}", c_out, c_out, n, depthwise, True)


def rtmpose_published_shapes(widen: float, deepen: float) -> dict[str, tuple[int, ...]]:
    """mmpose's RTMPose at 256x192 (CSPNeXt + RTMCCHead, hidden 256, s 128)."""
    shapes = _Shapes()
    shapes.cspnext(widen, deepen, depthwise=False)
    channels = int(1024 * widen)
    shapes["head.final_layer.weight"] = (17, channels, 7, 7)
    shapes["head.final_layer.bias"] = (17,)
    shapes["head.mlp.0.g"] = (1,)
    shapes["head.mlp.1.weight"] = (256, 48)
    shapes["head.gau.uv.weight"] = (2 * 512 + 128, 256)
    shapes["head.gau.gamma"] = shapes["head.gau.beta"] = (2, 128)
    shapes["head.gau.o.weight"] = (256, 512)
    shapes["head.gau.ln.g"] = (1,)
    shapes["head.gau.res_scale.scale"] = (256,)
    shapes["head.cls_x.weight"] = (384, 256)
    shapes["head.cls_y.weight"] = (512, 256)
    return shapes


def rtmdet_nano_published_shapes() -> dict[str, tuple[int, ...]]:
    """mmdet's RTMDet-nano person detector (depthwise CSPNeXt, PAFPN, separate-BN head)."""
    shapes = _Shapes()
    shapes.cspnext(0.25, 0.33, depthwise=True)
    levels = (64, 128, 256)
    for step, index in enumerate((2, 1)):
        shapes.conv_module(f"neck.reduce_layers.{step}", levels[index], levels[index - 1], 1)
        shapes.csp_layer(
            f"neck.top_down_blocks.{step}", levels[index - 1] * 2, levels[index - 1], 1, True, False
        )
    for index in range(2):
        shapes.separable(f"neck.downsamples.{index}", levels[index], levels[index], 3)
        shapes.csp_layer(
            f"neck.bottom_up_blocks.{index}", levels[index] * 2, levels[index + 1], 1, True, False
        )
    for index, channels in enumerate(levels):
        shapes.separable(f"neck.out_convs.{index}", channels, 64, 3)
    for level in range(3):
        for i in range(2):
            shapes.separable(f"bbox_head.cls_convs.{level}.{i}", 64, 64, 3)
            shapes.separable(f"bbox_head.reg_convs.{level}.{i}", 64, 64, 3)
        shapes[f"bbox_head.rtm_cls.{level}.weight"] = (1, 64, 1, 1)
        shapes[f"bbox_head.rtm_cls.{level}.bias"] = (1,)
        shapes[f"bbox_head.rtm_reg.{level}.weight"] = (4, 64, 1, 1)
        shapes[f"bbox_head.rtm_reg.{level}.bias"] = (4,)
    return shapes


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(42, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.05
    return state


def _publish(state: dict[str, torch.Tensor], folder: Path, stem: str) -> Path:
    """mmpose / mmdet's publish step: {"meta", "state_dict"} in the legacy format, named by
    the file's sha256 (meta with numpy values and the data preprocessor's buffers kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"epoch": 420, "seed": np.int64(21), "dataset_meta": {"sigmas": np.ones(17, np.float32)}}
    full = {**state, "data_preprocessor.mean": torch.zeros(3, 1, 1)}
    draft = folder / f"{stem}.pth"
    torch.save({"meta": meta, "state_dict": full}, draft, _use_new_zipfile_serialization=False)
    sha = hashlib.sha256(draft.read_bytes()).hexdigest()
    final = draft.with_name(f"{stem}-{sha[:8]}.pth")
    draft.rename(final)
    return final


def _register(monkeypatch, name: str, file: Path) -> None:
    entry = dataclasses.replace(
        PUBLISHED_CHECKPOINTS[name],
        filename=file.name,
        sha256_prefix=hashlib.sha256(file.read_bytes()).hexdigest()[:8],
        url="http://127.0.0.1:9/never-used.pth",
    )
    monkeypatch.setitem(registry._REGISTRY, name, entry)


def test_published_rtmpose_s_loads_by_registry_name_and_by_path(
    monkeypatch, tmp_path: Path
) -> None:
    state = _random_state(rtmpose_published_shapes(widen=0.5, deepen=0.33))
    cache = tmp_path / "cache"
    file = _publish(state, cache, "rtmpose-s_simcc-coco_pt-aic-coco_420e-256x192")
    _register(monkeypatch, "rtmpose_s_coco_256x192", file)
    by_name = load_pose_model("rtmpose_s_coco_256x192", cache_dir=cache)
    by_path = load_pose_model(file)
    for model in (by_name, by_path):
        assert isinstance(model, RTMPose) and model.arch["name"] == "rtmpose_s"
        assert model.input_size == (256, 192) and model.preprocessing.color_order == "RGB"
        ours = model.state_dict()
        assert set(ours) == set(state)
        for key, value in state.items():
            assert torch.equal(ours[key], value), key
    # A changed byte no longer matches the registry's hash: refused, nothing loaded.
    data = bytearray(file.read_bytes())
    data[-100] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_pose_model("rtmpose_s_coco_256x192", cache_dir=cache)


def test_rtmpose_file_of_the_wrong_size_or_kind_is_a_clear_error(tmp_path: Path) -> None:
    state = _random_state(rtmpose_published_shapes(widen=0.5, deepen=0.33))
    del state["head.gau.o.weight"]
    file = _publish(state, tmp_path, "rtmpose-broken")
    with pytest.raises(CheckpointError, match=r"does not fit rtmpose_s.*head\.gau\.o\.weight"):
        load_pose_model(file)
    with pytest.raises(CheckpointError, match="person detector"):
        load_pose_model("rtmdet_nano_person", cache_dir=tmp_path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(file.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"truncated\.pth"):
        load_pose_model(truncated)


def test_published_rtmdet_nano_loads_as_the_detectors_default_weights(
    monkeypatch, tmp_path: Path
) -> None:
    state = _random_state(rtmdet_nano_published_shapes(), seed=3)
    cache = tmp_path / "cache"
    file = _publish(state, cache, "rtmdet_nano_8xb32-100e_coco-obj365-person")
    _register(monkeypatch, "rtmdet_nano_person", file)
    monkeypatch.setenv("POSE_ROS_CACHE", str(tmp_path))
    (tmp_path / "checkpoints").symlink_to(cache)
    detector = build_detector("rtmdet_nano", weights="DEFAULT")
    ours = detector.model.state_dict()
    assert set(ours) == set(state)
    assert all(torch.equal(ours[k], v) for k, v in state.items())
    by_path = build_detector("rtmdet_nano", weights=str(file))
    assert all(torch.equal(by_path.model.state_dict()[k], v) for k, v in state.items())
    # Both by name through the factory (what the node's detector.backend and the CLI use).
    pose_file = _publish(_random_state(rtmpose_published_shapes(0.375, 0.167)), cache, "rtmpose-t")
    _register(monkeypatch, "rtmpose_t_coco_256x192", pose_file)
    estimator = estimator_from_names(
        "rtmpose_t_coco_256x192", detector="rtmdet_nano", cpu_threads=1, cache_dir=str(tmp_path)
    )
    assert estimator.detector.engine == "onnxruntime" and estimator.engine == "onnxruntime"
    image = np.full((240, 320, 3), 90, np.uint8)
    estimator(image)  # runs end to end (random weights: no claim on what it finds)
    with pytest.raises(DetectorError, match="do not fit rtmdet_nano"):
        build_detector("rtmdet_nano", weights=str(pose_file))
    with pytest.raises(DetectorError, match="not found"):
        build_detector("rtmdet_nano", weights=str(tmp_path / "missing.pth"))


def test_rtmdet_decoding_by_hand() -> None:
    """One confident cell per level: its box is the cell's point minus/plus the distances."""
    class_logits = [torch.full((1, 1, s, s), -10.0) for s in (40, 20, 10)]
    distances = [torch.zeros(1, 4, s, s) for s in (40, 20, 10)]
    class_logits[1][0, 0, 3, 5] = 4.0  # stride 16: point (80, 48)
    distances[1][0, :, 3, 5] = torch.tensor([10.0, 20.0, 30.0, 40.0])
    class_logits[2][0, 0, 9, 9] = 2.0  # stride 32: point (288, 288), clipped at 320
    distances[2][0, :, 9, 9] = torch.tensor([8.0, 8.0, 100.0, 100.0])
    boxes, scores, labels = decode_rtmdet(
        class_logits, distances, (8, 16, 32), max_shape=(320, 320)
    )
    assert boxes.tolist() == [[70.0, 28.0, 110.0, 88.0], [280.0, 280.0, 320.0, 320.0]]
    np.testing.assert_allclose(scores.numpy(), torch.sigmoid(torch.tensor([4.0, 2.0])).numpy())
    assert labels.tolist() == [0, 0]
    assert rtmdet_priors([(2, 3)], [8])[0].tolist() == [
        [0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8]
    ]  # fmt: skip


def test_rtmdet_on_onnxruntime_gives_pytorchs_boxes(tmp_path: Path, coco_dir: Path) -> None:
    torch.manual_seed(0)
    model = build_rtmdet("rtmdet_nano")
    path = engines.export_rtmdet("rtmdet_nano", model, cache_dir=tmp_path)
    runner = engines.OnnxRTMDet(path, 3, device=torch.device("cpu"))
    x = torch.randn(2, 3, 320, 320)
    with torch.inference_mode():
        want = model.eval()(x)
    got = runner(x)
    for ours, theirs in zip([*got[0], *got[1]], [*want[0], *want[1]], strict=True):
        assert float((ours - theirs).abs().max()) <= 1e-3 * float(theirs.abs().max())
    assert simcc_lengths((256, 192)) == (512, 384)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_rtmpose_on_cuda_fp16_matches_the_cpu(rtmpose_t: RTMPose, coco_dir: Path) -> None:
    """fp16, channels-last and device decoding on the GPU: the CPU's keypoints within a SimCC
    bin (fp16 may move a near-tied argmax by one bin, half an input pixel)."""
    image = cv2.imread(str(coco_dir / "000000196141.jpg"))
    boxes = np.array([[248.0, 74.0, 170.0, 301.0], [454.0, 207.0, 177.0, 211.0]], np.float32)
    cpu = PoseEstimator(rtmpose_t, device="cpu", flip_test=True)(
        image, color_order="BGR", boxes=boxes
    )
    gpu_estimator = PoseEstimator(rtmpose_t, device="cuda", flip_test=True)
    assert gpu_estimator.fp16 and gpu_estimator.device_decode
    gpu = gpu_estimator(image, color_order="BGR", boxes=boxes)
    for a, b in zip(cpu, gpu, strict=True):
        scale = max(a.box[2], a.box[3]) * 1.25 / 192
        close = np.linalg.norm(a.keypoints[:, :2] - b.keypoints[:, :2], axis=1) <= scale
        assert close.mean() >= 0.8


@needs_cuda
def test_rtmpose_on_tensorrt(rtmpose_t: RTMPose, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    from pose_ros.runtime import TensorRTPoseRunner

    onnx_path = export_onnx(rtmpose_t, tmp_path / "rtmpose_t.onnx")
    runner = TensorRTPoseRunner.from_onnx(onnx_path, max_batch=8, fp16=False, device="cuda")
    assert runner.output_kind == OUTPUT_SIMCC
    x = torch.randn(3, 3, 256, 192, device="cuda")
    simcc_x, simcc_y = runner(x)
    with torch.inference_mode():
        want_x, want_y = rtmpose_t.cuda()(x)
    rtmpose_t.cpu()
    assert float((simcc_x - want_x).abs().max()) < 1e-3
    assert float((simcc_y - want_y).abs().max()) < 1e-3


def test_an_rtmdet_without_weights_needs_allow_random_weights() -> None:
    with pytest.raises(ValueError, match="allow_random_weights"):
        estimator_from_names("random:rtmpose_t", detector="rtmdet_nano", detector_weights=None)
    estimator = estimator_from_names(
        "random:rtmpose_t",
        detector="rtmdet_nano",
        detector_weights=None,
        allow_random_weights=True,
        cpu_threads=1,
    )
    assert estimator.random_weight_parts == ("pose network", "detector")


def test_cspnext_trunk_weights_load_into_the_backbone_alone(
    rtmpose_t: RTMPose, tmp_path: Path
) -> None:
    """Training's ``model.backbone_weights``: the ``backbone.*`` weights of a file go into the
    trunk, the head keeps its own; a trunk of another width is refused with the shapes named."""
    from pose_ros.models.checkpoints import load_cspnext_backbone

    path = tmp_path / "trunk.pth"
    torch.save({"state_dict": rtmpose_t.state_dict()}, path)  # backbone.* and head.*
    torch.manual_seed(1)
    fresh = build_pose_model("rtmpose_t")
    head_before = {k: v.clone() for k, v in fresh.head.state_dict().items()}
    loaded = load_cspnext_backbone(fresh, path)
    assert sorted(loaded) == sorted(fresh.backbone.state_dict())
    for key, value in rtmpose_t.backbone.state_dict().items():
        assert torch.equal(fresh.backbone.state_dict()[key], value), key
    for key, value in fresh.head.state_dict().items():
        assert torch.equal(value, head_before[key]), key
    with pytest.raises(CheckpointError, match=r"in file vs .* in model"):
        load_cspnext_backbone(build_pose_model("rtmpose_s"), path)
