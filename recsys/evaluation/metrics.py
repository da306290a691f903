"""Ranking metrics over full-catalog rankings. Pure functions, no I/O.

`topk` is an int array [n_queries, k] of item indices, best first; `targets` holds each query's
held-out item indices. Recall@k divides the hits by the number of targets (plain recall).
Queries without targets are skipped; -1 entries in `topk` (an exhausted catalog) never hit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def metric_name(base: str, k: int) -> str:
    """The one spelling of a metric at a cut-off: ("recall", 10) -> "recall_at_10" (MLflow names, gate, reports)."""
    return f"{base}_at_{k}"


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


def check_k(topk: np.ndarray, k: int) -> None:
    """Raise ValueError unless `topk` is a 2-D [n_queries, >= k] array of recommendations."""
    width = np.shape(topk)[1] if np.ndim(topk) == 2 else None
    if width is None:
        raise ValueError(f"topk must be a 2-D array [n_queries, k], got shape {np.shape(topk)}")
    if not 1 <= k <= width:
        raise ValueError(f"k={k} must be between 1 and topk's width {width}")


def mrr_at_k(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> float:
    """Mean over queries with targets of 1 / rank of the first target in the top k (0 when none).

    Raises:
        ValueError: k is below 1 or above topk's width, or topk and targets differ in length.
    """
    check_k(topk, k)
    vals = []
    for h, t in zip(_hits(topk, targets, k), targets, strict=True):
        if len(t):
            first = np.flatnonzero(h)
            vals.append(1.0 / (first[0] + 1) if len(first) else 0.0)
    return float(np.mean(vals)) if vals else 0.0


def precision_at_k(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> float:
    """Mean over queries with targets of |top-k ∩ targets| / k (-1 padding counts as a miss).

    Raises:
        ValueError: k is below 1 or above topk's width, or topk and targets differ in length.
    """
    check_k(topk, k)
    vals = [h.sum() / k for h, t in zip(_hits(topk, targets, k), targets, strict=True) if len(t)]
    return float(np.mean(vals)) if vals else 0.0


def ranking_metrics(
    topk: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int] = (10, 20, 50)
) -> dict[str, float]:
    """Recall, NDCG, MRR, hit rate and precision at each k, keyed like `recall_at_20`.

    Raises:
        ValueError: a k is below 1 or above topk's width (the message names both).
    """
    for k in ks:
        check_k(topk, k)
    out: dict[str, float] = {}
    for k in ks:
        out[metric_name("recall", k)] = recall_at_k(topk, targets, k)
        out[metric_name("ndcg", k)] = ndcg_at_k(topk, targets, k)
        out[metric_name("mrr", k)] = mrr_at_k(topk, targets, k)
        out[metric_name("hit_rate", k)] = hit_rate_at_k(topk, targets, k)
        out[metric_name("precision", k)] = precision_at_k(topk, targets, k)
    return out


def per_query_recall(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Recall@k of each query (NaN where a query has no target): what a paired bootstrap resamples."""
    return np.array([h.sum() / len(t) if len(t) else np.nan for h, t in zip(_hits(topk, targets, k), targets, strict=True)], dtype=np.float64)


def per_query_ndcg(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> np.ndarray:
    """NDCG@k of each query (NaN where a query has no target)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.full(len(targets), np.nan)
    for j, (h, t) in enumerate(zip(_hits(topk, targets, k), targets, strict=True)):
        if len(t):
            out[j] = float((h * discounts[: len(h)]).sum()) / float(discounts[: min(len(t), k)].sum())
    return out
