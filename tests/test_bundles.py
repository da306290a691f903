"""Tests of recsys.model.bundles: hand-computed bundles, every constraint, lazy == plain greedy, exact >= greedy,
and reasons that quote the catalog's real numbers.

The hand catalog (3-d vectors chosen for clean cosines, 100 customers):

    idx title                   vector           category  price  customers  bought with 0
    0   Espresso machine        (1, 0, 0)        Kitchen   200    20         -
    1   Coffee grinder          (.6, .8, 0)      Kitchen    40    10         10  lift 10*100/(20*10) = 5
    2   Coffee beans            (.6, 0, .8)      Grocery    15    25         10  lift 10*100/(20*25) = 2
    3   Burr grinder            (.8, .6, 0)      Kitchen    35    10          0
    4   Grinder brush           (0, 1, 0)        Cleaning    5     2          1  (below min_support 2)
    5   Espresso maker          (.96, .28, 0)    Kitchen   150    10          0
    6   Espresso machine (red)  (.98, .2, 0)/|.| Kitchen   210     5          0  cos to 0 = .9798 > .97: excluded
    7   Tamper                  (0, .6, .8)      Tools     n/a     0 (new)    0

NPMI = ln(lift) / -ln(P(both)); P(both) = 10/100 for items 1 and 2, so comp(1) = ln5/ln10 = log10(5)
= .698970 and comp(2) = log10(2) = .301030 (they sum to exactly 1). Pairwise cosines used below:
cos(1,2)=.36 cos(1,3)=.96 cos(1,4)=.8 cos(1,5)=.8 cos(1,7)=.48 cos(2,3)=.48 cos(2,4)=0 cos(2,5)=.576
cos(2,7)=.64 cos(3,4)=.6 cos(3,5)=.936 cos(3,7)=.36 cos(4,5)=.28 cos(4,7)=.6.
Defaults: w_r = w_c = w_red = 1, w_d = .3, category_bonus .5, k = 4 (so pair cosines are divided by 3),
dup(x) = clip((x - .92) / .05, 0, 1): dup(.96) = .8, dup(.936) = .32.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.model.bundles import (
    Bundle,
    BundleCatalog,
    BundleConfig,
    compose_bundle,
    cooccurrence_stats,
    exact_bundle,
    explain_item,
    preference_from_scores,
    top_category,
)
from recsys.data.schema import CATEGORY, EVENT, ITEM_ID, PRICE, TITLE, USER_ID

TITLES = [
    "Espresso machine",
    "Coffee grinder",
    "Coffee beans",
    "Burr grinder",
    "Grinder brush",
    "Espresso maker",
    "Espresso machine (red)",
    "Tamper",
]


def hand_catalog() -> BundleCatalog:
    vectors = np.array(
        [[1, 0, 0], [0.6, 0.8, 0], [0.6, 0, 0.8], [0.8, 0.6, 0], [0, 1, 0], [0.96, 0.28, 0], [0.98, 0.2, 0], [0, 0.6, 0.8]]
    )
    counts = np.array([20, 10, 25, 10, 2, 10, 5, 0])
    pairs = {(0, 1): 10, (0, 2): 10, (0, 4): 1}
    rows, cols, data = [], [], []
    for (a, b), v in pairs.items():
        rows += [a, b]
        cols += [b, a]
        data += [v, v]
    return BundleCatalog(
        item_ids=[f"p{i}" for i in range(8)],
        titles=TITLES,
        vectors=vectors,
        categories=["Kitchen", "Kitchen", "Grocery", "Kitchen", "Cleaning", "Kitchen", "Kitchen", "Tools"],
        prices=np.array([200, 40, 15, 35, 5, 150, 210, np.nan]),
        cooc=sp.csr_matrix((data, (rows, cols)), shape=(8, 8)),
        item_counts=counts,
        n_customers=100,
        is_new=counts == 0,
    )


@pytest.fixture(scope="module")
def cat() -> BundleCatalog:
    return hand_catalog()


def picks(b: Bundle) -> list[int]:
    return [it.index for it in b.items]


def assert_breakdown(b: dict[str, float], rel: float, comp: float, div: float, cat_: float, red: float) -> None:
    assert b["relevance"] == pytest.approx(rel, abs=1e-9)
    assert b["complementarity"] == pytest.approx(comp, abs=1e-9)
    assert b["diversity"] == pytest.approx(div, abs=1e-9)
    assert b["category"] == pytest.approx(cat_, abs=1e-9)
    assert b["redundancy"] == pytest.approx(red, abs=1e-9)
    assert b["total"] == pytest.approx(rel + comp + div - red, abs=1e-9)


# --- the hand catalog ----------------------------------------------------------------------


def test_anchor_only_cart_hand_computed(cat):
    b = compose_bundle(cat, [0])
    # step 1, S = {}: gain = rel + comp + .3*(1 + .5*[new category]) - dup(cos to cart)
    #   1: .6 + .698970 + .3              = 1.598970   <- picked
    #   2: .6 + .301030 + .3*1.5          = 1.351030
    #   3: .8 + .3                        = 1.1
    #   4: 0 + .3*1.5                     = .45 (cooc 1 < min_support: no complementarity)
    #   5: .96 + .3 - dup(.96)=.8         = .46
    #   7: 0 + .3*1.5                     = .45 ; 6 excluded (cos .9798 to the cart)
    # step 2, S = {1}: diversity = .3*(1 - Σcos⁺/3 + .5*[new])
    #   2: .6 + .301030 + .3*(1 - .36/3 + .5) = .6 + .301030 + .414 = 1.315030   <- picked
    #   3: .8 + .3*(1 - .96/3) - dup(.96) = .8 + .204 - .8 = .204
    #   4: .3*(1 - .8/3 + .5) = .37 ; 5: .96 + .3*(1 - .8/3) - .8 = .38 ; 7: .3*(1 - .48/3 + .5) = .402
    # step 3, S = {1, 2}:
    #   4: .3*(1 - (.8 + 0)/3 + .5) = .37   <- picked
    #   5: .96 + .3*(1 - 1.376/3) - .8 = .3224 ; 7: .3*(1 - 1.12/3 + .5) = .338 ; 3: .8 + .156 - .8 = .156
    # step 4, S = {1, 2, 4} (Kitchen 1/2 used, so 5 may join):
    #   5: .96 + .3*(1 - 1.656/3) - .8 = .96 + .1344 - .8 = .2944   <- picked
    #   7: .3*(1 - 1.72/3 + .5) = .278 ; 3: .8 + .3*(1 - 2.04/3) - .8 = .096
    assert picks(b) == [1, 2, 4, 5]
    log5, log2 = math.log10(5), math.log10(2)
    assert_breakdown(b.items[0].breakdown, 0.6, log5, 0.3, 0.0, 0.0)
    assert_breakdown(b.items[1].breakdown, 0.6, log2, 0.414, 0.15, 0.0)
    assert_breakdown(b.items[2].breakdown, 0.0, 0.0, 0.37, 0.15, 0.0)
    assert_breakdown(b.items[3].breakdown, 0.96, 0.0, 0.1344, 0.0, 0.8)
    assert b.total_score == pytest.approx(0.6 + 0.3 + 0.6 + 0.414 + 1.0 + 0.37 + 0.2944)  # 3.5784
    assert b.total_price == pytest.approx(40 + 15 + 5 + 150)
    assert b.note is None and b.method == "lazy-greedy"
    assert b.items[0].item_id == "p1" and b.items[0].title == "Coffee grinder" and b.items[0].category == "Kitchen"
    assert "near-duplicates of the cart excluded (cosine > 0.97): 1" in b.constraints
    assert "max 2 per category: Kitchen 2/2, Grocery 1/2, Cleaning 1/2" in b.constraints


def test_hand_reasons_quote_the_real_numbers(cat):
    b = compose_bundle(cat, [0])
    assert b.items[0].reasons == [
        "bought together with Espresso machine by 10 customers (lift 5.0)",  # comp .699 > rel .6: first
        "close in meaning to Espresso machine (similarity 0.60)",
    ]
    assert b.items[1].reasons == [
        "close in meaning to Espresso machine (similarity 0.60)",
        "bought together with Espresso machine by 10 customers (lift 2.0)",
        "adds a new category: Grocery",
    ]
    # the brush was bought with the machine by 1 customer (< min_support): no "bought together"
    assert b.items[2].reasons == ["adds a new category: Cleaning"]
    assert b.items[3].reasons == [
        "close in meaning to Espresso machine (similarity 0.96)",
        "scored lower as a possible substitute for Espresso machine (similarity 0.96)",
    ]


def test_k_limits_the_size(cat):
    b = compose_bundle(cat, [0], BundleConfig(k=2))
    # k = 2 divides pair cosines by 1: step 2 gain of 2 = .6 + .301030 + .3*(1 - .36 + .5) = 1.243030
    assert picks(b) == [1, 2]
    assert b.items[1].breakdown["total"] == pytest.approx(0.6 + math.log10(2) + 0.3 * 1.14)
    assert b.note is None and b.constraints[0] == "size: 2 of k=2"


def test_budget_greedy_and_exact(cat):
    cfg = BundleConfig(budget=50)
    g = compose_bundle(cat, [0], cfg)
    # 5 (150) is over budget, 7 has no price; greedy: 1 (40), then only 4 (5) fits the 10 left: 1.598970 + .37
    assert picks(g) == [1, 4]
    assert g.total_price == pytest.approx(45)
    assert g.total_score == pytest.approx(1.598970 + 0.37, abs=1e-6)
    assert "budget 50.00: 45.00 used, 5.00 left" in g.constraints
    assert g.note is not None and g.note.startswith("2 of 4 items")
    assert "2 candidate(s) exceed the remaining budget 5.00" in g.note
    assert "1 item(s) have no price and a budget is set" in g.note
    assert g.items[0].reasons[-1] == "fits the budget: 40.00 of the 50.00 left"
    assert g.items[1].reasons[-1] == "fits the budget: 5.00 of the 10.00 left"
    # the gain-per-price pass does worse: 2 (1.351030/15 = .0901), then 4 (.45/5), then nothing fits
    # the 30 left (1 costs 40, 3 costs 35): 1.351030 + .45 = 1.801030 < 1.968970, so the plain pass wins
    assert g.method == "lazy-greedy"
    # the optimum spends the budget on 2 (15) + 3 (35): 1.351030 + (.8 + .3*(1 - .48/3)) = 1.351030 + 1.052
    e = exact_bundle(cat, [0], cfg)
    assert picks(e) == [2, 3] and e.total_price == pytest.approx(50)
    assert e.total_score == pytest.approx(1.351030 + 1.052, abs=1e-6)
    assert_breakdown(e.items[1].breakdown, 0.8, 0.0, 0.252, 0.0, 0.0)
    assert e.method == "exact"


def test_gain_per_price_pass_beats_one_expensive_item():
    # modular instance (w_d = 0, no co-purchases, no categories): gain = relevance.
    # X: rel .9, price 100; Y1..Y3: rel .6, price 30 each (pairwise cos .36 or -.28: no redundancy).
    # budget 100. Plain greedy takes X and has nothing left: F = .9. Gain per price: Y .6/30 = .02 beats
    # X .9/100 = .009, so Y1, Y2, Y3 (90 spent; X no longer fits): F = 1.8, also the exact optimum.
    catalog = BundleCatalog(
        item_ids=["a", "x", "y1", "y2", "y3"],
        titles=["Anchor", "X", "Y1", "Y2", "Y3"],
        vectors=np.array([[1, 0, 0, 0], [0.9, 0.43589, 0, 0], [0.6, 0, 0.8, 0], [0.6, 0, 0, 0.8], [0.6, 0, -0.8, 0]]),
        categories=[None] * 5,
        prices=np.array([10, 100, 30, 30, 30]),
        cooc=sp.csr_matrix((5, 5)),
        item_counts=np.zeros(5),
        n_customers=0,
        is_new=np.zeros(5, dtype=bool),
    )
    cfg = BundleConfig(w_diversity=0.0, budget=100)
    b = compose_bundle(catalog, [0], cfg)
    assert picks(b) == [2, 3, 4] and b.method == "lazy-greedy (gain per price)"
    assert b.total_score == pytest.approx(1.8) and b.total_price == pytest.approx(90)
    assert exact_bundle(catalog, [0], cfg).total_score == pytest.approx(1.8)
    # the budget rule alone (skip what no longer fits)
    skip_only = compose_bundle(catalog, [0], BundleConfig(w_diversity=0.0, budget=100, cost_benefit_pass=False))
    assert picks(skip_only) == [1] and skip_only.total_score == pytest.approx(0.9, abs=1e-5)
    assert skip_only.note is not None and "3 candidate(s) exceed the remaining budget 0.00" in skip_only.note


def test_pool_keeps_a_quota_per_category(cat):
    # static scores (rel + comp - dup to cart): 1 1.298970, 2 .901030, 3 .8, 5 .16, 4 0, 7 0.
    # A pool of 3 takes 1, 2, 3; with one candidate per category 3 (Kitchen, like 1) gives way to 4.
    full = compose_bundle(cat, [0], BundleConfig(candidate_pool=3, pool_per_category=10))
    assert picks(full) == [1, 2, 3]  # 3 last: .8 + .3*(1 - 1.44/3) - dup(.96) = .156
    quota = compose_bundle(cat, [0], BundleConfig(candidate_pool=3, pool_per_category=1))
    assert picks(quota) == [1, 2, 4]
    assert quota.note == "3 of 4 items: the candidate pool held only 3 item(s)"
    # without a category cap the quota does not apply
    assert picks(compose_bundle(cat, [0], BundleConfig(candidate_pool=3, pool_per_category=1, max_per_category=None))) == [1, 2, 3]


def test_unknown_price_allowed_when_configured(cat):
    b = compose_bundle(cat, [0], BundleConfig(budget=50, allow_unknown_price=True))
    assert 7 in picks(b)
    tamper = next(it for it in b.items if it.index == 7)
    assert tamper.price is None and "price unknown: not counted against the budget" in tamper.reasons
    # without a budget an unknown price never matters
    assert 7 in picks(compose_bundle(cat, [0], BundleConfig(max_per_category=1)))


def test_budget_below_every_price_gives_empty_bundle_with_note(cat):
    b = compose_bundle(cat, [0], BundleConfig(budget=1))
    assert b.items == [] and b.total_score == 0.0 and b.total_price == 0.0
    assert b.note is not None and b.note.startswith("no items: the budget 1.00 is below every price (cheapest 5.00)")
    e = exact_bundle(cat, [0], BundleConfig(budget=1))
    assert e.items == [] and e.note is not None and e.note.startswith("no items")


def test_category_cap(cat):
    b = compose_bundle(cat, [0], BundleConfig(max_per_category=1))
    # after 1 (Kitchen) no other Kitchen item may join: 2, 4, then 7 at .3*(1 - 1.72/3 + .5) = .278
    assert picks(b) == [1, 2, 4, 7]
    assert len({it.category for it in b.items}) == 4
    assert b.items[3].breakdown["total"] == pytest.approx(0.278)
    assert b.items[3].reasons == ["adds a new category: Tools", "new item (no sales in the training data), recommended from its description"]
    assert "max 1 per category: Kitchen 1/1, Grocery 1/1, Cleaning 1/1, Tools 1/1" in b.constraints


def test_exclusion(cat):
    b = compose_bundle(cat, [0], exclude={1})
    # S={} 2: 1.351030; S={2} 3: .8 + .3*(1 - .48/3) = 1.052 ; S={2,3} 4: .3*(1 - .6/3 + .5) = .39
    # (5 is now .96 + .3*(1 - 1.512/3) - (.8 + dup(.936)=.32) = -.0112) ; S={2,3,4} 7: .3*(1 - 1.6/3 + .5) = .29
    assert picks(b) == [2, 3, 4, 7]
    assert [round(it.breakdown["total"], 6) for it in b.items] == [1.35103, 1.052, 0.39, 0.29]
    assert "excluded by request: 1 item(s)" in b.constraints


def test_cart_items_are_never_picked(cat):
    b = compose_bundle(cat, [0, 1, 2])
    assert not {0, 1, 2} & set(picks(b)) and b.cart == [0, 1, 2]
    assert compose_bundle(cat, [0, 0]).cart == [0]  # a repeated cart item counts once
    with pytest.raises(ValueError, match="cart is empty"):
        compose_bundle(cat, [])
    with pytest.raises(ValueError, match="cart item indices"):
        compose_bundle(cat, [8])


def test_near_duplicate_penalised_then_excluded(cat):
    # penalised: without the redundancy term the espresso maker (cos .96 to the cart) wins step 3
    # at .96 + .3*(1 - 1.376/3) = 1.1224 instead of coming last at .2944
    plain = compose_bundle(cat, [0], BundleConfig(w_redundancy=0))
    assert picks(plain) == [1, 2, 5, 4]
    assert plain.items[2].breakdown["total"] == pytest.approx(1.1224)
    # excluded: item 6 (cos .9798 > .97 to the cart) is never picked, even without the penalty
    assert 6 not in picks(plain) and 6 not in picks(compose_bundle(cat, [0], BundleConfig(max_per_category=None)))


def test_near_duplicate_of_a_bundle_item_is_excluded():
    # a = anchor; b and b2 are the same product (cos 1); c is unrelated. w_redundancy = 0 so only the
    # hard rule keeps b2 out: it would score .6 (> c's .3*(1 - .8/1) = .06) as the second pick
    catalog = BundleCatalog(
        item_ids=["a", "b", "b2", "c"],
        titles=["A", "B", "B copy", "C"],
        vectors=np.array([[1, 0], [0.6, 0.8], [0.6, 0.8], [0, 1]]),
        categories=[None] * 4,
        prices=np.full(4, np.nan),
        cooc=sp.csr_matrix((4, 4)),
        item_counts=np.zeros(4),
        n_customers=0,
        is_new=np.zeros(4, dtype=bool),
    )
    cfg = BundleConfig(k=2, w_redundancy=0)
    b = compose_bundle(catalog, [0], cfg)
    assert picks(b) == [1, 3]
    assert b.items[1].breakdown["total"] == pytest.approx(0.06)
    assert picks(exact_bundle(catalog, [0], cfg)) == [1, 3]
    # with the exclusion off (threshold 1.0: here cos(b, b2) is exactly 1.0, not above it) b2 joins
    loose = BundleConfig(k=2, w_redundancy=0, duplicate_threshold=0.999, exclude_threshold=1.0)
    assert picks(compose_bundle(catalog, [0], loose)) == [1, 2]


def test_cold_item_reason(cat):
    b = compose_bundle(cat, [2], BundleConfig(k=2))
    # cart = beans. S={} 0: .6 + .301030 + .3*1.5 = 1.351030 (Kitchen is new) ; 7: .64 + .45 = 1.09
    # S={0}: 7: .64 + .3*(1 - 0/1 + .5) = 1.09 ; 6 is excluded (cos .9798 to the picked machine)
    assert picks(b) == [0, 7]
    assert_breakdown(b.items[1].breakdown, 0.64, 0.0, 0.45, 0.15, 0.0)
    assert b.items[1].reasons == [
        "close in meaning to Coffee beans (similarity 0.64)",
        "adds a new category: Tools",
        "new item (no sales in the training data), recommended from its description",
    ]


def test_multi_item_cart_relevance_uses_the_mean(cat):
    b = compose_bundle(cat, [0, 1], BundleConfig(k=1))
    # mean of (1,0,0) and (.6,.8,0) normalised = (2,1,0)/√5; 3 = (.8,.6,0): rel = 2.2/√5 = .983870
    # but cos(3,1) = .96 -> redundancy .8; 2: rel 1.2/√5 = .536656, comp = (log10 2 + 0)/2, new category
    # -> 2: .536656 + .150515 + .45 = 1.137171 ; 3: .983870 + .3 - .8 = .483870 ; 2 wins
    assert picks(b) == [2]
    assert b.items[0].breakdown["relevance"] == pytest.approx(1.2 / math.sqrt(5))
    assert b.items[0].breakdown["complementarity"] == pytest.approx(math.log10(2) / 2)
    # the reason names the most similar cart item and its own cosine, not the mean's
    assert "close in meaning to Espresso machine (similarity 0.60)" in b.items[0].reasons


def test_explain_item_reusable_for_plain_recommendations(cat):
    assert explain_item(cat, 3, [0], {"relevance": 0.8}) == ["close in meaning to Espresso machine (similarity 0.80)"]
    assert explain_item(cat, 4, [0], {"relevance": 0.0}) == []  # zero signal: no reason
    # names the most similar cart item (beans .64, machine 0), with its own cosine
    assert explain_item(cat, 7, [0, 2], {"relevance": 0.1}) == [
        "close in meaning to Coffee beans (similarity 0.64)",
        "new item (no sales in the training data), recommended from its description",
    ]
    assert explain_item(cat, 1, [2], {"relevance": 0.36}) == ["close in meaning to Coffee beans (similarity 0.36)"]
    # a weak similarity (cos(4, 2) = 0 < REASON_MIN_SIMILARITY) is no reason a shopper would recognise
    assert explain_item(cat, 4, [2], {"relevance": 0.01}) == []
    # a caller's score that rewards a shared category is explained as such
    assert explain_item(cat, 3, [0], {"category": 0.1}) == ["same category as Espresso machine"]
    # complementarity > 0 claimed but no cart item reaches min_support: no invented evidence
    assert explain_item(cat, 4, [0], {"complementarity": 0.2}) == []


def test_exact_equals_greedy_on_hand_instance(cat):
    assert picks(exact_bundle(cat, [0])) == picks(compose_bundle(cat, [0]))
    assert exact_bundle(cat, [0]).total_score == pytest.approx(compose_bundle(cat, [0]).total_score)


# --- catalog construction ------------------------------------------------------------------


def test_cooccurrence_stats_binary_per_customer():
    # u0 bought item 0 twice and item 1; u1 bought 0, 1, 2; u2 bought 2
    users = np.array(["u0", "u0", "u0", "u1", "u1", "u1", "u2"])
    items = np.array([0, 0, 1, 0, 1, 2, 2])
    co, counts, n = cooccurrence_stats(users, items, 4)
    assert n == 3
    assert counts.tolist() == [2, 2, 2, 0]
    assert co.toarray().tolist() == [[0, 2, 1, 0], [2, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    empty, zeros, n0 = cooccurrence_stats([], [], 3)
    assert empty.nnz == 0 and zeros.tolist() == [0, 0, 0] and n0 == 0
    with pytest.raises(ValueError):
        cooccurrence_stats([1], [5], 3)


def test_cooccurrence_stats_prunes_below_min_count_block_by_block():
    users = np.array(["u0", "u0", "u0", "u1", "u1", "u1", "u2"])
    items = np.array([0, 0, 1, 0, 1, 2, 2])
    full, counts, n = cooccurrence_stats(users, items, 4)
    for block in (1, 2, 3, 4096):  # block edges inside, at and beyond the catalog give one matrix
        same, _, _ = cooccurrence_stats(users, items, 4, block_items=block)
        assert (same != full).nnz == 0 and same.has_sorted_indices
        pruned, pruned_counts, pruned_n = cooccurrence_stats(users, items, 4, min_count=2, block_items=block)
        # only the (0, 1) pair has two customers; counts and customers are not pruned
        assert pruned.toarray().tolist() == [[0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
        assert pruned_counts.tolist() == counts.tolist() and pruned_n == n
    with pytest.raises(ValueError, match="min_count"):
        cooccurrence_stats(users, items, 4, min_count=0)


@pytest.mark.parametrize("seed", range(12))
def test_a_catalog_pruned_below_min_support_serves_the_same_bundles_and_reasons(seed):
    catalog, cart, cfg, exclude = random_request(seed)
    pruned = random_catalog(seed, min_count=cfg.min_support)
    assert pruned.cooc.nnz < catalog.cooc.nnz  # something was pruned: the comparison is not vacuous
    full, small = compose_bundle(catalog, cart, cfg, exclude), compose_bundle(pruned, cart, cfg, exclude)
    assert picks(small) == picks(full)
    assert [it.reasons for it in small.items] == [it.reasons for it in full.items]
    assert small.total_score == pytest.approx(full.total_score, abs=1e-12)
    # below the kept support the answer would be missing pairs: refused, with the rule
    with pytest.raises(ValueError, match="below the 2 customers"):
        compose_bundle(pruned, cart, dataclasses.replace(cfg, min_support=1), exclude)
    with pytest.raises(ValueError, match="below the 2 customers"):
        explain_item(pruned, 0, cart, {"complementarity": 1.0}, min_support=1)


def test_behaviour_file_keeps_the_pruning_floor_and_stores_counts_as_integers(tmp_path):
    from recsys.serving import _load_behaviour, save_behaviour

    pruned = random_catalog(3, min_count=2)
    path = save_behaviour(tmp_path / "behaviour.npz", pruned)
    assert np.load(path)["cooc_data"].dtype == np.uint32
    back = _load_behaviour(str(path), pruned.item_ids, pruned.titles, pruned.vectors)
    assert back.cooc_min_count == 2 and (back.cooc != pruned.cooc).nnz == 0
    assert picks(compose_bundle(back, [0, 1], BundleConfig(k=3))) == picks(compose_bundle(pruned, [0, 1], BundleConfig(k=3)))


def test_from_frames_uses_schema_columns():
    items = pd.DataFrame(
        {
            ITEM_ID: ["a", "b", "c"],
            TITLE: ["Mug", "Plate", "Bowl"],
            CATEGORY: ["Home > Kitchen > Mugs", None, "Home"],
            PRICE: pd.array([3.5, None, 2.0], dtype="Float64"),
        }
    )
    inter = pd.DataFrame(
        {
            USER_ID: ["x", "x", "y", "y", "z"],
            ITEM_ID: ["a", "b", "a", "b", "c"],
            EVENT: ["purchase", "purchase", "purchase", "purchase", "view"],
        }
    )
    catalog = BundleCatalog.from_frames(items, inter, np.eye(3))
    assert catalog.categories == ["Home", None, "Home"]
    assert np.isnan(catalog.prices[1]) and catalog.prices[0] == 3.5
    assert catalog.cooc[0, 1] == 2 and catalog.n_customers == 2
    assert catalog.is_new.tolist() == [False, False, False]  # c was viewed: it has history
    assert top_category(pd.NA) is None and top_category("  ") is None


def test_config_validation():
    with pytest.raises(ValueError):
        BundleConfig(k=0)
    with pytest.raises(ValueError):
        BundleConfig(duplicate_threshold=0.98, exclude_threshold=0.97)
    with pytest.raises(ValueError):
        BundleConfig(max_per_category=0)
    with pytest.raises(ValueError):
        BundleConfig(budget=-1)


# --- random instances ----------------------------------------------------------------------


def random_catalog(seed: int, n: int = 30, d: int = 4, min_count: int = 1) -> BundleCatalog:
    """Clustered unit vectors with a few near-duplicate variants, 4 categories + None, some unknown prices."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, d))
    vec = centers[rng.integers(0, 4, n)] + 0.7 * rng.normal(size=(n, d))
    variants = rng.choice(n, size=n // 6, replace=False)
    vec[variants] = vec[(variants + 1) % n] + 0.08 * rng.normal(size=(len(variants), d))  # cos ~ .9-.99
    cats = [None if r == 4 else f"c{r}" for r in rng.integers(0, 5, n)]
    prices = rng.lognormal(2.5, 0.6, n)
    prices[rng.random(n) < 0.1] = np.nan
    n_users = 80
    users = np.repeat(np.arange(n_users), 4)
    pop = rng.random(n) ** 2
    pop[rng.random(n) < 0.1] = 0  # cold items
    items = rng.choice(n, size=len(users), p=pop / pop.sum())
    titles = [f"item {i}" for i in range(n)]
    return BundleCatalog.build([f"i{i}" for i in range(n)], titles, vec, cats, prices, users, items, min_count=min_count)


def random_config(rng: np.random.Generator, **kw: object) -> BundleConfig:
    base = dict(
        k=int(rng.integers(2, 5)),
        w_diversity=float(rng.uniform(0.1, 0.6)),
        budget=float(rng.uniform(20, 60)) if rng.random() < 0.5 else None,
        max_per_category=[None, 1, 2][int(rng.integers(0, 3))],
        allow_unknown_price=bool(rng.random() < 0.5),
        duplicate_threshold=0.9,
        exclude_threshold=0.97,
    )
    base.update(kw)
    return BundleConfig(**base)  # type: ignore[arg-type]


def objective(catalog: BundleCatalog, cart: list[int], S: list[int], cfg: BundleConfig, pref: np.ndarray | None = None) -> float:
    """F(S) from the module docstring's formula, written independently of the module's code."""
    v = catalog.vectors
    mean = v[cart].mean(axis=0)
    u = mean / np.linalg.norm(mean) if np.linalg.norm(mean) > 1e-12 else np.zeros_like(mean)
    n = catalog.n_customers

    def dup(x: float) -> float:
        return min(1.0, max(0.0, (x - cfg.duplicate_threshold) / (cfg.exclude_threshold - cfg.duplicate_threshold)))

    def comp(i: int) -> float:
        vals = []
        for c in cart:
            both = catalog.cooc[c, i]
            if both >= cfg.min_support and both < n:
                lift = both * n / (catalog.item_counts[c] * catalog.item_counts[i])
                vals.append(max(0.0, math.log(lift)) / -math.log(both / n))
            else:
                vals.append(0.0)
        return float(np.mean(vals))

    total = 0.0
    for i in S:
        total += cfg.w_relevance * float(v[i] @ u) + cfg.w_complement * comp(i) + cfg.w_diversity
        total += cfg.w_preference * (0.0 if pref is None else float(pref[i]))
        total -= cfg.w_redundancy * dup(max(float(v[i] @ v[c]) for c in cart))
    cart_cats = {catalog.categories[c] for c in cart}
    new = {catalog.categories[i] for i in S} - cart_cats - {None}
    total += cfg.w_diversity * cfg.category_bonus * len(new)
    for i, j in itertools.combinations(S, 2):
        cos = float(v[i] @ v[j])
        total -= cfg.w_diversity * max(cos, 0.0) / max(cfg.k - 1, 1) + cfg.w_redundancy * dup(cos)
    return total


def feasible(catalog: BundleCatalog, cart: list[int], S: list[int], cfg: BundleConfig, exclude: set[int]) -> bool:
    v = catalog.vectors
    if set(S) & (set(cart) | exclude) or len(S) > cfg.k:
        return False
    if any(float(v[i] @ v[j]) > cfg.exclude_threshold for i in S for j in [*cart, *[s for s in S if s != i]]):
        return False
    prices = catalog.prices[S]
    if cfg.budget is not None:
        if not cfg.allow_unknown_price and np.isnan(prices).any():
            return False
        if np.nansum(prices) > cfg.budget + 1e-9:
            return False
    if cfg.max_per_category is not None:
        cats = [catalog.categories[i] for i in S if catalog.categories[i] is not None]
        if cats and max(cats.count(c) for c in cats) > cfg.max_per_category:
            return False
    return True


def naive_greedy(catalog: BundleCatalog, cart: list[int], cfg: BundleConfig, exclude: set[int], pref: np.ndarray | None = None) -> list[int]:
    """Plain greedy: every round re-scores every feasible item by F(S + i) - F(S); ties -> lower index.

    With a budget it also runs on gain per price and keeps the better set, as compose_bundle does.
    """
    passes = [naive_pass(catalog, cart, cfg, exclude, per_cost=False, pref=pref)]
    if cfg.budget is not None and cfg.cost_benefit_pass:
        passes.append(naive_pass(catalog, cart, cfg, exclude, per_cost=True, pref=pref))
    values = [objective(catalog, cart, S, cfg, pref) for S in passes]
    return passes[1] if len(passes) == 2 and values[1] > values[0] + 1e-12 else passes[0]


def naive_pass(
    catalog: BundleCatalog, cart: list[int], cfg: BundleConfig, exclude: set[int], per_cost: bool, pref: np.ndarray | None = None
) -> list[int]:
    S: list[int] = []
    while len(S) < cfg.k:
        base = objective(catalog, cart, S, cfg, pref)
        best, best_key = None, 0.0
        for i in range(catalog.n_items):
            if i in S or not feasible(catalog, cart, [*S, i], cfg, exclude):
                continue
            gain = objective(catalog, cart, [*S, i], cfg, pref) - base
            price = 0.0 if np.isnan(catalog.prices[i]) else catalog.prices[i]
            key = gain / max(price, 1e-6 * max(cfg.budget or 0.0, 1.0)) if per_cost else gain
            if key > best_key + 1e-12:
                best, best_key = i, key
        if best is None:
            break
        S.append(best)
    return S


def random_request(seed: int) -> tuple[BundleCatalog, list[int], BundleConfig, set[int]]:
    rng = np.random.default_rng(1000 + seed)
    catalog = random_catalog(seed)
    cart = rng.choice(catalog.n_items, size=int(rng.integers(1, 4)), replace=False).tolist()
    exclude = set(rng.choice(catalog.n_items, size=int(rng.integers(0, 4)), replace=False).tolist())
    return catalog, cart, random_config(rng), exclude


@pytest.mark.parametrize("seed", range(30))
def test_lazy_greedy_equals_naive_greedy(seed):
    catalog, cart, cfg, exclude = random_request(seed)
    b = compose_bundle(catalog, cart, cfg, exclude)
    assert picks(b) == naive_greedy(catalog, cart, cfg, exclude)
    assert b.total_score == pytest.approx(objective(catalog, cart, picks(b), cfg), abs=1e-9)
    assert feasible(catalog, cart, picks(b), cfg, exclude)
    for it in b.items:
        bd = it.breakdown
        assert bd["total"] == pytest.approx(bd["relevance"] + bd["complementarity"] + bd["diversity"] - bd["redundancy"])
    if len(b.items) < cfg.k:
        assert b.note
    else:
        assert b.note is None


@pytest.mark.parametrize("seed", range(15))
def test_exact_at_least_greedy(seed):
    catalog, cart, cfg, exclude = random_request(seed)
    cfg = dataclasses.replace(cfg, candidate_pool=10)
    g = compose_bundle(catalog, cart, cfg, exclude)
    e = exact_bundle(catalog, cart, cfg, exclude, pool=10)
    assert e.total_score >= g.total_score - 1e-9
    assert e.total_score == pytest.approx(objective(catalog, cart, picks(e), cfg), abs=1e-9)
    assert feasible(catalog, cart, picks(e), cfg, exclude)


@pytest.mark.parametrize("seed", range(10))
def test_greedy_is_exact_for_a_modular_objective_on_a_matroid(seed):
    # no diversity and no redundancy make F modular; k plus a category cap is a matroid: greedy is optimal
    catalog, cart, cfg, exclude = random_request(seed)
    cfg = BundleConfig(
        k=cfg.k, w_diversity=0.0, duplicate_threshold=0.999, exclude_threshold=1.0, max_per_category=1, candidate_pool=12
    )
    g = compose_bundle(catalog, cart, cfg, exclude)
    e = exact_bundle(catalog, cart, cfg, exclude, pool=12)
    assert g.total_score == pytest.approx(e.total_score, abs=1e-12)
    assert sorted(picks(g)) == sorted(picks(e))


@pytest.mark.parametrize("seed", range(30))
def test_reasons_match_signals(seed):
    catalog, cart, cfg, exclude = random_request(seed)
    b = compose_bundle(catalog, cart, cfg, exclude)
    for it in b.items:
        bd, text = it.breakdown, "\n".join(it.reasons)
        together = re.search(r"bought together with (.+) by (\d+) customers \(lift ([\d.]+)\)", text)
        assert (together is not None) == (bd["complementarity"] > 0)
        if together:
            c = cart[[catalog.titles[c] for c in cart].index(together.group(1))]
            both = catalog.cooc[c, it.index]
            lift = both * catalog.n_customers / (catalog.item_counts[c] * catalog.item_counts[it.index])
            assert int(together.group(2)) == both >= cfg.min_support
            assert together.group(3) == f"{lift:.1f}"
        close = re.search(r"close in meaning to (.+) \(similarity ([-\d.]+)\)", text)
        if bd["relevance"] <= 0:
            assert close is None
        if close:
            sims = {catalog.titles[c]: float(catalog.vectors[c] @ catalog.vectors[it.index]) for c in cart}
            assert close.group(1) == max(sims, key=sims.get)
            assert close.group(2) == f"{sims[close.group(1)]:.2f}"
        assert ("adds a new category" in text) == (bd["category"] > 0)
        assert ("new item" in text) == bool(catalog.is_new[it.index])
        assert ("budget" in text) == (cfg.budget is not None)
        assert ("substitute" in text) == (bd["redundancy"] > 0)


def test_preference_from_scores_hand_computed():
    # the best score outside the cart (item 0: 2.0) is the unit; the cart, negatives and non-finite scores give 0
    pref = preference_from_scores(np.array([2.0, -1.0, 4.0, np.nan, 1.0, -np.inf]), [2])
    assert pref.tolist() == [1.0, 0.0, 0.0, 0.0, 0.5, 0.0]
    assert preference_from_scores(np.array([-1.0, -2.0]), [0]).tolist() == [0.0, 0.0]


def random_preference(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(5000 + seed)
    return preference_from_scores(np.where(rng.random(n) < 0.4, 0.0, rng.random(n)), [])


@pytest.mark.parametrize("seed", range(15))
def test_a_purchase_model_preference_is_optimised_and_explained(seed):
    catalog, cart, cfg, exclude = random_request(seed)
    cfg = dataclasses.replace(cfg, w_preference=float(np.random.default_rng(seed).uniform(0.5, 3.0)))
    pref = random_preference(seed, catalog.n_items)
    pref[cart] = 0.0
    b = compose_bundle(catalog, cart, cfg, exclude, preference=pref)
    assert picks(b) == naive_greedy(catalog, cart, cfg, exclude, pref)
    assert b.total_score == pytest.approx(objective(catalog, cart, picks(b), cfg, pref), abs=1e-9)
    e = exact_bundle(catalog, cart, dataclasses.replace(cfg, candidate_pool=10), exclude, pool=10, preference=pref)
    assert e.total_score >= compose_bundle(catalog, cart, dataclasses.replace(cfg, candidate_pool=10), exclude, preference=pref).total_score - 1e-9
    for it in b.items:
        bd, text = it.breakdown, "\n".join(it.reasons)
        assert bd["preference"] == pytest.approx(cfg.w_preference * pref[it.index])
        assert bd["total"] == pytest.approx(bd["relevance"] + bd["complementarity"] + bd["preference"] + bd["diversity"] - bd["redundancy"])
        quoted = re.search(r"often bought by shoppers with this cart \(purchase model: (\d+)% of its top score\)", text)
        assert (quoted is not None) == (pref[it.index] > 0)
        if quoted:
            assert quoted.group(1) == f"{pref[it.index]:.0%}".rstrip("%")


def test_preference_outside_0_1_or_of_the_wrong_length_is_refused(cat):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        compose_bundle(cat, [0], BundleConfig(k=2), preference=np.full(cat.n_items, 2.0))
    with pytest.raises(ValueError, match="preference must be"):
        compose_bundle(cat, [0], BundleConfig(k=2), preference=np.zeros(cat.n_items + 1))


def test_lazy_greedy_saves_evaluations():
    catalog = random_catalog(7, n=600, d=16)
    cfg = BundleConfig(k=4, candidate_pool=200)
    b = compose_bundle(catalog, [0, 1], cfg)
    assert len(b.items) == 4
    assert b.evaluations < 200 * 4  # the plain greedy evaluates the whole pool every round


@pytest.mark.parametrize("seed", range(6))
def test_similarities_computed_for_many_one_item_carts_at_once_give_the_same_bundles(seed):
    """Publishing computes every anchor's cosines in one matrix product per block of anchors
    (`single_item_similarities`); each equals the one-cart scan, and so do the bundles."""
    from recsys.model.bundles import cart_similarities, single_item_similarities

    catalog, _, cfg, exclude = random_request(seed)
    items = np.arange(catalog.n_items)
    batched = list(single_item_similarities(catalog, items, block=7))  # blocks that do not divide n
    assert len(batched) == catalog.n_items
    for i, sims in zip(items, batched, strict=True):
        np.testing.assert_allclose(sims, cart_similarities(catalog, np.array([i])), rtol=1e-12, atol=1e-12)
        given, scanned = compose_bundle(catalog, [i], cfg, exclude, similarities=sims), compose_bundle(catalog, [i], cfg, exclude)
        assert picks(given) == picks(scanned) and [it.reasons for it in given.items] == [it.reasons for it in scanned.items]
    with pytest.raises(ValueError, match="similarities must be"):
        compose_bundle(catalog, [0, 1], cfg, similarities=batched[0])  # a one-item cart's rows for a two-item cart
