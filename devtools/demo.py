"""The pose_ros demo: the real node on frames the repository draws itself.

    python -m devtools.demo --output demo_output            # (make demo)
    python -m devtools.demo --output out --model path/to/checkpoint.pt --device cuda

Starts the installed ``pose_node`` in its own process (as ``ros2 launch`` would, with the
installed config/pose.yaml), publishes drawn frames of a waving figure (pose_ros.demo_scene) on
its image topic over DDS, together with the registered depth image of the figure (16UC1
millimetres: the figure 2.0 m in front of the camera, the room behind it at 4.0 m, same header
stamp) and a camera_info, as an RGB-D camera driver would; collects ``/pose_demo/poses`` (with 3D
keypoint positions, ``use_depth:=true``) and the node's annotated images, and writes to the output
folder:

* ``frames/frame_NNN.png``: the annotated frames as the node published them on poses/image;
* ``poses.json``: per frame the stamp, latency, persons (box, scores, 17 keypoints, their 3D
  positions and the person's centre) and the keypoints the figure was drawn from; the summary
  reports the pixel error and the 3D error in metres against the drawn figure (``--no-depth``
  runs without depth);
* ``pose_node.log``: the node's log.

Weights: ``--model`` names them; without it the default published checkpoint
(``mmpose_res50_coco_256x192``) is used from the checkpoint cache, and downloaded into it first
when it is not there (progress bar, sha256 check: pose_ros.models.registry). Where it cannot be
had (offline, or a download that fails its check) the demo says so and runs with untrained random
weights: the keypoints are then meaningless, the plumbing is real.

``--video FILE`` publishes the frames of your own video instead of the drawn figure, at the
video's frame rate (``--fps`` to change it), colour only, with the node's default person detector
(``--detector`` to change it); the summary then has no error against a known pose.

Run it through scripts/ros-env (``make demo``, ``make demo DEMO_ARGS="--video street.mp4"``),
which keeps DDS on this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from devtools.ros_harness import Peer, make_header, reliable, running_pose_node
from pose_ros.camera import PinholeCamera
from pose_ros.demo_scene import FIGURE_DISTANCE_M, WALL_DISTANCE_M, demo_frames, render_depth
from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import array_to_image_msg, depth_array_to_msg
from pose_ros.ros.params import DEFAULT_MODEL, DEFAULTS

NAMESPACE = "/pose_demo"
FRAME_ID = "demo_camera_optical_frame"
RANDOM_MODEL = "random:simplebaseline_res18"
DEFAULT_FRAMES = 40
DEFAULT_FPS = 10.0
#: The demo's camera: a typical 640x480 RGB-D colour camera (about 63 degrees horizontal view).
DEMO_CAMERA = PinholeCamera(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480)


def choose_model(requested: str | None) -> tuple[str, bool, str]:
    """(model parameter, random weights?, a sentence saying which weights and why).

    Without ``requested``: the default published checkpoint from the cache, downloaded first
    (progress bar, verified sha256) when it is not there; random weights when it cannot be had
    (offline, no URL, a download that fails its check)."""
    if requested:
        return requested, False, f"model: {requested}"
    from pose_ros.models import PUBLISHED_CHECKPOINTS, CheckpointError, checkpoint_cache_dir
    from pose_ros.models.registry import fetch_published_checkpoint

    entry = PUBLISHED_CHECKPOINTS.get(DEFAULT_MODEL)
    reason = ""
    if entry is not None and (checkpoint_cache_dir() / entry.filename).is_file():
        return DEFAULT_MODEL, False, f"model: {DEFAULT_MODEL} (found in the checkpoint cache)"
    if entry is not None and entry.url:
        print(f"no weights cached: downloading {DEFAULT_MODEL} ({entry.url})", flush=True)
        try:
            path = fetch_published_checkpoint(DEFAULT_MODEL, progress=True)
        except CheckpointError as error:
            cause = error.__cause__  # the network's own words, where it failed there
            detail = getattr(cause, "reason", None) or cause or str(error).split(". ")[0]
            reason = f" Download failed: {detail}."
        else:
            return DEFAULT_MODEL, False, f"model: {DEFAULT_MODEL} (downloaded and verified: {path})"
    return (
        RANDOM_MODEL,
        True,
        "NO TRAINED WEIGHTS: no --model given and no published checkpoint in "
        f"{checkpoint_cache_dir()}.{reason} Running with UNTRAINED RANDOM WEIGHTS "
        f"({RANDOM_MODEL}): the node, topics and drawing are real, the keypoints are "
        "meaningless. Pass --model <checkpoint or registry name> for real poses "
        "(docs/engines.md: Weights).",
    )


def video_frames(path: str | Path, limit: int | None = None) -> tuple[list, float]:
    """(RGB frames of the video at ``path``, at most ``limit``; its frame rate, 0 when unknown).

    Raises:
        FileNotFoundError: the file does not exist, or OpenCV reads no frame from it.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"--video {path}: no such file")
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        while limit is None or len(frames) < limit:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    finally:
        capture.release()
    if not frames:
        raise FileNotFoundError(f"--video {path}: OpenCV read no frame from it (not a video?)")
    return frames, fps if math.isfinite(fps) and fps > 0 else 0.0


def _stamp_key(header: Any) -> tuple[int, int]:
    return int(header.stamp.sec), int(header.stamp.nanosec)


def _wall_header(now: float) -> Any:
    sec = int(now)
    return make_header(sec, FRAME_ID, nanosec=round((now - sec) * 1e9) % 1_000_000_000)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    (output / "frames").mkdir(parents=True, exist_ok=True)
    model, random_weights, model_note = choose_model(args.model)
    print(model_note, flush=True)
    parameters: dict[str, Any] = {
        "model": model,
        "allow_random_weights": random_weights,
        "detector.backend": args.detector,
        "device": args.device,
        # Raw 640x480 frames are larger than Fast DDS's shared-memory segment; a reliable
        # subscription makes sure none is lost on the way (cameras: see README, QoS).
        "qos.reliability": "reliable",
        "use_depth": args.depth,
    }
    if random_weights:
        # Untrained scores are low: draw every keypoint anyway, so the (meaningless) skeleton
        # shows that drawing and markers work.
        parameters["debug_image.keypoint_threshold"] = 0.0
        parameters["markers.keypoint_threshold"] = 0.0
    frames = load_frames(args)
    if args.depth:
        # Millimetres, as RGB-D drivers publish (16UC1, REP 118).
        depths = [np.round(render_depth(truth) * 1000).astype(np.uint16) for _, truth in frames]
    else:
        depths = [None] * len(frames)
    print(f"starting pose_node ({NAMESPACE}), log: {output / 'pose_node.log'}", flush=True)
    with running_pose_node(output / "pose_node.log", NAMESPACE, parameters) as node:
        peer = Peer("pose_demo")
        try:
            result = _exchange(peer, node, frames, depths, args.fps)
        finally:
            peer.close()
    sent_at, answers, images = result
    return _report(output, args, model, random_weights, frames, sent_at, answers, images)


def load_frames(args: argparse.Namespace) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(RGB frame, keypoints it was drawn from or None) for each frame to publish; settles
    ``args.fps`` (and turns depth off) for a video."""
    if args.video is None:
        args.fps = args.fps or DEFAULT_FPS
        return list(demo_frames(args.frames or DEFAULT_FRAMES, fps=args.fps))
    pictures, video_fps = video_frames(args.video, args.frames)
    args.fps = args.fps or video_fps or DEFAULT_FPS
    args.depth = False  # a plain video has no registered depth image
    height, width = pictures[0].shape[:2]
    print(f"video {args.video}: {len(pictures)} frames of {width}x{height} at {args.fps:g} Hz")
    return [(picture, None) for picture in pictures]


def _camera_info(header: Any) -> CameraInfo:
    camera = DEMO_CAMERA
    info = CameraInfo(header=header, width=camera.width, height=camera.height)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def _exchange(
    peer: Peer, node: Any, frames: list, depths: list, fps: float
) -> tuple[dict, dict, dict]:
    """Publish the frames (with their depth images and a camera_info, same stamp) at ``fps`` and
    collect answers: (stamp → send time, stamp → (poses, arrival time), stamp → annotated
    image)."""
    publisher = peer.node.create_publisher(Image, f"{NAMESPACE}/image", reliable(5))
    depth_publisher = peer.node.create_publisher(Image, f"{NAMESPACE}/depth", reliable(5))
    info_publisher = peer.node.create_publisher(CameraInfo, f"{NAMESPACE}/camera_info", reliable(5))

    def publish(rgb: np.ndarray, depth: np.ndarray | None, header: Any) -> None:
        # A driver's order: calibration, depth, then colour (the node pairs them by stamp).
        info_publisher.publish(_camera_info(header))
        if depth is not None:
            depth_publisher.publish(depth_array_to_msg(depth, "16UC1", header=header))
        publisher.publish(array_to_image_msg(rgb, "rgb8", header=header))

    answers: dict[tuple[int, int], tuple[PersonPoseArray, float]] = {}
    images: dict[tuple[int, int], Image] = {}
    peer.node.create_subscription(
        PersonPoseArray,
        f"{NAMESPACE}/poses",
        lambda msg: answers.setdefault(_stamp_key(msg.header), (msg, time.time())),
        reliable(50),
    )
    peer.node.create_subscription(
        Image,
        f"{NAMESPACE}/poses/image",
        lambda msg: images.setdefault(_stamp_key(msg.header), msg),
        reliable(50),
    )
    # Warm-up: until the node answers with an annotated image, discovery is complete both ways and
    # the first (slow) inference is behind us. Not counted.
    warmup_header = _wall_header(1.0)
    warmup_key = _stamp_key(warmup_header)
    if not peer.publish_until(
        lambda: publish(frames[0][0], depths[0], warmup_header),
        lambda: warmup_key in images,
        timeout=60,
        period=1.0,
    ):
        raise RuntimeError(f"pose_node did not answer within 60 s:\n{node.log()[-3000:]}")

    sent_at: dict[tuple[int, int], float] = {}
    start = time.monotonic()
    for index, ((rgb, _), depth) in enumerate(zip(frames, depths, strict=True)):
        now = time.time()
        header = _wall_header(now)
        sent_at[_stamp_key(header)] = now
        publish(rgb, depth, header)
        peer.spin_for(max(0.0, start + (index + 1) / fps - time.monotonic()))
    # The node keeps only the newest frame while busy: wait for the last one, not for all.
    last = list(sent_at)[-1]
    peer.spin_until(lambda: last in answers and last in images, timeout=30)
    peer.spin_for(0.3)
    return sent_at, answers, images


def _report(
    output: Path,
    args: argparse.Namespace,
    model: str,
    random_weights: bool,
    frames: list,
    sent_at: dict,
    answers: dict,
    images: dict,
) -> int:
    records, latencies, errors, persons = [], [], [], 0
    errors_3d: list[float] = []  # metres, per keypoint with a position
    with_position = keypoints_total = 0
    for index, (key, sent) in enumerate(sent_at.items()):
        truth = frames[index][1]
        record: dict[str, Any] = {
            "frame": index,
            "stamp": {"sec": key[0], "nanosec": key[1]},
            "truth_keypoints": None if truth is None else np.round(truth, 2).tolist(),
            "answered": key in answers,
        }
        if key in answers:
            msg, arrived = answers[key]
            latencies.append((arrived - sent) * 1e3)
            record["latency_ms"] = round(latencies[-1], 2)
            record["image_size"] = [msg.image_width, msg.image_height]
            record["persons"] = [_person_json(p) for p in msg.persons]
            persons += len(msg.persons)
            if msg.persons and truth is not None:
                best = np.array([[k.x, k.y] for k in msg.persons[0].keypoints])
                errors.append(float(np.linalg.norm(best - truth, axis=1).mean()))
            if msg.persons and args.depth and truth is not None:
                # The truth in 3D: the drawn keypoints back-projected at the figure's distance.
                truth_3d = DEMO_CAMERA.back_project(truth, FIGURE_DISTANCE_M)
                for keypoint, point in zip(msg.persons[0].keypoints, truth_3d, strict=True):
                    keypoints_total += 1
                    if keypoint.has_position:
                        with_position += 1
                        got = (keypoint.position.x, keypoint.position.y, keypoint.position.z)
                        errors_3d.append(float(np.linalg.norm(np.subtract(got, point))))
        if key in images:
            image = images[key]
            pixels = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, -1)
            bgr = pixels if image.encoding == "bgr8" else pixels[..., ::-1]
            cv2.imwrite(str(output / "frames" / f"frame_{index:03d}.png"), bgr)
            record["annotated_image"] = f"frames/frame_{index:03d}.png"
        records.append(record)

    answered = len(latencies)
    summary = {
        "model": model,
        "random_weights": random_weights,
        "detector": args.detector,
        "input": str(args.video) if args.video else "drawn figure (pose_ros.demo_scene)",
        "frames_sent": len(sent_at),
        "frames_answered": answered,
        "frames_dropped_by_node": len(sent_at) - answered,
        "annotated_images": sum(key in images for key in sent_at),
        "persons_per_answered_frame": round(persons / answered, 2) if answered else 0.0,
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        "latency_ms_p90": round(float(np.percentile(latencies, 90)), 1) if latencies else None,
        "mean_keypoint_error_px": round(float(np.mean(errors)), 1) if errors else None,
        "depth": args.depth,
        "keypoints_with_position": (
            round(with_position / keypoints_total, 3) if keypoints_total else None
        ),
        "mean_keypoint_error_3d_m": round(float(np.mean(errors_3d)), 3) if errors_3d else None,
        "median_keypoint_error_3d_m": (
            round(float(np.median(errors_3d)), 3) if errors_3d else None
        ),
    }
    (output / "poses.json").write_text(
        json.dumps({"summary": summary, "frames": records}, indent=1)
    )

    weights = "RANDOM WEIGHTS" if random_weights else model
    source = f"video {args.video}" if args.video else "drawn figure"
    print(f"\npose_ros demo ({weights}, detector {args.detector}, {source})")
    print(
        f"  frames: {summary['frames_sent']} sent at {args.fps:g} Hz, {answered} answered on "
        f"{NAMESPACE}/poses ({summary['frames_dropped_by_node']} dropped: the node keeps only the "
        "newest frame while busy)"
    )
    print(f"  persons per frame: {summary['persons_per_answered_frame']}")
    if latencies:
        print(
            f"  latency image -> /poses: p50 {summary['latency_ms_p50']} ms, "
            f"p90 {summary['latency_ms_p90']} ms"
        )
    if errors:
        note = " (meaningless: random weights)" if random_weights else ""
        error_px = summary["mean_keypoint_error_px"]
        print(f"  mean keypoint error vs the drawn figure: {error_px} px{note}")
    if args.depth:
        share = summary["keypoints_with_position"]
        print(
            f"  depth: figure at {FIGURE_DISTANCE_M:g} m before a wall at {WALL_DISTANCE_M:g} m; "
            f"keypoints with a 3D position: {100 * (share or 0):.0f}%"
        )
        if errors_3d:
            note = " (meaningless: random weights)" if random_weights else ""
            print(
                "  3D keypoint error vs the figure: mean "
                f"{summary['mean_keypoint_error_3d_m']} m, median "
                f"{summary['median_keypoint_error_3d_m']} m over {len(errors_3d)} keypoints{note}"
            )
    annotated = summary["annotated_images"]
    print(f"  output: {output}/frames/ ({annotated} annotated frames), {output}/poses.json")
    if random_weights:
        print("  NOTE: untrained random weights - the keypoints are meaningless (see above).")
    return 0 if answered else 1


def _person_json(person: Any) -> dict[str, Any]:
    positions = [
        [round(k.position.x, 4), round(k.position.y, 4), round(k.position.z, 4)]
        if k.has_position
        else None
        for k in person.keypoints
    ]
    center = person.center
    return {
        "id": person.id,
        "positions_m": positions,
        "center_m": [round(center.x, 4), round(center.y, 4), round(center.z, 4)]
        if person.has_center
        else None,
        "score": round(person.score, 4),
        "box_score": round(person.box_score, 4),
        "box_xywh": [
            round(v, 2) for v in (person.x_min, person.y_min, person.width, person.height)
        ],
        "keypoints": [[round(k.x, 2), round(k.y, 2), round(k.score, 4)] for k in person.keypoints],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder for frames/, poses.json, the log")
    parser.add_argument(
        "--model", help="checkpoint path or registry name (default: cached or random)"
    )
    parser.add_argument(
        "--video",
        help="publish the frames of this video file instead of the drawn figure (colour only)",
    )
    parser.add_argument(
        "--detector",
        help="detector backend (default: full_image for the drawn figure, which fills the frame; "
        f"{DEFAULTS['detector.backend']} for --video, its weights downloaded by torchvision into "
        "the torch cache)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--frames",
        type=int,
        help=f"number of frames (default {DEFAULT_FRAMES}; with --video all of its frames)",
    )
    parser.add_argument(
        "--fps",
        type=float,
        help=f"publishing rate (default {DEFAULT_FPS:g}; with --video the video's own rate)",
    )
    parser.add_argument(
        "--no-depth",
        dest="depth",
        action="store_false",
        help="publish colour only (no depth image, no 3D positions)",
    )
    args = parser.parse_args(argv)
    if (args.frames is not None and args.frames < 1) or (args.fps is not None and args.fps <= 0):
        parser.error("--frames must be >= 1 and --fps > 0")
    if args.detector is None:
        args.detector = DEFAULTS["detector.backend"] if args.video else "full_image"
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except (RuntimeError, TimeoutError, FileNotFoundError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
