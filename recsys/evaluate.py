"""Offline evaluation with full ranking over the whole catalog (no sampled negatives).

A query is a user's observed items; its vector is the normalized mean of their vectors; every
catalog item is scored and the query's own items are excluded from the ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recsys import metrics
from recsys.splits import Split


def _top_k_from_scores(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def query_vectors(item_vectors: np.ndarray, queries: Sequence[np.ndarray]) -> np.ndarray:
    """One vector per query: the L2-normalized mean of its items' vectors."""
    q = np.stack([item_vectors[idx].mean(axis=0) for idx in queries])
    return q / np.clip(np.linalg.norm(q, axis=1, keepdims=True), 1e-12, None)


def embedding_top_k(item_vectors: np.ndarray, queries: Sequence[np.ndarray], k: int, batch_size: int = 1024) -> np.ndarray:
    """Top-k item indices per query by cosine similarity, query items excluded. Exact (batched matmul)."""
    return scorer_top_k(vector_scorer(item_vectors), queries, k, batch_size)


def popularity_top_k(popularity: np.ndarray, queries: Sequence[np.ndarray], k: int, batch_size: int = 1024) -> np.ndarray:
    """Most popular items (by training interactions) per query, query items excluded."""
    return scorer_top_k(popularity_scorer(popularity), queries, k, batch_size)


def ranking_report(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> dict[str, float]:
    """Recall, NDCG and hit rate at k, plus how many queries were scored."""
    return {
        f"recall_at_{k}": metrics.recall_at_k(topk, targets, k),
        f"ndcg_at_{k}": metrics.ndcg_at_k(topk, targets, k),
        f"hit_rate_at_{k}": metrics.hit_rate_at_k(topk, targets, k),
        "n_queries": float(len(targets)),
    }


Scorer = Callable[[Sequence[np.ndarray]], np.ndarray]  # batch of queries -> dense [n_queries, n_items] scores


def vector_scorer(item_vectors: np.ndarray) -> Scorer:
    """Cosine similarity between the query's mean vector and every item."""
    return lambda queries: query_vectors(item_vectors, queries) @ item_vectors.T


def popularity_scorer(popularity: np.ndarray) -> Scorer:
    base = popularity.astype(np.float64)
    return lambda queries: np.repeat(base[None, :], len(queries), axis=0)


def scorer_top_k(scorer: Scorer, queries: Sequence[np.ndarray], k: int, batch_size: int = 1024) -> np.ndarray:
    """Top-k item indices per query under any scorer, the query's own items excluded."""
    out = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        scores = np.array(scorer(chunk), dtype=np.float64, copy=True)
        for row, idx in enumerate(chunk):
            scores[row, idx] = -np.inf
        out.append(_top_k_from_scores(scores, k))
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def split_queries(item_ids: Sequence[str], split: Split, stage: str) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Query and target item indices per user for a stage, and the cold item indices."""
    index = {item: i for i, item in enumerate(item_ids)}
    queries_by_user, targets_by_user = split.queries_and_targets(stage)
    users = list(queries_by_user)
    queries = [np.array([index[i] for i in queries_by_user[u] if i in index], dtype=np.int64) for u in users]
    targets = [np.array([index[i] for i in targets_by_user[u] if i in index], dtype=np.int64) for u in users]
    keep = [j for j, q in enumerate(queries) if len(q) and len(targets[j])]
    cold_idx = np.array(sorted(index[i] for i in split.cold_items if i in index), dtype=np.int64)
    return [queries[j] for j in keep], [targets[j] for j in keep], cold_idx


def evaluate_scorers(
    item_ids: Sequence[str],
    scorers: dict[str, Scorer],
    split: Split,
    stage: str,
    k: int,
    batch_size: int = 1024,
    extra_cold: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Score every model on the same queries and targets of `stage`.

    Returns {model: {metric: value}}, with `cold_recall_at_k` computed over the targets that are
    cold-start items (users with at least one such target). `extra_cold` adds item indices to that
    slice (items made cold on purpose for tuning).
    """
    queries, targets, cold_idx = split_queries(item_ids, split, stage)
    if extra_cold is not None and len(extra_cold):
        cold_idx = np.union1d(cold_idx, extra_cold)
    cold_targets = [t[np.isin(t, cold_idx)] for t in targets]
    cold_rows = [j for j, t in enumerate(cold_targets) if len(t)]
    report = {}
    for name, scorer in scorers.items():
        topk = scorer_top_k(scorer, queries, k, batch_size)
        report[name] = ranking_report(topk, targets, k)
        report[name][f"cold_recall_at_{k}"] = (
            metrics.recall_at_k(topk[cold_rows], [cold_targets[j] for j in cold_rows], k) if cold_rows else 0.0
        )
    return report


def evaluate_models(
    item_ids: Sequence[str],
    vectors: dict[str, np.ndarray],
    popularity: np.ndarray,
    split: Split,
    stage: str,
    k: int,
    batch_size: int = 1024,
) -> dict[str, dict[str, float]]:
    """Score embedding models (cosine to the basket's mean vector) and the popularity baseline."""
    scorers: dict[str, Scorer] = {name: vector_scorer(vec) for name, vec in vectors.items()}
    scorers["popularity"] = popularity_scorer(popularity)
    return evaluate_scorers(item_ids, scorers, split, stage, k, batch_size)
