"""Turning requests into queries and scores into rankings: history recency, fallbacks, diversity.

Pure functions over item indices and score arrays; the model (`recsys.model.hybrid`) computes the scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def history_weights(history: Sequence[int], n_items: int, half_life: float = 10.0) -> np.ndarray:
    """A dense query over the catalog from a user's history, oldest first, most recent last.

    Each event weighs 0.5 ** (events since it / half_life): the latest counts 1, the one `half_life`
    events earlier 0.5. An item seen several times keeps its most recent (largest) weight.
    """
    q = np.zeros(n_items, dtype=np.float32)
    n = len(history)
    for pos, item in enumerate(history):
        q[item] = max(q[item], 0.5 ** ((n - 1 - pos) / half_life))
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
