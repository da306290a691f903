"""Bundle metrics: the arithmetic over bundles the real composer builds on a tiny catalog."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.bundle_eval import bundle_metrics
from recsys.model.bundles import BundleCatalog, BundleConfig, compose_bundle


def _catalog() -> BundleCatalog:
    # 6 items in 3 categories; customers buy 0 with 1, 2 with 3, 4 with 5 (strong complements)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    users, items = [], []
    for u in range(30):
        a = 2 * (u % 3)
        users += [u, u]
        items += [a, a + 1]
    return BundleCatalog.build(
        [f"i{j}" for j in range(6)],
        [f"item {j}" for j in range(6)],
        vectors,
        ["a", "a", "b", "b", "c", "c"],
        np.array([1.0, 2.0, 3.0, 4.0, 50.0, 60.0]),
        np.array(users),
        np.array(items),
    )


def test_metrics_match_the_bundles_the_composer_builds() -> None:
    cat = _catalog()
    cfg = BundleConfig(k=2, min_support=1)
    queries = [np.array([0]), np.array([2]), np.array([4])]
    targets = [np.array([1]), np.array([5]), np.array([5, 3])]
    bundles = [[it.index for it in compose_bundle(cat, list(q), cfg).items] for q in queries]
    m = bundle_metrics(cat, queries, targets, cfg)
    expected_recall = np.mean([len(set(b) & set(t)) / min(len(t), 2) for b, t in zip(bundles, targets)])
    assert m["bundle_recall"] == pytest.approx(expected_recall)
    assert m["bundle_hit_rate"] == pytest.approx(np.mean([bool(set(b) & set(t)) for b, t in zip(bundles, targets)]))
    assert m["bundle_categories"] == pytest.approx(np.mean([len({cat.categories[i] for i in b}) for b in bundles]))
    assert m["bundle_fill_rate"] == 1.0 and m["bundle_within_budget"] == 1.0 and m["bundle_queries"] == 3


def test_budget_is_respected_and_reported() -> None:
    cat = _catalog()
    cfg = BundleConfig(k=2, min_support=1, budget=10.0)
    m = bundle_metrics(cat, [np.array([4]), np.array([0])], [np.array([5]), np.array([1])], cfg)
    # item 5 costs 60: over budget, so the cart [4] cannot get its complement
    assert m["bundle_within_budget"] == 1.0
    assert m["bundle_recall"] == pytest.approx(0.5)  # only the second cart is completed


def test_sampling_bounds_the_work_and_empty_input() -> None:
    cat = _catalog()
    queries = [np.array([0])] * 10
    targets = [np.array([1])] * 10
    assert bundle_metrics(cat, queries, targets, BundleConfig(k=1, min_support=1), max_queries=4)["bundle_queries"] == 4
    assert bundle_metrics(cat, [], [], BundleConfig())["bundle_queries"] == 0


def test_the_cart_is_the_querys_most_recent_items() -> None:
    """A year of history is not a cart: only the query's last `max_cart` items anchor the bundle."""
    cat = _catalog()
    cfg = BundleConfig(k=1, min_support=1)
    # history 0 then 4: with max_cart=1 the cart is {4}, whose complement 5 is the held-out item
    assert [it.index for it in compose_bundle(cat, [4], cfg).items] == [5]
    assert bundle_metrics(cat, [np.array([0, 4])], [np.array([5])], cfg, max_cart=1)["bundle_hit_rate"] == 1.0
    whole = [it.index for it in compose_bundle(cat, [0, 4], cfg).items]
    assert bundle_metrics(cat, [np.array([0, 4])], [np.array([5])], cfg, max_cart=None)["bundle_hit_rate"] == float(5 in whole)


def test_the_purchase_models_preference_reaches_the_composer() -> None:
    """The metric measures what is served: with the model's preference, its pick; without, the catalog's."""
    cat = _catalog()
    cfg = BundleConfig(k=1, min_support=1)
    # cart [0]: the catalog's own terms pick something else than item 3; a model that prefers 3 outweighs them
    assert [it.index for it in compose_bundle(cat, [0], cfg).items] != [3]
    seen: list[list[int]] = []

    def preference(cart: list[int]) -> np.ndarray:
        seen.append(cart)
        return np.eye(6)[3]

    m = bundle_metrics(cat, [np.array([0])], [np.array([3])], cfg, preference=preference)
    assert m["bundle_hit_rate"] == 1.0 and seen == [[0]]
    assert bundle_metrics(cat, [np.array([0])], [np.array([3])], cfg)["bundle_hit_rate"] == 0.0
