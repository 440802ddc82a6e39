"""Training RTMPose: mmpose's recipe in the config, SimCC targets and the KL loss, the
flat-cosine schedule, the weight average, RTMPose's augmentation and its switch in the last
epochs, exact resume, and the real overfit run (RTMPose-t on the 4 COCO images, pycocotools AP
>= 0.9 through the training loop)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_support import OverfitRun, coco_overrides

from pose_ros.geometry import box_to_center_scale
from pose_ros.models import load_pose_model
from pose_ros.models.rtmpose import RTMPose
from pose_ros.pipeline import PoseEstimator
from pose_ros.simcc import decode_simcc
from training.augment import make_simcc_sample
from training.config import AugmentConfig, ConfigError, OptimConfig, load_config
from training.dataset import CocoKeypointTrainSet, load_coco_persons, read_image
from training.loss import kl_discrete_loss
from training.optim import ExpMomentumEMA, build_optimizer, flat_cosine_factor
from training.train import main as train_main

INPUT_SIZE = (128, 96)
PLAIN = AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, 8)


def test_shipped_rtmpose_configs_follow_mmposes_recipe() -> None:
    small = load_config("rtmpose_s_256x192")
    assert small.model.name == "rtmpose_s" and small.model.input_size == [256, 192]
    assert small.model.backbone_weights == "cspnext_s_udp_aic_coco_256x192"
    optim = small.optim
    assert (optim.optimizer, optim.lr, optim.weight_decay, optim.epochs) == (
        "adamw",
        4e-3,
        0.0,
        420,
    )
    assert (optim.schedule, optim.cosine_start_epoch, optim.min_lr_factor) == (
        "flat_cosine",
        210,
        0.05,
    )
    assert (optim.warmup_iters, optim.warmup_start_factor) == (1000, 1e-5)
    assert (small.loss.simcc_beta, small.loss.simcc_label_softmax) == (10.0, True)
    assert small.train.ema_momentum == 0.0002 and small.data.simcc_sigma == [4.9, 5.66]
    augment = small.augment
    assert augment.bbox_transform == "mmpose" and augment.scale_range == [0.6, 1.4]
    assert augment.switch_epoch == 390 and augment.stage2["scale_range"] == [0.75, 1.25]
    assert augment.stage2["dropout_prob"] == 0.5 and augment.dropout_prob == 1.0
    tiny = load_config("rtmpose_t_256x192")
    assert tiny.model.name == "rtmpose_t" and tiny.train.ema_momentum is None
    assert tiny.optim.lr == 4e-3  # from its base file
    for name in ("rtmpose_m_256x192", "rtmpose_l_256x192"):
        assert load_config(name).train.ema_momentum == 0.0002


def test_flat_cosine_schedule() -> None:
    config = OptimConfig(
        epochs=10, schedule="flat_cosine", cosine_start_epoch=5, warmup_iters=4, min_lr_factor=0.05
    )
    factor = flat_cosine_factor(config, iterations_per_epoch=10)
    assert factor(0) == pytest.approx(1e-5)
    assert factor(2) == pytest.approx(1e-5 + (1 - 1e-5) * 0.5)
    assert factor(4) == factor(49) == 1.0  # flat after the warm-up, up to epoch 5
    assert factor(75) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(100) == pytest.approx(0.05)
    with pytest.raises(ConfigError, match="cosine_start_epoch"):
        flat_cosine_factor(OptimConfig(epochs=10, cosine_start_epoch=11), 10)


def test_adamw_leaves_norms_and_biases_undecayed() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    config = OptimConfig(optimizer="adamw", weight_decay=0.05, decay_norm_and_bias=False)
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, undecayed = optimizer.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3, 3, 3])]
    assert len(undecayed["params"]) == 3 and undecayed["weight_decay"] == 0.0


def test_weight_average_follows_mmdets_exp_momentum() -> None:
    model = torch.nn.Linear(2, 1)
    ema = ExpMomentumEMA(model, momentum=0.1, gamma=4.0)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    m0 = (1 - 0.1) * math.exp(-1 / 4.0) + 0.1
    torch.testing.assert_close(ema.module.weight, start + m0)
    ema.update(model)
    m1 = (1 - 0.1) * math.exp(-2 / 4.0) + 0.1
    torch.testing.assert_close(ema.module.weight, (start + m0) * (1 - m1) + (start + 1) * m1)


def test_kl_loss_is_mmposes_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    predicted = (
        torch.randn(2, 3, 8, generator=generator),
        torch.randn(2, 3, 6, generator=generator),
    )
    target = (torch.rand(2, 3, 8, generator=generator), torch.rand(2, 3, 6, generator=generator))
    weights = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.5]])
    expected = 0.0
    for out, lab in zip(predicted, target, strict=True):
        p = torch.log_softmax(out * 10, dim=-1)
        q = torch.softmax(lab * 10, dim=-1)
        per_keypoint = (q * (q.log() - p)).mean(dim=-1)  # KL over the bins, averaged
        expected = expected + (per_keypoint * weights).sum()
    torch.testing.assert_close(kl_discrete_loss(predicted, target, weights), expected / 3)


def _sample(coco_dir: Path, coco_annotations: Path, augment: AugmentConfig, seed: int = 0):
    persons = load_coco_persons(coco_annotations, coco_dir)
    instance = persons.instances[0]
    center, scale = box_to_center_scale(instance.box, INPUT_SIZE[1] / INPUT_SIZE[0])
    return instance, make_simcc_sample(
        read_image(persons.image_paths[instance.image_id]),
        instance.keypoints,
        center,
        scale,
        input_size=INPUT_SIZE,
        sigma=(2.45, 2.83),
        augment=augment,
        rng=np.random.default_rng(seed),
    )


def test_simcc_targets_decode_to_the_annotated_keypoints(coco_dir, coco_annotations) -> None:
    instance, (crop, x, y, weights) = _sample(coco_dir, coco_annotations, PLAIN)
    assert crop.shape == (3, *INPUT_SIZE) and x.shape == (17, 192) and y.shape == (17, 256)
    coords, _ = decode_simcc(x[None], y[None])
    center, scale = box_to_center_scale(instance.box, INPUT_SIZE[1] / INPUT_SIZE[0])
    expected = (instance.keypoints[:, :2] - center) / scale * [96, 128] + [48, 64]
    labelled = instance.keypoints[:, 2] > 0
    np.testing.assert_array_equal(weights > 0, labelled)
    assert np.abs(coords[0][labelled] - expected[labelled]).max() <= 0.25 + 1e-4


def test_rtmpose_augmentation_and_its_switch(coco_dir: Path, coco_annotations: Path) -> None:
    strong = AugmentConfig(
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        8,
        hsv_deltas=[5, 30, 30],
        dropout_prob=1.0,
        switch_epoch=3,
        stage2={"dropout_prob": 0.0, "hsv_deltas": [0, 0, 0]},
    )
    _, (plain, *_) = _sample(coco_dir, coco_annotations, PLAIN)
    _, (dropped, *_) = _sample(coco_dir, coco_annotations, strong)
    # One rectangle of zeros covering 4%..16% of the crop.
    zero = (dropped == 0).all(axis=0)
    assert 0.04 * zero.size <= zero.sum() <= 0.17 * zero.size
    assert not (plain == 0).all(axis=0)[zero].all()
    persons = load_coco_persons(coco_annotations, coco_dir)
    dataset = CocoKeypointTrainSet(
        persons,
        input_size=INPUT_SIZE,
        heatmap_size=(32, 24),
        sigma=1.0,
        augment=strong,
        color_order="RGB",
        seed=0,
        simcc_sigma=(2.45, 2.83),
    )
    before, after = dataset[(2, 0)], dataset[(3, 0)]
    assert set(before) == {"image", "simcc_x", "simcc_y", "weights"}
    assert (before["image"] == 0).all(dim=0).float().mean() >= 0.04
    # From the switch epoch on, the stage-2 fields: no dropout, no colour change.
    np.testing.assert_array_equal(after["image"].numpy(), plain)


def test_rtmpose_resume_continues_exactly(tmp_path: Path, coco_dir: Path) -> None:
    """2 steps, resume, 2 more == 4 straight, with the per-iteration schedule and the EMA."""

    def argv(output: Path, steps: int) -> list[str]:
        return [
            "overfit_rtmpose_coco4",
            "--output-dir",
            str(output),
            "--device",
            "cpu",
            "--set",
            *coco_overrides(coco_dir),
            "data.batch_size=4",
            "data.repeat=1",
            f"train.max_steps={steps}",
            "train.target_ap=null",
            "augment.bbox_transform=mmpose",
            "augment.shift_prob=0.3",
            "augment.shift_factor=0.16",
            "augment.dropout_prob=1.0",
        ]

    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert train_main(argv(straight, 4)) == 0
    assert train_main(argv(halves, 2)) == 0
    assert train_main(["--resume", str(halves / "last.pth"), "--set", "train.max_steps=4"]) == 0
    a = torch.load(straight / "last.pth", weights_only=True)
    b = torch.load(halves / "last.pth", weights_only=True)
    assert a["step"] == b["step"] == 4
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in a["ema"]["module"].items():
        torch.testing.assert_close(b["ema"]["module"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert a["ema"]["steps"] == b["ema"]["steps"] == 4
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 4


def test_rtmpose_t_overfits_to_ap_09(rtmpose_overfit_run: OverfitRun, coco_dir: Path) -> None:
    evaluations = rtmpose_overfit_run.evaluations
    best = rtmpose_overfit_run.best_ap
    assert best >= 0.9, evaluations
    output = rtmpose_overfit_run.output_dir
    model = load_pose_model(output / "best.pth").eval()
    assert isinstance(model, RTMPose) and model.input_size == INPUT_SIZE
    checkpoint = torch.load(output / "best.pth", weights_only=True)
    assert checkpoint["extra"]["AP"] == best
    # best.pth holds the weight average, which last.pth keeps beside the raw weights.
    state = torch.load(output / "last.pth", weights_only=True)
    key = "head.cls_x.weight"
    assert not torch.equal(state["ema"]["module"][key], state["model"][key])
    # The trained network finds the annotated keypoints of a training person.
    persons = load_coco_persons(coco_dir / "test_coco.json", coco_dir)
    instance = max(persons.instances, key=lambda i: (i.keypoints[:, 2] > 0).sum())
    image = read_image(persons.image_paths[instance.image_id])
    (person,) = PoseEstimator(model, device="cpu")(
        image, color_order="BGR", boxes=instance.box[None]
    )
    labelled = instance.keypoints[:, 2] > 0
    error = np.linalg.norm(
        person.keypoints[labelled, :2] - instance.keypoints[labelled, :2], axis=1
    )
    assert np.median(error) < 0.05 * max(instance.box[2], instance.box[3])


def test_trained_rtmpose_exports_to_onnx_and_int8(
    rtmpose_overfit_run: OverfitRun, coco_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """pose-ros-export on the trained RTMPose: an ONNX file with simcc_x / simcc_y that ONNX
    Runtime runs as PyTorch does, and an int8 copy calibrated on the annotated persons whose
    pycocotools AP (GT boxes, the 4 images) stays near the fp32 export's."""
    from training.evaluate import main as evaluate_main
    from training.export import main as export_main

    best = rtmpose_overfit_run.best
    output = tmp_path / "rtmpose_t.onnx"
    calibration = [
        *("--calibration-annotations", str(coco_dir / "test_coco.json")),
        *("--calibration-images", str(coco_dir)),
    ]
    assert export_main(["--model", str(best), "--output", str(output), "--int8", *calibration]) == 0
    printed = capsys.readouterr().out
    assert "max abs heatmap difference PyTorch vs ONNX Runtime" in printed
    assert "calibrated on 9 person crops" in printed, printed
    assert "on 3 held-out person crops" in printed, printed
    ap = {}
    for name, model in (("fp32", output), ("int8", output.with_suffix(".int8.onnx"))):
        argv = [
            *("--model", str(model), "--images", str(coco_dir)),
            *("--annotations", str(coco_dir / "test_coco.json"), "--device", "cpu"),
            *("--output-dir", str(tmp_path / f"eval_{name}"), "--no-flip"),
        ]
        assert evaluate_main(argv) == 0
        ap[name] = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())["AP"]
    assert ap["fp32"] >= 0.9, ap
    assert ap["int8"] >= ap["fp32"] - 0.1, ap
