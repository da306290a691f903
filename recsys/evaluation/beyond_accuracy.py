"""Beyond-accuracy metrics of top-k lists: coverage, diversity, novelty, exposure and slices.

Pure functions, no I/O. `topk` is an int array [n_queries, k_max] of item indices, best first;
only its first k columns count. -1 entries (padding when the catalog ran out) are ignored
everywhere: they are neither items, nor slots, nor pairs. Means over lists skip the lists a
metric is undefined for, and a metric with nothing to average is 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.evaluation.metrics import check_k, metric_name
from recsys.data.schema import CATEGORY_SEP


def _lists(topk: np.ndarray, k: int, n_items: int) -> list[np.ndarray]:
    """Each row's first k items with the -1 padding dropped; other indices outside the catalog are an error."""
    topk = np.asarray(topk)
    check_k(topk, k)
    cut = topk[:, :k]
    bad = (cut < -1) | (cut >= n_items)
    if bad.any():
        raise ValueError(f"topk holds item {int(cut[bad][0])}, outside the catalog of {n_items} items (-1 is padding)")
    return [row[row >= 0] for row in cut]


def _slots(topk: np.ndarray, k: int, n_items: int) -> np.ndarray:
    lists = _lists(topk, k, n_items)
    return np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)


def catalog_coverage(topk: np.ndarray, n_items: int, k: int) -> float:
    """Distinct items recommended in any top k / n_items."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    return len(np.unique(_slots(topk, k, n_items))) / n_items


def intra_list_diversity(topk: np.ndarray, vectors: np.ndarray, k: int) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) between the list's items.

    Args:
        topk: [n_queries, k_max] item indices, best first.
        vectors: [n_items, d] item vectors; rows are L2-normalised here (a zero row is distance 1
            from everything).
        k: list length cut.

    Lists with fewer than 2 items are skipped.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    vals = []
    for items in _lists(topk, k, len(vectors)):
        n = len(items)
        if n < 2:
            continue
        sims = unit[items] @ unit[items].T
        iu = np.triu_indices(n, 1)
        vals.append(float(np.mean(1.0 - sims[iu])))
    return float(np.mean(vals)) if vals else 0.0


def category_diversity(topk: np.ndarray, categories: Sequence[str | None], k: int) -> float:
    """Mean over lists of distinct categories / items with a known category in the list.

    `categories[i]` is item i's category, used as given (pass top levels for top-level
    diversity); None is unknown. Lists with no known category are skipped.
    """
    vals = []
    for items in _lists(topk, k, len(categories)):
        known = [categories[i] for i in items if categories[i] is not None]
        if known:
            vals.append(len(set(known)) / len(known))
    return float(np.mean(vals)) if vals else 0.0


def novelty(topk: np.ndarray, popularity: np.ndarray, n_users: int, k: int) -> float:
    """Mean self-information of the recommended items, over all (non-padding) slots.

    Item i's self-information is -log2((pop_i + 1) / (n_users + 1)), as in Zhou et al. (2010),
    with add-one smoothing so that items no user has seen have a finite value log2(n_users + 1).

    Args:
        topk: [n_queries, k_max] item indices, best first.
        popularity: [n_items] number of users who interacted with each item.
        n_users: number of users the popularity was counted over.
        k: list length cut.
    """
    popularity = np.asarray(popularity, dtype=np.float64)
    if n_users < 0 or (popularity < 0).any():
        raise ValueError("n_users and popularity must be >= 0")
    slots = _slots(topk, k, len(popularity))
    if not len(slots):
        return 0.0
    return float(np.mean(-np.log2((popularity[slots] + 1.0) / (n_users + 1.0))))


def exposure_gini(topk: np.ndarray, n_items: int, k: int) -> float:
    """Gini coefficient of how often each catalog item appears in the top-k lists.

    Items never shown count as 0. With counts x sorted ascending, G = Σ_i (2i - n - 1) x_i / (n Σ x),
    i = 1..n: 0 for equal exposure, (n - 1) / n when one item takes every slot. 0.0 with no slots.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    x = np.sort(np.bincount(_slots(topk, k, n_items), minlength=n_items)).astype(np.float64)
    total = x.sum()
    if total == 0:
        return 0.0
    i = np.arange(1, n_items + 1)
    return float(((2 * i - n_items - 1) * x).sum() / (n_items * total))


def head_tail_masks(popularity: np.ndarray, head_share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(head, tail) bool masks [n_items]: the floor(head_share · n_items) most popular items, and the rest.

    Ties go to the lower index (a stable sort of -popularity).
    """
    if not 0.0 <= head_share <= 1.0:
        raise ValueError(f"head_share must be in [0, 1], got {head_share}")
    popularity = np.asarray(popularity)
    n_head = int(head_share * len(popularity) + 1e-9)  # guard 0.3 * 10 = 3.0000000000000004 style noise
    head = np.zeros(len(popularity), dtype=bool)
    head[np.argsort(-popularity, kind="stable")[:n_head]] = True
    return head, ~head


def long_tail_share(topk: np.ndarray, popularity: np.ndarray, k: int, head_share: float = 0.2) -> float:
    """Share of recommended (non-padding) slots that go to items outside the head (see head_tail_masks)."""
    _, tail = head_tail_masks(popularity, head_share)
    slots = _slots(topk, k, len(tail))
    return float(tail[slots].mean()) if len(slots) else 0.0


def slice_recall(
    topk: np.ndarray, targets: Sequence[np.ndarray], item_mask: np.ndarray, k: int
) -> tuple[float, int]:
    """Recall@k counting only targets in the slice `item_mask` (bool [n_items]).

    Averaged over the queries with at least one target in the slice; returns (recall, number of
    those queries), (0.0, 0) when there are none. For cold, head, tail or per-category slices.
    """
    topk = np.asarray(topk)
    check_k(topk, k)
    item_mask = np.asarray(item_mask, dtype=bool)
    vals = []
    for row, t in zip(topk, targets, strict=True):
        t = np.asarray(t, dtype=np.int64)
        in_slice = t[item_mask[t]]
        if len(in_slice):
            vals.append(np.isin(row[:k], in_slice).sum() / len(in_slice))
    return (float(np.mean(vals)) if vals else 0.0), len(vals)


def category_masks(categories: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Top-level category ("Home > Kitchen" -> "Home") -> bool mask [n_items], keys sorted.

    Items whose category is None or empty are in no mask.
    """
    tops = [c.split(CATEGORY_SEP)[0].strip() if c is not None else "" for c in categories]
    return {c: np.array([t == c for t in tops], dtype=bool) for c in sorted(set(tops) - {""})}


def beyond_accuracy_report(
    topk: np.ndarray,
    *,
    n_items: int,
    k: int,
    vectors: np.ndarray | None = None,
    categories: Sequence[str | None] | None = None,
    popularity: np.ndarray | None = None,
    n_users: int | None = None,
) -> dict[str, float]:
    """The metrics the given inputs allow, keyed with k substituted (e.g. `coverage_at_10`).

    Always `coverage_at_k` and `gini_at_k`; `ild_at_k` with vectors; `category_diversity_at_k`
    with categories (used as given); `long_tail_share_at_k` with popularity; `novelty_at_k` with
    both popularity and n_users.
    """
    out = {metric_name("coverage", k): catalog_coverage(topk, n_items, k)}
    if vectors is not None:
        out[metric_name("ild", k)] = intra_list_diversity(topk, vectors, k)
    if categories is not None:
        out[metric_name("category_diversity", k)] = category_diversity(topk, categories, k)
    if popularity is not None and n_users is not None:
        out[metric_name("novelty", k)] = novelty(topk, popularity, n_users, k)
    out[metric_name("gini", k)] = exposure_gini(topk, n_items, k)
    if popularity is not None:
        out[metric_name("long_tail_share", k)] = long_tail_share(topk, popularity, k)
    return out


def exposure_by_popularity_bin(topk: np.ndarray, popularity: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Share of all (non-padding) slots, in every column of topk, that go to each popularity bin.

    Items are ranked by popularity descending (ties to the lower index, stable) and item at rank r
    goes to bin floor(r · n_bins / n_items): bin 0 is the most popular 1/n_bins of the catalog, and
    bin sizes differ by at most one when n_items is not a multiple of n_bins. Returns [n_bins]
    summing to 1, or all zeros when there are no slots.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    popularity = np.asarray(popularity, dtype=np.float64)  # float: negating unsigned counts would wrap
    n_items = len(popularity)
    topk = np.asarray(topk)
    if topk.ndim != 2:
        raise ValueError(f"topk must be a 2-D array [n_queries, k], got shape {topk.shape}")
    # every column counts here, so validate directly instead of through _lists (which needs k >= 1)
    bad = (topk < -1) | (topk >= n_items)
    if bad.any():
        raise ValueError(f"topk holds item {int(topk[bad][0])}, outside the catalog of {n_items} items (-1 is padding)")
    slots = topk[topk >= 0].astype(np.int64)
    if not len(slots):
        return np.zeros(n_bins, dtype=np.float64)
    rank = np.empty(n_items, dtype=np.int64)
    rank[np.argsort(-popularity, kind="stable")] = np.arange(n_items)
    bin_of = rank * n_bins // n_items
    counts = np.bincount(bin_of[slots], minlength=n_bins).astype(np.float64)
    return counts / counts.sum()
