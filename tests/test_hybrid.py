"""Golden tests of recsys.model.hybrid: EASE with item text as side information, cold-start propagation
and tuning.

Tiny hand-built data; expected values are computed by hand in the comments, or by an independent,
textbook numpy computation written out in the test (never by calling the code under test).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.model import baselines, hybrid
from recsys.model.hybrid import (
    HybridConfig,
    HybridModel,
    cold_neighbours,
    fit_hybrid,
    propagate_to_cold,
    side_information_ease,
    tune_hybrid,
)

# 4 users x 5 items [a, b, c, d, e]; d and e are cold (never bought).
#   u0: a b      u1: a b c      u2: b c      u3: a
X_DENSE = np.array(
    [
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
    ],
    dtype=np.float32,
)
IS_COLD = np.array([False, False, False, True, True])
# unit text vectors:  a=(1,0)  b=(.6,.8)  c=(0,1)  d=(.8,.6)  e=(-.6,.8)
V = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6], [-0.6, 0.8]], dtype=np.float32)

# cold neighbours with k=2, temperature T=0.5 (similarity = dot product of unit vectors):
#   d: sims to a, b, c = .8, .96, .6    -> {b, a}; softmax over (.96, .8)/T: w_b = 1/(1+e^-0.32), w_a = 1 - w_b
#   e: sims to a, b, c = -.6, .28, .8   -> {c, b}; softmax over (.8, .28)/T: w_c = 1/(1+e^-1.04), w_b = 1 - w_c
D_WB = 1.0 / (1.0 + math.exp(-0.32))
D_WA = 1.0 - D_WB
E_WC = 1.0 / (1.0 + math.exp(-1.04))
E_WB = 1.0 - E_WC
HAND_NEIGHBOURS = {3: {1: D_WB, 0: D_WA}, 4: {2: E_WC, 1: E_WB}}


def _x() -> sp.csr_matrix:
    return sp.csr_matrix(X_DENSE)


def _cfg(**kw) -> HybridConfig:
    base = dict(cold_neighbours=2, cold_temperature=0.5, cold_weight=0.5, text_score_weight=0.1, l2=1.0, text_weight=2.0)
    base.update(kw)
    return HybridConfig(**base)


def _textbook_side_info_ease(x_dense: np.ndarray, v: np.ndarray, l2: float, tw: float) -> np.ndarray:
    """G = X'X + tw V V' + l2 I;  P = G^-1;  B = I - P diag(1/diag(P)) (column j / P_jj);  diag(B) = 0."""
    x64, v64 = x_dense.astype(np.float64), v.astype(np.float64)
    n = x64.shape[1]
    g = x64.T @ x64 + tw * (v64 @ v64.T) + l2 * np.eye(n)
    p = np.linalg.inv(g)
    b = np.eye(n) - p @ np.diag(1.0 / np.diag(p))
    np.fill_diagonal(b, 0.0)
    return b


def _propagate_by_hand(s: np.ndarray, cold_weight: float) -> np.ndarray:
    """Cold columns d, e += cold_weight * (softmax-weighted warm neighbour scores), from HAND_NEIGHBOURS."""
    out = s.copy()
    for c, nbrs in HAND_NEIGHBOURS.items():
        out[:, c] += cold_weight * sum(w * s[:, j] for j, w in nbrs.items())
    return out


# --- side_information_ease ---------------------------------------------------------------------------


def test_text_weight_zero_equals_plain_ease():
    for l2 in (0.5, 1.0, 200.0):
        np.testing.assert_allclose(
            side_information_ease(_x(), V, l2=l2, text_weight=0.0), baselines.ease_weights(_x(), l2=l2), rtol=0, atol=1e-7
        )


def test_side_information_matches_closed_form():
    for l2, tw in ((1.0, 2.0), (0.5, 10.0), (200.0, 200.0)):
        b = side_information_ease(_x(), V, l2=l2, text_weight=tw)
        assert b.shape == (5, 5) and b.dtype == np.float32
        np.testing.assert_allclose(b, _textbook_side_info_ease(X_DENSE, V, l2, tw), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(np.diag(b), np.zeros(5))


def test_side_information_two_items_by_hand():
    # one user bought both items; V = identity-ish: v0 = (1,0), v1 = (.6,.8) -> V V' = [[1,.6],[.6,1]]
    # l2 = 1, tw = 2:  G = [[1,1],[1,1]] + 2[[1,.6],[.6,1]] + I = [[4, 2.2], [2.2, 4]]
    # two items: B[0,1] = -P01/P11 = G01/G00 = 2.2/4 = .55 ; B[1,0] = G10/G11 = .55
    x = sp.csr_matrix(np.array([[1, 1]], dtype=np.float32))
    v = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(side_information_ease(x, v, l2=1.0, text_weight=2.0), [[0, 0.55], [0.55, 0]], atol=1e-6)


def test_cold_items_get_weights_only_through_text():
    # text_weight = 0: a cold column of G is l2 e_j only -> rows and columns of d, e are exactly 0
    b0 = side_information_ease(_x(), V, l2=1.0, text_weight=0.0)
    for c in (3, 4):
        np.testing.assert_array_equal(b0[c, :], np.zeros(5))
        np.testing.assert_array_equal(b0[:, c], np.zeros(5))
    # text_weight > 0: the V V' term couples them to the warm items (values = the closed form)
    b = side_information_ease(_x(), V, l2=1.0, text_weight=2.0)
    ref = _textbook_side_info_ease(X_DENSE, V, 1.0, 2.0)
    for c in (3, 4):
        off = [j for j in range(5) if j != c]
        assert np.all(np.abs(ref[c, off]) > 1e-4) and np.all(np.abs(ref[off, c]) > 1e-4)  # the data is generic
        np.testing.assert_allclose(b[c, :], ref[c, :], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b[:, c], ref[:, c], rtol=1e-5, atol=1e-7)
        assert np.count_nonzero(b[c, off]) == 4 and np.count_nonzero(b[off, c]) == 4


# --- cold_neighbours -----------------------------------------------------------------------------------


def _as_dicts(nbrs: np.ndarray, weights: np.ndarray) -> list[dict[int, float]]:
    return [dict(zip(n.tolist(), w.tolist())) for n, w in zip(nbrs, weights)]


def test_cold_neighbours_exact_two_neighbours_softmax():
    nbrs, w = cold_neighbours(V, IS_COLD, _cfg())
    assert nbrs.shape == (2, 2) and w.shape == (2, 2)  # one row per cold item, in item order (d, e)
    got = _as_dicts(nbrs, w)
    for row, c in zip(got, (3, 4)):
        assert set(row) == set(HAND_NEIGHBOURS[c])  # nearest WARM items only, never another cold one
        for j, wj in HAND_NEIGHBOURS[c].items():
            assert row[j] == pytest.approx(wj, abs=1e-6)
    np.testing.assert_allclose(w.sum(axis=1), [1.0, 1.0], atol=1e-6)


def test_cold_neighbours_temperature():
    # T = 1: d's weights over (.96, .8): w_b = 1/(1+e^-0.16)
    d, _ = _as_dicts(*cold_neighbours(V, IS_COLD, _cfg(cold_temperature=1.0)))
    assert d[1] == pytest.approx(1.0 / (1.0 + math.exp(-0.16)), abs=1e-6)
    # T -> 0: all the weight on the single nearest warm item (d -> b, e -> c)
    d, e = _as_dicts(*cold_neighbours(V, IS_COLD, _cfg(cold_temperature=1e-3)))
    assert d[1] == pytest.approx(1.0, abs=1e-6) and d[0] == pytest.approx(0.0, abs=1e-6)
    assert e[2] == pytest.approx(1.0, abs=1e-6) and e[1] == pytest.approx(0.0, abs=1e-6)


def test_cold_neighbours_more_than_warm_items():
    # k = 10 > 3 warm items -> all 3 warm items; d: softmax over (.8, .96, .6)/0.5 = exp(1.6), exp(1.92), exp(1.2)
    nbrs, w = cold_neighbours(V, IS_COLD, _cfg(cold_neighbours=10))
    assert nbrs.shape == (2, 3)
    d = _as_dicts(nbrs, w)[0]
    z = math.exp(1.6) + math.exp(1.92) + math.exp(1.2)
    assert set(d) == {0, 1, 2}
    for j, s in ((0, 1.6), (1, 1.92), (2, 1.2)):
        assert d[j] == pytest.approx(math.exp(s) / z, abs=1e-6)


def test_cold_neighbours_no_cold_or_no_warm():
    nbrs, w = cold_neighbours(V, np.zeros(5, dtype=bool), _cfg())
    assert nbrs.shape == (0, 0) and w.shape == (0, 0)
    nbrs, w = cold_neighbours(V, np.ones(5, dtype=bool), _cfg())
    assert nbrs.shape == (5, 0) and w.shape == (5, 0)
    s = np.arange(10, dtype=np.float64).reshape(2, 5)
    np.testing.assert_array_equal(propagate_to_cold(s.copy(), np.ones(5, dtype=bool), nbrs, w, 1.0), s)


# --- propagate_to_cold -----------------------------------------------------------------------------------


def test_propagate_to_cold_exact():
    s = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [-1.0, 0.0, 2.0, 0.5, 1.0]])
    nbrs = np.array([[1, 0], [2, 1]])  # d -> (b, a), e -> (c, b)
    w = np.array([[0.75, 0.25], [0.6, 0.4]], dtype=np.float32)
    out = propagate_to_cold(s.copy(), IS_COLD, nbrs, w, 0.5)
    # row 0: d = 4 + .5 (.75*2 + .25*1) = 4.875;   e = 5 + .5 (.6*3 + .4*2) = 6.3
    # row 1: d = .5 + .5 (.75*0 + .25*-1) = .375;   e = 1 + .5 (.6*2 + .4*0) = 1.6
    expected = np.array([[1.0, 2.0, 3.0, 4.875, 6.3], [-1.0, 0.0, 2.0, 0.375, 1.6]])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(out[:, :3], s[:, :3])  # warm columns untouched, bit for bit


def test_propagate_cold_weight_zero_is_identity():
    s = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    out = propagate_to_cold(s.copy(), IS_COLD, np.array([[1, 0], [2, 1]]), np.full((2, 2), 0.5, np.float32), 0.0)
    np.testing.assert_array_equal(out, s)


# --- HybridModel ----------------------------------------------------------------------------------------------

# an arbitrary (not fitted) weight matrix, so the scoring formula is tested on its own
B_HAND = (np.arange(25, dtype=np.float32).reshape(5, 5) - 12.0) / 10.0
np.fill_diagonal(B_HAND, 0.0)


def _hand_scores(basket: list[int], b: np.ndarray, text_score_weight: float, cold_weight: float) -> np.ndarray:
    b64, v64 = b.astype(np.float64), V.astype(np.float64)
    s = b64[basket].sum(axis=0)  # q @ B for a binary basket
    if text_score_weight:
        u = v64[basket].mean(axis=0)
        u /= np.linalg.norm(u)
        s = s + text_score_weight * (v64 @ u)  # cosine of unit item vectors to the mean basket vector
    return _propagate_by_hand(s[None, :], cold_weight)[0]


def test_scores_hand_formula_basket_a_c():
    model = HybridModel(weights=B_HAND, vectors=V, is_cold=IS_COLD, config=_cfg())
    # basket {a, c}: q@B = B[0] + B[2];  mean vector (.5, .5) -> unit (1/sqrt2, 1/sqrt2)
    # cos to a..e = [1, 1.4, 1, 1.4, .2] / sqrt2;  + .1 * that;  then d, e += .5 * neighbour mix
    base = B_HAND[0].astype(np.float64) + B_HAND[2]
    s = base + 0.1 * np.array([1.0, 1.4, 1.0, 1.4, 0.2]) / math.sqrt(2.0)
    s[3] += 0.5 * (D_WB * s[1] + D_WA * s[0])
    s[4] += 0.5 * (E_WC * s[2] + E_WB * s[1])
    got = model.scores([np.array([0, 2])])
    assert got.shape == (1, 5)
    np.testing.assert_allclose(got[0], s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0], _hand_scores([0, 2], B_HAND, 0.1, 0.5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("text_score_weight", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("cold_weight", [0.0, 0.25, 1.0])
def test_scores_batch_matches_hand_formula(text_score_weight, cold_weight):
    model = HybridModel(weights=B_HAND, vectors=V, is_cold=IS_COLD, config=_cfg(text_score_weight=text_score_weight, cold_weight=cold_weight))
    baskets = [[0], [1, 2], [3], [0, 1, 4]]  # a cold item may also be in the basket
    got = model.scores([np.array(q) for q in baskets])
    assert got.shape == (4, 5)
    for row, q in zip(got, baskets):
        np.testing.assert_allclose(row, _hand_scores(q, B_HAND, text_score_weight, cold_weight), rtol=1e-5, atol=1e-6)


def test_scores_from_dense_one_hot_equals_scores():
    model = fit_hybrid(_x(), V, IS_COLD, _cfg())
    eye = np.eye(5, dtype=np.float32)
    dense = model.scores_from_dense(eye)
    for i in range(5):
        sparse = model.scores([np.array([i])])[0]
        np.testing.assert_allclose(dense[i], sparse, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.scores_for_vector(eye[i]), sparse, rtol=1e-5, atol=1e-6)


def test_scores_from_dense_soft_query():
    model = HybridModel(weights=B_HAND, vectors=V, is_cold=IS_COLD, config=_cfg())
    # q = .3 a + .7 c: q@B = .3 B[0] + .7 B[2]; text direction .3 (1,0) + .7 (0,1) = (.3,.7), normalised
    q = np.array([0.3, 0.0, 0.7, 0.0, 0.0], dtype=np.float32)
    u = np.array([0.3, 0.7]) / math.hypot(0.3, 0.7)
    s = 0.3 * B_HAND[0].astype(np.float64) + 0.7 * B_HAND[2] + 0.1 * (V.astype(np.float64) @ u)
    expected = _propagate_by_hand(s[None, :], 0.5)[0]
    np.testing.assert_allclose(model.scores_for_vector(q), expected, rtol=1e-5, atol=1e-6)


def test_fit_hybrid_uses_side_information_weights():
    model = fit_hybrid(_x(), V, IS_COLD, _cfg(l2=0.5, text_weight=10.0))
    np.testing.assert_allclose(model.weights, _textbook_side_info_ease(X_DENSE, V, 0.5, 10.0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(model.is_cold, IS_COLD)


# --- tune_hybrid -------------------------------------------------------------------------------------------------

# 6 users x 6 items; items 0..4 are warm (5 warm items), item 5 is cold
TUNE_X = np.array(
    [
        [1, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [1, 0, 0, 0, 1, 0],
        [1, 0, 1, 0, 0, 0],
    ],
    dtype=np.float32,
)
TUNE_COLD = np.array([False] * 5 + [True])
_ang = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 0.7])
TUNE_V = np.stack([np.cos(_ang), np.sin(_ang)], axis=1).astype(np.float32)


def _tune(**kw):
    """Run tune_hybrid with a callback whose score is a known function of the config; record every call."""
    calls: list[dict] = []

    def evaluate(model: HybridModel, hidden: np.ndarray) -> float:
        c = model.config
        if hidden.any():  # pseudo-cold fold: best cold_weight = 0.25
            score = -((c.cold_weight - 0.25) ** 2)
        else:  # plain validation: best l2 = 10, text_weight = 2
            score = -abs(math.log10(c.l2) - 1.0) - abs(c.text_weight - 2.0)
        calls.append({"cfg": c, "hidden": np.array(hidden, copy=True), "is_cold": model.is_cold.copy(), "weights": model.weights.copy(), "score": score})
        return score

    base = dict(
        l2_grid=(1.0, 10.0),
        text_weight_grid=(0.0, 2.0, 8.0),
        cold_weight_grid=(0.0, 0.25, 1.0),
        pseudo_cold_share=0.4,
        seed=7,
        cold_neighbours=2,
        cold_temperature=0.5,
        cold_weight=0.9,
        l2=123.0,
        text_weight=456.0,
    )
    pseudo_cold = kw.pop("pseudo_cold", None)
    base.update(kw)
    model, record = tune_hybrid(sp.csr_matrix(TUNE_X), TUNE_V, TUNE_COLD.copy(), evaluate, HybridConfig(**base), pseudo_cold=pseudo_cold)
    return model, record, calls


def _plain(l2: float, tw: float) -> float:
    return -abs(math.log10(l2) - 1.0) - abs(tw - 2.0)


# the coordinate search of _tune(), by hand (start: text_weight = 456 from the config):
#   round 1: l2 at tw=456 over (1, 10): best 10 is the top edge -> extend x10 to 100 (worse): l2 = 10
#            text_weight at l2=10 over (0, 2, 8): 2 (inside the grid)
#   round 2: l2 at tw=2: (1, 2), (10, 2) cached, (100, 2) -> 10; text_weight's context (l2=10) is
#            unchanged -> skipped; converged
PLAIN_POINTS = [(1.0, 456.0), (10.0, 456.0), (100.0, 456.0), (10.0, 0.0), (10.0, 2.0), (10.0, 8.0), (1.0, 2.0), (100.0, 2.0)]


def test_tune_picks_argmax_and_records_everything():
    model, record, calls = _tune()
    # plain validation: scores -|log10(l2) - 1| - |tw - 2|  -> argmax l2 = 10, text_weight = 2 (score 0)
    # pseudo-cold: -(cw - .25)^2 -> argmax cold_weight = .25
    assert record["chosen"] == {"l2": 10.0, "text_weight": 2.0, "feature_weight": 0.0, "cold_weight": 0.25}
    expected_tried = {f"l2_{l2:g}.text_weight_{tw:g}": _plain(l2, tw) for l2, tw in PLAIN_POINTS}
    for cw in (0.0, 0.25, 1.0):
        expected_tried[f"pseudo_cold.cold_weight_{cw:g}"] = -((cw - 0.25) ** 2)
    assert record["tried"] == pytest.approx(expected_tried)
    assert len(calls) == len(PLAIN_POINTS) + 3  # never the 3 x 3 cross product plus extensions
    assert record["score"] == 0.0 and record["cold_score"] == 0.0
    assert record["edge_hit"] == {"l2": False, "text_weight": False, "cold_weight": False}
    assert (record["converged"], record["rounds"]) == (True, 2)
    l2 = record["searches"]["l2"]  # the last l2 search, at text_weight 2
    assert (l2["chosen"], l2["edge"], l2["extended"]) == (10.0, None, 1)
    assert l2["tried"] == [[1.0, -1.0], [10.0, 0.0], [100.0, -1.0]]  # exact: log10 of powers of 10
    assert [v for v, _ in record["searches"]["text_weight"]["tried"]] == [0.0, 2.0, 8.0]
    assert record["searches"]["cold_weight"]["tried"] == [[0.0, -0.0625], [0.25, 0.0], [1.0, -0.5625]]  # exact binary fractions
    assert json.loads(json.dumps(record)) == record  # JSON-able as is (plain Python types)
    assert all(re.fullmatch(r"[A-Za-z0-9_\-./]+", k) for k in record["tried"])  # valid MLflow metric names


def test_tune_validation_models_are_plain_fits_without_propagation():
    _, _, calls = _tune()
    plain = [c for c in calls if not c["hidden"].any()]
    assert [(c["cfg"].l2, c["cfg"].text_weight) for c in plain] == PLAIN_POINTS
    for c in plain:
        assert c["hidden"].dtype == bool and c["hidden"].shape == (6,)
        assert c["cfg"].cold_weight == 0.0
        np.testing.assert_array_equal(c["is_cold"], TUNE_COLD)
        ref = _textbook_side_info_ease(TUNE_X, TUNE_V, c["cfg"].l2, c["cfg"].text_weight)
        np.testing.assert_allclose(c["weights"], ref, rtol=1e-5, atol=1e-6)


def test_tune_final_model_refitted_on_full_matrix():
    model, _, _ = _tune()
    assert (model.config.l2, model.config.text_weight, model.config.cold_weight) == (10.0, 2.0, 0.25)
    # the other fields of the starting config are kept
    assert (model.config.cold_neighbours, model.config.cold_temperature) == (2, 0.5)
    np.testing.assert_array_equal(model.is_cold, TUNE_COLD)
    np.testing.assert_allclose(model.weights, _textbook_side_info_ease(TUNE_X, TUNE_V, 10.0, 2.0), rtol=1e-5, atol=1e-6)


def test_tune_pseudo_cold_fold():
    _, _, calls = _tune(pseudo_cold_share=0.4)
    fold = [c for c in calls if c["hidden"].any()]
    assert [c["cfg"].cold_weight for c in fold] == [0.0, 0.25, 1.0]
    hidden = fold[0]["hidden"]
    # round(.4 * 5 warm) = 2 warm items hidden; never the cold item 5
    assert hidden.sum() == 2 and not hidden[5]
    for c in fold:
        np.testing.assert_array_equal(c["hidden"], hidden)  # the same fold for every cold_weight
        # only the hidden items are cold (propagated) in the fold model: the real cold item 5 can never be
        # a validation target, so it is not boosted there
        np.testing.assert_array_equal(c["is_cold"], hidden)
        assert (c["cfg"].l2, c["cfg"].text_weight) == (10.0, 2.0)  # fold fitted with the chosen l2 / text_weight
        x_fold = TUNE_X.copy()
        x_fold[:, hidden] = 0.0  # the hidden items' history is removed
        np.testing.assert_allclose(c["weights"], _textbook_side_info_ease(x_fold, TUNE_V, 10.0, 2.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("share", "n_hidden"),
    [
        (0.1, 1),  # .1 * 5 = .5 -> at least 1
        (0.01, 1),  # .05 -> at least 1
        (0.4, 2),  # 2.0
        (0.6, 3),  # 3.0
        (1.0, 5),  # every warm item, still never the cold one
    ],
)
def test_tune_pseudo_cold_fold_size(share, n_hidden):
    _, _, calls = _tune(pseudo_cold_share=share)
    hidden = next(c["hidden"] for c in calls if c["hidden"].any())
    assert hidden.sum() == n_hidden
    assert not (hidden & TUNE_COLD).any()


def test_tune_pseudo_cold_fold_size_rounds():
    _, _, calls = _tune(pseudo_cold_share=0.35)
    hidden = next(c["hidden"] for c in calls if c["hidden"].any())
    assert hidden.sum() == 2  # round(1.75) = 2


def test_tune_seeded():
    def fold(seed: int) -> tuple[int, ...]:
        _, _, calls = _tune(seed=seed, pseudo_cold_share=0.1)
        return tuple(np.flatnonzero(next(c["hidden"] for c in calls if c["hidden"].any())).tolist())

    assert fold(3) == fold(3)
    assert fold(11) == fold(11)
    # 1 of 5 warm items: ten seeds all picking the same item would have probability 5^-9
    assert len({fold(s) for s in range(10)}) > 1


def test_tune_takes_the_largest_cold_weight_within_the_tolerance():
    def evaluate(model: HybridModel, hidden: np.ndarray) -> float:
        if not hidden.any():
            return 0.5
        # fold scores: 0 -> .200, .25 -> .201 (best), 1 -> .1995 (0.75% below the best)
        return {0.0: 0.200, 0.25: 0.201, 1.0: 0.1995}[model.config.cold_weight]

    cfg = HybridConfig(l2_grid=(1.0,), text_weight_grid=(0.0,), cold_weight_grid=(0.0, 0.25, 1.0), pseudo_cold_share=0.4)
    _, record = tune_hybrid(sp.csr_matrix(TUNE_X), TUNE_V, TUNE_COLD.copy(), evaluate, replace(cfg, cold_tolerance=0.01))
    assert record["chosen"]["cold_weight"] == 1.0  # within 1% of the best: new items get the exposure
    _, record = tune_hybrid(sp.csr_matrix(TUNE_X), TUNE_V, TUNE_COLD.copy(), evaluate, replace(cfg, cold_tolerance=0.001))
    assert record["chosen"]["cold_weight"] == 0.25


def test_feature_block_enters_the_gram_matrix():
    x = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=np.float32))
    v = np.eye(3, dtype=np.float32)
    f = np.array([[1.0], [-1.0], [0.5]], dtype=np.float32)
    got = side_information_ease(x, v, l2=2.0, text_weight=1.0, features=f, feature_weight=3.0)
    gram = (x.T @ x).toarray().astype(np.float64) + v @ v.T + 3.0 * (f @ f.T) + 2.0 * np.eye(3)
    p = np.linalg.inv(gram)
    want = -p / np.diag(p)[None, :]
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # feature_weight 0 (or no features) is the text-only model
    np.testing.assert_allclose(side_information_ease(x, v, 2.0, 1.0, f, 0.0), side_information_ease(x, v, 2.0, 1.0), atol=1e-7)


def test_tune_tries_feature_weights_when_features_exist():
    seen = []

    def evaluate(model: HybridModel, hidden: np.ndarray) -> float:
        seen.append(model.config.feature_weight)
        return 1.0 + 0.01 * (model.config.feature_weight == 20.0) if not hidden.any() else 0.5

    f = np.linspace(-1, 1, TUNE_X.shape[1], dtype=np.float32)[:, None]
    cfg = HybridConfig(l2_grid=(1.0,), text_weight_grid=(0.0,), cold_weight_grid=(0.0,), feature_weight_grid=(0.0, 20.0, 100.0), pseudo_cold_share=0.4)
    _, record = tune_hybrid(sp.csr_matrix(TUNE_X), TUNE_V, TUNE_COLD.copy(), evaluate, cfg, features=f)
    assert record["chosen"]["feature_weight"] == 20.0
    # l2 (1) and text_weight (0) are pinned: l2 is scored once at the starting text_weight (200), then
    # text_weight once, then feature_weight over its grid
    assert set(record["tried"]) == {
        "l2_1.text_weight_200.feature_weight_0", "l2_1.text_weight_0.feature_weight_0", "l2_1.text_weight_0.feature_weight_20", "l2_1.text_weight_0.feature_weight_100",
        "pseudo_cold.cold_weight_0",
    }  # fmt: skip
    assert record["edge_hit"]["feature_weight"] is False  # 20 lies between 0 and 100
    # a one-value grid cannot be extended: honest about it (l2 = 1 is not bracketed); text_weight 0
    # sits on its natural lower bound but nothing above it was tried
    assert record["edge_hit"]["l2"] is True and record["searches"]["l2"]["edge"] == "lower"
    assert record["edge_hit"]["text_weight"] is True and record["searches"]["text_weight"]["edge"] == "upper"


def test_tune_without_features_records_no_feature_weight_search():
    _, record, _ = _tune()
    assert "feature_weight" not in record["edge_hit"] and "feature_weight" not in record["searches"]
    assert record["chosen"]["feature_weight"] == 0.0


# --- tune_hybrid: bracketed grids and edge hits ---------------------------------------------------------------


def _tune_with(plain, fold=lambda cw: -((cw - 0.25) ** 2), **kw):
    """tune_hybrid with score functions plain(l2, text_weight) and fold(cold_weight); returns the record."""

    def evaluate(model: HybridModel, hidden: np.ndarray) -> float:
        c = model.config
        return fold(c.cold_weight) if hidden.any() else plain(c.l2, c.text_weight)

    cfg = HybridConfig(**{"l2_grid": (1.0, 10.0), "text_weight_grid": (0.0, 2.0, 8.0), "cold_weight_grid": (0.0, 0.25, 1.0), "pseudo_cold_share": 0.4, **kw})
    return tune_hybrid(sp.csr_matrix(TUNE_X), TUNE_V, TUNE_COLD.copy(), evaluate, cfg)[1]


def test_tune_monotone_l2_extends_to_the_bound_and_reports_the_edge():
    # the score grows with l2 forever: the grid (1, 10) is extended x10 up to the bound 10^4
    record = _tune_with(lambda l2, tw: math.log10(l2) - abs(tw - 2.0), l2_bounds=(0.1, 1e4))
    assert record["chosen"]["l2"] == 1e4
    assert record["edge_hit"]["l2"] is True and record["searches"]["l2"]["edge"] == "upper"
    assert [v for v, _ in record["searches"]["l2"]["tried"]] == [1.0, 10.0, 100.0, 1000.0, 1e4]
    assert "l2_10000.text_weight_2" in record["tried"]  # positional keys, never '1e+04'
    assert record["edge_hit"]["text_weight"] is False


def test_tune_peak_past_the_initial_grid_is_bracketed():
    # best l2 = 1000, beyond the grid (1, 10): extended to 100, 1000, 10000 -> 1000, bracketed
    record = _tune_with(lambda l2, tw: -abs(math.log10(l2) - 3.0) - abs(tw - 2.0))
    assert record["chosen"]["l2"] == 1000.0
    assert record["edge_hit"]["l2"] is False
    assert [v for v, _ in record["searches"]["l2"]["tried"]] == [1.0, 10.0, 100.0, 1000.0, 10000.0]


def test_tune_text_weight_zero_on_its_natural_bound_is_not_an_edge_hit():
    # the text term only hurts: 0 (the term off) is the grid's first value and the natural lower bound
    record = _tune_with(lambda l2, tw: -abs(math.log10(l2) - 1.0) - tw)
    assert record["chosen"]["text_weight"] == 0.0
    assert record["edge_hit"]["text_weight"] is False
    assert record["searches"]["text_weight"]["extended"] == 0
    # but a lower bound above 0 is only a search limit: sitting on it is an edge hit
    record = _tune_with(lambda l2, tw: -abs(math.log10(l2) - 1.0) - tw, text_weight_grid=(0.5, 2.0, 8.0), text_weight_bounds=(0.5, 1e5))
    assert record["chosen"]["text_weight"] == 0.5
    assert record["edge_hit"]["text_weight"] is True and record["searches"]["text_weight"]["edge"] == "lower"


def test_tune_cold_weight_keeps_its_grid_and_reports_the_top_edge():
    # fold scores grow with cold_weight: the tolerance rule picks 1.0, the grid's top; no extension
    record = _tune_with(_plain, fold=lambda cw: cw)
    assert record["chosen"]["cold_weight"] == 1.0
    assert record["edge_hit"]["cold_weight"] is True and record["searches"]["cold_weight"]["edge"] == "upper"
    assert [v for v, _ in record["searches"]["cold_weight"]["tried"]] == [0.0, 0.25, 1.0]
    # 0 (no propagation) is a natural lower bound
    record = _tune_with(_plain, fold=lambda cw: -cw)
    assert record["chosen"]["cold_weight"] == 0.0 and record["edge_hit"]["cold_weight"] is False


def test_tune_max_rounds_one_may_stop_unconverged():
    # round 1 searches l2 at the starting text_weight 456; text_weight then moves to 2, so l2's search
    # was made elsewhere: not converged, and said so
    record = _tune_with(_plain, max_rounds=1, text_weight=456.0)
    assert (record["converged"], record["rounds"]) == (False, 1)
    assert len([k for k in record["tried"] if k.startswith("l2_")]) == 3 + 3  # l2: 1, 10, 100; text_weight: 0, 2, 8


# --- tune_hybrid: explicit pseudo-cold fold ---------------------------------------------------------------------


def test_tune_explicit_pseudo_cold_uses_exactly_those_items():
    _, record, calls = _tune(pseudo_cold=np.array([3, 0]))
    fold = [c for c in calls if c["hidden"].any()]
    assert len(fold) == 3
    expected = np.zeros(6, dtype=bool)
    expected[[0, 3]] = True
    x_fold = TUNE_X.copy()
    x_fold[:, [0, 3]] = 0.0
    for c in fold:
        np.testing.assert_array_equal(c["hidden"], expected)
        np.testing.assert_array_equal(c["is_cold"], expected)
        np.testing.assert_allclose(c["weights"], _textbook_side_info_ease(x_fold, TUNE_V, 10.0, 2.0), rtol=1e-5, atol=1e-6)
    assert record["pseudo_cold"] == [0, 3]
    # the seeded draw is not consulted: any seed gives the same fold
    _, record2, _ = _tune(pseudo_cold=np.array([3, 0]), seed=123)
    assert record2["pseudo_cold"] == [0, 3]


def test_tune_default_pseudo_cold_is_recorded():
    _, record, calls = _tune(pseudo_cold_share=0.4)
    hidden = next(c["hidden"] for c in calls if c["hidden"].any())
    assert record["pseudo_cold"] == np.flatnonzero(hidden).tolist()


@pytest.mark.parametrize("bad", [np.array([5]), np.array([0, 6]), np.array([-1]), np.array([], dtype=np.int64)])
def test_tune_explicit_pseudo_cold_rejects_cold_out_of_range_or_empty(bad):
    with pytest.raises(ValueError):
        _tune(pseudo_cold=bad)


# --- HybridConfig round trip ------------------------------------------------------------------------------------


def test_config_from_dict_reads_models_saved_before_the_bounds():
    old = {  # a hybrid.json "config" written before the bracketed search (no bounds, no max_rounds)
        "l2": 200.0, "text_weight": 50.0, "text_score_weight": 0.1, "cold_neighbours": 5, "cold_temperature": 0.1,
        "cold_weight": 0.4, "l2_grid": [200.0, 500.0], "text_weight_grid": [0.0, 50.0, 200.0, 800.0],
        "feature_weight": 0.0, "feature_weight_grid": [0.0, 20.0, 100.0],
        "cold_weight_grid": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0], "cold_tolerance": 0.01,
        "pseudo_cold_share": 0.1, "seed": 42,
    }  # fmt: skip
    cfg = HybridConfig.from_dict(old)
    assert (cfg.l2, cfg.text_weight, cfg.cold_weight, cfg.l2_grid) == (200.0, 50.0, 0.4, (200.0, 500.0))
    assert cfg.l2_bounds == HybridConfig().l2_bounds and cfg.max_rounds == HybridConfig().max_rounds
    # the current form round-trips through JSON, and unknown (newer) fields are dropped
    now = HybridConfig(l2=30.0, l2_bounds=(1.0, 1e5))
    assert HybridConfig.from_dict(json.loads(json.dumps(now.__dict__)) | {"from_the_future": 1}) == now


# --- the scalable path: weights over the head, everything else borrows from its text neighbours in the head ----------

# popularity of a..e in X_DENSE: a 3, b 3, c 2, d 0, e 0 -> the 2-item head is {a, b} (ties by index)
HEAD = np.array([0, 1])


def test_head_items_are_the_most_bought_ties_by_index_and_none_when_the_head_is_the_whole_catalog():
    np.testing.assert_array_equal(hybrid.head_items(_x(), 2), [0, 1])
    np.testing.assert_array_equal(hybrid.head_items(_x(), 1), [0])  # a and b tie at 3: the lower index wins
    np.testing.assert_array_equal(hybrid.head_items(_x(), 3), [0, 1, 2])
    assert hybrid.head_items(_x(), 5) is None and hybrid.head_items(_x(), 9) is None and hybrid.head_items(_x(), 0) is None


@pytest.mark.parametrize("outside", [2, 4])  # c: warm, outside the head; e: new (cold)
def test_an_item_outside_the_head_gets_exactly_its_column_of_the_head_plus_that_item(outside):
    """Folding one item in against the head's inverse Gram matrix is block inversion: its scores equal those
    of the dense model fitted on the head plus that one item (textbook inverse, written out)."""
    head = np.array([i for i in range(5) if i != outside])
    cfg = _cfg(l2=0.5, text_weight=2.0, text_score_weight=0.0, cold_weight=0.0)
    model = fit_hybrid(_x(), V, IS_COLD, cfg, head=head)
    both = np.sort(np.r_[head, outside])
    b_aug = _textbook_side_info_ease(X_DENSE[:, both], V[both], 0.5, 2.0)
    col = list(both).index(outside)
    for basket in ([head[0]], [head[0], head[1]], list(head)):
        got = model.scores([np.array(basket)])[0, outside]
        rows = [list(both).index(i) for i in basket]
        assert got == pytest.approx(float(b_aug[rows, col].sum()), rel=1e-4, abs=1e-6)
        assert model.pair_weight(basket, outside) == pytest.approx(got, rel=1e-6)
    # the behaviour part given beside the scores (publishing's reasons) is pair_weight for every item
    baskets = [np.array([head[0]]), np.array(list(head))]
    dense = fit_hybrid(_x(), V, IS_COLD, cfg)
    for m in (model, dense):
        scores, behaviour = m.scores_and_behaviour(baskets)
        np.testing.assert_array_equal(scores, m.scores(baskets))
        for r, basket in enumerate(baskets):
            np.testing.assert_allclose(behaviour[r], [m.pair_weight(list(basket), j) for j in range(5)], rtol=1e-6, atol=1e-9)
    # the head's own weights are the head's side-information EASE
    np.testing.assert_allclose(model.weights, _textbook_side_info_ease(X_DENSE[:, head], V[head], 0.5, 2.0), rtol=1e-5, atol=1e-6)


def test_head_model_adds_the_text_term_and_propagates_new_items_as_the_dense_model_does():
    cfg = _cfg(l2=0.5, text_weight=2.0, text_score_weight=0.1, cold_weight=0.5)
    bare = fit_hybrid(_x(), V, IS_COLD, replace(cfg, text_score_weight=0.0, cold_weight=0.0), head=HEAD)
    model = fit_hybrid(_x(), V, IS_COLD, cfg, head=HEAD)
    s = bare.scores([np.array([0, 2])])[0].astype(np.float64)
    u = np.array([0.5, 0.5]) / math.sqrt(0.5)  # mean of a and c, normalised
    s += 0.1 * (V.astype(np.float64) @ u)
    s[3] += 0.5 * (D_WB * s[1] + D_WA * s[0])  # d and e are new: their warm text neighbours, as in the dense model
    s[4] += 0.5 * (E_WC * s[2] + E_WB * s[1])
    np.testing.assert_allclose(model.scores([np.array([0, 2])])[0], s, rtol=1e-5, atol=1e-6)


def test_a_head_covering_the_catalog_is_the_dense_model():
    dense = fit_hybrid(_x(), V, IS_COLD, _cfg())
    headed = fit_hybrid(_x(), V, IS_COLD, _cfg(), head=np.arange(5))
    baskets = [np.array(q) for q in ([0], [1, 2], [3], [0, 1, 4])]
    np.testing.assert_allclose(headed.scores(baskets), dense.scores(baskets), rtol=1e-6, atol=1e-7)


def test_fit_on_the_head_is_side_information_ease_of_the_head_columns():
    model = fit_hybrid(_x(), V, IS_COLD, _cfg(l2=0.5, text_weight=10.0), head=HEAD)
    np.testing.assert_allclose(model.weights, _textbook_side_info_ease(X_DENSE[:, HEAD], V[HEAD], 0.5, 10.0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(model.head, HEAD)


def test_head_model_round_trips_through_its_saved_arrays(tmp_path):
    model = fit_hybrid(_x(), V, IS_COLD, _cfg(), head=HEAD)
    np.savez(tmp_path / "m.npz", **hybrid.model_arrays(model))
    back = hybrid.model_from_arrays(np.load(tmp_path / "m.npz"), model.config)
    np.testing.assert_array_equal(back.head, HEAD)
    np.testing.assert_array_equal(back.neighbours, model.neighbours)
    assert (back.x != model.x).nnz == 0
    baskets = [np.array([0, 2]), np.array([4])]
    np.testing.assert_allclose(back.scores(baskets), model.scores(baskets), rtol=0, atol=0)
    # a model saved before the scalable path (no head in its arrays) loads as the dense model
    dense = fit_hybrid(_x(), V, IS_COLD, _cfg())
    np.savez(tmp_path / "d.npz", weights=dense.weights, vectors=dense.vectors, is_cold=dense.is_cold)
    assert hybrid.model_from_arrays(np.load(tmp_path / "d.npz"), dense.config).head is None


def test_many_borrowers_find_their_neighbours_through_faiss_exactly(monkeypatch):
    """Past the dense block the neighbours come from the FAISS index: the same neighbours and weights."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(300, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    borrowers = np.arange(300) >= 40
    cfg = _cfg(cold_neighbours=3)
    dense_ids, dense_w = cold_neighbours(v, borrowers, cfg)
    monkeypatch.setattr(hybrid, "_DENSE_NEIGHBOUR_BLOCK", 10)
    faiss_ids, faiss_w = cold_neighbours(v, borrowers, cfg)
    np.testing.assert_array_equal(np.sort(faiss_ids, axis=1), np.sort(dense_ids, axis=1))
    order_d, order_f = np.argsort(dense_ids, axis=1), np.argsort(faiss_ids, axis=1)
    np.testing.assert_allclose(np.take_along_axis(faiss_w, order_f, 1), np.take_along_axis(dense_w, order_d, 1), rtol=1e-5)


def test_tuning_on_the_head_keeps_the_head_and_scores_every_item():
    x = sp.csr_matrix(TUNE_X)
    is_cold = np.asarray(x.sum(axis=0)).ravel() == 0
    v = np.random.default_rng(1).normal(size=(x.shape[1], 3)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    head = hybrid.head_items(x, 3)
    seen = []

    def evaluate(model, hidden):
        seen.append((model.head, hidden.copy()))
        return float(model.scores([np.array([0])])[0, 1])

    model, record = tune_hybrid(x, v, is_cold, evaluate, _cfg(max_rounds=1), head=head, pseudo_cold=np.array([0]))
    plain = [h for h, hidden in seen if not hidden.any()]
    fold = [h for h, hidden in seen if hidden.any()]
    assert plain and all(np.array_equal(h, head) for h in plain)
    # the pseudo-cold fold draws its head without the hidden item's history: item 0 leaves it, as a real new item would
    assert fold and all(len(h) == 3 and 0 not in h for h in fold)
    np.testing.assert_array_equal(model.head, head)
    assert model.weights.shape == (3, 3)
    assert np.isfinite(model.scores([np.array([0])])).all()
