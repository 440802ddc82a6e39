"""The oldest PyTorch / torchvision this code runs on, checked before the first use.

PyTorch does not come from rosdep (Ubuntu's ``python3-torch`` is CPU-only and older than this
code needs): ROS users install it with pip from ``requirements-ros.txt``. A too-old or missing
install should stop the node with one sentence saying what to do, not with an AttributeError deep
inside a checkpoint loader. Versions are read from the installed distributions' metadata, so the
check itself imports nothing heavy.

Why these minimums: ``torch.serialization.safe_globals`` (checkpoint loading, PyTorch 2.5) and
torchvision 0.20, the release built against it.
"""

from __future__ import annotations

import re
from importlib import metadata

#: distribution name -> oldest version that works (also in requirements-ros.txt and setup.py)
MINIMUM_VERSIONS: dict[str, str] = {"torch": "2.5", "torchvision": "0.20"}
REQUIREMENTS_FILE = "requirements-ros.txt"


def _release(version: str) -> tuple[int, ...]:
    """Leading numeric release of a version string: '2.5.1+cu121' -> (2, 5, 1)."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part) for part in match.group(0).split("."))


def version_problems(installed: dict[str, str | None]) -> list[str]:
    """What is wrong with ``installed`` (distribution -> version, None = not installed), one
    sentence per distribution; empty when every minimum is met."""
    problems = []
    for name, minimum in MINIMUM_VERSIONS.items():
        version = installed.get(name)
        if version is None:
            problems.append(f"{name} is not installed (needs >= {minimum})")
        elif _release(version) < _release(minimum):
            problems.append(f"{name} {version} is too old (needs >= {minimum})")
    return problems


def installed_versions() -> dict[str, str | None]:
    """Installed version of each distribution of :data:`MINIMUM_VERSIONS` (None: not found)."""
    versions: dict[str, str | None] = {}
    for name in MINIMUM_VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def requirement_message(problems: list[str]) -> str:
    return (
        "; ".join(problems) + f". Install PyTorch with pip: `pip install -r {REQUIREMENTS_FILE}` "
        "in the pose_ros source folder (README, 'In a ROS 2 workspace'); the distribution's "
        "python3-torch is too old and CPU-only"
    )


def check_torch() -> None:
    """Raise ImportError with :func:`requirement_message` unless torch and torchvision meet the
    minimums."""
    problems = version_problems(installed_versions())
    if problems:
        raise ImportError(requirement_message(problems))
