"""Offline metrics of complete-the-basket bundles: does a bundle composed from a user's known items
contain the items they actually added, how varied is it, and does it keep to a budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recsys.model.bundles import BundleCatalog, BundleConfig, compose_bundle


def bundle_metrics(
    catalog: BundleCatalog,
    queries: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    config: BundleConfig = BundleConfig(),
    max_queries: int | None = 2000,
    seed: int = 0,
    max_cart: int | None = 20,
    preference: Callable[[list[int]], np.ndarray | None] | None = None,
) -> dict[str, float]:
    """Bundle metrics over (cart, held-out items) pairs.

    - `bundle_recall`: held-out items found in the bundle / min(held-out items, k) (basket completion);
    - `bundle_hit_rate`: share of bundles holding at least one held-out item;
    - `bundle_categories`: mean number of distinct top-level categories per bundle;
    - `bundle_fill_rate`: share of bundles with all k items;
    - `bundle_within_budget`: share of bundles whose known prices sum to at most the budget (1.0 when
      there is no budget: every bundle is within it).
    At most `max_queries` pairs (a seeded sample) keep the cost bounded: ~2 ms per bundle. The cart is the
    query's last `max_cart` items (a user's most recent under a time split): a year of history is not a cart,
    and a bundle's cost grows with the cart times the catalog (92k items x 300 items took ~1 s per bundle).
    `preference(cart)`: the purchase model's preference for the cart, as the served model passes it
    (`recsys.model.bundles.cart_preference`); None for a model without one.
    """
    order = np.arange(len(queries))
    if max_queries is not None and len(order) > max_queries:
        order = np.sort(np.random.default_rng(seed).choice(order, max_queries, replace=False))
    recall, hits, cats, full, within = [], [], [], [], []
    k = config.k
    for j in order:
        cart = queries[j] if max_cart is None else queries[j][-max_cart:]
        cart = list(map(int, cart))
        bundle = compose_bundle(catalog, cart, config, preference=preference(cart) if preference else None)
        picked = np.array([item.index for item in bundle.items], dtype=np.int64)
        found = len(np.intersect1d(picked, targets[j]))
        recall.append(found / min(len(targets[j]), k) if len(targets[j]) else 0.0)
        hits.append(float(found > 0))
        cats.append(len({item.category for item in bundle.items if item.category is not None}))
        full.append(float(len(picked) == k))
        within.append(float(config.budget is None or bundle.total_price <= config.budget + 1e-9))
    if not recall:
        return {"bundle_recall": 0.0, "bundle_hit_rate": 0.0, "bundle_categories": 0.0, "bundle_fill_rate": 0.0, "bundle_within_budget": 0.0, "bundle_queries": 0.0}
    return {
        "bundle_recall": float(np.mean(recall)),
        "bundle_hit_rate": float(np.mean(hits)),
        "bundle_categories": float(np.mean(cats)),
        "bundle_fill_rate": float(np.mean(full)),
        "bundle_within_budget": float(np.mean(within)),
        "bundle_queries": float(len(recall)),
    }
