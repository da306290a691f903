"""The champion comparison the gate decides on: two models, the same test users, minus what the
champion has seen, with paired-bootstrap intervals. Pure: scorers in, a JSON-able dict out (no MLflow)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys.evaluation.bootstrap import paired_relative_gain
from recsys.config import GateConfig
from recsys.evaluation.evaluate import EvaluationContext, Scorer, evaluate_scorers
from recsys.evaluation.metrics import metric_name
from recsys.evaluation.lineage import Lineage, exclude_seen
from recsys.data.splits import Split


def compare_with_champion(
    item_ids: Sequence[str],
    candidate: Scorer,
    champion: Scorer,
    split: Split,
    champion_lineage: Lineage | None,
    gate: GateConfig,
    k: int,
    seed: int = 0,
    batch_size: int = 1024,
    context: EvaluationContext | None = None,
    topk_out: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Score both models on `split`'s test pairs that the champion never learned from or was tuned on
    (and on a cold slice without the items it trained on), and bootstrap the candidate's relative change
    on the primary metric and every per-user guardrail (catalog coverage has no per-user value: it is
    judged on its point value).

    Returns {"metrics" (the champion's), "candidate_metrics", "intervals" {metric: Interval dict or None},
    "test_users", "overlap"}."""
    fair, overlap = exclude_seen(split, champion_lineage)
    per_user: dict[str, dict[str, np.ndarray]] = {}
    scored = evaluate_scorers(item_ids, {"candidate": candidate, "champion": champion}, fair, "test", k, batch_size, context=context, topk_out=topk_out, per_query_out=per_user)
    compared = [metric_name(gate.primary_metric, k)] + [metric_name(base, k) for base, _ in gate.guardrails]
    intervals: dict[str, dict[str, float] | None] = {}
    for name in compared:
        if name in per_user["candidate"]:
            ci = paired_relative_gain(per_user["candidate"][name], per_user["champion"][name], gate.bootstrap_samples, gate.confidence, seed=seed)
            intervals[name] = ci.to_dict() if ci is not None else None
    result = {
        "metrics": scored["champion"],
        "candidate_metrics": scored["candidate"],
        "intervals": intervals,
        "test_users": int(scored["candidate"]["n_queries"]),
        "overlap": overlap.to_dict(),
    }
    if topk_out is not None and context is not None and context.popularity is not None:
        result["segments"] = _segments(item_ids, fair, topk_out, context)
    return result


def _segments(item_ids: Sequence[str], fair: Split, topk: dict[str, np.ndarray], context: EvaluationContext) -> dict[str, dict[str, Any]]:
    """Recall per top-level category and per popularity bucket of the test targets, both models
    (`recsys.evaluation.segments`); the rankings are the ones just scored."""
    from recsys.evaluation.churn import POPULARITY_BUCKETS, popularity_buckets
    from recsys.evaluation.evaluate import split_queries
    from recsys.evaluation.segments import category_labels, segment_recall

    _, targets, _ = split_queries(item_ids, fair, "test")
    models = {m: topk[m] for m in ("candidate", "champion")}
    out = {"popularity": segment_recall(models, targets, popularity_buckets(context.popularity), POPULARITY_BUCKETS)}
    if context.categories is not None:
        labels, names = category_labels(context.categories, targets)
        out = {"category": segment_recall(models, targets, labels, names)} | out
    return out
