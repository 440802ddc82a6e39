"""Person detection with torchvision's COCO detectors (Faster R-CNN, RetinaNet, SSDlite)."""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.models import WeightsEnum

from .base import DetectionFilter, DetectorError, PersonDetector, RawDetections

logger = logging.getLogger(__name__)

#: torchvision detection builders usable as person detectors (all trained on COCO).
TORCHVISION_DETECTORS: tuple[str, ...] = (
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "retinanet_resnet50_fpn_v2",
    "ssdlite320_mobilenet_v3_large",
)

# torchvision's COCO detectors predict the 91 original COCO category ids, 0 being background.
_COCO_NUM_CLASSES = 91
_COCO_PERSON_LABEL = 1


class TorchvisionDetector(PersonDetector):
    """A torchvision COCO detector keeping only people.

    Args:
        model_name: one of :data:`TORCHVISION_DETECTORS`.
        weights: a weights name of that model ("DEFAULT", "COCO_V1", or a WeightsEnum), fetched
            through torchvision's download cache; a path to a state_dict saved with
            ``torch.save(model.state_dict(), path)`` (or a checkpoint dict holding it under
            "model" or "state_dict"); or None for random weights (tests only).
        device: where the model runs.
        detection_filter: the shared post-processing thresholds.
        half: run under float16 autocast; CUDA only, ignored (with a warning) on other devices.
        progress: show a progress bar while downloading weights.
        **model_kwargs: passed to the torchvision builder, e.g. ``min_size=512`` for Faster R-CNN
            to trade accuracy for speed.
    """

    person_label = _COCO_PERSON_LABEL

    def __init__(
        self,
        model_name: str,
        *,
        weights: str | os.PathLike | WeightsEnum | None = "DEFAULT",
        device: str | torch.device = "cpu",
        detection_filter: DetectionFilter | None = None,
        half: bool = False,
        progress: bool = True,
        **model_kwargs: object,
    ) -> None:
        if model_name not in TORCHVISION_DETECTORS:
            raise ValueError(
                f"unknown torchvision detector {model_name!r}; valid: "
                + ", ".join(TORCHVISION_DETECTORS)
            )
        super().__init__(detection_filter, device)
        self.model_name = model_name
        if half and self.device.type != "cuda":
            logger.warning("half=True needs a CUDA device; running %s in float32", model_name)
        self.half = half and self.device.type == "cuda"

        model_kwargs = {"num_classes": _COCO_NUM_CLASSES, **model_kwargs}
        # Built without weights, then loaded below, so that every download or file problem
        # surfaces as one DetectorError naming the file. (torchvision ignores unknown keywords.)
        model = torchvision.models.get_model(
            model_name, weights=None, weights_backbone=None, **model_kwargs
        )
        if weights is None:
            logger.warning(
                "%s has random weights: its detections are meaningless (use it for tests only)",
                model_name,
            )
        else:
            state_dict, source = _fetch_state_dict(model_name, weights, progress)
            _load_state_dict(model, state_dict, source, model_name)
        _relax_model_filters(model, self.detection_filter)
        self.model = model.eval().to(self.device)

    def _predict(self, image: np.ndarray, color_order: str) -> RawDetections:
        # One upload of the uint8 image; channel flip, layout and scaling happen on the device.
        tensor = torch.from_numpy(image).to(self.device)
        if color_order == "BGR":
            tensor = tensor.flip(-1)
        tensor = tensor.permute(2, 0, 1).float().div_(255.0)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
            output = self.model([tensor])[0]
        return RawDetections(output["boxes"].float(), output["scores"].float(), output["labels"])


def _relax_model_filters(model: torch.nn.Module, detection_filter: DetectionFilter) -> None:
    """Loosen the model's own score/NMS/count limits so that ours decide.

    Never stricter than ours: the lower of the two score thresholds (torchvision's small default
    stays when ours is higher, which bounds the work), our IoU threshold for its per-class NMS
    (identical to ours for the person class), and room for at least ``max_persons`` boxes.
    """
    owner = getattr(model, "roi_heads", model)  # Faster R-CNN keeps them in its box head
    owner.score_thresh = min(owner.score_thresh, detection_filter.score_threshold)
    owner.nms_thresh = detection_filter.nms_threshold
    owner.detections_per_img = max(owner.detections_per_img, detection_filter.max_persons)


def _fetch_state_dict(
    model_name: str, weights: str | os.PathLike | WeightsEnum, progress: bool
) -> tuple[dict[str, torch.Tensor], str]:
    """Resolve ``weights`` to (state_dict, description of where it came from)."""
    if isinstance(weights, WeightsEnum):
        return download_weights(weights.url, progress=progress), weights.url
    enum_cls = torchvision.models.get_model_weights(model_name)
    name = str(weights).replace(enum_cls.__name__ + ".", "")
    if name in enum_cls.__members__:
        url = enum_cls[name].url
        return download_weights(url, progress=progress), url
    path = Path(weights)
    if not path.is_file():
        raise DetectorError(
            f"detector weights file not found: {path}. The weights of {model_name} are a path "
            f"to a saved state_dict, or one of the names {', '.join(enum_cls.__members__)}."
        )
    return load_weights_file(path), str(path)


def download_weights(url: str, *, progress: bool = True) -> dict[str, torch.Tensor]:
    """The state_dict at ``url``, through torch.hub's cache (``torch.hub.get_dir()/checkpoints``).

    A file already in the cache is used without any network access, which is how machines
    without internet get the weights: copy the file there by hand.
    """
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    filename = Path(urllib.parse.urlparse(url).path).name
    try:
        return torch.hub.load_state_dict_from_url(
            url,
            model_dir=str(cache_dir),
            map_location="cpu",
            progress=progress,
            check_hash=True,
            weights_only=True,
        )
    except Exception as error:
        cached = cache_dir / filename
        if cached.is_file():
            raise DetectorError(
                f"the cached detector weights {cached} cannot be read ({error}); delete the file "
                f"so that it is downloaded again, or replace it with a good copy from {url}."
            ) from error
        raise DetectorError(
            f"could not download the detector weights {filename} from {url} ({error}). On a "
            f"machine without internet access, download that file elsewhere and place it in "
            f"{cache_dir} (torch.hub.get_dir()/checkpoints, set by TORCH_HOME), or pass the path "
            f"of a weights file."
        ) from error


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``path`` with ``torch.load(weights_only=True)``.

    Accepts a bare state_dict or a checkpoint dict holding it under "model" or "state_dict".
    A pickled nn.Module is refused (weights_only): save ``model.state_dict()`` instead.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DetectorError(
            f"cannot read the detector weights file {path}: {error}. Expected a file written by "
            f"torch.save(model.state_dict(), path)."
        ) from error
    if isinstance(loaded, dict):
        for key in ("model", "state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not (
        isinstance(loaded, dict)
        and loaded
        and all(isinstance(value, torch.Tensor) for value in loaded.values())
    ):
        raise DetectorError(
            f"the detector weights file {path} holds no state_dict (a dict of tensor names to "
            f"tensors), got {type(loaded).__name__}. Save it with torch.save(model.state_dict(), "
            f"path)."
        )
    return loaded


def _load_state_dict(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str, model_name: str
) -> None:
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches raise even when strict=False
        first_line = str(error).strip().splitlines()[-1].strip()
        raise DetectorError(
            f"the weights {source} do not fit {model_name}: {first_line}"
        ) from error
    # Models built without weights use BatchNorm2d where the released weights were trained with
    # FrozenBatchNorm2d, which has no num_batches_tracked counter; in eval mode both compute the
    # same thing, so only that counter may be missing.
    missing = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise DetectorError(
            f"the weights {source} do not fit {model_name}: {len(missing)} missing tensors "
            f"(e.g. {missing[:3]}) and {len(result.unexpected_keys)} unexpected ones "
            f"(e.g. {result.unexpected_keys[:3]})."
        )
