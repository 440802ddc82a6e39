"""`make demo`: which weights it runs with, and its own video as input.

Without cached weights the demo downloads the default published checkpoint through the registry
(verified sha256); offline, or when the download fails its check, it runs with random weights and
says so. The download is exercised against a local HTTP server: the registry entry of the default
model is pointed at it, the cache at a temporary folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import STREET_VIDEO

from devtools import demo
from pose_ros.models import registry
from pose_ros.ros.params import DEFAULT_MODEL


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(folder, base URL) of an HTTP server on localhost serving that folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("POSE_ROS_CACHE", str(root))
    return root / "checkpoints"


def _point_default_model_at(monkeypatch: pytest.MonkeyPatch, url: str, sha256: str) -> None:
    entry = registry.PUBLISHED_CHECKPOINTS[DEFAULT_MODEL]
    replaced = dataclasses.replace(entry, url=url, sha256_prefix=sha256[:8])
    monkeypatch.setitem(registry._REGISTRY, DEFAULT_MODEL, replaced)


def test_demo_downloads_the_default_checkpoint_when_none_is_cached(
    http_folder: tuple[Path, str], empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, base = http_folder
    payload = b"published checkpoint bytes " * 1000
    (folder / "weights.pth").write_bytes(payload)
    _point_default_model_at(monkeypatch, base + "weights.pth", hashlib.sha256(payload).hexdigest())

    model, random_weights, note = demo.choose_model(None)

    assert (model, random_weights) == (DEFAULT_MODEL, False), note
    assert "downloaded and verified" in note
    filename = registry.PUBLISHED_CHECKPOINTS[DEFAULT_MODEL].filename
    assert (empty_cache / filename).read_bytes() == payload
    # A second run finds it in the cache (no server needed).
    (folder / "weights.pth").unlink()
    assert demo.choose_model(None)[:2] == (DEFAULT_MODEL, False)


def test_demo_refuses_a_download_with_the_wrong_hash(
    http_folder: tuple[Path, str], empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, base = http_folder
    (folder / "weights.pth").write_bytes(b"not the published file")
    _point_default_model_at(monkeypatch, base + "weights.pth", "0123456789abcdef")

    model, random_weights, note = demo.choose_model(None)

    assert (model, random_weights) == (demo.RANDOM_MODEL, True)
    assert "sha256" in note and "NO TRAINED WEIGHTS" in note
    assert not any(empty_cache.glob("*")), "a file that failed its check must not stay cached"


def test_demo_offline_runs_with_random_weights_and_says_so(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nobody listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _point_default_model_at(monkeypatch, f"http://127.0.0.1:{port}/weights.pth", "00" * 32)

    model, random_weights, note = demo.choose_model(None)

    assert (model, random_weights) == (demo.RANDOM_MODEL, True)
    assert "NO TRAINED WEIGHTS" in note and "Download failed" in note
    assert "--model" in note  # how to get real poses
    assert not any(empty_cache.glob("*"))


def test_demo_uses_the_model_it_is_given() -> None:
    assert demo.choose_model("best.pth") == ("best.pth", False, "model: best.pth")


def test_demo_reads_a_video_of_the_user() -> None:
    if not STREET_VIDEO.is_file():
        pytest.fail(f"test data missing: {STREET_VIDEO}")
    frames, fps = demo.video_frames(STREET_VIDEO)
    assert len(frames) == 5 and fps == pytest.approx(5.0)
    assert frames[0].shape == (540, 960, 3)
    assert demo.video_frames(STREET_VIDEO, limit=2)[0][1].tobytes() == frames[1].tobytes()
    args = demo.parse_args(["--output", "x", "--video", str(STREET_VIDEO)])
    # A video has no drawn truth and no depth; it plays at its own rate with the node's detector.
    assert args.detector == "fasterrcnn_mobilenet_v3_large_fpn"
    loaded = demo.load_frames(args)
    assert [truth for _, truth in loaded] == [None] * 5
    assert args.fps == pytest.approx(5.0) and args.depth is False
    figure = demo.parse_args(["--output", "x"])
    assert figure.detector == "full_image"
    assert len(demo.load_frames(figure)) == demo.DEFAULT_FRAMES and figure.fps == demo.DEFAULT_FPS


def test_demo_refuses_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        demo.video_frames(tmp_path / "missing.mp4")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(FileNotFoundError, match="read no frame"):
        demo.video_frames(tmp_path / "notes.mp4")


def test_demo_runs_the_node_on_a_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole demo on the street video: every frame published, answered and annotated."""
    if not STREET_VIDEO.is_file():
        pytest.fail(f"test data missing: {STREET_VIDEO}")
    output = tmp_path / "out"
    argv = ["--output", str(output), "--video", str(STREET_VIDEO), "--detector", "full_image"]
    argv += ["--model", "random:simplebaseline_res18", "--fps", "2"]
    # --model random:... needs allow_random_weights, which the demo sets only for its own choice.
    monkeypatch.setattr(demo, "choose_model", lambda model: (model, True, f"model: {model}"))
    assert demo.run(demo.parse_args(argv)) == 0
    summary = json.loads((output / "poses.json").read_text())["summary"]
    assert summary["input"] == str(STREET_VIDEO)
    assert summary["frames_sent"] == 5 and summary["frames_answered"] >= 1
    assert summary["mean_keypoint_error_px"] is None and summary["depth"] is False
    frames = sorted((output / "frames").glob("*.png"))
    assert frames and frames[0].stat().st_size > 0
