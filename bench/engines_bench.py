"""Engines side by side, in one process: the pose network per engine (ms per crop at batch
1/4/16/64), what int8 would bring (ONNX Runtime static quantization, timing only), the pipeline
per frame (1, 5, 20 persons at 640x480, 1280x720, 1920x1080), each detector on each engine, the
CPU preset over a sequence, and the alternatives a user would pick instead (torchvision
KeypointRCNN-R50-FPN here; MediaPipe BlazePose through ``bench/mediapipe_bench.py`` in a throwaway
venv when one is given), with ratios.

Random weights throughout (the timings do not depend on the values; detections of an untrained
detector are meaningless, so the pipeline figures use given boxes and add the detector's time).

    python -m bench.engines_bench            # everything (long on 2 cores)
    python -m bench.engines_bench --quick    # ResNet-18, batches 1/4, 640x480, 3 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pose_ros import engines
from pose_ros.models import build_pose_model
from pose_ros.pipeline import PoseEstimator
from pose_ros.runtime import OnnxPoseRunner, quantize_int8

BATCHES = (1, 4, 16, 64)
RESOLUTIONS = ((480, 640), (720, 1280), (1080, 1920))
PERSONS = (1, 5, 20)
DETECTORS = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn")
PRESET_DETECTOR = "ssdlite320_mobilenet_v3_large"
PRESET_INTERVAL = 5
MEDIAPIPE_SCRIPT = Path(__file__).with_name("mediapipe_bench.py")


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1, sync: bool = False) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def person_boxes(count: int, height: int, width: int) -> np.ndarray:
    """``count`` person-shaped boxes spread over the frame (they may overlap)."""
    box_h, box_w = 0.6 * height, 0.2 * width
    xs = np.linspace(0, width - box_w, count)
    ys = np.linspace(0, height - box_h, max(count, 1))[::-1][:count]
    return np.array([[x, y, box_w, box_h] for x, y in zip(xs, ys, strict=True)], np.float32)


def pose_networks(name: str, device: torch.device, cache: str) -> dict[str, object]:
    """The pose network ``name`` on every engine present for ``device``."""
    torch.manual_seed(0)
    model = build_pose_model(name).eval()
    found: dict[str, object] = {}
    candidates = ["torch", "onnxruntime"] + (["tensorrt"] if device.type == "cuda" else [])
    for engine in candidates:
        try:
            network = engines.build_pose_network(
                model, engine=engine, device=device, fp16=device.type == "cuda", cache_dir=cache
            )
        except (engines.RuntimeBackendError, ValueError) as error:
            print(f"  ({engine} not available on {device}: {str(error).splitlines()[0][:120]})")
            continue
        found[engine] = network
    return found


def interleaved_ms(
    fns: dict[str, Callable[[], object]], repeats: int, sync: bool = False
) -> dict[str, float]:
    """Median ms of each function, timed in turns (a, b, a, b...) after one warm-up each: on a
    machine shared with other work, a load spike then hits every candidate alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            if sync:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if sync:
                torch.cuda.synchronize()
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}


def count_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``x`` through the convolutions, transposed
    convolutions and linear layers (what the FLOP count of a pose network means)."""
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.ConvTranspose2d):
            kh, kw = module.kernel_size
            total += inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total // x.shape[0]


def sgemm_gmacs(size: int = 2048, repeats: int = 3) -> float:
    """The machine's practical fp32 limit: GMAC/s of a large matrix product, the better of
    PyTorch's and numpy's BLAS, all CPU threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a_np, b_np = a.numpy(), b.numpy()
    ms = min(
        median_ms(lambda: torch.mm(a, b), repeats, warmup=1),
        median_ms(lambda: a_np @ b_np, repeats, warmup=1),
    )
    return size**3 / (ms * 1e-3) / 1e9


def bench_crops(args: argparse.Namespace, device: torch.device, cache: str) -> list[str]:
    rows = []
    sync = device.type == "cuda"
    limit = sgemm_gmacs() if device.type == "cpu" else None
    if limit is not None:
        print(
            f"| {device} | fp32 matrix product 2048³ (the FLOP limit) | torch, numpy | - | - | "
            f"{limit:.0f} GMAC/s |",
            flush=True,
        )
    for name in args.networks:
        best_ms: float | None = None
        estimators = {
            engine: PoseEstimator(network, device=device)  # fp16 on CUDA for torch
            for engine, network in pose_networks(name, device, cache).items()
        }
        for batch in args.batches:
            fns = {}
            for engine, estimator in estimators.items():
                height, width = estimator.model.input_size
                x = torch.randn(batch, 3, height, width, device=device, dtype=estimator._dtype)
                if isinstance(estimator.model, torch.nn.Module) and device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)

                def forward(x: torch.Tensor = x, model=estimator.model) -> None:
                    with torch.inference_mode():
                        model(x)

                fns[engine] = forward
            repeats = args.repeats if batch * args.crop_ms_guess < 3000 else 2
            for engine, ms in interleaved_ms(fns, repeats, sync=sync).items():
                precision = "fp16" if estimators[engine].fp16 else "fp32"
                rows.append(
                    f"| {device} | {name} | {engine} {precision} | "
                    f"{batch} | {ms / batch:.2f} | {1e3 * batch / ms:.1f} |"
                )
                print(rows[-1], flush=True)
                best_ms = ms / batch if best_ms is None else min(best_ms, ms / batch)
        if limit is not None and best_ms is not None:
            torch.manual_seed(0)
            module = build_pose_model(name).eval()
            macs = count_macs(module, torch.zeros(1, 3, *module.input_size))
            reached = macs / (best_ms * 1e-3) / 1e9
            print(
                f"| {device} | {name}: {macs / 1e9:.2f} GMAC per crop; fastest engine "
                f"{best_ms:.1f} ms = {reached:.0f} GMAC/s | - | - | - | "
                f"{limit / reached:.2f}x from the limit |",
                flush=True,
            )
    return rows


def int8_export(name: str, cache: str) -> tuple[Path, Path]:
    """(fp32 export, int8 export) of the network ``name`` with random weights, quantized by
    pose_ros.runtime.quantize_int8 on 16 random crops: right for timing, meaningless for accuracy
    (a real int8 model is calibrated on real crops: ``pose-ros-export --int8``)."""
    torch.manual_seed(0)
    model = build_pose_model(name).eval()
    fp32 = engines.cached_onnx_export(model, cache_dir=cache)
    int8 = Path(cache) / f"{name}-random-calibration.int8.onnx"
    if not int8.is_file():
        crops = np.random.default_rng(0).standard_normal((16, 3, *model.input_size))
        quantize_int8(fp32, int8, crops.astype(np.float32))
    return fp32, int8


def bench_int8(args: argparse.Namespace, cache: str) -> None:
    """The pose network's int8 export (ONNX Runtime static QDQ quantization, per-channel int8
    weights, uint8 activations) against its fp32 export, batch 4, timed in turns."""
    ort = engines._import_onnxruntime()
    for name in args.networks:
        paths = dict(zip(("fp32", "int8"), int8_export(name, cache), strict=True))
        sessions = {
            label: engines.onnx_session(
                ort, path, ["CPUExecutionProvider"], engines.cpu_thread_count(0)
            )
            for label, path in paths.items()
        }
        shape = (4, 3, *build_pose_model(name).input_size)
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        fns = {
            label: (lambda s=session, x=x: s.run(None, {"input": x}))
            for label, session in sessions.items()
        }
        times = interleaved_ms(fns, args.repeats)
        print(
            f"| cpu | {name} | onnxruntime fp32 / int8 (static QDQ) | 4 | "
            f"{times['fp32'] / 4:.2f} / {times['int8'] / 4:.2f} | "
            f"{times['fp32'] / times['int8']:.2f}x |",
            flush=True,
        )


def bench_frames(args: argparse.Namespace, device: torch.device, cache: str) -> list[str]:
    rows = []
    sync = device.type == "cuda"
    name = args.networks[-1]
    for engine, network in pose_networks(name, device, cache).items():
        estimator = PoseEstimator(network, device=device)
        if device.type == "cpu":
            engines.share_cpu_threads(engine)  # as estimator_from_names sets it
        for height, width in args.resolutions:
            image = frame(height, width)
            for persons in args.persons:
                boxes = person_boxes(persons, height, width)
                ms = median_ms(
                    lambda image=image, boxes=boxes, e=estimator: e(image, boxes=boxes),
                    args.repeats if persons < 20 else max(2, args.repeats // 2),
                    sync=sync,
                )
                rows.append(
                    f"| {device} | {name} {engine} | {width}x{height} | {persons} | {ms:.1f} | "
                    f"{ms / persons:.1f} |"
                )
                print(rows[-1], flush=True)
    torch.set_num_threads(engines.cpu_thread_count(0))
    return rows


def build_detector(name: str, device: torch.device, engine: str, cache: str):
    torch.manual_seed(0)
    return engines.build_person_detector(
        name, weights=None, device=device, engine=engine, score_threshold=0.5, cache_dir=cache
    )


def bench_detectors(args: argparse.Namespace, device: torch.device, cache: str) -> dict:
    results = {}
    sync = device.type == "cuda"
    image = frame(480, 640)
    for name in args.detectors:
        fns = {}
        for engine in ("torch", "onnxruntime"):
            try:
                detector = build_detector(name, device, engine, cache)
            except engines.RuntimeBackendError as error:
                print(f"  ({name} on {engine}: {error})")
                continue
            # PyTorch threads as estimator_from_names sets them for that engine (share_cpu_threads).
            threads = engines.cpu_thread_count(0) if detector.engine == "torch" else 1

            def run(d=detector, threads=threads) -> None:
                if device.type == "cpu":
                    torch.set_num_threads(threads)
                d.detect(image)

            fns[detector.engine] = run
        for engine, ms in interleaved_ms(fns, args.repeats, sync=sync).items():
            results[(name, engine)] = ms
            print(f"| {device} | {name} | {engine} | 640x480 | {ms:.1f} |", flush=True)
    torch.set_num_threads(engines.cpu_thread_count(0))
    return results


def bench_preset(args: argparse.Namespace, cache: str, frames: int) -> dict[str, float]:
    """The CPU preset (ssdlite + ONNX Runtime, detector every 5th frame) over a sequence of
    640x480 frames with one person. The untrained detector finds nobody, so the person's box is
    given on every frame, as the tracker reuses it between detector runs; the detector runs for
    real on every 5th frame. Per-frame mean over the sequence."""
    device = torch.device("cpu")
    results = {}
    detector = build_detector(PRESET_DETECTOR, device, "auto", cache)
    sequence = [frame(480, 640, seed) for seed in range(frames)]
    box = person_boxes(1, 480, 640)
    estimators = {}
    for name in args.preset_networks:
        torch.manual_seed(0)
        network = engines.build_pose_network(
            build_pose_model(name).eval(), engine="auto", device=device, cache_dir=cache
        )
        estimators[name] = PoseEstimator(network, detector, device=device)
        # The same network as an int8 export (what `pose-ros-export --int8` writes; random
        # calibration here: timing only).
        _, int8 = int8_export(name, cache)
        runner = OnnxPoseRunner(int8, device=device, threads=engines.cpu_thread_count(0))
        estimators[f"{name} int8"] = PoseEstimator(runner, detector, device=device)
    for estimator in estimators.values():
        estimator(sequence[0], boxes=box)  # warm-up
    detector.detect(sequence[0])
    torch_threads = engines.share_cpu_threads("onnxruntime")  # as estimator_from_names sets it
    totals = dict.fromkeys(estimators, 0.0)
    # The networks take turns frame by frame, so that load from elsewhere hits both alike.
    for index, image in enumerate(sequence):
        for name, estimator in estimators.items():
            start = time.perf_counter()
            if index % PRESET_INTERVAL == 0:
                estimator.detect(image)
            estimator(image, boxes=box)
            totals[name] += time.perf_counter() - start
    torch.set_num_threads(engines.cpu_thread_count(0))
    for name, estimator in estimators.items():
        mean = totals[name] * 1e3 / len(sequence)
        results[name] = mean
        print(
            f"| cpu preset: {PRESET_DETECTOR} every {PRESET_INTERVAL} frames + {name} on "
            f"{estimator.engine} ({torch_threads} PyTorch thread) | 1 person, 640x480, "
            f"{len(sequence)} frames | "
            f"{mean:.1f} ms/frame |",
            flush=True,
        )
    return results


def bench_keypointrcnn(args: argparse.Namespace, device: torch.device) -> float:
    """torchvision KeypointRCNN-R50-FPN (random weights: timing only), 640x480, in this process."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None
    )
    model.eval().to(device)
    image = torch.from_numpy(frame(480, 640)).permute(2, 0, 1).float().div(255).to(device)

    def run() -> None:
        with torch.inference_mode():
            model([image])

    return median_ms(run, max(2, args.repeats // 2), sync=device.type == "cuda")


def bench_mediapipe(python: str | None, frames: int) -> tuple[float | None, str]:
    """BlazePose in its own interpreter (a throwaway venv with mediapipe): (ms/frame, note)."""
    if not python:
        return None, "not run (pass --mediapipe-python, see README)"
    try:
        out = subprocess.run(
            [python, str(MEDIAPIPE_SCRIPT), "--frames", str(frames)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"failed: {error}"
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            return result["ms_per_frame"], result.get("note", "")
    return None, f"failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--mediapipe-python",
        default=os.environ.get("POSE_ROS_MEDIAPIPE_PYTHON"),
        help="python of a venv with mediapipe (env POSE_ROS_MEDIAPIPE_PYTHON)",
    )
    parser.add_argument(
        "--only", default="", help="comma list: crops,int8,frames,detectors,preset,alt"
    )
    args = parser.parse_args(argv)
    args.networks = (
        ("simplebaseline_res18",)
        if args.quick
        else (
            "simplebaseline_res18",
            "simplebaseline_res50",
        )
    )
    args.batches = (1, 4) if args.quick else BATCHES
    args.resolutions = RESOLUTIONS[:1] if args.quick else RESOLUTIONS
    args.persons = (1, 5) if args.quick else PERSONS
    args.detectors = DETECTORS[:1] if args.quick else DETECTORS
    args.preset_networks = (
        ("simplebaseline_res18",)
        if args.quick
        else (
            "simplebaseline_res50",
            "simplebaseline_res18",
        )
    )
    args.repeats = 3 if args.quick else args.repeats
    args.crop_ms_guess = 100.0
    sequence = 10 if args.quick else 50
    parts = (
        set(args.only.split(","))
        if args.only
        else {"crops", "int8", "frames", "detectors", "preset", "alt"}
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"## pose_ros engines benchmark — torch {torch.__version__}, "
        f"{engines.cpu_thread_count(0)} CPU threads, CUDA: "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}; "
        f"medians of {args.repeats} runs, random weights\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="pose_ros_bench_") as cache:
        if "crops" in parts:
            print(
                "| device | network | engine | batch | ms/crop | crops/s |\n"
                "|---|---|---|---|---|---|"
            )
            for device in devices:
                bench_crops(args, device, cache)
            print()
        if "int8" in parts:
            print(
                "| device | network | engine | batch | ms/crop | int8 speed-up |\n"
                "|---|---|---|---|---|---|"
            )
            bench_int8(args, cache)
            print()
        if "frames" in parts:
            print(
                "| device | network | frame | persons | ms/frame (given boxes) | ms/person |\n"
                "|---|---|---|---|---|---|"
            )
            for device in devices:
                bench_frames(args, device, cache)
            print()
        detector_ms: dict = {}
        if "detectors" in parts:
            print("| device | detector | engine | frame | ms/frame |\n|---|---|---|---|---|")
            for device in devices:
                detector_ms.update(bench_detectors(args, device, cache))
            print()
        preset: dict[str, float] = {}
        if "preset" in parts:
            print("| configuration | sequence | mean |\n|---|---|---|")
            preset = bench_preset(args, cache, sequence)
            print()
        if "alt" in parts:
            print("| alternative | 640x480 | ms/frame | pose_ros CPU preset (R50) / it |")
            print("|---|---|---|---|")
            ours = preset.get("simplebaseline_res50") or preset.get("simplebaseline_res18")
            krcnn = bench_keypointrcnn(args, torch.device("cpu"))
            ratio = f"{ours / krcnn:.2f}" if ours else "-"
            print(
                f"| torchvision keypointrcnn_resnet50_fpn (random weights, this process) | any "
                f"persons | {krcnn:.1f} | {ratio} |",
                flush=True,
            )
            mp_ms, note = bench_mediapipe(args.mediapipe_python, sequence)
            if mp_ms is None:
                print(f"| MediaPipe BlazePose | 1 person | {note} | - |")
            else:
                ratio = f"{ours / mp_ms:.2f}" if ours else "-"
                print(f"| MediaPipe BlazePose ({note}) | 1 person | {mp_ms:.1f} | {ratio} |")
            for name, ms in preset.items():
                line = f"| pose_ros CPU preset, {name} | 1 person | {ms:.1f} |"
                if mp_ms:
                    line += f" {ms / mp_ms:.2f}x BlazePose, {ms / krcnn:.2f}x KeypointRCNN |"
                print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
