"""What is selling now: an item prior from the last days' buyers, added to the hybrid's scores.

A year of grocery baskets showed what a model fitted on months of history misses: which products people are
buying *now* (the season, a promotion, a new line). On completejourney's test month, ranking every household's
new items by how many households bought each product in the 28 days before the month alone matched ALS
(Recall@10 0.0176 against 0.0176), where the whole training window's popularity reached 0.0135.

The prior of an item is the standardised log(1 + distinct buyers in the `days` before `now`) over the catalog. It
enters a ranking as `scores + weight * spread * prior`, where `spread` is the standard deviation of each
query's own scores: ranking by it is ranking by the per-query standardised scores plus `weight` times the
prior, so one weight means the same on any model's scale, and the scores keep their own offset and unit.

`now` is a moment, not a model property: evaluation computes the prior at each stage's first moment (only
events before it count), packaging at the end of the data the model was trained on, and the gate recomputes it
for both models at the test split's start, so no model ever sees the window it is scored on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from recsys.data import schema as S
from recsys.model.tuning import Grid, SearchResult, bracketed_search, format_value, judged_result

log = logging.getLogger(__name__)
Scorer = Callable[[Sequence[np.ndarray]], np.ndarray]


def recent_buyers(events: pd.DataFrame, item_ids: Sequence[str], now: pd.Timestamp, days: float) -> np.ndarray:
    """Per catalog item, the number of distinct users with an event in [now - days, now). Items outside the
    catalog are ignored; `events` needs user_id, item_id and timestamp columns."""
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    times = events[S.TIMESTAMP]
    window = events.loc[(times < now) & (times >= now - pd.Timedelta(days=float(days))), [S.USER_ID, S.ITEM_ID]]
    buyers = window.drop_duplicates().groupby(S.ITEM_ID, sort=False)[S.USER_ID].size()
    return buyers.reindex(pd.Index(list(item_ids), dtype=object)).fillna(0).to_numpy(dtype=np.float64)


def trend_prior(buyers: np.ndarray) -> np.ndarray:
    """The standardised log(1 + buyers) over the catalog (zeros when every item has the same count)."""
    t = np.log1p(np.asarray(buyers, dtype=np.float64))
    spread = t.std()
    return ((t - t.mean()) / spread if spread > 0 else np.zeros_like(t)).astype(np.float32)


def add_trend(scores: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    """`scores` (queries x items, in place where float32) plus weight x each row's spread x the prior.
    The spread is the standard deviation of a row's finite scores; items scored -inf stay -inf."""
    if not weight:
        return scores
    s = np.asarray(scores, dtype=np.float32)
    finite = np.isfinite(s)
    if finite.all():  # the usual case: one float32 pass, no float64 copies of a batch x catalog matrix
        spread = s.std(axis=1)
    else:  # a model that cannot rank some items (-inf there): the spread of the others
        with np.errstate(invalid="ignore"):
            spread = np.nan_to_num(np.nanstd(np.where(finite, s, np.float32(np.nan)), axis=1))
    s += (np.float32(weight) * spread.astype(np.float32))[:, None] * np.asarray(prior, dtype=np.float32)[None, :]
    return s


def stage_start(pairs: pd.DataFrame, stage: str, part_column: str = "part") -> pd.Timestamp | None:
    """The first moment of a stage in a time split's pairs (its targets' earliest timestamp): the `now` at
    which the stage is predicted. None when the pairs carry no time or the stage is empty."""
    if S.TIMESTAMP not in pairs.columns:
        return None
    times = pairs.loc[pairs[part_column] == stage, S.TIMESTAMP]
    return None if times.empty or times.isna().all() else times.min()


def validation_start(split: Any) -> pd.Timestamp | None:
    """`now` for validation on a time split (`recsys.data.splits.Split`): its first moment. None for a split
    without time, where there is no prior and no trending baseline (fit, evaluation and gate agree on this)."""
    return stage_start(split.pairs, "val") if split.protocol == "time" else None


def end_of_data(events: pd.DataFrame) -> pd.Timestamp:
    """`now` for a model packaged from `events`: just after the last one (so the last day counts)."""
    return events[S.TIMESTAMP].max() + pd.Timedelta(seconds=1)


def search_trend(
    scorer: Scorer,
    prior_at: Callable[[float], np.ndarray],
    evaluate: Callable[[Scorer], float],
    weight_grid: Grid,
    days_grid: Grid,
    start_days: float,
    max_cache_bytes: int = 2**31,
) -> dict[str, Any]:
    """Choose a trend prior's weight and window for `scorer` on validation; the same search for any model.

    `prior_at(days)` is the prior at the validation stage's first moment with that window; `evaluate(s)` scores
    a scorer (queries -> scores) on validation. For every window the weight is searched over its bracketed
    grid, and the window over its own by the best score it reaches (both extended past an edge); weight 0 (no
    prior) is a natural bound, and when no window of the starting grid wants a weight above 0 the window keeps
    `start_days` (the window is moot then, not an edge). The prior only adds to the scores, so each batch is
    scored once and every point re-ranks it (kept up to `max_cache_bytes`; past that scored again).
    Returns the record: chosen {trend_weight, trend_days}, score, edge_hit, tried
    {"trend.trend_days_<d>.trend_weight_<w>": score} and searches.
    """
    cache: dict[bytes, np.ndarray] = {}
    cached_bytes = 0

    def base_scores(queries: Sequence[np.ndarray]) -> np.ndarray:
        nonlocal cached_bytes
        key = hashlib.blake2b(b"".join(np.r_[len(q), np.asarray(q, dtype=np.int64)].tobytes() for q in queries)).digest()
        hit = cache.get(key)
        if hit is None:
            hit = np.asarray(scorer(queries), dtype=np.float32)
            if cached_bytes + hit.nbytes <= max_cache_bytes:
                cache[key], cached_bytes = hit, cached_bytes + hit.nbytes
        return hit

    priors: dict[float, np.ndarray] = {}
    tried: dict[str, float] = {}

    def validation(days: float, weight: float) -> float:
        if days not in priors:
            priors[days] = prior_at(days)
        score = float(evaluate(lambda queries: add_trend(np.array(base_scores(queries), dtype=np.float32), priors[days], weight)))
        tried[f"trend.trend_days_{format_value(days)}.trend_weight_{format_value(weight)}"] = score
        log.info("trend_days=%g trend_weight=%g: validation %.4f", days, weight, score)
        return score

    weights: dict[float, SearchResult] = {}

    def best_weight(days: float) -> float:
        if days not in weights:
            weights[days] = bracketed_search(lambda w: validation(days, w), weight_grid, "trend_weight")
        return weights[days].score

    for days in days_grid.values:
        best_weight(days)
    if all(r.chosen == 0.0 for r in weights.values()):
        start = float(start_days)
        chosen_days = start if start in weights else days_grid.values[len(days_grid.values) // 2]
        days_search = replace(judged_result("trend_days", {d: r.score for d, r in weights.items()}, chosen_days, days_grid), edge=None)
        weight_search = replace(weights[chosen_days], chosen=0.0)
    else:
        days_search = bracketed_search(best_weight, days_grid, "trend_days")
        chosen_days, weight_search = float(days_search.chosen), weights[float(days_search.chosen)]
    chosen = {"trend_weight": float(weight_search.chosen), "trend_days": chosen_days}
    record = {
        "chosen": chosen,
        "score": float(max(r.score for r in weights.values())),
        "edge_hit": {"trend_weight": weight_search.edge_hit, "trend_days": days_search.edge_hit},
        "tried": tried,
        "searches": {"trend_weight": weight_search.to_dict(), "trend_days": days_search.to_dict()},
    }
    for name, hit in record["edge_hit"].items():
        if hit:
            log.warning("%s=%g sits on the %s edge of what was tried", name, chosen[name], record["searches"][name]["edge"])
    return record
