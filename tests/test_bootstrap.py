"""The paired bootstrap the gate decides with, on hand-built per-user values."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.bootstrap import paired_relative_gain


def test_identical_models_give_an_interval_around_zero() -> None:
    values = np.random.default_rng(0).random(500)
    ci = paired_relative_gain(values, values.copy())
    # paired: every resample has the same mean on both sides
    assert (ci.point, ci.low, ci.high, ci.n) == (0.0, 0.0, 0.0, 500)


def test_a_clear_gain_has_an_interval_above_zero_and_noise_one_that_contains_zero() -> None:
    rng = np.random.default_rng(1)
    ref = 1.0 + rng.random(2000)
    better = ref * 1.2
    ci = paired_relative_gain(better, ref)
    assert ci.point == pytest.approx(0.2) and ci.low == pytest.approx(0.2) and not ci.contains_zero()
    noisy = ref + rng.normal(0, 0.3, len(ref))  # same mean in expectation: only noise
    ci = paired_relative_gain(noisy, ref)
    assert ci.contains_zero() and ci.low < -0.005 and ci.high > 0.005


def test_nan_users_are_left_out_and_empty_evidence_is_none() -> None:
    cand = np.array([1.0, np.nan, 0.5, 0.0])
    ref = np.array([0.5, 0.2, np.nan, 0.5])
    ci = paired_relative_gain(cand, ref, samples=50)
    assert ci.n == 2 and ci.point == pytest.approx(0.0)  # users 0 and 3: means 0.5 vs 0.5
    assert paired_relative_gain(np.array([np.nan]), np.array([1.0])) is None
    assert paired_relative_gain(np.array([1.0, 1.0]), np.array([0.0, 0.0])) is None  # relative change undefined
    with pytest.raises(ValueError, match="align"):
        paired_relative_gain(np.ones(3), np.ones(4))


def test_seeded_and_reproducible() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(300), rng.random(300)
    assert paired_relative_gain(a, b, seed=3) == paired_relative_gain(a, b, seed=3)
