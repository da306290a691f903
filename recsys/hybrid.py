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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from recsys.baselines import query_matrix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HybridConfig:
    l2: float = 200.0  # EASE ridge; larger = smoother item-item weights
    text_weight: float = 200.0  # weight of V V' in the Gram matrix (0 = plain EASE)
    text_score_weight: float = 0.1  # direct text-similarity term added to the scores
    cold_neighbours: int = 5
    cold_temperature: float = 0.1
    cold_weight: float = 1.0
    l2_grid: tuple[float, ...] = (200.0, 500.0)
    text_weight_grid: tuple[float, ...] = (0.0, 50.0, 200.0, 800.0)
    feature_weight: float = 0.0  # weight of F F' (standardised numeric item features: price, rating)
    feature_weight_grid: tuple[float, ...] = (0.0, 20.0, 100.0)
    cold_weight_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
    # new items are the product's promise: take the largest cold_weight whose pseudo-cold validation
    # score is within this relative tolerance of the best one
    cold_tolerance: float = 0.01
    pseudo_cold_share: float = 0.1  # warm items made cold to tune cold_weight
    seed: int = 42

    @classmethod
    def from_dict(cls, data: dict) -> "HybridConfig":
        """Rebuild from its JSON form (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class HybridModel:
    """Fitted weights; scores any basket over the whole catalog."""

    weights: np.ndarray  # [n, n] item-item weights B
    vectors: np.ndarray  # [n, d] L2-normalised item text vectors
    is_cold: np.ndarray  # [n] bool: no training interaction
    config: HybridConfig

    def __post_init__(self) -> None:
        self._neighbours, self._neighbour_weights = cold_neighbours(self.vectors, self.is_cold, self.config)

    def scores(self, queries: Sequence[np.ndarray]) -> np.ndarray:
        """Dense [n_queries, n_items] scores for baskets given as arrays of item indices."""
        q = query_matrix(queries, self.weights.shape[0])
        s = np.asarray(q @ self.weights)
        if self.config.text_score_weight:
            qv = np.asarray(q @ self.vectors)
            qv /= np.clip(np.linalg.norm(qv, axis=1, keepdims=True), 1e-12, None)
            s += self.config.text_score_weight * (qv @ self.vectors.T)
        return propagate_to_cold(s, self.is_cold, self._neighbours, self._neighbour_weights, self.config.cold_weight)

    def scores_for_vector(self, query_weights: np.ndarray) -> np.ndarray:
        """Scores for a query given as a weight per catalog item (e.g. a new item's text neighbours)."""
        return self.scores_from_dense(query_weights[None, :])[0]

    def scores_from_dense(self, q: np.ndarray) -> np.ndarray:
        s = q @ self.weights
        if self.config.text_score_weight:
            qv = q @ self.vectors
            qv /= np.clip(np.linalg.norm(qv, axis=1, keepdims=True), 1e-12, None)
            s += self.config.text_score_weight * (qv @ self.vectors.T)
        return propagate_to_cold(s, self.is_cold, self._neighbours, self._neighbour_weights, self.config.cold_weight)


def side_information_ease(
    x: sp.csr_matrix,
    vectors: np.ndarray,
    l2: float,
    text_weight: float,
    features: np.ndarray | None = None,
    feature_weight: float = 0.0,
) -> np.ndarray:
    """B = I - P / diag(P) with P = (X'X + text_weight V V' + feature_weight F F' + l2 I)^-1, diagonal zeroed."""
    gram = (x.T @ x).toarray().astype(np.float64)
    if text_weight:
        v = vectors.astype(np.float64)
        gram += text_weight * (v @ v.T)
    if feature_weight and features is not None and features.size:
        f = features.astype(np.float64)
        gram += feature_weight * (f @ f.T)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


def cold_neighbours(vectors: np.ndarray, is_cold: np.ndarray, config: HybridConfig) -> tuple[np.ndarray, np.ndarray]:
    """For each cold item: its nearest warm items in text space and softmax weights over them."""
    cold = np.flatnonzero(is_cold)
    warm = np.flatnonzero(~is_cold)
    m = min(config.cold_neighbours, len(warm))
    if len(cold) == 0 or m == 0:
        return np.zeros((len(cold), 0), dtype=np.int64), np.zeros((len(cold), 0), dtype=np.float32)
    sims = vectors[cold] @ vectors[warm].T
    top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
    top_sims = np.take_along_axis(sims, top, axis=1)
    w = np.exp((top_sims - top_sims.max(axis=1, keepdims=True)) / config.cold_temperature)
    w /= w.sum(axis=1, keepdims=True)
    return warm[top], w.astype(np.float32)


def propagate_to_cold(scores: np.ndarray, is_cold: np.ndarray, neighbours: np.ndarray, weights: np.ndarray, cold_weight: float) -> np.ndarray:
    """Add to each cold item's score the weighted score of its warm text neighbours (times cold_weight)."""
    cold = np.flatnonzero(is_cold)
    if len(cold) == 0 or neighbours.shape[1] == 0 or cold_weight == 0:
        return scores
    borrowed = np.einsum("qcm,cm->qc", scores[:, neighbours], weights)
    scores[:, cold] += cold_weight * borrowed
    return scores


def fit_hybrid(x: sp.csr_matrix, vectors: np.ndarray, is_cold: np.ndarray, config: HybridConfig, features: np.ndarray | None = None) -> HybridModel:
    """Fit B on the training matrix with the given hyper-parameters."""
    b = side_information_ease(x, vectors, config.l2, config.text_weight, features, config.feature_weight)
    return HybridModel(weights=b, vectors=vectors, is_cold=is_cold, config=config)


def tune_hybrid(
    x: sp.csr_matrix,
    vectors: np.ndarray,
    is_cold: np.ndarray,
    evaluate: "callable",
    config: HybridConfig,
    features: np.ndarray | None = None,
) -> tuple[HybridModel, dict]:
    """Pick l2 and text_weight on validation, then cold_weight on a pseudo-cold fold (the largest
    within `cold_tolerance` of the best fold score); refit.

    Args:
        x: binary user x item training matrix.
        vectors: item text vectors.
        is_cold: items with no training interaction.
        evaluate: (model, hidden_items) -> validation score (higher is better); `hidden_items` are
            warm items made cold for the fold (empty for the plain validation).
        config: starting configuration and the grids.
        features: optional [n_items, f] standardised numeric item features (their weight is tuned
            after l2 and text_weight; skipped when None).

    Returns:
        The refitted model and a record of every configuration tried with its score.
    """
    tried: dict[str, float] = {}
    best_cfg, best = config, -np.inf
    no_cold = np.zeros_like(is_cold)
    for l2 in config.l2_grid:
        for tw in config.text_weight_grid:
            cfg = replace(config, l2=l2, text_weight=tw, cold_weight=0.0)
            score = evaluate(fit_hybrid(x, vectors, is_cold, cfg), no_cold)
            tried[f"l2_{l2:g}.text_weight_{tw:g}"] = score
            log.info("hybrid l2=%g text_weight=%g: validation %.4f", l2, tw, score)
            if score > best:
                best, best_cfg = score, cfg
    if features is not None and features.size:
        best_feature = -np.inf
        for fw in config.feature_weight_grid:
            cfg = replace(best_cfg, feature_weight=fw)
            score = evaluate(fit_hybrid(x, vectors, is_cold, cfg, features), no_cold)
            tried[f"feature_weight_{fw:g}"] = score
            log.info("hybrid feature_weight=%g: validation %.4f", fw, score)
            if score > best_feature:
                best_feature, feature_cfg = score, cfg
        best_cfg = feature_cfg
    # pseudo-cold fold: hide some warm items' history, see which cold_weight ranks them best
    rng = np.random.default_rng(config.seed)
    warm = np.flatnonzero(~is_cold & (np.asarray(x.sum(axis=0)).ravel() > 0))
    hidden = rng.choice(warm, size=max(1, int(round(config.pseudo_cold_share * len(warm)))), replace=False)
    keep = np.ones(x.shape[1], dtype=np.float32)
    keep[hidden] = 0.0
    x_fold = (x @ sp.diags(keep)).tocsr()
    x_fold.eliminate_zeros()
    fold_b = side_information_ease(x_fold, vectors, best_cfg.l2, best_cfg.text_weight, features, best_cfg.feature_weight)
    fold_scores: dict[float, float] = {}
    hidden_mask = np.zeros_like(is_cold)
    hidden_mask[hidden] = True
    for cw in config.cold_weight_grid:
        cfg = replace(best_cfg, cold_weight=cw)
        # only the hidden items are propagated: the real cold items can never be validation targets,
        # so boosting them here would only measure a loss that the test split does not have
        score = evaluate(HybridModel(weights=fold_b, vectors=vectors, is_cold=hidden_mask, config=cfg), hidden_mask)
        tried[f"pseudo_cold.cold_weight_{cw:g}"] = fold_scores[cw] = score
        log.info("hybrid cold_weight=%g on the pseudo-cold fold: %.4f", cw, score)
    top = max(fold_scores.values())
    best_cold = max(cw for cw, score in fold_scores.items() if score >= top - config.cold_tolerance * abs(top))
    final = replace(best_cfg, cold_weight=best_cold)
    chosen = {"l2": final.l2, "text_weight": final.text_weight, "feature_weight": final.feature_weight, "cold_weight": final.cold_weight}
    return fit_hybrid(x, vectors, is_cold, final, features), {"tried": tried, "chosen": chosen}
