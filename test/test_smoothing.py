"""The One-Euro filter against its definition (Casiez et al. 2012): a constant passes unchanged, a
step is followed with the lag of a first-order low-pass at min_cutoff when beta is 0, a ramp is
followed with less lag when beta > 0, jitter is reduced at rest; masked values never update."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pose_ros.smoothing import OneEuroFilter, SmoothingConfig

RATE = 30.0


def run(config: SmoothingConfig, signal: np.ndarray) -> np.ndarray:
    one_euro = OneEuroFilter((1,), config)
    return np.array([one_euro(i / RATE, np.array([v]))[0] for i, v in enumerate(signal)])


def test_constant_input_passes_unchanged() -> None:
    out = run(SmoothingConfig(), np.full(50, 123.5))
    np.testing.assert_allclose(out, 123.5)


def test_step_with_beta_zero_is_a_first_order_low_pass_at_min_cutoff() -> None:
    config = SmoothingConfig(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    signal = np.r_[np.zeros(5), np.full(60, 100.0)]
    out = run(config, signal)
    # By the definition: x_hat_n = a x_n + (1 - a) x_hat_{n-1}, a = 1 / (1 + tau / dt).
    a = 1.0 / (1.0 + (1.0 / (2 * math.pi * 1.0)) * RATE)
    expected = 100.0 * (1.0 - (1.0 - a) ** np.arange(1, 61))
    np.testing.assert_allclose(out[5:], expected, rtol=1e-9)
    # Lag figure: frames to reach 90 % of the step.
    frames_to_90 = int(np.argmax(out[5:] >= 90.0)) + 1
    print(f"step 0->100 at {RATE:g} Hz, min_cutoff 1 Hz, beta 0: 90 % after {frames_to_90} frames")
    assert frames_to_90 == math.ceil(math.log(0.1) / math.log(1.0 - a))


def test_beta_reduces_the_lag_on_a_ramp() -> None:
    ramp = np.arange(90) * 10.0  # 300 px/s
    slow = run(SmoothingConfig(min_cutoff=1.0, beta=0.0), ramp)
    fast = run(SmoothingConfig(min_cutoff=1.0, beta=0.05), ramp)
    lag_slow = float(np.mean(ramp[-30:] - slow[-30:]))
    lag_fast = float(np.mean(ramp[-30:] - fast[-30:]))
    print(f"ramp 300 px/s: lag {lag_slow:.1f} px with beta 0, {lag_fast:.1f} px with beta 0.05")
    # A first-order low pass lags a ramp by speed * tau in the steady state (tau = 1/(2 pi fc)).
    assert lag_slow == pytest.approx(300.0 / (2 * math.pi * 1.0), rel=0.1)
    assert lag_fast < lag_slow / 3


def test_jitter_at_rest_is_reduced() -> None:
    rng = np.random.default_rng(0)
    noisy = 200.0 + rng.normal(0, 2.0, 300)
    out = run(SmoothingConfig(), noisy)
    jitter_in = float(np.std(np.diff(noisy[100:])))
    jitter_out = float(np.std(np.diff(out[100:])))
    print(f"jitter (std of frame-to-frame change): {jitter_in:.2f} px in, {jitter_out:.2f} px out")
    assert jitter_out < jitter_in / 4


def test_masked_and_nan_values_do_not_update() -> None:
    one_euro = OneEuroFilter((2,), SmoothingConfig(beta=0.0))
    one_euro(0.0, np.array([0.0, 0.0]))
    out = one_euro(1 / RATE, np.array([50.0, 50.0]), np.array([True, False]))
    assert 0 < out[0] < 50 and out[1] == 50.0  # the masked value passes raw
    out = one_euro(2 / RATE, np.array([np.nan, 50.0]))
    assert math.isnan(out[0])
    # The masked value's state is still 0 from t=0: with dt = 2 frames its update is a step.
    a = 1.0 / (1.0 + (1.0 / (2 * math.pi)) * RATE / 2)
    assert out[1] == pytest.approx(50.0 * a)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="min_cutoff"):
        SmoothingConfig(min_cutoff=0.0)
    with pytest.raises(ValueError, match="beta"):
        SmoothingConfig(beta=-1.0)
