"""The trend prior (what is selling now): counts, the prior, how it enters a ranking, its tuning, and that the
hybrid carries it through saving, loading and serving."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.data import schema as S
from recsys.model.hybrid import HybridConfig, fit_hybrid, model_arrays, model_from_arrays, tune_trend
from recsys.model.trend import add_trend, end_of_data, recent_buyers, stage_start, trend_prior, validation_start

T0 = pd.Timestamp("2017-12-01", tz="UTC")


def _events(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP]).assign(**{S.TIMESTAMP: lambda d: pd.to_datetime(d[S.TIMESTAMP], utc=True, format="ISO8601")})


EVENTS = _events(
    [
        ("u1", "a", "2017-11-25"), ("u1", "a", "2017-11-28"),  # a repeat purchase counts its buyer once
        ("u2", "a", "2017-11-30T23:59"),
        ("u2", "b", "2017-11-20"),
        ("u3", "b", "2017-11-10"),  # outside a 14-day window
        ("u3", "c", "2017-12-01"),  # at `now`: the future, never counted
        ("u4", "zz", "2017-11-29"),  # not in the catalog
    ]
)  # fmt: skip


def test_recent_buyers_counts_distinct_buyers_in_the_window_before_now() -> None:
    assert recent_buyers(EVENTS, ["a", "b", "c", "d"], T0, 14).tolist() == [2.0, 1.0, 0.0, 0.0]
    assert recent_buyers(EVENTS, ["a", "b", "c", "d"], T0, 28).tolist() == [2.0, 2.0, 0.0, 0.0]
    assert recent_buyers(EVENTS, ["c"], T0 + pd.Timedelta(days=1), 1).tolist() == [1.0]
    with pytest.raises(ValueError, match="positive"):
        recent_buyers(EVENTS, ["a"], T0, 0)


def test_the_prior_is_the_standardised_log_count() -> None:
    t = np.log1p([2.0, 1.0, 0.0, 0.0])
    expected = (t - t.mean()) / t.std()
    np.testing.assert_allclose(trend_prior(np.array([2.0, 1.0, 0.0, 0.0])), expected, rtol=1e-6)
    assert trend_prior(np.array([3.0, 3.0])).tolist() == [0.0, 0.0]  # nothing stands out: no prior


def test_add_trend_ranks_as_standardised_scores_plus_weight_times_the_prior() -> None:
    scores = np.array([[3.0, 1.0, 2.0, -np.inf], [0.0, 10.0, 5.0, 5.0]], dtype=np.float32)
    prior = np.array([-1.0, 0.0, 2.0, 1.0], dtype=np.float32)
    out = add_trend(scores.copy(), prior, 0.5)
    # row 0: finite scores 3, 1, 2 -> spread sqrt(2/3); row 1: 0, 10, 5, 5 -> spread sqrt(12.5)
    s0, s1 = math.sqrt(2 / 3), math.sqrt(12.5)
    np.testing.assert_allclose(out[0, :3], [3 - 0.5 * s0, 1.0, 2 + 1.0 * s0], rtol=1e-6)
    assert out[0, 3] == -np.inf  # an item the model cannot rank stays out
    np.testing.assert_allclose(out[1], [0 - 0.5 * s1, 10.0, 5 + s1, 5 + 0.5 * s1], rtol=1e-6)
    z = (scores[1] - scores[1].mean()) / scores[1].std()
    assert np.argsort(-out[1]).tolist() == np.argsort(-(z + 0.5 * prior)).tolist()
    same = scores.copy()
    assert add_trend(same, prior, 0.0) is same  # weight 0: untouched


def test_stage_start_and_end_of_data() -> None:
    pairs = pd.DataFrame({"part": ["train", "val", "val", "test"], S.TIMESTAMP: pd.to_datetime(["2017-01-05", "2017-11-03", "2017-11-01T08:00", "2017-12-02"], utc=True, format="ISO8601")})
    assert stage_start(pairs, "val") == pd.Timestamp("2017-11-01 08:00", tz="UTC")
    assert stage_start(pairs, "test") == pd.Timestamp("2017-12-02", tz="UTC")
    assert stage_start(pairs.drop(columns=[S.TIMESTAMP]), "val") is None and stage_start(pairs, "held") is None
    assert end_of_data(EVENTS) == pd.Timestamp("2017-12-01 00:00:01", tz="UTC")
    # the one rule fit, evaluation and the gate share: a time split's validation start, none for other splits
    from recsys.data.splits import Split

    assert validation_start(Split(pairs, frozenset(), "time")) == pd.Timestamp("2017-11-01 08:00", tz="UTC")
    assert validation_start(Split(pairs, frozenset(), "basket")) is None


# 4 users x 5 items; item 4 was never bought with anything: behaviour alone never ranks it first
X = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 0, 0], [1, 0, 0, 0, 1]], dtype=np.float32))
V = np.eye(5, 2, dtype=np.float32) + 0.1
V /= np.linalg.norm(V, axis=1, keepdims=True)
IS_COLD = np.zeros(5, dtype=bool)
CFG = HybridConfig(l2=1.0, text_weight=0.0, text_score_weight=0.0, cold_weight=0.0, trend_weight_grid=(0.0, 0.5, 1.0, 2.0, 4.0), trend_days_grid=(7.0, 14.0, 28.0))


def test_tune_trend_picks_the_smallest_weight_that_wins_and_the_window_whose_prior_helps() -> None:
    model = fit_hybrid(X, V, IS_COLD, CFG)
    queries = [np.array([0]), np.array([1])]
    priors = {d: np.array([0, 0, 0, 0, 3.0 if d == 14.0 else -1.0], dtype=np.float32) for d in (7.0, 14.0, 28.0, 56.0, 3.5)}
    base = model.scores(queries)
    spread = base.std(axis=1)  # each query's spread, over every item's score (add_trend's)
    others = np.array([np.delete(row, np.r_[q, 4]).max() for row, q in zip(base, queries)])
    need = max((others - base[:, 4]) / (3.0 * spread))  # the weight that lifts item 4 over every other item, all queries
    assert 0.5 < need < 4.0

    def evaluate(scorer) -> float:  # share of queries whose best other item is the trending one (item 4)
        s = np.array(scorer(queries), dtype=np.float64)
        for row, q in zip(s, queries):
            row[q] = -np.inf
        return float(np.mean(s.argmax(axis=1) == 4))

    tuned, record = tune_trend(model, lambda days: priors[days], evaluate)
    assert record["chosen"]["trend_days"] == 14.0
    # ties go to the smaller value: the smallest grid weight that lifts item 4 to the top for every query
    assert record["chosen"]["trend_weight"] == min(w for w in (0.5, 1.0, 2.0, 4.0) if w > need)
    assert record["score"] == 1.0 and not any(record["edge_hit"].values())
    assert tuned.config.trend_weight == record["chosen"]["trend_weight"] and tuned.trend is None
    assert all(k.startswith("trend.trend_days_") for k in record["tried"])
    # a prior that never helps: weight 0 (a natural bound, not an edge)
    _, none = tune_trend(model, lambda days: -priors[14.0], evaluate)
    assert none["chosen"]["trend_weight"] == 0.0 and not none["edge_hit"]["trend_weight"]


def test_the_hybrid_applies_its_prior_and_keeps_it_through_save_and_load() -> None:
    cfg = HybridConfig(l2=1.0, text_weight=0.0, text_score_weight=0.0, cold_weight=0.0, trend_weight=0.8)
    model = fit_hybrid(X, V, IS_COLD, cfg)
    bare = model.scores([np.array([0, 1])])  # no prior attached: the term is off
    prior = np.array([0.5, -1.0, 2.0, 0.0, 1.0], dtype=np.float32)
    model.trend = prior
    np.testing.assert_allclose(model.scores([np.array([0, 1])], with_trend=True), add_trend(bare.copy(), prior, 0.8), rtol=1e-6)
    np.testing.assert_array_equal(model.scores([np.array([0, 1])]), bare)  # items and carts: off unless asked for
    loaded = model_from_arrays(model_arrays(model), cfg)
    np.testing.assert_array_equal(loaded.trend, prior)
    np.testing.assert_allclose(loaded.scores_for_vector(np.array([1, 1, 0, 0, 0], dtype=np.float32), with_trend=True), model.scores([np.array([0, 1])], with_trend=True)[0], rtol=1e-6)
    assert "trend" not in model_arrays(fit_hybrid(X, V, IS_COLD, cfg))  # a model without a prior saves none


def test_the_gate_ranks_every_trending_version_with_the_prior_at_the_test_start(tmp_path) -> None:
    from recsys.stages.promotion import _trend_at_test_start

    cfg = HybridConfig(l2=1.0, text_weight=0.0, trend_weight=0.5, trend_days=14.0)
    trending = SimpleNamespace(model=fit_hybrid(X, V, IS_COLD, cfg), item_ids=["a", "b", "c", "d", "e"])
    trending.model.trend = np.full(5, 9.0, dtype=np.float32)  # as packaged: the end of its own data
    plain = SimpleNamespace(model=fit_hybrid(X, V, IS_COLD, HybridConfig(l2=1.0)), item_ids=["a", "b"])
    split = SimpleNamespace(protocol="time", pairs=pd.DataFrame({"part": ["train", "test"], S.TIMESTAMP: [T0 - pd.Timedelta(days=30), T0]}))
    EVENTS.to_parquet(tmp_path / "interactions.parquet", index=False)
    run = SimpleNamespace(validated_interactions=tmp_path / "interactions.parquet")  # what the run's validate stage wrote
    _trend_at_test_start(run, split, {"candidate": trending, "champion": plain})
    np.testing.assert_allclose(trending.model.trend, trend_prior(np.array([2.0, 1.0, 0.0, 0.0, 0.0])), rtol=1e-6)
    assert plain.model.trend is None  # no trend term: ranked as served
