"""Request handling: recency-weighted history, new-user fallback, the diversity knob (exact values)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.model.recommend import diversify, history_weights, long_tail_mask, popular_fallback


def test_history_weights_halve_every_half_life_events():
    q = history_weights([2, 0, 1], n_items=4, half_life=1.0, frequency=False)
    # most recent (1) = 1, one before (0) = 0.5, two before (2) = 0.25, never seen (3) = 0
    np.testing.assert_allclose(q, [0.5, 1.0, 0.25, 0.0])


def test_repeated_item_keeps_its_most_recent_weight():
    q = history_weights([0, 1, 0], n_items=2, half_life=1.0, frequency=False)
    np.testing.assert_allclose(q, [1.0, 0.5])


def test_frequency_multiplies_by_one_plus_log_count():
    # item 0 three times (latest 1 event ago), item 1 once (latest), item 2 never
    q = history_weights([0, 0, 0, 1], n_items=3, half_life=2.0, frequency=True)
    np.testing.assert_allclose(q, [0.5**0.5 * (1 + np.log(3)), 1.0, 0.0], rtol=1e-6)


def test_half_life_zero_switches_the_decay_off():
    np.testing.assert_allclose(history_weights([2, 0, 2], n_items=4, half_life=0.0, frequency=False), [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(history_weights([2, 0, 2], n_items=4, half_life=0.0, frequency=True), [1.0, 0.0, 1 + np.log(2), 0.0], rtol=1e-6)
    assert not history_weights([], n_items=2).any()
    with pytest.raises(ValueError, match="half_life"):
        history_weights([0], n_items=1, half_life=-1.0)


def test_diversify_zero_is_identity_and_positive_lifts_the_tail():
    scores = np.array([[3.0, 2.9, 1.0, -np.inf]])
    pop = np.array([1000.0, 1.0, 1.0, 5.0])
    assert diversify(scores, pop, 0.0) is scores
    out = diversify(scores, pop, 1.0)
    assert np.isneginf(out[0, 3])  # excluded items stay excluded
    # z(score) over finite [3, 2.9, 1]; z(log1p pop) over all four; the popular item 0 loses its lead
    assert out[0, 1] > out[0, 0]
    s = scores[0, :3]
    lp = np.log1p(pop)
    zp = (lp - lp.mean()) / lp.std()
    np.testing.assert_allclose(out[0, :3], (s - s.mean()) / s.std() - zp[:3])


def test_popular_fallback_excludes_and_orders():
    assert popular_fallback(np.array([5, 9, 9, 1]), k=3, exclude=[2]).tolist() == [1, 0, 3]


def test_long_tail_mask():
    # head = the top 2 of 5 by popularity (items 3 and 0)
    assert long_tail_mask(np.array([8, 1, 2, 9, 0]), head_share=0.4).tolist() == [False, True, True, False, True]


def test_served_defaults_are_the_validated_ones():
    """The defaults a `history` request gets: half-life 1000 events and the count term (README, *History requests*)."""
    q = history_weights([1, 0, 1], n_items=2)
    np.testing.assert_allclose(q, [0.5 ** (1 / 1000), 1 + np.log(2)], rtol=1e-6)
