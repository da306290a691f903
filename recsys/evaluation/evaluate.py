"""Offline evaluation with full ranking over the whole catalog (no sampled negatives).

A query is a user's observed items; its vector is the normalized mean of their vectors; every
catalog item is scored and the query's own items are excluded from the ranking.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.evaluation import metrics
from recsys.evaluation.metrics import metric_name
from recsys.data.splits import Split


def top_k_from_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the `k` highest scores, best first."""
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
    """Recall, NDCG and hit rate at k, plus how many queries were scored (NaN, i.e. missing, with no query)."""
    if not len(targets):
        return {metric_name("recall", k): float("nan"), metric_name("ndcg", k): float("nan"), metric_name("hit_rate", k): float("nan"), "n_queries": 0.0}
    return {
        metric_name("recall", k): metrics.recall_at_k(topk, targets, k),
        metric_name("ndcg", k): metrics.ndcg_at_k(topk, targets, k),
        metric_name("hit_rate", k): metrics.hit_rate_at_k(topk, targets, k),
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
        out.append(top_k_from_scores(scores, k))
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


@dataclass(frozen=True)
class EvaluationContext:
    """What the beyond-accuracy metrics and slices need besides the rankings (all optional)."""

    ks: tuple[int, ...] = ()  # extra cut-offs for the ranking metrics (the main k is always there)
    vectors: np.ndarray | None = None  # item vectors for intra-list diversity
    popularity: np.ndarray | None = None  # training interactions per item: novelty, long tail, head/tail slices
    n_users: int | None = None
    categories: Sequence[str | None] | None = None  # per item: category diversity, per-category slices


def evaluate_scorers(
    item_ids: Sequence[str],
    scorers: dict[str, Scorer],
    split: Split,
    stage: str,
    k: int,
    batch_size: int = 1024,
    extra_cold: np.ndarray | None = None,
    context: EvaluationContext | None = None,
    topk_out: dict[str, np.ndarray] | None = None,
    per_query_out: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, float]]:
    """Score every model on the same queries and targets of `stage`.

    Returns {model: {metric: value}}: Recall, NDCG, MRR, hit rate and precision at k (and at every
    `context.ks`), `cold_recall_at_k` over the targets that are cold-start items (users with at least
    one such target; `extra_cold` adds items made cold on purpose for tuning), and, with a context,
    the beyond-accuracy metrics at k and the head / tail / per-category recall slices.
    `topk_out`, when given, receives each model's top-k item indices per query; `per_query_out` each
    model's per-query recall, NDCG and cold recall at k (NaN where a query has no such target), in the
    same query order for every model: what the gate's paired bootstrap resamples.

    A metric with no target to measure it on (e.g. no cold target in the stage) is NaN: missing, not 0.
    """
    from recsys.evaluation import beyond_accuracy as ba

    ctx = context or EvaluationContext()
    ks = tuple(sorted({k, *ctx.ks}))
    queries, targets, cold_idx = split_queries(item_ids, split, stage)
    if extra_cold is not None and len(extra_cold):
        cold_idx = np.union1d(cold_idx, extra_cold)
    is_cold = np.zeros(len(item_ids), dtype=bool)
    is_cold[cold_idx] = True  # a mask lookup per user: np.isin sorts the cold items again for every user
    cold_targets = [t[is_cold[t]] for t in targets]
    cold_rows = [j for j, t in enumerate(cold_targets) if len(t)]
    slices: dict[str, np.ndarray] = {}
    if ctx.popularity is not None:
        slices["head"], slices["tail"] = ba.head_tail_masks(ctx.popularity)
    if ctx.categories is not None:
        # metric names allow letters, digits and _-. /: only (MLflow)
        slices.update({"category_" + re.sub(r"[^A-Za-z0-9_\-.]", "_", c): m for c, m in ba.category_masks(ctx.categories).items()})
    report = {}
    for name, scorer in scorers.items():
        topk = scorer_top_k(scorer, queries, max(ks), batch_size)
        if topk_out is not None:  # the caller wants the rankings too (exposure plots)
            topk_out[name] = topk[:, :k]
        row = ranking_report(topk, targets, k)
        if len(targets):
            row.update(metrics.ranking_metrics(topk, targets, ks))
        row[metric_name("cold_recall", k)] = metrics.recall_at_k(topk[cold_rows], [cold_targets[j] for j in cold_rows], k) if cold_rows else float("nan")
        if per_query_out is not None:
            per_query_out[name] = {
                metric_name("recall", k): metrics.per_query_recall(topk, targets, k),
                metric_name("ndcg", k): metrics.per_query_ndcg(topk, targets, k),
                metric_name("cold_recall", k): metrics.per_query_recall(topk, cold_targets, k),
            }
        if context is not None and len(targets):
            row.update(
                ba.beyond_accuracy_report(
                    topk, n_items=len(item_ids), k=k, vectors=ctx.vectors, categories=ctx.categories, popularity=ctx.popularity, n_users=ctx.n_users
                )
            )
            for slice_name, mask in slices.items():
                row[metric_name(f"{slice_name}_recall", k)] = ba.slice_recall(topk, targets, mask, k)[0]
        report[name] = row
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


def evaluation_context(split: Split, catalog: pd.DataFrame, vectors: np.ndarray) -> EvaluationContext:
    """What the beyond-accuracy metrics and slices need, the same for every model scored in a run
    (`vectors`: the item vectors the model is built on)."""
    from recsys.data import schema as S
    from recsys.model.baselines import baseline_inputs
    from recsys.model.bundles import top_category

    _, x, _, popularity = baseline_inputs(split, catalog)
    categories = [top_category(c) for c in catalog[S.CATEGORY]]
    return EvaluationContext(
        ks=(20, 50),
        vectors=vectors,
        popularity=popularity,
        n_users=int(x.shape[0]),
        categories=categories if any(c is not None for c in categories) else None,
    )
