"""Shared by the training, evaluation and export tests: real overfit runs, once per test session.

The tiny network (``training/configs/overfit_coco4.yaml``) and RTMPose-t
(``training/configs/overfit_rtmpose_coco4.yaml``) are trained through ``training.train.main`` on
the 4 COCO images of the shared test data until pycocotools AP >= 0.9 on those same images:
memorisation through the real loop (data, targets, loss, checkpoint, decoding, evaluation fit
together), not a measure of accuracy. Their ``best.pth`` files are what the other tests load. Each
run happens once per session, for whichever test module asks first (the cache lives in this
module, which every test module imports by name).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from training.train import main as train_main


@dataclass(frozen=True)
class OverfitRun:
    output_dir: Path
    best: Path
    seconds: float
    evaluations: list[dict]  # the lines of metrics.jsonl

    @property
    def steps(self) -> int:
        return self.evaluations[-1]["step"]

    @property
    def best_ap(self) -> float:
        return max(entry["AP"] for entry in self.evaluations)


_RUN: OverfitRun | None = None
_RTMPOSE_RUN: OverfitRun | None = None


def coco_overrides(coco_dir: Path) -> list[str]:
    """``--set`` items pointing train and val at the shared COCO test images (absolute paths)."""
    annotations = coco_dir / "test_coco.json"
    return [
        f"data.train_images={coco_dir}",
        f"data.train_annotations={annotations}",
        f"data.val_images={coco_dir}",
        f"data.val_annotations={annotations}",
    ]


def overfit_once(tmp_path_factory: pytest.TempPathFactory, coco_dir: Path) -> OverfitRun:
    """Run the overfit the first time it is asked for; the same result afterwards."""
    global _RUN
    if _RUN is None:
        _RUN = _overfit(tmp_path_factory, coco_dir, "overfit_coco4")
    return _RUN


def rtmpose_overfit_once(tmp_path_factory: pytest.TempPathFactory, coco_dir: Path) -> OverfitRun:
    """RTMPose-t (``training/configs/overfit_rtmpose_coco4.yaml``: SimCC, KL loss, AdamW,
    flat-cosine schedule, EMA) trained the same way, once per session."""
    global _RTMPOSE_RUN
    if _RTMPOSE_RUN is None:
        _RTMPOSE_RUN = _overfit(tmp_path_factory, coco_dir, "overfit_rtmpose_coco4", "cpu")
    return _RTMPOSE_RUN


def _overfit(
    tmp_path_factory: pytest.TempPathFactory, coco_dir: Path, config: str, device: str = "auto"
) -> OverfitRun:
    output = tmp_path_factory.mktemp(config)
    argv = [config, "--output-dir", str(output), "--device", device]
    argv += ["--set", *coco_overrides(coco_dir)]
    start = time.perf_counter()
    code = train_main(argv)
    seconds = time.perf_counter() - start
    assert code == 0, f"training.train.main{argv} returned {code}"
    lines = (output / "metrics.jsonl").read_text().splitlines()
    evaluations = [json.loads(line) for line in lines]
    run = OverfitRun(output, output / "best.pth", seconds, evaluations)
    print(f"\n{config}: {run.steps} steps, {seconds / 60:.2f} min, best AP {run.best_ap:.4f}")
    return run
