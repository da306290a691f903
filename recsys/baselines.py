"""Collaborative baselines scored on the same queries as the model: item-kNN co-occurrence and EASE.

Both are fitted on the training interactions only; items without training history get all-zero
rows and columns, which is exactly why they have a cold-start hole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys import schema as S


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
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


def cooccurrence_cosine(x: sp.csr_matrix) -> np.ndarray:
    """Item-kNN similarity: co-occurrence count(i, j) / sqrt(count(i) count(j)), diagonal 0."""
    co = (x.T @ x).toarray().astype(np.float32)
    counts = np.diag(co).copy()
    np.fill_diagonal(co, 0.0)
    norm = np.sqrt(np.outer(counts, counts))
    return np.divide(co, norm, out=np.zeros_like(co), where=norm > 0)


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
