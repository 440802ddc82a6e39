"""Export a pose network to ONNX (checked against PyTorch with ONNX Runtime) and TensorRT.

::

    python -m training.export --model runs/tiny/best.pth --output model.onnx
    python -m training.export --model best.pth --output model.onnx --tensorrt --max-batch 32
    python -m training.export --model best.pth --output model.onnx --int8 \
        --calibration-annotations person_keypoints_val2017.json --calibration-images val2017/

The ONNX graph has a dynamic batch axis (input ``input`` (N, 3, H, W) normalised crops, output
``heatmaps`` (N, K, H/4, W/4), or ``simcc_x`` (N, K, W * 2) and ``simcc_y`` (N, K, H * 2) for
RTMPose), opset 17 by default, and carries the model's preprocessing, architecture and output kind
in ``metadata_props`` so that :class:`pose_ros.runtime.OnnxPoseRunner` needs nothing else.
``--tensorrt`` also builds an fp16 engine for batch 1..max-batch where the ``tensorrt`` package
and a GPU are present (cached beside the ONNX file, keyed by the ONNX file's content, the TensorRT
version and the GPU).

``--triton-repository DIR`` writes a model repository for NVIDIA Triton Inference Server
(docs/triton.md): ``DIR/<name>/1/model.onnx``, the network with its normalisation and heatmap
decoding inside (uint8 RGB crops in, decoded keypoints out), and ``DIR/<name>/config.pbtxt``
(batch axis, dynamic batching, instance group); with ``--tensorrt`` also ``DIR/<name>_tensorrt/``,
whose ``build_plan.sh`` builds the TensorRT plan on the GPU server::

    python -m training.export --model best.pth --triton-repository triton_models --tensorrt

``--int8`` also writes an int8 model for the CPU (``<output>.int8.onnx``: ONNX Runtime's static
quantization, about 1.6-1.8x the fp32 speed on a CPU with VNNI, README "Benchmarks"), calibrated
on the annotated persons of a COCO-format keypoints file, and reports what it costs: the
distance between its keypoints and the fp32 model's on persons held out of the calibration
(``--int8-held-out``, a quarter by default), so that the figure is not flattered by the crops the
activation ranges came from. An int8 model whose keypoints move more than ``--int8-tolerance`` is
not written. Run the node on it with ``model:=<file>.int8.onnx``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pose_ros import codec, simcc
from pose_ros.geometry import box_to_center_scale, crop_batch
from pose_ros.models import CheckpointError, load_pose_model
from pose_ros.runtime import (
    MIN_CALIBRATION_CROPS,
    MIN_OPSET,
    OnnxPoseRunner,
    RuntimeBackendError,
    build_tensorrt_engine,
    compare_with_onnxruntime,
    export_onnx,
    quantize_int8,
)
from pose_ros.triton import (
    INSTANCE_KINDS,
    KEYPOINT_TOLERANCE_PX,
    export_triton_repository,
    keypoint_graph_agreement,
)
from pose_ros.triton_endpoint import DEFAULT_MODEL_NAME
from pose_ros.types import OUTPUT_SIMCC
from training.dataset import CocoPersons, DatasetError, load_coco_persons, read_image

# export_onnx and compare_with_onnxruntime live in pose_ros.runtime (the node exports on first use
# with them, and training/ is not installed with the node); this module is their command line.
__all__ = [
    "MIN_OPSET",
    "annotated_person_crops",
    "build_parser",
    "compare_with_onnxruntime",
    "export_onnx",
    "held_out_split",
    "int8_keypoint_shift",
    "main",
]


def annotated_person_crops(
    model: torch.nn.Module, persons: CocoPersons, limit: int | None = None
) -> torch.Tensor:
    """(N, 3, H, W) normalised crops of the annotated persons, cut as the pipeline cuts them
    (box -> centre and scale -> affine crop -> the model's normalisation), image by image, at most
    ``limit``."""
    height, width = model.input_size
    crops = []
    count = 0
    for image_id, path in sorted(persons.image_paths.items()):
        boxes = [i.box for i in persons.instances if i.image_id == image_id]
        if not boxes:
            continue
        centers, scales = box_to_center_scale(np.stack(boxes), width / height)
        rgb = torch.from_numpy(read_image(path)[..., ::-1].copy()).permute(2, 0, 1).float()
        crops.append(crop_batch(rgb, centers, scales, model.input_size))
        count += len(boxes)
        if limit is not None and count >= limit:
            break
    if not crops:
        raise DatasetError("no annotated person to make calibration crops from")
    batch = model.preprocessing.normalize(torch.cat(crops), input_color_order="RGB")
    return batch[:limit] if limit is not None else batch


def int8_keypoint_shift(
    fp32_path: Path, int8_path: Path, crops: torch.Tensor
) -> tuple[float, float, float]:
    """How far the int8 model's keypoints are from the fp32 model's on ``crops``, in heatmap
    pixels (quarter decoding; for SimCC networks input pixels / 4, the same length at the
    heatmap networks' stride): (mean, 95th percentile, share of keypoints within one pixel)."""
    shifts = []
    for path in (fp32_path, int8_path):
        runner = OnnxPoseRunner(path, device="cpu")
        output = runner(crops)
        if runner.output_kind == OUTPUT_SIMCC:
            coords, _ = simcc.decode_simcc(*output, runner.simcc_split_ratio)
            coords = coords / 4.0
        else:
            coords, _ = codec.decode_heatmaps(output.numpy(), "quarter")
        shifts.append(coords)
    distance = np.linalg.norm(shifts[0] - shifts[1], axis=-1).ravel()
    return float(distance.mean()), float(np.percentile(distance, 95)), float((distance <= 1).mean())


def held_out_split(count: int, held_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``count`` person crops: (calibration, held out). The held-out share
    ``held_out`` (0..1, at least one crop) is spread evenly over the list, which runs image by
    image, so that the held-out persons come from several images.

    Raises:
        ValueError: ``held_out`` outside (0, 1), or too few crops left to calibrate on.
    """
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"--int8-held-out must be between 0 and 1, got {held_out}")
    held_count = max(1, round(count * held_out))
    if count - held_count < MIN_CALIBRATION_CROPS:
        raise ValueError(
            f"{count} annotated persons: holding {held_count} out leaves {count - held_count} to "
            f"calibrate on, fewer than {MIN_CALIBRATION_CROPS}; give more persons or a smaller "
            "--int8-held-out"
        )
    held = np.unique(np.linspace(0, count - 1, held_count).round().astype(int))
    calibration = np.setdiff1d(np.arange(count), held)
    return calibration, held


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pose-ros-export", description="Export a pose network to ONNX (and TensorRT)."
    )
    parser.add_argument("--model", required=True, help="pose_ros checkpoint or published name")
    parser.add_argument("--output", help="ONNX file (default: the checkpoint's name with .onnx)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET)
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs heatmap difference")
    parser.add_argument(
        "--tensorrt",
        action="store_true",
        help="also build a TensorRT engine (with --triton-repository: add the TensorRT variant)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="TensorRT profile: batch 1..N; Triton: the models' max_batch_size",
    )
    parser.add_argument(
        "--triton-repository",
        metavar="DIR",
        help="write a Triton model repository (DIR/<name>/1/model.onnx and config.pbtxt); "
        "--output is then optional",
    )
    parser.add_argument(
        "--triton-model-name", default=DEFAULT_MODEL_NAME, help="the pose network's model name"
    )
    parser.add_argument(
        "--triton-queue-delay-us",
        type=int,
        default=2000,
        help="dynamic batching: longest wait (microseconds) for more requests to join a batch",
    )
    parser.add_argument(
        "--triton-instances", type=int, default=1, help="copies of the model on the server"
    )
    parser.add_argument(
        "--triton-kind",
        choices=INSTANCE_KINDS,
        default="gpu",
        help="where the server runs the ONNX model (the TensorRT variant is always gpu)",
    )
    parser.add_argument("--trt-fp32", action="store_true", help="TensorRT engine in fp32, not fp16")
    parser.add_argument(
        "--int8", action="store_true", help="also write <output>.int8.onnx (CPU, ONNX Runtime)"
    )
    parser.add_argument(
        "--calibration-annotations", help="--int8: COCO keypoints file of calibration persons"
    )
    parser.add_argument("--calibration-images", help="--int8: the folder of its images")
    parser.add_argument(
        "--calibration-crops", type=int, default=256, help="--int8: at most this many persons"
    )
    parser.add_argument(
        "--int8-tolerance",
        type=float,
        default=1.0,
        help="--int8: fail (exit 1, no int8 file written) when the keypoints move by more than "
        "this on average (heatmap pixels, against the fp32 model on the held-out persons)",
    )
    parser.add_argument(
        "--int8-held-out",
        type=float,
        default=0.25,
        help="--int8: share of the annotated persons kept out of the calibration; the keypoint "
        "shift is measured on them",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit code 2 (one message line) on bad input or missing backends,
    1 when the ONNX model differs from PyTorch by more than the tolerance."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.int8 and not (args.calibration_annotations and args.calibration_images):
        parser.error("--int8 needs --calibration-annotations and --calibration-images")
    try:
        model = load_pose_model(args.model, map_location="cpu")
        if args.triton_repository:
            status = _export_triton_repository(model, args)
            if status or not args.output:
                return status
        output = Path(args.output) if args.output else Path(args.model).with_suffix(".onnx")
        export_onnx(model, output, opset=args.opset)
        print(
            f"wrote {output} ({model.arch['name']}, input {model.input_size}, opset {args.opset})"
        )
        if not args.no_check:
            difference = compare_with_onnxruntime(model, output)
            print(f"max abs heatmap difference PyTorch vs ONNX Runtime: {difference:.3e}")
            if difference > args.tolerance:
                print(f"pose-ros-export: error: difference above {args.tolerance}", file=sys.stderr)
                return 1
        if args.tensorrt:
            engine = build_tensorrt_engine(output, max_batch=args.max_batch, fp16=not args.trt_fp32)
            print(f"wrote {engine}")
        if args.int8:
            persons = load_coco_persons(args.calibration_annotations, args.calibration_images)
            crops = annotated_person_crops(model, persons, args.calibration_crops)
            calibration, held_out = held_out_split(len(crops), args.int8_held_out)
            int8_path = output.with_suffix(".int8.onnx")
            # Quantized and judged under a name of its own; only an accepted model is published.
            with tempfile.TemporaryDirectory(prefix=".int8.", dir=int8_path.parent) as scratch:
                candidate = Path(scratch) / int8_path.name
                quantize_int8(output, candidate, crops[calibration].numpy())
                mean, p95, within = int8_keypoint_shift(output, candidate, crops[held_out])
                print(
                    f"int8 model calibrated on {len(calibration)} person crops; keypoints "
                    f"against fp32 on {len(held_out)} held-out person crops: mean {mean:.4f}, "
                    f"p95 {p95:.4f} heatmap px, {within:.1%} within 1 px"
                )
                if mean > args.int8_tolerance:
                    print(
                        f"pose-ros-export: error: int8 keypoints move {mean:.3f} px on average "
                        f"(> --int8-tolerance {args.int8_tolerance}); {int8_path} not written",
                        file=sys.stderr,
                    )
                    return 1
                os.replace(candidate, int8_path)
            print(f"wrote {int8_path} (int8)")
    except (CheckpointError, DatasetError, RuntimeBackendError, ValueError, OSError) as error:
        print(f"pose-ros-export: error: {error}", file=sys.stderr)
        return 2
    return 0


def _export_triton_repository(model: torch.nn.Module, args: argparse.Namespace) -> int:
    """--triton-repository: write it, and check its graph against PyTorch and the numpy
    decoder on random crops (exit code 1 when they disagree)."""
    repository = export_triton_repository(
        model,
        args.triton_repository,
        model_name=args.triton_model_name,
        max_batch_size=args.max_batch,
        max_queue_delay_us=args.triton_queue_delay_us,
        instances=args.triton_instances,
        kind=args.triton_kind,
        tensorrt=args.tensorrt,
        opset=args.opset,
    )
    print(
        f"wrote {repository.onnx_path} and {repository.config_path} (input uint8 RGB crops "
        f"3x{model.input_size[0]}x{model.input_size[1]}, output keypoints "
        f"{model.num_keypoints}x3, max_batch_size {args.max_batch})"
    )
    if repository.tensorrt_build_script is not None:
        print(
            f"wrote {repository.tensorrt_config_path} and {repository.tensorrt_build_script} "
            "(run it on the GPU server before starting Triton: it builds the TensorRT plan)"
        )
    if args.no_check:
        return 0
    height, width = model.input_size
    crops = np.random.default_rng(0).integers(0, 256, (8, 3, height, width), dtype=np.uint8)
    difference, agreeing = keypoint_graph_agreement(model, repository.onnx_path, crops)
    print(
        f"keypoints of the graph (ONNX Runtime) vs PyTorch + numpy decoding: max abs difference "
        f"{difference:.3e}, {agreeing:.1%} within {KEYPOINT_TOLERANCE_PX} px"
    )
    if agreeing < 0.99:
        print("pose-ros-export: error: the repository graph does not decode as the pipeline does")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
