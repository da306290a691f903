"""Churn between two versions' related-item lists: hand-computed small cases."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.churn import churn_line, churn_metric_values, churn_metrics, churn_queries, popularity_buckets, related_topk


def test_churn_of_a_hand_computed_case() -> None:
    # 3 queries, k = 3, catalog of 6 items
    candidate = np.array([[1, 2, 3], [0, 4, 5], [4, 5, -1]])
    champion = np.array([[2, 1, 3], [3, 2, 1], [4, 5, 0]])
    popularity = np.array([0, 60, 30, 10, 0, 0])  # head: 1; torso: 2; tail: 3; unsold: 0, 4, 5
    categories = ["a", "a", "b", "b", None, "c"]
    c = churn_metrics(candidate, champion, popularity, categories)
    # overlaps: 3/3, 0/3, 2/3 -> mean 5/9
    assert c["overlap"] == pytest.approx(5 / 9) and c["churn"] == pytest.approx(4 / 9)
    assert c["changed_entirely"] == pytest.approx(1 / 3)
    # taus: query 0: candidate order 1,2,3 ranked 1,0,2 by the champion -> pairs (1,0) discordant, (1,2) and (0,2) concordant: 1/3
    #       query 2: 4,5 in the same order: 1.0; query 1 shares nothing
    assert c["rank_correlation"] == pytest.approx((1 / 3 + 1.0) / 2) and c["rank_correlation_queries"] == 2
    # slots: candidate 1,2,3,0,4,5,4,5 (8); champion 2,1,3,3,2,1,4,5,0 (9)
    pop = c["exposure_by_popularity"]
    assert pop["head"] == {"candidate": pytest.approx(1 / 8), "champion": pytest.approx(2 / 9)}
    assert pop["torso"] == {"candidate": pytest.approx(1 / 8), "champion": pytest.approx(2 / 9)}
    assert pop["tail"] == {"candidate": pytest.approx(1 / 8), "champion": pytest.approx(2 / 9)}
    assert pop["unsold"] == {"candidate": pytest.approx(5 / 8), "champion": pytest.approx(3 / 9)}
    assert c["exposure_shift_popularity"] == pytest.approx(5 / 8 - 3 / 9)
    # categories: candidate a 2 (items 1, 0), b 2 (2, 3), c 2 (5, 5), none 2 (4, 4) of 8;
    #             champion a 3 (1, 1, 0), b 4 (2, 3, 3, 2), c 1 (5), none 1 (4) of 9
    cat = c["exposure_by_category"]
    assert cat["a"] == {"candidate": pytest.approx(2 / 8), "champion": pytest.approx(3 / 9)}
    assert cat["b"] == {"candidate": pytest.approx(2 / 8), "champion": pytest.approx(4 / 9)}
    assert c["exposure_shift_category"] == pytest.approx(0.5 * (abs(2 / 8 - 3 / 9) + abs(2 / 8 - 4 / 9) + abs(2 / 8 - 1 / 9) + abs(2 / 8 - 1 / 9)))
    values = churn_metric_values(c)
    assert values["churn.churn_at_3"] == pytest.approx(4 / 9) and values["churn.queries"] == 3
    assert "44% of the top-3 slots change" in churn_line(c) and "33% of the lists change entirely" in churn_line(c)


def test_identical_lists_do_not_churn() -> None:
    top = np.array([[1, 2], [0, 2], [0, 1]])
    c = churn_metrics(top, top.copy(), np.array([5, 3, 1]))
    assert (c["overlap"], c["churn"], c["changed_entirely"], c["rank_correlation"], c["exposure_shift_popularity"]) == (1.0, 0.0, 0.0, 1.0, 0.0)


def test_popularity_buckets_split_purchases_in_thirds() -> None:
    # 100 purchases: item 0 holds 50 (head), item 1 the next 30 (starts at 0.5: torso), 2 and 3 start at 0.8 and 0.9 (tail)
    assert popularity_buckets(np.array([50, 30, 10, 10, 0])).tolist() == [0, 1, 2, 2, 3]


def test_related_topk_excludes_the_query_and_pads_unscorable_slots() -> None:
    scores = np.array([[9.0, 5.0, 1.0, -np.inf], [2.0, 9.0, 3.0, 1.0], [1.0, 2.0, 9.0, -np.inf]])
    score = lambda queries: scores[[int(q[0]) for q in queries]]  # noqa: E731
    top = related_topk(score, np.array([0, 1, 2]), k=3, batch_size=2)
    assert top.tolist() == [[1, 2, -1], [2, 0, 3], [1, 0, -1]]


def test_churn_queries_are_a_fixed_sample_on_large_catalogs() -> None:
    ids = [f"i{n}" for n in range(50)]
    assert churn_queries(ids, 100).tolist() == list(range(50))
    sample = churn_queries(ids, 10)
    assert len(sample) == 10 and sample.tolist() == sorted(sample.tolist())
    # the same ids give the same sample whatever their order in the catalog
    shuffled = ids[::-1]
    assert sorted(shuffled[i] for i in churn_queries(shuffled, 10)) == sorted(ids[i] for i in sample)
