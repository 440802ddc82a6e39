"""Pose networks (SimpleBaseline, multi-context attention, RTMPose) and their checkpoints.

Build by name with :func:`build_pose_model`, load weights with :func:`load_pose_model` (our
checkpoints, published microsoft / mmpose files, or a registry name), save with
:func:`save_checkpoint`. Every model takes (N, 3, H, W) normalised crops (see
``model.preprocessing``) and returns what its ``output_kind`` says: (N, K, H/4, W/4) heatmaps,
or for RTMPose the SimCC pair (N, K, W * 2), (N, K, H * 2). The RTMDet person detector's network
is :mod:`pose_ros.models.rtmdet`.
"""

from pose_ros.models.attention import (
    CRFAttention,
    HolisticAttention,
    PartAttention,
    SoftmaxAttention,
    crf_mean_field,
    spatial_softmax_map,
)
from pose_ros.models.builder import (
    MODEL_NAMES,
    POSE_MODEL_NAMES,
    RTMPOSE_NAMES,
    build_pose_model,
    parse_model_name,
)
from pose_ros.models.checkpoints import load_pose_model, save_checkpoint
from pose_ros.models.errors import CheckpointError
from pose_ros.models.posenet import (
    AttentionPoseNet,
    PoseNet,
    SimpleBaseline,
    init_from_simplebaseline,
)
from pose_ros.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from pose_ros.models.registry import (
    PUBLISHED_CHECKPOINTS,
    PublishedCheckpoint,
    checkpoint_cache_dir,
    fetch_published_checkpoint,
)
from pose_ros.models.rtmpose import RTMPose

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_NAMES",
    "POSE_MODEL_NAMES",
    "PUBLISHED_CHECKPOINTS",
    "RTMPOSE_NAMES",
    "AttentionPoseNet",
    "CRFAttention",
    "CheckpointError",
    "HolisticAttention",
    "PartAttention",
    "PoseNet",
    "Preprocessing",
    "PublishedCheckpoint",
    "RTMPose",
    "SimpleBaseline",
    "SoftmaxAttention",
    "build_pose_model",
    "checkpoint_cache_dir",
    "crf_mean_field",
    "fetch_published_checkpoint",
    "init_from_simplebaseline",
    "load_pose_model",
    "parse_model_name",
    "save_checkpoint",
    "spatial_softmax_map",
]
