"""COCO person keypoints through pycocotools: one sample per labelled person instance.

The files are checked on load, and every problem is a :class:`DatasetError` that names the file,
so the commands can print one line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset, DistributedSampler

from pose_ros.detection import DetectorError, load_coco_detections
from pose_ros.geometry import box_to_center_scale, clip_boxes
from pose_ros.keypoints import COCO_PERSON_CATEGORY_ID, NUM_KEYPOINTS

from .augment import make_simcc_sample, make_training_sample
from .config import AugmentConfig


class DatasetError(Exception):
    """A missing or malformed annotation, detection or image file (the message names it)."""


@dataclass(frozen=True)
class PersonInstance:
    """One annotated person.

    Attributes:
        image_id: COCO image id.
        annotation_id: COCO annotation id.
        box: (4,) float32 ``x, y, w, h`` clipped to the image (positive width and height).
        keypoints: (17, 3) float32 ``x, y, v`` as annotated (v: 0 unlabelled, 1 hidden, 2 visible).
    """

    image_id: int
    annotation_id: int
    box: np.ndarray
    keypoints: np.ndarray


@dataclass
class CocoPersons:
    """A checked COCO keypoint file: the pycocotools index, image paths and person instances."""

    coco: COCO
    annotation_file: Path
    image_paths: dict[int, Path]
    image_sizes: dict[int, tuple[int, int]]  # id -> (height, width)
    instances: list[PersonInstance]


def load_coco_persons(
    annotation_file: str | Path, images_dir: str | Path, *, check_images: bool = True
) -> CocoPersons:
    """Read and check a COCO person-keypoints file.

    Kept: annotations of category 1 with ``iscrowd`` 0, at least one labelled keypoint and a box
    with area after clipping to the image (the reference's training and GT-box validation set).

    Raises:
        DatasetError: the file is missing, not JSON, lacks ``images``/``annotations``, has
            keypoints of the wrong length or boxes that are not 4 numbers, refers to an image it
            does not list, or (``check_images``) lists an image missing from ``images_dir``.
    """
    annotation_file = Path(annotation_file)
    images_dir = Path(images_dir)
    data = _read_json(annotation_file, "annotation file")
    if not isinstance(data, dict):
        raise DatasetError(f"annotation file {annotation_file}: top level is not a JSON object")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"annotation file {annotation_file}: no {key!r} list")
    if not images_dir.is_dir():
        raise DatasetError(f"image folder {images_dir} not found")
    data.setdefault("categories", [{"id": COCO_PERSON_CATEGORY_ID, "name": "person"}])

    image_paths: dict[int, Path] = {}
    image_sizes: dict[int, tuple[int, int]] = {}
    for image in data["images"]:
        try:
            image_id = int(image["id"])
            path = images_dir / str(image["file_name"])
            size = (int(image["height"]), int(image["width"]))
        except (KeyError, TypeError, ValueError):
            raise DatasetError(
                f"annotation file {annotation_file}: image entry without id/file_name/height/"
                f"width: {str(image)[:200]}"
            ) from None
        if check_images and not path.is_file():
            raise DatasetError(f"image {path} listed in {annotation_file} does not exist")
        image_paths[image_id] = path
        image_sizes[image_id] = size

    instances = []
    for ann in data["annotations"]:
        instance = _person_instance(ann, annotation_file, image_sizes)
        if instance is not None:
            instances.append(instance)

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return CocoPersons(coco, annotation_file, image_paths, image_sizes, instances)


def _person_instance(
    ann: Any, source: Path, image_sizes: dict[int, tuple[int, int]]
) -> PersonInstance | None:
    if not isinstance(ann, dict):
        raise DatasetError(f"annotation file {source}: annotation is not an object: {ann!r}")
    ann_id = ann.get("id")
    if ann.get("category_id", COCO_PERSON_CATEGORY_ID) != COCO_PERSON_CATEGORY_ID:
        return None
    raw = ann.get("keypoints")
    if not isinstance(raw, list) or len(raw) != NUM_KEYPOINTS * 3:
        length = len(raw) if isinstance(raw, list) else raw
        raise DatasetError(
            f"annotation file {source}: annotation {ann_id} has keypoints of length {length}, "
            f"expected {NUM_KEYPOINTS * 3} (COCO-17 x, y, v)"
        )
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise DatasetError(f"annotation file {source}: annotation {ann_id} has bbox {bbox!r}")
    image_id = ann.get("image_id")
    if image_id not in image_sizes:
        raise DatasetError(
            f"annotation file {source}: annotation {ann_id} refers to image {image_id}, "
            "which is not in its 'images' list"
        )
    try:
        keypoints = np.asarray(raw, dtype=np.float32).reshape(NUM_KEYPOINTS, 3)
        box_raw = np.asarray(bbox, dtype=np.float32)
    except (TypeError, ValueError):
        raise DatasetError(
            f"annotation file {source}: annotation {ann_id} has non-numbers"
        ) from None
    if ann.get("iscrowd", 0) or keypoints[:, 2].max() <= 0:
        return None
    height, width = image_sizes[image_id]
    box = clip_boxes(box_raw, width, height)[0]
    if box[2] <= 0 or box[3] <= 0:
        return None
    return PersonInstance(int(image_id), int(ann_id), box, keypoints)


def load_detections(
    detection_file: str | Path, persons: CocoPersons, *, score_threshold: float = 0.0
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Person boxes of a COCO results file, per image.

    Args:
        detection_file: JSON list of ``{"image_id", "bbox": [x, y, w, h], "score",
            "category_id"}`` (category 1, person, kept), read by
            :func:`pose_ros.detection.load_coco_detections`.
        persons: the annotation file the detections belong to (image ids and sizes).
        score_threshold: boxes with a lower score are dropped.

    Returns:
        ``{image_id: (boxes (N, 4) float32 clipped to the image, scores (N,) float32)}``; boxes
        left with no area are dropped.
    """
    detection_file = Path(detection_file)
    try:
        # One reader of COCO detection results for the library and training.
        per_image = load_coco_detections(detection_file, category_id=COCO_PERSON_CATEGORY_ID)
    except DetectorError as error:
        raise DatasetError(f"detection file: {error}") from None
    result = {}
    for image_id, detections in per_image.items():
        if image_id not in persons.image_sizes:
            raise DatasetError(
                f"detection file {detection_file}: image {image_id} is not in "
                f"{persons.annotation_file}"
            )
        height, width = persons.image_sizes[image_id]
        kept = detections.scores >= score_threshold
        clipped = clip_boxes(detections.boxes[kept], width, height)
        nonempty = (clipped[:, 2] > 0) & (clipped[:, 3] > 0)
        result[image_id] = (clipped[nonempty], detections.scores[kept][nonempty])
    return result


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR; EXIF orientation ignored, as the COCO annotations are."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise DatasetError(f"image {path} cannot be read")
    return image


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{what} {path} not found")
    try:
        with path.open("rb") as stream:
            return json.load(stream)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{what} {path} is not valid JSON ({error})") from None


class CocoKeypointTrainSet(Dataset):
    """Augmented training samples, indexed by ``(epoch, index)``.

    The augmentation of a sample is drawn from a generator seeded with ``(seed, epoch, index)``,
    so it does not depend on worker processes, their order or on resuming mid-run; from
    ``augment.switch_epoch`` on, ``augment.stage2`` replaces its fields (the epoch travels with
    the index, so persistent workers switch too).

    Each item is a dict: ``image`` (3, H, W) uint8 crop in ``color_order``, ``weights`` (K,)
    float32 target weights and the targets: ``heatmaps`` (K, h, w) float32, or with
    ``simcc_sigma`` given (SimCC networks) ``simcc_x`` (K, W * r) and ``simcc_y`` (K, H * r).
    """

    def __init__(
        self,
        persons: CocoPersons,
        *,
        input_size: tuple[int, int],
        heatmap_size: tuple[int, int],
        sigma: float,
        augment: AugmentConfig,
        color_order: str,
        seed: int,
        repeat: int = 1,
        simcc_sigma: tuple[float, float] | None = None,
        simcc_split_ratio: float = 2.0,
    ) -> None:
        if not persons.instances:
            raise DatasetError(f"annotation file {persons.annotation_file}: no labelled persons")
        self.persons = persons
        self.input_size = tuple(input_size)
        self.heatmap_size = tuple(heatmap_size)
        self.sigma = sigma
        self.augment = augment
        self.augment_stage2 = dataclasses.replace(augment, **augment.stage2)
        self.simcc_sigma = simcc_sigma
        self.simcc_split_ratio = simcc_split_ratio
        self.color_order = color_order
        self.seed = seed
        self.repeat = max(1, repeat)
        boxes = np.stack([inst.box for inst in persons.instances])
        aspect = self.input_size[1] / self.input_size[0]
        self.centers, self.scales = box_to_center_scale(boxes, aspect)

    def __len__(self) -> int:
        return len(self.persons.instances) * self.repeat

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        slot = index % len(self.persons.instances)
        instance = self.persons.instances[slot]
        rng = np.random.default_rng([self.seed, epoch, index])
        image = read_image(self.persons.image_paths[instance.image_id])
        switch = self.augment.switch_epoch
        augment = self.augment_stage2 if switch is not None and epoch >= switch else self.augment
        if self.simcc_sigma is not None:
            crop, x_labels, y_labels, weights = make_simcc_sample(
                image,
                instance.keypoints,
                self.centers[slot],
                self.scales[slot],
                input_size=self.input_size,
                sigma=self.simcc_sigma,
                augment=augment,
                rng=rng,
                color_order=self.color_order,
                split_ratio=self.simcc_split_ratio,
            )
            return {
                "image": torch.from_numpy(crop),
                "simcc_x": torch.from_numpy(x_labels),
                "simcc_y": torch.from_numpy(y_labels),
                "weights": torch.from_numpy(weights),
            }
        crop, heatmaps, weights = make_training_sample(
            image,
            instance.keypoints,
            self.centers[slot],
            self.scales[slot],
            input_size=self.input_size,
            heatmap_size=self.heatmap_size,
            sigma=self.sigma,
            augment=augment,
            rng=rng,
            color_order=self.color_order,
        )
        return {
            "image": torch.from_numpy(crop),
            "heatmaps": torch.from_numpy(heatmaps),
            "weights": torch.from_numpy(weights),
        }


class EpochIndexSampler(DistributedSampler):
    """A :class:`DistributedSampler` that yields ``(epoch, index)`` keys and can skip ahead.

    The epoch travels with each index so that persistent workers (which hold their own copy of
    the dataset) seed the augmentation correctly. ``skip`` drops the first samples of this
    rank's epoch order, to resume in the middle of an epoch.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(super().__iter__()):
            if position >= self.skip:
                yield (self.epoch, index)

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)
