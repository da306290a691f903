"""Who wins and who loses: recall per segment of the test targets, candidate vs champion.

A test target (an item a test user went on to buy) falls in one segment per view: its top-level
category, and its popularity bucket (`recsys.evaluation.churn.popularity_buckets`). A segment's recall
is the share of its targets that a model put in the user's top-k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_CATEGORIES = 12  # the categories with the most targets; the rest are pooled as "other"


def segment_hits(topk: np.ndarray, targets: Sequence[np.ndarray], labels: np.ndarray, n_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """(hits, targets) per segment: how many targets of each segment were in their user's top-k row."""
    hits = np.zeros(n_segments, dtype=np.int64)
    total = np.zeros(n_segments, dtype=np.int64)
    for row, t in zip(topk, targets, strict=True):
        t = np.asarray(t, dtype=np.int64)
        if not len(t):
            continue
        seg = labels[t]
        np.add.at(total, seg, 1)
        np.add.at(hits, seg[np.isin(t, row[row >= 0])], 1)
    return hits, total


def segment_recall(
    topks: dict[str, np.ndarray], targets: Sequence[np.ndarray], labels: np.ndarray, names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """{segment: {"targets": n, model: recall, ...}} for segments with targets, in `names` order."""
    out: dict[str, dict[str, Any]] = {}
    per_model = {model: segment_hits(topk, targets, labels, len(names)) for model, topk in topks.items()}
    totals = next(iter(per_model.values()))[1] if per_model else np.zeros(len(names), dtype=np.int64)
    for s, name in enumerate(names):
        if totals[s]:
            out[name] = {"targets": int(totals[s])} | {model: float(h[s] / totals[s]) for model, (h, _) in per_model.items()}
    return out


def category_labels(categories: Sequence[str | None], targets: Sequence[np.ndarray], max_categories: int = MAX_CATEGORIES) -> tuple[np.ndarray, list[str]]:
    """Per item, its category's segment: the `max_categories` categories with the most test targets by name,
    the others (and items without a category) pooled."""
    counts: dict[str, int] = {}
    for t in targets:
        for i in np.asarray(t, dtype=np.int64):
            c = categories[i] or "(none)"
            counts[c] = counts.get(c, 0) + 1
    kept = sorted(sorted(counts, key=lambda c: -counts[c])[:max_categories])
    names = kept + ["other"]
    code = {c: n for n, c in enumerate(kept)}
    labels = np.array([code.get(c or "(none)", len(kept)) for c in categories], dtype=np.int64)
    return labels, names
