"""MediaPipe BlazePose timing, run by ``bench/engines_bench.py`` in a throwaway venv (mediapipe is
never a pose_ros dependency)::

    python3 -m venv /tmp/mp_venv && /tmp/mp_venv/bin/pip install "mediapipe==0.10.14"
    POSE_ROS_MEDIAPIPE_PYTHON=/tmp/mp_venv/bin/python make bench

mediapipe 0.10.14 wheels carry the BlazePose "full" landmark model and the pose detector
(``mediapipe/modules/pose_landmark/pose_landmark_full.tflite``), so ``model_complexity=1`` runs
offline; "lite" and "heavy" are downloaded on first use and are not measured. Newer mediapipe
releases (1.x) ship no models at all and only the Tasks API, which needs a downloaded ``.task``.

Frames: the shared street video (5 real frames, people in them) resized to 640x480 and cycled, in
video mode (BlazePose tracks the person between frames, as in a live camera). Prints one JSON line
``{"ms_per_frame": ..., "note": ...}``. Standalone: this file imports nothing of pose_ros.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VIDEO = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mmpose" / "demo" / "resources"
) / "demo.mp4"


def main() -> int:
    import cv2
    import mediapipe as mp

    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--video", default=str(VIDEO))
    args = parser.parse_args()
    capture = cv2.VideoCapture(args.video)
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(cv2.resize(image, (640, 480)), cv2.COLOR_BGR2RGB))
    if not frames:
        raise SystemExit(f"cannot read {args.video}")
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1) as pose:
        found = 0
        for image in frames:  # warm-up
            pose.process(image)
        start = time.perf_counter()
        for index in range(args.frames):
            result = pose.process(frames[index % len(frames)])
            found += result.pose_landmarks is not None
        ms = (time.perf_counter() - start) * 1e3 / args.frames
    note = (
        f"mediapipe {mp.__version__}, full model, video mode, person found in "
        f"{found}/{args.frames} frames"
    )
    print(json.dumps({"ms_per_frame": ms, "note": note}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
