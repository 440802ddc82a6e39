"""The inference pipeline: an image in, persons with 17 keypoints out. No ROS here: the node, the
command-line tool and evaluation all call :class:`PoseEstimator`.

Per frame: person boxes (detector, or given) → centre/scale → all crops of the frame in one batch on
the compute device → normalisation in the weights' colour order → network (optionally with the flip
test in the same batch) → heatmap decoding → image pixels → rescoring.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from pose_ros import _requirements, codec, geometry
from pose_ros.images import check_image
from pose_ros.keypoints import COCO_PERSON_CATEGORY_ID, NUM_KEYPOINTS

if TYPE_CHECKING:
    from pose_ros.detection import PersonDetector
    from pose_ros.models import Preprocessing

# PyTorch comes from pip for ROS users: a too-old one gets a clear message, not an AttributeError.
_requirements.check_torch()

#: Prefix of a model name that asks for untrained weights (tests, demos without weights).
RANDOM_WEIGHTS_PREFIX = "random:"

logger = logging.getLogger(__name__)
#: Smallest image side (pixels) the pipeline accepts; the node refuses smaller frames as bad input.
MIN_IMAGE_SIDE = 2


class PoseNetwork(Protocol):
    """What the pipeline needs of a network: a PyTorch :class:`~pose_ros.models.PoseNet`, or a
    runner of an exported model (``pose_ros.runtime``) with the same attributes."""

    preprocessing: Preprocessing
    num_keypoints: int

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def heatmap_size(self) -> tuple[int, int]: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Person:
    """One person found in an image.

    Attributes:
        box: (4,) float32 ``x_min, y_min, width, height`` in source-image pixels.
        box_score: detector confidence 0..1 (1.0 for given boxes without scores; for a box carried
            over from the previous frame's keypoints, the score of the track it came from).
        score: ``box_score`` × the mean score of the keypoints above the keypoint threshold (0.2),
            the reference's rescoring; 0 when no keypoint passes.
        keypoints: (17, 3) float32 ``x, y, score``: pixels of the source image (integer values at
            pixel centres, clipped to the image) and confidence clipped to 0..1, COCO order. The
            scores are always the network's; only ``x, y`` may be smoothed over time.
        track_id: identity across frames (:mod:`pose_ros.tracking`), -1 when not tracked or not
            yet confirmed.
        positions: (17, 3) float32 metres in the camera's optical frame (x right, y down,
            z forward), NaN rows where no depth reading exists; None without depth.
        center: (3,) float32 metres, the person's 3D centre (median of the torso keypoints'
            positions); None without depth or without a torso position.
    """

    box: np.ndarray
    box_score: float
    score: float
    keypoints: np.ndarray
    track_id: int = -1
    positions: np.ndarray | None = None
    center: np.ndarray | None = None


@dataclass(frozen=True)
class FrameBoxes:
    """One frame and the person boxes to estimate in it (an input of
    :meth:`PoseEstimator.estimate_batch`).

    Attributes:
        image: (H, W, 3) uint8 in ``color_order``.
        boxes: (N, 4) ``x_min, y_min, width, height`` pixels.
        box_scores: (N,) scores of the boxes.
        color_order: "RGB" or "BGR".
    """

    image: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    color_order: str = "RGB"


@dataclass
class StageTimings:
    """Milliseconds spent in each stage of the last call."""

    detect_ms: float = 0.0
    crop_ms: float = 0.0
    network_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    persons: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when available, else ``cpu``; other names as torch reads them."""
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"invalid device {device!r}: {error}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: only 'cpu', 'cuda' and 'cuda:N' are supported")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} asked for, but CUDA is not available on this machine "
                "(use device 'cpu' or 'auto')"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device {str(device)!r} does not exist: this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
        if resolved.index is None:  # one name for one GPU (runners, streams, comparisons)
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def coco_keypoint_results(
    persons: list[Person], image_id: int, *, decimals: int | None = None
) -> list[dict]:
    """Persons as COCO keypoint results (the format of pycocotools ``loadRes``).

    Each entry holds ``image_id``, ``category_id`` (person), ``keypoints`` (51 numbers x, y,
    score), ``score`` and, for readers other than COCOeval, ``bbox`` and ``box_score``.
    ``decimals`` rounds the numbers (smaller files); None keeps full precision.
    """

    def numbers(values: np.ndarray) -> list[float]:
        floats = np.asarray(values, dtype=np.float64).reshape(-1).tolist()
        return floats if decimals is None else [round(v, decimals) for v in floats]

    return [
        {
            "image_id": image_id,
            "category_id": COCO_PERSON_CATEGORY_ID,
            "keypoints": numbers(person.keypoints),
            "score": numbers(np.array([person.score]))[0],
            "bbox": numbers(person.box),
            "box_score": numbers(np.array([person.box_score]))[0],
        }
        for person in persons
    ]


def rescore(
    box_scores: np.ndarray, keypoint_scores: np.ndarray, threshold: float = 0.2
) -> np.ndarray:
    """Person scores: box score × mean of the keypoint scores above ``threshold`` (0 if none).

    Args:
        box_scores: (N,) detector scores.
        keypoint_scores: (N, K) keypoint confidences.
    """
    above = keypoint_scores > threshold
    counts = above.sum(axis=1)
    sums = np.where(above, keypoint_scores, 0.0).sum(axis=1)
    mean = np.divide(sums, counts, out=np.zeros_like(sums, dtype=np.float64), where=counts > 0)
    return (np.asarray(box_scores, dtype=np.float64) * mean).astype(np.float32)


class PoseEstimator:
    """Image → persons with 17 keypoints, all persons of a frame in one network batch.

    Args:
        model: a :class:`~pose_ros.models.PoseNet` (moved to ``device`` and put in eval mode) or
            a runner of an exported model with the same attributes.
        detector: person detector; None when boxes are always given (evaluation, external
            detector).
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        fp16: half precision for the network; default on for CUDA. Not available on the CPU.
        flip_test: also run the mirrored crops (same batch) and average the heatmaps.
        decode: "quarter" (argmax + quarter offset) or "dark".
        keypoint_score_threshold: keypoints counted in the person score (the reference's 0.2).
        max_persons: at most this many persons per frame, highest box scores first.
        device_decode: decode the heatmaps on the device (torch; only (N, 17, 3) goes back to the
            host) rather than with the numpy codec; default on for CUDA. Same results.
        copy_model: the caller's module is never changed: when it needs another device,
            precision, memory layout or eval mode, the estimator works on a copy (default None:
            copy only then). False hands the module over to be changed in place (saves the copy's
            memory; :meth:`from_names` does so with the model it loaded itself).

    The network is ``self.model`` (the module or runner actually run); ``self.engine`` says what
    runs it (``torch``, ``onnxruntime``, ``tensorrt``).
    """

    def __init__(
        self,
        model: PoseNetwork,
        detector: PersonDetector | None = None,
        *,
        device: str | torch.device = "auto",
        fp16: bool | None = None,
        flip_test: bool = False,
        decode: str = "quarter",
        keypoint_score_threshold: float = 0.2,
        max_persons: int = 20,
        device_decode: bool | None = None,
        copy_model: bool | None = None,
    ) -> None:
        if decode not in codec.DECODE_METHODS:
            raise ValueError(f"decode must be one of {codec.DECODE_METHODS}, got {decode!r}")
        if not 0.0 <= keypoint_score_threshold <= 1.0:
            raise ValueError(
                f"keypoint_score_threshold must be in [0, 1], got {keypoint_score_threshold}"
            )
        if max_persons < 1:
            raise ValueError(f"max_persons must be at least 1, got {max_persons}")
        if model.num_keypoints != NUM_KEYPOINTS:
            raise ValueError(
                f"the pipeline needs a {NUM_KEYPOINTS}-keypoint model, got {model.num_keypoints}"
            )
        self.device = resolve_device(device)
        self.fp16 = self.device.type == "cuda" if fp16 is None else bool(fp16)
        if self.fp16 and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device; use fp16=False on the CPU")
        if isinstance(model, torch.nn.Module):
            model = self._prepare_module(model, copy_model)
        self.model = model
        self.engine = _engine_name(model)
        self.detector = detector
        self.flip_test = flip_test
        self.decode = decode
        self.keypoint_score_threshold = keypoint_score_threshold
        self.max_persons = max_persons
        self.device_decode = self.device.type == "cuda" if device_decode is None else device_decode
        #: Which parts run on untrained weights ("pose network", "detector"); see describe().
        self.random_weight_parts: tuple[str, ...] = ()
        self.last_timings = StageTimings()
        #: Calls of the pose network since construction: one per call that has boxes, however
        #: many frames (cameras) and persons it holds (flip test included).
        self.network_calls = 0
        self._dtype = torch.float16 if self.fp16 else torch.float32
        # Page-locked staging buffer of the uint8 frames on CUDA, grown when needed and reused
        # (an upload from pageable memory is a synchronous copy through a driver buffer).
        self._pinned: torch.Tensor | None = None

    @property
    def uses_random_weights(self) -> bool:
        """Whether any network runs on untrained weights (its output is then meaningless)."""
        return bool(self.random_weight_parts)

    @uses_random_weights.setter
    def uses_random_weights(self, value: bool) -> None:
        self.random_weight_parts = ("pose network",) if value else ()

    def _prepare_module(self, model: torch.nn.Module, copy_model: bool | None) -> torch.nn.Module:
        """``model`` on the device, in eval mode, in fp16 and channels-last on CUDA: a copy when
        that changes anything and ``copy_model`` is not False (the caller's module stays as it
        was: training evaluates its model without it turning channels-last or half)."""
        dtype = torch.float16 if self.fp16 else torch.float32
        tensors = list(model.parameters()) + list(model.buffers())
        floating = [t for t in tensors if t.is_floating_point()]
        unchanged = (
            not model.training
            and all(t.device == self.device for t in tensors)
            and all(t.dtype == dtype for t in floating)
            # Channels-last (CUDA) rewrites every 4-D weight's layout in place.
            and (
                self.device.type != "cuda"
                or all(
                    t.is_contiguous(memory_format=torch.channels_last)
                    for t in floating
                    if t.ndim == 4
                )
            )
        )
        if unchanged:
            return model
        if copy_model is not False:
            model = copy.deepcopy(model)
        model.to(self.device).eval()
        if self.fp16:
            model.half()
        if self.device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        return model

    @classmethod
    def from_names(
        cls,
        model: str,
        *,
        detector: str = "fasterrcnn_mobilenet_v3_large_fpn",
        detector_weights: str | None = "DEFAULT",
        device: str | torch.device = "auto",
        fp16: bool | None = None,
        allow_random_weights: bool = False,
        score_threshold: float = 0.5,
        max_persons: int = 20,
        flip_test: bool = False,
        decode: str = "quarter",
        keypoint_score_threshold: float = 0.2,
        engine: str = "auto",
        detector_engine: str = "auto",
        cpu_threads: int = 0,
        cache_dir: str | None = None,
        yolo_layout: str = "auto",
    ) -> PoseEstimator:
        """Build from names: ``model`` is a checkpoint path, a published-weights registry name,
        an exported ``.onnx`` / ``.engine`` file, or ``"random:<architecture>"`` (untrained
        weights: only with ``allow_random_weights``). A torchvision ``detector`` without
        ``detector_weights`` (None or "") has random weights too, under the same guard.

        ``engine`` (:data:`pose_ros.engines.POSE_ENGINES`) and ``detector_engine``
        (:data:`pose_ros.engines.DETECTOR_ENGINES`) choose what runs the networks: ``auto`` is
        ONNX Runtime on the CPU and PyTorch on CUDA; checkpoints are exported on first use into
        the exports cache (``cache_dir``, default :func:`pose_ros.engines.exports_cache_dir`).
        ``cpu_threads`` sets the threads of PyTorch (process-wide) and of ONNX Runtime; 0 = all
        cores for the engine of the pose network, and one thread for PyTorch's light share when
        that engine is not PyTorch.

        Raises:
            pose_ros.models.CheckpointError: missing/corrupt weights (the message says how to get
                them); pose_ros.detection.DetectorError: detector weights;
                pose_ros.runtime.RuntimeBackendError: an engine that cannot run here;
                ValueError: bad values.
        """
        from pose_ros import engines
        from pose_ros.detection import TORCHVISION_DETECTORS
        from pose_ros.models import build_pose_model, load_pose_model

        resolved = resolve_device(device)
        threads = engines.apply_cpu_threads(cpu_threads)
        random_parts = []
        if model.startswith(RANDOM_WEIGHTS_PREFIX):
            random_parts.append("pose network")
        if detector in TORCHVISION_DETECTORS and not detector_weights:
            random_parts.append("detector")
        if random_parts and not allow_random_weights:
            what = (
                f"model {model!r}"
                if random_parts[0] == "pose network"
                else f"detector {detector!r} without weights"
            )
            raise ValueError(
                f"{what} means untrained random weights, whose "
                f"{'keypoints' if what.startswith('model') else 'boxes'} are meaningless; "
                "pass allow_random_weights=True to use it anyway (tests only)"
            )
        if engines.is_exported_model(model):
            network: PoseNetwork = engines.load_exported_network(
                model, engine=engine, device=resolved, threads=threads, cache_dir=cache_dir
            )
        else:
            if "pose network" in random_parts:
                module = build_pose_model(model[len(RANDOM_WEIGHTS_PREFIX) :])
                # Untrained weights differ on every start: their exports would only fill the
                # cache, so they go to a folder of this process's own, removed at exit.
                cache_dir = cache_dir or _scratch_exports_dir()
            else:
                module = load_pose_model(model, map_location="cpu")
            use_fp16 = resolved.type == "cuda" if fp16 is None else bool(fp16)
            network = engines.build_pose_network(
                module,
                engine=engine,
                device=resolved,
                fp16=use_fp16,
                threads=threads,
                cache_dir=cache_dir,
            )
        person_detector = engines.build_person_detector(
            detector,
            weights=detector_weights or None,
            device=resolved,
            engine=detector_engine,
            threads=threads,
            score_threshold=score_threshold,
            max_persons=max_persons,
            cache_dir=cache_dir or (_scratch_exports_dir() if "detector" in random_parts else None),
            half=resolved.type == "cuda" if fp16 is None else bool(fp16),
            yolo_layout=yolo_layout,
        )
        estimator = cls(
            network,
            person_detector,
            device=resolved,
            fp16=fp16,
            flip_test=flip_test,
            decode=decode,
            keypoint_score_threshold=keypoint_score_threshold,
            max_persons=max_persons,
            copy_model=False,  # loaded here: nobody else holds it
        )
        estimator.random_weight_parts = tuple(random_parts)
        if resolved.type == "cpu" and cpu_threads == 0:
            engines.share_cpu_threads(estimator.engine)
        return estimator

    def describe(self) -> str:
        """One line for logs: network, input, colour order, engine, device, precision, detector."""
        arch = getattr(self.model, "arch", {}).get("name", type(self.model).__name__)
        in_height, in_width = self.model.input_size
        if self.detector is None:
            detector = "given boxes"
        else:
            name = getattr(self.detector, "model_name", type(self.detector).__name__)
            detector = f"{name} on {getattr(self.detector, 'engine', 'torch')}"
        random_note = (
            f" [RANDOM WEIGHTS ({', '.join(self.random_weight_parts)}): results are meaningless]"
            if self.random_weight_parts
            else ""
        )
        precision = getattr(self.model, "precision", "fp16" if self.fp16 else "fp32")  # runners
        return (
            f"{arch} {in_height}x{in_width} {self.model.preprocessing.color_order} "
            f"on {self.engine} {self.device} "
            f"{precision}, flip_test={self.flip_test}, decode={self.decode}, "
            f"detector={detector}{random_note}"
        )

    def detect(
        self, image: np.ndarray, *, color_order: str = "RGB"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes of the detector: ((N, 4) ``x, y, w, h``, (N,) scores), best first, at
        most ``max_persons``."""
        if self.detector is None:
            raise ValueError("no detector configured: pass boxes=")
        _check_image(image, color_order)
        detections = self.detector.detect(image, color_order=color_order)
        return self._select_boxes(detections.boxes, detections.scores)

    def _select_boxes(
        self, boxes: np.ndarray, box_scores: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Valid boxes (positive size), highest scores first, at most ``max_persons``."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if box_scores is None:
            box_scores = np.ones(len(boxes), dtype=np.float32)
        box_scores = np.asarray(box_scores, dtype=np.float32).reshape(-1)
        if len(box_scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(box_scores)} box scores")
        keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        boxes, box_scores = boxes[keep], box_scores[keep]
        order = np.argsort(-box_scores, kind="stable")[: self.max_persons]
        return boxes[order], box_scores[order]

    def __call__(
        self,
        image: np.ndarray,
        *,
        color_order: str = "RGB",
        boxes: np.ndarray | None = None,
        box_scores: np.ndarray | None = None,
    ) -> list[Person]:
        """Persons in ``image``, sorted by score (descending).

        Args:
            image: (H, W, 3) uint8 in ``color_order``.
            color_order: "RGB" or "BGR".
            boxes: (N, 4) ``x, y, w, h`` person boxes to use instead of the detector.
            box_scores: (N,) scores of the given boxes (default 1.0).
        """
        start = time.perf_counter()
        _check_image(image, color_order)
        if boxes is None:
            boxes, box_scores = self.detect(image, color_order=color_order)
        detect_ms = (time.perf_counter() - start) * 1e3
        (persons,) = self.estimate_batch([FrameBoxes(image, boxes, box_scores, color_order)])
        timings = self.last_timings
        timings.detect_ms = detect_ms
        timings.total_ms = (time.perf_counter() - start) * 1e3
        return persons

    def estimate_batch(self, frames: Sequence[FrameBoxes]) -> list[list[Person]]:
        """Keypoints for the given boxes of several frames (e.g. several cameras) in one network
        batch; per frame its persons, sorted by score (descending). Boxes are filtered as the
        detector's are: positive size, at most ``max_persons`` per frame."""
        start = time.perf_counter()
        timings = StageTimings()
        selected = []
        for frame in frames:
            _check_image(frame.image, frame.color_order)
            boxes, box_scores = self._select_boxes(frame.boxes, frame.box_scores)
            selected.append((frame, boxes, box_scores))
        results: list[list[Person]] = [[] for _ in frames]
        if any(len(boxes) for _, boxes, _ in selected):
            keypoints = self._estimate_keypoints(
                [(frame.image, frame.color_order, boxes) for frame, boxes, _ in selected], timings
            )
            for index, (_, boxes, box_scores) in enumerate(selected):
                if len(boxes) == 0:
                    continue
                frame_keypoints = keypoints[index]
                scores = rescore(box_scores, frame_keypoints[..., 2], self.keypoint_score_threshold)
                persons = [
                    Person(
                        box=boxes[i].copy(),
                        box_score=float(box_scores[i]),
                        score=float(scores[i]),
                        keypoints=frame_keypoints[i],
                    )
                    for i in range(len(boxes))
                ]
                persons.sort(key=lambda person: person.score, reverse=True)
                results[index] = persons
        timings.persons = sum(len(persons) for persons in results)
        timings.total_ms = (time.perf_counter() - start) * 1e3
        self.last_timings = timings
        return results

    @torch.inference_mode()
    def _estimate_keypoints(
        self, frames: list[tuple[np.ndarray, str, np.ndarray]], timings: StageTimings
    ) -> list[np.ndarray]:
        """Per frame (image, colour order, (N, 4) boxes): (N, 17, 3) keypoints in image pixels.
        The crops of all frames go through the network as one batch."""
        t0 = time.perf_counter()
        input_size = tuple(self.model.input_size)
        aspect = input_size[1] / input_size[0]
        batches, geometry_per_frame = [], []
        uploads = self._upload([image for image, _, boxes in frames if len(boxes)])
        for image, color_order, boxes in frames:
            if len(boxes) == 0:
                geometry_per_frame.append(None)
                continue
            centers, scales = geometry.box_to_center_scale(boxes, aspect)
            pixels = next(uploads).permute(2, 0, 1).float()  # (3, H, W) on the device
            crops = geometry.crop_batch(pixels, centers, scales, input_size)  # (N, 3, h, w) 0..255
            # Channel order and normalisation of the weights, on the small crops (not the frame).
            batches.append(self.model.preprocessing.normalize(crops, input_color_order=color_order))
            geometry_per_frame.append((centers, scales, image.shape[:2]))
        batch = torch.cat(batches).to(self._dtype)
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        count = batch.shape[0]
        if self.flip_test:
            batch = torch.cat([batch, batch.flip(-1)])
        t1 = time.perf_counter()
        self.network_calls += 1
        heatmaps = self.model(batch).float()
        if self.flip_test:
            heatmaps = (heatmaps[:count] + codec.flip_heatmaps_back(heatmaps[count:])) * 0.5
        # The post-processing of the weights' authors (Preprocessing.decode_rule).
        rule = getattr(self.model.preprocessing, "decode_rule", "mmpose")
        if self.device_decode and self.decode == "quarter":
            # Argmax and sub-pixel step on the device: only (N, 17, 3) comes back to the host.
            coords_t, scores_t = codec.decode_heatmaps_torch(heatmaps, rule=rule)
            decoded = torch.cat([coords_t, scores_t[..., None]], dim=-1).cpu().numpy()
            coords, scores = decoded[..., :2], decoded[..., 2]
            t2 = time.perf_counter()  # the network time includes the decode here
        else:
            heatmaps = heatmaps.cpu()  # waits for the device: the network time includes it
            t2 = time.perf_counter()
            coords, scores = codec.decode_heatmaps(heatmaps, self.decode, rule=rule)
        scores = np.clip(scores, 0.0, 1.0)
        results, offset = [], 0
        for frame_geometry in geometry_per_frame:
            if frame_geometry is None:
                results.append(np.zeros((0, NUM_KEYPOINTS, 3), np.float32))
                continue
            centers, scales, (height, width) = frame_geometry
            part = slice(offset, offset + len(centers))
            offset += len(centers)
            image_coords = geometry.crop_to_image(
                coords[part], centers, scales, tuple(self.model.heatmap_size)
            )
            # A crop can reach past the image border (box padding); keypoints stay inside it.
            image_coords[..., 0] = np.clip(image_coords[..., 0], 0, width - 1)
            image_coords[..., 1] = np.clip(image_coords[..., 1], 0, height - 1)
            keypoints = np.concatenate([image_coords, scores[part][..., None]], axis=-1)
            results.append(keypoints.astype(np.float32))
        t3 = time.perf_counter()
        timings.crop_ms = (t1 - t0) * 1e3
        timings.network_ms = (t2 - t1) * 1e3
        timings.decode_ms = (t3 - t2) * 1e3
        return results

    def _upload(self, images: list[np.ndarray]) -> Iterator[torch.Tensor]:
        """The (H, W, 3) uint8 frames on the device, each uploaded once.

        On CUDA through one reused page-locked buffer, asynchronously: the buffer is not written
        again before the results of this batch have come back (the pipeline waits for them), so
        the copies are complete by then. On the CPU the arrays themselves, without a copy.
        """
        if self.device.type != "cuda":
            for image in images:
                yield torch.from_numpy(np.ascontiguousarray(image))
            return
        total = sum(image.size for image in images)
        if self._pinned is None or self._pinned.numel() < total:
            self._pinned = torch.empty(total, dtype=torch.uint8, pin_memory=True)
        offset = 0
        for image in images:
            staging = self._pinned[offset : offset + image.size].view(image.shape)
            staging.numpy()[...] = image
            offset += image.size
            yield staging.to(self.device, non_blocking=True)


_SCRATCH: list[Any] = []


def _scratch_exports_dir() -> str:
    """A temporary exports folder for this process (removed at exit)."""
    import tempfile

    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="pose_ros_exports_"))
    return _SCRATCH[0].name


def _engine_name(network: object) -> str:
    """``torch``, ``onnxruntime`` or ``tensorrt``: what runs ``network``."""
    if isinstance(network, torch.nn.Module):
        return "torch"
    return str(getattr(network, "engine", "torch"))


def _check_image(image: np.ndarray, color_order: str) -> None:
    check_image(image, color_order)
    if image.shape[0] < MIN_IMAGE_SIDE or image.shape[1] < MIN_IMAGE_SIDE:
        raise ValueError(f"image too small: {image.shape[1]}x{image.shape[0]}")
