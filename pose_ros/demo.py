"""The pose_ros demo: the real node on frames the repository draws itself.

    python -m pose_ros.demo --output demo_output            # (make demo)
    python -m pose_ros.demo --output out --model path/to/checkpoint.pt --device cuda

Starts the installed ``pose_node`` in its own process (as ``ros2 launch`` would, with the
installed config/pose.yaml), publishes drawn frames of a waving figure (pose_ros.demo_scene) on
its image topic over DDS, collects ``/pose_demo/poses`` and the node's annotated images, and
writes to the output folder:

* ``frames/frame_NNN.png``: the annotated frames as the node published them on poses/image;
* ``poses.json``: per frame the stamp, latency, persons (box, scores, 17 keypoints) and the
  keypoints the figure was drawn from;
* ``pose_node.log``: the node's log.

Without trained weights (no ``--model``, nothing in the checkpoint cache) it says so and runs
with untrained random weights: the keypoints are then meaningless, the plumbing is real. Run it
through scripts/ros-env (``make demo``), which keeps DDS on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import Image

from pose_ros.demo_scene import demo_frames
from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import array_to_image_msg
from pose_ros.ros.harness import Peer, make_header, reliable, running_pose_node
from pose_ros.ros.params import DEFAULT_MODEL

NAMESPACE = "/pose_demo"
FRAME_ID = "demo_camera_optical_frame"
RANDOM_MODEL = "random:simplebaseline_res18"


def choose_model(requested: str | None) -> tuple[str, bool, str]:
    """(model parameter, random weights?, a sentence saying which weights and why)."""
    if requested:
        return requested, False, f"model: {requested}"
    from pose_ros.models import PUBLISHED_CHECKPOINTS, checkpoint_cache_dir

    entry = PUBLISHED_CHECKPOINTS.get(DEFAULT_MODEL)
    if entry is not None and (checkpoint_cache_dir() / entry.filename).is_file():
        return DEFAULT_MODEL, False, f"model: {DEFAULT_MODEL} (found in the checkpoint cache)"
    return (
        RANDOM_MODEL,
        True,
        "NO TRAINED WEIGHTS: no --model given and no published checkpoint in "
        f"{checkpoint_cache_dir()}. Running with UNTRAINED RANDOM WEIGHTS ({RANDOM_MODEL}): the "
        "node, topics and drawing are real, the keypoints are meaningless. Pass --model "
        "<checkpoint or registry name> for real poses (README: Weights).",
    )


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
    }
    if random_weights:
        # Untrained scores are low: draw every keypoint anyway, so the (meaningless) skeleton
        # shows that drawing and markers work.
        parameters["debug_image.keypoint_threshold"] = 0.0
        parameters["markers.keypoint_threshold"] = 0.0
    frames = list(demo_frames(args.frames, fps=args.fps))
    print(f"starting pose_node ({NAMESPACE}), log: {output / 'pose_node.log'}", flush=True)
    with running_pose_node(output / "pose_node.log", NAMESPACE, parameters) as node:
        peer = Peer("pose_demo")
        try:
            result = _exchange(peer, node, frames, args.fps)
        finally:
            peer.close()
    sent_at, answers, images = result
    return _report(output, args, model, random_weights, frames, sent_at, answers, images)


def _exchange(peer: Peer, node: Any, frames: list, fps: float) -> tuple[dict, dict, dict]:
    """Publish the frames at ``fps`` and collect answers: (stamp → send time, stamp → (poses,
    arrival time), stamp → annotated image)."""
    publisher = peer.node.create_publisher(Image, f"{NAMESPACE}/image", reliable(5))
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
    warmup = array_to_image_msg(frames[0][0], "rgb8", header=_wall_header(1.0))
    warmup_key = _stamp_key(warmup.header)
    if not peer.publish_until(
        lambda: publisher.publish(warmup), lambda: warmup_key in images, timeout=60, period=1.0
    ):
        raise RuntimeError(f"pose_node did not answer within 60 s:\n{node.log()[-3000:]}")

    sent_at: dict[tuple[int, int], float] = {}
    start = time.monotonic()
    for index, (rgb, _) in enumerate(frames):
        now = time.time()
        msg = array_to_image_msg(rgb, "rgb8", header=_wall_header(now))
        sent_at[_stamp_key(msg.header)] = now
        publisher.publish(msg)
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
    for index, (key, sent) in enumerate(sent_at.items()):
        truth = frames[index][1]
        record: dict[str, Any] = {
            "frame": index,
            "stamp": {"sec": key[0], "nanosec": key[1]},
            "truth_keypoints": np.round(truth, 2).tolist(),
            "answered": key in answers,
        }
        if key in answers:
            msg, arrived = answers[key]
            latencies.append((arrived - sent) * 1e3)
            record["latency_ms"] = round(latencies[-1], 2)
            record["image_size"] = [msg.image_width, msg.image_height]
            record["persons"] = [_person_json(p) for p in msg.persons]
            persons += len(msg.persons)
            if msg.persons:
                best = np.array([[k.x, k.y] for k in msg.persons[0].keypoints])
                errors.append(float(np.linalg.norm(best - truth, axis=1).mean()))
        if key in images:
            image = images[key]
            pixels = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
            bgr = pixels if image.encoding == "bgr8" else pixels[..., ::-1]
            cv2.imwrite(str(output / "frames" / f"frame_{index:03d}.png"), bgr)
            record["annotated_image"] = f"frames/frame_{index:03d}.png"
        records.append(record)

    answered = len(latencies)
    summary = {
        "model": model,
        "random_weights": random_weights,
        "detector": args.detector,
        "frames_sent": len(sent_at),
        "frames_answered": answered,
        "frames_dropped_by_node": len(sent_at) - answered,
        "annotated_images": sum(key in images for key in sent_at),
        "persons_per_answered_frame": round(persons / answered, 2) if answered else 0.0,
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        "latency_ms_p90": round(float(np.percentile(latencies, 90)), 1) if latencies else None,
        "mean_keypoint_error_px": round(float(np.mean(errors)), 1) if errors else None,
    }
    (output / "poses.json").write_text(
        json.dumps({"summary": summary, "frames": records}, indent=1)
    )

    weights = "RANDOM WEIGHTS" if random_weights else model
    print(f"\npose_ros demo ({weights}, detector {args.detector})")
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
    annotated = summary["annotated_images"]
    print(f"  output: {output}/frames/ ({annotated} annotated frames), {output}/poses.json")
    if random_weights:
        print("  NOTE: untrained random weights - the keypoints are meaningless (see above).")
    return 0 if answered else 1


def _person_json(person: Any) -> dict[str, Any]:
    return {
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
        "--detector",
        default="full_image",
        help="detector backend (default full_image: the figure fills the frame; a torchvision "
        "name needs its weights in the torch cache)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--frames", type=int, default=40, help="number of frames (default 40)")
    parser.add_argument("--fps", type=float, default=10.0, help="publishing rate (default 10)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.fps <= 0:
        parser.error("--frames must be >= 1 and --fps > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except (RuntimeError, TimeoutError, FileNotFoundError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
