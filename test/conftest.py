"""Shared test set-up.

Every ROS process a test starts keeps DDS discovery on loopback and on a domain of this test run's
own (normally set by scripts/ros-env, which `make test` goes through; set here too, so a bare
`pytest` cannot leak discovery traffic off the machine).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The repository's development tools (devtools/: the node harness) are not installed with the
# package: import them from the checkout, whatever the working directory.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "mmpose"
COCO_DIR = SHARED_DATA / "tests" / "data" / "coco"
POSETRACK_DIR = SHARED_DATA / "tests" / "data" / "posetrack18" / "videos" / "000001_mpiinew_test"
STREET_VIDEO = SHARED_DATA / "demo" / "resources" / "demo.mp4"
# `make build` installs here; `colcon test` in a workspace names its own prefix (CMakeLists.txt).
INSTALL_PREFIX = Path(os.environ.get("POSE_ROS_INSTALL_PREFIX", REPO_ROOT / "install" / "pose_ros"))

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))

# A test run started in the background by a non-interactive shell (`make test &`, nohup) inherits
# SIGINT ignored, and so would every process the tests start: `ros2 launch` would never see the
# Ctrl-C the tests send it, and its node would outlive the test. Take SIGINT back: children then
# start with the default action.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def coco_dir() -> Path:
    """The 4 COCO val2017 images with keypoint annotations (see ../shared/data/SOURCES.md)."""
    if not (COCO_DIR / "test_coco.json").is_file():
        pytest.fail(
            f"test data missing: {COCO_DIR} (the shared data folder must sit beside the repo)"
        )
    return COCO_DIR


@pytest.fixture(scope="session")
def coco_annotations(coco_dir: Path) -> Path:
    return coco_dir / "test_coco.json"


@pytest.fixture(scope="session")
def coco_detections(coco_dir: Path) -> Path:
    return coco_dir / "test_coco_det_AP_H_56.json"


@pytest.fixture(scope="session")
def posetrack_dir() -> Path:
    if not POSETRACK_DIR.is_dir():
        pytest.fail(f"test data missing: {POSETRACK_DIR}")
    return POSETRACK_DIR


@pytest.fixture(scope="session")
def install_prefix() -> Path:
    """The colcon install of this package (`make build`); ROS tests run what is installed there."""
    if not (INSTALL_PREFIX / "share" / "pose_ros" / "package.xml").is_file():
        pytest.fail(f"{INSTALL_PREFIX} is missing: run `make build` (or `make test`) first")
    return INSTALL_PREFIX


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory: pytest.TempPathFactory, coco_dir: Path):
    """The tiny network trained on the 4 COCO images until AP >= 0.9, once per test session
    (``training.train.main`` → ``best.pth``; see test_training_support.py)."""
    from test_training_support import overfit_once

    return overfit_once(tmp_path_factory, coco_dir)


@pytest.fixture(scope="session")
def rtmpose_overfit_run(tmp_path_factory: pytest.TempPathFactory, coco_dir: Path):
    """RTMPose-t trained on the 4 COCO images until AP >= 0.9, once per test session
    (``overfit_rtmpose_coco4``; see test_training_support.py)."""
    from test_training_support import rtmpose_overfit_once

    return rtmpose_overfit_once(tmp_path_factory, coco_dir)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real checkpoint (ResNet-18 SimpleBaseline, 128x96, untrained but saved and loaded
    like any checkpoint): fast on 2 CPU cores where the weights do not matter."""
    import torch

    from pose_ros.models import build_pose_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny_res18_128x96.pt"
    save_checkpoint(build_pose_model("simplebaseline_res18", input_size=(128, 96)), path)
    return path
