"""Building the inference pipeline from names: a checkpoint, a published-weights name or an exported
file for the pose network, a detector backend, an engine and a device. This sits above both the
pipeline (which runs networks it is given) and the engines (which make runnable networks), so
neither has to import the other.

    estimator = estimator_from_names("mmpose_res50_coco_256x192", detector="ssdlite320_...")
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch

from pose_ros import engines, triton
from pose_ros.detection import RTMDET_DETECTORS, TORCHVISION_DETECTORS
from pose_ros.models import build_pose_model, load_pose_model
from pose_ros.pipeline import PoseEstimator, resolve_device
from pose_ros.types import RANDOM_WEIGHTS_PREFIX, PoseNetwork

__all__ = ["TRITON_ENGINE", "estimator_from_names"]

#: The pose-network engine that is a Triton Inference Server (:mod:`pose_ros.triton`).
TRITON_ENGINE = "triton"


def estimator_from_names(
    model: str,
    *,
    detector: str = "fasterrcnn_mobilenet_v3_large_fpn",
    detector_weights: str | None = "DEFAULT",
    device: str | torch.device = "auto",
    fp16: bool | None = None,
    allow_random_weights: bool = False,
    score_threshold: float = 0.5,
    max_persons: int = 20,
    flip_test: bool = False,
    decode: str = "quarter",
    keypoint_score_threshold: float = 0.2,
    engine: str = "auto",
    detector_engine: str = "auto",
    cpu_threads: int = 0,
    cache_dir: str | None = None,
    yolo_layout: str = "auto",
    triton_url: str = triton.DEFAULT_URL,
    triton_model: str = triton.DEFAULT_MODEL_NAME,
    triton_timeout_ms: int = triton.DEFAULT_TIMEOUT_MS,
) -> PoseEstimator:
    """Build from names: ``model`` is a checkpoint path, a published-weights registry name,
    an exported ``.onnx`` / ``.engine`` file, or ``"random:<architecture>"`` (untrained
    weights: only with ``allow_random_weights``). A torchvision or RTMDet ``detector`` without
    ``detector_weights`` (None or "") has random weights too, under the same guard.

    ``engine`` (:data:`pose_ros.engines.POSE_ENGINES`) and ``detector_engine``
    (:data:`pose_ros.engines.DETECTOR_ENGINES`) choose what runs the networks: ``auto`` is
    ONNX Runtime on the CPU and PyTorch on CUDA; checkpoints are exported on first use into
    the exports cache (``cache_dir``, default :func:`pose_ros.engines.exports_cache_dir`).
    ``cpu_threads`` sets the threads of PyTorch (process-wide) and of ONNX Runtime; 0 = all
    cores for the engine of the pose network, and one thread for PyTorch's light share when
    that engine is not PyTorch.

    ``engine`` ``triton``: the pose network is model ``triton_model`` of the Triton server at
    ``triton_url`` (a repository of ``pose-ros-export --triton-repository``; ``model`` is not
    loaded then), each request waiting at most ``triton_timeout_ms``; the detector stays local.

    Raises:
        pose_ros.models.CheckpointError: missing/corrupt weights (the message says how to get
            them); pose_ros.detection.DetectorError: detector weights;
            pose_ros.runtime.RuntimeBackendError: an engine that cannot run here;
            ValueError: bad values.
    """
    resolved = resolve_device(device)
    threads = engines.apply_cpu_threads(cpu_threads)
    random_parts = []
    remote = engine == TRITON_ENGINE
    if model.startswith(RANDOM_WEIGHTS_PREFIX) and not remote:
        random_parts.append("pose network")
    if detector in TORCHVISION_DETECTORS + RTMDET_DETECTORS and not detector_weights:
        random_parts.append("detector")
    if random_parts and not allow_random_weights:
        what = (
            f"model {model!r}"
            if random_parts[0] == "pose network"
            else f"detector {detector!r} without weights"
        )
        raise ValueError(
            f"{what} means untrained random weights, whose "
            f"{'keypoints' if what.startswith('model') else 'boxes'} are meaningless; "
            "pass allow_random_weights=True to use it anyway (tests only)"
        )
    if remote:
        # The server checks and serves the network: nothing of it is loaded here.
        network: PoseNetwork = triton.TritonPoseRunner(
            triton_url, triton_model, timeout_ms=triton_timeout_ms
        )
    elif engines.is_exported_model(model):
        network = engines.load_exported_network(
            model, engine=engine, device=resolved, threads=threads, cache_dir=cache_dir
        )
    else:
        if "pose network" in random_parts:
            module = build_pose_model(model[len(RANDOM_WEIGHTS_PREFIX) :])
            # Untrained weights differ on every start: their exports would only fill the
            # cache, so they go to a folder of this process's own, removed at exit.
            cache_dir = cache_dir or _scratch_exports_dir()
        else:
            module = load_pose_model(model, map_location="cpu")
        use_fp16 = resolved.type == "cuda" if fp16 is None else bool(fp16)
        network = engines.build_pose_network(
            module,
            engine=engine,
            device=resolved,
            fp16=use_fp16,
            threads=threads,
            cache_dir=cache_dir,
        )
    person_detector = engines.build_person_detector(
        detector,
        weights=detector_weights or None,
        device=resolved,
        engine=detector_engine,
        threads=threads,
        score_threshold=score_threshold,
        max_persons=max_persons,
        cache_dir=cache_dir or (_scratch_exports_dir() if "detector" in random_parts else None),
        half=resolved.type == "cuda" if fp16 is None else bool(fp16),
        yolo_layout=yolo_layout,
    )
    estimator = PoseEstimator(
        network,
        person_detector,
        device=resolved,
        fp16=fp16,
        flip_test=flip_test,
        decode=decode,
        keypoint_score_threshold=keypoint_score_threshold,
        max_persons=max_persons,
        copy_model=False,  # loaded here: nobody else holds it
    )
    estimator.random_weight_parts = tuple(random_parts)
    if resolved.type == "cpu" and cpu_threads == 0:
        engines.share_cpu_threads(estimator.engine)
    return estimator


_SCRATCH: list[Any] = []


def _scratch_exports_dir() -> str:
    """A temporary exports folder for this process (removed at exit)."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="pose_ros_exports_"))
    return _SCRATCH[0].name
