"""What a network expects of its input crop (channel order, normalisation, size) and how its
heatmaps are decoded (the rule of the weights' authors).

The record travels with the weights (in our checkpoints and in the registry of published files),
so the pipeline never guesses whether a model was trained on RGB or BGR pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pose_ros.images import check_color_order

__all__ = ["DECODE_RULES", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]

#: Heatmap post-processing rules (see ``pose_ros.codec.decode_heatmaps``), by the weights' authors.
DECODE_RULES: tuple[str, ...] = ("mmpose", "microsoft")

#: ImageNet statistics of pixel/255, in R, G, B order.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Input convention of a pose network.

    Attributes:
        color_order: "RGB" or "BGR", the channel order the weights expect.
        mean: per input channel, **in that channel order**, subtracted from pixel/255.
        std: per input channel, in that channel order, dividing (pixel/255 - mean).
        input_size: (H, W) of the crop fed to the network, positive (the networks built here
            further need multiples of 32, which ``build_pose_model`` checks).
        decode_rule: whose heatmap post-processing the weights were evaluated with, "mmpose" (the
            quarter offset per axis) or "microsoft" (only when the peak is inside on both axes);
            ``pose_ros.codec.decode_heatmaps`` applies it. Our own models use "mmpose".

    Note that the microsoft SimpleBaseline weights expect BGR input normalised with the ImageNet
    numbers applied in R, G, B order to the B, G, R channels (their training quirk), which this
    record can state exactly: ``Preprocessing("BGR", IMAGENET_MEAN, IMAGENET_STD)``.
    """

    color_order: str = "RGB"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int] = (256, 192)
    decode_rule: str = "mmpose"

    def __post_init__(self) -> None:
        check_color_order(self.color_order, "Preprocessing.color_order")
        if self.decode_rule not in DECODE_RULES:
            raise ValueError(
                f"Preprocessing.decode_rule must be one of {DECODE_RULES}, got {self.decode_rule!r}"
            )
        # Normalise list inputs (e.g. from JSON) to tuples so the record stays hashable.
        object.__setattr__(self, "mean", _three_floats("mean", self.mean))
        object.__setattr__(self, "std", _three_floats("std", self.std))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Preprocessing.std must be positive, got {self.std}")
        object.__setattr__(self, "input_size", _input_size(self.input_size))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON and ``torch.load(weights_only=True)`` safe)."""
        return {
            "color_order": self.color_order,
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": list(self.input_size),
            "decode_rule": self.decode_rule,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown or missing keys are a ValueError.

        ``decode_rule`` may be absent (records written before it existed): "mmpose", the rule our
        own models were always decoded with per axis.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"Preprocessing.from_dict needs a mapping, got {type(data).__name__}")
        expected = {"color_order", "mean", "std", "input_size"}
        unknown = set(data) - expected
        missing = expected - set(data)
        expected.add("decode_rule")
        unknown.discard("decode_rule")
        if unknown or missing:
            raise ValueError(
                f"Preprocessing.from_dict: keys must be {sorted(expected)}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        return cls(
            color_order=data["color_order"],
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            input_size=tuple(data["input_size"]),
            decode_rule=data.get("decode_rule", "mmpose"),
        )

    def normalize(self, images: torch.Tensor, *, input_color_order: str = "RGB") -> torch.Tensor:
        """Turn pixel crops into network input.

        Args:
            images: (N, 3, H, W) or (3, H, W) float tensor of pixel values in [0, 255], channels
                in ``input_color_order``.
            input_color_order: "RGB" or "BGR", the order of ``images``' channels.

        Returns:
            Same shape, channels reordered to :attr:`color_order`, then (x/255 - mean) / std.
        """
        check_color_order(input_color_order, "input_color_order")
        if images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise ValueError(
                f"expected (N, 3, H, W) or (3, H, W) images, got {tuple(images.shape)}"
            )
        if input_color_order != self.color_order:
            images = images.flip(-3)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(3, 1, 1)
        return (images / 255.0 - mean) / std


def _three_floats(field: str, value: Any) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"Preprocessing.{field} must be 3 numbers, got {value!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"Preprocessing.{field} must be 3 finite numbers, got {value!r}")
    return values  # type: ignore[return-value]


def _input_size(value: Any) -> tuple[int, int]:
    try:
        size = tuple(value)
    except TypeError:
        raise ValueError(f"input_size must be (H, W), got {value!r}") from None
    if (
        len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        or not all(v > 0 for v in size)
    ):
        raise ValueError(f"input_size must be (H, W), two positive integers, got {value!r}")
    return size  # type: ignore[return-value]
