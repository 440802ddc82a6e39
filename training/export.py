"""Export a pose network to ONNX (checked against PyTorch with ONNX Runtime) and TensorRT.

::

    python -m training.export --model runs/tiny/best.pth --output model.onnx
    python -m training.export --model best.pth --output model.onnx --tensorrt --max-batch 32

The ONNX graph has a dynamic batch axis (input ``input`` (N, 3, H, W) normalised crops, output
``heatmaps`` (N, K, H/4, W/4)), opset 17 by default, and carries the model's preprocessing and
architecture in ``metadata_props`` so that :class:`pose_ros.runtime.OnnxPoseRunner` needs nothing
else. ``--tensorrt`` also builds an fp16 engine for batch 1..max-batch where the ``tensorrt``
package and a GPU are present (cached beside the ONNX file, keyed by TensorRT version and GPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pose_ros.models import CheckpointError, load_pose_model
from pose_ros.runtime import (
    MIN_OPSET,
    RuntimeBackendError,
    build_tensorrt_engine,
    compare_with_onnxruntime,
    export_onnx,
)

# export_onnx and compare_with_onnxruntime live in pose_ros.runtime (the node exports on first use
# with them, and training/ is not installed with the node); this module is their command line.
__all__ = ["MIN_OPSET", "build_parser", "compare_with_onnxruntime", "export_onnx", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pose-ros-export", description="Export a pose network to ONNX (and TensorRT)."
    )
    parser.add_argument("--model", required=True, help="pose_ros checkpoint or published name")
    parser.add_argument("--output", help="ONNX file (default: the checkpoint's name with .onnx)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET)
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs heatmap difference")
    parser.add_argument("--tensorrt", action="store_true", help="also build a TensorRT engine")
    parser.add_argument("--max-batch", type=int, default=32, help="TensorRT profile: batch 1..N")
    parser.add_argument("--trt-fp32", action="store_true", help="TensorRT engine in fp32, not fp16")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit code 2 (one message line) on bad input or missing backends,
    1 when the ONNX model differs from PyTorch by more than the tolerance."""
    args = build_parser().parse_args(argv)
    try:
        model = load_pose_model(args.model, map_location="cpu")
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
    except (CheckpointError, RuntimeBackendError, ValueError, OSError) as error:
        print(f"pose-ros-export: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
