"""Resumable training state: one file per run (``last.pth``), written atomically each epoch.

The file holds only tensors and plain Python values (RNG states included), so it loads with
``torch.load(weights_only=True)``::

    {"format": "pose_ros.training_state", "version": 1, "model": state_dict, "arch": ...,
     "preprocessing": ..., "optimizer": ..., "scheduler": ..., "scaler": ..., "epoch": next epoch,
     "batch_in_epoch": batches of that epoch already done, "step": optimizer steps so far,
     "best_ap": ..., "rng": {...}, "config": {...}}
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAINING_STATE_FORMAT = "pose_ros.training_state"
TRAINING_STATE_VERSION = 1


class TrainingStateError(Exception):
    """A resume file that is missing or not a pose_ros training state (message names it)."""


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states as tensors and plain values."""
    version, internal, gauss = random.getstate()
    _, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only where CUDA is available)."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training state with ``weights_only=True``; TrainingStateError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise TrainingStateError(f"resume file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise TrainingStateError(f"resume file {path} cannot be read ({error})") from None
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise TrainingStateError(
            f"resume file {path} is not a pose_ros training state (best.pth holds only the "
            "model: resume from last.pth)"
        )
    return state
