"""Golden tests of recsys.model.baselines: interaction/query matrices, item-kNN cosine and EASE.

Tiny hand-built data; every expected value is computed by hand in the comment next to it, or by
an independent, textbook numpy computation written out in the test.
"""

from __future__ import annotations

import dataclasses

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.model import baselines
from recsys.data import schema as S

# 4 users x 4 items [a, b, c, d]; d is never bought.
#   u0: a b      u1: a b c      u2: b c      u3: a
X_DENSE = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [0, 1, 1, 0],
        [1, 0, 0, 0],
    ],
    dtype=np.float32,
)
# X'X: counts a=3, b=3, c=2, d=0; co(a,b)=2 (u0,u1), co(a,c)=1 (u1), co(b,c)=2 (u1,u2)
GRAM = np.array(
    [
        [3, 2, 1, 0],
        [2, 3, 2, 0],
        [1, 2, 2, 0],
        [0, 0, 0, 0],
    ],
    dtype=np.float64,
)


def _x() -> sp.csr_matrix:
    return sp.csr_matrix(X_DENSE)


def _textbook_ease(gram: np.ndarray, l2: float) -> np.ndarray:
    """Steck 2019: P = (G + l2 I)^-1, B = I - P diag(1/diag(P)) (column j divided by P_jj), diag(B) = 0."""
    n = gram.shape[0]
    p = np.linalg.inv(gram + l2 * np.eye(n))
    b = np.eye(n) - p @ np.diag(1.0 / np.diag(p))
    np.fill_diagonal(b, 0.0)
    return b


# --- interaction_matrix -------------------------------------------------------------------------


def _pairs(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {S.USER_ID: [u for u, _ in rows], S.ITEM_ID: [i for _, i in rows], S.EVENT: ["purchase"] * len(rows)}
    ).astype({S.USER_ID: "string", S.ITEM_ID: "string", S.EVENT: "string"})


def test_interaction_matrix_binary_ordered_unknown_ignored():
    pairs = _pairs(
        [
            ("u1", "a"),
            ("u1", "a"),  # duplicate: counts once
            ("u2", "zz"),  # unknown item: ignored
            ("u2", "c"),
            ("u3", "b"),
            ("u1", "c"),
            ("u4", "zz"),  # u4 has only an unknown item -> no row at all
        ]
    )
    x = baselines.interaction_matrix(pairs, ["c", "a", "b"])
    assert sp.issparse(x) and x.format == "csr"
    # columns follow item_ids = [c, a, b]:  u1 -> c,a = [1,1,0];  u2 -> c = [1,0,0];  u3 -> b = [0,0,1]
    assert x.shape == (3, 3)
    dense = x.toarray()
    assert set(np.unique(dense)) <= {0.0, 1.0}
    assert x.nnz == 4
    assert np.all(x.data == 1.0)
    assert sorted(map(tuple, dense.tolist())) == sorted([(1.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)])
    # column sums: c bought by u1,u2 = 2; a by u1 = 1 (duplicate once); b by u3 = 1
    np.testing.assert_array_equal(dense.sum(axis=0), [2.0, 1.0, 1.0])


def test_interaction_matrix_plain_object_columns_and_item_never_bought():
    pairs = pd.DataFrame({S.USER_ID: ["x", "y", "x"], S.ITEM_ID: ["b", "b", "a"]})
    x = baselines.interaction_matrix(pairs, ["a", "b", "never"])
    # x -> a,b = [1,1,0];  y -> b = [0,1,0];  "never" is an all-zero column
    assert x.shape == (2, 3)
    assert sorted(map(tuple, x.toarray().tolist())) == [(0.0, 1.0, 0.0), (1.0, 1.0, 0.0)]
    np.testing.assert_array_equal(x.toarray()[:, 2], [0.0, 0.0])


def test_interaction_matrix_no_known_items_is_empty():
    x = baselines.interaction_matrix(_pairs([("u1", "zz"), ("u2", "yy")]), ["a", "b"])
    assert x.shape == (0, 2)
    assert x.nnz == 0


# --- ease_weights --------------------------------------------------------------------------------


def test_ease_two_items_by_hand():
    # X = [[1,1],[1,0],[1,0]]: count0 = 3, count1 = 1, co = 1.  l2 = 1 -> G = [[4,1],[1,2]], det = 7
    # P = G^-1 = 1/7 [[2,-1],[-1,4]]
    # B[0,1] = -P01 / P11 = (1/7) / (4/7) = 1/4;   B[1,0] = -P10 / P00 = (1/7) / (2/7) = 1/2
    x = sp.csr_matrix(np.array([[1, 1], [1, 0], [1, 0]], dtype=np.float32))
    b = baselines.ease_weights(x, l2=1.0)
    np.testing.assert_allclose(b, [[0.0, 0.25], [0.5, 0.0]], rtol=0, atol=1e-7)


def test_ease_matches_textbook_closed_form():
    for l2 in (0.5, 3.0, 500.0):
        b = baselines.ease_weights(_x(), l2=l2)
        assert b.shape == (4, 4)
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, _textbook_ease(GRAM, l2), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(np.diag(b), np.zeros(4))


def test_ease_item_never_bought_has_zero_weights():
    # d's Gram row/column is only l2 on the diagonal -> P_d. = e_d / l2 -> B[d, :] = B[:, d] = 0
    b = baselines.ease_weights(_x(), l2=2.0)
    np.testing.assert_array_equal(b[3, :], np.zeros(4))
    np.testing.assert_array_equal(b[:, 3], np.zeros(4))


def test_ease_huge_l2_shrinks_weights_to_zero():
    # P = (l2 (I + G/l2))^-1 = (I - G/l2 + O(l2^-2)) / l2  ->  B_ij = -P_ij / P_jj = G_ij / l2 + O(l2^-2)
    l2 = 1e7
    b = baselines.ease_weights(_x(), l2=l2)
    assert np.abs(b).max() < 1e-6
    off = GRAM.copy()
    np.fill_diagonal(off, 0.0)
    np.testing.assert_allclose(b * l2, off, rtol=1e-4, atol=1e-4)
    # and strictly monotone shrinkage of the largest weight as l2 grows
    maxima = [np.abs(baselines.ease_weights(_x(), l2=v)).max() for v in (1.0, 10.0, 100.0, 1000.0)]
    assert all(a > c for a, c in zip(maxima, maxima[1:]))


# --- cooccurrence_cosine -------------------------------------------------------------------------


def test_cooccurrence_cosine_exact():
    s = baselines.cooccurrence_cosine(_x())
    # cos(a,b) = 2/sqrt(3*3) = 2/3;  cos(a,c) = 1/sqrt(3*2) = 1/sqrt(6);  cos(b,c) = 2/sqrt(3*2) = 2/sqrt(6)
    ab, ac, bc = 2.0 / 3.0, 1.0 / math.sqrt(6.0), 2.0 / math.sqrt(6.0)
    expected = np.array(
        [
            [0.0, ab, ac, 0.0],
            [ab, 0.0, bc, 0.0],
            [ac, bc, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],  # d never bought: zero row and column, no NaN
        ]
    )
    np.testing.assert_allclose(s, expected, rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(s))
    np.testing.assert_array_equal(np.diag(s), np.zeros(4))
    np.testing.assert_array_equal(s, s.T)


def test_cooccurrence_cosine_duplicate_free_input_counts():
    # two users with identical baskets {0, 1}: count 2 each, co 2 -> cos = 2/sqrt(4) = 1
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0]], dtype=np.float32))
    np.testing.assert_allclose(baselines.cooccurrence_cosine(x), [[0, 1, 0], [1, 0, 0], [0, 0, 0]], atol=1e-7)


# --- query_matrix / item_item_scores ---------------------------------------------------------------


def test_query_matrix_exact():
    q = baselines.query_matrix([np.array([0, 2]), np.array([3]), np.array([], dtype=np.int64)], 4)
    assert sp.issparse(q)
    np.testing.assert_array_equal(
        q.toarray(),
        [
            [1, 0, 1, 0],
            [0, 0, 0, 1],
            [0, 0, 0, 0],  # an empty query is an all-zero row
        ],
    )


def test_query_matrix_no_queries():
    assert baselines.query_matrix([], 5).shape == (0, 5)


def test_query_matrix_is_binary_with_repeated_item():
    q = baselines.query_matrix([np.array([1, 1, 2])], 3)
    np.testing.assert_array_equal(q.toarray(), [[0, 1, 1]])


def test_item_item_scores_exact():
    w = np.array(
        [
            [0.0, 1.0, 2.0],
            [3.0, 0.0, 4.0],
            [5.0, 6.0, 0.0],
        ],
        dtype=np.float32,
    )
    s = baselines.item_item_scores(w, [np.array([0, 2]), np.array([1]), np.array([], dtype=np.int64)])
    assert isinstance(s, np.ndarray) and s.shape == (3, 3)
    # [0,2] -> row0 + row2 = [5, 7, 2];  [1] -> row1 = [3, 0, 4];  [] -> 0
    np.testing.assert_allclose(s, [[5, 7, 2], [3, 0, 4], [0, 0, 0]], atol=0)


def test_item_item_scores_with_ease_weights():
    # end to end on the 4-item data: basket {a, c} scores = B[a] + B[c] (rows of B)
    b = baselines.ease_weights(_x(), l2=1.0)
    ref = _textbook_ease(GRAM, 1.0)
    s = baselines.item_item_scores(b, [np.array([0, 2])])
    np.testing.assert_allclose(s[0], ref[0] + ref[2], rtol=1e-5, atol=1e-7)


# --- itemknn_weights: neighbourhood size and shrinkage ------------------------------------------------------

AB, AC, BC = 2.0 / 3.0, 1.0 / math.sqrt(6.0), 2.0 / math.sqrt(6.0)  # the cosines of _x() (above)


def test_itemknn_all_neighbours_no_shrink_is_the_cosine():
    for neighbours in (None, 0, 3, 10):  # 3 = n - 1: every other item
        np.testing.assert_array_equal(baselines.itemknn_weights(_x(), neighbours=neighbours), baselines.cooccurrence_cosine(_x()))


def test_itemknn_shrinkage_exact():
    # co / (sqrt(ci cj) + 1):  ab = 2 / (3 + 1) = .5;  ac = 1 / (sqrt6 + 1);  bc = 2 / (sqrt6 + 1);  d stays 0
    s = baselines.itemknn_weights(_x(), shrink=1.0)
    ab, ac, bc = 0.5, 1.0 / (math.sqrt(6.0) + 1.0), 2.0 / (math.sqrt(6.0) + 1.0)
    expected = [[0, ab, ac, 0], [ab, 0, bc, 0], [ac, bc, 0, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(s, expected, rtol=1e-6, atol=1e-7)
    assert s.dtype == np.float32


def test_itemknn_top_one_neighbour_per_row_exact():
    # rows are the query side: a's nearest is b (2/3 > 1/sqrt6), b's is c (2/sqrt6 > 2/3), c's is b
    s = baselines.itemknn_weights(_x(), neighbours=1)
    expected = [[0, AB, 0, 0], [0, 0, BC, 0], [0, BC, 0, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(s, expected, rtol=1e-6, atol=1e-7)
    # two neighbours: every positive similarity of this data (each item has at most 2) survives
    np.testing.assert_array_equal(baselines.itemknn_weights(_x(), neighbours=2), baselines.cooccurrence_cosine(_x()))


def test_itemknn_ties_at_the_cut_are_kept():
    # item 0 co-occurs once with 1 and once with 2 (each bought once) and once with 3 (bought twice):
    # cos(0,1) = cos(0,2) = 1/sqrt3 > cos(0,3) = 1/sqrt6 -> one neighbour keeps both tied items
    x = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 0, 0, 1]], dtype=np.float32))
    s = baselines.itemknn_weights(x, neighbours=1)
    np.testing.assert_allclose(s[0], [0, 1 / math.sqrt(3), 1 / math.sqrt(3), 0], rtol=1e-6)


# 6 users x 3 items [a, b, c]:  u0: a b   u1, u2: a c   u3, u4, u5: c
#   counts a=3, b=1, c=5;  co(a,b)=1, co(a,c)=2, co(b,c)=0
#   row a: ab = 1/(sqrt3 + s), ac = 2/(sqrt15 + s): the cosine prefers b (.577 > .516), shrinkage s >= 1 prefers c
SHRINK_X = np.array([[1, 1, 0], [1, 0, 1], [1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1]], dtype=np.float32)
R3, R15 = math.sqrt(3.0), math.sqrt(15.0)


def test_itemknn_shrinkage_changes_the_nearest_neighbour():
    x = sp.csr_matrix(SHRINK_X)
    np.testing.assert_allclose(baselines.itemknn_weights(x, neighbours=1)[0], [0, 1 / R3, 0], rtol=1e-6)
    np.testing.assert_allclose(baselines.itemknn_weights(x, neighbours=1, shrink=1.0)[0], [0, 0, 2 / (R15 + 1)], rtol=1e-6)


def test_itemknn_rejects_negative_arguments():
    with pytest.raises(ValueError):
        baselines.itemknn_weights(_x(), neighbours=-1)
    with pytest.raises(ValueError):
        baselines.itemknn_weights(_x(), shrink=-1.0)


# --- tune_ease / tune_itemknn ---------------------------------------------------------------------------------

# X = [[1,1],[1,0],[1,0]]: G = [[3,1],[1,1]] + l2 I -> B[0,1] = -P01/P11 = 1/(3 + l2) (see test_ease_two_items_by_hand),
# so a score function can read the l2 it was given off the weights: l2 = 1/B[0,1] - 3
TWO_ITEMS = sp.csr_matrix(np.array([[1, 1], [1, 0], [1, 0]], dtype=np.float32))


def _l2_of(weights: np.ndarray) -> float:
    return 1.0 / float(weights[0, 1]) - 3.0


def test_tune_ease_interior_peak():
    seen: list[float] = []

    def score(w):
        seen.append(_l2_of(w))
        return -abs(math.log10(_l2_of(w)) - 2.0)  # best l2 = 100

    weights, record = baselines.tune_ease(TWO_ITEMS, score)
    assert record["chosen"] == {"l2": 100.0}
    assert record["edge_hit"] == {"l2": False} and record["searches"]["l2"]["extended"] == 0
    assert list(record["tried"]) == [f"l2_{v}" for v in ("1", "3", "10", "30", "100", "300", "1000", "3000", "10000")]
    np.testing.assert_allclose(seen, [1, 3, 10, 30, 100, 300, 1000, 3000, 10000], rtol=1e-4)  # each l2 scored once
    np.testing.assert_array_equal(weights, baselines.ease_weights(TWO_ITEMS, 100.0))  # the kept best, no refit needed
    assert json.loads(json.dumps(record)) == record


def test_tune_ease_peak_below_the_grid_is_bracketed():
    # best l2 = 1/3: the grid (1, 3, ...) extends down by its bottom ratio 3: 0.3333, then 0.1111
    weights, record = baselines.tune_ease(TWO_ITEMS, lambda w: -abs(math.log10(_l2_of(w)) - math.log10(1 / 3)))
    assert record["chosen"] == {"l2": 0.3333} and record["edge_hit"] == {"l2": False}
    assert [v for v, _ in record["searches"]["l2"]["tried"]][:3] == [0.1111, 0.3333, 1.0]
    np.testing.assert_array_equal(weights, baselines.ease_weights(TWO_ITEMS, 0.3333))


def test_tune_ease_monotone_hits_the_bound():
    # smaller weights always score better: l2 runs up to the bound 10^6 and the record says so
    weights, record = baselines.tune_ease(TWO_ITEMS, lambda w: -float(w[0, 1]))
    assert record["chosen"] == {"l2": 1e6}
    assert record["edge_hit"] == {"l2": True} and record["searches"]["l2"]["edge"] == "upper"
    # above 10^4 the top ratio 10^4 / 3000 (4 significant digits kept), the last step clipped to the bound
    assert list(record["tried"])[-5:] == ["l2_10000", "l2_33330", "l2_111100", "l2_370300", "l2_1000000"]
    np.testing.assert_array_equal(weights, baselines.ease_weights(TWO_ITEMS, 1e6))


def _row_a_score(w: np.ndarray) -> float:
    """The validation score of a query {a} whose target is c: c's weight minus the decoy b's."""
    return float(w[0, 2]) - float(w[0, 1])


def test_tune_itemknn_exact_path():
    # by hand (neighbours grid (1, 2), "all" = 2; shrink grid (0, 1, 3, 10, 30, 100)); scores of row a:
    #   round 1, shrink 0: k=1 keeps b -> -.577; k=2 -> .516 - .577 = -.061 -> k = 2 (the natural top)
    #            k=2: s=0 -.061, s=1 2/4.873 - 1/2.732 = .044, s=3 .291 - .211 = .080, s=10 .059 -> s = 3
    #   round 2, s=3: k=1 keeps c (.291 > .211) -> .291 > .080 -> k = 1 (the natural bottom)
    #            k=1: s=0 keeps b -> -.577, s=1 keeps c -> .410, s=3 -> .291 -> s = 1
    #   round 3, s=1: k=1 (.410) > k=2 (.044) -> 1; shrink's context (k=1) unchanged -> converged
    x = sp.csr_matrix(SHRINK_X)
    cfg = baselines.ItemKNNTuning(neighbours=(1, 2), shrink=(0.0, 1.0, 3.0, 10.0, 30.0, 100.0), max_rounds=3)
    weights, record = baselines.tune_itemknn(x, _row_a_score, cfg)
    assert record["chosen"] == {"neighbours": 1, "shrink": 1.0} and type(record["chosen"]["neighbours"]) is int
    assert record["score"] == pytest.approx(2 / (R15 + 1), rel=1e-6)
    assert record["edge_hit"] == {"neighbours": False, "shrink": False}
    assert (record["converged"], record["rounds"]) == (True, 3)
    # row a keeps c, row b keeps a (its only co-occurrence: 1/(sqrt3 + 1)), row c keeps a (2/(sqrt15 + 1))
    expected = [[0, 0, 2 / (R15 + 1)], [1 / (R3 + 1), 0, 0], [2 / (R15 + 1), 0, 0]]
    np.testing.assert_allclose(weights, expected, rtol=1e-6, atol=1e-7)
    assert record["tried"]["neighbours_2.shrink_3"] == pytest.approx(2 / (R15 + 3) - 1 / (R3 + 3), rel=1e-6)
    assert json.loads(json.dumps(record)) == record
    # two rounds stop one search short of converging, and say so
    _, record = baselines.tune_itemknn(x, _row_a_score, baselines.ItemKNNTuning(neighbours=(1, 2), max_rounds=2))
    assert record["chosen"] == {"neighbours": 1, "shrink": 1.0} and record["converged"] is False


def test_itemknn_grids_clip_to_the_catalog():
    grids = baselines.ItemKNNTuning().grids(n_items=60)
    assert grids["neighbours"].values == (10.0, 20.0, 50.0, 59.0)  # 100, 200, 500 all mean "all" = 59
    assert grids["neighbours"].natural_upper and grids["neighbours"].upper == 59
    tiny = baselines.ItemKNNTuning().grids(n_items=4)["neighbours"]
    assert tiny.values == (3.0,) and tiny.next_value(3.0, -1) == 2.0  # one size left: halve from there


# --- the registry ---------------------------------------------------------------------------------
def test_every_registered_baseline_is_offered_by_the_dag_form_and_the_gate_default() -> None:
    from recsys.config import GateConfig
    from recsys.settings import BASELINES as FORM_CHOICES

    assert FORM_CHOICES == tuple(baselines.BASELINES)  # settings.py stays numpy-free: it names them, a test keeps them equal
    assert GateConfig().baselines == tuple(baselines.BASELINES)  # the first model's bar: every one that applies to its run


def test_which_baselines_apply_to_a_run() -> None:
    """ALS only on the scalable path (below it exact EASE is the stronger collaborative model), trending only
    with time: what evaluation scores and the gate asks a first model to beat."""
    assert baselines.applicable(scalable=False, timed=False) == ("popularity", "itemknn", "ease", "frozen")
    assert baselines.applicable(scalable=False, timed=True) == ("popularity", "trending", "itemknn", "ease", "frozen")
    assert baselines.applicable(scalable=True, timed=False) == ("popularity", "itemknn", "ease", "frozen", "als")
    assert baselines.applicable(scalable=True, timed=True) == tuple(baselines.BASELINES)


def test_registered_baselines_fit_and_tune_through_one_contract() -> None:
    """Each entry scores a batch of queries over the whole catalog; what `tune` chooses is what `fit`
    takes, so evaluation rebuilds exactly the tuned baseline (here EASE at the l2 the score prefers)."""
    x = _x()
    data = baselines.BaselineData([f"i{j}" for j in range(x.shape[1])], x, np.asarray(x.sum(axis=0)).ravel(), np.eye(x.shape[1], dtype=np.float32))
    queries = [np.array([0]), np.array([1, 2])]
    tried: list[float] = []

    def prefers_l2_of_100(scorer) -> float:
        # the scorer is EASE at some l2; recover which by matching the hand-computed closed form
        scores = scorer(queries)
        l2 = min(baselines.EASE_L2_GRID.values, key=lambda v: np.abs(scores - baselines.item_item_scores(_textbook_ease(GRAM, v), queries)).max())
        tried.append(l2)
        return -abs(math.log10(l2) - 2)

    record = baselines.BASELINES["ease"].tune(data, prefers_l2_of_100)
    assert record["chosen"] == {"l2": 100.0} and not record["edge_hit"]["l2"] and 100.0 in tried
    ease = baselines.BASELINES["ease"].fit(data, record["chosen"])(queries)
    np.testing.assert_allclose(ease, baselines.item_item_scores(_textbook_ease(GRAM, 100.0), queries), rtol=1e-5, atol=1e-6)
    popularity = baselines.BASELINES["popularity"].fit(data, {})(queries)
    np.testing.assert_array_equal(popularity, np.tile(data.popularity, (2, 1)))
    timed = dataclasses.replace(data, recent_buyers=lambda days: np.arange(x.shape[1], dtype=np.float64) * days)
    for name, baseline in baselines.BASELINES.items():
        fit_on = timed if baseline.needs_time else data
        assert baseline.fit(fit_on, {"l2": 10.0, "neighbours": 2, "shrink": 0.0, "days": 7.0})(queries).shape == (2, x.shape[1]), name


def test_trending_ranks_the_last_days_buyers_then_training_sales_and_tunes_its_window() -> None:
    x = _x()
    popularity = np.array([5.0, 1.0, 3.0, 0.0])
    counts = {7.0: np.array([0.0, 2.0, 2.0, 1.0]), 14.0: np.array([1.0, 2.0, 4.0, 1.0])}
    data = baselines.BaselineData([f"i{j}" for j in range(4)], x[:, :4], popularity, np.eye(4, dtype=np.float32), recent_buyers=lambda days: counts.get(days, np.zeros(4)))
    trending = baselines.BASELINES["trending"]
    scores = trending.fit(data, {"days": 7.0})([np.array([0])])
    # buyers in the window, ties broken by training sales (popularity / (max + 1) < 1 never overturns a count)
    np.testing.assert_allclose(scores[0], [0 + 5 / 6, 2 + 1 / 6, 2 + 3 / 6, 1.0])
    record = trending.tune(data, lambda scorer: float(scorer([np.array([0])])[0, 2]))  # prefers the window where item 2 scores most
    assert record["chosen"] == {"days": 14.0} and not record["edge_hit"]["days"]
    assert trending.applies(scalable=True, timed=True) and not trending.applies(scalable=True, timed=False)
    with pytest.raises(ValueError, match="times"):
        trending.fit(dataclasses.replace(data, recent_buyers=None), {"days": 7.0})


# --- the scalable path: item-item baselines on the head, ALS over the whole catalog --------------------------------


def test_item_item_baselines_on_the_head_rank_only_head_items_and_ignore_other_basket_items() -> None:
    x = _x()
    head = np.array([0, 2])
    data = baselines.BaselineData([f"i{j}" for j in range(x.shape[1])], x, np.asarray(x.sum(axis=0)).ravel(), np.eye(x.shape[1], dtype=np.float32), head)
    scores = baselines.BASELINES["ease"].fit(data, {"l2": 10.0})([np.array([0, 1]), np.array([1])])
    b = _textbook_ease(x[:, head].toarray().T @ x[:, head].toarray(), 10.0)
    outside = np.setdiff1d(np.arange(x.shape[1]), head)
    assert np.isneginf(scores[:, outside]).all()
    np.testing.assert_allclose(scores[0, head], b[0], rtol=1e-5, atol=1e-6)  # item 1 lies outside the head: no vote
    np.testing.assert_allclose(scores[1, head], 0.0, atol=1e-7)  # a basket of tail items only: nothing to go on


def test_als_is_compared_on_the_scalable_path_only() -> None:
    als = baselines.BASELINES["als"]
    assert als.applies(scalable=True) and not als.applies(scalable=False)
    assert all(b.applies(False, timed=True) for name, b in baselines.BASELINES.items() if name != "als")


def test_als_scores_fold_a_basket_in_as_the_least_squares_user_vector() -> None:
    y = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    reg, alpha = 0.5, 2.0
    # basket {0, 2}: A = Y'Y + reg I + alpha (y0 y0' + y2 y2'), b = (1 + alpha)(y0 + y2), u = A^-1 b
    a = y.T @ y + reg * np.eye(2) + alpha * (np.outer(y[0], y[0]) + np.outer(y[2], y[2]))
    u = np.linalg.solve(a, 3.0 * (y[0] + y[2]))
    got = baselines.als_scores(y, reg, alpha, [np.array([0, 2]), np.array([], dtype=np.int64)])
    np.testing.assert_allclose(got[0], y @ u, rtol=1e-6)
    np.testing.assert_array_equal(got[1], 0.0)  # an empty basket: no user vector


def test_als_learns_the_block_structure_and_its_tuning_is_bracketed() -> None:
    """Two groups of items bought by two groups of users: a basket from one group ranks its own group first."""
    rows = [(u, i) for u in range(20) for i in range(4)] + [(u, i) for u in range(20, 40) for i in range(4, 8)]
    x = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), tuple(np.array(rows).T)), shape=(40, 8))
    data = baselines.BaselineData([f"i{j}" for j in range(8)], x, np.asarray(x.sum(axis=0)).ravel(), np.eye(8, dtype=np.float32))

    def own_group_first(scorer) -> float:
        s = scorer([np.array([0]), np.array([5])])
        return float(np.mean([s[0, 1:4].min() > s[0, 4:].max(), s[1, [4, 6, 7]].min() > s[1, :4].max()]))

    record = baselines.BASELINES["als"].tune(data, own_group_first)
    assert set(record["chosen"]) == {"factors", "regularization", "alpha"}
    assert own_group_first(baselines.BASELINES["als"].fit(data, record["chosen"])) == 1.0


def test_als_scores_take_per_item_weights_as_confidences() -> None:
    y = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    reg, alpha = 0.5, 2.0
    # basket {0, 2} weighted 3 and 0.5: confidences c = 1 + alpha w = 7 and 2
    c0, c2 = 7.0, 2.0
    a = y.T @ y + reg * np.eye(2) + (c0 - 1) * np.outer(y[0], y[0]) + (c2 - 1) * np.outer(y[2], y[2])
    u = np.linalg.solve(a, c0 * y[0] + c2 * y[2])
    got = baselines.als_scores(y, reg, alpha, [np.array([0, 2])], [np.array([3.0, 0.5])])
    np.testing.assert_allclose(got[0], y @ u, rtol=1e-6)
