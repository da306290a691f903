"""Complete-the-basket bundles: k items that go with a cart, each with the reasons it was picked.

Pure functions, no I/O. A `BundleCatalog` is built once per model (item vectors, categories,
prices, co-purchase counts); `compose_bundle` answers one request with a lazy greedy, and
`exact_bundle` solves small instances exhaustively so the greedy can be measured against the optimum.

The objective is a set function of the bundle S given the cart C (weights w_* and thresholds from
`BundleConfig`; cos⁺ = max(0, cos); dup(x) = clip((x - t_dup) / (t_excl - t_dup), 0, 1)):

    F(S) = Σ_{i∈S} [ w_r·rel(i) + w_c·comp(i) + w_p·pref(i) + w_d − w_red·dup(max_{c∈C} cos(i, c)) ]
           + w_d·category_bonus·|cats(S) \\ cats(C)|
           − Σ_{{i,j}⊆S} [ w_d·cos⁺(i, j) / (k − 1) + w_red·dup(cos(i, j)) ]

    rel(i)  = cos(i, mean of the cart's vectors)
    comp(i) = mean over c∈C of NPMI⁺(c, i) = max(0, ln lift(c, i)) / −ln P(c, i), only where
              cooc(c, i) ≥ min_support; lift = cooc·N / (count(c)·count(i)), P = cooc / N.
    pref(i) = the purchase model's score of i for the cart over its best score for it, clipped at 0
              (`preference_from_scores`; 0 for every item when no model is given). Without it
              a bundle is built from text similarity and co-purchase lift alone, which on a year of
              grocery baskets found a held-out basket item about 15x less often than the model's own
              ranking (README, *Large catalogs*: bundles on real baskets).

So the marginal gain of i given the items S picked before it is

    w_r·rel + w_c·comp + w_p·pref + w_d·(1 − Σ_{s∈S} cos⁺(i, s)/(k − 1) + category_bonus·[cat(i) ∉ cats(C ∪ S)])
    − w_red·(dup(max_c cos(i, c)) + Σ_{s∈S} dup(cos(i, s)))

which never grows as S grows: F is submodular (diminishing returns), the setting where greedy is
the standard approximation, and what makes the lazy greedy pick exactly what the plain greedy
would (scripts/bench_bundles.py measures greedy against the optimum). Pairwise sums rather than "max
cosine to earlier picks" keep F a true set function (the same value in every pick order), so the
exhaustive search and the greedy optimise the same thing. The first pick's diversity is the full
w_d (nothing to be similar to yet); the 1/(k − 1) scale makes the last pick's diversity
1 − mean cos⁺ to the others. Items with cosine above `exclude_threshold` to a cart item or to
another bundle item are never picked (the same product twice); between `duplicate_threshold` and
`exclude_threshold` the redundancy penalty ramps from 0 to w_red (likely substitutes).
Both searches add items only while the marginal gain is positive, so a bundle can be shorter than
k; `Bundle.note` then says why. Under a budget the greedy also makes a gain-per-price pass and keeps
the better bundle (see `BundleConfig.cost_benefit_pass`).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.schema import CATEGORY, CATEGORY_SEP, EVENT, ITEM_ID, PRICE, TITLE, USER_ID

if TYPE_CHECKING:
    from recsys.data.splits import Split

# explain_item names a cart item as "close in meaning" only from this cosine up: a weak
# similarity is not a reason a shopper would recognise, even when it added a little score
REASON_MIN_SIMILARITY = 0.25
# true of the item it is attached to: it had no interaction in the training data
NEW_ITEM_REASON = "new item (no sales in the training data), recommended from its description"
_PRICE_EPS = 1e-9  # budget comparisons: prices summed in a different order must agree
_MAX_EXACT_SUBSETS = 2_000_000  # beyond this, exact_bundle is not the tool (it is for small pools)


@dataclass(frozen=True)
class BundleConfig:
    """How bundles are scored and constrained.

    Attributes:
        k: the most items in a bundle.
        w_relevance: weight of the cosine to the cart's mean vector.
        w_complement: weight of the co-purchase score (mean NPMI over cart items).
        w_preference: weight of the purchase model's preference for the item given the cart
            (`preference_from_scores`); it counts only when the caller passes a preference.
        w_diversity: weight of the diversity term (dissimilarity to the bundle + new categories).
        w_redundancy: the penalty reached at `exclude_threshold` (ramping up from `duplicate_threshold`).
        duplicate_threshold: cosine above which an item counts as a likely substitute.
        exclude_threshold: cosine above which it is the same product: never picked.
        category_bonus: diversity credit (times w_diversity) for a category new to cart + bundle.
        max_per_category: the most bundle items per top-level category (cart items do not count;
            items without a category are not capped); None for no cap.
        budget: the most the bundle may cost in total; None for no budget.
        allow_unknown_price: with a budget, whether items without a price may be picked (they
            then count 0 against it). Without a budget they always may.
        min_support: co-purchase counts below this give no complementarity (noise).
        candidate_pool: the greedy considers only this many top candidates by their
            set-independent score (relevance + complementarity − redundancy to the cart).
        pool_per_category: with max_per_category set, the most candidates of one category kept
            in the pool. Without it a 15k-item catalog's top 200 can all come from the cart's own
            category, which the cap then empties (bundles came back short in the benchmark).
        cost_benefit_pass: with a budget, also run the greedy on gain per unit of price and keep
            the better bundle. Plain greedy under a budget can spend it all on one expensive item
            (greedy/optimum fell to 0.51 in scripts/bench_bundles.py); the better of the two passes
            is the standard remedy (Leskovec et al. 2007, CELF) and costs a second lazy pass.
    """

    k: int = 4
    w_relevance: float = 1.0
    w_complement: float = 1.0
    # chosen on completejourney's validation month (400 baskets, half held out, k = 5): hit rate 0.013 at 0,
    # 0.085 at 1, 0.110 at 2, 4 and 8, 0.105 at 16; recall best at 4 and 8 (README, *Large catalogs*)
    w_preference: float = 4.0
    w_diversity: float = 0.3
    w_redundancy: float = 1.0
    duplicate_threshold: float = 0.92
    exclude_threshold: float = 0.97
    category_bonus: float = 0.5
    max_per_category: int | None = 2
    budget: float | None = None
    allow_unknown_price: bool = False
    min_support: int = 2
    candidate_pool: int = 200
    pool_per_category: int = 25
    cost_benefit_pass: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if min(self.w_relevance, self.w_complement, self.w_preference, self.w_diversity, self.w_redundancy, self.category_bonus) < 0:
            raise ValueError("weights and category_bonus must be >= 0")
        if not -1.0 <= self.duplicate_threshold < self.exclude_threshold <= 1.0:
            raise ValueError(
                f"need -1 <= duplicate_threshold < exclude_threshold <= 1, got {self.duplicate_threshold}, {self.exclude_threshold}"
            )
        if self.max_per_category is not None and self.max_per_category < 1:
            raise ValueError(f"max_per_category must be >= 1 or None, got {self.max_per_category}")
        if self.budget is not None and not self.budget >= 0:
            raise ValueError(f"budget must be >= 0 or None, got {self.budget}")
        if min(self.min_support, self.candidate_pool, self.pool_per_category) < 1:
            raise ValueError("min_support, candidate_pool and pool_per_category must be >= 1")


def top_category(path: object) -> str | None:
    """The top level of a category path ("Home > Kitchen" -> "Home"); None when missing or empty."""
    if path is None or path is pd.NA or (isinstance(path, float) and math.isnan(path)):
        return None
    top = str(path).split(CATEGORY_SEP)[0].strip()
    return top or None


def cooccurrence_stats(
    user_idx: np.ndarray | Sequence[object],
    item_idx: np.ndarray | Sequence[int],
    n_items: int,
    min_count: int = 1,
    block_items: int = 4096,
) -> tuple[sp.csr_matrix, np.ndarray, int]:
    """Co-purchase counts from interaction index arrays, binary per (user, item).

    Args:
        user_idx: one user key per interaction (any hashable-sortable values).
        item_idx: the item index of each interaction, in [0, n_items).
        n_items: catalog size.
        min_count: keep only pairs bought together by at least this many customers. Bundles give
            complementarity (and its reason) only from `BundleConfig.min_support` customers up, so
            pruning below it loses nothing they read; on a year of grocery baskets 72% of the pairs
            are single customers (README, *Large catalogs*).
        block_items: rows of the pair matrix computed at once: the memory bound of the product.

    Returns:
        (cooc, item_counts, n_customers): cooc[i, j] = customers who bought both i and j (int64 CSR,
        zero diagonal, sorted indices, only counts >= min_count); item_counts[i] = customers who
        bought i; n_customers = users with at least one interaction.
    """
    items = np.asarray(item_idx, dtype=np.int64)
    users = np.asarray(user_idx)
    if users.shape != items.shape or items.ndim != 1:
        raise ValueError(f"user_idx and item_idx must be 1-D of one length, got {users.shape} and {items.shape}")
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"item_idx must lie in [0, {n_items})")
    if min_count < 1 or block_items < 1:
        raise ValueError(f"min_count and block_items must be >= 1, got {min_count} and {block_items}")
    if not len(items):
        return sp.csr_matrix((n_items, n_items), dtype=np.int64), np.zeros(n_items, dtype=np.int64), 0
    uniq, u = np.unique(users, return_inverse=True)
    x = sp.csr_matrix((np.ones(len(items), dtype=np.int64), (u.ravel(), items)), shape=(len(uniq), n_items))
    x.sum_duplicates()
    x.data[:] = 1  # a customer who bought an item twice is still one customer
    counts = np.asarray(x.sum(axis=0)).ravel().astype(np.int64)
    xt = x.T.tocsr()
    blocks = []
    # rows of X'X a block at a time, pruned as they come: the full product of a year of baskets holds
    # ~200M pairs (2.5 GB), most of them below any support a bundle would use
    for start in range(0, n_items, block_items):
        stop = min(start + block_items, n_items)
        block = (xt[start:stop] @ x).tocoo()
        keep = (block.row + start != block.col) & (block.data >= min_count)  # the diagonal is each item's own count
        blocks.append(sp.csr_matrix((block.data[keep], (block.row[keep], block.col[keep])), shape=(stop - start, n_items), dtype=np.int64))
    co = sp.vstack(blocks, format="csr", dtype=np.int64)
    co.sort_indices()
    return co, counts, int(len(uniq))


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == is meaningless on arrays
class BundleCatalog:
    """Everything a bundle request reads, row-aligned by item index. Built once per model.

    Vectors are stored as float64 and re-normalised (zero rows stay zero) so every cosine the
    scores and the reasons quote is the same number; cooc is stored as a float CSR matrix.
    """

    item_ids: list[str]
    titles: list[str]
    vectors: np.ndarray  # [n, d], L2-normalised
    categories: list[str | None]  # top-level category
    prices: np.ndarray  # [n] float, NaN = unknown
    cooc: sp.csr_matrix  # [n, n] customers who bought both, zero diagonal
    item_counts: np.ndarray  # [n] customers per item
    n_customers: int
    is_new: np.ndarray  # [n] bool: no behaviour history (cold)
    cooc_min_count: int = 1  # cooc keeps only pairs of at least this many customers (`cooccurrence_stats`)
    category_codes: np.ndarray = field(init=False, repr=False, compare=False)  # [n] int, -1 = None

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        vec = np.ascontiguousarray(self.vectors, dtype=np.float64)
        if vec.ndim != 2 or vec.shape[0] != n:
            raise ValueError(f"vectors must be [n_items={n}, d], got {vec.shape}")
        norms = np.linalg.norm(vec, axis=1, keepdims=True)
        vec = np.divide(vec, norms, out=np.zeros_like(vec), where=norms > 0)
        cooc = sp.csr_matrix(self.cooc, dtype=np.float64)  # float: lifts are computed from it
        cooc.sort_indices()
        arrays = {
            "titles": len(self.titles),
            "categories": len(self.categories),
            "prices": len(self.prices),
            "item_counts": len(self.item_counts),
            "is_new": len(self.is_new),
        }
        bad = {k: v for k, v in arrays.items() if v != n}
        if bad or cooc.shape != (n, n):
            raise ValueError(f"catalog fields must all have n_items={n} rows: {bad or ''} cooc {cooc.shape}")
        codes = {c: j for j, c in enumerate(sorted({c for c in self.categories if c is not None}))}
        object.__setattr__(self, "vectors", vec)
        object.__setattr__(self, "cooc", cooc)
        object.__setattr__(self, "prices", np.asarray(self.prices, dtype=np.float64))
        object.__setattr__(self, "item_counts", np.asarray(self.item_counts, dtype=np.float64))
        object.__setattr__(self, "is_new", np.asarray(self.is_new, dtype=bool))
        object.__setattr__(self, "category_codes", np.array([codes.get(c, -1) for c in self.categories], dtype=np.int64))

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def build(
        cls,
        item_ids: Sequence[str],
        titles: Sequence[str],
        vectors: np.ndarray,
        categories: Sequence[str | None],
        prices: np.ndarray | Sequence[float],
        user_idx: np.ndarray | Sequence[object],
        item_idx: np.ndarray | Sequence[int],
        is_new: np.ndarray | None = None,
        min_count: int = 1,
    ) -> BundleCatalog:
        """A catalog from item fields plus purchase interactions (user key, item index per row).

        `is_new` defaults to "nobody bought it" (item_counts == 0); `min_count` prunes the co-purchase
        pairs below it (requests with a smaller `min_support` are then refused).
        """
        cooc, counts, n_customers = cooccurrence_stats(user_idx, item_idx, len(item_ids), min_count=min_count)
        return cls(
            item_ids=list(item_ids),
            titles=list(titles),
            vectors=vectors,
            categories=list(categories),
            prices=np.asarray(prices, dtype=np.float64),
            cooc=cooc,
            item_counts=counts,
            n_customers=n_customers,
            is_new=counts == 0 if is_new is None else np.asarray(is_new, dtype=bool),
            cooc_min_count=min_count,
        )

    @classmethod
    def from_frames(
        cls, items: pd.DataFrame, interactions: pd.DataFrame, vectors: np.ndarray, events: Collection[str] = ("purchase",)
    ) -> BundleCatalog:
        """A catalog from canonical items/interactions frames (see recsys.data.schema) and row-aligned vectors.

        Co-purchase counts use the interactions whose event is in `events`; an item is new (cold)
        when it has no interaction of any kind. Interactions with unknown item ids are ignored.
        """
        ids = items[ITEM_ID].astype(str).tolist()
        index = pd.Series(np.arange(len(ids)), index=pd.Index(ids))
        known = interactions[interactions[ITEM_ID].astype(str).isin(index.index)]
        bought = known[known[EVENT].isin(list(events))]
        item_idx = index.loc[bought[ITEM_ID].astype(str)].to_numpy()
        seen = np.zeros(len(ids), dtype=bool)
        seen[index.loc[known[ITEM_ID].astype(str)].to_numpy()] = True
        prices = (
            pd.to_numeric(items[PRICE], errors="coerce").astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
            if PRICE in items
            else np.full(len(ids), np.nan)
        )
        cats = [top_category(c) for c in items[CATEGORY]] if CATEGORY in items else [None] * len(ids)
        titles = items[TITLE].fillna("").astype(str).tolist() if TITLE in items else ids
        return cls.build(ids, titles, vectors, cats, prices, bought[USER_ID].astype(str).to_numpy(), item_idx, is_new=~seen)


@dataclass(frozen=True)
class BundleItem:
    """One picked item with the marginal gain it added and why.

    `breakdown` holds the weighted terms of its marginal gain: relevance, complementarity,
    diversity (of which `category` is the new-category credit), redundancy (a penalty, >= 0) and
    total = relevance + complementarity + diversity − redundancy.
    """

    index: int
    item_id: str
    title: str
    price: float | None
    category: str | None
    breakdown: dict[str, float]
    reasons: list[str]


@dataclass(frozen=True)
class Bundle:
    """A composed bundle, in pick order.

    Attributes:
        cart: the cart's item indices (deduplicated, in the given order).
        items: the picked items.
        total_score: F(S), the sum of the items' marginal gains.
        total_price: the sum of the known prices.
        constraints: one line per active constraint with how much of it was used.
        note: why the bundle has fewer than k items; None when it is full.
        method: "lazy-greedy", "lazy-greedy (gain per price)" or "exact".
        evaluations: the search's work: marginal-gain evaluations for the greedy (pool size plus
            re-evaluations, per pass), subsets scored for the exact search.
    """

    cart: list[int]
    items: list[BundleItem]
    total_score: float
    total_price: float
    constraints: list[str]
    note: str | None
    method: str
    evaluations: int


# --- signals -----------------------------------------------------------------------------


def _pair_evidence(catalog: BundleCatalog, c: int, i: int, min_support: int) -> tuple[int, float, float]:
    """(customers who bought both, lift, NPMI⁺ score) for cart item c and item i; score 0 below support."""
    row = slice(catalog.cooc.indptr[c], catalog.cooc.indptr[c + 1])
    cols = catalog.cooc.indices[row]
    pos = int(np.searchsorted(cols, i))
    if pos >= len(cols) or cols[pos] != i:
        return 0, 0.0, 0.0
    n_both = float(catalog.cooc.data[row][pos])
    lift = n_both * catalog.n_customers / (catalog.item_counts[c] * catalog.item_counts[i])
    score = _npmi(np.array([n_both]), np.array([lift]), catalog.n_customers)[0] if n_both >= min_support else 0.0
    return int(round(n_both)), float(lift), float(score)


def _npmi(n_both: np.ndarray, lift: np.ndarray, n_customers: int) -> np.ndarray:
    """max(0, ln lift) / −ln P(both): 0 for independence, 1 when the two are always bought together.

    NPMI rather than raw log-lift keeps the term on the cosine's [0, 1] scale for any catalog size.
    """
    neg_log_p = -np.log(n_both / n_customers)
    pmi = np.log(np.maximum(lift, 1.0))
    # P(both) = 1 means everyone bought both: lift is 1 and there is nothing to learn
    return np.divide(pmi, neg_log_p, out=np.zeros_like(pmi), where=neg_log_p > 0)


def _check_support(catalog: BundleCatalog, min_support: int) -> None:
    """A pruned catalog cannot answer below the counts it kept: refuse rather than score from a part."""
    if min_support < catalog.cooc_min_count:
        raise ValueError(
            f"min_support {min_support} is below the {catalog.cooc_min_count} customers from which this catalog keeps "
            f"co-purchase pairs; use min_support >= {catalog.cooc_min_count}"
        )


def _complementarity(catalog: BundleCatalog, cart: np.ndarray, min_support: int) -> np.ndarray:
    """comp(i) for every item: mean over cart items of NPMI⁺, zero below min_support."""
    _check_support(catalog, min_support)
    out = np.zeros(catalog.n_items)
    if catalog.n_customers == 0:
        return out
    co = catalog.cooc
    for c in cart:
        lo, hi = co.indptr[c], co.indptr[c + 1]
        cols, n_both = co.indices[lo:hi], co.data[lo:hi]
        keep = n_both >= min_support
        cols, n_both = cols[keep], n_both[keep]
        lift = n_both * catalog.n_customers / (catalog.item_counts[c] * catalog.item_counts[cols])
        out[cols] += _npmi(n_both, lift, catalog.n_customers)
    return out / len(cart)


def _ramp(cos: np.ndarray | float, config: BundleConfig) -> np.ndarray:
    """dup(cos): 0 up to duplicate_threshold, rising linearly to 1 at exclude_threshold."""
    t, t_ex = config.duplicate_threshold, config.exclude_threshold
    return np.clip((np.asarray(cos, dtype=np.float64) - t) / (t_ex - t), 0.0, 1.0)


# --- one request -------------------------------------------------------------------------


@dataclass
class _Request:
    """A request's candidate pool and its set-independent parts, shared by greedy and exact."""

    catalog: BundleCatalog
    config: BundleConfig
    cart: np.ndarray
    pool: np.ndarray  # catalog indices of the candidates, best static score first
    rel: np.ndarray  # [p] cosine to the cart mean
    comp: np.ndarray  # [p] mean NPMI⁺ over cart items
    pref: np.ndarray  # [p] the purchase model's preference in [0, 1] (zeros without a model)
    dup_cart: np.ndarray  # [p] dup(max cosine to a cart item)
    new_to_cart: np.ndarray  # [p] bool: has a category the cart lacks
    vectors: np.ndarray  # [p, d]
    dropped: dict[str, int]  # items ruled out before the pool, by reason
    cheapest: float  # lowest known price among items not excluded for other reasons

    @property
    def base(self) -> np.ndarray:
        """The set-independent part of each candidate's marginal gain, weighted."""
        return _signals(self.config, self.rel, self.comp, self.pref) - self.config.w_redundancy * self.dup_cart

    def initial_totals(self) -> np.ndarray:
        """Every candidate's marginal gain on the empty bundle (the same arithmetic as `gain`)."""
        c = self.config
        div = c.w_diversity * (1.0 + c.category_bonus * self.new_to_cart)
        return _signals(c, self.rel, self.comp, self.pref) + div - c.w_redundancy * self.dup_cart

    def price(self, pos: int) -> float:
        return float(self.catalog.prices[self.pool[pos]])

    def code(self, pos: int) -> int:
        return int(self.catalog.category_codes[self.pool[pos]])

    def gain(self, pos: int, picked: Sequence[int]) -> dict[str, float] | None:
        """The weighted breakdown of candidate `pos`'s marginal gain after `picked` (pool positions).

        None when it is a near-duplicate (cosine > exclude_threshold) of a picked item.
        """
        c = self.config
        sims = self.vectors[list(picked)] @ self.vectors[pos] if picked else np.zeros(0)
        if np.any(sims > c.exclude_threshold):
            return None
        # fsum is correctly rounded, so adding a non-negative term can never lower the sum:
        # the stale heap bounds of the lazy greedy stay true upper bounds in floating point too
        cos_sum = math.fsum(np.maximum(sims, 0.0).tolist())
        dup_sum = math.fsum(_ramp(sims, c).tolist())
        picked_codes = {self.code(q) for q in picked}
        new_cat = bool(self.new_to_cart[pos]) and self.code(pos) not in picked_codes
        rel = c.w_relevance * float(self.rel[pos])
        comp = c.w_complement * float(self.comp[pos])
        pref = c.w_preference * float(self.pref[pos])
        cat = c.w_diversity * (c.category_bonus * new_cat)
        div = c.w_diversity * (1.0 - cos_sum / max(c.k - 1, 1) + c.category_bonus * new_cat)
        red = c.w_redundancy * (float(self.dup_cart[pos]) + dup_sum)
        return {
            "relevance": rel,
            "complementarity": comp,
            "preference": pref,
            "diversity": div,
            "category": cat,
            "redundancy": red,
            "total": (rel + comp + pref) + div - red,
        }


def _signals(c: BundleConfig, rel: np.ndarray, comp: np.ndarray, pref: np.ndarray) -> np.ndarray:
    """The weighted signal terms of the gain, w_r·rel + w_c·comp + w_p·pref, summed in `gain`'s order
    (the lazy greedy's bounds rely on the same floating-point arithmetic everywhere)."""
    return c.w_relevance * rel + c.w_complement * comp + c.w_preference * pref


def cart_preference(model, cart: Sequence[int], scores: np.ndarray | None = None) -> np.ndarray | None:
    """The preference a purchase model (anything with `scores(queries)`, e.g. `recsys.model.hybrid.HybridModel`)
    gives every item for a cart: what serving, publishing and the evaluation pass to `compose_bundle`.
    None without a model (a text-only model's ranking is the cosine the relevance term already holds).
    `scores`: the cart's scores when the caller has them already."""
    if model is None:
        return None
    if scores is None:
        scores = model.scores([np.asarray(cart, dtype=np.int64)])[0]
    return preference_from_scores(scores, cart)


def preference_from_scores(scores: np.ndarray, cart: Sequence[int]) -> np.ndarray:
    """A purchase model's scores for a cart as bundle preferences: each item's score over the best score
    outside the cart, clipped to [0, 1] (cart items and items the model does not rank get 0)."""
    pref = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    pref[np.asarray(list(cart), dtype=np.int64)] = 0.0
    top = pref.max() if len(pref) else 0.0
    return np.clip(pref / top, 0.0, 1.0) if top > 0 else np.zeros_like(pref)


def _prepare(
    catalog: BundleCatalog,
    cart: Sequence[int],
    config: BundleConfig,
    exclude: Collection[int],
    pool_size: int,
    preference: np.ndarray | None = None,
    similarities: np.ndarray | None = None,
) -> _Request:
    """Validate the request, score every item's set-independent terms and keep the top pool."""
    n = catalog.n_items
    cart_arr = np.array(list(dict.fromkeys(int(c) for c in cart)), dtype=np.int64)
    if not len(cart_arr):
        raise ValueError("the cart is empty: a bundle completes at least one anchor item")
    if cart_arr.min() < 0 or cart_arr.max() >= n:
        raise ValueError(f"cart item indices must lie in [0, {n}), got {cart_arr.tolist()}")
    vec = catalog.vectors
    if similarities is None:
        # one pass over the catalog's vectors for the cart mean and every cart item: the scan is
        # memory-bound, and (m+1, d) @ (d, n) measured steadier than (n, d) @ (d, m+1) on OpenBLAS
        sims = cart_similarities(catalog, cart_arr)
    else:
        sims = np.asarray(similarities)
        if sims.shape != (len(cart_arr) + 1, n):
            raise ValueError(f"similarities must be [{len(cart_arr) + 1}, {n}] (cart_similarities of the deduplicated cart), got {sims.shape}")
    rel, max_cart_cos = sims[0], sims[1:].max(axis=0)
    comp = _complementarity(catalog, cart_arr, config.min_support)
    if preference is None:
        pref = np.zeros(n)
    else:
        pref = np.asarray(preference, dtype=np.float64)
        if pref.shape != (n,) or not np.all((pref >= 0) & (pref <= 1)):
            raise ValueError(f"preference must be {n} values in [0, 1] (see preference_from_scores), got shape {pref.shape}")

    # ruled out before scoring, each item counted under the first reason that applies
    ok = np.ones(n, dtype=bool)
    ok[cart_arr] = False
    dropped: dict[str, int] = {}
    excluded = np.zeros(n, dtype=bool)
    excluded[[e for e in exclude if 0 <= e < n]] = True
    rules = [("excluded", excluded), ("cart duplicate", max_cart_cos > config.exclude_threshold)]
    prices = catalog.prices
    if config.budget is not None:
        rules.append(("over budget", prices > config.budget + _PRICE_EPS))
        if not config.allow_unknown_price:
            rules.append(("unknown price", np.isnan(prices)))
    cheapest_mask = ok.copy()
    for name, mask in rules:
        hit = ok & mask
        dropped[name] = int(hit.sum())
        ok &= ~mask
        if name == "cart duplicate":
            cheapest_mask = ok.copy()
    known = cheapest_mask & ~np.isnan(prices)
    cheapest = float(prices[known].min()) if known.any() else math.nan

    cfg = config
    static = _signals(cfg, rel, comp, pref) - cfg.w_redundancy * _ramp(max_cart_cos, cfg)
    per_cat = None if cfg.max_per_category is None else cfg.pool_per_category
    cand = _top_pool(np.flatnonzero(ok), static, catalog.category_codes, pool_size, per_cat)
    cart_codes = set(catalog.category_codes[cart_arr].tolist())
    codes = catalog.category_codes[cand]
    return _Request(
        catalog=catalog,
        config=config,
        cart=cart_arr,
        pool=cand,
        rel=rel[cand],
        comp=comp[cand],
        pref=pref[cand],
        dup_cart=_ramp(max_cart_cos[cand], cfg),
        new_to_cart=(codes >= 0) & ~np.isin(codes, list(cart_codes)),
        vectors=vec[cand],
        dropped=dropped,
        cheapest=cheapest,
    )


def _top_pool(cand: np.ndarray, score: np.ndarray, codes: np.ndarray, size: int, per_category: int | None) -> np.ndarray:
    """The `size` best candidates by score (ties by index), at most `per_category` from one category.

    Works on a top block found by argpartition and widens it only when the quota left too few.
    """
    block = min(len(cand), size if per_category is None else 4 * size)
    while True:
        top = cand if block >= len(cand) else cand[np.argpartition(-score[cand], block - 1)[:block]]
        top = top[np.lexsort((top, -score[top]))]  # best first, ties by index: deterministic
        if per_category is None or not len(top):
            return top[:size]
        c = codes[top]
        order = np.argsort(c, kind="stable")  # groups by category, best first inside each group
        sc = c[order]
        starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
        rank = np.empty(len(top), dtype=np.int64)
        rank[order] = np.arange(len(top)) - np.repeat(starts, np.diff(np.r_[starts, len(top)]))
        kept = top[(c < 0) | (rank < per_category)]  # items without a category are not capped
        if len(kept) >= size or block >= len(cand):
            return kept[:size]
        block = min(len(cand), 4 * block)


class _Limits:
    """Budget and category-cap state of a growing bundle (both only tighten as it grows)."""

    def __init__(self, req: _Request) -> None:
        self.req = req
        self.spent = 0.0
        self.per_cat: dict[int, int] = {}

    def blocked(self, pos: int) -> str | None:
        """Why candidate `pos` cannot be added now ("budget", "category") or None."""
        cfg = self.req.config
        price = self.req.price(pos)
        if cfg.budget is not None and not math.isnan(price) and self.spent + price > cfg.budget + _PRICE_EPS:
            return "budget"
        code = self.req.code(pos)
        if cfg.max_per_category is not None and code >= 0 and self.per_cat.get(code, 0) >= cfg.max_per_category:
            return "category"
        return None

    def add(self, pos: int) -> None:
        price = self.req.price(pos)
        self.spent += 0.0 if math.isnan(price) else price
        code = self.req.code(pos)
        if code >= 0:
            self.per_cat[code] = self.per_cat.get(code, 0) + 1


def cart_similarities(catalog: BundleCatalog, cart: np.ndarray) -> np.ndarray:
    """[m + 1, n] cosines of the cart's mean vector (row 0) and of each of its m items to every catalog
    item: the relevance and near-duplicate terms of one request."""
    vec = catalog.vectors
    mean = vec[cart].mean(axis=0)
    norm = np.linalg.norm(mean)
    unit = mean / norm if norm > 1e-12 else np.zeros_like(mean)
    return np.vstack([unit, vec[cart]]) @ vec.T


def single_item_similarities(catalog: BundleCatalog, items: np.ndarray, block: int = 128) -> Iterator[np.ndarray]:
    """`cart_similarities` of each one-item cart in `items`, in order, from one matrix product per `block`
    items rather than one pass over the catalog per cart (publishing composes a bundle for every item)."""
    vec = catalog.vectors
    for lo in range(0, len(items), block):
        part = items[lo : lo + block]
        sims = vec[part] @ vec.T
        norms = np.linalg.norm(vec[part], axis=1)
        for row, norm in zip(sims, norms, strict=True):
            # the catalog's vectors are unit length or zero, so the mean's unit vector is the item's own
            yield np.vstack([row / norm if norm > 1e-12 else np.zeros_like(row), row])


def compose_bundle(
    catalog: BundleCatalog,
    cart: Sequence[int],
    config: BundleConfig = BundleConfig(),
    exclude: Collection[int] = frozenset(),
    preference: np.ndarray | None = None,
    similarities: np.ndarray | None = None,
) -> Bundle:
    """Compose a bundle for a cart with the lazy greedy (Minoux) over the top candidate pool.

    Each round pops the best stale upper bound off a max-heap and re-evaluates only that item;
    an item whose fresh gain is still on top is picked. Gains never grow as the bundle grows, so
    this picks exactly what the plain greedy would (ties go to the lower item index). Items that
    break the budget, the category cap or the near-duplicate rule are dropped for good: those
    constraints only tighten. Stops at k items or when the best gain is not positive.
    With a budget (and `cost_benefit_pass`) a second pass ranks by gain per unit of price, and the
    bundle with the higher objective is returned (`Bundle.method` says which).

    Args:
        catalog: the catalog.
        cart: item indices already in the cart (never picked); at least one.
        config: weights and constraints.
        exclude: item indices never to pick.
        preference: the purchase model's preference per catalog item for this cart, in [0, 1]
            (`preference_from_scores`); None leaves the term out.
        similarities: the cart's `cart_similarities`, when the caller computed many carts' at once
            (`single_item_similarities`); None computes them.
    """
    req = _prepare(catalog, cart, config, exclude, config.candidate_pool, preference, similarities)
    picked, breakdowns, evaluations = _lazy_greedy(req, per_cost=False)
    method = "lazy-greedy"
    if config.budget is not None and config.cost_benefit_pass:
        alt_picked, alt_breakdowns, alt_evals = _lazy_greedy(req, per_cost=True)
        evaluations += alt_evals
        if math.fsum(b["total"] for b in alt_breakdowns) > math.fsum(b["total"] for b in breakdowns):
            picked, breakdowns, method = alt_picked, alt_breakdowns, "lazy-greedy (gain per price)"
    return _assemble(req, picked, breakdowns, method, evaluations)


def _lazy_greedy(req: _Request, per_cost: bool) -> tuple[list[int], list[dict[str, float]], int]:
    """One lazy greedy pass; ranks by gain, or by gain per unit of price when `per_cost`.

    Returns (picked pool positions, their breakdowns, gain evaluations).
    """
    config = req.config
    # gain per price is as lazy as gain: the price is fixed, so a stale bound / price stays a bound.
    # Free or unknown-price items (allowed) get a tiny cost rather than a division by zero.
    prices = np.nan_to_num(req.catalog.prices[req.pool], nan=0.0)
    cost = np.maximum(prices, 1e-6 * max(config.budget or 0.0, 1.0)) if per_cost else np.ones(len(req.pool))
    totals = req.initial_totals()
    keys = totals / cost if per_cost else totals
    heap = [(-float(g), int(idx), pos) for pos, (g, idx) in enumerate(zip(keys, req.pool, strict=True))]
    heapq.heapify(heap)
    fresh_at = np.zeros(len(req.pool), dtype=np.int64)  # bundle size at which each bound was computed
    last: dict[int, dict[str, float]] = {}
    evaluations = len(req.pool)
    limits = _Limits(req)
    picked: list[int] = []
    breakdowns: list[dict[str, float]] = []
    while len(picked) < config.k and heap:
        neg, _, pos = heap[0]
        if limits.blocked(pos):
            heapq.heappop(heap)
            continue
        if fresh_at[pos] == len(picked):
            if -neg <= 0.0:
                break  # the best remaining gain is not positive: adding it would lower F
            heapq.heappop(heap)
            # re-evaluated at this size, or never (size 0, where the heap holds the exact gains)
            g = last[pos] if pos in last else req.gain(pos, picked)
            assert g is not None  # size 0: nothing to be a duplicate of
            breakdowns.append(g)
            picked.append(pos)
            limits.add(pos)
            continue
        heapq.heappop(heap)
        g = req.gain(pos, picked)
        evaluations += 1
        if g is None:
            continue  # a near-duplicate of a picked item: stays one as the bundle grows
        last[pos] = g
        fresh_at[pos] = len(picked)
        key = g["total"] / cost[pos] if per_cost else g["total"]
        heapq.heappush(heap, (-key, int(req.pool[pos]), pos))
    return picked, breakdowns, evaluations


def exact_bundle(
    catalog: BundleCatalog,
    cart: Sequence[int],
    config: BundleConfig = BundleConfig(),
    exclude: Collection[int] = frozenset(),
    pool: int = 12,
    preference: np.ndarray | None = None,
) -> Bundle:
    """The optimal bundle among the top-`pool` candidates: every feasible subset of size <= k.

    Same candidates (ranked as for the greedy), objective, constraints and breakdown as
    `compose_bundle` with candidate_pool=pool, so the two are directly comparable. Items are
    listed in the order the greedy would add them within the optimal set.
    """
    cfg = config
    req = _prepare(catalog, cart, cfg, exclude, pool, preference)
    p = len(req.pool)
    sizes = range(1, min(cfg.k, p) + 1)
    n_subsets = sum(math.comb(p, r) for r in sizes)
    if n_subsets > _MAX_EXACT_SUBSETS:
        raise ValueError(f"{n_subsets} subsets of {p} candidates: too many for exact_bundle (use a smaller pool or k)")
    gram = req.vectors @ req.vectors.T
    pair_pen = cfg.w_diversity * np.maximum(gram, 0.0) / max(cfg.k - 1, 1) + cfg.w_redundancy * _ramp(gram, cfg)
    too_close = gram > cfg.exclude_threshold
    unit = req.base + cfg.w_diversity
    prices = np.nan_to_num(req.catalog.prices[req.pool], nan=0.0)  # unknown prices only reach here when they count 0
    codes = req.catalog.category_codes[req.pool]
    new_code = np.where(req.new_to_cart, codes, -1)
    best_val, best_set = 0.0, ()
    for r in sizes:
        sub = np.array(list(itertools.combinations(range(p), r)), dtype=np.int64)  # [m, r]
        val = unit[sub].sum(axis=1)
        feasible = np.ones(len(sub), dtype=bool)
        if cfg.budget is not None:
            feasible &= prices[sub].sum(axis=1) <= cfg.budget + _PRICE_EPS
        for a, b in itertools.combinations(range(r), 2):
            val -= pair_pen[sub[:, a], sub[:, b]]
            feasible &= ~too_close[sub[:, a], sub[:, b]]
        sc = codes[sub]
        if cfg.max_per_category is not None:
            same = (sc[:, :, None] == sc[:, None, :]) & (sc[:, :, None] >= 0)
            feasible &= same.sum(axis=2).max(axis=1) <= cfg.max_per_category
        # distinct new categories: sort the row and count the first of each run
        nc = np.sort(new_code[sub], axis=1)
        first = np.ones_like(nc, dtype=bool)
        first[:, 1:] = nc[:, 1:] != nc[:, :-1]
        val += cfg.w_diversity * cfg.category_bonus * ((nc >= 0) & first).sum(axis=1)
        val = np.where(feasible, val, -np.inf)
        j = int(np.argmax(val))
        if val[j] > best_val + 1e-12:
            best_val, best_set = float(val[j]), tuple(sub[j].tolist())
    # list the optimal items in greedy order within the set, for a readable breakdown
    picked: list[int] = []
    breakdowns: list[dict[str, float]] = []
    rest = list(best_set)
    while rest:
        gains = [(req.gain(q, picked), q) for q in rest]
        g, q = max(gains, key=lambda t: (t[0]["total"], -int(req.pool[t[1]])))  # type: ignore[index]
        picked.append(q)
        breakdowns.append(g)  # type: ignore[arg-type]
        rest.remove(q)
    return _assemble(req, picked, breakdowns, "exact", n_subsets)


# --- output ------------------------------------------------------------------------------


def _assemble(req: _Request, picked: list[int], breakdowns: list[dict[str, float]], method: str, evaluations: int) -> Bundle:
    cat, cfg = req.catalog, req.config
    items: list[BundleItem] = []
    limits = _Limits(req)
    before: list[int] = []
    for pos, b in zip(picked, breakdowns, strict=True):
        i = int(req.pool[pos])
        left = None if cfg.budget is None else cfg.budget - limits.spent
        reasons = explain_item(
            cat, i, req.cart.tolist(), b, picked=before, min_support=cfg.min_support, budget_left=left, preference=float(req.pref[pos])
        )
        price = float(cat.prices[i])
        items.append(
            BundleItem(
                index=i,
                item_id=cat.item_ids[i],
                title=cat.titles[i],
                price=None if math.isnan(price) else price,
                category=cat.categories[i],
                breakdown=b,
                reasons=reasons,
            )
        )
        limits.add(pos)
        before.append(i)
    return Bundle(
        cart=req.cart.tolist(),
        items=items,
        total_score=math.fsum(b["total"] for b in breakdowns),
        total_price=limits.spent,
        constraints=_constraint_lines(req, items, limits),
        note=_shortfall_note(req, picked, limits),
        method=method,
        evaluations=evaluations,
    )


def _constraint_lines(req: _Request, items: list[BundleItem], limits: _Limits) -> list[str]:
    cfg = req.config
    lines = [f"size: {len(items)} of k={cfg.k}"]
    if cfg.budget is not None:
        line = f"budget {cfg.budget:.2f}: {limits.spent:.2f} used, {cfg.budget - limits.spent:.2f} left"
        unknown = sum(it.price is None for it in items)
        if unknown:
            line += f" ({unknown} item(s) without a price counted as 0)"
        lines.append(line)
    if cfg.max_per_category is not None:
        counts = {c: sum(it.category == c for it in items) for c in dict.fromkeys(it.category for it in items) if c is not None}
        used = ", ".join(f"{c} {n}/{cfg.max_per_category}" for c, n in counts.items()) or "none used"
        lines.append(f"max {cfg.max_per_category} per category: {used}")
    if req.dropped.get("excluded"):
        lines.append(f"excluded by request: {req.dropped['excluded']} item(s)")
    if req.dropped.get("cart duplicate"):
        lines.append(f"near-duplicates of the cart excluded (cosine > {cfg.exclude_threshold}): {req.dropped['cart duplicate']}")
    return lines


def _shortfall_note(req: _Request, picked: list[int], limits: _Limits) -> str | None:
    """Why the bundle has fewer than k items, from the final state of the search."""
    cfg = req.config
    if len(picked) >= cfg.k:
        return None
    head = f"{len(picked)} of {cfg.k} items" if picked else "no items"
    why: list[str] = []
    d = req.dropped
    if d.get("over budget"):
        if req.cheapest > cfg.budget + _PRICE_EPS:  # NaN (no known price) compares False
            why.append(f"the budget {cfg.budget:.2f} is below every price (cheapest {req.cheapest:.2f})")
        else:
            why.append(f"{d['over budget']} item(s) cost more than the budget {cfg.budget:.2f}")
    if d.get("unknown price"):
        why.append(f"{d['unknown price']} item(s) have no price and a budget is set")
    if d.get("excluded") and not len(req.pool):
        why.append(f"{d['excluded']} item(s) excluded by request")
    if d.get("cart duplicate") and not len(req.pool):
        why.append(f"{d['cart duplicate']} near-duplicate(s) of the cart")
    blocked = {"budget": 0, "category": 0, "duplicate": 0}
    best = -math.inf
    n_open = 0
    for pos in range(len(req.pool)):
        if pos in picked:
            continue
        reason = limits.blocked(pos)
        g = None if reason else req.gain(pos, picked)
        if reason or g is None:
            blocked[reason or "duplicate"] += 1
            continue
        n_open += 1
        best = max(best, g["total"])
    if blocked["budget"]:
        why.append(f"{blocked['budget']} candidate(s) exceed the remaining budget {cfg.budget - limits.spent:.2f}")
    if blocked["category"]:
        why.append(f"{blocked['category']} candidate(s) are in categories at the cap of {cfg.max_per_category}")
    if blocked["duplicate"]:
        why.append(f"{blocked['duplicate']} candidate(s) are near-duplicates of bundle items")
    if n_open:
        why.append(f"{n_open} feasible candidate(s) add no value (best marginal gain {best:.3f})")
    if not len(req.pool) and not why:
        why.append("the catalog has no other items")
    elif len(req.pool) == len(picked) and not why:
        why.append(f"the candidate pool held only {len(req.pool)} item(s)")
    return f"{head}: " + "; ".join(why)


def explain_item(
    catalog: BundleCatalog,
    i: int,
    cart: Sequence[int],
    breakdown: Mapping[str, float],
    *,
    picked: Sequence[int] = (),
    min_support: int = 2,
    budget_left: float | None = None,
    preference: float | None = None,
) -> list[str]:
    """Reasons for recommending item i next to a cart, each backed by the signal that scored it.

    A reason is given only when its term in `breakdown` is positive, with the evidence read from
    the catalog: the cart item that bought-together counts point to (customers and lift), the most
    similar cart item and its cosine, the category that is new (or shared, when a caller's score
    rewards a shared category). Signal reasons come strongest first; then the cold-start, budget
    and substitute notes. Reusable for plain recommendations: pass {"relevance": score}.

    Args:
        catalog: the catalog.
        i: the recommended item.
        cart: the cart's item indices.
        breakdown: weighted score terms (keys as in `BundleItem.breakdown`; missing keys count 0).
        picked: bundle items chosen before i (for the substitute note).
        min_support: the co-purchase count from which complementarity counted.
        budget_left: the budget left before i was added, when a budget is set.
        preference: the purchase model's preference for i (`preference_from_scores`), quoted when
            the breakdown's "preference" term is positive.
    """
    _check_support(catalog, min_support)
    cart = [int(c) for c in cart]
    scored: list[tuple[float, str]] = []
    comp = breakdown.get("complementarity", 0.0)
    if comp > 0 and cart:
        evidence = [(_pair_evidence(catalog, c, i, min_support), c) for c in cart]
        (n_both, lift, score), c = max(evidence, key=lambda t: t[0][2])
        if score > 0:
            scored.append((comp, f"bought together with {catalog.titles[c]} by {n_both} customers (lift {lift:.1f})"))
    pref_term = breakdown.get("preference", 0.0)
    if pref_term > 0 and preference:
        scored.append((pref_term, f"often bought by shoppers with this cart (purchase model: {preference:.0%} of its top score)"))
    rel = breakdown.get("relevance", 0.0)
    if rel > 0 and cart:
        sims = catalog.vectors[cart] @ catalog.vectors[i]
        j = int(np.argmax(sims))
        if sims[j] >= REASON_MIN_SIMILARITY:
            scored.append((rel, f"close in meaning to {catalog.titles[cart[j]]} (similarity {sims[j]:.2f})"))
    cat_term = breakdown.get("category", 0.0)
    cat = catalog.categories[i]
    if cat_term > 0 and cat is not None:
        shared = [c for c in cart if catalog.categories[c] == cat]
        text = f"same category as {catalog.titles[shared[0]]}" if shared else f"adds a new category: {cat}"
        scored.append((cat_term, text))
    variety = breakdown.get("diversity", 0.0) - cat_term
    if not scored and variety > 0:
        # picked for the variety it adds alone: say so, with how unlike the rest it is
        others = [*cart, *[int(p) for p in picked]]
        closest = float(np.max(catalog.vectors[others] @ catalog.vectors[i])) if others else 0.0
        scored.append((variety, f"adds variety: unlike the rest of the basket (closest similarity {closest:.2f})"))
    reasons = [text for _, text in sorted(scored, key=lambda t: -t[0])]
    if catalog.is_new[i]:
        reasons.append(NEW_ITEM_REASON)
    if budget_left is not None:
        price = float(catalog.prices[i])
        reasons.append(
            "price unknown: not counted against the budget"
            if math.isnan(price)
            else f"fits the budget: {price:.2f} of the {budget_left:.2f} left"
        )
    if breakdown.get("redundancy", 0.0) > 0:
        others = [*cart, *[int(p) for p in picked]]
        sims = catalog.vectors[others] @ catalog.vectors[i]
        j = int(np.argmax(sims))
        reasons.append(f"scored lower as a possible substitute for {catalog.titles[others[j]]} (similarity {sims[j]:.2f})")
    return reasons


def bundle_catalog(split: Split, catalog: pd.DataFrame, vectors: np.ndarray, min_count: int = BundleConfig.min_support) -> BundleCatalog:
    """What bundles and reasons read: item fields plus co-purchase statistics of the training part only,
    pruned below the support bundles are served with (`BundleConfig.min_support`: nothing served reads less)."""
    from recsys.data.splits import TRAIN

    titles = catalog[TITLE].fillna(catalog[ITEM_ID]).astype(str).tolist()
    index = {item: i for i, item in enumerate(catalog[ITEM_ID])}
    train = split.part(TRAIN)
    train = train[train[ITEM_ID].isin(index)]
    return BundleCatalog.build(
        catalog[ITEM_ID].tolist(),
        titles,
        vectors,
        [top_category(c) for c in catalog[CATEGORY]],
        catalog[PRICE].to_numpy(dtype=np.float64, na_value=np.nan),
        train[USER_ID].to_numpy(),
        train[ITEM_ID].map(index).to_numpy(),
        min_count=min_count,
    )
