"""The oldest PyTorch, torchvision, ONNX Runtime and onnx this code runs on, checked before the
first use.

None of them comes from rosdep (Ubuntu's ``python3-torch`` is CPU-only and older than this code
needs; Ubuntu has no ONNX Runtime package): ROS users install them with pip from
``requirements-ros.txt``. ONNX Runtime and onnx are runtime requirements, not extras: without
them ``engine: auto`` runs the pose network on PyTorch eager on the CPU (about half the speed)
and the CPU preset (``engine: onnxruntime``) cannot start. A too-old or missing install should
stop the node with one sentence saying what to do, not with an AttributeError deep inside a
checkpoint loader or an export. Versions are read from the installed distributions' metadata,
so the check itself imports nothing heavy.

Why these minimums: ``torch.serialization.safe_globals`` (checkpoint loading, PyTorch 2.5) and
torchvision 0.20, the release built against it; ONNX Runtime 1.17 (opset 17 graphs and the
static QDQ quantization of ``pose-ros-export --int8``) and onnx 1.16, its contemporary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import metadata

#: distribution name -> oldest version that works (also in requirements-ros.txt and setup.py)
MINIMUM_VERSIONS: dict[str, str] = {
    "torch": "2.5",
    "torchvision": "0.20",
    "onnxruntime": "1.17",
    "onnx": "1.16",
}
#: requirement -> the pip distributions that provide it (ONNX Runtime's GPU and OpenVINO builds
#: install the same ``onnxruntime`` module under other distribution names)
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "onnx": ("onnx",),
}
REQUIREMENTS_FILE = "requirements-ros.txt"


def _release(version: str) -> tuple[int, ...]:
    """Leading numeric release of a version string: '2.5.1+cu121' -> (2, 5, 1)."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part) for part in match.group(0).split("."))


def version_problems(installed: Mapping[str, str | None]) -> list[str]:
    """What is wrong with ``installed`` (requirement -> version, None = not installed), one
    sentence per requirement of :data:`MINIMUM_VERSIONS`; empty when every minimum is met."""
    problems = []
    for name, minimum in MINIMUM_VERSIONS.items():
        version = installed.get(name)
        if version is None:
            problems.append(f"{name} is not installed (needs >= {minimum})")
        elif _release(version) < _release(minimum):
            problems.append(f"{name} {version} is too old (needs >= {minimum})")
    return problems


def installed_versions(
    distributions: Mapping[str, Sequence[str]] = DISTRIBUTIONS,
) -> dict[str, str | None]:
    """Installed version of each requirement (the first of its ``distributions`` found; None:
    none of them is installed)."""
    versions: dict[str, str | None] = {}
    for name, candidates in distributions.items():
        versions[name] = None
        for distribution in candidates:
            try:
                versions[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def requirement_message(problems: list[str]) -> str:
    """One paragraph: the problems and the pip command that fixes them."""
    return (
        "; ".join(problems) + f". Install them with pip: `pip install -r {REQUIREMENTS_FILE}` "
        "in the pose_ros source folder (README, 'Install into a ROS 2 workspace'); the "
        "distribution's python3-torch is too old and CPU-only, and ONNX Runtime has no "
        "distribution package"
    )


def check_requirements(distributions: Mapping[str, Sequence[str]] = DISTRIBUTIONS) -> None:
    """Raise ImportError with :func:`requirement_message` unless every requirement of
    :data:`MINIMUM_VERSIONS` is installed at its minimum version or newer (``distributions``:
    where to look for each, default :data:`DISTRIBUTIONS`)."""
    problems = version_problems(installed_versions(distributions))
    if problems:
        raise ImportError(requirement_message(problems))


#: The name pose_ros.pipeline calls at import (the check covers every requirement, not only torch).
check_torch = check_requirements
