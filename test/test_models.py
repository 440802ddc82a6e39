"""The pose networks: shapes, init, the attention maths, the builder and Preprocessing.

Real PyTorch throughout (CPU, ResNet-18 and small batches unless the depth is the point); nothing
is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from pose_ros.keypoints import NUM_KEYPOINTS
from pose_ros.models import (
    MODEL_NAMES,
    AttentionPoseNet,
    CRFAttention,
    PartAttention,
    PoseNet,
    Preprocessing,
    SimpleBaseline,
    SoftmaxAttention,
    build_pose_model,
    init_from_simplebaseline,
)

TRUNK = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def _randomize(model: torch.nn.Module, std: float = 0.05) -> None:
    """Give every parameter and BN statistic a non-trivial value, so comparisons mean something."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.add_(torch.randn(tensor.shape, generator=gen) * std)


@pytest.fixture(scope="module")
def x256() -> torch.Tensor:
    return torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(0))


# --- builder and shapes -----------------------------------------------------------------------


def test_model_names_cover_three_families_and_five_depths() -> None:
    assert len(MODEL_NAMES) == 15
    for family in ("simplebaseline", "attention", "attention_softmax"):
        for depth in (18, 34, 50, 101, 152):
            assert f"{family}_res{depth}" in MODEL_NAMES
    with pytest.raises(ValueError, match="simplebaseline_res50") as info:
        build_pose_model("simplebaseline_res51")
    assert "attention_softmax_res152" in str(info.value)  # names every valid choice
    with pytest.raises(ValueError, match="valid names"):
        build_pose_model("hrnet_w32")


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("simplebaseline_res18", SimpleBaseline),
        ("attention_res18", AttentionPoseNet),
        ("attention_softmax_res18", AttentionPoseNet),
    ],
)
def test_every_family_maps_256x192_to_64x48_heatmaps(name, cls, x256) -> None:
    model = build_pose_model(name).eval()
    assert isinstance(model, PoseNet) and isinstance(model, cls)
    with torch.no_grad():
        out = model(x256)
    assert out.shape == (2, NUM_KEYPOINTS, 64, 48)
    assert torch.isfinite(out).all()
    assert model.input_size == (256, 192) and model.heatmap_size == (64, 48)
    assert model.num_keypoints == NUM_KEYPOINTS
    assert model.arch["name"] == name


@pytest.mark.parametrize("name", ["simplebaseline_res18", "attention_res18"])
def test_384x288_input_gives_96x72_heatmaps(name) -> None:
    model = build_pose_model(name, input_size=(384, 288), num_keypoints=5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 384, 288))
    assert out.shape == (1, 5, 96, 72)
    assert model.heatmap_size == (96, 72) and model.preprocessing.input_size == (384, 288)


def test_resnet50_backbone_features_and_deconv_scales(x256) -> None:
    model = build_pose_model("simplebaseline_res50").eval()
    with torch.no_grad():
        scales = model.forward_deconv_stages(model.forward_backbone(x256[:1]))
    assert [tuple(s.shape) for s in scales] == [
        (1, 2048, 8, 6),
        (1, 256, 16, 12),
        (1, 256, 32, 24),
        (1, 256, 64, 48),
    ]


def test_every_depth_has_the_torchvision_trunk_and_reference_head_names() -> None:
    # On the meta device nothing is allocated, so even ResNet-152 builds in milliseconds.
    with torch.device("meta"):
        for depth in (18, 34, 50, 101, 152):
            model = build_pose_model(f"simplebaseline_res{depth}")
            reference = getattr(torchvision.models, f"resnet{depth}")()
            ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            theirs = {
                k: tuple(v.shape)
                for k, v in reference.state_dict().items()
                if not k.startswith("fc.")
            }
            trunk = {k: v for k, v in ours.items() if k.split(".")[0] in TRUNK}
            assert trunk == theirs, depth
            head = sorted(k for k in ours if k.split(".")[0] not in TRUNK)
            channels = 512 if depth < 50 else 2048
            assert ours["deconv_layers.0.weight"] == (channels, 256, 4, 4)
            assert head == sorted(
                [f"deconv_layers.{i}.weight" for i in (0, 3, 6)]
                + [
                    f"deconv_layers.{i}.{p}"
                    for i in (1, 4, 7)
                    for p in (
                        "weight",
                        "bias",
                        "running_mean",
                        "running_var",
                        "num_batches_tracked",
                    )
                ]
                + ["final_layer.weight", "final_layer.bias"]
            )


def test_deconv_layers_are_the_reference_layout() -> None:
    model = build_pose_model("simplebaseline_res18")
    layers = model.deconv_layers
    assert len(layers) == 9
    for i in (0, 3, 6):
        deconv = layers[i]
        assert isinstance(deconv, torch.nn.ConvTranspose2d)
        assert deconv.kernel_size == (4, 4) and deconv.stride == (2, 2)
        assert deconv.padding == (1, 1) and deconv.output_padding == (0, 0)
        assert deconv.bias is None and deconv.out_channels == 256
        assert isinstance(layers[i + 1], torch.nn.BatchNorm2d)
        assert isinstance(layers[i + 2], torch.nn.ReLU)
    assert model.final_layer.kernel_size == (1, 1) and model.final_layer.out_channels == 17


def test_init_matches_the_reference() -> None:
    torch.manual_seed(0)
    model = build_pose_model("simplebaseline_res50")
    for i in (0, 3, 6):
        std = model.deconv_layers[i].weight.std().item()
        assert std == pytest.approx(0.001, rel=0.05), i
        bn = model.deconv_layers[i + 1]
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert model.final_layer.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert torch.count_nonzero(model.final_layer.bias) == 0

    attention = build_pose_model("attention_res18", part_output="final_conv")
    part = attention.part_attention
    for conv in (part.unary, part.part_conv, attention.holistic_attention.blocks[1].unary):
        assert conv.weight.std().item() == pytest.approx(0.001, rel=0.1)
        assert torch.count_nonzero(conv.bias) == 0
    assert part.kernel.weight.abs().max().item() < 0.01
    assert torch.equal(part.final_conv.weight[:, :, 0, 0], torch.eye(17))


def test_attention_starts_near_half_maps_and_reports_all_maps(x256) -> None:
    model = build_pose_model("attention_res18").eval()
    with torch.no_grad():
        heatmaps, maps = model(x256, return_attention=True)
    assert heatmaps.shape == (2, 17, 64, 48)
    assert [tuple(m.shape) for m in maps["holistic"]] == [
        (2, 1, 8, 6),
        (2, 1, 16, 12),
        (2, 1, 32, 24),
        (2, 1, 64, 48),
    ]
    assert maps["parts"].shape == (2, 17, 64, 48)
    for m in [*maps["holistic"], maps["parts"]]:
        assert ((m > 0) & (m < 1)).all()
        # Small init: every CRF map starts close to sigmoid(0) = 0.5.
        assert (m - 0.5).abs().max() < 0.2


def test_softmax_variant_maps_have_mean_one(x256) -> None:
    model = build_pose_model("attention_softmax_res18").eval()
    assert model.arch == {
        "name": "attention_softmax_res18",
        "num_keypoints": 17,
        "input_size": [256, 192],
        "num_deconv_filters": 256,
        "part_output": "heatmaps",
    }
    assert all(isinstance(b, SoftmaxAttention) for b in model.holistic_attention.blocks)
    assert model.part_attention.kernel is None
    _randomize(model.holistic_attention, std=0.02)
    with torch.no_grad():
        heatmaps, maps = model(x256, return_attention=True)
    assert heatmaps.shape == (2, 17, 64, 48)
    assert [tuple(m.shape[-2:]) for m in maps["holistic"]] == [(8, 6), (16, 12), (32, 24), (64, 48)]
    for m in [*maps["holistic"], maps["parts"]]:
        means = m.mean(dim=(-2, -1))
        torch.testing.assert_close(means, torch.ones_like(means))
        assert (m >= 0).all()
    # Not uniform once the unary convs are non-trivial: the softmax does redistribute.
    assert maps["holistic"][0].std() > 0.01


# --- the holistic maps are four distinct modules (the origin reused scale 1's for scale 2) --------


def test_each_holistic_scale_has_its_own_map_from_its_own_features(x256) -> None:
    torch.manual_seed(0)
    model = build_pose_model("attention_res18").eval()
    blocks = model.holistic_attention.blocks
    assert len(blocks) == 4
    assert len({id(b) for b in blocks}) == 4
    pointers = [p.data_ptr() for b in blocks for p in b.parameters()]
    assert len(pointers) == len(set(pointers))  # no parameter shared between scales
    assert [b.unary.in_channels for b in blocks] == [512, 256, 256, 256]
    _randomize(model.holistic_attention, std=0.3)
    x = x256[:1]
    with torch.no_grad():
        before, maps = model(x, return_attention=True)
        scales = model.forward_deconv_stages(model.forward_backbone(x))
        for i, block in enumerate(blocks):
            torch.testing.assert_close(maps["holistic"][i], block.attention_map(scales[i]))
        # Scales 1 and 2 have different maps (a reused map would be identical after upsampling).
        up = [F.interpolate(m, size=(64, 48), mode="nearest") for m in maps["holistic"]]
        assert (up[0] - up[1]).abs().max() > 1e-3

        blocks[1].unary.weight.add_(0.5)  # perturb only scale 2's U conv
        after, maps_after = model(x, return_attention=True)
    # The heatmaps are tiny at init (Normal(0, 0.001) head), so compare relatively.
    assert (after - before).norm() / before.norm() > 0.01
    pairs = zip(maps["holistic"], maps_after["holistic"], strict=True)
    changed = [not torch.equal(a, b) for a, b in pairs]
    assert changed == [False, True, False, False]


# --- CRF maths --------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_crf_block_matches_a_hand_written_mean_field_loop(iterations, kernel_size) -> None:
    gen = torch.Generator().manual_seed(iterations * 10 + kernel_size)
    block = CRFAttention(8, iterations=iterations, kernel_size=kernel_size)
    with torch.no_grad():
        block.unary.weight.copy_(torch.randn(block.unary.weight.shape, generator=gen) * 0.3)
        block.unary.bias.fill_(0.1)
        block.kernel.weight.copy_(torch.randn(block.kernel.weight.shape, generator=gen) * 0.5)
    features = torch.randn(2, 8, 10, 7, generator=gen)

    u = F.conv2d(features, block.unary.weight, block.unary.bias, padding=1)
    k = block.kernel.weight
    q = torch.sigmoid(F.conv2d(u, k, padding=kernel_size // 2) + u)  # Q_1
    for _ in range(iterations - 1):
        q = torch.sigmoid(F.conv2d(q, k, padding=kernel_size // 2) + u)  # Q_t

    with torch.no_grad():
        out, q_block = block(features)
    assert q_block.shape == (2, 1, 10, 7)
    torch.testing.assert_close(q_block, q)
    torch.testing.assert_close(out, features * q)
    # T matters: one more step gives a different map.
    other = CRFAttention(8, iterations=iterations + 1, kernel_size=kernel_size)
    other.load_state_dict(block.state_dict())
    with torch.no_grad():
        assert (other.attention_map(features) - q).abs().max() > 1e-4


def test_softmax_block_is_a_spatial_softmax_times_hw() -> None:
    block = SoftmaxAttention(4)
    torch.nn.init.normal_(block.unary.weight, std=0.5)
    features = torch.randn(1, 4, 6, 5)
    with torch.no_grad():
        out, q = block(features)
        u = block.unary(features)
    expected = torch.exp(u) / torch.exp(u).sum(dim=(-2, -1), keepdim=True) * 30
    torch.testing.assert_close(q, expected)
    torch.testing.assert_close(out, features * expected)


# --- part-wise attention: the efficient form equals the naive per-part loop -------------------


def _naive_parts(part: PartAttention, features: torch.Tensor, kind: str, iterations: int):
    """Part k as written in the paper: its own block, its attended copy of F, its 1x1 conv."""
    outputs, maps = [], []
    for k in range(part.num_parts):
        if kind == "crf":
            block = CRFAttention(features.shape[1], iterations, part.kernel.kernel_size[0])
            block.kernel.weight.data.copy_(part.kernel.weight[k : k + 1])
        else:
            block = SoftmaxAttention(features.shape[1])
        block.unary.weight.data.copy_(part.unary.weight[k : k + 1])
        block.unary.bias.data.copy_(part.unary.bias[k : k + 1])
        attended, q = block(features)  # (N, C, H, W): the tensor the efficient form avoids
        outputs.append(
            F.conv2d(attended, part.part_conv.weight[k : k + 1], part.part_conv.bias[k : k + 1])
        )
        maps.append(q)
    out = torch.cat(outputs, dim=1)
    if part.final_conv is not None:
        out = part.final_conv(out)
    return out, torch.cat(maps, dim=1)


@pytest.mark.parametrize("kind", ["crf", "softmax"])
@pytest.mark.parametrize("part_output", ["heatmaps", "final_conv"])
def test_efficient_part_attention_equals_the_naive_loop(kind, part_output) -> None:
    torch.manual_seed(3)
    part = PartAttention(256, 17, kind=kind, iterations=3, kernel_size=3, part_output=part_output)
    _randomize(part, std=0.05)
    features = torch.relu(torch.randn(2, 256, 16, 12))
    with torch.no_grad():
        fast, fast_maps = part(features)
        slow, slow_maps = _naive_parts(part, features, kind, 3)
    assert fast.shape == (2, 17, 16, 12)
    torch.testing.assert_close(fast_maps, slow_maps)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    assert fast.std() > 1e-3  # not a trivially zero comparison


def test_part_output_modes_start_equal_and_final_conv_mixes_parts(x256) -> None:
    heat = build_pose_model("attention_res18", part_output="heatmaps").eval()
    conv = build_pose_model("attention_res18", part_output="final_conv").eval()
    state = heat.state_dict()
    conv.load_state_dict(
        {**state, **{k: v for k, v in conv.state_dict().items() if "final_conv" in k}}
    )
    with torch.no_grad():
        torch.testing.assert_close(conv(x256[:1]), heat(x256[:1]))  # identity init
        conv.part_attention.final_conv.weight[0, 1] = 1.0
        mixed = conv(x256[:1])
        parts = heat(x256[:1])
    torch.testing.assert_close(mixed[:, 0], parts[:, 0] + parts[:, 1])


# --- warm start from a SimpleBaseline -----------------------------------------------------------


def _trained_like_simplebaseline(x: torch.Tensor) -> SimpleBaseline:
    """A ResNet-18 SimpleBaseline with O(1) features, as after training: Kaiming deconvolutions, a
    non-trivial head, and BatchNorm statistics measured on ``x`` (so eval mode normalises)."""
    model = build_pose_model("simplebaseline_res18")
    with torch.no_grad():
        for i in (0, 3, 6):
            torch.nn.init.kaiming_normal_(model.deconv_layers[i].weight)
        torch.nn.init.normal_(model.final_layer.weight, std=0.05)
        torch.nn.init.normal_(model.final_layer.bias, std=0.1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration pass
        model.train()
        model(x)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "gain", "tolerance"),
    [("attention_res18", 1.0, 0.1), ("attention_softmax_res18", 4.0, 0.25)],
)
def test_init_from_simplebaseline_copies_and_starts_close(name, gain, tolerance, x256) -> None:
    torch.manual_seed(0)
    baseline = _trained_like_simplebaseline(x256)
    model = build_pose_model(name).eval()
    with torch.no_grad():
        expected = baseline(x256)
        fresh = model(x256)
    report = init_from_simplebaseline(model, baseline.state_dict())

    assert model.initial_gain == gain and report["weight_scale"] == pytest.approx(1 / gain)
    theirs = baseline.state_dict()
    ours = model.state_dict()
    trunk_and_deconv = [k for k in theirs if not k.startswith("final_layer")]
    assert sorted(report["copied"]) == sorted(trunk_and_deconv)
    for key in trunk_and_deconv:
        assert torch.equal(ours[key], theirs[key]), key
    torch.testing.assert_close(
        ours["part_attention.part_conv.weight"], theirs["final_layer.weight"] / gain
    )
    assert torch.equal(ours["part_attention.part_conv.bias"], theirs["final_layer.bias"])
    assert report["kept_init"] and all("attention" in k for k in report["kept_init"])

    with torch.no_grad():
        got = model(x256)
    # Close to the SimpleBaseline it started from (the maps are near their init value), while a
    # model that was not initialised from it is nowhere near.
    assert (got - expected).norm() / expected.norm() < tolerance
    assert (fresh - expected).norm() / expected.norm() > 0.9


def test_init_from_simplebaseline_rejects_another_depth() -> None:
    with torch.device("meta"):
        baseline = build_pose_model("simplebaseline_res18")
        model = build_pose_model("attention_res34")
    with pytest.raises(ValueError, match="do not fit attention_res34") as info:
        init_from_simplebaseline(model, baseline.state_dict())
    assert "missing keys" in str(info.value) and "layer1.2.conv1.weight" in str(info.value)


# --- builder options and arch ---------------------------------------------------------------------


def test_arch_is_json_and_rebuilds_the_same_model() -> None:
    model = build_pose_model(
        "attention_res18",
        input_size=(384, 288),
        num_keypoints=14,
        num_deconv_filters=64,
        crf_iterations=2,
        crf_kernel_size=5,
        part_output="final_conv",
    )
    arch = json.loads(json.dumps(model.arch))
    assert arch == model.arch
    assert arch["crf_iterations"] == 2 and arch["crf_kernel_size"] == 5
    rebuilt = build_pose_model(**arch)
    assert rebuilt.arch == model.arch
    assert rebuilt.input_size == (384, 288)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert rebuilt.part_attention.kernel.kernel_size == (5, 5)
    assert rebuilt.part_attention.iterations == 2


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("attention_res18", {"crf_iterations": 0}, "crf_iterations"),
        ("attention_res18", {"crf_kernel_size": 4}, "odd"),
        ("attention_res18", {"part_output": "logits"}, "'heatmaps', 'final_conv'"),
        ("simplebaseline_res18", {"crf_iterations": 3}, "only to attention"),
        ("simplebaseline_res18", {"part_output": "heatmaps"}, "only to attention"),
        ("attention_softmax_res18", {"crf_kernel_size": 3}, "CRF"),
        ("simplebaseline_res18", {"input_size": (250, 192)}, "multiples of 32"),
        ("simplebaseline_res18", {"input_size": (256,)}, "input_size"),
        ("simplebaseline_res18", {"num_keypoints": 0}, "num_keypoints"),
        ("simplebaseline_res18", {"backbone_weights": "IMAGENET9K"}, "IMAGENET1K_V1"),
        (
            "simplebaseline_res18",
            {"input_size": (384, 288), "preprocessing": Preprocessing()},
            "differs",
        ),
    ],
)
def test_bad_options_are_value_errors_naming_the_choices(name, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_pose_model(name, **kwargs)


def test_preprocessing_is_kept_and_sets_the_input_size() -> None:
    prep = Preprocessing("BGR", (0.4, 0.5, 0.6), (0.2, 0.2, 0.2), (128, 96))
    model = build_pose_model("simplebaseline_res18", preprocessing=prep)
    assert model.preprocessing is prep
    assert model.input_size == (128, 96) and model.heatmap_size == (32, 24)
    assert model.arch["input_size"] == [128, 96]


def test_backbone_weights_from_a_torchvision_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(5)
    resnet = torchvision.models.resnet18(weights=None)
    _randomize(resnet, std=0.01)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)  # with fc.*, which must be dropped

    model = build_pose_model("simplebaseline_res18", backbone_weights=path)
    ours = model.state_dict()
    for key, value in resnet.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(ours[key], value), key
    assert "backbone_weights" not in model.arch

    with pytest.raises(ValueError, match="do not fit resnet34"):
        build_pose_model("simplebaseline_res34", backbone_weights=path)


# --- Preprocessing --------------------------------------------------------------------------------


def test_preprocessing_defaults_round_trip_and_validation() -> None:
    default = Preprocessing()
    assert default.color_order == "RGB"
    assert default.mean == (0.485, 0.456, 0.406) and default.std == (0.229, 0.224, 0.225)
    assert default.input_size == (256, 192)
    bgr = Preprocessing("BGR", [0.1, 0.2, 0.3], [1, 2, 3], [384, 288])
    assert bgr.mean == (0.1, 0.2, 0.3) and bgr.std == (1.0, 2.0, 3.0)
    assert Preprocessing.from_dict(json.loads(json.dumps(bgr.to_dict()))) == bgr
    with pytest.raises(dataclasses.FrozenInstanceError):
        bgr.color_order = "RGB"  # type: ignore[misc]
    for bad, message in [
        ({"color_order": "RGBA"}, "'RGB', 'BGR'"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (1.0, 0.0, 1.0)}, "positive"),
        ({"input_size": (256, -192)}, "input_size"),
        ({"input_size": (256.0, 192.0)}, "input_size"),
    ]:
        with pytest.raises(ValueError, match=message):
            Preprocessing(**bad)
    with pytest.raises(ValueError, match="unknown"):
        Preprocessing.from_dict({**default.to_dict(), "scale": 1.0})


def test_preprocessing_records_the_decode_rule_and_reads_records_without_it() -> None:
    microsoft = Preprocessing("BGR", decode_rule="microsoft")
    assert Preprocessing.from_dict(json.loads(json.dumps(microsoft.to_dict()))) == microsoft
    older = {k: v for k, v in microsoft.to_dict().items() if k != "decode_rule"}
    assert Preprocessing.from_dict(older).decode_rule == "mmpose"  # checkpoints before the field
    with pytest.raises(ValueError, match="decode_rule"):
        Preprocessing(decode_rule="udp")


def test_preprocessing_normalize_reorders_channels_then_normalises() -> None:
    prep = Preprocessing("BGR", (0.5, 0.25, 0.0), (0.5, 0.25, 1.0), (32, 32))
    rgb = torch.zeros(1, 3, 2, 2)
    rgb[:, 0] = 255.0  # pure red
    out = prep.normalize(rgb, input_color_order="RGB")
    # BGR order: B = 0 -> (0 - 0.5) / 0.5; G = 0 -> -1; R = 1 -> (1 - 0) / 1.
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))
    same = prep.normalize(rgb.flip(1), input_color_order="BGR")
    torch.testing.assert_close(same, out)
