"""Heatmap codec: targets, sub-pixel decoding accuracy, flip test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose_ros import codec
from pose_ros.keypoints import FLIP_PAIRS, NUM_KEYPOINTS

HEATMAP_SIZE = (64, 48)


def _random_subpixel_positions(count: int, seed: int, margin: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xs = rng.uniform(margin, HEATMAP_SIZE[1] - 1 - margin, count)
    ys = rng.uniform(margin, HEATMAP_SIZE[0] - 1 - margin, count)
    return np.stack([xs, ys], axis=1)


def _encoded(positions: np.ndarray) -> np.ndarray:
    heatmaps, weights = codec.encode_heatmaps(positions, np.ones(len(positions)), HEATMAP_SIZE)
    assert weights.all()
    return heatmaps[None]


def test_encode_is_an_unnormalised_gaussian_with_a_3_sigma_window() -> None:
    heatmaps, weights = codec.encode_heatmaps(np.array([[20.0, 30.0]]), np.array([2]), HEATMAP_SIZE)
    hm = heatmaps[0]
    assert hm.shape == HEATMAP_SIZE and hm.dtype == np.float32
    assert hm[30, 20] == pytest.approx(1.0)
    assert hm[30, 22] == pytest.approx(np.exp(-4 / 8))  # sigma 2: exp(-dx^2 / 2 sigma^2)
    assert hm[30, 26] > 0 and hm[30, 27] == 0  # window of 3 sigma = 6 px
    assert hm[36, 20] > 0 and hm[37, 20] == 0
    assert weights[0] == 1.0


def test_encode_weights_zero_for_invisible_and_outside_keypoints() -> None:
    points = np.array([[10.0, 10.0], [10.0, 10.0], [-7.0, 10.0], [10.0, 70.5], [-5.5, 10.0]])
    visible = np.array([2, 0, 1, 1, 1])
    heatmaps, weights = codec.encode_heatmaps(points, visible, HEATMAP_SIZE)
    assert weights.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert heatmaps[1].max() == 0 and heatmaps[2].max() == 0 and heatmaps[3].max() == 0
    # Partly outside: the part of the window inside the heatmap is kept.
    assert heatmaps[4][10, 0] == pytest.approx(np.exp(-(5.5**2) / 8), rel=1e-5)


def test_encode_reference_rounding_mode_centres_on_the_nearest_pixel() -> None:
    heatmaps, _ = codec.encode_heatmaps(np.array([[20.4, 30.6]]), [1], HEATMAP_SIZE, subpixel=False)
    assert np.unravel_index(heatmaps[0].argmax(), HEATMAP_SIZE) == (31, 20)
    assert heatmaps[0].max() == pytest.approx(1.0)


@pytest.mark.parametrize(("method", "tolerance"), [("dark", 0.1), ("quarter", 0.3)])
def test_decode_recovers_subpixel_positions(method: str, tolerance: float) -> None:
    positions = _random_subpixel_positions(200, seed=0)
    coords, scores = codec.decode_heatmaps(_encoded(positions), method)
    error = np.abs(coords[0] - positions)
    assert error.max() <= tolerance, f"{method}: max error {error.max():.3f} px"
    assert scores.shape == (1, 200) and (scores > 0.6).all()


def test_dark_is_more_accurate_than_quarter_offset() -> None:
    positions = _random_subpixel_positions(200, seed=1)
    heatmaps = _encoded(positions)
    dark, _ = codec.decode_heatmaps(heatmaps, "dark")
    quarter, _ = codec.decode_heatmaps(heatmaps, "quarter")
    dark_err = np.linalg.norm(dark[0] - positions, axis=1).mean()
    quarter_err = np.linalg.norm(quarter[0] - positions, axis=1).mean()
    assert dark_err < 0.05 < quarter_err


def test_decode_accepts_tensors_and_rejects_bad_input() -> None:
    positions = _random_subpixel_positions(3, seed=2)
    tensor = torch.from_numpy(_encoded(positions))
    coords, _ = codec.decode_heatmaps(tensor, "quarter")
    assert coords.shape == (1, 3, 2)
    with pytest.raises(ValueError, match="decode method"):
        codec.decode_heatmaps(tensor, "softargmax")
    with pytest.raises(ValueError, match=r"\(N, K, H, W\)"):
        codec.decode_heatmaps(tensor[0], "quarter")


def test_quarter_offset_moves_toward_the_higher_neighbour() -> None:
    hm = np.zeros((1, 1, 64, 48), dtype=np.float32)
    hm[0, 0, 20, 10] = 1.0
    hm[0, 0, 20, 11] = 0.5  # right neighbour higher
    hm[0, 0, 19, 10] = 0.4  # upper neighbour higher
    coords, scores = codec.decode_heatmaps(hm, "quarter")
    assert coords[0, 0].tolist() == [10.25, 19.75]
    assert scores[0, 0] == 1.0


def test_flip_back_swaps_pairs_mirrors_and_shifts_one_pixel() -> None:
    positions = _random_subpixel_positions(NUM_KEYPOINTS, seed=3)
    heatmaps = torch.from_numpy(_encoded(positions))
    flipped = heatmaps.flip(-1)
    for left, right in FLIP_PAIRS:  # what a network sees on a mirrored crop: sides swapped
        flipped[:, [left, right]] = flipped[:, [right, left]]
    back = codec.flip_heatmaps_back(flipped, shift=False)
    assert torch.equal(back, heatmaps)
    shifted = codec.flip_heatmaps_back(flipped)
    assert torch.equal(shifted[..., 1:], heatmaps[..., :-1])
    assert torch.equal(shifted[..., 0], heatmaps[..., 0])
    with pytest.raises(ValueError, match="17"):
        codec.flip_heatmaps_back(torch.zeros(1, 5, 8, 6))
