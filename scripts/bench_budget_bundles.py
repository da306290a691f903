"""Bundles under a budget on real baskets (issue 13, step 5): a trained model's "complete the basket"
against the held-out half of real test-window baskets, with and without a budget.

For each sampled test basket (>= `--min-basket` distinct products, from the run's own test window) a
seeded half of its products is the cart and the other half is held out. The model's bundle (k items,
`recsys.model.bundles.compose_bundle` through the packaged model, exactly what `recsys bundle` serves)
is composed with no budget and under each budget, and measured:

- hit rate: share of bundles holding at least one held-out product; recall: held-out products found /
  min(held out, k);
- value: the bundle's total price (known prices), and items per bundle;
- binds: share of requests whose unconstrained bundle costs more than the budget (there the budget
  changed the answer);
- price reasons: share of picked items whose reasons cite the price ("fits the budget: ...").

Budgets: fixed amounts, and "basket" = what the shopper actually paid for the held-out products (their
catalog prices summed), the budget a shopper completing that very basket would have had. Two
price-blind references under the same budgets: the unconstrained bundle cut to the budget (its most
expensive picks dropped until it fits), and the most popular products that fit (greedy by popularity);
and the model's own ranking for the cart (`ItemRecommender.score_batch`, the related-items answer) taken
in order while it fits.

    .venv/bin/python scripts/bench_budget_bundles.py --run-dir RUN_DIR [--baskets 1000] [--k 5] [--json out.json]

RUN_DIR is a training run folder (`runs/<run>/`) with `model/`, `split/` and `data/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.data import schema as S  # noqa: E402


def window_baskets(run_dir: Path, index: dict[str, int], min_basket: int, part: str) -> list[np.ndarray]:
    """The baskets of the split's `part` window ("val" or "test"; item indices, distinct, sorted), those
    with >= min_basket products. The model never trained on either window."""
    pairs = pd.read_parquet(run_dir / "split" / "pairs.parquet", columns=["part", "timestamp"])
    times = pairs.loc[pairs["part"] == part, "timestamp"]
    start, end = times.min(), times.max()
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet", columns=[S.ITEM_ID, S.TIMESTAMP, S.BASKET_ID])
    test = inter[inter[S.TIMESTAMP].between(start, end) & inter[S.ITEM_ID].isin(index) & inter[S.BASKET_ID].notna()]
    codes = test[S.ITEM_ID].map(index).to_numpy()
    groups = pd.Series(codes).groupby(test[S.BASKET_ID].to_numpy()).agg(lambda s: np.unique(s.to_numpy()))
    return [g for g in groups if len(g) >= min_basket]


def cut_to_budget(picked: list[int], prices: np.ndarray, budget: float) -> list[int]:
    """The price-blind reference: drop the most expensive picks until the rest fits the budget."""
    keep = list(picked)
    price = lambda i: 0.0 if math.isnan(prices[i]) else float(prices[i])  # noqa: E731
    while keep and sum(price(i) for i in keep) > budget + 1e-9:
        keep.remove(max(keep, key=price))
    return keep


def ranked_within(order: np.ndarray, cart: set[int], prices: np.ndarray, k: int, budget: float | None) -> list[int]:
    """Priced products not in the cart, in the given order, added while they fit."""
    picked, spent = [], 0.0
    for i in order:
        if i in cart or math.isnan(prices[i]):
            continue
        if budget is not None and spent + prices[i] > budget + 1e-9:
            continue
        picked.append(int(i))
        spent += float(prices[i])
        if len(picked) == k:
            break
    return picked


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--baskets", type=int, default=1000, help="test baskets sampled (seeded)")
    ap.add_argument("--min-basket", type=int, default=4, help="fewest distinct products in a basket to split it")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--budgets", default="basket,5,10,20", help="comma list: amounts, or 'basket' (the held-out half's value)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preference-weight", type=float, default=None, help="BundleConfig.w_preference (the model's preference in the bundle objective; 0 = left out); default: the config's")
    ap.add_argument("--max-per-category", default=None, help="BundleConfig.max_per_category ('none' = no cap); default: the config's")
    ap.add_argument("--diversity-weight", type=float, default=None, help="BundleConfig.w_diversity; default: the config's")
    ap.add_argument("--window", default="test", choices=["val", "test"], help="whose baskets: choose weights on val, report test")
    ap.add_argument("--budgets-only", action="store_true", help="no references (faster, for choosing weights)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from recsys.model.bundles import BundleConfig, cart_preference, compose_bundle
    from recsys.serving import ItemRecommender

    t0 = time.perf_counter()
    model = ItemRecommender.load(args.run_dir / "model")
    cat = model.behaviour
    print(f"model loaded in {time.perf_counter() - t0:.1f} s: {cat.n_items:,} items, {np.isfinite(cat.prices).mean():.0%} with a price")
    baskets = window_baskets(args.run_dir, model.index, args.min_basket, args.window)
    overrides = {key: v for key, v in (("w_preference", args.preference_weight), ("w_diversity", args.diversity_weight)) if v is not None}
    if args.max_per_category is not None:
        overrides["max_per_category"] = None if args.max_per_category == "none" else int(args.max_per_category)
    base = BundleConfig(k=args.k, **overrides)
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(len(baskets), min(args.baskets, len(baskets)), replace=False)
    print(f"{len(baskets):,} {args.window} baskets with >= {args.min_basket} products; {len(sample):,} sampled; "
          f"w_preference {base.w_preference:g}, w_diversity {base.w_diversity:g}, max_per_category {base.max_per_category}")
    popularity = np.argsort(-cat.item_counts, kind="stable")
    budgets = [None] + [b if b == "basket" else float(b) for b in args.budgets.split(",") if b]
    names = ["none"] + [str(b) for b in budgets[1:]]
    references = ("cut", "popular", "model")
    rows: dict[str, dict[str, list[float]]] = {f"{m} @ {n}": {} for n in names for m in ("bundle", *references)}

    def record(key: str, picked: list[int], held: np.ndarray, budget: float | None, **extra: float) -> None:
        found = len(np.intersect1d(picked, held))
        value = float(np.nansum(cat.prices[picked])) if picked else 0.0
        out = rows[key]
        for name, v in {
            "hit_rate": float(found > 0),
            "recall": found / min(len(held), args.k),
            "value": value,
            "items": float(len(picked)),
            "categories": float(len({cat.categories[i] for i in picked} - {None})),
            "within": float(budget is None or value <= budget + 1e-9),
            **extra,
        }.items():
            out.setdefault(name, []).append(v)

    held_values = []
    for b in tqdm(sample, desc="baskets", mininterval=10):
        items = baskets[b]
        perm = rng.permutation(items)
        cart, held = np.sort(perm[: (len(items) + 1) // 2]), np.sort(perm[(len(items) + 1) // 2 :])
        held_value = float(np.nansum(cat.prices[held]))
        held_values.append(held_value)
        scores = model.score_batch([cart.astype(np.int64)])[0]
        pref = cart_preference(model.model, cart.tolist(), scores) if base.w_preference > 0 else None  # as serving passes it
        free = compose_bundle(cat, cart.tolist(), base, preference=pref)
        model_order = np.argsort(-scores, kind="stable")[: 50 * args.k]  # enough room for budgets and unpriced items
        free_picked = [it.index for it in free.items]
        for name, budget in zip(names, budgets):
            amount = held_value if budget == "basket" else budget
            if amount is None:
                bundle, binds = free, 0.0
            else:
                binds = float(free.total_price > amount + 1e-9)
                bundle = free if not binds else compose_bundle(cat, cart.tolist(), dataclasses.replace(base, budget=amount), preference=pref)
            picked = [it.index for it in bundle.items]
            # a picked item's reasons cite the price when it was chosen under a binding budget
            cites = [any("budget" in r for r in it.reasons) for it in bundle.items] if amount is not None and binds else []
            record(f"bundle @ {name}", picked, held, amount, binds=binds, price_reasons=float(np.mean(cites)) if cites else 0.0)
            if args.budgets_only:
                continue
            record(f"cut @ {name}", free_picked if amount is None else cut_to_budget(free_picked, cat.prices, amount), held, amount)
            record(f"popular @ {name}", ranked_within(popularity, set(cart.tolist()), cat.prices, args.k, amount), held, amount)
            record(f"model @ {name}", ranked_within(model_order, set(cart.tolist()), cat.prices, args.k, amount), held, amount)

    summary = {key: {m: float(np.mean(v)) for m, v in vals.items()} for key, vals in rows.items() if vals}
    print(f"\n{len(sample):,} baskets; held-out half's value: median {np.median(held_values):.2f}, mean {np.mean(held_values):.2f}; "
          f"k = {args.k}; {time.perf_counter() - t0:.0f} s")
    print(f"{'bundle @ budget':<22} {'hit rate':>8} {'recall':>7} {'value':>7} {'items':>6} {'categories':>10} {'within':>7} {'binds':>6} {'price reasons':>13}")
    for key, m in summary.items():
        binds = f"{m['binds']:.0%}" if "binds" in m else ""
        reasons = f"{m['price_reasons']:.0%}" if "price_reasons" in m else ""
        print(f"{key:<22} {m['hit_rate']:>8.3f} {m['recall']:>7.3f} {m['value']:>7.2f} {m['items']:>6.2f} {m['categories']:>10.2f} {m['within']:>7.0%} {binds:>6} {reasons:>13}")
    # paired bootstrap of the hit rate: bundle vs each reference, per budget (the same baskets)
    print("\nhit rate, bundle minus reference (95% paired bootstrap interval over baskets)")
    boot = np.random.default_rng(1).integers(0, len(sample), size=(2000, len(sample)))
    for name in names:
        for ref in () if args.budgets_only else references:
            d = np.array(rows[f"bundle @ {name}"]["hit_rate"]) - np.array(rows[f"{ref} @ {name}"]["hit_rate"])
            lo, hi = np.percentile(d[boot].mean(axis=1), [2.5, 97.5])
            print(f"  @ {name:<7} vs {ref:<8} {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
    if args.json:
        args.json.write_text(json.dumps({"window": args.window, "baskets": len(sample), "k": args.k, "w_preference": base.w_preference, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
