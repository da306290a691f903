"""The recommender: EASE with the item text as side information, plus cold-start propagation.

Multi-signal fusion in closed form. EASE (Steck 2019) learns item-item weights B from the Gram
matrix X'X of the user x item matrix. We stack the item text vectors under X as extra "users"
(Jeunen et al. 2020, closed-form models with side information), so the Gram matrix becomes

    G = X'X + text_weight * V V' + l2 * I,    B = I - P / diag(P),  P = G^-1,  diag(B) = 0

and every item - warm or cold - gets weights to the items it co-occurs with AND to those whose
text means the same. A basket q scores every item as q B (+ a small direct text-similarity term).

Items without any training interaction (cold) only have the text part of G, so their scores sit on
a smaller scale than warm items'. They are put back on the warm scale by propagation: a cold item
scores like its `cold_neighbours` nearest warm items in text space (softmax of similarity /
`cold_temperature`), times `cold_weight`. The weights are tuned on a validation fold where some
warm items are made cold on purpose, because the real validation split has no cold targets.

Large catalogs (the scalable path). The dense model keeps an n x n weight matrix and inverts an n x n
Gram matrix: memory n^2 and time n^3, which stops it at a few ten thousand items. Past
`max_dense_items` the pipeline inverts the Gram matrix of the catalog's *head* only - the `head_items`
items bought most in training - and every other item j (the long tail and new items) gets the column it
would have if it alone were added to the head (block inversion, Schur complement):

    B[head, j] = P_h g_j,   g_j = X_h' x_j + text_weight V_h v_j   (its Gram column against the head)

so a basket q scores it as u . g_j with u = q_h P_h = (q_h - q_h B_h) * diag(P_h): a co-occurrence part
(u X_h') x_j and a text part text_weight (u V_h) . v_j, computed per query from the training matrix and
the vectors - O(users + n d), no n x n matrix anywhere. What it leaves out is the tail items' weights
among themselves (they never enter a basket's score from the tail side) and the feature block
(`feature_weight` F F') of their columns. With a head covering the whole
catalog it is exactly the dense model. New items are propagated from their text neighbours (FAISS,
`recsys.model.ann`) as in the dense model.

Tuning follows the same rule as the baselines (recsys.model.tuning): l2, text_weight and feature_weight
are searched coordinate-wise over grids extended until the chosen value is bracketed, and the record
says for every tuned parameter whether an edge was still hit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.model.baselines import query_matrix
from recsys.model.trend import add_trend, search_trend
from recsys.model.tuning import Grid, coordinate_search, format_value, judged_result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HybridConfig:
    l2: float = 200.0  # EASE ridge; larger = smoother item-item weights
    text_weight: float = 200.0  # weight of V V' in the Gram matrix (0 = plain EASE)
    text_score_weight: float = 0.1  # direct text-similarity term added to the scores
    cold_neighbours: int = 5
    cold_temperature: float = 0.1
    cold_weight: float = 1.0
    # l2, text_weight and feature_weight grids are starting grids: a best value at an edge extends the
    # grid in its edge step (geometric) up to the bounds below (recsys.model.tuning.bracketed_search)
    l2_grid: tuple[float, ...] = (100.0, 300.0, 1000.0)
    text_weight_grid: tuple[float, ...] = (0.0, 50.0, 200.0, 800.0)
    feature_weight: float = 0.0  # weight of F F' (standardised numeric item features: price, rating)
    feature_weight_grid: tuple[float, ...] = (0.0, 20.0, 100.0)
    cold_weight_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
    # new items are the product's promise: take the largest cold_weight whose pseudo-cold validation
    # score is within this relative tolerance of the best one
    cold_tolerance: float = 0.01
    pseudo_cold_share: float = 0.1  # warm items made cold to tune cold_weight
    seed: int = 42
    # hard bounds of the extended grids. A weight's lower bound 0 (the term switched off) is natural:
    # a best value of 0 there is a real answer, not an edge hit. Every other bound is a search limit.
    l2_bounds: tuple[float, float] = (0.1, 1e6)
    text_weight_bounds: tuple[float, float] = (0.0, 1e5)
    feature_weight_bounds: tuple[float, float] = (0.0, 1e5)
    # coordinate rounds over (l2, text_weight[, feature_weight]); each evaluation inverts an n x n matrix
    max_rounds: int = 2
    # the scalable path: the Gram matrix of this many most-bought items is inverted (0 = every item: the
    # dense model); every other item's column is folded in against it (see the module doc)
    head_items: int = 0
    # what is selling now (`recsys.model.trend`): the prior of each item's distinct buyers in the `trend_days`
    # before the moment of the request, added with `trend_weight` (0 = off; data without time keeps it off).
    # Tuned on validation after the rest, over bracketed grids (weight 0 is a natural bound)
    trend_days: float = 28.0
    trend_weight: float = 0.0
    trend_days_grid: tuple[float, ...] = (7.0, 14.0, 28.0, 56.0)
    trend_weight_grid: tuple[float, ...] = (0.0, 0.2, 0.4, 0.8, 1.6)
    trend_days_bounds: tuple[float, float] = (1.0, 365.0)
    trend_weight_bounds: tuple[float, float] = (0.0, 100.0)

    @classmethod
    def from_dict(cls, data: dict) -> "HybridConfig":
        """Rebuild from its JSON form (lists back to tuples). Older models lack the newer fields (their
        defaults apply); fields this version does not know are dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            log.warning("HybridConfig: ignoring unknown fields %s", unknown)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})

    def search_grids(self, with_features: bool) -> dict[str, Grid]:
        """The bracketed grids of the validation search, in search order."""

        def grid(values: tuple[float, ...], bounds: tuple[float, float]) -> Grid:
            return Grid(values=values, lower=bounds[0], upper=bounds[1], log=True, natural_lower=bounds[0] == 0.0)

        grids = {"l2": grid(self.l2_grid, self.l2_bounds), "text_weight": grid(self.text_weight_grid, self.text_weight_bounds)}
        if with_features:
            grids["feature_weight"] = grid(self.feature_weight_grid, self.feature_weight_bounds)
        return grids

    def trend_grids(self) -> dict[str, Grid]:
        """The trend prior's bracketed grids, weight first (at the starting window), then the window."""
        return {
            "trend_weight": Grid(values=self.trend_weight_grid, lower=self.trend_weight_bounds[0], upper=self.trend_weight_bounds[1], log=True, natural_lower=self.trend_weight_bounds[0] == 0.0),
            "trend_days": Grid(values=self.trend_days_grid, lower=self.trend_days_bounds[0], upper=self.trend_days_bounds[1], log=True),
        }

    def cold_grid(self) -> Grid:
        """cold_weight keeps its fixed grid (the tolerance rule picks from it); edges are judged the same
        way, 0 (no propagation) being a natural lower bound."""
        values = tuple(sorted(self.cold_weight_grid))
        return Grid(values=values, lower=values[0], upper=values[-1], log=False, natural_lower=values[0] == 0.0)


@dataclass
class HybridModel:
    """Fitted weights; scores any basket over the whole catalog.

    `head` None: `weights` covers every item (the dense model). Otherwise `weights` is B over the items
    `head` lists (sorted catalog indices), `diag_p` the diagonal of their inverse Gram matrix and `x` the
    training matrix: every other item is folded in per query (module doc). `neighbours` /
    `neighbour_weights` (one row per cold item) may be given when computed at fit time."""

    weights: np.ndarray  # [h, h] item-item weights B over the head (h = n for the dense model)
    vectors: np.ndarray  # [n, d] L2-normalised item text vectors
    is_cold: np.ndarray  # [n] bool: no training interaction
    config: HybridConfig
    head: np.ndarray | None = None  # [h] sorted catalog indices the weights cover; None = every item
    diag_p: np.ndarray | None = None  # [h] diagonal of the head's inverse Gram matrix (scalable path)
    x: sp.csr_matrix | None = None  # [users, n] binary training matrix (scalable path)
    neighbours: np.ndarray | None = None  # [n_cold, m] catalog indices of warm items
    neighbour_weights: np.ndarray | None = None  # [n_cold, m] softmax weights
    # [n] the trend prior (`recsys.model.trend.trend_prior`) at the moment the model answers for; used
    # when config.trend_weight > 0. Set per evaluation stage, and at packaging for serving
    trend: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.head is not None:
            if self.diag_p is None or self.x is None:
                raise ValueError("a head model needs diag_p and the training matrix x to fold the other items in")
            outside = np.ones(len(self.is_cold), dtype=bool)
            outside[self.head] = False
            self._outside = np.flatnonzero(outside)
            x = sp.csr_matrix(self.x, dtype=np.float32)
            self._x_head = x[:, self.head].tocsr()
            self._x_outside_t = x[:, self._outside].T.tocsr()  # [n_outside, users]
            self._v_head = np.ascontiguousarray(self.vectors[self.head])
            self._v_outside = np.ascontiguousarray(self.vectors[self._outside])
        if self.neighbours is None or self.neighbour_weights is None:
            self.neighbours, self.neighbour_weights = cold_neighbours(self.vectors, self.is_cold, self.config)
        self._pair_cache: tuple[tuple[int, ...], np.ndarray] | None = None

    @property
    def n_items(self) -> int:
        return len(self.is_cold)

    def _behaviour_scores(self, q: sp.csr_matrix | np.ndarray) -> np.ndarray:
        """q B over the catalog: the head's weights, and the folded-in columns of every other item."""
        if self.head is None:
            return np.asarray(q @ self.weights)
        qh = q[:, self.head]
        sh = np.asarray(qh @ self.weights)
        u = (np.asarray(qh.toarray() if sp.issparse(qh) else qh, dtype=np.float32) - sh) * self.diag_p[None, :]  # q_h P_h
        s = np.empty((q.shape[0], self.n_items), dtype=np.float32)
        s[:, self.head] = sh
        co = np.asarray(self._x_outside_t @ (self._x_head @ u.T)).T  # (u X_h') X_outside
        if self.config.text_weight:
            co += self.config.text_weight * ((u @ self._v_head) @ self._v_outside.T)
        s[:, self._outside] = co
        return s

    def _finish(self, q: sp.csr_matrix | np.ndarray, s: np.ndarray, with_trend: bool = False) -> np.ndarray:
        if self.config.text_score_weight:
            qv = np.asarray(q @ self.vectors)
            qv /= np.clip(np.linalg.norm(qv, axis=1, keepdims=True), 1e-12, None)
            s += self.config.text_score_weight * (qv @ self.vectors.T)
        s = propagate_to_cold(s, self.is_cold, self.neighbours, self.neighbour_weights, self.config.cold_weight)
        if with_trend and self.trend is not None and self.config.trend_weight:
            s = add_trend(s, self.trend, self.config.trend_weight)
        return s

    # `with_trend`: add the trend prior (when the model has one) — for customers' histories only, the queries it
    # was validated on (the evaluation's, a served `history` request). On a single item, a cart or a text it
    # swamps the behaviour (every list becomes the week's best sellers), so it is off unless asked for.
    def scores(self, queries: Sequence[np.ndarray], with_trend: bool = False) -> np.ndarray:
        """Dense [n_queries, n_items] scores for baskets given as arrays of item indices."""
        q = query_matrix(queries, self.n_items)
        return self._finish(q, self._behaviour_scores(q), with_trend)

    def scores_and_behaviour(self, queries: Sequence[np.ndarray], with_trend: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """`scores`, and beside them the behaviour part alone: row r, column j is `pair_weight(queries[r], j)`
        (for reasons given to many queries at once, without scoring each query's behaviour again)."""
        q = query_matrix(queries, self.n_items)
        behaviour = self._behaviour_scores(q)
        return self._finish(q, np.array(behaviour, copy=True), with_trend), behaviour

    def scores_for_vector(self, query_weights: np.ndarray, with_trend: bool = False) -> np.ndarray:
        """Scores for a query given as a weight per catalog item (e.g. a new item's text neighbours)."""
        return self.scores_from_dense(query_weights[None, :], with_trend)[0]

    def scores_from_dense(self, q: np.ndarray, with_trend: bool = False) -> np.ndarray:
        return self._finish(q, self._behaviour_scores(q), with_trend)

    def pair_weight(self, sources: Sequence[int], target: int) -> float:
        """The summed behaviour weight B[source, target] from the given items to one item: how much the
        learned item-item weights, rather than the direct text term, put the target there."""
        src = np.asarray(sources, dtype=np.int64)
        if self.head is None:
            return float(self.weights[src, target].sum())
        key = tuple(sorted(set(src.tolist())))
        if self._pair_cache is None or self._pair_cache[0] != key:  # one request asks for many targets of one cart
            self._pair_cache = (key, self._behaviour_scores(query_matrix([np.array(key, dtype=np.int64)], self.n_items))[0])
        return float(self._pair_cache[1][target])


def side_information_ease(
    x: sp.csr_matrix,
    vectors: np.ndarray,
    l2: float,
    text_weight: float,
    features: np.ndarray | None = None,
    feature_weight: float = 0.0,
    return_diag: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """B = I - P / diag(P) with P = (X'X + text_weight V V' + feature_weight F F' + l2 I)^-1, diagonal zeroed
    (and diag(P) with `return_diag`: with B it gives P back, P = (I - B) diag(P))."""
    gram = (x.T @ x).toarray().astype(np.float64)
    if text_weight:
        v = vectors.astype(np.float64)
        gram += text_weight * (v @ v.T)
    if feature_weight and features is not None and features.size:
        f = features.astype(np.float64)
        gram += feature_weight * (f @ f.T)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    del gram
    diag = np.diag(p).copy()
    p /= -diag[None, :]
    p[np.diag_indices_from(p)] = 0.0
    b = p.astype(np.float32)
    return (b, diag.astype(np.float32)) if return_diag else b


def cold_neighbours(vectors: np.ndarray, is_cold: np.ndarray, config: HybridConfig) -> tuple[np.ndarray, np.ndarray]:
    """For each cold item: its nearest warm items in text space and softmax weights over them. Exact;
    through FAISS (`recsys.model.ann.VectorIndex`, batched, exact below its ANN threshold) once the
    cold x warm similarities would not fit a small dense block."""
    cold = np.flatnonzero(is_cold)
    warm = np.flatnonzero(~is_cold)
    m = min(config.cold_neighbours, len(warm))
    if len(cold) == 0 or m == 0:
        return np.zeros((len(cold), 0), dtype=np.int64), np.zeros((len(cold), 0), dtype=np.float32)
    if len(cold) * len(warm) <= _DENSE_NEIGHBOUR_BLOCK:
        sims = vectors[cold] @ vectors[warm].T
        top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        top_sims = np.take_along_axis(sims, top, axis=1)
        ids = warm[top]
    else:  # large catalogs: tens of thousands of new items
        from recsys.model.ann import VectorIndex

        top_sims, top = VectorIndex.build(np.ascontiguousarray(vectors[warm], dtype=np.float32)).search(np.ascontiguousarray(vectors[cold], dtype=np.float32), m)
        ids = warm[top]
    w = np.exp((top_sims - top_sims.max(axis=1, keepdims=True)) / config.cold_temperature)
    w /= w.sum(axis=1, keepdims=True)
    return ids.astype(np.int64), w.astype(np.float32)


_DENSE_NEIGHBOUR_BLOCK = 50_000_000  # cold x warm similarities computed in one dense product (200 MB)


def propagate_to_cold(scores: np.ndarray, is_cold: np.ndarray, neighbours: np.ndarray, weights: np.ndarray, cold_weight: float) -> np.ndarray:
    """Add to each cold item's score the weighted score of its warm text neighbours (times cold_weight)."""
    cold = np.flatnonzero(is_cold)
    if len(cold) == 0 or neighbours.shape[1] == 0 or cold_weight == 0:
        return scores
    borrowed = np.einsum("qcm,cm->qc", scores[:, neighbours], weights)
    scores[:, cold] += cold_weight * borrowed
    return scores


def head_items(x: sp.csr_matrix, size: int) -> np.ndarray | None:
    """The catalog's head: the `size` items bought most in training (sorted indices; ties by index), or
    None when `size` is 0 or covers every item (the dense model)."""
    if size <= 0 or size >= x.shape[1]:
        return None
    popularity = np.asarray(x.sum(axis=0)).ravel()
    return np.sort(np.argsort(-popularity, kind="stable")[:size])


Neighbours = tuple[np.ndarray, np.ndarray]  # (indices, weights) per cold item, as `cold_neighbours` returns them


def fit_hybrid(
    x: sp.csr_matrix,
    vectors: np.ndarray,
    is_cold: np.ndarray,
    config: HybridConfig,
    features: np.ndarray | None = None,
    head: np.ndarray | None = None,
    neighbours: Neighbours | None = None,
) -> HybridModel:
    """Fit B on the training matrix with the given hyper-parameters (the head's Gram matrix only, when a
    head is given); `neighbours` reuses the cold items' text neighbours when the caller found them already."""
    nb, nw = neighbours if neighbours is not None else (None, None)
    if head is None:
        b = side_information_ease(x, vectors, config.l2, config.text_weight, features, config.feature_weight)
        return HybridModel(weights=b, vectors=vectors, is_cold=is_cold, config=config, neighbours=nb, neighbour_weights=nw)
    f = features[head] if features is not None and features.size else features
    b, diag = side_information_ease(x[:, head].tocsr(), vectors[head], config.l2, config.text_weight, f, config.feature_weight, return_diag=True)
    return HybridModel(weights=b, vectors=vectors, is_cold=is_cold, config=config, head=head, diag_p=diag, x=x, neighbours=nb, neighbour_weights=nw)


ValidationScore = Callable[[HybridModel, np.ndarray], float]  # (model, hidden-items mask) -> score, higher is better


def tune_hybrid(
    x: sp.csr_matrix,
    vectors: np.ndarray,
    is_cold: np.ndarray,
    evaluate: ValidationScore,
    config: HybridConfig,
    features: np.ndarray | None = None,
    pseudo_cold: np.ndarray | None = None,
    head: np.ndarray | None = None,
) -> tuple[HybridModel, dict[str, Any]]:
    """Pick l2, text_weight (and feature_weight) on validation, coordinate-wise over bracketed grids
    starting from the config's values; then cold_weight on a pseudo-cold fold (the largest within
    `cold_tolerance` of the best fold score); refit.

    Edges: a value is bracketed when values on both sides of it were scored; text_weight = 0 or
    feature_weight = 0 (the term off) sits on a natural bound and counts as bracketed from below,
    as long as the bound is 0 - any other bound, and the top of the fixed cold_weight grid, is an edge.

    Cost: one n x n inversion per (l2, text_weight, feature_weight) point scored - about the sum of
    the grid sizes (plus extensions) per round, `config.max_rounds` rounds at most - plus one for the
    fold and one for the final refit; cold_weight only rescores the fold model.

    Args:
        x: binary user x item training matrix.
        vectors: item text vectors.
        is_cold: items with no training interaction.
        evaluate: (model, hidden_items) -> validation score (higher is better); `hidden_items` is a bool
            mask of the warm items made cold for the fold (all False for the plain validation).
        config: starting configuration, the grids and their bounds.
        features: optional [n_items, f] standardised numeric item features (feature_weight is tuned with
            the others; skipped when None).
        pseudo_cold: optional indices of warm items to hide for the cold_weight fold (e.g. items held
            out from fine-tuning); None draws `pseudo_cold_share` of the warm items with `config.seed`.
        head: the scalable path's head (`head_items`): the weights cover these items only; None = all.

    Returns:
        The refitted model and its record: chosen {l2, text_weight, feature_weight, cold_weight}, score
        (plain validation at the chosen point), cold_score (fold score at the chosen cold_weight),
        edge_hit {parameter: bool} for every tuned parameter, converged, rounds, tried (flat
        {"l2_<v>.text_weight_<v>[.feature_weight_<v>]": score, "pseudo_cold.cold_weight_<v>": score}),
        searches {parameter: SearchResult.to_dict()} and pseudo_cold (the hidden item indices).
    """
    with_features = features is not None and features.size > 0
    no_cold = np.zeros_like(is_cold)
    # the cold items' text neighbours depend on the vectors only: found once, not per grid point
    neighbours = cold_neighbours(vectors, is_cold, config)

    def validation(point: dict[str, float]) -> float:
        cfg = replace(config, **point, cold_weight=0.0)
        score = float(evaluate(fit_hybrid(x, vectors, is_cold, cfg, features, head, neighbours), no_cold))
        log.info("hybrid %s: validation %.4f", " ".join(f"{k}={v:g}" for k, v in point.items()), score)
        return score

    grids = config.search_grids(with_features)
    search = coordinate_search(validation, grids, start={n: getattr(config, n) for n in grids}, max_rounds=config.max_rounds)
    best_cfg = replace(config, **search.chosen)
    tried = search.to_record()["tried"]

    # pseudo-cold fold: hide some warm items' history, see which cold_weight ranks them best
    hidden = _pseudo_cold_items(x, is_cold, config, pseudo_cold)
    keep = np.ones(x.shape[1], dtype=np.float32)
    keep[hidden] = 0.0
    x_fold = (x @ sp.diags(keep)).tocsr()
    x_fold.eliminate_zeros()
    hidden_mask = np.zeros_like(is_cold)
    hidden_mask[hidden] = True
    # on the scalable path the fold's head is drawn again without the hidden items' history, so the hidden
    # items leave it as real new items do (a new item is never among the most bought): the fold then judges
    # cold_weight on items scored the way real cold items are
    fold_head = head_items(x_fold, len(head)) if head is not None else None
    # only the hidden items are propagated: the real cold items can never be validation targets, so
    # boosting them here would only measure a loss that the test split does not have
    fold_neighbours = cold_neighbours(vectors, hidden_mask, config)
    fold = fit_hybrid(x_fold, vectors, hidden_mask, best_cfg, features, fold_head, fold_neighbours)
    fold_scores: dict[float, float] = {}
    for cw in config.cold_weight_grid:
        model = replace(fold, config=replace(best_cfg, cold_weight=cw))
        score = float(evaluate(model, hidden_mask))
        tried[f"pseudo_cold.cold_weight_{format_value(cw)}"] = fold_scores[float(cw)] = score
        log.info("hybrid cold_weight=%g on the pseudo-cold fold: %.4f", cw, score)
    del fold, model
    top = max(fold_scores.values())
    best_cold = max(cw for cw, score in fold_scores.items() if score >= top - config.cold_tolerance * abs(top))
    cold = judged_result("cold_weight", fold_scores, best_cold, config.cold_grid())
    final = replace(best_cfg, cold_weight=best_cold)
    searches = {n: r.to_dict() for n, r in search.searches.items()} | {"cold_weight": cold.to_dict()}
    record = {
        "chosen": {"l2": float(final.l2), "text_weight": float(final.text_weight), "feature_weight": float(final.feature_weight), "cold_weight": float(final.cold_weight)},
        "score": float(search.score),
        "cold_score": float(cold.score),
        "edge_hit": search.edge_hit | {"cold_weight": cold.edge_hit},
        "converged": bool(search.converged),
        "rounds": int(search.rounds),
        "tried": tried,
        "searches": searches,
        "pseudo_cold": [int(i) for i in hidden],
    }
    for name, hit in record["edge_hit"].items():
        if hit:
            log.warning("hybrid %s=%g sits on the %s edge of what was tried", name, record["chosen"][name], searches[name]["edge"])
    return fit_hybrid(x, vectors, is_cold, final, features, head, neighbours), record


def tune_trend(
    model: HybridModel,
    prior_at: Callable[[float], np.ndarray],
    evaluate: Callable[[Callable[[Sequence[np.ndarray]], np.ndarray]], float],
    max_cache_bytes: int = 2**31,
) -> tuple[HybridModel, dict[str, Any]]:
    """Pick the trend prior's weight and window on validation, after the rest is tuned
    (`recsys.model.trend.search_trend` over the config's trend grids). Returns the model with the chosen
    values in its config (no prior attached: a caller sets `trend` for the moment it answers for) and the
    search record."""
    base_model = replace(model, config=replace(model.config, trend_weight=0.0), trend=None)
    grids = model.config.trend_grids()
    record = search_trend(base_model.scores, prior_at, evaluate, grids["trend_weight"], grids["trend_days"], model.config.trend_days, max_cache_bytes)
    return replace(base_model, config=replace(model.config, **record["chosen"])), record


def _pseudo_cold_items(x: sp.csr_matrix, is_cold: np.ndarray, config: HybridConfig, pseudo_cold: np.ndarray | None) -> np.ndarray:
    """The warm items hidden for the cold_weight fold, sorted: the caller's, checked, or a seeded draw."""
    if pseudo_cold is not None:
        hidden = np.unique(np.asarray(pseudo_cold, dtype=np.int64))
        if hidden.size == 0:
            raise ValueError("pseudo_cold is empty: the cold_weight fold needs at least one hidden item")
        if hidden[0] < 0 or hidden[-1] >= x.shape[1]:
            raise ValueError(f"pseudo_cold indices must lie in [0, {x.shape[1]})")
        if is_cold[hidden].any():
            raise ValueError(f"pseudo_cold must name warm items only; cold: {hidden[is_cold[hidden]].tolist()}")
        return hidden
    rng = np.random.default_rng(config.seed)
    warm = np.flatnonzero(~is_cold & (np.asarray(x.sum(axis=0)).ravel() > 0))
    return np.sort(rng.choice(warm, size=max(1, int(round(config.pseudo_cold_share * len(warm)))), replace=False))


def load_hybrid(weights: Path, info: Path) -> tuple[HybridModel, dict[str, Any]]:
    """The hybrid `fit_model` saved (its arrays in `weights`, its config and tuning record in `info`)."""
    data = np.load(weights)
    record = json.loads(Path(info).read_text())
    cfg = HybridConfig.from_dict(record["config"])
    return model_from_arrays(data, cfg), record


def model_arrays(model: HybridModel) -> dict[str, np.ndarray]:
    """What `np.savez` keeps of a model (`model_from_arrays` rebuilds it). The scalable path saves its head,
    diag(P), the binary training matrix's structure (anonymous rows: the users are not in it) and the cold
    items' neighbours, so loading never searches the text graph again."""
    out = {"weights": model.weights, "vectors": model.vectors, "is_cold": model.is_cold}
    if model.trend is not None:
        out["trend"] = model.trend
    if model.head is not None:
        x = sp.csr_matrix(model.x)
        out |= {
            "head": model.head, "diag_p": model.diag_p, "neighbours": model.neighbours, "neighbour_weights": model.neighbour_weights,
            "x_indptr": x.indptr, "x_indices": x.indices, "x_shape": np.array(x.shape),
        }  # fmt: skip
    return out


def model_from_arrays(data: Any, config: HybridConfig) -> HybridModel:
    """A model from `model_arrays`' arrays (an `np.load`ed npz); a model saved before the scalable path has no head."""
    keys = set(getattr(data, "files", data))
    trend = data["trend"] if "trend" in keys else None
    if "head" not in keys:
        return HybridModel(weights=data["weights"], vectors=data["vectors"], is_cold=data["is_cold"], config=config, trend=trend)
    indices = data["x_indices"]
    x = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, data["x_indptr"]), shape=tuple(data["x_shape"]))
    return HybridModel(
        weights=data["weights"], vectors=data["vectors"], is_cold=data["is_cold"], config=config, head=data["head"],
        diag_p=data["diag_p"], x=x, neighbours=data["neighbours"], neighbour_weights=data["neighbour_weights"], trend=trend,
    )  # fmt: skip
