"""pose-ros-infer on a folder of real images and on a real video."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
from pycocotools.coco import COCO


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pose_ros.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_folder_of_images_gives_annotated_images_and_coco_results(
    tmp_path: Path, coco_dir: Path, coco_annotations: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    result = run_cli(
        str(coco_dir),
        "--model",
        str(tiny_checkpoint),
        "--detector",
        "full_image",
        "--device",
        "cpu",
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    annotated = sorted(out.glob("*_pose.jpg"))
    assert len(annotated) == 4
    assert cv2.imread(str(annotated[0])) is not None
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 4 and all(len(r["keypoints"]) == 51 for r in results)
    # COCO file names give COCO image ids: pycocotools accepts the file against the annotations.
    gt = COCO(str(coco_annotations))
    dt = gt.loadRes(str(out / "results.json"))
    assert sorted(dt.getImgIds()) == sorted(gt.getImgIds())
    assert "4 frame(s), 4 person(s)" in result.stdout
    # A folder of unrelated images is not a sequence unless --tracking says so: no track ids.
    assert all("track_id" not in r for r in results)


def test_video_gives_an_annotated_video(
    tmp_path: Path, posetrack_dir: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "video"
    video = posetrack_dir / "000001_mpiinew_test.mp4"
    result = run_cli(
        str(video),
        "--model",
        str(tiny_checkpoint),
        "--detector",
        "full_image",
        "--device",
        "cpu",
        "--output",
        str(out),
        "--flip-test",
        "--decode",
        "dark",
    )
    assert result.returncode == 0, result.stderr
    written = cv2.VideoCapture(str(out / "000001_mpiinew_test_pose.mp4"))
    frames = int(written.get(cv2.CAP_PROP_FRAME_COUNT))
    written.release()
    assert frames == 5
    results = json.loads((out / "results.json").read_text())
    assert [r["image_id"] for r in results] == [0, 1, 2, 3, 4]
    # A video is tracked by default: the one person gets an id once confirmed (min_hits 3), and
    # keeps it.
    assert [r["track_id"] for r in results] == [-1, -1, 1, 1, 1]
    assert "tracking: 1 track(s) started, detector on 5 of 5 frame(s)" in result.stdout


def test_clear_errors_for_bad_input(tmp_path: Path, coco_dir: Path, tiny_checkpoint: Path) -> None:
    missing = run_cli(
        str(tmp_path / "nothing.jpg"), "--model", str(tiny_checkpoint), "--detector", "full_image"
    )
    assert missing.returncode == 2
    assert "nothing.jpg: no such file" in missing.stderr and "Traceback" not in missing.stderr
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    bad_model = run_cli(str(coco_dir), "--model", str(corrupt), "--detector", "full_image")
    assert bad_model.returncode == 2
    assert "corrupt.pth" in bad_model.stderr and "Traceback" not in bad_model.stderr
    random = run_cli(
        str(coco_dir), "--model", "random:simplebaseline_res18", "--detector", "full_image"
    )
    assert random.returncode == 2 and "allow_random_weights" in random.stderr
    interval = run_cli(str(coco_dir), "--model", str(tiny_checkpoint), "--detector-interval", "5")
    assert interval.returncode == 2 and "needs tracking" in interval.stderr
    not_image = tmp_path / "folder"
    not_image.mkdir()
    (not_image / "a.jpg").write_bytes(b"garbage")
    (not_image / "b.jpg").write_bytes(
        cv2.imencode(".jpg", cv2.imread(str(coco_dir / "000000000785.jpg")))[1]
    )
    partial = run_cli(
        str(not_image),
        "--model",
        str(tiny_checkpoint),
        "--detector",
        "full_image",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "partial"),
    )
    # The unreadable file is reported; the good one is still processed and written.
    assert partial.returncode == 0, partial.stderr
    assert "a.jpg: not a readable image" in partial.stderr
    assert len(json.loads((tmp_path / "partial" / "results.json").read_text())) == 1
