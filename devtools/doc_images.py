"""The pictures of the README, made from the demo's own output (``make docs-images``).

::

    python -m devtools.doc_images                      # figure network, demo, pictures
    python -m devtools.doc_images --model best.pth     # the demo with these weights instead
    python -m devtools.doc_images --demo-output demo_output   # only draw, from a finished demo

Steps:

1. Weights. ``--model`` names them (a checkpoint or a registry name such as the published
   ``mmpose_res50_coco_256x192``). Without it, a small network (ResNet-18, 128x96) is trained
   with ``training/`` on drawn frames of the demo figure (``pose_ros.demo_scene``) at other
   moments than the demo's, into ``runs/doc_figure/`` (80 steps, about 15 minutes on 2 CPU
   cores; pycocotools AP about 0.76 on 16 held-out frames; reused when ``best.pth`` is there).
   The pictures then show what the node does with a trained network, without downloading
   anything.
2. The demo (``devtools.demo``) with those weights, depth on, into ``demo_output_docs/``.
3. ``docs/images/annotated_frame.png``: one frame as the node published it on ``poses/image``;
   ``docs/images/markers_3d.png``: the content of that frame's ``poses/markers`` (the keypoints'
   3D positions in metres and the skeleton between them, coloured by side as the markers are),
   drawn from an oblique viewpoint with OpenCV, since rviz2 is not needed for it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose_ros.demo_scene import figure_keypoints, render_figure
from pose_ros.keypoints import COCO_KEYPOINT_NAMES, SKELETON_EDGES

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO_ROOT / "docs" / "images"
FIGURE_RUN = REPO_ROOT / "runs" / "doc_figure"
#: Frame of the demo the pictures show (the figure mid-wave).
DEFAULT_FRAME = 12

# Marker colours of pose_ros.ros.markers, RGB: left orange, right blue, centre green.
_LEFT, _RIGHT, _CENTRE = (255, 140, 0), (30, 120, 255), (0, 190, 90)


def _side(name: str) -> tuple[int, int, int]:
    if name.startswith("left"):
        return _LEFT
    if name.startswith("right"):
        return _RIGHT
    return _CENTRE


def _edge_colour(a: int, b: int) -> tuple[int, int, int]:
    sides = {_side(COCO_KEYPOINT_NAMES[a]), _side(COCO_KEYPOINT_NAMES[b])}
    return sides.pop() if len(sides) == 1 else _CENTRE


# --- 1. the figure network -------------------------------------------------------------------


def write_figure_dataset(folder: Path, count: int, seed: int) -> Path:
    """``count`` drawn frames of the demo figure at random moments (not the demo's 0.1 s grid)
    and a COCO keypoints file for them; the box is the whole frame, as the demo's full_image
    detector gives it. Returns the annotation file."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        t = float(rng.uniform(0.0, 60.0))
        keypoints = figure_keypoints(t)
        frame = render_figure(keypoints)
        name = f"{index:05d}.jpg"
        cv2.imwrite(str(folder / "images" / name), frame[..., ::-1])
        height, width = frame.shape[:2]
        images.append({"id": index + 1, "file_name": name, "width": width, "height": height})
        flat = np.concatenate([keypoints, np.full((17, 1), 2.0)], axis=1).reshape(-1)
        annotations.append(
            {
                "id": index + 1,
                "image_id": index + 1,
                "category_id": 1,
                "bbox": [0.0, 0.0, float(width), float(height)],
                "area": float(width * height),
                "iscrowd": 0,
                "num_keypoints": 17,
                "keypoints": [round(float(v), 2) for v in flat],
            }
        )
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES)}],
    }
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def train_figure_network(run: Path) -> Path:
    """``run/best.pth``: the tiny network trained on drawn figure frames (reused when there)."""
    best = run / "best.pth"
    if best.is_file():
        print(f"figure network: {best} (already trained)", flush=True)
        return best
    train_set = write_figure_dataset(run / "train_data", 256, seed=1)
    val_set = write_figure_dataset(run / "val_data", 16, seed=2)
    overrides = [
        f"data.train_images={run / 'train_data' / 'images'}",
        f"data.train_annotations={train_set}",
        f"data.val_images={run / 'val_data' / 'images'}",
        f"data.val_annotations={val_set}",
        "data.val_detections=null",
        "data.workers=0",
        "data.batch_size=16",
        "augment.rotation_factor=15.0",
        "augment.half_body_prob=0.0",
        "optim.lr=1.0e-3",
        "optim.epochs=5",
        "optim.milestones=[15]",
        "eval.flip_test=false",
        "train.eval_interval=5",
        "train.vis_images=0",
    ]
    command = [sys.executable, "-m", "training.train", "tiny_res18_128x96", "--overwrite"]
    command += ["--output-dir", str(run), "--set", *overrides]
    print("training the figure network:", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    return best


# --- 2. the demo -------------------------------------------------------------------------------


def run_demo(model: str, output: Path) -> None:
    command = [sys.executable, "-m", "devtools.demo", "--output", str(output), "--model", model]
    print("running the demo:", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO_ROOT, check=True)


# --- 3. the pictures ---------------------------------------------------------------------------


def _frame_record(demo_output: Path, frame: int) -> dict[str, Any]:
    poses = json.loads((demo_output / "poses.json").read_text())
    records = [r for r in poses["frames"] if r.get("persons") and r.get("annotated_image")]
    if not records:
        raise RuntimeError(f"{demo_output}/poses.json holds no answered frame with a person")
    # The requested frame, or the answered one nearest to it (the node drops frames while busy).
    return min(records, key=lambda r: abs(r["frame"] - frame))


def annotated_frame(demo_output: Path, record: dict[str, Any], destination: Path) -> None:
    """The node's annotated image of ``record``, as a PNG."""
    image = cv2.imread(str(demo_output / record["annotated_image"]))
    if image is None:
        raise RuntimeError(f"cannot read {demo_output / record['annotated_image']}")
    cv2.imwrite(str(destination), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def _view(points: np.ndarray, yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Optical-frame points (x right, y down, z forward) seen by a virtual camera circling the
    scene: (N, 3) in view coordinates (x right, y down, depth)."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    rot_y = np.array(
        [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]]
    )
    rot_x = np.array(
        [[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]]
    )
    return points @ (rot_x @ rot_y).T


def markers_3d(
    record: dict[str, Any], destination: Path, *, size: tuple[int, int] = (640, 480)
) -> None:
    """Draw the markers of ``record``'s persons (3D keypoints and skeleton, metres, in the
    camera's optical frame) from a viewpoint 35 degrees to the side and 20 above, with the
    camera, its optical axis and a 0.5 m floor grid for scale."""
    width, height = size
    persons = [p for p in record["persons"] if any(p["positions_m"])]
    if not persons:
        raise RuntimeError(f"frame {record['frame']} has no keypoint with a 3D position")
    canvas = np.full((height, width, 3), 248, np.uint8)
    yaw, pitch = -35.0, -20.0
    points = [np.array([q if q else [np.nan] * 3 for q in p["positions_m"]]) for p in persons]
    centre = np.nanmean(np.concatenate(points), axis=0)
    floor_y = float(np.nanmax(np.concatenate(points)[:, 1])) + 0.05
    # Fit the view to what it shows: the camera, the persons and the floor beneath them.
    far = float(centre[2]) + 0.75
    extent = [np.zeros(3), *[q for q in np.concatenate(points) if not np.isnan(q).any()]]
    extent += [np.array([x, floor_y, z]) for x in (-1.0, 1.0) for z in (0.0, far)]
    seen = _view(np.stack(extent), yaw, pitch)[:, :2]
    low, high = seen.min(axis=0), seen.max(axis=0)
    scale = 0.9 * min(width / (high[0] - low[0]), (height - 30) / (high[1] - low[1]))
    offset = np.array([width, height - 30]) / 2 - scale * (low + high) / 2

    def project(xyz: np.ndarray) -> np.ndarray:
        return offset + scale * _view(np.atleast_2d(xyz), yaw, pitch)[:, :2]

    def line(a: np.ndarray, b: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
        (pa, pb) = project(np.stack([a, b]))
        cv2.line(canvas, _px(pa), _px(pb), colour[::-1], thickness, cv2.LINE_AA)

    # Floor grid (0.5 m), from the camera to beyond the persons.
    for x in np.arange(-1.0, 1.01, 0.5):
        line(np.array([x, floor_y, 0.0]), np.array([x, floor_y, far]), (205, 205, 205), 1)
    for z in np.arange(0.0, far + 0.01, 0.5):
        line(np.array([-1.0, floor_y, z]), np.array([1.0, floor_y, z]), (205, 205, 205), 1)
    # The camera: a small frustum at the origin and its optical axis (z).
    signs = ((-1, -1), (1, -1), (1, 1), (-1, 1))
    corners = [np.array([sx * 0.12, sy * 0.09, 0.15]) for sx, sy in signs]
    for index, corner in enumerate(corners):
        line(np.zeros(3), corner, (60, 60, 60), 1)
        line(corner, corners[(index + 1) % 4], (60, 60, 60), 1)
    line(np.zeros(3), np.array([0.0, 0.0, float(centre[2])]), (150, 150, 150), 1)
    origin = _px(project(np.zeros(3))[0])
    cv2.putText(canvas, "camera", (origin[0] + 8, origin[1] + 18), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (60, 60, 60), 1, cv2.LINE_AA)  # fmt: skip
    for person, xyz in zip(persons, points, strict=True):
        for a, b in SKELETON_EDGES:
            if not (np.isnan(xyz[a]).any() or np.isnan(xyz[b]).any()):
                line(xyz[a], xyz[b], _edge_colour(a, b), 3)
        for index, point in enumerate(xyz):
            if not np.isnan(point).any():
                colour = _side(COCO_KEYPOINT_NAMES[index])[::-1]
                cv2.circle(canvas, _px(project(point)[0]), 5, colour, -1, cv2.LINE_AA)
        if person.get("center_m"):
            label = "z = {:.2f} m".format(person["center_m"][2])
            anchor = _px(project(np.array(person["center_m"]))[0])
            cv2.putText(canvas, label, (anchor[0] + 40, anchor[1]), cv2.FONT_HERSHEY_SIMPLEX,
                        0.55, (40, 40, 40), 1, cv2.LINE_AA)  # fmt: skip
    caption = "poses/markers: 3D keypoints (m) in the camera's optical frame, grid 0.5 m"
    cv2.putText(canvas, caption, (10, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (80, 80, 80), 1, cv2.LINE_AA)  # fmt: skip
    cv2.imwrite(str(destination), canvas, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def _px(point: np.ndarray) -> tuple[int, int]:
    return round(float(point[0])), round(float(point[1]))


def make_pictures(demo_output: Path, images_dir: Path, frame: int = DEFAULT_FRAME) -> list[Path]:
    images_dir.mkdir(parents=True, exist_ok=True)
    record = _frame_record(demo_output, frame)
    written = [images_dir / "annotated_frame.png", images_dir / "markers_3d.png"]
    annotated_frame(demo_output, record, written[0])
    markers_3d(record, written[1])
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KB, demo frame {record['frame']})")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="weights for the demo (default: the figure network)")
    parser.add_argument(
        "--demo-output", help="draw from this finished demo output instead of running the demo"
    )
    parser.add_argument("--frame", type=int, default=DEFAULT_FRAME, help="demo frame to show")
    parser.add_argument("--images", default=str(IMAGES_DIR), help="where the PNGs go")
    args = parser.parse_args(argv)
    if args.demo_output:
        demo_output = Path(args.demo_output)
    else:
        model = args.model or str(train_figure_network(FIGURE_RUN))
        demo_output = REPO_ROOT / "demo_output_docs"
        run_demo(model, demo_output)
    make_pictures(demo_output, Path(args.images), args.frame)
    return 0


if __name__ == "__main__":
    sys.exit(main())
