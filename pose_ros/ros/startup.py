"""What the node builds before it processes: the pipeline from the parameters (a clear start-up
error when that cannot be done) and the QoS of its topics."""

from __future__ import annotations

from typing import Any

from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
)


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing weights...): the message says why and how to
    fix it; ``main`` logs it and exits non-zero."""


# QoS of the outputs. Reliable publishers match both reliable and best-effort subscribers (RViz,
# `ros2 topic echo`, recorders), so no consumer is left out. Poses are small: keep a few so a
# briefly busy consumer loses none; markers and images are replaced by the next frame anyway.
POSES_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.VOLATILE,
)
MARKERS_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST, depth=2, reliability=QoSReliabilityPolicy.RELIABLE
)
DEBUG_IMAGE_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST, depth=1, reliability=QoSReliabilityPolicy.RELIABLE
)
# As diagnostic_updater publishes: reliable, volatile, a short history.
DIAGNOSTICS_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST, depth=10, reliability=QoSReliabilityPolicy.RELIABLE
)


def input_qos(reliability: str, depth: int) -> QoSProfile:
    """QoS of the image subscription.

    The default (best effort, keep last 1, volatile) is the sensor-data profile camera drivers
    publish with: a best-effort subscription matches reliable and best-effort publishers alike,
    and a depth of 1 never keeps an old frame around. ``reliable`` only matches reliable
    publishers (the node warns when one does not match).
    """
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(
            QoSReliabilityPolicy.RELIABLE
            if reliability == "reliable"
            else QoSReliabilityPolicy.BEST_EFFORT
        ),
        durability=QoSDurabilityPolicy.VOLATILE,
    )


def build_estimator(values: dict[str, Any]) -> Any:
    """The PoseEstimator the parameters describe (imported here: torch loads with it).

    Raises:
        StartupError: missing or unusable weights (random ones without allow_random_weights, for
            the pose network and the detector alike), an unknown detector, an engine that cannot
            run here, a device that does not exist, CUDA errors (out of memory...).
    """
    import torch

    from pose_ros.detection import DetectorError
    from pose_ros.factory import estimator_from_names
    from pose_ros.models import CheckpointError
    from pose_ros.runtime import RuntimeBackendError
    from pose_ros.triton import TritonError

    backend = values["detector.backend"]
    if backend == "given":
        raise StartupError(
            "detector.backend 'given' needs person boxes from outside, and this node has no box "
            "input: use 'full_image' for pre-cropped single-person images, or a detector"
        )
    fp16 = None if values["fp16"] == "auto" else bool(values["fp16"])
    device = values["device"]
    try:
        return estimator_from_names(
            values["model"],
            detector=backend,
            detector_weights=values["detector.weights"] or None,
            device=device,
            fp16=fp16,
            allow_random_weights=values["allow_random_weights"],
            score_threshold=values["detector.score_threshold"],
            max_persons=values["max_persons"],
            flip_test=values["flip_test"],
            decode=values["decode"],
            keypoint_score_threshold=values["keypoint_score_threshold"],
            engine=values.get("engine", "auto"),
            detector_engine=values.get("detector.engine", "auto"),
            cpu_threads=values.get("cpu_threads", 0),
            yolo_layout=values.get("detector.yolo_layout", "auto"),
            # engine 'triton' (docs/triton.md)
            triton_url=values.get("triton.url", ""),
            triton_model=values.get("triton.model", ""),
            triton_timeout_ms=values.get("triton.timeout_ms", 1000),
        )
    except TritonError as error:
        raise StartupError(f"engine 'triton': {error}") from None
    except CheckpointError as error:
        raise StartupError(
            f"cannot load the pose model {values['model']!r}: {error} "
            "(set the 'model' parameter to a checkpoint file or a published-weights name; "
            "see docs/engines.md, 'Weights')"
        ) from None
    except DetectorError as error:
        raise StartupError(
            f"cannot build the person detector {backend!r}: {error} (set detector.backend / "
            "detector.weights; 'full_image' needs no weights)"
        ) from None
    except RuntimeBackendError as error:
        raise StartupError(
            f"cannot run the networks on engine {values.get('engine', 'auto')!r} / "
            f"detector.engine {values.get('detector.engine', 'auto')!r}: {error} "
            "(set engine / detector.engine to 'torch' or 'auto')"
        ) from None
    except ValueError as error:
        raise StartupError(f"invalid configuration: {error}") from None
    except torch.cuda.OutOfMemoryError as error:
        raise StartupError(
            f"out of GPU memory on device {device!r} while loading the networks "
            f"({str(error).splitlines()[0]}): free the GPU, pick another one (device:=cuda:N) or "
            "run on the CPU (device:=cpu)"
        ) from None
    except RuntimeError as error:
        # CUDA driver/runtime failures (no usable device, wrong driver, a busy GPU) surface as
        # RuntimeError (torch.AcceleratorError in recent torch): they are start-up failures.
        if "cuda" not in str(error).lower():
            raise
        raise StartupError(
            f"CUDA error on device {device!r} at start-up: {str(error).splitlines()[0]} (check "
            "the driver and `nvidia-smi`, pick another device, or use device:=cpu)"
        ) from None
