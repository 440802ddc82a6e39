"""Types that several layers share, without torch: the persons the pipeline finds, the frames and
boxes it is given, its stage timings, and what it needs of a pose network.

Everything below the pipeline (engines, runners) and above it (stream core, node, CLI, messages,
markers, drawing) imports these from here, so that no two modules have to import each other and
the ROS side can be read without loading PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from pose_ros.models.preprocessing import Preprocessing

#: Prefix of a model name that asks for untrained weights (tests, demos without weights).
RANDOM_WEIGHTS_PREFIX: Final[str] = "random:"
#: Smallest image side (pixels) the pipeline accepts; smaller frames are refused as bad input.
MIN_IMAGE_SIDE: Final[int] = 2

#: What a pose network's ``__call__`` returns, by its ``output_kind`` attribute:
#: ``heatmaps`` (N, K, h, w) Gaussian heatmaps (SimpleBaseline and the attention heads).
OUTPUT_HEATMAPS: Final[str] = "heatmaps"
#: ``simcc`` a pair (simcc_x (N, K, W * r), simcc_y (N, K, H * r)) of 1-D score vectors per
#: keypoint, r bins per input pixel (RTMPose; ``pose_ros.simcc``).
OUTPUT_SIMCC: Final[str] = "simcc"
#: ``keypoints`` (N, K, 3) ``x, y, score`` already decoded, x and y in pixels of the input crop
#: (graphs that decode inside, e.g. the models of a Triton repository, :mod:`pose_ros.triton`).
OUTPUT_KEYPOINTS: Final[str] = "keypoints"


class PoseNetwork(Protocol):
    """What the pipeline needs of a network: a PyTorch :class:`~pose_ros.models.PoseNet`, or a
    runner of an exported model (``pose_ros.runtime``) with the same attributes.

    ``output_kind`` (optional, default :data:`OUTPUT_HEATMAPS`) says what ``__call__`` returns:
    a heatmap tensor, or for :data:`OUTPUT_SIMCC` the pair (simcc_x, simcc_y) (with the
    network's ``simcc_split_ratio``); the pipeline decodes each kind with its codec.
    ``heatmap_size`` is the (h, w) of the output grid for heatmaps, the SimCC vectors' lengths
    (y, x) for SimCC.
    """

    preprocessing: Preprocessing
    num_keypoints: int

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def heatmap_size(self) -> tuple[int, int]: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]: ...


@dataclass(frozen=True)
class Person:
    """One person found in an image.

    Attributes:
        box: (4,) float32 ``x_min, y_min, width, height`` in source-image pixels.
        box_score: detector confidence 0..1 (1.0 for given boxes without scores; for a box carried
            over from the previous frame's keypoints, the score of the track it came from).
        score: ``box_score`` × the mean score of the keypoints above the keypoint threshold (0.2),
            the reference's rescoring; 0 when no keypoint passes.
        keypoints: (17, 3) float32 ``x, y, score``: pixels of the source image (integer values at
            pixel centres, inside the image) and confidence clipped to 0..1, COCO order. The
            scores are always the network's; only ``x, y`` may be smoothed over time.
        track_id: identity across frames (:mod:`pose_ros.tracking`), -1 when not tracked or not
            yet confirmed.
        positions: (17, 3) float32 metres in the camera's optical frame (x right, y down,
            z forward), NaN rows where no depth reading exists; None without depth.
        center: (3,) float32 metres, the person's 3D centre (median of the torso keypoints'
            positions); None without depth or without a torso position.
    """

    box: np.ndarray
    box_score: float
    score: float
    keypoints: np.ndarray
    track_id: int = -1
    positions: np.ndarray | None = None
    center: np.ndarray | None = None


@dataclass(frozen=True)
class FrameBoxes:
    """One frame and the person boxes to estimate in it (an input of
    :meth:`pose_ros.pipeline.PoseEstimator.estimate_batch`).

    Attributes:
        image: (H, W, 3) uint8 in ``color_order``.
        boxes: (N, 4) ``x_min, y_min, width, height`` pixels.
        box_scores: (N,) scores of the boxes.
        color_order: "RGB" or "BGR".
    """

    image: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    color_order: str = "RGB"


@dataclass
class StageTimings:
    """Milliseconds spent in each stage of the last call."""

    detect_ms: float = 0.0
    crop_ms: float = 0.0
    network_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    persons: int = 0
    extra: dict[str, float] = field(default_factory=dict)
