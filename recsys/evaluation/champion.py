"""Scoring a registered model (the current champion) on today's split, so the gate compares the
challenger and the champion on the same queries and targets.

The champion's catalog may differ from today's: queries keep the items it knows; items it has never
seen cannot be recommended by it (score -inf) — exactly what it would serve until it is replaced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.evaluation.evaluate import Scorer


def catalog_mapping(model_item_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
    """For each of today's items, its index in the model's catalog (-1 where the model lacks it)."""
    index = {item: i for i, item in enumerate(model_item_ids)}
    return np.array([index.get(item, -1) for item in item_ids], dtype=np.int64)


def recommender_scorer(recommender, item_ids: Sequence[str]) -> Scorer:
    """A `Scorer` over today's `item_ids` from a loaded `recsys.serving.ItemRecommender`."""
    mapping = catalog_mapping(recommender.item_ids, item_ids)
    known = np.flatnonzero(mapping >= 0)

    def score(queries: Sequence[np.ndarray]) -> np.ndarray:
        mapped = [mapping[q][mapping[q] >= 0] for q in queries]
        inner = recommender.score_batch(mapped, with_trend=True)  # the evaluation's queries are customers' histories
        out = np.full((len(queries), len(item_ids)), -np.inf)
        out[:, known] = inner[:, mapping[known]]
        return out

    return score


def coverage_of(recommender, item_ids: Sequence[str]) -> float:
    """Share of today's items the model knows."""
    return float((catalog_mapping(recommender.item_ids, item_ids) >= 0).mean()) if len(item_ids) else 0.0
