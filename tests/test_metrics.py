"""Golden tests of recsys.evaluation.metrics: recall, NDCG, hit rate, MRR and precision at k on tiny hand-built rankings.

Every expected value is computed by hand in the comment next to it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.evaluation.metrics import hit_rate_at_k, mrr_at_k, ndcg_at_k, precision_at_k, ranking_metrics, recall_at_k


def _t(*rows: list[int]) -> list[np.ndarray]:
    return [np.array(r, dtype=np.int64) for r in rows]


# --- one query: topk [3, 1, 2], targets {1, 5} ------------------------------------------------
TOPK_ONE = np.array([[3, 1, 2]])
TARGETS_ONE = _t([1, 5])


def test_recall_one_query():
    # top-3 = {3, 1, 2}; hits = {1}; recall = 1 / |{1, 5}| = 0.5
    assert recall_at_k(TOPK_ONE, TARGETS_ONE, 3) == pytest.approx(0.5, abs=1e-12)


def test_ndcg_one_query():
    # hit at rank 2 -> DCG = 1/log2(3); ideal: 2 targets at ranks 1, 2 -> IDCG = 1/log2(2) + 1/log2(3) = 1 + 1/log2(3)
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))  # = 0.38685...
    assert ndcg_at_k(TOPK_ONE, TARGETS_ONE, 3) == pytest.approx(expected, abs=1e-12)


def test_hit_rate_one_query():
    # item 1 is in the top 3 -> hit rate 1.0
    assert hit_rate_at_k(TOPK_ONE, TARGETS_ONE, 3) == pytest.approx(1.0)


def test_k_smaller_than_the_list_cuts_the_ranking():
    # k = 1: the list is cut to [3]; 3 is not a target -> recall = ndcg = hit rate = 0
    assert recall_at_k(TOPK_ONE, TARGETS_ONE, 1) == 0.0
    assert ndcg_at_k(TOPK_ONE, TARGETS_ONE, 1) == 0.0
    assert hit_rate_at_k(TOPK_ONE, TARGETS_ONE, 1) == 0.0
    # k = 2: list [3, 1] -> hit 1 at rank 2; recall = 1/2;
    # DCG = 1/log2(3); IDCG over min(2 targets, k=2) = 1 + 1/log2(3)
    assert recall_at_k(TOPK_ONE, TARGETS_ONE, 2) == pytest.approx(0.5)
    assert ndcg_at_k(TOPK_ONE, TARGETS_ONE, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert hit_rate_at_k(TOPK_ONE, TARGETS_ONE, 2) == 1.0


def test_ideal_dcg_is_capped_at_k():
    # topk [7, 9, 4], targets {7, 8, 9, 10}, k = 2: list [7, 9] -> both hit.
    # recall = 2/4 = 0.5 (plain recall: divides by all 4 targets)
    # DCG = 1 + 1/log2(3); IDCG over min(4, 2) = 2 positions = 1 + 1/log2(3) -> NDCG = 1.0
    topk, targets = np.array([[7, 9, 4]]), _t([7, 8, 9, 10])
    assert recall_at_k(topk, targets, 2) == pytest.approx(0.5)
    assert ndcg_at_k(topk, targets, 2) == pytest.approx(1.0)


def test_mean_over_queries():
    # q0: topk [0, 1, 2], targets {2}     -> recall 1/1, DCG 1/log2(4) = 0.5, IDCG 1 -> ndcg 0.5, hit 1
    # q1: topk [5, 6, 7], targets {5, 6} -> recall 2/2, DCG 1 + 1/log2(3), IDCG same -> ndcg 1, hit 1
    # q2: topk [1, 2, 3], targets {9}     -> recall 0, ndcg 0, hit 0
    # means: recall (1 + 1 + 0)/3 = 2/3; ndcg (0.5 + 1 + 0)/3 = 0.5; hit rate 2/3
    topk = np.array([[0, 1, 2], [5, 6, 7], [1, 2, 3]])
    targets = _t([2], [5, 6], [9])
    assert recall_at_k(topk, targets, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(topk, targets, 3) == pytest.approx(0.5)
    assert hit_rate_at_k(topk, targets, 3) == pytest.approx(2 / 3)


def test_queries_with_empty_targets_are_skipped():
    # q0 as in test_recall_one_query (recall 0.5, ndcg (1/log2 3)/(1 + 1/log2 3), hit 1); q1 has no targets and
    # does not count: the means are q0's values, not halved.
    topk = np.array([[3, 1, 2], [1, 2, 3]])
    targets = _t([1, 5], [])
    assert recall_at_k(topk, targets, 3) == pytest.approx(0.5)
    assert ndcg_at_k(topk, targets, 3) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert hit_rate_at_k(topk, targets, 3) == pytest.approx(1.0)


def test_only_empty_targets_gives_zero():
    topk = np.array([[3, 1, 2]])
    targets = _t([])
    assert recall_at_k(topk, targets, 3) == 0.0
    assert ndcg_at_k(topk, targets, 3) == 0.0
    assert hit_rate_at_k(topk, targets, 3) == 0.0


def test_all_miss_is_zero():
    topk = np.array([[0, 1, 2], [3, 4, 5]])
    targets = _t([9], [7, 8])
    assert recall_at_k(topk, targets, 3) == 0.0
    assert ndcg_at_k(topk, targets, 3) == 0.0
    assert hit_rate_at_k(topk, targets, 3) == 0.0


def test_perfect_ranking_is_one():
    # every target in the top ranks in any order -> recall 1, ndcg 1, hit 1
    topk = np.array([[4, 2, 0], [1, 3, 5]])
    targets = _t([2, 4], [1])
    assert recall_at_k(topk, targets, 3) == pytest.approx(1.0)
    assert ndcg_at_k(topk, targets, 3) == pytest.approx(1.0)
    assert hit_rate_at_k(topk, targets, 3) == pytest.approx(1.0)


def test_mismatched_lengths_are_an_error():
    # one ranking but two target lists: a caller bug, not a silent truncation
    with pytest.raises(ValueError):
        recall_at_k(np.array([[0, 1]]), _t([0], [1]), 2)


# --- MRR and precision ------------------------------------------------------------------------


def test_mrr_one_query():
    # topk [3, 1, 2], targets {1, 5}: first hit (item 1) at rank 2 -> 1/2; k = 1: list [3] -> no hit -> 0
    assert mrr_at_k(TOPK_ONE, TARGETS_ONE, 3) == pytest.approx(0.5)
    assert mrr_at_k(TOPK_ONE, TARGETS_ONE, 1) == 0.0


def test_mrr_counts_only_the_first_hit():
    # topk [9, 4, 7], targets {4, 7}: hits at ranks 2 and 3, only the first counts -> 1/2 (not 1/2 + 1/3)
    assert mrr_at_k(np.array([[9, 4, 7]]), _t([4, 7]), 3) == pytest.approx(0.5)


def test_precision_one_query():
    # top-3 {3, 1, 2} holds one target (1) -> 1/3; k = 2: [3, 1] -> 1/2; k = 1: [3] -> 0
    assert precision_at_k(TOPK_ONE, TARGETS_ONE, 3) == pytest.approx(1 / 3)
    assert precision_at_k(TOPK_ONE, TARGETS_ONE, 2) == pytest.approx(0.5)
    assert precision_at_k(TOPK_ONE, TARGETS_ONE, 1) == 0.0


def test_mrr_and_precision_mean_over_queries():
    # q0: topk [0, 1, 2], targets {2}    -> first hit rank 3: rr 1/3; 1 hit -> precision 1/3
    # q1: topk [5, 6, 7], targets {5, 6} -> first hit rank 1: rr 1;   2 hits -> precision 2/3
    # q2: topk [1, 2, 3], targets {9}    -> rr 0, precision 0
    # k = 3: mrr (1/3 + 1 + 0)/3 = 4/9; precision (1/3 + 2/3 + 0)/3 = 1/3
    # k = 1: lists [0], [5], [1] -> only q1 hits: mrr (0 + 1 + 0)/3 = 1/3; precision (0 + 1 + 0)/3 = 1/3
    topk = np.array([[0, 1, 2], [5, 6, 7], [1, 2, 3]])
    targets = _t([2], [5, 6], [9])
    assert mrr_at_k(topk, targets, 3) == pytest.approx(4 / 9)
    assert precision_at_k(topk, targets, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(topk, targets, 1) == pytest.approx(1 / 3)
    assert precision_at_k(topk, targets, 1) == pytest.approx(1 / 3)


def test_mrr_and_precision_skip_empty_targets():
    # q0: topk [3, 1, 2], targets {1, 5} -> rr 1/2, precision 1/3; q1 has no targets and does not count
    topk = np.array([[3, 1, 2], [1, 2, 3]])
    targets = _t([1, 5], [])
    assert mrr_at_k(topk, targets, 3) == pytest.approx(0.5)
    assert precision_at_k(topk, targets, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(topk, _t([], []), 3) == 0.0
    assert precision_at_k(topk, _t([], []), 3) == 0.0


def test_minus_one_padding_never_hits():
    # an exhausted catalog pads with -1; -1 is never a target.
    # q0: topk [4, -1, -1], targets {4}    -> recall 1, rr 1,   precision 1/3 (padding is a miss), ndcg 1
    # q1: topk [2, 0, -1],  targets {0, 3} -> recall 1/2, rr 1/2, precision 1/3,
    #     ndcg = (1/log2 3) / (1 + 1/log2 3)
    # means: recall 3/4, mrr 3/4, precision 1/3, hit rate 1, ndcg (1 + (1/log2 3)/(1 + 1/log2 3))/2
    topk = np.array([[4, -1, -1], [2, 0, -1]])
    targets = _t([4], [0, 3])
    assert recall_at_k(topk, targets, 3) == pytest.approx(0.75)
    assert mrr_at_k(topk, targets, 3) == pytest.approx(0.75)
    assert precision_at_k(topk, targets, 3) == pytest.approx(1 / 3)
    assert hit_rate_at_k(topk, targets, 3) == pytest.approx(1.0)
    q1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(topk, targets, 3) == pytest.approx((1 + q1) / 2)


def test_mrr_and_precision_reject_bad_k():
    topk = np.array([[0, 1, 2]])
    for bad in (0, 4):
        with pytest.raises(ValueError, match="width 3"):
            precision_at_k(topk, _t([0]), bad)
        with pytest.raises(ValueError, match="width 3"):
            mrr_at_k(topk, _t([0]), bad)


# --- ranking_metrics --------------------------------------------------------------------------


def test_ranking_metrics_keys_and_values():
    # the three queries of test_mrr_and_precision_mean_over_queries, at k = 1 and k = 3
    # k = 1: lists [0], [5], [1]; only q1 hits (item 5 of targets {5, 6})
    #   recall (0 + 1/2 + 0)/3 = 1/6; ndcg: q1 DCG 1, IDCG over min(2, 1) = 1 -> 1 -> mean 1/3;
    #   mrr 1/3; hit rate 1/3; precision 1/3
    # k = 3: recall 2/3, ndcg 1/2, mrr 4/9, hit rate 2/3, precision 1/3 (see the tests above)
    topk = np.array([[0, 1, 2], [5, 6, 7], [1, 2, 3]])
    targets = _t([2], [5, 6], [9])
    out = ranking_metrics(topk, targets, ks=(1, 3))
    expected = {
        "recall_at_1": 1 / 6, "ndcg_at_1": 1 / 3, "mrr_at_1": 1 / 3, "hit_rate_at_1": 1 / 3, "precision_at_1": 1 / 3,
        "recall_at_3": 2 / 3, "ndcg_at_3": 0.5, "mrr_at_3": 4 / 9, "hit_rate_at_3": 2 / 3, "precision_at_3": 1 / 3,
    }  # fmt: skip
    assert list(out) == list(expected)
    assert out == pytest.approx(expected)
    assert all(isinstance(v, float) for v in out.values())


def test_ranking_metrics_k_wider_than_topk_is_an_error():
    # default ks (10, 20, 50) on a width-3 ranking: the message names k and the width
    topk = np.array([[0, 1, 2]])
    with pytest.raises(ValueError, match=r"k=10.*width 3"):
        ranking_metrics(topk, _t([0]))
    with pytest.raises(ValueError, match=r"k=4.*width 3"):
        ranking_metrics(topk, _t([0]), ks=(3, 4))
