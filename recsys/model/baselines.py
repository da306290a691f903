"""Collaborative baselines scored on the same queries as the model: item-kNN co-occurrence and EASE.

Both are fitted on the training interactions only; items without training history get all-zero
rows and columns, which is exactly why they have a cold-start hole.

An honest comparison tunes every baseline on validation on its own (`tune_ease`, `tune_itemknn`),
over grids that are extended until the chosen value is bracketed (recsys.model.tuning); the returned
record says what was chosen and whether an edge was still hit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data import schema as S
from recsys.data.splits import TRAIN, Split, train_popularity
from recsys.model.tuning import Grid, bracketed_search, coordinate_search

if TYPE_CHECKING:
    from recsys.evaluation.evaluate import Scorer

WeightsScore = Callable[[np.ndarray], float]  # item-item weights [n, n] -> validation score (higher is better)

# EASE l2 on its own (no text term): a log grid 1 .. 10^4, extended down to 0.1 / up to 10^6 when the
# best value is at an edge. Both bounds are search limits, not natural ones: hitting one is an edge hit.
EASE_L2_GRID = Grid(values=(1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0), lower=0.1, upper=1e6, log=True)


@dataclass(frozen=True)
class ItemKNNTuning:
    """Grids of the item-kNN baseline. The neighbourhood size runs from 1 to "all" (n_items - 1), both
    natural bounds; shrinkage from 0 (natural: no shrinkage) to `shrink_upper` (a search limit)."""

    neighbours: tuple[int, ...] = (10, 20, 50, 100, 200, 500)
    shrink: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0)
    shrink_upper: float = 1e4
    start_shrink: float = 0.0  # shrinkage while the neighbourhood size is searched first
    max_rounds: int = 2

    def grids(self, n_items: int) -> dict[str, Grid]:
        """The two grids for a catalog of `n_items` (neighbourhood sizes above n_items - 1 mean "all")."""
        top = max(1, n_items - 1)
        sizes = tuple(sorted({min(max(1, int(k)), top) for k in self.neighbours}))
        # a catalog smaller than the grid collapses it to one size: halve from there if it must extend
        step = None if len(sizes) > 1 else 2.0
        return {
            "neighbours": Grid(values=sizes, lower=1, upper=top, log=True, integer=True, natural_lower=True, natural_upper=True, step=step),
            "shrink": Grid(values=self.shrink, lower=0.0, upper=self.shrink_upper, log=True, natural_lower=True),
        }


def interaction_matrix(train_pairs: pd.DataFrame, item_ids: Sequence[str]) -> sp.csr_matrix:
    """Binary user x item matrix of the training pairs (columns in `item_ids` order)."""
    index = {item: i for i, item in enumerate(item_ids)}
    known = train_pairs[train_pairs[S.ITEM_ID].isin(index)]
    users = pd.factorize(known[S.USER_ID])[0]
    cols = known[S.ITEM_ID].map(index).to_numpy()
    n_users = int(users.max()) + 1 if len(users) else 0
    x = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (users, cols)), shape=(n_users, len(item_ids)))
    x.data[:] = 1.0
    return x


def ease_weights(x: sp.csr_matrix, l2: float = 500.0) -> np.ndarray:
    """EASE (Steck 2019): the closed-form item-item weights B = I - P / diag(P), P = (X'X + l2 I)^-1, diag(B) = 0."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    b = np.linalg.inv(gram)
    del gram  # at 20k items every dense float64 copy is 3.2 GB: work in place from here
    b /= -np.diag(b).copy()[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


def tune_ease(x: sp.csr_matrix, score_fn: WeightsScore, grid: Grid = EASE_L2_GRID) -> tuple[np.ndarray, dict[str, Any]]:
    """EASE l2 chosen on validation on its own (no text term), bracketed (see recsys.model.tuning).

    Returns the weights at the chosen l2 and the record (`SearchResult.to_record`): chosen {"l2"},
    score, edge_hit {"l2"}, converged, rounds, tried {"l2_<v>": score}, searches {"l2": ...}.
    Holds at most two weight matrices: the best so far and the one being scored.
    """
    kept: dict[str, Any] = {"l2": None, "score": -np.inf, "weights": None}

    def score(l2: float) -> float:
        weights = ease_weights(x, l2)
        s = float(score_fn(weights))
        # the same rule as the search: strictly better wins, ties go to the smaller l2, NaN never wins
        if kept["l2"] is None or s > kept["score"] or (s == kept["score"] and l2 < kept["l2"]):
            kept.update(l2=l2, score=-np.inf if np.isnan(s) else s, weights=weights)
        return s

    result = bracketed_search(score, grid, "l2")
    weights = kept["weights"] if kept["l2"] == result.chosen else ease_weights(x, result.chosen)
    return weights, result.to_record()


def itemknn_weights(x: sp.csr_matrix, neighbours: int | None = None, shrink: float = 0.0) -> np.ndarray:
    """Item-kNN weights: co(i, j) / (sqrt(count(i) count(j)) + shrink), diagonal 0, and row i keeps
    only its `neighbours` largest weights (None or 0 = all; ties at the cut are all kept).

    Rows are the query side (`item_item_scores` is q @ W): each basket item votes for its own
    nearest neighbours. Shrinkage damps similarities resting on few co-occurrences.
    """
    return _itemknn_from_gram(x.T @ x, neighbours, shrink)


def cooccurrence_cosine(x: sp.csr_matrix) -> np.ndarray:
    """Item-kNN similarity: co-occurrence count(i, j) / sqrt(count(i) count(j)), diagonal 0
    (`itemknn_weights` with every neighbour and no shrinkage)."""
    return itemknn_weights(x)


def _itemknn_from_gram(gram: sp.spmatrix, neighbours: int | None, shrink: float, block: int = 2048) -> np.ndarray:
    """`itemknn_weights` from the sparse Gram matrix X'X, in row blocks so that only one dense n x n
    matrix (the result) is ever held."""
    if neighbours is not None and neighbours < 0:
        raise ValueError(f"neighbours must be >= 0 (0 or None = all), got {neighbours}")
    if shrink < 0:
        raise ValueError(f"shrink must be >= 0, got {shrink}")
    co = np.asarray(gram.toarray(), dtype=np.float32)
    n = co.shape[0]
    root = np.sqrt(np.diag(co).astype(np.float64))
    # co(i, j) = 0 wherever count(i) or count(j) is 0, so a 0 instead of 1/0 keeps those entries 0
    inv_root = np.divide(1.0, root, out=np.zeros_like(root), where=root > 0).astype(np.float32)
    root = root.astype(np.float32)
    np.fill_diagonal(co, 0.0)
    prune = bool(neighbours) and neighbours < n - 1  # the diagonal is 0: n - 1 neighbours keep every item
    for start in range(0, n, block):
        rows = co[start : start + block]  # a view: edited in place
        if shrink:  # the denominator is >= shrink > 0 everywhere
            denom = np.outer(root[start : start + block], root)
            denom += shrink
            rows /= denom
        else:  # two broadcast products, no n-wide temporary
            rows *= inv_root[start : start + block, None]
            rows *= inv_root[None, :]
        if prune:
            cut = np.partition(rows, n - neighbours, axis=1)[:, n - neighbours]  # each row's n-th largest
            rows[rows < cut[:, None]] = 0.0
    return co


def tune_itemknn(x: sp.csr_matrix, score_fn: WeightsScore, config: ItemKNNTuning = ItemKNNTuning()) -> tuple[np.ndarray, dict[str, Any]]:
    """Item-kNN neighbourhood size and shrinkage chosen on validation, coordinate-wise and bracketed
    (the size first, at `config.start_shrink`).

    Returns the weights at the chosen values and the record (`CoordinateResult.to_record`): chosen
    {"neighbours": int (n_items - 1 = all), "shrink"}, score, edge_hit per parameter, converged,
    rounds, tried {"neighbours_<k>.shrink_<s>": score}, searches.
    """
    gram = (x.T @ x).tocsr()  # sparse and reused: each evaluation only densifies it once
    grids = config.grids(x.shape[1])
    result = coordinate_search(
        lambda p: float(score_fn(_itemknn_from_gram(gram, int(p["neighbours"]), float(p["shrink"])))),
        grids,
        start={"neighbours": grids["neighbours"].values[-1], "shrink": config.start_shrink},
        max_rounds=config.max_rounds,
    )
    weights = _itemknn_from_gram(gram, int(result.chosen["neighbours"]), float(result.chosen["shrink"]))
    return weights, result.to_record()


# --- implicit ALS: the scalable collaborative baseline ---------------------------------------------------

@dataclass(frozen=True)
class ALSTuning:
    """Grids of the ALS baseline (Hu, Koren & Volinsky 2008, `implicit`'s CPU solver): factors, the L2
    regularisation and the confidence weight alpha of an observed interaction. All bounds are search
    limits, except factors' lower bound 1."""

    factors: tuple[int, ...] = (32, 64, 128)
    regularization: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    alpha: tuple[float, ...] = (0.3, 1.0, 3.0)
    iterations: int = 15
    seed: int = 42
    max_rounds: int = 2

    def grids(self) -> dict[str, Grid]:
        return {
            "factors": Grid(values=self.factors, lower=1, upper=1024, log=True, integer=True, natural_lower=True),
            "regularization": Grid(values=self.regularization, lower=1e-4, upper=1e5, log=True),
            "alpha": Grid(values=self.alpha, lower=1e-3, upper=1e3, log=True),
        }


def als_item_factors(x: sp.csr_matrix, factors: int, regularization: float, alpha: float, iterations: int = 15, seed: int = 42) -> np.ndarray:
    """Item factors [n_items, factors] of implicit ALS on the binary training matrix (confidence 1 + alpha)."""
    import implicit
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit parallelises itself; nested BLAS threads only slow it down
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=int(factors), regularization=float(regularization), alpha=float(alpha), iterations=iterations, random_state=seed, calculate_training_loss=False
        )
        model.fit(x.astype(np.float32), show_progress=False)
    return np.asarray(model.item_factors, dtype=np.float64)


def als_scores(
    item_factors: np.ndarray, regularization: float, alpha: float, queries: Sequence[np.ndarray], weights: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """Scores of every item for baskets folded in as new users: the least-squares user vector ALS itself
    would compute for that basket, u = (Y'Y + reg I + Y_q' (C - I) Y_q)^-1 Y_q' C 1 with confidences
    C = 1 + alpha w (w = 1 per basket item unless `weights`, one array per query, says otherwise), then u Y'."""
    y = item_factors
    base = y.T @ y + regularization * np.eye(y.shape[1])
    users = np.zeros((len(queries), y.shape[1]))
    for j, q in enumerate(queries):
        if len(q):
            yq = y[np.asarray(q, dtype=np.int64)]
            c = 1.0 + alpha * (np.ones(len(q)) if weights is None else np.asarray(weights[j], dtype=np.float64))
            users[j] = np.linalg.solve(base + (yq.T * (c - 1.0)) @ yq, yq.T @ c)
    return (users @ y.T).astype(np.float32)


def _als_scorer(x: sp.csr_matrix, chosen: dict[str, Any]) -> "Scorer":
    reg, alpha = float(chosen.get("regularization", 1.0)), float(chosen.get("alpha", 1.0))
    factors = als_item_factors(x, int(chosen.get("factors", 64)), reg, alpha)
    return lambda queries: als_scores(factors, reg, alpha, queries)


def tune_als(x: sp.csr_matrix, score_fn: ScorerScore, config: ALSTuning = ALSTuning()) -> dict[str, Any]:
    """ALS factors, regularisation and alpha chosen on validation, coordinate-wise and bracketed (the
    record as `CoordinateResult.to_record`)."""
    result = coordinate_search(
        lambda p: float(score_fn(_als_scorer(x, p))),
        config.grids(),
        start={"factors": 64, "regularization": 1.0, "alpha": 1.0},
        max_rounds=config.max_rounds,
    )
    return result.to_record()


def query_matrix(queries: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Binary query x item matrix from lists of item indices."""
    rows = np.concatenate([np.full(len(q), r) for r, q in enumerate(queries)]) if queries else np.zeros(0, int)
    cols = np.concatenate(queries) if queries else np.zeros(0, int)
    q = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(queries), n_items))
    q.data[:] = 1.0  # an item named twice in a request (item_id + cart) still counts once
    return q


def item_item_scores(weights: np.ndarray, queries: Sequence[np.ndarray]) -> np.ndarray:
    """Scores of every item for each query under an item-item model: q @ W (dense [n_queries, n_items])."""
    return np.asarray(query_matrix(queries, weights.shape[0]) @ weights)


def baseline_inputs(split: Split, catalog: pd.DataFrame) -> tuple[list[str], sp.csr_matrix, np.ndarray, np.ndarray]:
    """What the baselines and the hybrid are fitted on: the catalog's item ids, the training interaction
    matrix (users x items), which items are cold (no training interaction) and the training popularity."""
    item_ids = catalog[S.ITEM_ID].tolist()
    train = split.part(TRAIN)
    x = interaction_matrix(train, item_ids)
    is_cold = np.asarray(x.sum(axis=0)).ravel() == 0  # no training interaction (the cold split, and any item never bought)
    popularity = train_popularity(split, item_ids)
    return item_ids, x, is_cold, popularity


# ---------------------------------------------------------------------------------------------
# the registry: every baseline the candidate is compared with (evaluation, the gate, the DAG form, the CLI)


@dataclass(frozen=True)
class BaselineData:
    """What a baseline may be fitted from: the catalog's item ids (in order), the training interactions
    (users x items), the training popularity and the frozen encoder's item vectors. `head` (the scalable
    path, `recsys.model.hybrid.head_items`): the dense item-item baselines are fitted on these items only,
    the same head the candidate's weights cover; items outside it are never recommended by them."""

    item_ids: list[str]
    x: sp.csr_matrix
    popularity: np.ndarray
    frozen: np.ndarray
    head: np.ndarray | None = None
    # data with time: days -> each item's distinct buyers in the days before the moment the stage being
    # scored starts (`recsys.model.trend.recent_buyers`); None without time
    recent_buyers: Callable[[float], np.ndarray] | None = None

    @property
    def x_head(self) -> sp.csr_matrix:
        return self.x if self.head is None else self.x[:, self.head].tocsr()


ScorerScore = Callable[["Scorer"], float]  # a scorer -> its validation score (the gate's primary metric at k)


@dataclass(frozen=True)
class Baseline:
    """One baseline. `fit` builds its scorer from the values chosen on validation; `tune` (None: nothing to
    tune) chooses them on its own, as carefully as the candidate is tuned, and returns the search's record
    (`chosen`, `tried`, `edge_hit`, ... as `recsys.model.tuning.SearchResult.to_record`)."""

    name: str
    description: str
    fit: Callable[[BaselineData, dict[str, Any]], "Scorer"]
    tune: Callable[[BaselineData, ScorerScore], dict[str, Any]] | None = None
    # compared only on the scalable path (catalogs above `max_dense_items`), where the dense EASE cannot
    # hold the whole catalog; below it exact EASE over every item is the stronger collaborative baseline
    large_catalogs_only: bool = False
    # needs the events' times (`BaselineData.recent_buyers`): data without time has no such baseline
    needs_time: bool = False

    def applies(self, scalable: bool, timed: bool = False) -> bool:
        """Whether the baseline is fitted and scored in a run (on the scalable path or not; with time or not)."""
        return (scalable or not self.large_catalogs_only) and (timed or not self.needs_time)


def _item_item(weights: np.ndarray, head: np.ndarray | None = None, n_items: int | None = None) -> "Scorer":
    if head is None:
        return lambda queries: item_item_scores(weights, queries)
    position = np.full(int(n_items), -1, dtype=np.int64)
    position[head] = np.arange(len(head))

    def scores(queries: Sequence[np.ndarray]) -> np.ndarray:
        # only the head has weights: basket items outside it carry no vote, items outside it are never ranked
        local = [position[q][position[q] >= 0] for q in queries]
        out = np.full((len(queries), int(n_items)), -np.inf, dtype=np.float32)
        out[:, head] = item_item_scores(weights, local)
        return out

    return scores


def _tune_weights(search: Callable[[sp.csr_matrix, WeightsScore], tuple[np.ndarray, dict[str, Any]]]) -> Callable[[BaselineData, ScorerScore], dict[str, Any]]:
    """An item-item search (weights -> score) as a registry `tune`: each weight matrix is scored as a scorer
    (over the head on the scalable path)."""
    return lambda data, score: search(data.x_head, lambda weights: score(_item_item(weights, data.head, data.x.shape[1])))[1]


def _popularity(data: BaselineData, chosen: dict[str, Any]) -> "Scorer":
    from recsys.evaluation.evaluate import popularity_scorer

    return popularity_scorer(data.popularity)


TRENDING_DAYS = Grid(values=(7.0, 14.0, 28.0, 56.0), lower=1.0, upper=365.0, log=True)


def _trending(data: BaselineData, chosen: dict[str, Any]) -> "Scorer":
    from recsys.evaluation.evaluate import popularity_scorer

    if data.recent_buyers is None:
        raise ValueError("the trending baseline needs the events' times")
    # the last days' buyers; among items with as many, the training window's best sellers first (the second
    # term stays below 1, so it never overturns a difference in buyers)
    return popularity_scorer(data.recent_buyers(float(chosen["days"])) + data.popularity / (float(data.popularity.max(initial=0)) + 1.0))


def _tune_trending(data: BaselineData, score: ScorerScore) -> dict[str, Any]:
    return bracketed_search(lambda days: score(_trending(data, {"days": days})), TRENDING_DAYS, "days").to_record()


def _frozen(data: BaselineData, chosen: dict[str, Any]) -> "Scorer":
    from recsys.evaluation.evaluate import vector_scorer

    return vector_scorer(data.frozen)


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("popularity", "the most bought items in training, for everyone", _popularity),
        Baseline("trending", "the items the most customers bought in the last days before the moment scored, window tuned (data with time)", _trending, _tune_trending, needs_time=True),
        Baseline(
            "itemknn",
            "item-kNN on co-occurrence cosine, neighbourhood size and shrinkage tuned (on the head on the scalable path)",
            lambda d, c: _item_item(itemknn_weights(d.x_head, c.get("neighbours"), float(c.get("shrink", 0.0))), d.head, d.x.shape[1]),
            _tune_weights(tune_itemknn),
        ),
        Baseline(
            "ease",
            "EASE (closed-form linear autoencoder), l2 tuned (on the head on the scalable path)",
            lambda d, c: _item_item(ease_weights(d.x_head, float(c["l2"])), d.head, d.x.shape[1]),
            _tune_weights(tune_ease),
        ),
        Baseline("frozen", "the pretrained encoder's text vectors, not fine-tuned (cosine)", _frozen),
        Baseline(
            "als",
            "implicit ALS (matrix factorisation) over the whole catalog, factors, regularisation and confidence tuned",
            lambda d, c: _als_scorer(d.x, c),
            lambda d, score: tune_als(d.x, score),
            large_catalogs_only=True,
        ),
    )
}


def applicable(scalable: bool, timed: bool) -> tuple[str, ...]:
    """The registered baselines a run fits and scores (`Baseline.applies`), in registry order: what the gate may
    ask a first model to beat. A baseline outside it is not applicable to the run, not missing."""
    return tuple(name for name, b in BASELINES.items() if b.applies(scalable, timed))
