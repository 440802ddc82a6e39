"""Registry of published checkpoints (SimpleBaseline and RTMPose COCO pose networks, RTMDet person
detectors), and their download cache.

``load_pose_model("mmpose_res50_coco_256x192")`` looks the name up here, finds the file in the
cache folder or downloads it (progress bar, sha256 prefix check), and loads it key for key.

Cache folder, first match wins: the ``cache_dir`` argument; ``$POSE_ROS_CACHE/checkpoints``
(``POSE_ROS_CACHE`` is the root of all pose_ros caches); ``$XDG_CACHE_HOME/pose_ros/checkpoints``;
``~/.cache/pose_ros/checkpoints``. A file placed there by hand under the registry file name is used
as is, after the same hash check.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from tqdm import tqdm

from pose_ros.fileio import atomic_write
from pose_ros.models.errors import CheckpointError
from pose_ros.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = [
    "LAYOUTS",
    "PUBLISHED_CHECKPOINTS",
    "PublishedCheckpoint",
    "checkpoint_cache_dir",
    "fetch_published_checkpoint",
    "get_published_checkpoint",
    "read_verified",
    "sha256_file",
]

#: Key layouts of published files: microsoft (bare state dict, BGR), mmpose 1.x ("backbone.*",
#: "head.*"), mmpose 0.x ("backbone.*", "keypoint_head.*"); both mmpose ones RGB; mmdet
#: ("backbone.*", "neck.*", "bbox_head.*": the RTMDet person detectors, BGR).
LAYOUTS: tuple[str, ...] = ("microsoft", "mmpose", "mmpose0x", "mmdet")

_DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One published checkpoint file.

    Attributes:
        name: registry key.
        arch: pose_ros model name it loads into (e.g. "simplebaseline_res50").
        layout: one of :data:`LAYOUTS`.
        color_order: channel order the weights were trained on ("RGB" or "BGR").
        input_size: (H, W) the weights were trained at.
        filename: the file name, in the cache folder too.
        url: direct download URL, or None where there is none (files on OneDrive/Google Drive).
        sha256_prefix: leading hex digits of the file's sha256, or None when not known.
        homepage: where a person can get the file.
    """

    name: str
    arch: str
    layout: str
    color_order: str
    input_size: tuple[int, int]
    filename: str
    url: str | None
    sha256_prefix: str | None
    homepage: str

    @property
    def preprocessing(self) -> Preprocessing:
        # Both mmpose and microsoft normalise pixel/255 with the ImageNet numbers in R, G, B order;
        # microsoft applies them to B, G, R channels, which this record keeps as it is.
        return Preprocessing(
            self.color_order, IMAGENET_MEAN, IMAGENET_STD, self.input_size, self.decode_rule
        )

    @property
    def decode_rule(self) -> str:
        """The heatmap post-processing of the weights' authors (``Preprocessing.decode_rule``)."""
        return "microsoft" if self.layout == "microsoft" else "mmpose"


# URLs and hash prefixes below were checked against mmpose's own model-zoo pages (the 1.x metafile
# configs/body_2d_keypoint/topdown_heatmap/coco/resnet_coco.yml and the 0.x
# configs/top_down/resnet README) in a stored copy of the mmpose repository, not by downloading:
# the first download verifies them. The hash prefix is the part of the file name before the date
# (mmpose's publish step names files by sha256). The 1.x metafile lists no separate 384x288
# ResNet-101 file (its link repeats the 256x192 one), so that entry is 0.x only.
_MMPOSE1 = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
_MMPOSE0 = "https://download.openmmlab.com/mmpose/top_down/resnet/"
_MMPOSE_HOME = "https://github.com/open-mmlab/mmpose (SimpleBaseline2D ResNet COCO model zoo)"
_MICROSOFT_HOME = (
    "https://github.com/microsoft/human-pose-estimation.pytorch (README: 'pretrained models' on "
    "OneDrive / Google Drive, folder models/pytorch/pose_coco/)"
)


def _mmpose(depth: int, size: str, filename: str, zero_x: bool) -> PublishedCheckpoint:
    h, w = (int(v) for v in size.split("x"))
    # Name format: <4 parts>-<sha256 prefix>_<date>.pth
    sha = filename.rsplit("-", 1)[1].split("_", 1)[0]
    return PublishedCheckpoint(
        name=f"{'mmpose0x' if zero_x else 'mmpose'}_res{depth}_coco_{size}",
        arch=f"simplebaseline_res{depth}",
        layout="mmpose0x" if zero_x else "mmpose",
        color_order="RGB",
        input_size=(h, w),
        filename=filename,
        url=(_MMPOSE0 if zero_x else _MMPOSE1) + filename,
        sha256_prefix=sha,
        homepage=_MMPOSE_HOME,
    )


def _microsoft(depth: int, size: str) -> PublishedCheckpoint:
    h, w = (int(v) for v in size.split("x"))
    return PublishedCheckpoint(
        name=f"microsoft_res{depth}_coco_{size}",
        arch=f"simplebaseline_res{depth}",
        layout="microsoft",
        color_order="BGR",
        input_size=(h, w),
        filename=f"pose_resnet_{depth}_{size}.pth.tar",
        url=None,
        sha256_prefix=None,
        homepage=_MICROSOFT_HOME,
    )


# RTMPose and RTMDet: URLs from mmpose's metafile configs/body_2d_keypoint/rtmpose/coco/
# rtmpose_coco.yml (COCO-only and AIC+COCO training) and projects/rtmpose/README.md (the RTMDet
# person detectors), read in a stored copy of the mmpose repository; the hash prefix is again the
# file name's 8 hex digits (before the date, or before ".pth").
_RTMPOSE_URL = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/"
_RTMDET_NANO_URL = "https://download.openmmlab.com/mmpose/v1/projects/rtmpose/"
_RTMPOSE_HOME = "https://github.com/open-mmlab/mmpose/tree/main/projects/rtmpose (model zoo)"


def _hash_in_name(filename: str) -> str:
    """The sha256 prefix an OpenMMLab publish step puts in a file name: the 8 hex digits after
    the last '-', before '_<date>' or '.pth'."""
    return filename.removesuffix(".pth").rsplit("-", 1)[1].split("_", 1)[0]


def _rtmpose(size: str, data: str, input_size: str, sha_date: str) -> PublishedCheckpoint:
    h, w = (int(v) for v in input_size.split("x"))
    # mmpose's names: rtmpose-{tiny,s,m,l}_simcc-{coco,aic-coco}_pt-aic-coco_420e-HxW-<sha>_<date>
    size_in_name = "tiny" if size == "t" else size
    data_in_name = data.replace("_", "-")
    filename = (
        f"rtmpose-{size_in_name}_simcc-{data_in_name}_pt-aic-coco_420e-{input_size}-{sha_date}.pth"
    )
    return PublishedCheckpoint(
        name=f"rtmpose_{size}_{data}_{input_size}",
        arch=f"rtmpose_{size}",
        layout="mmpose",
        color_order="RGB",
        input_size=(h, w),
        filename=filename,
        url=_RTMPOSE_URL + filename,
        sha256_prefix=_hash_in_name(filename),
        homepage=_RTMPOSE_HOME,
    )


def _cspnext(size: str, sha_date: str) -> PublishedCheckpoint:
    """The CSPNeXt trunks (UDP heatmap training on AIC+COCO) the RTMPose recipes start from;
    only their ``backbone.*`` weights are used (``training``'s ``model.backbone_weights``)."""
    size_in_name = "tiny" if size == "t" else size
    filename = f"cspnext-{size_in_name}_udp-aic-coco_210e-256x192-{sha_date}.pth"
    return PublishedCheckpoint(
        name=f"cspnext_{size}_udp_aic_coco_256x192",
        arch=f"cspnext_{size}",
        layout="mmpose",
        color_order="RGB",
        input_size=(256, 192),
        filename=filename,
        url=_RTMPOSE_URL + filename,
        sha256_prefix=_hash_in_name(filename),
        homepage=_RTMPOSE_HOME,
    )


def _rtmdet(name: str, arch: str, size: int, url_base: str, filename: str) -> PublishedCheckpoint:
    return PublishedCheckpoint(
        name=name,
        arch=arch,
        layout="mmdet",
        color_order="BGR",
        input_size=(size, size),
        filename=filename,
        url=url_base + filename,
        sha256_prefix=_hash_in_name(filename),
        homepage=_RTMPOSE_HOME,
    )


_ENTRIES: tuple[PublishedCheckpoint, ...] = (
    _mmpose(50, "256x192", "td-hm_res50_8xb64-210e_coco-256x192-04af38ce_20220923.pth", False),
    _mmpose(50, "384x288", "td-hm_res50_8xb64-210e_coco-384x288-7b8db90e_20220923.pth", False),
    _mmpose(101, "256x192", "td-hm_res101_8xb64-210e_coco-256x192-065d3625_20220926.pth", False),
    _mmpose(152, "256x192", "td-hm_res152_8xb32-210e_coco-256x192-0345f330_20220928.pth", False),
    _mmpose(152, "384x288", "td-hm_res152_8xb32-210e_coco-384x288-7fbb906f_20220927.pth", False),
    _mmpose(50, "256x192", "res50_coco_256x192-ec54d7f3_20200709.pth", True),
    _mmpose(50, "384x288", "res50_coco_384x288-e6f795e9_20200709.pth", True),
    _mmpose(101, "256x192", "res101_coco_256x192-6e6babf0_20200708.pth", True),
    _mmpose(101, "384x288", "res101_coco_384x288-8c71bdc9_20200709.pth", True),
    _mmpose(152, "256x192", "res152_coco_256x192-f6e307c2_20200709.pth", True),
    _mmpose(152, "384x288", "res152_coco_384x288-3860d4c9_20200709.pth", True),
    *(_microsoft(d, s) for d in (50, 101, 152) for s in ("256x192", "384x288")),
    _rtmpose("t", "coco", "256x192", "e613ba3f_20230127"),
    _rtmpose("s", "coco", "256x192", "8edcf0d7_20230127"),
    _rtmpose("m", "coco", "256x192", "d8dd5ca4_20230127"),
    _rtmpose("l", "coco", "256x192", "1352a4d2_20230127"),
    _rtmpose("t", "aic_coco", "256x192", "cfc8f33d_20230126"),
    _rtmpose("s", "aic_coco", "256x192", "fcb2599b_20230126"),
    _rtmpose("m", "aic_coco", "256x192", "63eb25f7_20230126"),
    _rtmpose("l", "aic_coco", "256x192", "f016ffe0_20230126"),
    _rtmpose("m", "aic_coco", "384x288", "a62a0b32_20230228"),
    _rtmpose("l", "aic_coco", "384x288", "97d6cb0f_20230228"),
    _cspnext("t", "cbed682d_20230130"),
    _cspnext("s", "92f5a029_20230130"),
    _cspnext("m", "f2f7d6f6_20230130"),
    _cspnext("l", "273b7631_20230130"),
    _rtmdet(
        "rtmdet_nano_person",
        "rtmdet_nano",
        320,
        _RTMDET_NANO_URL,
        "rtmdet_nano_8xb32-100e_coco-obj365-person-05d8511e.pth",
    ),
    _rtmdet(
        "rtmdet_tiny_humanart",
        "rtmdet_tiny",
        640,
        _RTMPOSE_URL,
        "rtmdet_tiny_8xb32-300e_humanart-7da5554e.pth",
    ),
)

# Mutable only through this private dict (tests patch entries); the public view is read-only.
_REGISTRY: dict[str, PublishedCheckpoint] = {e.name: e for e in _ENTRIES}
PUBLISHED_CHECKPOINTS: Mapping[str, PublishedCheckpoint] = MappingProxyType(_REGISTRY)


def get_published_checkpoint(name: str) -> PublishedCheckpoint:
    """The registry record of ``name``; CheckpointError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CheckpointError(
            f"{name!r} is not a known published checkpoint; known names: "
            f"{', '.join(sorted(_REGISTRY))}."
        ) from None


def checkpoint_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder for downloaded checkpoints (see the module docstring for the order)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get("POSE_ROS_CACHE")
    if root:
        return Path(root).expanduser() / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pose_ros" / "checkpoints"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_published_checkpoint(
    name: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """Path of the registry file ``name`` in the cache, downloading it first when absent.

    Raises:
        CheckpointError: unknown name; no URL (manual download) or download failure (offline),
            naming where to get the file and the exact path to place it at; a sha256 mismatch.
    """
    entry = get_published_checkpoint(name)
    dest = checkpoint_cache_dir(cache_dir) / entry.filename
    if dest.is_file():
        _check_hash(entry, dest, downloaded=False)
        return dest
    if entry.url is None:
        raise CheckpointError(
            f"Checkpoint {entry.filename} ({entry.name}) has no direct download URL. Get it from "
            f"{entry.homepage} and place it by hand at {dest} (or pass its path to "
            f"load_pose_model directly)."
        )
    _download(entry, dest, progress)
    _check_hash(entry, dest, downloaded=True)
    return dest


def read_verified(entry: PublishedCheckpoint, path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, after checking their sha256 against ``entry.sha256_prefix``.

    The bytes checked are the bytes returned, so what is unpickled afterwards is exactly what
    matched (no window for the file to change between the check and the load).

    Raises:
        CheckpointError: the entry has no hash (nothing to verify), or the bytes do not match.
    """
    if not entry.sha256_prefix:
        raise CheckpointError(f"{entry.name} records no sha256, so {path} cannot be verified.")
    data = Path(path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if not actual.startswith(entry.sha256_prefix.lower()):
        raise CheckpointError(
            f"Checkpoint file {path} has sha256 {actual[:16]}..., but {entry.name} expects one "
            f"starting {entry.sha256_prefix}: it changed since it was checked, or is a different "
            f"file."
        )
    return data


def _download(entry: PublishedCheckpoint, dest: Path, progress: bool) -> None:
    """Stream ``entry.url`` to ``dest`` through :func:`atomic_write`: a failed or interrupted
    download never leaves a partial file under the cache name (nor beside it)."""
    assert entry.url is not None
    try:
        request = urllib.request.Request(entry.url, headers={"User-Agent": "pose_ros"})
        with (
            urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response,
            atomic_write(dest) as out,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=entry.filename,
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are all OSError
        reason = getattr(exc, "reason", None) or exc
        raise CheckpointError(
            f"Could not download checkpoint {entry.filename} ({entry.name}) from {entry.url}: "
            f"{reason}. If this machine is offline, download it elsewhere (from {entry.url}, see "
            f"{entry.homepage}) and place it by hand at {dest}."
        ) from exc


def _check_hash(entry: PublishedCheckpoint, path: Path, *, downloaded: bool) -> None:
    if not entry.sha256_prefix:
        return
    actual = sha256_file(path)
    if actual.startswith(entry.sha256_prefix.lower()):
        return
    if downloaded:
        # A bad download must not be mistaken for a good cache entry later.
        path.unlink(missing_ok=True)
        raise CheckpointError(
            f"Downloaded checkpoint {entry.filename} from {entry.url} has sha256 {actual[:16]}..., "
            f"expected a sha256 starting {entry.sha256_prefix}; the file was deleted. Try again, "
            f"or place a correct copy by hand at {path}."
        )
    raise CheckpointError(
        f"Checkpoint file {path} has sha256 {actual[:16]}..., but {entry.name} expects one "
        f"starting {entry.sha256_prefix}: it is damaged or a different file. Delete it to download "
        f"it again, or replace it with {entry.filename} from {entry.url or entry.homepage}."
    )
