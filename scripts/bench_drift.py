"""Benchmark recsys.monitoring.drift at production scale on synthetic data (fixed seed).

Builds a reference from ~1M interactions (50k items with 384-d float32 vectors, of which 2,000
are sampled; 100k users; categories, prices, baskets, timestamps), saves and reloads it, then
profiles a 1M-interaction window (`window_from_frames`) and compares it (`detect_drift`). Prints
the wall time of each phase, the reference's size on disk and the process's peak RSS.

    .venv/bin/python scripts/bench_drift.py [--interactions 1000000] [--items 50000] [--users 100000]

The window has a mild injected drift (10% of its traffic on new items, prices +20%), so the
report is not empty.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from recsys.data import schema as S  # noqa: E402
from recsys.monitoring.drift import DriftConfig, ReferenceStats, detect_drift, window_from_frames  # noqa: E402
from recsys.monitoring.drift_report import drift_plots, write_drift_report  # noqa: E402

DIM = 384
N_CATEGORIES = 40
EVENTS = np.array(["view", "cart", "purchase"], dtype=object)


def synthetic_items(n_items: int, n_new: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = n_items + n_new
    ids = np.array([f"i{k:07d}" for k in range(n_items)] + [f"n{k:07d}" for k in range(n_new)], dtype=object)
    cats = np.array([f"Cat{c:02d} > Sub{c % 7}" for c in range(N_CATEGORIES)], dtype=object)
    items = pd.DataFrame(
        {
            S.ITEM_ID: ids,
            S.TITLE: ids,
            S.CATEGORY: cats[rng.integers(0, N_CATEGORIES, n)],
            S.PRICE: np.round(np.exp(rng.normal(3.0, 0.8, n)), 2),
        }
    )
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return S.to_canonical_items(items), vectors


def synthetic_interactions(
    item_ids: np.ndarray, n: int, n_users: int, seed: int, start: pd.Timestamp, days: float
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, len(item_ids) + 1) ** 0.8  # Zipf-like popularity
    item = rng.choice(len(item_ids), size=n, p=pop / pop.sum())
    user = rng.integers(0, n_users, n)
    sizes = 1 + rng.poisson(1.5, size=n)
    basket = np.repeat(np.arange(n), sizes)[:n]
    users = np.array([f"u{u:07d}" for u in range(n_users)], dtype=object)  # one population: reference and window share users
    baskets = pd.Series(basket).astype(str).radd(f"b{seed}_")
    ts = start + pd.to_timedelta(rng.uniform(0, days * 86400, n), unit="s")
    return S.to_canonical_interactions(
        pd.DataFrame(
            {
                S.USER_ID: users[user],
                S.ITEM_ID: item_ids[item],
                S.EVENT: EVENTS[rng.choice(3, size=n, p=[0.7, 0.2, 0.1])],
                S.TIMESTAMP: ts,
                S.BASKET_ID: baskets.to_numpy(dtype=object),
            }
        )
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Timer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def __call__(self, label: str):
        timer = self

        class _Phase:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                dt = time.perf_counter() - self.t0
                timer.rows.append((label, dt, peak_rss_mib()))
                print(f"{label:<34} {dt:8.2f} s   peak RSS {peak_rss_mib():8.0f} MiB", flush=True)

        return _Phase()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t = Timer()
    n_new = args.items // 10
    start = pd.Timestamp("2024-01-01", tz="UTC")
    with t("generate data (not drift code)"):
        items, vectors = synthetic_items(args.items, n_new, args.seed)
        ids = items[S.ITEM_ID].to_numpy(dtype=object)
        catalog = ids[: args.items]
        ref_inter = synthetic_interactions(catalog, args.interactions, args.users, args.seed + 1, start, 28)
        # the window: 10% of traffic on new items, prices +20%
        win_ids = np.r_[catalog, ids[args.items :]]
        win_inter = synthetic_interactions(catalog, int(args.interactions * 0.9), args.users, args.seed + 2, start + pd.Timedelta(days=28), 28)
        new_part = synthetic_interactions(ids[args.items :], args.interactions - len(win_inter), args.users, args.seed + 3, start + pd.Timedelta(days=28), 28)
        win_inter = pd.concat([win_inter, new_part], ignore_index=True)
        win_items = items.assign(**{S.PRICE: items[S.PRICE] * 1.2})
        row_of = pd.Index(win_ids)
    print(f"  reference: {len(ref_inter):,} interactions, {len(catalog):,} items x {DIM}-d vectors; window: {len(win_inter):,} interactions")

    with t("ReferenceStats.build"):
        ref = ReferenceStats.build(ref_inter, items, catalog, vectors[: args.items], eval_recall=0.25, dataset="bench", digest="0" * 64)
    with tempfile.TemporaryDirectory() as tmp:
        with t("ReferenceStats.save"):
            ref.save(tmp)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        with t("ReferenceStats.load"):
            ref = ReferenceStats.load(tmp)
    print(f"  reference on disk: {size / 2**20:.2f} MiB (catalog of {len(ref.catalog_item_ids):,} ids, {len(ref.vector_item_ids):,} vectors)")

    calls = []

    def item_vectors(batch: list[str]) -> np.ndarray:
        calls.append(len(batch))
        return vectors[row_of.get_indexer(batch)]

    with t("window_from_frames"):
        window = window_from_frames(win_inter, win_items, item_vectors)
    print(f"  item_vectors called {len(calls)}x for {sum(calls):,} ids")
    with t("detect_drift"):
        report = detect_drift(ref, window, DriftConfig(), window_recall=0.2)
    with tempfile.TemporaryDirectory() as tmp:
        with t("drift_plots + write_drift_report"):
            plots = drift_plots(ref, window, report, Path(tmp) / "plots")
            write_drift_report(report, tmp, plots)

    print(f"\ndrift={report.drift}")
    for s in report.signals:
        print(f"  {'ALARM' if s.alarm else '     '} {s.name:<16} {s.detail}")
    drift_s = sum(dt for label, dt, _ in t.rows if not label.startswith("generate"))
    print(f"\ndrift code total {drift_s:.2f} s; peak RSS {peak_rss_mib():.0f} MiB (includes the generated frames and 384-d vectors)")


if __name__ == "__main__":
    main()
