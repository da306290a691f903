"""Ranking metrics over full-catalog rankings. Pure functions, no I/O.

`topk` is an int array [n_queries, k] of item indices, best first; `targets` holds each query's
held-out item indices. Recall@k divides the hits by the number of targets (plain recall).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _hits(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    return [np.isin(row[:k], t) for row, t in zip(topk, targets, strict=True)]


def recall_at_k(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> float:
    """Mean over queries of |top-k ∩ targets| / |targets|."""
    vals = [h.sum() / len(t) for h, t in zip(_hits(topk, targets, k), targets, strict=True) if len(t)]
    return float(np.mean(vals)) if vals else 0.0


def ndcg_at_k(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> float:
    """Mean over queries of DCG@k / ideal DCG@k, binary relevance, log2 discount."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    vals = []
    for h, t in zip(_hits(topk, targets, k), targets, strict=True):
        if not len(t):
            continue
        dcg = float((h * discounts[: len(h)]).sum())
        idcg = float(discounts[: min(len(t), k)].sum())
        vals.append(dcg / idcg)
    return float(np.mean(vals)) if vals else 0.0


def hit_rate_at_k(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> float:
    """Share of queries with at least one target in the top k."""
    vals = [h.any() for h, t in zip(_hits(topk, targets, k), targets, strict=True) if len(t)]
    return float(np.mean(vals)) if vals else 0.0
