"""Checkpoints: our format, published microsoft / mmpose layouts, the registry and its cache.

Published files are rebuilt here from randomly initialised models with the published key layouts
(renamed keys, no ``num_batches_tracked`` for microsoft, mmpose metadata and data_preprocessor
buffers), so loading is checked key for key without a download. Nothing reaches the network: the
offline path uses a closed local port, the download path a local HTTP server.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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


def _mmpose_state(model: PoseNet, head: str) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in model.state_dict().items():
        prefix = head if key.startswith(("deconv_layers.", "final_layer.")) else "backbone."
        state[prefix + key] = value
    # mmpose 1.x data preprocessors carry mean/std buffers; they are not network weights.
    state["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    state["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    return state


def _assert_same_weights(loaded: PoseNet, reference: PoseNet, *, counters: bool = True) -> None:
    ours, theirs = loaded.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if key.endswith("num_batches_tracked"):
            if counters:
                assert torch.equal(ours[key], value), key
            continue
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


# --- published layouts -------------------------------------------------------------------------


def test_microsoft_resnet50_file_loads_key_for_key_as_bgr(tmp_path: Path) -> None:
    reference = _reference("simplebaseline_res50")
    state = _microsoft_state(reference)
    assert not any("num_batches_tracked" in k for k in state)
    path = tmp_path / "pose_resnet_50_384x288.pth.tar"
    # The microsoft files predate PyTorch's zip format.
    torch.save(state, path, _use_new_zipfile_serialization=False)

    model = load_pose_model(path)
    assert isinstance(model, SimpleBaseline)
    assert model.arch["name"] == "simplebaseline_res50"  # depth inferred from the keys
    _assert_same_weights(model, reference, counters=False)
    # The absent counters are filled, not reported missing.
    assert all(
        int(v) == 0 for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")
    )
    prep = model.preprocessing
    assert prep.color_order == "BGR"
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)
    assert model.input_size == (384, 288)  # from the file name

    reference.eval()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize(("head", "layout"), [("head.", "mmpose"), ("keypoint_head.", "mmpose0x")])
def test_mmpose_files_load_key_for_key_as_rgb(tmp_path: Path, head: str, layout: str) -> None:
    reference = _reference("simplebaseline_res18")
    checkpoint = {
        # mmpose metadata can hold numpy arrays (dataset_meta); they must not block loading.
        "meta": {"dataset_meta": {"sigmas": np.linspace(0.1, 0.2, 17)}, "epoch": 210},
        "state_dict": _mmpose_state(reference, head),
    }
    path = tmp_path / f"{layout}_res18_weights.pth"
    torch.save(checkpoint, path)

    model = load_pose_model(path)
    assert model.arch["name"] == "simplebaseline_res18"
    _assert_same_weights(model, reference)
    assert model.preprocessing.color_order == "RGB"
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
    reference = _reference("simplebaseline_res18")
    path = tmp_path / "pose_resnet_18.pth.tar"
    torch.save(_microsoft_state(reference), path)
    model = load_pose_model(path, arch="attention_res18")
    assert isinstance(model, AttentionPoseNet)
    assert model.preprocessing.color_order == "BGR"
    ours = model.state_dict()
    assert torch.equal(ours["layer4.1.conv2.weight"], reference.layer4[1].conv2.weight)
    assert torch.equal(ours["part_attention.part_conv.weight"], reference.final_layer.weight)


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


def test_registry_lists_the_mmpose_and_microsoft_files() -> None:
    for depth in (50, 101, 152):
        for size in ("256x192", "384x288"):
            for prefix in ("mmpose0x", "microsoft"):
                assert f"{prefix}_res{depth}_coco_{size}" in PUBLISHED_CHECKPOINTS
    assert "mmpose_res50_coco_256x192" in PUBLISHED_CHECKPOINTS
    entry = PUBLISHED_CHECKPOINTS["mmpose_res50_coco_256x192"]
    assert entry.url == (
        "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
        "td-hm_res50_8xb64-210e_coco-256x192-04af38ce_20220923.pth"
    )
    assert entry.sha256_prefix == "04af38ce" and entry.layout == "mmpose"
    assert entry.arch == "simplebaseline_res50" and entry.input_size == (256, 192)
    old = PUBLISHED_CHECKPOINTS["mmpose0x_res152_coco_384x288"]
    assert old.sha256_prefix == "3860d4c9" and old.url.endswith(old.filename)
    for entry in PUBLISHED_CHECKPOINTS.values():
        if entry.layout == "microsoft":
            assert entry.url is None and entry.color_order == "BGR"
            assert entry.filename.startswith("pose_resnet_") and "github.com" in entry.homepage
        else:
            assert entry.color_order == "RGB" and entry.sha256_prefix in entry.filename
        assert entry.preprocessing.input_size == entry.input_size
    with pytest.raises(TypeError):
        PUBLISHED_CHECKPOINTS["x"] = entry  # type: ignore[index]


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
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        load_pose_model(name, cache_dir=tmp_path)
    assert time.monotonic() - start < 10
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
    reference = _reference("simplebaseline_res18")
    torch.save({"meta": {}, "state_dict": _mmpose_state(reference, "head.")}, path)
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
    _assert_same_weights(model, _reference("simplebaseline_res18"))
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
    _assert_same_weights(model, _reference("simplebaseline_res18"))
    (root / "weights.pth").unlink()  # a second load uses the cache, not the server
    assert load_pose_model(name, cache_dir=cache).arch["name"] == "simplebaseline_res18"
