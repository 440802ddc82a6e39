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
import warnings
from pathlib import Path

import numpy as np
import torch

from pose_ros.models import CheckpointError, PoseNet, load_pose_model
from pose_ros.runtime import (
    INPUT_NAME,
    OUTPUT_NAME,
    OnnxPoseRunner,
    RuntimeBackendError,
    build_tensorrt_engine,
    export_metadata,
)

#: Lowest opset accepted: 17 has every op of the pose networks in its final form.
MIN_OPSET = 17


def export_onnx(model: PoseNet, path: str | Path, *, opset: int = MIN_OPSET) -> Path:
    """Write ``model`` (fp32, CPU, eval mode) as ONNX with a dynamic batch axis and metadata.

    Args:
        model: any PoseNet; it is copied to the CPU in eval mode, the original is not changed.
        path: the ``.onnx`` file to write (parent folders created).
        opset: ONNX opset version, at least 17.

    Returns:
        The path written.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be at least {MIN_OPSET}, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = _cpu_eval_copy(model)
    height, width = model.input_size
    example = torch.zeros(2, 3, height, width)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; it still exports these convolutional graphs exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    graph = onnx.load(str(path))
    metadata = export_metadata(
        model.preprocessing, dict(model.arch), model.num_keypoints, tuple(model.heatmap_size)
    )
    del graph.metadata_props[:]
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def compare_with_onnxruntime(
    model: PoseNet,
    onnx_path: str | Path,
    *,
    inputs: torch.Tensor | None = None,
    batch_size: int = 3,
    seed: int = 0,
) -> float:
    """Max abs heatmap difference between PyTorch (fp32, CPU) and ONNX Runtime (CPU).

    Args:
        inputs: (N, 3, H, W) normalised crops; default normal noise of that scale, ``batch_size``
            crops (not the export's example batch of 2, which also checks the dynamic batch axis).
    """
    network = _cpu_eval_copy(model)
    height, width = model.input_size
    if inputs is None:
        generator = torch.Generator().manual_seed(seed)
        inputs = torch.randn(batch_size, 3, height, width, generator=generator)
    x = inputs.to("cpu", torch.float32)
    with torch.inference_mode():
        expected = network(x).numpy()
    runner = OnnxPoseRunner(onnx_path, device="cpu")
    actual = runner(x).numpy()
    if actual.shape != expected.shape:
        raise RuntimeBackendError(f"ONNX output shape {actual.shape} != PyTorch {expected.shape}")
    return float(np.abs(actual - expected).max())


def _cpu_eval_copy(model: PoseNet) -> PoseNet:
    import copy

    network = copy.deepcopy(model).to("cpu", torch.float32).eval()
    return network.to(memory_format=torch.contiguous_format)


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
