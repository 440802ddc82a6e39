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
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from pose_ros import _requirements, codec, geometry, simcc
from pose_ros.images import check_image
from pose_ros.keypoints import COCO_PERSON_CATEGORY_ID, NUM_KEYPOINTS
from pose_ros.types import (
    MIN_IMAGE_SIDE,
    OUTPUT_HEATMAPS,
    OUTPUT_KEYPOINTS,
    OUTPUT_SIMCC,
    RANDOM_WEIGHTS_PREFIX,
    FrameBoxes,
    Person,
    PoseNetwork,
    StageTimings,
)

if TYPE_CHECKING:
    from pose_ros.detection import PersonDetector

# PyTorch comes from pip for ROS users: a too-old one gets a clear message, not an AttributeError.
_requirements.check_torch()

__all__ = [
    "MIN_IMAGE_SIDE",
    "RANDOM_WEIGHTS_PREFIX",
    "FrameBoxes",
    "Person",
    "PoseEstimator",
    "PoseNetwork",
    "StageTimings",
    "coco_keypoint_results",
    "rescore",
    "resolve_device",
]

logger = logging.getLogger(__name__)


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
            memory; :func:`pose_ros.factory.estimator_from_names` does so with the model it
            loaded itself).

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
        if getattr(model, "output_kind", OUTPUT_HEATMAPS) == OUTPUT_KEYPOINTS and (
            flip_test or decode != "quarter"
        ):
            # The graph decodes its own heatmaps (quarter rule of the weights, no mirror pass).
            raise ValueError(
                "this pose network returns decoded keypoints (its graph decodes the heatmaps "
                "with the quarter rule): flip_test and decode 'dark' are not available with it"
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
    def inference_problem(self) -> str | None:
        """Why the pose network does not answer at present (a runner of a remote server that
        went away reports "inference server unreachable: <url>"), or None."""
        return getattr(self.model, "problem", None)

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
        t1 = time.perf_counter()
        self.network_calls += 1
        kind = getattr(self.model, "output_kind", OUTPUT_HEATMAPS)
        run = self._output_decoders.get(kind)
        if run is None:
            raise ValueError(
                f"the pose network's output_kind {kind!r} is not one the pipeline decodes "
                f"({', '.join(sorted(self._output_decoders))})"
            )
        coords, scores, output_size, t2 = run(self, batch)
        scores = np.clip(scores, 0.0, 1.0)
        results, offset = [], 0
        for frame_geometry in geometry_per_frame:
            if frame_geometry is None:
                results.append(np.zeros((0, NUM_KEYPOINTS, 3), np.float32))
                continue
            centers, scales, (height, width) = frame_geometry
            part = slice(offset, offset + len(centers))
            offset += len(centers)
            image_coords = geometry.crop_to_image(coords[part], centers, scales, output_size)
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

    def _run_heatmap_network(
        self, batch: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float]:
        """Heatmap networks: the crops (and, with the flip test, their mirror images in the same
        batch) through the network, heatmaps averaged with the flipped ones, then decoded.

        Args:
            batch: (N, 3, h, w) normalised crops on the device.

        Returns:
            (N, K, 2) coordinates in heatmap pixels, (N, K) scores, the heatmap (h, w), and the
            time (perf_counter) at which the network's output was on the host.
        """
        count = batch.shape[0]
        if self.flip_test:
            batch = torch.cat([batch, batch.flip(-1)])
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
            network_done = time.perf_counter()  # the network time includes the decode here
        else:
            heatmaps = heatmaps.cpu()  # waits for the device: the network time includes it
            network_done = time.perf_counter()
            coords, scores = codec.decode_heatmaps(heatmaps, self.decode, rule=rule)
        return coords, scores, tuple(self.model.heatmap_size), network_done

    def _run_simcc_network(
        self, batch: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float]:
        """SimCC networks (RTMPose): the crops (and, with the flip test, their mirror images in
        the same batch) through the network, the vectors averaged with the flipped ones mapped
        back (:func:`pose_ros.simcc.flip_simcc_back`, mmpose's flip test), then decoded: argmax
        per axis, the smaller maximum as the score (:mod:`pose_ros.simcc`). ``decode`` (quarter,
        dark) applies to heatmaps only.

        Returns:
            (N, K, 2) coordinates in input pixels, (N, K) scores, the input (h, w), and the
            time (perf_counter) at which the network's output was on the host.
        """
        count = batch.shape[0]
        if self.flip_test:
            batch = torch.cat([batch, batch.flip(-1)])
        simcc_x, simcc_y = (v.float() for v in self.model(batch))
        if self.flip_test:
            back_x, back_y = simcc.flip_simcc_back(simcc_x[count:], simcc_y[count:])
            simcc_x = (simcc_x[:count] + back_x) * 0.5
            simcc_y = (simcc_y[:count] + back_y) * 0.5
        ratio = float(getattr(self.model, "simcc_split_ratio", simcc.SIMCC_SPLIT_RATIO))
        if self.device_decode:
            # Argmax on the device: only (N, 17, 3) comes back to the host.
            coords_t, scores_t = simcc.decode_simcc_torch(simcc_x, simcc_y, ratio)
            decoded = torch.cat([coords_t, scores_t[..., None]], dim=-1).cpu().numpy()
            coords, scores = decoded[..., :2], decoded[..., 2]
            network_done = time.perf_counter()
        else:
            simcc_x, simcc_y = simcc_x.cpu(), simcc_y.cpu()
            network_done = time.perf_counter()
            coords, scores = simcc.decode_simcc(simcc_x, simcc_y, ratio)
        return coords, scores, tuple(self.model.input_size), network_done

    def _run_keypoint_network(
        self, batch: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float]:
        """Networks that decode inside their graph: (N, K, 3) keypoints in input-crop pixels come
        back, so the coordinates refer to the input size."""
        keypoints = self.model(batch).float().cpu().numpy()
        network_done = time.perf_counter()
        return keypoints[..., :2], keypoints[..., 2], tuple(self.model.input_size), network_done

    #: How each kind of network output (``output_kind``) becomes keypoints in the crop: a method
    #: taking the normalised batch and returning (coords, scores, the (h, w) the coords refer to,
    #: the time the network's output was on the host).
    _output_decoders: ClassVar[
        dict[
            str,
            Callable[
                [PoseEstimator, torch.Tensor],
                tuple[np.ndarray, np.ndarray, tuple[int, int], float],
            ],
        ]
    ] = {
        OUTPUT_HEATMAPS: _run_heatmap_network,
        OUTPUT_SIMCC: _run_simcc_network,
        OUTPUT_KEYPOINTS: _run_keypoint_network,
    }

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


def _engine_name(network: object) -> str:
    """``torch``, ``onnxruntime`` or ``tensorrt``: what runs ``network``."""
    if isinstance(network, torch.nn.Module):
        return "torch"
    return str(getattr(network, "engine", "torch"))


def _check_image(image: np.ndarray, color_order: str) -> None:
    check_image(image, color_order)
    if image.shape[0] < MIN_IMAGE_SIDE or image.shape[1] < MIN_IMAGE_SIDE:
        raise ValueError(f"image too small: {image.shape[1]}x{image.shape[0]}")
