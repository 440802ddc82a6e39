"""Train a pose network on COCO person keypoints: one command for CPU, one GPU or many.

::

    python -m training.train simplebaseline_res50_256x192 --set data.batch_size=32
    torchrun --nproc_per_node 8 -m training.train simplebaseline_res50_256x192
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 -m training.train ...
    python -m training.train --resume runs/simplebaseline_res50_256x192/last.pth

Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel, each rank
reads its share of every epoch (DistributedSampler), losses and throughput are reduced across
ranks and only rank 0 writes files. On GPU: mixed precision (bf16, or fp16 with a GradScaler)
and channels-last; on CPU plain fp32.

Heatmap networks train on Gaussian heatmaps with the reference MSE; SimCC networks (RTMPose) on
SimCC targets with mmpose's KL divergence (``loss``), and with ``train.ema_momentum`` the
evaluated and saved model is the weights' moving average (:mod:`training.optim`).

Files in ``output_dir``: ``config.yaml``; ``last.pth`` (the full training state after every epoch,
for ``--resume``); ``best.pth`` (the best-AP model in the pose_ros checkpoint format, which
``pose_ros.models.load_pose_model``, the node and the CLI load); ``eval/`` (results and metrics
of the latest evaluation); ``metrics.jsonl`` (one line per evaluation); ``vis/`` (validation
images with predicted skeletons); ``tensorboard/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pose_ros.fileio import atomic_write
from pose_ros.models import (
    AttentionPoseNet,
    CheckpointError,
    SimpleBaseline,
    build_pose_model,
    init_from_simplebaseline,
    load_pose_model,
    save_checkpoint,
)
from pose_ros.models.builder import RTMPOSE_NAMES
from pose_ros.models.checkpoints import load_cspnext_backbone
from pose_ros.models.rtmpose import RTMPose
from pose_ros.simcc import DEFAULT_SIMCC_SIGMA, SIMCC_SPLIT_RATIO
from pose_ros.types import OUTPUT_HEATMAPS, OUTPUT_SIMCC

from .augment import default_sigma
from .config import Config, ConfigError, config_from_dict, load_config
from .dataset import (
    CocoKeypointTrainSet,
    CocoPersons,
    DatasetError,
    EpochIndexSampler,
    load_coco_persons,
    load_detections,
)
from .evaluate import evaluate_model, format_metrics
from .loss import joints_mse_loss, kl_discrete_loss
from .optim import ExpMomentumEMA, build_optimizer, build_scheduler
from .state import (
    TRAINING_STATE_FORMAT,
    TRAINING_STATE_VERSION,
    TrainingStateError,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
)


class TrainingError(Exception):
    """A run that cannot start as asked (output folder in use, precision without CUDA, ...)."""


@dataclass
class Distributed:
    """This process's place in the run; world_size 1 without torchrun."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass
class TrainResult:
    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_ap: float
    steps: int
    seconds: float


def setup_distributed(device: str) -> Distributed:
    """Read torchrun's environment; start the process group when WORLD_SIZE > 1.

    NCCL on CUDA (one GPU per process: ``cuda:LOCAL_RANK``), gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"device {device!r} asked for, but CUDA is not available")
        if world_size > 1 or resolved.index is None:
            resolved = torch.device("cuda", local_rank if world_size > 1 else 0)
        torch.cuda.set_device(resolved)
    if world_size > 1:
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return Distributed(rank, world_size, local_rank, resolved)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. "auto": bf16 where the GPU has it, else fp16."""
    if name not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision must be auto, fp32, bf16 or fp16, got {name!r}")
    if device.type != "cuda":
        if name in ("bf16", "fp16"):
            raise TrainingError(f"train.precision={name} needs CUDA; use fp32 (or auto) on the CPU")
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def build_model(config: Config) -> nn.Module:
    """The network of ``config.model``: backbone weights if given, or a SimpleBaseline start."""
    model_cfg = config.model
    preprocessing = None
    start = None
    if model_cfg.init_from:
        start = load_pose_model(model_cfg.init_from, map_location="cpu")
        # Keep the colour order and normalisation the starting weights were trained with.
        preprocessing = start.preprocessing
        if tuple(preprocessing.input_size) != tuple(model_cfg.input_size):
            raise ConfigError(
                f"model.init_from {model_cfg.init_from} was trained at {preprocessing.input_size}, "
                f"model.input_size is {model_cfg.input_size}"
            )
    simcc = model_cfg.name in RTMPOSE_NAMES
    try:
        model = build_pose_model(
            model_cfg.name,
            input_size=None if preprocessing else tuple(model_cfg.input_size),
            num_deconv_filters=model_cfg.num_deconv_filters,
            backbone_weights=None if simcc else model_cfg.backbone_weights,
            preprocessing=preprocessing,
            **model_cfg.attention,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model: {error}") from None
    if simcc and model_cfg.backbone_weights:
        # A file or registry name (cspnext_s_udp_aic_coco_256x192...): the verified loader.
        load_cspnext_backbone(model, model_cfg.backbone_weights)
    if start is not None and isinstance(model, RTMPose):
        # Fine-tuning: the same RTMPose (a published file or a checkpoint of ours) as the start.
        if not isinstance(start, RTMPose) or start.arch["name"] != model.arch["name"]:
            raise ConfigError(
                f"model.init_from {model_cfg.init_from} holds a {start.arch['name']}, not a "
                f"{model.arch['name']}"
            )
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError as error:
            raise ConfigError(f"model.init_from {model_cfg.init_from}: {error}") from None
    elif start is not None:
        if not isinstance(model, AttentionPoseNet) or not isinstance(start, SimpleBaseline):
            raise ConfigError(
                f"model.init_from starts an attention model from a SimpleBaseline; got "
                f"{start.arch['name']} for {model.arch['name']}"
            )
        try:
            init_from_simplebaseline(model, start.state_dict())
        except ValueError as error:
            raise ConfigError(f"model.init_from {model_cfg.init_from}: {error}") from None
    for name in model_cfg.freeze:
        module = getattr(model, name, None)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model.freeze: {model.arch['name']} has no module {name!r}")
        module.requires_grad_(False)
    return model


def set_train_mode(network: nn.Module, model: nn.Module, frozen: list[str]) -> None:
    """Training mode (``network`` may be the DDP wrapper of ``model``), except frozen modules,
    whose BatchNorm statistics stay fixed."""
    network.train()
    for name in frozen:
        getattr(model, name).eval()


def build_train_loader(
    dataset: CocoKeypointTrainSet, config: Config, dist: Distributed
) -> tuple[DataLoader, EpochIndexSampler]:
    """Workers decode and crop (uint8), pinned memory for fast copies, persistent workers."""
    sampler = EpochIndexSampler(
        dataset, num_replicas=dist.world_size, rank=dist.rank, seed=config.train.seed
    )
    workers = config.data.workers
    loader = DataLoader(
        dataset,
        batch_size=config.data.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=dist.device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
        drop_last=False,
    )
    return loader, sampler


def _worker_init(_: int) -> None:
    # One OpenCV thread per worker: the workers already use the cores.
    cv2.setNumThreads(1)


def _all_reduce_sum(values: list[float], dist: Distributed) -> list[float]:
    if not dist.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def _broadcast_flag(flag: bool, dist: Distributed) -> bool:
    if not dist.enabled:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=dist.device)
    torch.distributed.broadcast(tensor, src=0)
    return bool(tensor.item())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    config: Config,
    *,
    resume: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
) -> TrainResult:
    """Run (or continue) training as configured; returns where the checkpoints are.

    Raises:
        ConfigError, DatasetError, CheckpointError, TrainingStateError, TrainingError: with a
        message naming the file or setting.
    """
    dist = setup_distributed(device)
    try:
        return _train(config, dist, resume, overwrite)
    finally:
        if dist.enabled:
            torch.distributed.destroy_process_group()


def _train(
    config: Config, dist: Distributed, resume: str | Path | None, overwrite: bool
) -> TrainResult:
    started = time.perf_counter()
    output_dir = Path(config.output_dir)
    last_path, best_path = output_dir / "last.pth", output_dir / "best.pth"
    if resume is None and last_path.exists() and not overwrite:
        raise TrainingError(
            f"{output_dir} already holds a run ({last_path}): continue it with --resume "
            f"{last_path}, start over with --overwrite, or set output_dir"
        )
    precision = resolve_precision(config.train.precision, dist.device)
    _seed_everything(config.train.seed + dist.rank)

    train_persons = load_coco_persons(config.data.train_annotations, config.data.train_images)
    val_persons = load_coco_persons(config.data.val_annotations, config.data.val_images)
    detections = None
    if config.data.val_detections:
        detections = load_detections(
            config.data.val_detections, val_persons, score_threshold=config.eval.det_score_threshold
        )

    model = build_model(config)
    model.to(dist.device)
    channels_last = dist.device.type == "cuda" and config.train.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    preprocessing = model.preprocessing
    output_kind = getattr(model, "output_kind", OUTPUT_HEATMAPS)
    heatmap_size = tuple(model.heatmap_size)
    sigma = config.data.sigma if config.data.sigma is not None else default_sigma(heatmap_size)
    simcc_sigma = None
    if output_kind == OUTPUT_SIMCC:
        simcc_sigma = simcc_target_sigma(config, tuple(model.input_size))
    dataset = CocoKeypointTrainSet(
        train_persons,
        input_size=tuple(model.input_size),
        heatmap_size=heatmap_size,
        sigma=sigma,
        augment=config.augment,
        color_order=preprocessing.color_order,
        seed=config.train.seed,
        repeat=config.data.repeat,
        simcc_sigma=simcc_sigma,
        simcc_split_ratio=getattr(model, "simcc_split_ratio", SIMCC_SPLIT_RATIO),
    )
    loader, sampler = build_train_loader(dataset, config, dist)
    batches_per_epoch = math.ceil(sampler.num_samples / config.data.batch_size)

    optimizer = build_optimizer(model, config.optim)
    scheduler, per_iteration = build_scheduler(optimizer, config.optim, batches_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
    ema = None
    if config.train.ema_momentum is not None:
        ema = ExpMomentumEMA(model, config.train.ema_momentum, config.train.ema_gamma)

    epoch, batch_in_epoch, step, best_ap = 0, 0, 0, -1.0
    if resume is not None:
        state = load_training_state(resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        if ema is not None:
            if "ema" not in state:
                raise TrainingStateError(f"{resume} holds no weight average (train.ema_momentum)")
            ema.load_state_dict(state["ema"])
        epoch, batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        step, best_ap = state["step"], state["best_ap"]
        if dist.is_main:
            print(f"resumed from {resume}: epoch {epoch}, batch {batch_in_epoch}, step {step}")

    network: nn.Module = model
    if dist.enabled:
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        network = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    writer = None
    if dist.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume is None:  # --overwrite: nothing of the old run may pass for this one's
            for stale in (best_path, output_dir / "metrics.jsonl"):
                stale.unlink(missing_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output_dir / "tensorboard"))
        print(
            f"training {model.arch['name']} {model.input_size[0]}x{model.input_size[1]} "
            f"({preprocessing.color_order}, {output_kind}) on {dist.device} x{dist.world_size}, "
            f"precision {precision or 'fp32'}, {len(train_persons.instances)} persons, "
            f"{batches_per_epoch} batches/epoch, output {output_dir}"
        )

    saved_step = -1

    def save_state() -> None:
        nonlocal saved_step
        if not dist.is_main or saved_step == step:
            return
        saved_step = step
        with atomic_write(last_path) as stream:
            torch.save(
                {
                    "format": TRAINING_STATE_FORMAT,
                    "version": TRAINING_STATE_VERSION,
                    "model": model.state_dict(),
                    "arch": dict(model.arch),
                    "preprocessing": preprocessing.to_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "step": step,
                    "best_ap": best_ap,
                    "rng": capture_rng_state(),
                    "config": config.to_dict(),
                    **({"ema": ema.state_dict()} if ema is not None else {}),
                },
                stream,
            )

    max_steps = config.train.max_steps
    stop = max_steps is not None and step >= max_steps
    log_count, log_samples, log_time = 0, 0, time.perf_counter()
    frozen = config.model.freeze
    while not stop and epoch < config.optim.epochs:
        sampler.set_epoch(epoch, skip=batch_in_epoch * config.data.batch_size)
        set_train_mode(network, model, frozen)
        progress = tqdm(
            loader,
            desc=f"epoch {epoch}",
            initial=batch_in_epoch,
            total=batches_per_epoch,
            disable=not dist.is_main,
            dynamic_ncols=True,
            mininterval=1.0,
            leave=False,
        )
        running = torch.zeros((), device=dist.device)
        for batch in progress:
            images = batch["image"].to(dist.device, non_blocking=True)
            weights = batch["weights"].to(dist.device, non_blocking=True)
            # The same normalisation as inference (crops are already in the weights' order).
            inputs = preprocessing.normalize(
                images.float(), input_color_order=preprocessing.color_order
            )
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                dist.device.type, dtype=precision or torch.float32, enabled=precision is not None
            ):
                output = network(inputs)
            loss = training_loss(output, batch, weights, output_kind, config, dist.device)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if per_iteration:
                scheduler.step()
            if ema is not None:
                ema.update(model)
            step += 1
            batch_in_epoch += 1
            running += loss.detach()
            log_count += 1
            log_samples += images.shape[0]
            if step % config.train.log_interval == 0 or batch_in_epoch == batches_per_epoch:
                log_loss_sum, samples = _all_reduce_sum([running.item(), log_samples], dist)
                elapsed = time.perf_counter() - log_time
                mean_loss = log_loss_sum / (log_count * dist.world_size)
                rate = samples / max(elapsed, 1e-9)
                if writer is not None:
                    writer.add_scalar("train/loss", mean_loss, step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                    writer.add_scalar("train/samples_per_s", rate, step)
                progress.set_postfix(loss=f"{mean_loss:.3e}", samples_s=f"{rate:.1f}")
                running.zero_()
                log_count, log_samples, log_time = 0, 0, time.perf_counter()
            if max_steps is not None and step >= max_steps:
                stop = True
                break
        progress.close()
        if batch_in_epoch < batches_per_epoch:  # stopped inside the epoch
            break
        if not per_iteration:
            scheduler.step()
        epoch += 1
        batch_in_epoch = 0
        if epoch % config.train.eval_interval == 0 or epoch == config.optim.epochs:
            evaluated = ema.module if ema is not None else model
            ap = _evaluate(evaluated, val_persons, detections, config, dist, epoch, step, writer)
            if dist.is_main and ap > best_ap:
                best_ap = ap
                save_checkpoint(
                    evaluated,
                    best_path,
                    extra={"epoch": epoch, "step": step, "AP": ap, "config": config.to_dict()},
                )
            target_ap = config.train.target_ap
            stop = stop or _broadcast_flag(target_ap is not None and ap >= target_ap, dist)
            set_train_mode(network, model, frozen)
        save_state()

    save_state()  # a stop inside an epoch (max_steps); a no-op after a full epoch
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - started
    if dist.is_main:
        print(f"done: {step} steps, {epoch} epochs, best AP {best_ap:.4f}, {seconds:.1f} s")
    return TrainResult(
        output_dir, last_path, best_path if best_path.exists() else None, best_ap, step, seconds
    )


def simcc_target_sigma(config: Config, input_size: tuple[int, int]) -> tuple[float, float]:
    """The SimCC targets' (x, y) sigma in bins: ``data.simcc_sigma``, else mmpose's (4.9,
    5.66) at 256x192 scaled with the input."""
    if config.data.simcc_sigma is not None:
        if len(config.data.simcc_sigma) != 2:
            raise ConfigError(f"data.simcc_sigma must be [x, y], got {config.data.simcc_sigma}")
        return float(config.data.simcc_sigma[0]), float(config.data.simcc_sigma[1])
    height, width = input_size
    return DEFAULT_SIMCC_SIGMA[0] * width / 192, DEFAULT_SIMCC_SIGMA[1] * height / 256


def training_loss(
    output: Any,
    batch: dict[str, torch.Tensor],
    weights: torch.Tensor,
    output_kind: str,
    config: Config,
    device: torch.device,
) -> torch.Tensor:
    """The loss of the network's output kind: heatmap MSE or SimCC KL divergence."""
    if output_kind == OUTPUT_SIMCC:
        targets = tuple(batch[k].to(device, non_blocking=True) for k in ("simcc_x", "simcc_y"))
        return kl_discrete_loss(
            tuple(output),
            targets,
            weights,
            beta=config.loss.simcc_beta,
            label_softmax=config.loss.simcc_label_softmax,
            label_beta=config.loss.simcc_label_beta,
        )
    return joints_mse_loss(output, batch["heatmaps"].to(device, non_blocking=True), weights)


def _evaluate(
    model: nn.Module,
    val_persons: CocoPersons,
    detections: dict[int, tuple[np.ndarray, np.ndarray]] | None,
    config: Config,
    dist: Distributed,
    epoch: int,
    step: int,
    writer: Any,
) -> float:
    """Evaluate on every rank's share of the images; AP (rank 0's value broadcast to all)."""
    output_dir = Path(config.output_dir)
    metrics = evaluate_model(
        model,
        val_persons,
        config.eval,
        output_dir / "eval",
        detections=detections,
        device=dist.device,
        fp16=False,  # the training weights stay fp32; autocast is not used for evaluation
        rank=dist.rank,
        world_size=dist.world_size,
        vis_count=config.train.vis_images,
        vis_dir=output_dir / "vis" / f"epoch_{epoch:03d}",
        verbose=False,
    )
    ap = metrics["AP"] if metrics is not None else 0.0
    if dist.is_main and metrics is not None:
        print(f"epoch {epoch} step {step}: {format_metrics(metrics)}", flush=True)
        with (output_dir / "metrics.jsonl").open("a") as stream:
            stream.write(json.dumps({"epoch": epoch, "step": step, **metrics}) + "\n")
        if writer is not None:
            for name, value in metrics.items():
                writer.add_scalar(f"val/{name}", value, step)
    if dist.enabled:
        tensor = torch.tensor([ap], dtype=torch.float64, device=dist.device)
        torch.distributed.broadcast(tensor, src=0)
        ap = float(tensor.item())
    return ap


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pose-ros-train",
        description="Train a pose network on COCO keypoints (CPU, GPU, or torchrun for many GPUs).",
    )
    parser.add_argument(
        "config",
        nargs="?",
        help="YAML file or a name in training/configs (optional with --resume: the saved config)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --set optim.lr=5e-4 data.batch_size=16",
    )
    parser.add_argument("--resume", help="continue from a last.pth training state")
    parser.add_argument("--output-dir", help="same as --set output_dir=DIR")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--overwrite", action="store_true", help="start over in an output folder that holds a run"
    )
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    """The config of the command line: a file, or the resume file's config, plus overrides."""
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.config:
        return load_config(args.config, overrides)
    if not args.resume:
        raise ConfigError("give a config (file or name in training/configs), or --resume")
    saved = load_training_state(args.resume)["config"]
    from .config import apply_override

    for item in overrides:
        apply_override(saved, item)
    return config_from_dict(saved, source=f"{args.resume} (saved config)")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; bad files or settings: one message line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
        train(config, resume=args.resume, device=args.device, overwrite=args.overwrite)
    except (
        ConfigError,
        DatasetError,
        CheckpointError,
        TrainingStateError,
        TrainingError,
    ) as error:
        print(f"pose-ros-train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
