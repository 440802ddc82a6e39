"""Engines side by side, in one process: the pose network per engine (ms per crop at batch
1/4/16/64, SimpleBaseline and RTMPose, with each network's GMACs and how far it runs from the
machine's fp32 limit), what int8 would bring (ONNX Runtime static quantization, timing only),
the pipeline per frame (1, 5, 20 persons at 640x480, 1280x720, 1920x1080), each detector on each
engine, the CPU presets over a sequence (detector + pose network pairs side by side, with the
published COCO AP of each pose network: the CPU preset is the fastest pair within 1 AP of
SimpleBaseline-R50), and the alternatives a user would pick instead (torchvision
KeypointRCNN-R50-FPN here; MediaPipe BlazePose through ``bench/mediapipe_bench.py`` in a
throwaway venv when one is given), with ratios.

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
from pose_ros.models.rtmpose import GatedAttentionUnit
from pose_ros.pipeline import PoseEstimator
from pose_ros.runtime import OnnxPoseRunner, quantize_int8

BATCHES = (1, 4, 16, 64)
RESOLUTIONS = ((480, 640), (720, 1280), (1080, 1920))
PERSONS = (1, 5, 20)
DETECTORS = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn", "rtmdet_nano")
PRESET_DETECTOR = "ssdlite320_mobilenet_v3_large"
PRESET_INTERVAL = 5
#: COCO val2017 keypoint AP (256x192) of the published weights, from mmpose's metafiles:
#: SimpleBaseline (configs/body_2d_keypoint/topdown_heatmap/coco/resnet_coco.yml, evaluated on
#: the AP-56 detector's boxes), RTMPose (configs/body_2d_keypoint/rtmpose/coco/rtmpose_coco.yml,
#: COCO-only training; its configs evaluate on the ground-truth boxes). No COCO file of
#: SimpleBaseline-R18 is published there.
PUBLISHED_COCO_AP: dict[str, float] = {
    "simplebaseline_res50": 71.8,
    "rtmpose_t": 68.2,
    "rtmpose_s": 71.6,
    "rtmpose_m": 74.6,
    "rtmpose_l": 75.8,
}
#: The published AP a CPU preset's pose network must reach: SimpleBaseline-R50's minus 1.
PRESET_MIN_AP = PUBLISHED_COCO_AP["simplebaseline_res50"] - 1.0
#: (detector, pose network) pairs the CPU preset is chosen from, timed side by side.
PRESET_PAIRS: tuple[tuple[str, str], ...] = (
    ("ssdlite320_mobilenet_v3_large", "simplebaseline_res50"),
    ("ssdlite320_mobilenet_v3_large", "simplebaseline_res18"),
    ("rtmdet_nano", "rtmpose_t"),
    ("rtmdet_nano", "rtmpose_s"),
    ("rtmdet_nano", "rtmpose_m"),
    ("rtmdet_nano", "rtmpose_l"),
)
#: The pair of config/pose_cpu.yaml.
CPU_PRESET = ("rtmdet_nano", "rtmpose_s")
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
    """Multiply-accumulates of one forward pass of ``x`` through the convolutions (depthwise:
    one input channel per filter), transposed convolutions, linear layers and the gated
    attention unit's two token-by-token products (what the FLOP count of a pose network
    means)."""
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
        elif isinstance(module, GatedAttentionUnit):  # q k^T and kernel v (its Linears apart)
            tokens = inputs[0].shape[-2]
            total += module.attention_macs(tokens) * inputs[0].shape[0]

    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear, GatedAttentionUnit)
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
    for name in args.frame_networks:
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
                        f"| {device} | {name} {engine} | {width}x{height} | {persons} | "
                        f"{ms:.1f} | {ms / persons:.1f} |"
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


def bench_preset(
    args: argparse.Namespace,
    cache: str,
    frames: int,
    *,
    persons: int = 1,
    pairs: tuple[tuple[str, str], ...] | None = None,
) -> dict[tuple[str, str], float]:
    """CPU presets side by side: each (detector, pose network) pair on ONNX Runtime, the
    detector on every 5th frame, over a sequence of 640x480 frames with ``persons`` persons.
    The untrained detectors find nobody, so the persons' boxes are given on every frame, as the
    tracker reuses them between detector runs; the detectors run for real on every 5th frame.
    Per-frame mean over the sequence; the pairs take turns frame by frame, so that load from
    elsewhere hits all alike. Pose networks in ``args.preset_int8`` also run as int8 exports
    (random calibration: timing only)."""
    device = torch.device("cpu")
    pairs = args.preset_pairs if pairs is None else pairs
    detectors = {name: build_detector(name, device, "auto", cache) for name, _ in pairs}
    sequence = [frame(480, 640, seed) for seed in range(frames)]
    boxes = person_boxes(persons, 480, 640)
    estimators: dict[tuple[str, str], PoseEstimator] = {}
    for detector_name, name in pairs:
        torch.manual_seed(0)
        network = engines.build_pose_network(
            build_pose_model(name).eval(), engine="auto", device=device, cache_dir=cache
        )
        detector = detectors[detector_name]
        estimators[(detector_name, name)] = PoseEstimator(network, detector, device=device)
        if name in args.preset_int8:
            # The same network as an int8 export (what `pose-ros-export --int8` writes).
            _, int8 = int8_export(name, cache)
            runner = OnnxPoseRunner(int8, device=device, threads=engines.cpu_thread_count(0))
            estimators[(detector_name, f"{name} int8")] = PoseEstimator(
                runner, detector, device=device
            )
    for estimator in estimators.values():
        estimator(sequence[0], boxes=boxes)  # warm-up
        estimator.detect(sequence[0])
    torch_threads = engines.share_cpu_threads("onnxruntime")  # as estimator_from_names sets it
    totals = dict.fromkeys(estimators, 0.0)
    for index, image in enumerate(sequence):
        for key, estimator in estimators.items():
            start = time.perf_counter()
            if index % PRESET_INTERVAL == 0:
                estimator.detect(image)
            estimator(image, boxes=boxes)
            totals[key] += time.perf_counter() - start
    torch.set_num_threads(engines.cpu_thread_count(0))
    results = {}
    for (detector_name, name), total in totals.items():
        mean = total * 1e3 / len(sequence)
        results[(detector_name, name)] = mean
        ap = PUBLISHED_COCO_AP.get(name.removesuffix(" int8"))
        estimator = estimators[(detector_name, name)]
        print(
            f"| {detector_name} every {PRESET_INTERVAL} frames + {name} on {estimator.engine} "
            f"({torch_threads} PyTorch thread) | {'-' if ap is None else f'{ap:.1f}'} | "
            f"{persons}, 640x480, {len(sequence)} frames | {mean:.1f} ms/frame |",
            flush=True,
        )
    return results


def fastest_eligible(results: dict[tuple[str, str], float]) -> tuple[str, str] | None:
    """The fastest fp32 pair whose pose network's published COCO AP is within 1 of
    SimpleBaseline-R50's (:data:`PRESET_MIN_AP`)."""
    eligible = [
        key
        for key in results
        if not key[1].endswith(" int8") and PUBLISHED_COCO_AP.get(key[1], 0.0) >= PRESET_MIN_AP
    ]
    return min(eligible, key=results.__getitem__) if eligible else None


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
        ("simplebaseline_res18", "rtmpose_s")
        if args.quick
        else (
            "simplebaseline_res18",
            "simplebaseline_res50",
            "rtmpose_t",
            "rtmpose_s",
            "rtmpose_m",
            "rtmpose_l",
        )
    )
    args.frame_networks = ("rtmpose_s",) if args.quick else ("simplebaseline_res50", "rtmpose_s")
    args.batches = (1, 4) if args.quick else BATCHES
    args.resolutions = RESOLUTIONS[:1] if args.quick else RESOLUTIONS
    args.persons = (1, 5) if args.quick else PERSONS
    args.detectors = (DETECTORS[0], "rtmdet_nano") if args.quick else DETECTORS
    args.preset_pairs = (
        (("ssdlite320_mobilenet_v3_large", "simplebaseline_res18"), CPU_PRESET)
        if args.quick
        else PRESET_PAIRS
    )
    args.preset_int8 = () if args.quick else ("simplebaseline_res50", "rtmpose_s")
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
        preset: dict[tuple[str, str], float] = {}
        preset5: dict[tuple[str, str], float] = {}
        if "preset" in parts:
            print(
                "| CPU preset candidate | published COCO AP | persons, frame, sequence | mean |\n"
                "|---|---|---|---|"
            )
            preset = bench_preset(args, cache, sequence, persons=1)
            chosen = fastest_eligible(preset)
            if chosen is not None:
                print(
                    f"\nfastest pair whose published AP is at least {PRESET_MIN_AP:.1f} "
                    f"(SimpleBaseline-R50's minus 1): {' + '.join(chosen)} "
                    f"({preset[chosen]:.1f} ms/frame); config/pose_cpu.yaml runs "
                    f"{' + '.join(CPU_PRESET)}\n",
                    flush=True,
                )
            if not args.quick:
                five = (PRESET_PAIRS[0], CPU_PRESET)
                preset5 = bench_preset(args, cache, sequence, persons=5, pairs=five)
            print()
        if "alt" in parts:
            bench_alternatives(args, preset, preset5, sequence)
    return 0


def bench_alternatives(
    args: argparse.Namespace,
    preset: dict[tuple[str, str], float],
    preset5: dict[tuple[str, str], float],
    frames: int,
) -> None:
    """KeypointRCNN (this process) and BlazePose (its own venv) beside the CPU preset's figures
    of this run: 1 person against BlazePose (a single-person method), 5 against KeypointRCNN."""
    label = " + ".join(CPU_PRESET)
    print(f"| alternative | persons at 640x480 | ms/frame | CPU preset ({label}) / it |")
    print("|---|---|---|---|")
    krcnn = bench_keypointrcnn(args, torch.device("cpu"))
    ours5 = preset5.get(CPU_PRESET)
    ratio = f"{ours5 / krcnn:.2f} (5 persons)" if ours5 else "-"
    print(
        f"| torchvision keypointrcnn_resnet50_fpn (random weights, this process) | any | "
        f"{krcnn:.1f} | {ratio} |",
        flush=True,
    )
    mp_ms, note = bench_mediapipe(args.mediapipe_python, frames)
    ours1 = preset.get(CPU_PRESET)
    if mp_ms is None:
        print(f"| MediaPipe BlazePose | 1 | {note} | - |")
    else:
        ratio = f"{ours1 / mp_ms:.2f} (1 person)" if ours1 else "-"
        print(f"| MediaPipe BlazePose ({note}) | 1 | {mp_ms:.1f} | {ratio} |")
    for persons, results in ((1, preset), (5, preset5)):
        for (detector, name), ms in results.items():
            line = f"| pose_ros, {detector} + {name} | {persons} | {ms:.1f} |"
            versus = [f"KeypointRCNN takes {krcnn / ms:.0f}x as long"]
            if mp_ms and persons == 1:
                versus.insert(0, f"{ms / mp_ms:.2f}x BlazePose's time")
            print(f"{line} {', '.join(versus)} |")


if __name__ == "__main__":
    raise SystemExit(main())
