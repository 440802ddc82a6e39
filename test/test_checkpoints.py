"""Checkpoints: our format, published microsoft / mmpose files, the registry and its cache.

Published files are built here the way their tools write them, with key names and shapes written
out from the published architectures (mmpose's ResNet + HeatmapHead / TopDownSimpleHead, the
microsoft PoseResNet), not from our own model:

* mmpose 1.x: mmengine's ``Runner.save_checkpoint`` writes ``{"meta", "state_dict",
  "message_hub", "optimizer", "param_schedulers"}`` (zip format); mmpose's
  ``tools/misc/publish_model.py`` keeps ``meta`` and ``state_dict``, saves them in the legacy format
  and names the file by its sha256. ``meta`` holds numpy arrays and scalars (``dataset_meta``) and
  here also instances of classes named like mmengine's, pickled from a throwaway package that is
  gone (from ``sys.modules`` and from disk) before the file is loaded.
* mmpose 0.x: mmcv's ``save_checkpoint`` writes ``{"meta": {mmcv_version, time, config, env_info,
  ...}, "state_dict": {backbone.*, keypoint_head.*}}``.
* microsoft: ``pose_resnet_*.pth.tar``, a bare state dict from PyTorch 0.4.0 (no
  ``num_batches_tracked``), or the training ``checkpoint.pth.tar`` dict whose state dict carries
  DataParallel's ``module.`` prefix.

Registry files load by name from a cache folder, the hash computed here and patched into the
entry. Nothing reaches the network: the offline path uses a closed local port, the download path a
local HTTP server.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import importlib
import os
import shutil
import stat
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pose_ros.models import (
    PUBLISHED_CHECKPOINTS,
    AttentionPoseNet,
    CheckpointError,
    PoseNet,
    SimpleBaseline,
    build_pose_model,
    checkpoint_cache_dir,
    load_pose_model,
    registry,
    save_checkpoint,
)
from pose_ros.models.checkpoints import _infer_arch


def _random_state(model: torch.nn.Module, seed: int = 0) -> None:
    """Distinct values in every tensor (BN statistics included) so equality checks are real."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05)


@functools.cache
def _reference(name: str) -> SimpleBaseline:
    torch.manual_seed(0)
    model = build_pose_model(name)
    _random_state(model)
    return model


def _microsoft_state(model: PoseNet) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def _assert_same_weights(loaded: PoseNet, reference: PoseNet, *, counters: bool = True) -> None:
    ours, theirs = loaded.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if key.endswith("num_batches_tracked"):
            if counters:
                assert torch.equal(ours[key], value), key
            continue
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


# --- published layouts


_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _published_shapes(depth: int, num_keypoints: int = 17) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a ResNet + 3 deconvolutions + 1x1 head, as mmpose's ResNet / HeatmapHead
    and microsoft's PoseResNet name them (written out here, independent of pose_ros' model)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, out: int, inp: int, k: int) -> None:
        shapes[f"{name}.weight"] = (out, inp, k, k)

    def bn(name: str, channels: int) -> None:
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{part}"] = (channels,)
        shapes[f"{name}.num_batches_tracked"] = ()

    bottleneck = depth >= 50
    expansion = 4 if bottleneck else 1
    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, count in enumerate(_BLOCKS[depth], start=1):
        planes = 64 * 2 ** (layer - 1)
        for block in range(count):
            p = f"layer{layer}.{block}"
            if bottleneck:
                conv(f"{p}.conv1", planes, inplanes, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * 4, planes, 1)
                bn(f"{p}.bn3", planes * 4)
            else:
                conv(f"{p}.conv1", planes, inplanes, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
            if block == 0 and (layer > 1 or inplanes != planes * expansion):
                conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    for i in range(3):  # ConvTranspose2d weights are (in, out, k, k), no bias
        shapes[f"deconv_layers.{3 * i}.weight"] = (inplanes if i == 0 else 256, 256, 4, 4)
        bn(f"deconv_layers.{3 * i + 1}", 256)
    conv("final_layer", num_keypoints, 256, 1)
    shapes["final_layer.bias"] = (num_keypoints,)
    return shapes


def _published_state(
    depth: int, layout: str, seed: int = 0, *, counters: bool = True
) -> dict[str, torch.Tensor]:
    """Random weights under the published key names of ``layout`` (mmpose, mmpose0x, microsoft)."""
    gen = torch.Generator().manual_seed(seed)
    head = {"mmpose": "head.", "mmpose0x": "keypoint_head.", "microsoft": ""}[layout]
    trunk = "" if layout == "microsoft" else "backbone."
    state = {}
    for key, shape in _published_shapes(depth).items():
        if key.endswith("num_batches_tracked"):
            if counters:
                state[trunk + key] = torch.tensor(1234, dtype=torch.int64)
            continue
        prefix = head if key.startswith(("deconv_layers.", "final_layer.")) else trunk
        if key.endswith("running_var"):
            value = torch.rand(shape, generator=gen) + 0.5
        else:
            value = torch.randn(shape, generator=gen) * 0.05
        state[prefix + key] = value
    return state


def _assert_loaded_key_for_key(model: PoseNet, state: dict[str, torch.Tensor], prefixes) -> None:
    """Every file tensor is in the model under its name minus the layout prefix, and nothing else
    is in the model but (for microsoft files) the BN counters PyTorch 0.4.0 did not write."""
    ours = model.state_dict()
    seen = set()
    for key, value in state.items():
        native = key
        for prefix in prefixes:
            if key.startswith(prefix):
                native = key[len(prefix) :]
                break
        assert native in ours, key
        assert ours[native].dtype == value.dtype and torch.equal(ours[native], value), key
        seen.add(native)
    rest = set(ours) - seen
    assert all(k.endswith("num_batches_tracked") for k in rest), sorted(rest)[:5]


STAND_INS = {
    "mmengine/__init__.py": "",
    "mmengine/config/__init__.py": "from .config import ConfigDict\n",
    "mmengine/config/config.py": """
        class ConfigDict(dict):
            \"\"\"Named like mmengine's ConfigDict (an addict.Dict, itself a dict).\"\"\"
    """,
    "mmengine/logging/__init__.py": "",
    "mmengine/logging/history_buffer.py": """
        import numpy as np

        class HistoryBuffer:
            \"\"\"Named like mmengine's HistoryBuffer (the message hub's scalar logs).\"\"\"

            def __init__(self, log_history=(), count_history=(), max_length=1000000):
                self.max_length = max_length
                self._log_history = np.array(log_history)
                self._count_history = np.array(count_history)
    """,
    "mmengine/hooks/__init__.py": """
        from pathlib import Path

        def touch(path):
            \"\"\"Code living in a third-party package: loading must never call it.\"\"\"
            Path(path).write_text("ran")
            return path

        class Deferred:
            def __init__(self, path):
                self.path = path

            def __reduce__(self):
                return (touch, (self.path,))
    """,
}


@pytest.fixture()
def stand_ins(tmp_path: Path) -> Iterator[Any]:
    """Import a throwaway ``mmengine`` package from tmp_path; yields a function that removes it
    from sys.modules, sys.path and disk (the state in which files are then loaded)."""
    root = tmp_path / "stand_ins"
    for rel, text in STAND_INS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))

    def remove(*, from_disk: bool = True) -> None:
        for name in [n for n in sys.modules if n == "mmengine" or n.startswith("mmengine.")]:
            del sys.modules[name]
        if str(root) in sys.path:
            sys.path.remove(str(root))
        if from_disk:
            shutil.rmtree(root, ignore_errors=True)

    config = importlib.import_module("mmengine.config.config")
    history = importlib.import_module("mmengine.logging.history_buffer")
    hooks = importlib.import_module("mmengine.hooks")
    yield types.SimpleNamespace(
        ConfigDict=config.ConfigDict,
        HistoryBuffer=history.HistoryBuffer,
        Deferred=hooks.Deferred,
        remove=remove,
    )
    remove()


def _mmpose_dataset_meta() -> dict[str, Any]:
    """Like mmpose's parse_pose_metainfo output for COCO: numpy arrays of several dtypes."""
    return {
        "dataset_name": "coco",
        "num_keypoints": 17,
        "flip_indices": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15],
        "keypoint_colors": np.full((17, 3), 255, dtype=np.uint8),
        "skeleton_link_colors": np.zeros((19, 3), dtype=np.uint8),
        "dataset_keypoint_weights": np.ones(17, dtype=np.float32),
        "sigmas": np.linspace(0.025, 0.107, 17).astype(np.float32),
    }


def _mmengine_publish(
    tmp_path: Path, stand_ins: Any, state: dict[str, torch.Tensor], meta_extra: dict | None = None
) -> Path:
    """mmengine Runner.save_checkpoint, then mmpose's publish_model.py; returns the final file.

    ``meta_extra`` is added to ``meta`` at the publish step (a tampered published file)."""
    meta = {
        "epoch": 210,
        "iter": 210 * 2340,  # epochs x iterations per epoch
        "cfg": "model = dict(type='TopdownPoseEstimator', ...)",
        "seed": np.int64(21),
        "experiment_name": "td-hm_res50_8xb64-210e_coco-256x192_20220923_062411",
        "time": "20220923_122131",
        "mmengine_version": "0.1.0",
        "dataset_meta": _mmpose_dataset_meta(),
        "best_coco/AP": np.float64(0.718),
        "scalars": [np.float32(0.5), np.int32(3), np.uint8(7), np.bool_(True), np.float16(1.5)],
        "model_cfg": stand_ins.ConfigDict(type="HeatmapHead", in_channels=2048, out_channels=17),
    }
    training = {
        "meta": meta,
        "state_dict": state,
        "message_hub": {"log_scalars": {"train/loss": stand_ins.HistoryBuffer([0.1], [64])}},
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1]}]},
        "param_schedulers": [{"base_lrs": [5e-4], "last_epoch": 210}],
    }
    raw = tmp_path / "epoch_210.pth"
    torch.save(training, raw)  # mmengine: torch.save of the dict (zip format)
    # publish_model.py: keep meta and state_dict, legacy format, name by the sha256.
    checkpoint = torch.load(raw, map_location="cpu", weights_only=False)
    checkpoint = {k: v for k, v in checkpoint.items() if k in ("meta", "state_dict")}
    # Objects a tampered file would carry go in here (loading them above would run them).
    checkpoint["meta"].update(meta_extra or {})
    out = tmp_path / "td-hm_res_8xb64-210e_coco-256x192.pth"
    torch.save(checkpoint, out, _use_new_zipfile_serialization=False)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    final = out.with_name(f"{out.stem}-{sha[:8]}_20220923.pth")
    out.rename(final)
    raw.unlink()
    return final


def _register_cached(monkeypatch, name: str, file: Path, cache: Path, **changes) -> Path:
    """Put ``file`` in ``cache`` under the entry's name for it, hash computed now."""
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / file.name
    shutil.move(file, cached)
    sha = hashlib.sha256(cached.read_bytes()).hexdigest()
    _patch_entry(
        monkeypatch,
        name,
        filename=cached.name,
        sha256_prefix=sha[:8],
        url="http://127.0.0.1:9/never-used.pth",
        **changes,
    )
    return cached


def test_published_mmpose_res50_file_with_mmengine_meta_loads_by_registry_name(
    tmp_path: Path, monkeypatch, stand_ins
) -> None:
    state = _published_state(50, "mmpose")
    published = _mmengine_publish(tmp_path, stand_ins, state)
    stand_ins.remove()  # the classes in meta can no longer be imported
    assert "mmengine" not in sys.modules
    # Files given by path keep the strict loader: the mmengine objects are refused, by name.
    with pytest.raises(CheckpointError, match=r"mmengine\.config\.config\.ConfigDict"):
        load_pose_model(published)

    name = "mmpose_res50_coco_256x192"
    _register_cached(monkeypatch, name, published, tmp_path / "cache")
    model = load_pose_model(name, cache_dir=tmp_path / "cache")
    assert "mmengine" not in sys.modules  # nothing was imported
    assert isinstance(model, SimpleBaseline) and model.arch["name"] == "simplebaseline_res50"
    _assert_loaded_key_for_key(model, state, ("backbone.", "head."))
    assert model.preprocessing.color_order == "RGB" and model.input_size == (256, 192)
    assert model.preprocessing.decode_rule == "mmpose"


def test_published_mmpose0x_file_with_mmcv_meta_loads_by_registry_name(
    tmp_path: Path, monkeypatch
) -> None:
    state = _published_state(18, "mmpose0x")
    meta = {  # mmcv save_checkpoint + the runner's meta
        "mmcv_version": "1.0.2",
        "time": "Thu Jul  9 11:07:15 2020",
        "config": "model = dict(type='TopDown', ...)",
        "env_info": "sys.platform: linux\nPython: 3.7.7",
        "seed": None,
        "epoch": 210,
        "iter": 491400,
    }
    path = tmp_path / "res18_coco_256x192.pth"
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=False)
    name = "mmpose0x_res50_coco_256x192"
    _register_cached(monkeypatch, name, path, tmp_path / "cache", arch="simplebaseline_res18")
    model = load_pose_model(name, cache_dir=tmp_path / "cache")
    _assert_loaded_key_for_key(model, state, ("backbone.", "keypoint_head."))
    # Plain metadata: the same file by path loads with the strict loader too.
    by_path = load_pose_model(tmp_path / "cache" / path.name)
    _assert_loaded_key_for_key(by_path, state, ("backbone.", "keypoint_head."))


class _RunsCode:
    """A pickle whose loading would run ``os.system`` or ``exec`` (a malicious checkpoint)."""

    def __init__(self, how: str, marker: Path) -> None:
        self.how, self.marker = how, marker

    def __reduce__(self) -> tuple:
        if self.how == "os.system":
            return (os.system, (f"touch {self.marker}",))
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("how", ["os.system", "exec"])
def test_a_hash_matching_file_that_would_run_code_is_refused_without_running_it(
    tmp_path: Path, monkeypatch, stand_ins, how: str
) -> None:
    marker = tmp_path / "marker"
    state = _published_state(18, "mmpose")
    published = _mmengine_publish(tmp_path, stand_ins, state, {"hook": _RunsCode(how, marker)})
    stand_ins.remove()
    name = "mmpose_res50_coco_256x192"
    _register_cached(monkeypatch, name, published, tmp_path / "cache", arch="simplebaseline_res18")
    with pytest.raises(CheckpointError, match="refused it and ran nothing") as info:
        load_pose_model(name, cache_dir=tmp_path / "cache")
    assert ("posix.system" if how == "os.system" else "builtins.exec") in str(info.value)
    assert not marker.exists()


def test_third_party_code_named_in_a_hash_matching_file_is_never_imported_or_called(
    tmp_path: Path, monkeypatch, stand_ins
) -> None:
    marker = tmp_path / "marker"
    state = _published_state(18, "mmpose")
    published = _mmengine_publish(
        tmp_path, stand_ins, state, {"deferred": stand_ins.Deferred(str(marker))}
    )
    assert not marker.exists()
    # The package stays importable (on sys.path, on disk): an ordinary unpickler would import
    # mmengine.hooks and call touch(); the restricted one leaves an inert placeholder.
    stand_ins.remove(from_disk=False)
    sys.path.insert(0, str(tmp_path / "stand_ins"))
    name = "mmpose_res50_coco_256x192"
    _register_cached(monkeypatch, name, published, tmp_path / "cache", arch="simplebaseline_res18")
    model = load_pose_model(name, cache_dir=tmp_path / "cache")
    _assert_loaded_key_for_key(model, state, ("backbone.", "head."))
    assert not marker.exists()
    assert "mmengine" not in sys.modules and "mmengine.hooks" not in sys.modules
    sys.path.remove(str(tmp_path / "stand_ins"))


def test_the_restricted_loader_finds_the_weights_only_allow_list_of_this_torch() -> None:
    """The restricted unpickler rebuilds tensors with torch's own weights_only allow-list, which
    PyTorch only offers through a private function: on a PyTorch where it moved or changed, this
    test (and the loader) fail with one sentence naming the PyTorch version and what is missing,
    not with a KeyError inside a checkpoint load."""
    from pose_ros.models import unpickling

    allowed = unpickling.torch_weights_only_globals()  # raises TorchAllowListError if changed
    assert set(unpickling.REQUIRED_TORCH_GLOBALS) <= set(allowed)
    # The names resolve to the very functions torch.load uses to rebuild tensors.
    assert allowed["torch._utils._rebuild_tensor_v2"] is torch._utils._rebuild_tensor_v2
    assert allowed["torch.Size"] is torch.Size
    # The public accessor holds only the globals added by users: no tensor rebuilding.
    public = {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals()}
    assert "torch._utils._rebuild_tensor_v2" not in public
    # What a PyTorch that changed would be told.
    problem = unpickling.torch_allow_list_problem({"torch.Size": torch.Size}, "9.1.0")
    assert problem is not None
    assert problem.startswith("torch 9.1.0: the weights_only allow-list lacks ")
    assert "torch._utils._rebuild_tensor_v2" in problem and "torch.Size" not in problem
    assert "needs updating for this PyTorch" in problem
    problem = unpickling.torch_allow_list_problem([("torch.Size", torch.Size)], "9.1.0")
    assert problem is not None and "returned list, not a dict" in problem
    assert unpickling.torch_allow_list_problem(allowed, torch.__version__) is None


def test_microsoft_bare_state_dict_loads_key_for_key_as_bgr(tmp_path: Path) -> None:
    state = _published_state(50, "microsoft", counters=False)  # PyTorch 0.4.0: no counters
    path = tmp_path / "pose_resnet_50_384x288.pth.tar"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    model = load_pose_model(path)
    assert isinstance(model, SimpleBaseline)
    assert model.arch["name"] == "simplebaseline_res50"  # depth inferred from the keys
    _assert_loaded_key_for_key(model, state, ())
    assert all(
        int(v) == 0 for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")
    )
    prep = model.preprocessing
    assert prep.color_order == "BGR" and prep.decode_rule == "microsoft"
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)
    assert model.input_size == (384, 288)  # from the file name


def test_microsoft_training_checkpoint_with_dataparallel_prefix_loads(
    tmp_path: Path, monkeypatch
) -> None:
    state = _published_state(18, "microsoft", counters=False)
    checkpoint = {  # lib/utils/utils.py save_checkpoint of the reference
        "epoch": 140,
        "model": "pose_resnet",
        "state_dict": {"module." + k: v for k, v in state.items()},
        "perf": np.float64(0.704),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0]}]},
    }
    path = tmp_path / "pose_resnet_18_256x192.pth.tar"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    _assert_loaded_key_for_key(load_pose_model(path), state, ())
    # Placed by hand in the cache under a registry name (no hash recorded: strict loader).
    name = "microsoft_res50_coco_256x192"
    _patch_entry(monkeypatch, name, filename=path.name, arch="simplebaseline_res18")
    model = load_pose_model(name, cache_dir=tmp_path)
    _assert_loaded_key_for_key(model, state, ())
    assert model.preprocessing.color_order == "BGR"
    assert model.preprocessing.decode_rule == "microsoft"


@pytest.mark.parametrize(("head", "layout"), [("head.", "mmpose"), ("keypoint_head.", "mmpose0x")])
def test_mmpose_files_by_path_load_as_rgb(tmp_path: Path, head: str, layout: str) -> None:
    state = _published_state(18, layout)
    checkpoint = {
        "meta": {"dataset_meta": {"sigmas": np.linspace(0.1, 0.2, 17)}, "epoch": 210},
        "state_dict": state,
    }
    path = tmp_path / f"{layout}_res18_weights.pth"
    torch.save(checkpoint, path)
    model = load_pose_model(path)
    assert model.arch["name"] == "simplebaseline_res18"
    _assert_loaded_key_for_key(model, state, ("backbone.", head))
    assert model.preprocessing.color_order == "RGB"
    assert model.preprocessing.decode_rule == "mmpose"
    assert model.input_size == (256, 192)  # nothing in the name: the default
    assert load_pose_model(path, input_size=(384, 288)).input_size == (384, 288)


def test_resnet_depth_is_inferred_from_the_keys_for_every_depth() -> None:
    with torch.device("meta"):
        for depth in (18, 34, 50, 101, 152):
            model = build_pose_model(f"simplebaseline_res{depth}", num_keypoints=14)
            inferred = _infer_arch(model.state_dict())
            assert inferred == {
                "name": f"simplebaseline_res{depth}",
                "num_keypoints": 14,
                "num_deconv_filters": 256,
            }


def test_simplebaseline_file_initialises_an_attention_model(tmp_path: Path) -> None:
    state = _published_state(18, "microsoft", counters=False)
    path = tmp_path / "pose_resnet_18.pth.tar"
    torch.save(state, path)
    model = load_pose_model(path, arch="attention_res18")
    assert isinstance(model, AttentionPoseNet)
    assert model.preprocessing.color_order == "BGR"
    ours = model.state_dict()
    assert torch.equal(ours["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert torch.equal(ours["part_attention.part_conv.weight"], state["final_layer.weight"])


# --- our format ---------------------------------------------------------------------------------


def test_own_format_round_trip_rebuilds_an_identical_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_pose_model(
        "attention_res18", input_size=(384, 288), crf_iterations=2, part_output="final_conv"
    )
    _random_state(model)
    model.eval()
    extra = {"epoch": 12, "metrics": {"AP": 0.71}, "history": [1.0, 0.5], "ema": torch.ones(2)}
    path = save_checkpoint(model, tmp_path / "run" / "best.pth", extra=extra)
    assert path == tmp_path / "run" / "best.pth"
    assert [p.name for p in path.parent.iterdir()] == ["best.pth"]  # no temp file left

    # Plain tensors and Python values only: loads with the strict unpickler, no allowlist.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "pose_ros.checkpoint" and raw["version"] == 1
    assert raw["arch"] == model.arch
    assert raw["preprocessing"] == model.preprocessing.to_dict()
    assert raw["extra"]["metrics"] == {"AP": 0.71} and torch.equal(
        raw["extra"]["ema"], torch.ones(2)
    )

    loaded = load_pose_model(path)
    assert isinstance(loaded, AttentionPoseNet)
    assert loaded.arch == model.arch
    assert loaded.preprocessing == model.preprocessing
    _assert_same_weights(loaded, model)
    loaded.eval()
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_save_is_atomic_and_refuses_non_plain_extra(tmp_path: Path) -> None:
    model = _reference("simplebaseline_res18")
    path = save_checkpoint(model, tmp_path / "model.pth")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="Path"):
        save_checkpoint(model, path, extra={"where": Path("/tmp")})
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_a_file_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    state = _microsoft_state(_reference("simplebaseline_res18"))
    torch.save({"state_dict": state, "config": _Config()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects") as info:
        load_pose_model(path)
    assert "pickled.pth" in str(info.value)


class _Config:
    """A stand-in for an arbitrary object a training script might pickle into a checkpoint."""


# --- errors -------------------------------------------------------------------------------------


@pytest.fixture()
def good_file(tmp_path: Path) -> Path:
    return save_checkpoint(_reference("simplebaseline_res18"), tmp_path / "good.pth")


@pytest.mark.parametrize("kind", ["truncated", "random", "text", "empty"])
def test_corrupt_files_are_checkpoint_errors_naming_the_file(tmp_path, good_file, kind) -> None:
    data = good_file.read_bytes()
    content = {
        "truncated": data[: len(data) // 2],
        "random": np.random.default_rng(0).bytes(4096),
        "text": b"this is not a checkpoint\n",
        "empty": b"",
    }[kind]
    path = tmp_path / f"{kind}.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read") as info:
        load_pose_model(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(CheckpointError, match=r"nowhere\.pth"):
        load_pose_model(missing)
    with pytest.raises(CheckpointError, match="mmpose_res50_coco_256x192") as info:
        load_pose_model("mmpose_res51_coco_256x192")
    assert "not the name of a published checkpoint" in str(info.value)
    with pytest.raises(CheckpointError, match="not a file"):
        load_pose_model(tmp_path)


def test_weights_that_do_not_fit_are_summarised(tmp_path: Path) -> None:
    state = _microsoft_state(_reference("simplebaseline_res18"))
    path = tmp_path / "res18.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not fit simplebaseline_res34") as info:
        load_pose_model(path, arch="simplebaseline_res34")
    message = str(info.value)
    assert (
        "res18.pth" in message and "missing keys" in message and "layer1.2.conv1.weight" in message
    )
    assert "(+" in message  # long lists are cut, with a count

    odd = dict(state)
    odd["deconv_layers.1.weight"] = torch.ones(128)
    odd["extra_head.weight"] = torch.ones(3)
    path = tmp_path / "odd.pth"
    torch.save(odd, path)
    with pytest.raises(CheckpointError, match=r"odd\.pth") as info:
        load_pose_model(path)
    message = str(info.value)
    assert "1 unexpected keys (extra_head.weight)" in message
    assert "deconv_layers.1.weight (128,) in file vs (256,) in model" in message

    with pytest.raises(CheckpointError, match="holds a simplebaseline_res18, not a simplebaseline"):
        load_pose_model(
            save_checkpoint(_reference("simplebaseline_res18"), tmp_path / "o.pth"),
            arch="simplebaseline_res50",
        )


# --- registry and cache -------------------------------------------------------------------------


def test_the_registry_cannot_be_changed_through_its_public_view() -> None:
    entry = next(iter(PUBLISHED_CHECKPOINTS.values()))
    with pytest.raises(TypeError):
        PUBLISHED_CHECKPOINTS["x"] = entry  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.sha256_prefix = None  # type: ignore[misc]


def test_cache_dir_resolution(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("POSE_ROS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert checkpoint_cache_dir() == tmp_path / "xdg" / "pose_ros" / "checkpoints"
    monkeypatch.setenv("POSE_ROS_CACHE", str(tmp_path / "mine"))
    assert checkpoint_cache_dir() == tmp_path / "mine" / "checkpoints"
    assert checkpoint_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("POSE_ROS_CACHE")
    assert checkpoint_cache_dir() == Path.home() / ".cache" / "pose_ros" / "checkpoints"


def _patch_entry(monkeypatch, name: str, **changes) -> registry.PublishedCheckpoint:
    entry = dataclasses.replace(PUBLISHED_CHECKPOINTS[name], **changes)
    monkeypatch.setitem(registry._REGISTRY, name, entry)
    return entry


def test_offline_download_error_names_the_file_and_where_to_put_it(monkeypatch, tmp_path) -> None:
    name = "mmpose_res50_coco_256x192"
    entry = _patch_entry(monkeypatch, name, url="http://127.0.0.1:9/x.pth")  # closed port
    with pytest.raises(CheckpointError) as info:
        load_pose_model(name, cache_dir=tmp_path)
    message = str(info.value)
    assert entry.filename in message
    assert str(tmp_path / entry.filename) in message and "place it by hand" in message
    assert list(tmp_path.iterdir()) == []  # no partial file left


def test_file_without_url_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no direct download URL") as info:
        load_pose_model("microsoft_res50_coco_256x192", cache_dir=tmp_path)
    message = str(info.value)
    assert "pose_resnet_50_256x192.pth.tar" in message
    assert "microsoft/human-pose-estimation.pytorch" in message
    assert str(tmp_path / "pose_resnet_50_256x192.pth.tar") in message


def _write_mmpose_res18(path: Path) -> str:
    torch.save({"meta": {}, "state_dict": _published_state(18, "mmpose")}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_placed_by_hand_in_the_cache_is_hash_checked(monkeypatch, tmp_path: Path) -> None:
    name = "mmpose_res50_coco_384x288"
    cached = tmp_path / "by_hand.pth"
    sha = _write_mmpose_res18(cached)
    _patch_entry(
        monkeypatch,
        name,
        filename=cached.name,
        url="http://127.0.0.1:9/never-used.pth",
        sha256_prefix=sha[:8],
        arch="simplebaseline_res18",
    )
    model = load_pose_model(name, cache_dir=tmp_path)
    _assert_loaded_key_for_key(model, _published_state(18, "mmpose"), ("backbone.", "head."))
    assert model.input_size == (384, 288) and model.preprocessing.color_order == "RGB"

    _patch_entry(monkeypatch, name, filename=cached.name, sha256_prefix="00000000")
    with pytest.raises(CheckpointError, match="expects one starting 00000000") as info:
        load_pose_model(name, cache_dir=tmp_path)
    assert str(cached) in str(info.value)
    assert cached.is_file()  # a file placed by hand is never deleted


@pytest.fixture()
def local_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a folder (no network beyond this machine)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_the_hash_and_never_keeps_a_bad_file(monkeypatch, tmp_path, local_server):
    base, root = local_server
    sha = _write_mmpose_res18(root / "weights.pth")
    cache = tmp_path / "cache"
    name = "mmpose0x_res50_coco_256x192"

    _patch_entry(
        monkeypatch, name, url=base + "weights.pth", filename="w.pth", sha256_prefix="0bad"
    )
    with pytest.raises(CheckpointError, match="file was deleted") as info:
        load_pose_model(name, cache_dir=cache)
    assert "w.pth" in str(info.value)
    assert list(cache.iterdir()) == []

    _patch_entry(
        monkeypatch,
        name,
        url=base + "weights.pth",
        filename="w.pth",
        sha256_prefix=sha[:8],
        arch="simplebaseline_res18",
    )
    model = load_pose_model(name, cache_dir=cache)
    assert [p.name for p in cache.iterdir()] == ["w.pth"]
    _assert_loaded_key_for_key(model, _published_state(18, "mmpose"), ("backbone.", "head."))
    (root / "weights.pth").unlink()  # a second load uses the cache, not the server
    assert load_pose_model(name, cache_dir=cache).arch["name"] == "simplebaseline_res18"


def test_atomic_write_fsyncs_the_file_then_its_folder(tmp_path: Path, monkeypatch) -> None:
    from pose_ros.fileio import atomic_write

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    target = tmp_path / "out" / "result.json"
    with atomic_write(target, "w") as stream:
        stream.write("{}")
    assert synced == ["file", "dir"]
    assert target.read_text() == "{}" and sorted(p.name for p in target.parent.iterdir()) == [
        "result.json"
    ]
    synced.clear()
    with pytest.raises(RuntimeError), atomic_write(target, "w") as stream:
        stream.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "{}" and len(list(target.parent.iterdir())) == 1
