"""Churn between two model versions: how much of what shoppers see would change.

Both versions answer the same related-items request (one catalog item, itself excluded) for every
catalog item, or for a fixed sample of them on large catalogs (`churn_queries`); their top-k lists
are compared item by item:

- overlap@k: |candidate ∩ champion| / k, averaged over the queries (1 = the same shelves);
- churn = 1 − overlap@k (what `gate_max_churn` bounds);
- rank correlation: Kendall's tau of the shared items' ranks, averaged over queries sharing two or more;
- changed entirely: the share of queries whose lists share nothing;
- exposure shift: the share of all recommended slots per popularity bucket (and per top-level category)
  under each version, and the total-variation distance between the two distributions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

POPULARITY_BUCKETS = ("head", "torso", "tail", "unsold")  # head: the items with the top third of purchases


def churn_queries(item_ids: Sequence[str], max_queries: int, salt: str = "churn") -> np.ndarray:
    """The catalog positions queried: every item, or above `max_queries` a keyed-hash sample of them:
    the same items for every version of a model (no seed, no order dependence)."""
    n = len(item_ids)
    if n <= max_queries:
        return np.arange(n)
    from recsys.data.splits import salted_hash64

    return np.sort(np.argsort(salted_hash64(salt, "churn-queries", item_ids), kind="stable")[:max_queries])


def related_topk(score: Callable[[Sequence[np.ndarray]], np.ndarray], queries: np.ndarray, k: int, batch_size: int = 512) -> np.ndarray:
    """[len(queries), k] top-k catalog positions of each one-item query (itself excluded; -1 pads a
    short list: an item scored -inf is never recommended)."""
    out = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size]
        scores = np.array(score([np.array([q], dtype=np.int64) for q in batch]), dtype=np.float64)
        scores[np.arange(len(batch)), batch] = -np.inf
        m = min(k, scores.shape[1])
        top = np.argpartition(-scores, m - 1, axis=1)[:, :m]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        finite = np.isfinite(np.take_along_axis(scores, top, axis=1))
        out[start : start + len(batch), :m] = np.where(finite, top, -1)
    return out


def popularity_buckets(popularity: np.ndarray) -> np.ndarray:
    """Bucket index (into POPULARITY_BUCKETS) per item: the items holding the top, middle and bottom
    third of all purchases among the sold ones, and the never sold."""
    popularity = np.asarray(popularity, dtype=np.float64)
    out = np.full(len(popularity), 3, dtype=np.int64)
    sold = np.flatnonzero(popularity > 0)
    if len(sold):
        order = sold[np.argsort(-popularity[sold], kind="stable")]
        share = np.cumsum(popularity[order]) / popularity[order].sum()
        # an item belongs to the third in which its purchases start
        start = np.concatenate([[0.0], share[:-1]])
        out[order] = np.minimum((start * 3).astype(np.int64), 2)
    return out


def _kendall_tau(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Kendall's tau of the ranks the two lists give their shared items (None below two shared)."""
    shared = [x for x in a if x in set(b)]
    if len(shared) < 2:
        return None
    rank_b = {x: r for r, x in enumerate(b)}
    ranks = [rank_b[x] for x in shared]  # in a's order
    concordant = discordant = 0
    for i in range(len(ranks)):
        for j in range(i + 1, len(ranks)):
            if ranks[i] < ranks[j]:
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / (concordant + discordant)


def _shares(topk: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    slots = topk[topk >= 0]
    counts = np.bincount(labels[slots], minlength=n_labels).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def churn_metrics(
    candidate: np.ndarray, champion: np.ndarray, popularity: np.ndarray, categories: Sequence[str | None] | None = None, top_categories: int = 5
) -> dict[str, Any]:
    """Churn between two [n_queries, k] top-k arrays of catalog positions (-1 = empty slot)."""
    if candidate.shape != champion.shape:
        raise ValueError(f"top-k arrays differ in shape: {candidate.shape} vs {champion.shape}")
    n, k = candidate.shape
    overlaps, taus, changed = [], [], 0
    for cand_row, champ_row in zip(candidate, champion, strict=True):
        a = [int(x) for x in cand_row if x >= 0]
        b = [int(x) for x in champ_row if x >= 0]
        common = len(set(a) & set(b))
        overlaps.append(common / k)
        changed += common == 0 and bool(a or b)
        tau = _kendall_tau(a, b)
        if tau is not None:
            taus.append(tau)
    buckets = popularity_buckets(popularity)
    cand_pop, champ_pop = _shares(candidate, buckets, len(POPULARITY_BUCKETS)), _shares(champion, buckets, len(POPULARITY_BUCKETS))
    overlap = float(np.mean(overlaps)) if overlaps else 1.0
    result: dict[str, Any] = {
        "queries": int(n),
        "k": int(k),
        "overlap": overlap,
        "churn": 1.0 - overlap,
        "rank_correlation": float(np.mean(taus)) if taus else None,
        "rank_correlation_queries": len(taus),
        "changed_entirely": changed / n if n else 0.0,
        "exposure_by_popularity": {name: {"candidate": float(c), "champion": float(h)} for name, c, h in zip(POPULARITY_BUCKETS, cand_pop, champ_pop, strict=True)},
        "exposure_shift_popularity": 0.5 * float(np.abs(cand_pop - champ_pop).sum()),
    }
    if categories is not None:
        names = sorted({c for c in categories if c})
        if names:
            code = {c: i for i, c in enumerate(names)}
            labels = np.array([code.get(c, len(names)) if c else len(names) for c in categories], dtype=np.int64)  # last: no category
            cand_cat, champ_cat = _shares(candidate, labels, len(names) + 1), _shares(champion, labels, len(names) + 1)
            moved = np.argsort(-np.abs(cand_cat - champ_cat), kind="stable")[:top_categories]
            label = [*names, "(none)"]
            result["exposure_shift_category"] = 0.5 * float(np.abs(cand_cat - champ_cat).sum())
            result["exposure_by_category"] = {label[i]: {"candidate": float(cand_cat[i]), "champion": float(champ_cat[i])} for i in moved if cand_cat[i] or champ_cat[i]}
    return result


def churn_metric_values(churn: dict[str, Any]) -> dict[str, float]:
    """The numbers logged to MLflow (`churn.*`)."""
    k = churn["k"]
    out = {
        f"churn.overlap_at_{k}": churn["overlap"],
        f"churn.churn_at_{k}": churn["churn"],
        "churn.changed_entirely": churn["changed_entirely"],
        "churn.exposure_shift_popularity": churn["exposure_shift_popularity"],
        "churn.queries": float(churn["queries"]),
    }
    if churn.get("rank_correlation") is not None:
        out["churn.rank_correlation"] = churn["rank_correlation"]
    if "exposure_shift_category" in churn:
        out["churn.exposure_shift_category"] = churn["exposure_shift_category"]
    return out


def churn_line(churn: dict[str, Any]) -> str:
    """One sentence for the review: how much the shelves would change."""
    tau = churn.get("rank_correlation")
    rank = f", shared items' rank correlation {tau:.2f}" if tau is not None else ""
    cat = f", category exposure shift {churn['exposure_shift_category']:.1%}" if "exposure_shift_category" in churn else ""
    return (
        f"Churn vs the champion over {churn['queries']} related-item lists: {churn['churn']:.0%} of the top-{churn['k']} slots change "
        f"(mean overlap {churn['overlap']:.2f}), {churn['changed_entirely']:.0%} of the lists change entirely{rank}; "
        f"popularity exposure shift {churn['exposure_shift_popularity']:.1%}{cat}."
    )
