"""Turning requests into queries and scores into rankings: history recency, fallbacks, diversity.

Pure functions over item indices and score arrays; the model (`recsys.model.hybrid`) computes the scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


# How a `history` request weighs a user's events (`history_weights`), chosen on completejourney's validation
# month (`scripts/bench_history_queries.py`; the README's *History requests*): the only packaged data with a
# year of repeat purchases in time order. The earlier 10-event half-life lost a third of NDCG@10 there.
HISTORY_HALF_LIFE = 1000.0
HISTORY_FREQUENCY = True


def history_weights(history: Sequence[int], n_items: int, half_life: float = HISTORY_HALF_LIFE, frequency: bool = HISTORY_FREQUENCY) -> np.ndarray:
    """A dense query over the catalog from a user's history, oldest first, most recent last.

    An item weighs 0.5 ** (events since its latest occurrence / half_life): the latest event counts 1,
    one `half_life` events earlier 0.5; `half_life` 0 switches the decay off. With `frequency`, an item
    seen c times is also weighted by 1 + log(c): a staple bought every week says more about a
    household than a one-off.
    """
    if half_life < 0:
        raise ValueError(f"half_life must be >= 0 (0: no decay), got {half_life}")
    items = np.asarray(history, dtype=np.int64)
    q = np.zeros(n_items, dtype=np.float32)
    if not len(items):
        return q
    since = len(items) - 1 - np.arange(len(items))  # events after each one
    last_since = np.full(n_items, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(last_since, items, since)
    seen = np.flatnonzero(last_since < np.iinfo(np.int64).max)
    decay = np.ones(len(seen)) if half_life == 0 else 0.5 ** (last_since[seen] / half_life)
    if frequency:
        decay = decay * (1.0 + np.log(np.bincount(items, minlength=n_items)[seen]))
    q[seen] = decay
    return q


def diversify(scores: np.ndarray, popularity: np.ndarray, diversity: float) -> np.ndarray:
    """Trade a little accuracy for exposure of less popular items.

    Both the scores (per request) and log-popularity are standardised, then
    score' = z(score) - diversity * z(log(1 + popularity)). diversity = 0 leaves the ranking as it
    was; larger values lift the long tail. Only finite scores are touched (excluded items stay -inf).
    """
    if diversity <= 0:
        return scores
    out = np.array(scores, dtype=np.float64, copy=True)
    logpop = np.log1p(np.asarray(popularity, dtype=np.float64))
    zpop = (logpop - logpop.mean()) / (logpop.std() or 1.0)
    rows = out if out.ndim == 2 else out[None, :]
    for r in range(rows.shape[0]):
        finite = np.isfinite(rows[r])
        s = rows[r, finite]
        rows[r, finite] = (s - s.mean()) / (s.std() or 1.0) - diversity * zpop[finite]
    return out


def popular_fallback(popularity: np.ndarray, k: int, exclude: Sequence[int] = ()) -> np.ndarray:
    """The k most popular items (ties by index), for a new user with nothing to go on."""
    scores = np.asarray(popularity, dtype=np.float64).copy()
    scores[list(exclude)] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return order[np.isfinite(scores[order])]


def long_tail_mask(popularity: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Items outside the most popular `head_share` of the catalog (by training interactions)."""
    n_head = int(round(head_share * len(popularity)))
    order = np.argsort(-np.asarray(popularity), kind="stable")
    tail = np.ones(len(popularity), dtype=bool)
    tail[order[:n_head]] = False
    return tail
