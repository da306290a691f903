"""Golden tests of recsys.evaluation.beyond_accuracy on tiny hand-built top-k lists.

Every expected value is computed by hand in the comment next to it. -1 in a top-k list is padding
(an exhausted catalog) and is ignored.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.evaluation.beyond_accuracy import (
    beyond_accuracy_report,
    catalog_coverage,
    category_diversity,
    category_masks,
    exposure_gini,
    head_tail_masks,
    intra_list_diversity,
    long_tail_share,
    novelty,
    slice_recall,
)
from recsys.evaluation.metrics import recall_at_k

SQRT2 = math.sqrt(2)

# 4 items in 2-D, deliberately not unit length: v0 = (1, 0), v1 = (0, 1), v2 = (1, 1) -> (1/√2, 1/√2),
# v3 = (-2, 0) -> (-1, 0). Cosines: c01 = 0, c02 = c12 = 1/√2, c03 = -1, c13 = 0, c23 = -1/√2.
VECTORS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-2.0, 0.0]])

# popularity [3, 1, 0, 7] over 7 users -> self-information -log2((p + 1)/8):
# item 0: -log2(4/8) = 1; item 1: -log2(2/8) = 2; item 2: -log2(1/8) = 3; item 3: -log2(8/8) = 0
POPULARITY = np.array([3, 1, 0, 7])
N_USERS = 7


def _t(*rows: list[int]) -> list[np.ndarray]:
    return [np.array(r, dtype=np.int64) for r in rows]


# --- catalog coverage -------------------------------------------------------------------------


def test_coverage():
    # k = 3: items {0, 1, 2} ∪ {0, 3, 1} = {0, 1, 2, 3} -> 4/5; k = 2: {0, 1, 3} -> 3/5; k = 1: {0} -> 1/5
    topk = np.array([[0, 1, 2], [0, 3, 1]])
    assert catalog_coverage(topk, 5, 3) == pytest.approx(0.8)
    assert catalog_coverage(topk, 5, 2) == pytest.approx(0.6)
    assert catalog_coverage(topk, 5, 1) == pytest.approx(0.2)


def test_coverage_ignores_padding():
    # -1 is not an item: {0} ∪ {2} = 2 of 4 items -> 0.5; all padding -> 0
    assert catalog_coverage(np.array([[0, -1, -1], [2, -1, -1]]), 4, 3) == pytest.approx(0.5)
    assert catalog_coverage(np.array([[-1, -1]]), 4, 2) == 0.0


def test_items_outside_the_catalog_and_bad_k_are_errors():
    with pytest.raises(ValueError, match="outside the catalog"):
        catalog_coverage(np.array([[0, 5]]), 5, 2)
    with pytest.raises(ValueError, match="outside the catalog"):
        exposure_gini(np.array([[0, -2]]), 5, 2)
    with pytest.raises(ValueError, match=r"k=3.*width 2"):
        catalog_coverage(np.array([[0, 1]]), 5, 3)
    with pytest.raises(ValueError, match=r"k=0"):
        novelty(np.array([[0, 1]]), POPULARITY, N_USERS, 0)


# --- intra-list diversity ---------------------------------------------------------------------


def test_intra_list_diversity():
    # list [0, 1, 2]: distances 1 - c01 = 1, 1 - c02 = 1 - 1/√2, 1 - c12 = 1 - 1/√2 -> mean (3 - √2)/3
    # list [0, 3]:    distance 1 - (-1) = 2 -> mean 2
    # list [1]:       one item (after dropping the padding) -> skipped
    # mean over the two lists: ((3 - √2)/3 + 2)/2 = 1.26429...
    topk = np.array([[0, 1, 2], [0, 3, -1], [1, -1, -1]])
    expected = ((3 - SQRT2) / 3 + 2) / 2
    assert intra_list_diversity(topk, VECTORS, 3) == pytest.approx(expected, abs=1e-12)


def test_intra_list_diversity_k_cut_and_single_items():
    # k = 2: lists [0, 1] -> 1, [0, 3] -> 2, [1] skipped -> 1.5; k = 1: every list has one item -> 0.0
    topk = np.array([[0, 1, 2], [0, 3, -1], [1, -1, -1]])
    assert intra_list_diversity(topk, VECTORS, 2) == pytest.approx(1.5, abs=1e-12)
    assert intra_list_diversity(topk, VECTORS, 1) == 0.0


def test_intra_list_diversity_does_not_depend_on_vector_length():
    # scaling each row leaves the cosines, hence the result, unchanged
    topk = np.array([[0, 1, 2], [0, 3, -1]])
    scaled = VECTORS * np.array([[3.0], [0.5], [10.0], [1.0]])
    assert intra_list_diversity(topk, scaled, 3) == pytest.approx(intra_list_diversity(topk, VECTORS, 3), abs=1e-12)


# --- category diversity -----------------------------------------------------------------------

CATEGORIES = ["A", "A", "B", None, "C"]


def test_category_diversity():
    # k = 3: [0, 1, 2] -> A, A, B: 2 distinct / 3 known = 2/3
    #        [3, 4, 0] -> None, C, A: 2 distinct / 2 known = 1
    #        [3]       -> no known category -> skipped
    #        mean (2/3 + 1)/2 = 5/6
    # k = 2: [0, 1] -> 1/2; [3, 4] -> C only: 1/1; [3] skipped -> 3/4
    # k = 1: [0] -> 1/1; [3] and [3] skipped -> 1
    topk = np.array([[0, 1, 2], [3, 4, 0], [3, -1, -1]])
    assert category_diversity(topk, CATEGORIES, 3) == pytest.approx(5 / 6)
    assert category_diversity(topk, CATEGORIES, 2) == pytest.approx(0.75)
    assert category_diversity(topk, CATEGORIES, 1) == pytest.approx(1.0)


def test_category_diversity_without_known_categories_is_zero():
    assert category_diversity(np.array([[3, -1]]), CATEGORIES, 2) == 0.0


# --- novelty ----------------------------------------------------------------------------------


def test_novelty():
    # k = 3: slots 0, 1, 2, 3, 2 (the -1 dropped) -> (1 + 2 + 3 + 0 + 3)/5 = 9/5
    #        (a mean over slots, not over lists: the list means 2 and 3/2 would give 7/4)
    # k = 1: slots 0, 3 -> (1 + 0)/2 = 1/2
    topk = np.array([[0, 1, 2], [3, 2, -1]])
    assert novelty(topk, POPULARITY, N_USERS, 3) == pytest.approx(1.8)
    assert novelty(topk, POPULARITY, N_USERS, 1) == pytest.approx(0.5)


def test_novelty_of_unseen_item_is_finite():
    # popularity 0 with add-one smoothing: -log2(1/8) = 3 = log2(n_users + 1); only padding -> 0
    assert novelty(np.array([[2]]), POPULARITY, N_USERS, 1) == pytest.approx(3.0)
    assert novelty(np.array([[-1]]), POPULARITY, N_USERS, 1) == 0.0


# --- exposure Gini ----------------------------------------------------------------------------


def test_gini_equal_exposure_is_zero():
    # counts [1, 1, 1, 1] and [2, 2] -> 0
    assert exposure_gini(np.array([[0, 1], [2, 3]]), 4, 2) == pytest.approx(0.0, abs=1e-12)
    assert exposure_gini(np.array([[0, 1], [1, 0]]), 2, 2) == pytest.approx(0.0, abs=1e-12)


def test_gini_hand_case():
    # counts: item 0 three times, item 1 twice, item 2 once, item 3 never (the -1 dropped)
    # sorted x = [0, 1, 2, 3], n = 4, Σx = 6, weights 2i - n - 1 = -3, -1, 1, 3
    # G = (0·-3 + 1·-1 + 2·1 + 3·3)/(4·6) = 10/24 = 5/12
    # (check: Σ_ij |xi - xj| = 2·(1 + 2 + 3 + 1 + 2 + 1) = 20; / (2 n² mean) = 20/(2·16·1.5) = 5/12)
    topk = np.array([[0, 1, 2], [0, 1, -1], [0, -1, -1]])
    assert exposure_gini(topk, 4, 3) == pytest.approx(5 / 12, abs=1e-12)


def test_gini_all_slots_on_one_item():
    # counts [0, 2, 0, 0] (items never shown count) -> sorted [0, 0, 0, 2]: G = 3·2/(4·2) = 3/4 = (n - 1)/n
    assert exposure_gini(np.array([[1, 0], [1, 3]]), 4, 1) == pytest.approx(0.75, abs=1e-12)


def test_gini_without_slots_is_zero():
    assert exposure_gini(np.array([[-1, -1]]), 3, 2) == 0.0


# --- head / tail ------------------------------------------------------------------------------


def test_head_tail_masks_break_ties_by_index():
    # 5 items, head_share 0.2 -> 1 head item; items 1 and 2 tie at 5 -> the lower index (1) wins
    head, tail = head_tail_masks(np.array([2, 5, 5, 1, 0]), 0.2)
    assert head.tolist() == [False, True, False, False, False]
    assert tail.tolist() == [True, False, True, True, True]


def test_head_size_is_floored_without_float_noise():
    # 10 items, head_share 0.3: 0.3·10 = 3.0000000000000004 in floats -> 3 head items, not 4.
    # -popularity stable order: 1 (9), 5 (9), 0 (5), 2 (5), 8 (5), ... -> head {0, 1, 5}
    pop = np.array([5, 9, 5, 1, 0, 9, 2, 3, 5, 0])
    head, _ = head_tail_masks(pop, 0.3)
    assert np.flatnonzero(head).tolist() == [0, 1, 5]
    # 0.2·10 = 2 -> {1, 5}; 4 items at 0.2 -> floor(0.8) = 0 head items; 0 and 1 are the extremes
    assert np.flatnonzero(head_tail_masks(pop, 0.2)[0]).tolist() == [1, 5]
    assert not head_tail_masks(POPULARITY, 0.2)[0].any()
    assert not head_tail_masks(pop, 0.0)[0].any()
    assert head_tail_masks(pop, 1.0)[0].all()
    with pytest.raises(ValueError):
        head_tail_masks(pop, 1.5)


def test_long_tail_share():
    # popularity [2, 5, 5, 1, 0]; head_share 0.2 -> head {1}
    # k = 3: slots 1, 2, 0, 1, 3 (the -1 dropped) -> tail slots 2, 0, 3 -> 3/5
    # k = 1: slots 1, 1 -> 0
    # head_share 0.4 -> head {1, 2}: tail slots 0, 3 -> 2/5
    pop = np.array([2, 5, 5, 1, 0])
    topk = np.array([[1, 2, 0], [1, 3, -1]])
    assert long_tail_share(topk, pop, 3) == pytest.approx(0.6)
    assert long_tail_share(topk, pop, 1) == 0.0
    assert long_tail_share(topk, pop, 3, head_share=0.4) == pytest.approx(0.4)


# --- slices -----------------------------------------------------------------------------------

SLICE_TOPK = np.array([[3, 0, 1], [2, 5, 4], [0, 1, 2], [4, 3, 5]])
SLICE_TARGETS = _t([3, 4, 0], [4], [1], [])
COLD = np.array([False, False, False, True, True, False])  # items 3 and 4


def test_slice_recall():
    # slice targets: q0 {3, 4}, q1 {4}, q2 none (skipped), q3 no targets (skipped)
    # k = 3: q0 top-3 [3, 0, 1] holds 3 -> 1/2; q1 [2, 5, 4] holds 4 -> 1 -> (3/4, 2 queries)
    # k = 2: q0 [3, 0] -> 1/2; q1 [2, 5] -> 0 -> (1/4, 2)
    value, n = slice_recall(SLICE_TOPK, SLICE_TARGETS, COLD, 3)
    assert (value, n) == (pytest.approx(0.75), 2)
    value, n = slice_recall(SLICE_TOPK, SLICE_TARGETS, COLD, 2)
    assert (value, n) == (pytest.approx(0.25), 2)


def test_slice_recall_full_mask_is_recall():
    # every item in the slice: q0 2/3, q1 1, q2 1, q3 skipped -> (8/9, 3), the same as recall_at_k
    value, n = slice_recall(SLICE_TOPK, SLICE_TARGETS, np.ones(6, dtype=bool), 3)
    assert (value, n) == (pytest.approx(8 / 9), 3)
    assert value == pytest.approx(recall_at_k(SLICE_TOPK, SLICE_TARGETS, 3))


def test_slice_recall_empty_slice():
    assert slice_recall(SLICE_TOPK, SLICE_TARGETS, np.zeros(6, dtype=bool), 3) == (0.0, 0)


def test_category_masks_use_top_levels():
    masks = category_masks(["Home > Kitchen", "Toys", None, "Home", "", "Toys > Lego"])
    assert list(masks) == ["Home", "Toys"]
    assert masks["Home"].tolist() == [True, False, False, True, False, False]
    assert masks["Toys"].tolist() == [False, True, False, False, False, True]


# --- report -----------------------------------------------------------------------------------


def test_report_with_every_input():
    # topk [[0, 1, 2], [3, 2, -1]], 4 items, k = 3
    # coverage: {0, 1, 2, 3} -> 4/4 = 1
    # ild: [0, 1, 2] -> (3 - √2)/3; [3, 2] -> 1 - (-1/√2) = 1 + 1/√2; mean of the two
    # category diversity (A, A, B, None): [0, 1, 2] -> 2/3; [3, 2] -> B only: 1/1 -> 5/6
    # novelty: 9/5 (test_novelty)
    # gini: counts [1, 1, 2, 1] -> sorted [1, 1, 1, 2], Σx = 5: (-3 - 1 + 1 + 6)/(4·5) = 3/20
    # long tail: 4 items at head_share 0.2 -> no head item -> every slot is tail -> 1
    topk = np.array([[0, 1, 2], [3, 2, -1]])
    out = beyond_accuracy_report(
        topk, n_items=4, k=3, vectors=VECTORS, categories=["A", "A", "B", None], popularity=POPULARITY, n_users=N_USERS
    )
    expected = {
        "coverage_at_3": 1.0,
        "ild_at_3": ((3 - SQRT2) / 3 + 1 + 1 / SQRT2) / 2,
        "category_diversity_at_3": 5 / 6,
        "novelty_at_3": 1.8,
        "gini_at_3": 0.15,
        "long_tail_share_at_3": 1.0,
    }
    assert set(out) == set(expected)
    assert out == pytest.approx(expected, abs=1e-12)


def test_report_skips_metrics_without_inputs():
    # only topk: coverage {0, 1} -> 2/3; gini counts [1, 1, 0] -> sorted [0, 1, 1]: (0 + 0 + 2)/(3·2) = 1/3
    topk = np.array([[0], [1]])
    assert beyond_accuracy_report(topk, n_items=3, k=1) == pytest.approx({"coverage_at_1": 2 / 3, "gini_at_1": 1 / 3})
    # popularity without n_users: long-tail share but no novelty
    out = beyond_accuracy_report(topk, n_items=3, k=1, popularity=np.array([1, 2, 3]))
    assert set(out) == {"coverage_at_1", "gini_at_1", "long_tail_share_at_1"}
