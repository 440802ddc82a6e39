"""Camera-like frames made of the 4 annotated COCO images (../shared/data): each letterboxed into
a 640x480 frame with its persons' ground-truth boxes, optionally shifted to make motion. The
network trained on these images (the overfit run of test_training_support) finds their keypoints
confidently, so the temporal rules of the stream core can be judged on real poses.

:class:`SceneBoxesDetector` is a test-only detector: it knows the boxes of the frames it was shown
(by their pixels), as a perfect person detector would find them. Registered nowhere in the package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pose_ros.detection.base import PersonDetector, RawDetections

FRAME_SIZE = (480, 640)  # height, width


@dataclass(frozen=True)
class Scene:
    """One COCO image in a camera frame: (H, W, 3) uint8 RGB and (N, 4) xywh person boxes."""

    image_id: int
    image: np.ndarray
    boxes: np.ndarray

    def shifted(self, dx: int, dy: int = 0) -> Scene:
        """The scene moved by (dx, dy) pixels (what comes in at the border is black)."""
        height, width = self.image.shape[:2]
        matrix = np.float32([[1, 0, dx], [0, 1, dy]])
        image = cv2.warpAffine(self.image, matrix, (width, height))
        boxes = self.boxes + np.array([dx, dy, 0, 0], np.float32)
        return Scene(self.image_id, image, boxes)

    def resized(self, width: int, height: int) -> Scene:
        sx, sy = width / self.image.shape[1], height / self.image.shape[0]
        image = cv2.resize(self.image, (width, height), interpolation=cv2.INTER_LINEAR)
        return Scene(self.image_id, image, self.boxes * np.array([sx, sy, sx, sy], np.float32))


def load_scenes(coco_dir: Path, size: tuple[int, int] = FRAME_SIZE) -> list[Scene]:
    """The 4 images in annotation order (ids 785, 40083, 196141, 197388), letterboxed."""
    annotations = json.loads((coco_dir / "test_coco.json").read_text())
    height, width = size
    scenes = []
    for image_info in annotations["images"]:
        boxes = [
            a["bbox"]
            for a in annotations["annotations"]
            if a["image_id"] == image_info["id"] and a["num_keypoints"] > 0
        ]
        bgr = cv2.imread(str(coco_dir / image_info["file_name"]))
        source = np.ascontiguousarray(bgr[..., ::-1])
        h, w = source.shape[:2]
        scale = min(width / w, height / h)
        new_w, new_h = round(w * scale), round(h * scale)
        frame = np.zeros((height, width, 3), np.uint8)
        x0, y0 = (width - new_w) // 2, (height - new_h) // 2
        frame[y0 : y0 + new_h, x0 : x0 + new_w] = cv2.resize(source, (new_w, new_h))
        scaled = np.array(boxes, np.float32) * scale + np.array([x0, y0, 0, 0], np.float32)
        scenes.append(Scene(int(image_info["id"]), frame, scaled))
    return scenes


def _key(image: np.ndarray, color_order: str) -> str:
    rgb = image if color_order == "RGB" else image[..., ::-1]
    return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()


class SceneBoxesDetector(PersonDetector):
    """Test-only: the boxes of the frames it was shown with :meth:`learn` (score 0.95), none for
    other frames. Counts its runs."""

    apply_nms = False

    def __init__(self) -> None:
        super().__init__()
        self._boxes: dict[str, np.ndarray] = {}
        self.runs = 0

    def learn(self, scene: Scene) -> None:
        self._boxes[_key(scene.image, "RGB")] = np.asarray(scene.boxes, np.float32)

    def _predict(self, image: np.ndarray, color_order: str) -> RawDetections:
        self.runs += 1
        boxes = self._boxes.get(_key(image, color_order), np.zeros((0, 4), np.float32))
        xyxy = boxes.copy()
        xyxy[:, 2:] += xyxy[:, :2]
        return RawDetections(xyxy, np.full(len(xyxy), 0.95, np.float32))
