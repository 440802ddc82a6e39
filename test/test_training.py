"""Training: configs, COCO loading, augmentation, loss, exact resume, and the real overfit run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_training_support import OverfitRun, coco_overrides, overfit_once
from torch.utils.data import DataLoader

from pose_ros.codec import decode_heatmaps
from pose_ros.geometry import apply_affine, box_to_center_scale, crop_affine
from pose_ros.keypoints import LOWER_BODY_IDS, UPPER_BODY_IDS, flip_permutation
from pose_ros.models import load_pose_model
from pose_ros.pipeline import PoseEstimator
from training.augment import make_training_sample
from training.config import CONFIG_DIR, AugmentConfig, ConfigError, load_config
from training.dataset import (
    CocoKeypointTrainSet,
    DatasetError,
    EpochIndexSampler,
    load_coco_persons,
    read_image,
)
from training.loss import joints_mse_loss
from training.train import main as train_main

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_AUGMENT = AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, 8)
INPUT_SIZE = (128, 96)
HEATMAP_SIZE = (32, 24)


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory: pytest.TempPathFactory, coco_dir: Path) -> OverfitRun:
    return overfit_once(tmp_path_factory, coco_dir)


# --- config -----------------------------------------------------------------------------------


def test_every_shipped_config_loads() -> None:
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    expected = {
        *("simplebaseline_res50_256x192", "simplebaseline_res50_384x288"),
        *("attention_res50_256x192", "attention_softmax_res50_256x192"),
        *("attention_res50_256x192_finetune", "tiny_res18_128x96", "overfit_coco4"),
    }
    assert expected <= set(names)
    for name in names:
        load_config(name)
    paper = load_config("simplebaseline_res50_256x192")
    assert (paper.optim.lr, paper.optim.epochs, paper.optim.milestones) == (1e-3, 140, [90, 120])
    assert paper.data.batch_size == 32 and paper.model.input_size == [256, 192]
    big = load_config("simplebaseline_res50_384x288")  # through its base file
    assert big.model.input_size == [384, 288] and big.optim.milestones == [90, 120]
    assert load_config("attention_softmax_res50_256x192").model.name == "attention_softmax_res50"


def test_overrides_are_typed_from_yaml() -> None:
    config = load_config(
        "tiny_res18_128x96",
        [
            "optim.lr=5e-4",
            "data.batch_size=16",
            "optim.milestones=[3, 4]",
            "data.sigma=null",
            "train.max_steps=7",
            "model.attention={crf_iterations: 2}",
        ],
    )
    assert config.optim.lr == 5e-4 and isinstance(config.optim.lr, float)
    assert config.data.batch_size == 16 and config.optim.milestones == [3, 4]
    assert config.data.sigma is None and config.train.max_steps == 7
    assert config.model.attention == {"crf_iterations": 2}
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_config("tiny_res18_128x96", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        load_config("tiny_res18_128x96", ["data.batch_size=many"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config")


# --- data -------------------------------------------------------------------------------------


def test_coco_persons_are_the_labelled_instances(coco_dir: Path, coco_annotations: Path) -> None:
    persons = load_coco_persons(coco_annotations, coco_dir)
    raw = json.loads(coco_annotations.read_text())["annotations"]
    labelled = [a for a in raw if a["num_keypoints"] > 0 and not a["iscrowd"]]
    assert len(persons.instances) == len(labelled) == 12
    sizes = persons.image_sizes
    for instance in persons.instances:
        x, y, w, h = instance.box
        height, width = sizes[instance.image_id]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= width - 1 + 1e-3 and y + h <= height - 1 + 1e-3
        assert instance.keypoints.shape == (17, 3) and instance.keypoints[:, 2].max() > 0


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "case", ["missing", "not_json", "no_annotations", "short_keypoints", "absent_image"]
)
def test_bad_annotation_files_are_named(
    case: str, tmp_path: Path, coco_dir: Path, coco_annotations: Path, capsys: pytest.CaptureFixture
) -> None:
    data = json.loads(coco_annotations.read_text())
    images = coco_dir
    path = tmp_path / f"{case}.json"
    if case == "not_json":
        path.write_text("{this is not json")
    elif case == "no_annotations":
        del data["annotations"]
        _write_json(path, data)
    elif case == "short_keypoints":
        data["annotations"][3]["keypoints"] = data["annotations"][3]["keypoints"][:50]
        _write_json(path, data)
    elif case == "absent_image":
        _write_json(path, data)
        images = tmp_path  # holds no image
    with pytest.raises(DatasetError, match=case if case != "absent_image" else "does not exist"):
        load_coco_persons(path, images)
    with pytest.raises(DatasetError) as error:
        load_coco_persons(path, images)
    assert path.name in str(error.value)

    overrides = [f"data.train_annotations={path}", f"data.train_images={images}"]
    code = train_main(
        ["tiny_res18_128x96", "--output-dir", str(tmp_path / "run"), "--set", *overrides]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert path.name in err and "Traceback" not in err and err.startswith("pose-ros-train: error:")


def _plain_sample(
    coco_dir: Path, coco_annotations: Path, index: int, augment: AugmentConfig, seed: int = 0
):
    persons = load_coco_persons(coco_annotations, coco_dir)
    instance = persons.instances[index]
    image = read_image(persons.image_paths[instance.image_id])
    center, scale = box_to_center_scale(instance.box, INPUT_SIZE[1] / INPUT_SIZE[0])
    sample = make_training_sample(
        image,
        instance.keypoints,
        center,
        scale,
        input_size=INPUT_SIZE,
        heatmap_size=HEATMAP_SIZE,
        sigma=1.0,
        augment=augment,
        rng=np.random.default_rng(seed),
        color_order="BGR",
    )
    return image, instance, center, scale, sample


def test_plain_sample_is_the_affine_crop_with_matching_targets(
    coco_dir: Path, coco_annotations: Path
) -> None:
    image, instance, center, scale, (crop, heatmaps, weights) = _plain_sample(
        coco_dir, coco_annotations, 0, NO_AUGMENT
    )
    matrix = crop_affine(center, scale, INPUT_SIZE)
    expected = cv2.warpAffine(image, matrix, INPUT_SIZE[::-1], flags=cv2.INTER_LINEAR)
    assert crop.shape == (3, *INPUT_SIZE) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, expected.transpose(2, 0, 1))
    labelled = instance.keypoints[:, 2] > 0
    np.testing.assert_array_equal(weights > 0, labelled)
    coords, _ = decode_heatmaps(heatmaps[None])
    targets = apply_affine(instance.keypoints[:, :2], matrix) / 4.0  # input px -> heatmap px
    assert np.abs(coords[0][labelled] - targets[labelled]).max() <= 0.5


def test_flip_mirrors_crop_and_swaps_sides(coco_dir: Path, coco_annotations: Path) -> None:
    flip_only = AugmentConfig(0.0, 0.0, 0.0, 1.0, 0.0, 8)
    *_, (crop, heatmaps, weights) = _plain_sample(coco_dir, coco_annotations, 0, NO_AUGMENT)
    *_, (flipped, flipped_heatmaps, flipped_weights) = _plain_sample(
        coco_dir, coco_annotations, 0, flip_only
    )
    # The flip maps crop column u to w - u (pixel centres), the shift the flip test undoes.
    difference = np.abs(flipped[..., 1:].astype(int) - crop[..., ::-1][..., :-1].astype(int))
    assert np.percentile(difference, 99) <= 2
    perm = flip_permutation()
    np.testing.assert_array_equal(flipped_weights, weights[perm])
    coords, _ = decode_heatmaps(heatmaps[None])
    flipped_coords, _ = decode_heatmaps(flipped_heatmaps[None])
    labelled = weights[perm] > 0
    mirrored_x = HEATMAP_SIZE[1] - coords[0][perm][:, 0]  # u -> w - u at heatmap scale
    assert np.abs(flipped_coords[0][labelled, 0] - mirrored_x[labelled]).max() <= 1.0
    assert np.abs(flipped_coords[0][labelled, 1] - coords[0][perm][labelled, 1]).max() <= 0.5


def test_half_body_crops_one_half(coco_dir: Path, coco_annotations: Path) -> None:
    half_only = AugmentConfig(0.0, 0.0, 0.0, 0.0, 1.0, 8)
    for seed in range(6):
        *_, (_, _, weights) = _plain_sample(coco_dir, coco_annotations, 0, half_only, seed)
        # person 0 has all 17 keypoints: the crop holds one half, the other half drops out
        upper_in = weights[list(UPPER_BODY_IDS)].sum()
        lower_in = weights[list(LOWER_BODY_IDS)].sum()
        assert (upper_in == len(UPPER_BODY_IDS)) or (lower_in == len(LOWER_BODY_IDS))
        assert weights.sum() < 17


def test_augmentation_depends_only_on_seed_epoch_index(
    coco_dir: Path, coco_annotations: Path
) -> None:
    persons = load_coco_persons(coco_annotations, coco_dir)
    dataset = CocoKeypointTrainSet(
        persons,
        input_size=INPUT_SIZE,
        heatmap_size=HEATMAP_SIZE,
        sigma=1.0,
        augment=AugmentConfig(),
        color_order="RGB",
        seed=3,
    )
    first = dataset[(1, 5)]
    assert torch.equal(first["image"], dataset[(1, 5)]["image"])
    assert not torch.equal(first["image"], dataset[(2, 5)]["image"])
    sampler = EpochIndexSampler(dataset, num_replicas=1, rank=0, seed=3)
    sampler.set_epoch(1)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=workers)
        return [batch["image"] for batch in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)
    sampler.set_epoch(1, skip=8)  # resuming after two batches gives the third
    assert torch.equal(batches(0)[0], serial[2])


def test_loss_is_half_the_mean_keypoint_mse() -> None:
    generator = torch.Generator().manual_seed(0)
    predicted = torch.rand(3, 17, 8, 6, generator=generator)
    target = torch.rand(3, 17, 8, 6, generator=generator)
    weights = (torch.rand(3, 17, generator=generator) > 0.3).float()
    per_keypoint = [
        F.mse_loss(
            predicted[:, k] * weights[:, k, None, None], target[:, k] * weights[:, k, None, None]
        )
        for k in range(17)
    ]
    expected = 0.5 * torch.stack(per_keypoint).mean()
    torch.testing.assert_close(joints_mse_loss(predicted, target, weights), expected)


# --- training runs ----------------------------------------------------------------------------


def _tiny_argv(output: Path, coco_dir: Path, *extra: str) -> list[str]:
    return [
        "tiny_res18_128x96",
        "--output-dir",
        str(output),
        "--device",
        "cpu",
        "--set",
        *coco_overrides(coco_dir),
        "data.batch_size=4",
        "data.workers=0",
        "optim.epochs=100",
        "train.eval_interval=100",
        "train.log_interval=1",
        *extra,
    ]


def test_resume_continues_exactly(
    tmp_path: Path, coco_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """4 steps straight == 2 steps, resume, 2 more (mid-epoch stop; full augmentation on)."""
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert train_main(_tiny_argv(straight, coco_dir, "train.max_steps=4")) == 0
    assert train_main(_tiny_argv(halves, coco_dir, "train.max_steps=2")) == 0
    half_state = torch.load(halves / "last.pth", weights_only=True)
    assert (half_state["epoch"], half_state["batch_in_epoch"], half_state["step"]) == (0, 2, 2)
    assert set(half_state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert train_main(["--resume", str(halves / "last.pth"), "--set", "train.max_steps=4"]) == 0

    a = torch.load(straight / "last.pth", weights_only=True)
    b = torch.load(halves / "last.pth", weights_only=True)
    assert (
        (a["epoch"], a["batch_in_epoch"], a["step"])
        == (b["epoch"], b["batch_in_epoch"], b["step"])
        == (1, 1, 4)
    )
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for index, state in a["optimizer"]["state"].items():
        torch.testing.assert_close(
            b["optimizer"]["state"][index]["exp_avg"], state["exp_avg"], rtol=1e-5, atol=1e-8
        )
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 1

    # the half run differs from the straight one after 2 steps: the comparison can fail
    assert not torch.equal(
        half_state["model"]["final_layer.weight"], a["model"]["final_layer.weight"]
    )
    # an output folder holding a run is not overwritten by accident
    capsys.readouterr()
    assert train_main(_tiny_argv(straight, coco_dir, "train.max_steps=1")) == 2
    assert "--resume" in capsys.readouterr().err


def test_overfit_reaches_ap_09_through_train_checkpoint_evaluate(overfit_run: OverfitRun) -> None:
    assert overfit_run.best_ap >= 0.9, overfit_run.evaluations
    checkpoint = torch.load(overfit_run.best, weights_only=True)
    assert checkpoint["extra"]["AP"] == overfit_run.best_ap
    model = load_pose_model(overfit_run.best)
    assert model.arch["name"] == "simplebaseline_res18" and model.input_size == INPUT_SIZE
    metrics = json.loads((overfit_run.output_dir / "eval" / "metrics.json").read_text())
    assert metrics["AP"] == overfit_run.evaluations[-1]["AP"]
    pngs = sorted((overfit_run.output_dir / "vis").glob("epoch_*/*.png"))
    assert pngs and cv2.imread(str(pngs[-1])) is not None
    assert list((overfit_run.output_dir / "tensorboard").glob("events.out.tfevents.*"))
    minutes = overfit_run.seconds / 60
    print(f"overfit: {overfit_run.steps} steps, {minutes:.2f} min, AP {overfit_run.best_ap:.4f}")


def test_trained_checkpoint_finds_the_annotated_keypoints(
    overfit_run: OverfitRun, coco_dir: Path, coco_annotations: Path
) -> None:
    estimator = PoseEstimator(load_pose_model(overfit_run.best), device="cpu", max_persons=50)
    persons = load_coco_persons(coco_annotations, coco_dir)
    errors, box_sizes = [], []
    for image_id in sorted(persons.image_paths):
        instances = [i for i in persons.instances if i.image_id == image_id]
        image = cv2.cvtColor(read_image(persons.image_paths[image_id]), cv2.COLOR_BGR2RGB)
        boxes = np.stack([i.box for i in instances])
        # equal box scores keep the given order (the estimator sorts by score, stably)
        found = estimator(image, boxes=boxes, box_scores=np.ones(len(boxes)))
        by_box = {tuple(p.box.round(3)): p for p in found}
        for instance in instances:
            person = by_box[tuple(instance.box.round(3))]
            labelled = instance.keypoints[:, 2] > 0
            distance = np.linalg.norm(
                person.keypoints[labelled, :2] - instance.keypoints[labelled, :2], axis=1
            )
            errors.extend(distance)
            box_sizes.extend([max(instance.box[2], instance.box[3])] * int(labelled.sum()))
    relative = np.asarray(errors) / np.asarray(box_sizes)
    assert len(relative) == sum(int((i.keypoints[:, 2] > 0).sum()) for i in persons.instances)
    assert np.median(relative) < 0.05
    assert (relative < 0.1).mean() >= 0.9  # PCK@0.1 of the box size


def test_torchrun_two_processes_ddp(tmp_path: Path, coco_dir: Path) -> None:
    """The same command under torchrun: DDP on CPU (gloo), a sampler share per rank, evaluation
    split across ranks and gathered on rank 0, which alone writes files."""
    output = tmp_path / "ddp"
    argv = _tiny_argv(output, coco_dir, "optim.epochs=2", "train.eval_interval=1", "data.workers=1")
    argv[argv.index("data.batch_size=4")] = "data.batch_size=2"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *("-m", "training.train", *argv),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(output / "last.pth", weights_only=True)
    # 12 persons, 2 ranks x batch 2: 3 steps per epoch
    assert (state["epoch"], state["step"]) == (2, 6)
    assert len((output / "metrics.jsonl").read_text().splitlines()) == 2
    results = json.loads((output / "eval" / "results.json").read_text())
    assert {r["image_id"] for r in results} == {785, 40083, 196141, 197388}  # both ranks' images
    assert done.stdout.count("done:") == 1  # only rank 0 reports


def test_attention_fine_tunes_from_the_trained_simplebaseline(
    overfit_run: OverfitRun, tmp_path: Path, coco_dir: Path
) -> None:
    """model.init_from + model.freeze (the fine-tune config's recipe) on the tiny network."""
    output = tmp_path / "finetune"
    trunk = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    argv = [
        *("overfit_coco4", "--output-dir", str(output), "--set", *coco_overrides(coco_dir)),
        *("model.name=attention_res18", f"model.init_from={overfit_run.best}"),
        *(f"model.freeze=[{', '.join(trunk)}]", "optim.epochs=1", "data.repeat=2"),
    ]
    assert train_main(argv) == 0
    start, tuned = load_pose_model(overfit_run.best), load_pose_model(output / "best.pth")
    assert tuned.arch["name"] == "attention_res18"
    start_state, tuned_state = start.state_dict(), tuned.state_dict()
    for key, value in tuned_state.items():
        if key.split(".", 1)[0] in trunk:  # weights and BatchNorm statistics stay fixed
            assert torch.equal(value, start_state[key]), key
    assert not torch.equal(
        tuned_state["deconv_layers.0.weight"], start_state["deconv_layers.0.weight"]
    )
    # two steps from the trained SimpleBaseline, not from scratch: already a working model
    assert torch.load(output / "best.pth", weights_only=True)["extra"]["AP"] > 0.5
