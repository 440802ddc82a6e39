"""Training configuration: plain dataclasses filled from a YAML file and ``--set`` overrides.

A config file holds the sections below (any key may be left out; the defaults are the paper's
SimpleBaseline-R50 256x192 recipe). ``base: other.yaml`` inside a file merges it over that file
(relative to the including file). Every value can be overridden from the command line as
``--set optim.lr=5e-4 data.batch_size=16``; the right-hand side is parsed as YAML, so it is typed
(``5e-4`` a float, ``[1, 2]`` a list, ``null`` None) and checked against the field's type.

The config is passed down explicitly; nothing reads a global.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file or key."""


@dataclass
class ModelConfig:
    #: a name known to ``pose_ros.models.build_pose_model`` (e.g. ``simplebaseline_res50``,
    #: ``rtmpose_s``)
    name: str = "simplebaseline_res50"
    #: network input (H, W); heatmaps are a quarter of it
    input_size: list[int] = field(default_factory=lambda: [256, 192])
    num_deconv_filters: int = 256
    #: backbone weights: a file path or a torchvision weights name (ResNet: ImageNet); for
    #: rtmpose_* a file holding ``backbone.*`` CSPNeXt weights; None = random init
    backbone_weights: str | None = None
    #: a trained SimpleBaseline checkpoint to start an attention variant from (head fine-tune)
    init_from: str | None = None
    #: extra keyword arguments of the attention variants (``crf_iterations``,
    #: ``crf_kernel_size``, ``part_output``)
    attention: dict[str, Any] = field(default_factory=dict)
    #: top-level modules kept fixed (no gradient, BatchNorm statistics frozen), e.g. the trunk
    #: ``[conv1, bn1, layer1, layer2, layer3, layer4]`` when fine-tuning a head
    freeze: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    train_images: str = "data/coco/train2017"
    train_annotations: str = "data/coco/annotations/person_keypoints_train2017.json"
    val_images: str = "data/coco/val2017"
    val_annotations: str = "data/coco/annotations/person_keypoints_val2017.json"
    #: person detections (COCO results JSON) to evaluate on; None evaluates on the GT boxes
    val_detections: str | None = None
    #: per process (per GPU)
    batch_size: int = 32
    workers: int = 4
    #: passes over the training set per epoch; > 1 only makes sense for tiny sets (overfit runs)
    repeat: int = 1
    #: Gaussian sigma in heatmap pixels; None = 2 at 64x48, scaled with the heatmap height
    sigma: float | None = None
    #: SimCC networks: the targets' Gaussian (x, y) in bins; None = mmpose's (4.9, 5.66) at
    #: 256x192, scaled with the input
    simcc_sigma: list[float] | None = None


@dataclass
class AugmentConfig:
    """The reference recipe (Simple Baselines / mmpose top-down COCO) by default; RTMPose's
    stronger one with ``bbox_transform: mmpose`` and the photometric and occlusion fields."""

    #: scale *= clip(randn * f + 1, 1 - f, 1 + f)
    scale_factor: float = 0.35
    #: rotation = clip(randn * f, -2f, 2f) degrees, with probability rotation_prob
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    #: half-body only when more than this many keypoints are labelled
    half_body_min_keypoints: int = 8
    #: how the crop region is drawn: "simplebaseline" (the fields above) or "mmpose" (mmpose's
    #: RandomBBoxTransform: t ~ normal truncated to [-1, 1]; shift t * shift_factor of the
    #: region with probability shift_prob; scale in scale_range as mid + t * half-width; rotation
    #: t * rotation_factor with probability rotation_prob)
    bbox_transform: str = "simplebaseline"
    shift_factor: float = 0.0
    shift_prob: float = 0.0
    scale_range: list[float] = field(default_factory=lambda: [0.65, 1.35])
    #: random HSV gains of mmdet's YOLOXHSVRandomAug (hue, saturation, value deltas; 0 = off)
    hsv_deltas: list[int] = field(default_factory=lambda: [0, 0, 0])
    #: box blur (kernel 3, 5 or 7) and median blur probabilities (albumentations Blur,
    #: MedianBlur)
    blur_prob: float = 0.0
    median_blur_prob: float = 0.0
    #: one rectangle of zeros, each side a random fraction in dropout_size of the crop's, with
    #: this probability (albumentations CoarseDropout)
    dropout_prob: float = 0.0
    dropout_size: list[float] = field(default_factory=lambda: [0.2, 0.4])
    #: from this epoch on, the fields in ``stage2`` replace these (mmpose's pipeline switch
    #: for the last epochs); None: never
    switch_epoch: int | None = None
    stage2: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    #: "adam" or "adamw"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: False: no weight decay on BatchNorm / ScaleNorm weights and on biases (mmpose's
    #: ``norm_decay_mult=0, bias_decay_mult=0``)
    decay_norm_and_bias: bool = True
    epochs: int = 140
    #: "multistep" (lr * gamma at each milestone epoch) or "flat_cosine" (flat, then cosine
    #: from cosine_start_epoch to the end down to lr * min_lr_factor, per iteration)
    schedule: str = "multistep"
    milestones: list[int] = field(default_factory=lambda: [90, 120])
    gamma: float = 0.1
    cosine_start_epoch: int | None = None
    min_lr_factor: float = 0.05
    #: linear warm-up over the first iterations from lr * warmup_start_factor (0 = none)
    warmup_iters: int = 0
    warmup_start_factor: float = 1e-5


@dataclass
class LossConfig:
    """The SimCC loss (mmpose's KLDiscretLoss); heatmap networks use the reference MSE."""

    #: temperature of the predictions' softmax
    simcc_beta: float = 10.0
    #: softmax over the Gaussian targets too, with this temperature
    simcc_label_softmax: bool = True
    simcc_label_beta: float = 10.0


@dataclass
class EvalConfig:
    flip_test: bool = True
    #: "quarter" (Simple Baselines) or "dark"
    decode: str = "quarter"
    oks_nms_threshold: float = 0.9
    keypoint_score_threshold: float = 0.2
    #: detections below this score are dropped (mmpose keeps all boxes of the file: 0.0)
    det_score_threshold: float = 0.0
    #: persons per image handed to the estimator at once (all of them in practice)
    max_persons: int = 1000


@dataclass
class TrainConfig:
    seed: int = 0
    #: "auto" (bf16 where the GPU has it, else fp16; fp32 on CPU), "fp32", "bf16" or "fp16"
    precision: str = "auto"
    #: channels-last memory format on GPU (ignored on CPU)
    channels_last: bool = True
    #: evaluate (and keep best.pth) every this many epochs, and after the last one
    eval_interval: int = 10
    #: stop after this many optimizer steps (None: run all epochs); a checkpoint is written there
    max_steps: int | None = None
    #: stop once an evaluation reaches this AP (None: never); used by the overfit run
    target_ap: float | None = None
    #: validation images drawn with predicted skeletons at each evaluation
    vis_images: int = 4
    #: optimizer steps between loss/throughput logs (each log synchronises the device)
    log_interval: int = 20
    #: exponential moving average of the weights (mmdet's ExpMomentumEMA: momentum
    #: (1 - m) * exp(-(1 + step) / ema_gamma) + m), evaluated and saved as best.pth; None: off
    ema_momentum: float | None = None
    ema_gamma: float = 2000.0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/simplebaseline_res50_256x192"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON and ``torch.load(weights_only=True)`` safe)."""
        return dataclasses.asdict(self)


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    """Build a :class:`Config` from a nested dict, checking keys and value types."""
    return _build(Config, data, source, prefix="")


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or the name of a file in ``training/configs`` (``.yaml`` optional)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / path.name, CONFIG_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    available = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config {str(name)!r} not found (a path, or one of: {available})")


def load_config(name: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (with its ``base`` chain) and apply ``key.sub=value`` overrides."""
    data = _read_yaml_chain(resolve_config_path(name), seen=())
    for item in overrides or []:
        apply_override(data, item)
    return config_from_dict(data, source=str(name))


def apply_override(data: dict[str, Any], item: str) -> None:
    """In place: ``"optim.lr=5e-4"`` sets ``data["optim"]["lr"] = 5e-4`` (value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({error})") from None
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _read_yaml_chain(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"config {path}: cannot read ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping")
    base = data.pop("base", None)
    if base is None:
        return data
    merged = _read_yaml_chain(path.parent / base, (*seen, path))
    _deep_merge(merged, data)
    return merged


def _deep_merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {[prefix + k for k in unknown]}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, source, key + ".")
        else:
            kwargs[name] = _check_value(value, hint, source, key)
    return cls(**kwargs)


def _check_value(value: Any, hint: Any, source: str, key: str) -> Any:
    """``value`` if it fits the type hint (ints accepted for floats), else a ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], source, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_check_value(v, args[0], source, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        # PyYAML follows YAML 1.1, which reads "5e-3" (no dot) as a string.
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r}")
    return value
