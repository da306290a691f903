"""Drift monitor on constructed data whose drift is known.

The statistics are checked against hand-computed values on tiny inputs; the monitor end to end on
a seeded synthetic shop where every window either comes from the reference's generator (must stay
quiet) or has exactly one aspect changed (must fire exactly that signal).

The synthetic shop keeps the aspects independent on purpose, so that changing one cannot move
another: prices, categories and vectors are drawn per item independently; basket ids chunk the
rows in random order (not per user), so basket size and user activity do not share a cause.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from recsys.monitoring import drift
from recsys.data import schema as S
from recsys.monitoring.drift import (
    SIGNAL_NAMES,
    DriftConfig,
    DriftReport,
    ReferenceStats,
    Signal,
    SignalSpec,
    bootstrap_relative_drop,
    category_bins,
    category_path,
    detect_drift,
    js_distance,
    mix_signal,
    normalised_wasserstein,
    numeric_signal,
    psi,
    window_from_frames,
)
from recsys.monitoring.drift_report import drift_plots, render_html, write_drift_report

CATS = ("Home", "Toys", "Books", "Garden", "Sports", "Beauty")
EVENTS = ("view", "cart", "purchase")
N_PER_CLUSTER = 8000  # catalog items per embedding cluster (A: 0..7999, B: 8000..15999)
N_NEW = 4000  # items the champion never saw
DIM = 16
POOL = 3000  # items a frame's interactions are drawn from
N_ROWS = 6000  # interactions per frame
START = pd.Timestamp("2024-03-04", tz="UTC")
EVAL_RECALL = 0.2
N_RECALL_USERS = 1000  # evaluable users on each side of the recall comparison (enough to decide)


# ---------------------------------------------------------------------------------------------
# the synthetic shop


@dataclass
class World:
    items: pd.DataFrame  # catalog + new items
    catalog: list[str]  # what the champion was trained with
    vectors: dict[str, np.ndarray]  # every item's vector


def make_world(seed: int = 0) -> World:
    rng = np.random.default_rng(seed)
    ids = [f"i{k:05d}" for k in range(2 * N_PER_CLUSTER)] + [f"n{k:05d}" for k in range(N_NEW)]
    n = len(ids)
    k = np.arange(n)
    items = pd.DataFrame(
        {
            S.ITEM_ID: ids,
            S.TITLE: [f"item {i}" for i in ids],
            S.CATEGORY: [f"{CATS[j % 6]} > Sub{j % 5}" for j in k],
            S.PRICE: np.round(np.exp(rng.normal(3.0, 0.5, n)), 2),
        }
    )
    vec = rng.normal(size=(n, DIM)).astype(np.float32)
    vec[N_PER_CLUSTER : 2 * N_PER_CLUSTER, :4] += 1.0  # cluster B: shifted on 4 of 16 dims
    return World(S.to_canonical_items(items), ids[: 2 * N_PER_CLUSTER], dict(zip(ids, vec)))


def cluster_a(world: World) -> np.ndarray:
    return np.array(world.catalog[:N_PER_CLUSTER], dtype=object)


def make_interactions(
    pool: np.ndarray,
    seed: int,
    n: int = N_ROWS,
    events: tuple[float, ...] = (0.7, 0.2, 0.1),
    basket_mean: float = 2.0,
    activity_mean: float = 4.0,
    hot_share: float = 0.0,
    hot_weight: float = 10.0,
    start: pd.Timestamp = START,
    days: float = 7.0,
    user_prefix: str = "u",
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # users and their activity (1 + Poisson), until n rows
    acts = 1 + rng.poisson(activity_mean - 1, size=n)
    n_users = int(np.searchsorted(np.cumsum(acts), n)) + 1
    acts = acts[:n_users]
    acts[-1] -= int(acts.sum()) - n
    users = np.repeat([f"{user_prefix}{seed}_{u}" for u in range(n_users)], acts)
    # items: uniform over the pool, a `hot_share` of it `hot_weight` times as likely
    w = np.ones(len(pool))
    w[rng.permutation(len(pool))[: int(hot_share * len(pool))]] = hot_weight
    item = rng.choice(pool, size=n, p=w / w.sum())
    event = rng.choice(EVENTS, size=n, p=events)
    # baskets: rows in random order, cut into chunks of 1 + Poisson(basket_mean - 1)
    sizes = 1 + rng.poisson(basket_mean - 1, size=n)
    chunk = np.repeat(np.arange(n), sizes)[:n]
    basket = np.empty(n, dtype=object)
    basket[rng.permutation(n)] = [f"b{seed}_{c}" for c in chunk]
    ts = start + pd.to_timedelta(rng.uniform(0, days * 86400, size=n), unit="s")
    return S.to_canonical_interactions(
        pd.DataFrame({S.USER_ID: users, S.ITEM_ID: item, S.EVENT: event, S.TIMESTAMP: ts, S.BASKET_ID: basket})
    )


def recall_users(mean: float, n: int = N_RECALL_USERS, seed: int = 0) -> np.ndarray:
    """n per-user recalls (0 or 1, a shuffled order) whose mean is exactly `mean` (round(mean * n) hits)."""
    values = np.zeros(n)
    values[: round(mean * n)] = 1.0
    return np.random.default_rng(seed).permutation(values)


def vectors_of(world: World):
    return lambda ids: np.stack([world.vectors[i] for i in ids])


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.fixture(scope="module")
def reference(world: World) -> ReferenceStats:
    pool = np.random.default_rng(100).choice(cluster_a(world), POOL, replace=False)
    inter = make_interactions(pool, seed=1)
    vecs = np.stack([world.vectors[i] for i in world.catalog])
    return ReferenceStats.build(
        inter, world.items, world.catalog, vecs, EVAL_RECALL, dataset="synthetic", digest="abc123", eval_recall_per_user=recall_users(EVAL_RECALL)
    )


def _window_pool(world: World, kind: str) -> np.ndarray:
    rng = np.random.default_rng(200)
    a = cluster_a(world)
    if kind == "category_mix":  # every Toys item of cluster A, the rest from the other categories
        toys = np.array([i for i in a if int(i[1:]) % 6 == 1], dtype=object)
        others = np.array([i for i in a if int(i[1:]) % 6 != 1], dtype=object)
        return np.r_[toys, rng.choice(others, POOL - len(toys), replace=False)]
    if kind == "text_embedding":  # same categories, prices, popularity: another region of embedding space
        return rng.choice(np.array(world.catalog[N_PER_CLUSTER:], dtype=object), POOL, replace=False)
    if kind == "unseen_items":  # 40% of the pool (so of the traffic) is items the champion never saw
        new = np.array([f"n{k:05d}" for k in range(N_NEW)], dtype=object)
        return np.r_[rng.choice(a, int(0.6 * POOL), replace=False), rng.choice(new, int(0.4 * POOL), replace=False)]
    return rng.choice(a, POOL, replace=False)


# one generator change per signal; champion_recall drifts through the recall passed in
DRIFTS: dict[str, dict] = {
    "category_mix": {},
    "event_mix": {"events": (0.4, 0.3, 0.3)},
    "price": {},  # prices x1.5 in the window's item table
    "basket_size": {"basket_mean": 4.0},
    "user_activity": {"activity_mean": 10.0},
    "item_popularity": {"hot_share": 0.1, "hot_weight": 10.0},
    "text_embedding": {},
    "unseen_items": {},
    "champion_recall": {},
}


def window_for(world: World, kind: str | None, seed: int = 7):
    pool = _window_pool(world, kind or "none")
    inter = make_interactions(pool, seed=seed, start=START + pd.Timedelta(days=7), **DRIFTS.get(kind or "", {}))
    items = world.items
    if kind == "price":
        items = items.assign(**{S.PRICE: items[S.PRICE] * 1.5})
    # the champion's per-user recall on the window: a 50% drop for champion_recall, else a 10% one (noise)
    recall = recall_users(0.1 if kind == "champion_recall" else 0.18, seed=seed)
    return window_from_frames(inter, items, vectors_of(world)), recall


# ---------------------------------------------------------------------------------------------
# the statistics on hand-made inputs


def test_psi_and_js_match_hand_computed_values():
    # PSI = (.25-.5) ln(.25/.5) + (.75-.5) ln(.75/.5) = .25 ln 2 + .25 ln 1.5 = .25 ln 3
    assert psi({"a": 0.5, "b": 0.5}, {"a": 0.25, "b": 0.75}) == pytest.approx(0.25 * math.log(3), abs=1e-12)
    assert psi({"a": 2, "b": 2}, {"b": 3, "a": 1}) == pytest.approx(0.25 * math.log(3), abs=1e-12)  # counts, any order
    m = (0.375, 0.625)
    kl_p = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    kl_q = 0.25 * math.log2(0.25 / m[0]) + 0.75 * math.log2(0.75 / m[1])
    assert js_distance({"a": 0.5, "b": 0.5}, {"a": 0.25, "b": 0.75}) == pytest.approx(math.sqrt((kl_p + kl_q) / 2), abs=1e-12)
    # a bin empty on one side: clipped to eps=1e-4 for PSI; JS handles it without clipping
    assert psi({"a": 1}, {"a": 1, "b": 1}) == pytest.approx(0.5 * math.log(2) + (0.5 - 1e-4) * math.log(0.5 / 1e-4), abs=1e-12)
    js = math.sqrt((math.log2(1 / 0.75) + 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) / 2)
    assert js_distance({"a": 1}, {"a": 1, "b": 1}) == pytest.approx(js, abs=1e-12)
    assert psi({"x": 3, "y": 1}, {"x": 6, "y": 2}) == 0.0
    assert js_distance({"x": 3, "y": 1}, {"x": 6, "y": 2}) == pytest.approx(0.0, abs=1e-7)
    s = mix_signal("event_mix", {"a": 0.5, "b": 0.5}, {"a": 0.25, "b": 0.75})
    assert s.alarm and s.value == pytest.approx(0.25 * math.log(3)) and s.extra["js"] == pytest.approx(math.sqrt((kl_p + kl_q) / 2))
    assert s.extra["biggest_change"] == {"bin": "a", "reference": 0.5, "window": 0.25}


def test_ks_signal_identical_shifted_and_large_sample_small_effect():
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    same = numeric_signal("price", x, x.copy())
    assert same.value == 0.0 and same.extra["pvalue"] == pytest.approx(1.0) and not same.alarm
    shifted = numeric_signal("price", x, rng.normal(0.5, 1.0, size=2000))
    assert shifted.alarm and 0.15 < shifted.value < 0.3 and shifted.extra["pvalue"] < 1e-10
    # 100k values each: a 0.03-sd shift is "significant" but tiny: the effect-size threshold keeps it quiet
    big = numeric_signal("price", rng.normal(size=100_000), rng.normal(0.03, 1.0, size=100_000))
    assert big.extra["pvalue"] < 0.01 and big.value < 0.1 and not big.alarm


def test_wasserstein_normalisation_exact():
    w, wn, scale = normalised_wasserstein(np.array([0, 1, 2, 3, 4.0]), np.array([1, 2, 3, 4, 5.0]))
    assert (w, wn, scale) == (pytest.approx(1.0), pytest.approx(0.5), "IQR")  # IQR of 0..4 = 3 - 1 = 2
    w, wn, scale = normalised_wasserstein(np.array([1, 1, 1, 1, 2.0]), np.array([2, 2, 2, 2, 3.0]))
    assert (w, wn, scale) == (pytest.approx(1.0), pytest.approx(1.0 / 0.4), "std")  # IQR 0, std 0.4
    assert normalised_wasserstein(np.ones(5), np.ones(5) * 2)[1:] == (None, "none")


def test_config_is_validated():
    with pytest.raises(ValueError, match="auc_threshold"):
        DriftConfig(auc_threshold=0.3)
    with pytest.raises(ValueError, match="unknown DriftConfig keys"):
        DriftConfig.from_dict({"psi_treshold": 0.1})
    assert DriftConfig.from_dict({"psi_threshold": 0.1}).psi_threshold == 0.1
    for bad in ({"min_recall_users": 1}, {"recall_confidence": 1.0}, {"category_level": 0}, {"recall_bootstrap_samples": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DriftConfig.from_dict(bad)
    assert DriftConfig.from_dict({"category_level": 2, "min_recall_users": 50}).category_level == 2


# ---------------------------------------------------------------------------------------------
# the monitor end to end


def test_no_drift_window_is_quiet(world, reference):
    window, recall = window_for(world, None)
    report = detect_drift(reference, window, window_recall_per_user=recall)
    assert not report.drift and report.reasons == [], [s.detail for s in report.signals if s.alarm]
    assert [s.name for s in report.signals] == list(SIGNAL_NAMES)
    assert all(s.measured for s in report.signals), [s.detail for s in report.signals if not s.measured]
    assert report.signal("text_embedding").value < 0.6
    assert report.signal("unseen_items").value == 0.0


@pytest.mark.parametrize("kind", list(DRIFTS))
def test_injected_drift_fires_exactly_that_signal(world, reference, kind):
    window, recall = window_for(world, kind)
    report = detect_drift(reference, window, window_recall_per_user=recall)
    assert [s.name for s in report.alarms] == [kind], {s.name: s.detail for s in report.signals}
    assert report.drift and len(report.reasons) == 1
    s = report.signal(kind)
    assert s.value > s.threshold


def test_injected_drift_sizes(world, reference):
    """The measured effect is the one injected, not just "above the line"."""
    window, _ = window_for(world, "price")
    s = detect_drift(reference, window).signal("price")
    assert s.extra["window_median"] / s.extra["reference_median"] == pytest.approx(1.5, rel=0.1)
    window, _ = window_for(world, "unseen_items")
    assert detect_drift(reference, window).signal("unseen_items").value == pytest.approx(0.4, abs=0.03)
    window, recall = window_for(world, "champion_recall")
    assert detect_drift(reference, window, window_recall_per_user=recall).signal("champion_recall").value == pytest.approx(0.5)
    window, _ = window_for(world, "category_mix")
    s = detect_drift(reference, window).signal("category_mix")
    # every sub-category holds ~1/30 of 6,000 rows (>= 50): compared at level 2, "Toys > SubN" bins
    assert s.extra["level"] == 2 and s.extra["bins"] == 30 and s.extra["biggest_change"]["bin"].startswith("Toys > ")
    toys = sum(v for k, v in s.extra["window_shares"].items() if k.startswith("Toys > "))
    assert toys == pytest.approx(0.444, abs=0.03) and s.extra["top_level_psi"] > 0.2


def test_min_alarms_and_thresholds_are_configurable(world, reference):
    window, _ = window_for(world, "event_mix")
    report = detect_drift(reference, window, DriftConfig(min_alarms=2))
    assert not report.drift and len(report.alarms) == 1 and "fewer than min_alarms=2" in report.reasons[-1]
    assert not detect_drift(reference, window, DriftConfig(psi_threshold=5.0)).drift


def test_tiny_window_never_alarms(world, reference):
    pool = _window_pool(world, "none")
    inter = make_interactions(pool, seed=3, n=150, events=(0.1, 0.1, 0.8))
    window = window_from_frames(inter, world.items, vectors_of(world))
    report = detect_drift(reference, window, window_recall=0.0)
    assert not report.drift and not report.alarms
    assert len(report.reasons) == 1 and "too small" in report.reasons[0] and "150" in report.reasons[0]
    assert report.signal("event_mix").value > 0.2 and "too small" in report.signal("event_mix").detail
    empty = window_from_frames(inter.iloc[:0], world.items, vectors_of(world))
    report = detect_drift(reference, empty)
    assert not report.drift and "too small: 0 interactions" in report.reasons[0]
    assert all(s.value is None for s in report.signals if s.name != "champion_recall")


def test_missing_data_is_not_measured(world, reference):
    pool = _window_pool(world, "none")
    inter = make_interactions(pool, seed=4).drop(columns=[S.TIMESTAMP, S.BASKET_ID])
    bare_items = world.items[[S.ITEM_ID, S.TITLE]]
    window = window_from_frames(inter, bare_items, None)  # no categories, prices, vectors, baskets, time
    report = detect_drift(reference, window)  # no window recall either
    for name in ("category_mix", "price", "basket_size", "text_embedding", "champion_recall"):
        s = report.signal(name)
        assert s.value is None and not s.alarm and s.detail.startswith("not measured"), (name, s.detail)
    assert report.signal("event_mix").measured and report.signal("user_activity").measured
    assert window.time_min is None and report.window["time_min"] is None

    # a reference without vectors or evaluation score: those signals are not measured either
    ref = ReferenceStats.build(inter, bare_items, world.catalog, None, None)
    full, _ = window_for(world, None)
    r = detect_drift(ref, full, window_recall=0.2)
    assert r.signal("text_embedding").detail == "not measured: no item vectors in the reference"
    assert r.signal("champion_recall").value is None
    assert r.signal("basket_size").value is None  # the reference has no baskets nor times
    assert not r.drift

    # a handful of window items with vectors: "not enough data", no alarm
    few = make_interactions(np.array(world.catalog[N_PER_CLUSTER : N_PER_CLUSTER + 10], dtype=object), seed=5, n=400)
    s = detect_drift(reference, window_from_frames(few, world.items, vectors_of(world))).signal("text_embedding")
    assert s.value is None and "not enough data" in s.detail and not s.alarm


def test_basket_falls_back_to_user_day(world):
    pool = _window_pool(world, "none")
    inter = make_interactions(pool, seed=6, n=500).assign(**{S.BASKET_ID: pd.NA})
    w = window_from_frames(inter, world.items)
    assert w.basket_unit == "user-day"
    days = inter[S.TIMESTAMP].dt.floor("D")
    expected = inter.groupby([inter[S.USER_ID], days]).size().to_numpy()
    assert sorted(w.basket_size.tolist()) == sorted(expected.tolist())
    assert w.user_activity.sum() == w.item_popularity.sum() == 500


def test_period_makes_long_references_comparable(world):
    """A 4-week reference (new users each week) vs a 1-week window: counts are compared at the window's
    volume, and per week when the reference is cut into periods (users turn over between weeks)."""
    pool = np.random.default_rng(100).choice(cluster_a(world), POOL, replace=False)
    weeks = [make_interactions(pool, seed=20 + w, start=START + pd.Timedelta(weeks=w), user_prefix=f"w{w}u") for w in range(4)]
    inter = pd.concat(weeks, ignore_index=True)
    window_start = START + pd.Timedelta(weeks=4)
    window = window_from_frames(make_interactions(_window_pool(world, "none"), seed=9, start=window_start), world.items)
    whole = detect_drift(ReferenceStats.build(inter, world.items, world.catalog, None, None), window)
    # volume-matched: four weeks of traffic no longer look like four times the item popularity
    assert "item_popularity" not in [s.name for s in whole.alarms]
    assert "reference thinned to the window's" in whole.signal("item_popularity").detail
    # and per-user activity as it was (new people each week, same activity) explains the window too
    assert "user_activity" not in [s.name for s in whole.alarms]
    weekly_ref = ReferenceStats.build(inter, world.items, world.catalog, None, None, period="7D")
    weekly = detect_drift(weekly_ref, window)
    assert not weekly.alarms, [s.detail for s in weekly.alarms]
    assert weekly_ref.period_seconds == 7 * 86400 and weekly_ref.item_popularity.sum() == pytest.approx(4 * N_ROWS)


# ---------------------------------------------------------------------------------------------
# storage, serialisation, rendering


def test_a_signal_added_to_the_registry_is_measured_and_gives_its_reason(world, reference, monkeypatch):
    """Extending the monitor is one `SignalSpec` (README, "Adding a drift signal"): detect_drift, the
    reasons and the report read the registry."""

    def distinct_items(ref: ReferenceStats, win, cfg, _recall) -> Signal:
        ratio = win.n_items / ref.n_items  # both from the shared Profile
        return Signal("distinct_items", "ratio", ratio, 0.1, ratio > 0.1, f"window has {ratio:.0%} of the reference's distinct items")

    monkeypatch.setattr(drift, "SIGNALS", (*drift.SIGNALS, SignalSpec("distinct_items", "distinct interacted items", distinct_items)))
    window, recall = window_for(world, None)
    report = detect_drift(reference, window, window_recall_per_user=recall)
    assert [s.name for s in report.signals] == [*SIGNAL_NAMES, "distinct_items"]
    added = report.signal("distinct_items")
    assert added.alarm and added.value == window.n_items / reference.n_items
    assert report.drift and report.reasons == [f"distinct interacted items: {added.value} > 0.1"]


def test_reference_save_load_round_trip(tmp_path, reference):
    reference.save(tmp_path / "ref")
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == ["reference.json", "reference.npz"]
    loaded = ReferenceStats.load(tmp_path / "ref")
    assert loaded == reference
    assert loaded.vectors.dtype == np.float16 and len(loaded.vector_item_ids) == 2000
    assert loaded.price.dtype == np.float32 and loaded.eval_recall == EVAL_RECALL and loaded.digest == "abc123"
    assert list(loaded.catalog_item_ids) == list(reference.catalog_item_ids)
    assert loaded != ReferenceStats.build(
        pd.DataFrame({S.USER_ID: ["u"], S.ITEM_ID: ["i00000"], S.EVENT: ["view"]}), None, ["i00000"], None, None
    )
    # the json names the npz's hash: a half-finished save is caught, not silently mixed
    (tmp_path / "ref" / "reference.npz").write_bytes(b"not the npz")
    with pytest.raises(ValueError, match="does not match"):
        ReferenceStats.load(tmp_path / "ref")


def test_report_round_trip_is_plain_json(world, reference):
    window, recall = window_for(world, "price")
    report = detect_drift(reference, window, window_recall_per_user=recall)
    d = report.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = DriftReport.from_dict(json.loads(text))
    assert back.to_dict() == d and back.drift and back.signal("price").alarm
    assert d["config"] == DriftConfig().__dict__ and d["window"]["n_interactions"] == N_ROWS
    # deterministic: the same inputs give the same report
    assert detect_drift(reference, window, window_recall_per_user=recall).to_dict() == d


def test_html_and_plots(tmp_path, world, reference):
    window, recall = window_for(world, "category_mix")
    report = detect_drift(reference, window, window_recall_per_user=recall)
    plots = drift_plots(reference, window, report, tmp_path / "plots")
    assert set(plots) == {"signals", "category_mix", "distributions"}
    for p in plots.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json_path, html_path = write_drift_report(report, tmp_path / "out", plots)
    html = html_path.read_text()
    assert "DRIFT" in html and "NO DRIFT" not in html and html.count("data:image/png;base64,") == 3
    for name in SIGNAL_NAMES:
        assert name in html
    assert json.loads(json_path.read_text())["drift"] is True

    quiet, _ = window_for(world, None)
    html = render_html(detect_drift(reference, quiet, window_recall=0.18).to_dict(), None)
    assert "NO DRIFT" in html
    # text is escaped
    d = report.to_dict()
    d["reasons"] = ["<script>alert(1)</script>"]
    assert "<script>alert" not in render_html(d, None)


@pytest.mark.parametrize("scale", [1 / 3, 3.0])
def test_counts_are_compared_at_the_window_volume(world, scale):
    """A quiet window with a third or three times the usual traffic: per-user and per-item counts
    are compared against the reference brought to the same volume, so volume alone never alarms."""
    pool = np.random.default_rng(100).choice(cluster_a(world), POOL, replace=False)
    weeks = [make_interactions(pool, seed=30 + w, start=START + pd.Timedelta(weeks=w), user_prefix=f"v{w}u") for w in range(4)]
    ref = ReferenceStats.build(pd.concat(weeks, ignore_index=True), world.items, world.catalog, None, None, period="7D")
    n = int(N_ROWS * scale)
    window = window_from_frames(make_interactions(pool, seed=99, n=n, start=START + pd.Timedelta(weeks=4), user_prefix="x"), world.items)
    report = detect_drift(ref, window)
    for name in ("user_activity", "item_popularity"):
        s = report.signal(name)
        assert s.measured and not s.alarm and s.extra["volume_matched"], s.detail
    # the raw counts do differ with volume: the comparison is what makes it quiet
    assert np.median(window.item_popularity) != np.median(ref.item_popularity)


# ---------------------------------------------------------------------------------------------
# the recall drop decides on evidence: enough users on both sides, and an interval past the line

TINY = pd.DataFrame({S.USER_ID: ["u1", "u2"], S.ITEM_ID: ["i00000", "i00001"], S.EVENT: ["view", "view"]})
ANY_WINDOW = DriftConfig(min_window_interactions=0)  # these tests are about the recall signal alone


def _tiny_reference(per_user: np.ndarray | None, eval_recall: float | None = None) -> ReferenceStats:
    return ReferenceStats.build(TINY, None, ["i00000", "i00001"], None, eval_recall, eval_recall_per_user=per_user)


def test_bootstrap_of_the_drop_is_exact_where_resampling_cannot_move_it():
    # every user of each side has the same recall: each resample has the same means, drop exactly 0.5
    assert bootstrap_relative_drop(np.ones(50), np.full(40, 0.5)) == (0.5, 0.5, 0.5)
    point, low, high = bootstrap_relative_drop(recall_users(0.2), recall_users(0.1, seed=1))
    assert point == pytest.approx(0.5) and 0.3 < low < 0.5 < high < 0.7
    # seeded: the same inputs give the same interval
    assert bootstrap_relative_drop(recall_users(0.2), recall_users(0.1, seed=1)) == (point, low, high)


def test_a_clear_recall_drop_with_many_users_alarms_with_its_interval_in_drift_json(tmp_path):
    ref = _tiny_reference(recall_users(0.2))  # 1,000 users, recall 0.2
    window = window_from_frames(TINY, None)
    report = detect_drift(ref, window, ANY_WINDOW, window_recall_per_user=recall_users(0.1, seed=1))
    s = report.signal("champion_recall")
    ci = s.extra["interval"]
    assert s.alarm and report.drift and s.value == pytest.approx(0.5) and s.extra["status"] == "alarm"
    assert ci["low"] > 0.3 and ci["high"] > s.value and (ci["n_reference_users"], ci["n_window_users"]) == (1000, 1000)
    assert ci["confidence"] == 0.9 and ci["samples"] == 2000
    assert "90% interval" in report.reasons[0] and "1,000 / 1,000 users" in report.reasons[0]
    json_path, html_path = write_drift_report(report, tmp_path)
    saved = next(x for x in json.loads(json_path.read_text())["signals"] if x["name"] == "champion_recall")
    assert saved["extra"]["interval"] == pytest.approx(ci) and saved["extra"]["n_window_users"] == 1000
    html = html_path.read_text()
    assert "Champion Recall@10" in html and f"[{ci['low'] * 100:.1f}%, {ci['high'] * 100:.1f}%]" in html


def test_the_same_point_drop_with_few_users_does_not_alarm_and_says_why():
    window = window_from_frames(TINY, None)
    # 10 users each side, the same 0.2 -> 0.1 (a 50% point drop): not enough evidence, with the counts
    s = detect_drift(_tiny_reference(recall_users(0.2, n=10)), window, ANY_WINDOW, window_recall_per_user=recall_users(0.1, n=10)).signal("champion_recall")
    assert not s.alarm and s.value is None and s.extra["status"] == "not enough evidence"
    assert (s.extra["n_reference_users"], s.extra["n_window_users"], s.extra["min_users"]) == (10, 10, 30)
    assert s.extra["point_drop"] == pytest.approx(0.5) and s.extra["interval"] is None
    assert "10 evaluable user(s) in the reference (< 30)" in s.detail and "10 evaluable user(s) in the window (< 30)" in s.detail
    # enough users (40 each), but the interval still reaches below the threshold: measured, no alarm
    s = detect_drift(_tiny_reference(recall_users(0.2, n=40)), window, ANY_WINDOW, window_recall_per_user=recall_users(0.1, n=40)).signal("champion_recall")
    assert s.value == pytest.approx(0.5) and s.value > s.threshold and not s.alarm and s.extra["status"] == "no alarm"
    assert s.extra["interval"]["low"] < 0.3
    # the minimum is a setting: with min_recall_users=5 the 10-user comparison is measured
    few = DriftConfig(min_window_interactions=0, min_recall_users=5)
    s = detect_drift(_tiny_reference(recall_users(0.2, n=10)), window, few, window_recall_per_user=recall_users(0.1, n=10)).signal("champion_recall")
    assert s.value == pytest.approx(0.5) and s.extra["interval"]["n_window_users"] == 10 and not s.alarm


def test_a_reference_saved_without_per_user_recalls_cannot_decide(tmp_path):
    """A reference written before per-user recalls and category paths were kept: it still loads; the
    recall signal reports the drop but never alarms, the category mix is compared at the top level."""
    inter = TINY.assign(**{S.ITEM_ID: ["i00000", "i00001"]})
    items = pd.DataFrame({S.ITEM_ID: ["i00000", "i00001"], S.CATEGORY: ["Movies > Drama", "Movies > Comedy"]})
    ReferenceStats.build(inter, items, ["i00000", "i00001"], None, 0.2).save(tmp_path / "ref")
    # strip what older versions did not write, and re-sign the npz as they would have
    with np.load(tmp_path / "ref" / "reference.npz") as z:
        old = {k: z[k] for k in z.files if not k.startswith(("category_path", "eval_recall"))}
    buf = io.BytesIO()
    np.savez_compressed(buf, **old)
    (tmp_path / "ref" / "reference.npz").write_bytes(buf.getvalue())
    meta = json.loads((tmp_path / "ref" / "reference.json").read_text())
    meta.pop("eval_recall_users")
    meta.pop("recall_k")
    meta["npz_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (tmp_path / "ref" / "reference.json").write_text(json.dumps(meta))

    ref = ReferenceStats.load(tmp_path / "ref")
    assert ref.eval_recall == 0.2 and len(ref.eval_recall_users) == 0 and ref.category_paths == {}
    assert ref.recall_k is None  # the monitor then assumes the k it always used (recsys.monitoring.monitor.recall_k)
    report = detect_drift(ref, window_from_frames(inter, items), ANY_WINDOW, window_recall_per_user=np.zeros(500))
    s = report.signal("champion_recall")
    assert not s.alarm and s.value is None and s.extra["status"] == "not enough evidence" and s.extra["point_drop"] == 1.0
    assert "keeps no per-user evaluation recalls" in s.detail and not report.drift
    assert report.signal("category_mix").extra["mode"] == "top level only"
    # a caller that passes only the window's mean: reported, not decided
    s = detect_drift(_tiny_reference(recall_users(0.2)), window_from_frames(TINY, None), ANY_WINDOW, window_recall=0.05).signal("champion_recall")
    assert not s.alarm and "only the window's mean recall was given" in s.detail


def test_the_reference_keeps_the_k_of_its_recall(tmp_path):
    inter = TINY.assign(**{S.ITEM_ID: ["i00000", "i00001"]})
    ref = ReferenceStats.build(inter, None, ["i00000", "i00001"], None, 0.2, recall_k=5)
    ref.save(tmp_path / "ref")
    loaded = ReferenceStats.load(tmp_path / "ref")
    assert loaded.recall_k == 5 and loaded == ref and loaded.summary()["recall_k"] == 5


# ---------------------------------------------------------------------------------------------
# the category mix below the top level


def _movies(drama: int, comedy: int, books: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    # " Movies > Comedy > ": levels are stripped and a trailing empty level is cut, not a level of its own
    items = pd.DataFrame({S.ITEM_ID: ["d", "c", "b"], S.CATEGORY: ["Movies > Drama", " Movies > Comedy > ", "Books"]})
    rows = ["d"] * drama + ["c"] * comedy + ["b"] * books
    inter = pd.DataFrame({S.USER_ID: [f"u{j % 7}" for j in range(len(rows))], S.ITEM_ID: rows, S.EVENT: "view"})
    return inter, items


def test_a_shift_between_sub_categories_is_seen_where_the_top_level_shows_nothing():
    ref = ReferenceStats.build(*_movies(500, 500), ["d", "c", "b"], None, None)
    assert ref.category_paths == {"Movies > Drama": 500, "Movies > Comedy": 500} and ref.category_mix == {"Movies": 1000}
    window = window_from_frames(*_movies(900, 100))
    s = detect_drift(ref, window).signal("category_mix")
    assert s.alarm and s.extra["level"] == 2 and s.extra["split"] == ["Movies"] and s.extra["top_level_psi"] == 0.0
    assert s.value == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5))  # (.9-.5) ln(.9/.5) + (.1-.5) ln(.1/.5)
    assert s.extra["window_shares"] == {"Movies > Drama": 0.9, "Movies > Comedy": 0.1}
    # the data set may fix the level: at the top level the same window shows nothing
    top = detect_drift(ref, window, DriftConfig(category_level=1)).signal("category_mix")
    assert top.value == 0.0 and not top.alarm and (top.extra["mode"], top.extra["level"]) == ("fixed", 1)
    assert "level 2" in s.detail and "top level alone PSI 0.000" in s.detail


def test_sub_categories_without_support_stay_with_their_parent():
    paths = {"Movies > Drama": 900, "Movies > Comedy": 40, "Movies": 60, "Books": 200}
    # Comedy has 40 < 50 reference interactions: with the bare "Movies" rows it is the rest of Movies
    ref, win, how = category_bins(paths, {"Movies > Comedy": 30, "Movies > Drama": 60, "Music > Jazz": 10}, 1000, 50)
    assert ref == {"Movies > Drama": 900, "Movies > (other)": 100, "Books": 200}
    assert win == {"Movies > (other)": 30, "Movies > Drama": 60, "Music": 10}  # a new category: its top level
    assert (how["mode"], how["level"], how["split"]) == ("adaptive", 2, ["Movies"])
    # a small window: Drama's expected count (900/1200 x 60 = 45) is under 50, nothing is split
    ref, _, how = category_bins(paths, {"Movies > Drama": 60}, 60, 50)
    assert ref == {"Movies": 1000, "Books": 200} and how["level"] == 1 and how["split"] == []
    assert category_path(" Home > Kitchen >  Mugs ") == "Home > Kitchen > Mugs"
    assert category_path("Home>Kitchen") == "Home>Kitchen"  # the separator is " > ", as for top_category
    assert category_path("A >  > C") == "A" and category_path("  ") is None and category_path(None) is None
