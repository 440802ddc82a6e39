"""Heatmap codec: targets, sub-pixel decoding accuracy, flip test."""

from __future__ import annotations

import cv2
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


# --- the rules of the weights' authors -----------------------------------------------------------


def _single_peak(y: int, x: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A peak at (y, x) whose right and lower neighbours are higher than the left and upper."""
    hm = np.zeros((1, 1, *size), dtype=np.float32)
    hm[0, 0, y, x] = 1.0
    for dy, dx, value in ((0, 1, 0.5), (0, -1, 0.2), (1, 0, 0.6), (-1, 0, 0.1)):
        if 0 <= y + dy < size[0] and 0 <= x + dx < size[1]:
            hm[0, 0, y + dy, x + dx] = value
    return hm


@pytest.mark.parametrize(
    ("y", "x", "mmpose", "microsoft"),
    [
        (20, 10, (10.25, 20.25), (10.25, 20.25)),  # inside on both axes: both rules move both
        (1, 10, (10.25, 1.0), (10.0, 1.0)),  # y at the edge: mmpose still moves x
        (20, 1, (1.0, 20.25), (1.0, 20.0)),  # x at the edge: mmpose still moves y
        (0, 10, (10.0, 0.0), (10.0, 0.0)),  # y = 0: mmpose's "0 < y" keeps x too
        (63, 10, (10.25, 63.0), (10.0, 63.0)),
    ],
)
def test_quarter_offset_follows_mmpose_per_axis_and_microsoft_both_axes(
    y: int, x: int, mmpose: tuple[float, float], microsoft: tuple[float, float]
) -> None:
    hm = _single_peak(y, x)
    by_mmpose, _ = codec.decode_heatmaps(hm, "quarter", rule="mmpose")
    by_microsoft, _ = codec.decode_heatmaps(hm, "quarter", rule="microsoft")
    assert tuple(by_mmpose[0, 0].tolist()) == mmpose
    assert tuple(by_microsoft[0, 0].tolist()) == microsoft
    with pytest.raises(ValueError, match="decode rule"):
        codec.decode_heatmaps(hm, "quarter", rule="udp")


def _dark_by_the_authors(heatmap: np.ndarray, kernel: int = 11) -> tuple[float, float]:
    """DARK for one heatmap, written as the authors' loop (DarkPose's taylor(), mmpose's
    refine_keypoints_dark): blur with a zero border, keep the peak height, log, then one Newton
    step with second derivatives taken over two pixels."""
    h, w = heatmap.shape
    border = (kernel - 1) // 2
    padded = np.zeros((h + 2 * border, w + 2 * border), np.float32)
    padded[border:-border, border:-border] = heatmap
    blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
    blurred *= heatmap.max() / blurred.max()
    hm = np.log(np.maximum(blurred, 1e-10))
    y, x = np.unravel_index(heatmap.argmax(), heatmap.shape)
    coord = np.array([x, y], np.float64)
    if 1 < x < w - 2 and 1 < y < h - 2:
        dx = 0.5 * (hm[y][x + 1] - hm[y][x - 1])
        dy = 0.5 * (hm[y + 1][x] - hm[y - 1][x])
        dxx = 0.25 * (hm[y][x + 2] - 2 * hm[y][x] + hm[y][x - 2])
        dxy = 0.25 * (hm[y + 1][x + 1] - hm[y - 1][x + 1] - hm[y + 1][x - 1] + hm[y - 1][x - 1])
        dyy = 0.25 * (hm[y + 2][x] - 2 * hm[y][x] + hm[y - 2][x])
        hessian = np.array([[dxx, dxy], [dxy, dyy]])
        if dxx * dyy - dxy**2 != 0:
            coord += -np.linalg.inv(hessian) @ np.array([dx, dy])
    return float(coord[0]), float(coord[1])


def test_dark_matches_the_authors_loop_on_irregular_heatmaps() -> None:
    rng = np.random.default_rng(7)
    # Skewed, noisy peaks (where one-pixel and two-pixel derivatives disagree), some at the edge.
    positions = np.array([[10.3, 20.7], [2.4, 30.1], [45.6, 5.2], [24.0, 62.5], [1.2, 1.6]])
    heatmaps = _encoded(positions)
    heatmaps[0, 0, 20:24, 10:14] += 0.4
    heatmaps = heatmaps + rng.uniform(0, 0.05, heatmaps.shape).astype(np.float32)
    for rule in codec.DECODE_RULES:
        coords, _ = codec.decode_heatmaps(heatmaps, "dark", rule=rule)
        for k in range(len(positions)):
            expected = _dark_by_the_authors(heatmaps[0, k])
            np.testing.assert_allclose(coords[0, k], expected, atol=1e-4, err_msg=f"{rule} {k}")


# --- the flip test through the pipeline ----------------------------------------------------------

#: COCO left/right pairs by index (eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
_COCO_LEFT_RIGHT = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


def test_flip_test_averages_with_the_hand_flipped_crops_shifted_one_pixel(monkeypatch) -> None:
    from pose_ros.models import build_pose_model
    from pose_ros.pipeline import PoseEstimator

    torch.manual_seed(0)
    model = build_pose_model("simplebaseline_res18", input_size=(64, 64)).eval()
    with torch.no_grad():  # heatmaps of order 1 (the default head init gives ~1e-8)
        model.final_layer.weight.normal_(0.0, 1.0)
    inputs: list[torch.Tensor] = []
    hook = model.register_forward_hook(lambda _m, args, _o: inputs.append(args[0].detach()))
    decoded: list[np.ndarray] = []
    real_decode = codec.decode_heatmaps

    def spy(heatmaps: torch.Tensor, *args: object, **kwargs: object) -> tuple:
        decoded.append(np.asarray(heatmaps, dtype=np.float32).copy())
        return real_decode(heatmaps, *args, **kwargs)

    monkeypatch.setattr(codec, "decode_heatmaps", spy)
    image = np.random.default_rng(0).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    boxes = np.array([[5.0, 5.0, 60.0, 90.0], [40.0, 20.0, 50.0, 80.0]], dtype=np.float32)
    PoseEstimator(model, device="cpu", flip_test=True)(image, color_order="BGR", boxes=boxes)
    hook.remove()

    crops = inputs[0][:2]  # the unflipped crops the pipeline made
    by_hand = torch.from_numpy(np.ascontiguousarray(crops.numpy()[..., ::-1]))
    with torch.no_grad():
        plain = model(crops).numpy()
        mirrored = model(by_hand).numpy()[..., ::-1].copy()
    for left, right in _COCO_LEFT_RIGHT:
        mirrored[:, [left, right]] = mirrored[:, [right, left]]
    shifted = mirrored.copy()  # the reference's one-pixel shift to the right
    shifted[..., 1:] = mirrored[..., :-1]
    expected = (plain + shifted) / 2
    assert len(decoded) == 1
    np.testing.assert_allclose(decoded[0], expected, rtol=0, atol=1e-5)
    # The shift matters: without it the average differs.
    assert not np.allclose(decoded[0], (plain + mirrored) / 2, rtol=0, atol=1e-5)
