"""``pose-ros-infer``: pose estimation on an image, a folder of images or a video, without ROS.

Writes annotated images (or an annotated video) and a COCO keypoint-results JSON to an output
folder. Example::

    pose-ros-infer street.mp4 --model runs/coco_r50/best.pth --output out/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pose_ros.drawing import draw_persons
from pose_ros.factory import estimator_from_names
from pose_ros.fileio import atomic_write
from pose_ros.pipeline import coco_keypoint_results
from pose_ros.smoothing import SmoothingConfig
from pose_ros.stream import CameraFrame, StreamCore, StreamSettings, settings_from_values
from pose_ros.tracking import DEFAULT_REUSE_SCORE_THRESHOLD, TrackingConfig
from pose_ros.types import RANDOM_WEIGHTS_PREFIX

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}

log = logging.getLogger("pose_ros.cli")

#: Frame rate assumed for an image sequence (and a video that does not say).
DEFAULT_SEQUENCE_FPS = 30.0


@dataclass
class Frame:
    """One input frame: BGR pixels (as OpenCV reads them) and where it came from."""

    image_bgr: np.ndarray
    image_id: int
    name: str


class InputError(ValueError):
    """An input that cannot be read (missing, not an image or video)."""


def image_id_for(path: Path, index: int) -> int:
    """COCO file names (``000000000785.jpg``) give their image id; other files their index."""
    return int(path.stem) if path.stem.isdigit() else index


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: not a readable image")
    return image


def iter_image_frames(paths: list[Path]) -> Iterator[Frame]:
    for index, path in enumerate(paths):
        try:
            yield Frame(_read_image(path), image_id_for(path, index), path.name)
        except InputError as error:
            # One bad file must not lose the results of the others.
            log.error("skipping %s", error)


def iter_video_frames(path: Path) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path}: cannot open as a video")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield Frame(frame, index, f"{path.stem}_{index:06d}")
            index += 1
    finally:
        capture.release()


def _video_properties(path: Path) -> tuple[float, int]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return fps, max(count, 0)


def collect_images(source: Path) -> list[Path]:
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(
                f"{source}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return images
    return [source]


def run(args: argparse.Namespace) -> int:
    if args.bag is not None:
        from pose_ros.cli_bag import run_bag

        # A recording is a sequence: tracked unless --no-tracking.
        settings = stream_settings(args, args.tracking is not False)
        return run_bag(args, lambda: estimator_from_args(args), settings).exit_code
    if args.input is None:
        raise InputError("give an image, a folder of images or a video (or --bag RECORDING)")
    source = Path(args.input)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    output = Path(args.output or "pose_output")
    output.mkdir(parents=True, exist_ok=True)
    is_video = source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES
    # Frames of a video are a sequence; a folder is one only when the user says so (--tracking).
    tracking_on = is_video if args.tracking is None else args.tracking
    if args.detector_interval > 1 and not tracking_on:
        raise ValueError("--detector-interval > 1 needs tracking (a video, or --tracking)")
    settings = stream_settings(args, tracking_on)
    estimator = estimator_from_args(args)
    # The node's temporal path: tracks, smoothing, detector interval (the same rules as the node).
    core = StreamCore(estimator, settings)
    print(f"pose-ros-infer: {estimator.describe()}")
    writer = None
    fps = args.fps
    if is_video:
        video_fps, total = _video_properties(source)
        fps = video_fps if args.fps is None else args.fps
        frames = iter_video_frames(source)
    else:
        images = collect_images(source)
        total = len(images)
        frames = iter_image_frames(images)

    results: list[dict] = []
    persons_total = 0
    processed = 0
    results_path = output / "results.json"
    try:
        for frame in tqdm(frames, total=total or None, unit="frame", disable=total <= 1):
            # A file has no header stamps: the frame time (from the frame rate) is the clock.
            frame_time = processed / (fps or DEFAULT_SEQUENCE_FPS)
            (result,) = core.process(
                [CameraFrame(frame.image_bgr, "BGR", arrival_sec=frame_time, topic=str(frame.name))]
            )
            for event in result.events:
                if event.kind != "zero_stamp":
                    log.info("%s", event.message)
            if result.error is not None:
                raise result.error
            persons = result.persons
            annotated = draw_persons(
                frame.image_bgr,
                persons,
                keypoint_threshold=args.keypoint_threshold,
                color_order="BGR",
            )
            if is_video:
                if writer is None:
                    height, width = annotated.shape[:2]
                    video_path = output / f"{source.stem}_pose.mp4"
                    writer = cv2.VideoWriter(
                        str(video_path),
                        cv2.VideoWriter_fourcc(*"mp4v"),
                        fps or DEFAULT_SEQUENCE_FPS,
                        (width, height),
                    )
                writer.write(annotated)
            else:
                cv2.imwrite(str(output / f"{Path(frame.name).stem}_pose.jpg"), annotated)
            entries = coco_keypoint_results(persons, frame.image_id, decimals=5)
            if tracking_on:
                for entry, person in zip(entries, persons, strict=True):
                    entry["track_id"] = person.track_id
            results.extend(entries)
            persons_total += len(persons)
            processed += 1
    finally:
        # Whatever happens, what was computed so far is written.
        if writer is not None:
            writer.release()
        with atomic_write(results_path, "w") as stream:
            json.dump(results, stream)
    if tracking_on and core.cameras:
        stats = core.camera("").tracker.stats
        print(
            f"pose-ros-infer: tracking: {stats.tracks_started} track(s) started, detector on "
            f"{stats.detector_runs} of {stats.frames} frame(s) (interval {args.detector_interval})"
        )
    print(
        f"pose-ros-infer: {processed} frame(s), {persons_total} person(s); "
        f"results: {results_path}; annotated output in {output}/"
    )
    if estimator.uses_random_weights:
        print("pose-ros-infer: WARNING: random weights were used, the keypoints are meaningless")
    return 0 if processed else 1


def estimator_from_args(args: argparse.Namespace) -> Any:
    """The pose estimator the options describe (the stream core sets its detector's threshold
    from the stream settings)."""
    return estimator_from_names(
        args.model,
        detector=args.detector,
        detector_weights=None if args.detector_weights == "none" else args.detector_weights,
        device=args.device,
        fp16=args.fp16,
        allow_random_weights=args.allow_random_weights,
        score_threshold=args.score_threshold,
        max_persons=args.max_persons,
        flip_test=args.flip_test,
        decode=args.decode,
        engine=args.engine,
        detector_engine=args.detector_engine,
        cpu_threads=args.cpu_threads,
    )


def stream_settings(args: argparse.Namespace, tracking: bool) -> StreamSettings:
    """The stream settings the options describe, under the node's parameter names (one mapping
    from names to settings: :func:`pose_ros.stream.settings_from_values`)."""
    return settings_from_values(
        {
            "tracking.enabled": tracking,
            "tracking.min_hits": args.min_hits,
            "tracking.max_age_sec": args.max_age,
            "tracking.iou_weight": args.iou_weight,
            "tracking.match_threshold": args.match_threshold,
            "detector.score_threshold": args.score_threshold,
            "smoothing.enabled": args.smoothing,
            "smoothing.min_cutoff": args.min_cutoff,
            "smoothing.beta": args.beta,
            "smoothing.d_cutoff": args.d_cutoff,
            "smoothing.position_min_cutoff": args.position_min_cutoff,
            "smoothing.position_beta": args.position_beta,
            "detector.interval": args.detector_interval,
            "detector.reuse_score_threshold": args.reuse_score_threshold,
            "max_persons": args.max_persons,
        }
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pose-ros-infer", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "input", nargs="?", help="an image, a folder of images or a video file (or --bag)"
    )
    parser.add_argument(
        "-o",
        "--output",
        help="output folder (created; default pose_output); with --bag the output recording: "
        "NAME.mcap (one MCAP file) or a rosbag2 folder (default: <recording>_poses.mcap)",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="pose checkpoint path or published-weights name; "
        f"'{RANDOM_WEIGHTS_PREFIX}<arch>' for untrained weights (with --allow-random-weights)",
    )
    parser.add_argument(
        "--allow-random-weights", action="store_true", help="accept a random:<arch> model"
    )
    parser.add_argument(
        "--detector", default="fasterrcnn_mobilenet_v3_large_fpn", help="detector backend"
    )
    parser.add_argument(
        "--detector-weights",
        default="DEFAULT",
        help="torchvision weights name, a file, or 'none' (random: tests only)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--engine",
        choices=("auto", "torch", "onnxruntime", "tensorrt"),
        default="auto",
        help="pose network engine (auto: ONNX Runtime on the CPU, PyTorch fp16 on CUDA)",
    )
    parser.add_argument(
        "--detector-engine",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="torchvision detector backbone engine (auto: ONNX Runtime on the CPU)",
    )
    parser.add_argument(
        "--cpu-threads", type=int, default=0, help="PyTorch / ONNX Runtime threads; 0 = all cores"
    )
    parser.add_argument(
        "--fp16", action=argparse.BooleanOptionalAction, default=None, help="half precision (CUDA)"
    )
    parser.add_argument("--flip-test", action="store_true", help="average with the mirrored crops")
    parser.add_argument("--decode", choices=("quarter", "dark"), default="quarter")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="detector score threshold"
    )
    parser.add_argument("--max-persons", type=int, default=20)
    parser.add_argument("--keypoint-threshold", type=float, default=0.3, help="drawing threshold")
    track = parser.add_argument_group(
        "tracking", "track ids, One-Euro smoothing and detector reuse (docs/tracking.md)"
    )
    track.add_argument(
        "--tracking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="track persons across frames and write track_id in the JSON (default: on for "
        "videos; give it for a folder that is an image sequence, in file-name order)",
    )
    defaults, smooth = TrackingConfig(), SmoothingConfig()
    track.add_argument("--min-hits", type=int, default=defaults.min_hits)
    track.add_argument(
        "--max-age", type=float, default=defaults.max_age_sec, help="seconds a track lives unseen"
    )
    track.add_argument("--iou-weight", type=float, default=defaults.iou_weight)
    track.add_argument("--match-threshold", type=float, default=defaults.match_threshold)
    track.add_argument("--smoothing", action=argparse.BooleanOptionalAction, default=True)
    track.add_argument("--min-cutoff", type=float, default=smooth.min_cutoff, help="Hz")
    track.add_argument("--beta", type=float, default=smooth.beta)
    track.add_argument("--d-cutoff", type=float, default=smooth.d_cutoff, help="Hz")
    track.add_argument(
        "--position-min-cutoff", type=float, default=smooth.position_min_cutoff, help="Hz (3D)"
    )
    track.add_argument(
        "--position-beta", type=float, default=smooth.position_beta, help="per m/s (3D)"
    )
    track.add_argument(
        "--detector-interval",
        type=int,
        default=1,
        help="run the detector every N-th frame; in between reuse the tracks' boxes",
    )
    track.add_argument("--reuse-score-threshold", type=float, default=DEFAULT_REUSE_SCORE_THRESHOLD)
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=7680 * 4320,
        help="frames with more pixels are refused before decoding (the node's max_image_pixels)",
    )
    track.add_argument(
        "--fps",
        type=float,
        default=None,
        help=f"frame rate of the sequence (default: the video's, {DEFAULT_SEQUENCE_FPS:g} "
        "for images)",
    )
    from pose_ros.cli_bag import add_bag_arguments

    add_bag_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="pose-ros-infer: %(message)s")
    args = build_parser().parse_args(argv)
    # Errors the user can act on (a missing file, bad weights, a bad value) are one clear line,
    # not a traceback.
    from pose_ros.detection import DetectorError
    from pose_ros.models import CheckpointError
    from pose_ros.runtime import RuntimeBackendError

    try:
        return run(args)
    except (InputError, CheckpointError, DetectorError, RuntimeBackendError, ValueError) as error:
        print(f"pose-ros-infer: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pose-ros-infer: interrupted; results so far were written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
