"""Drift monitoring on real replayed data (movielens-100k, weekly windows): which weeks alarm and on
which signals; the false-alarm rate on a shuffled replay (no drift by construction); and detection of
injected drift (a category mix shift, a flood of new items, a price shift).

The "champion" is what the training DAG would build from the first REFERENCE weeks: reference
statistics of those weeks (`recsys.monitoring.monitor.reference_for_model`), the frozen encoder's item vectors,
and EASE fitted on them (its Recall@10 on the last reference week, fitted without it, is its
evaluation score, kept per user). Every later week is then a monitoring window, checked exactly as
the monitor does (`recsys.monitoring.monitor.window_recall_per_user`, `recsys.monitoring.drift.detect_drift`). Prints tables;
--json writes them. For the champion's recall it also counts what the old rule (the point drop alone
above the threshold, whatever the number of users) would have alarmed on, next to the rule in force
(enough evaluable users on both sides, and the bootstrap interval's lower end above the threshold).

    .venv/bin/python scripts/bench_drift_replay.py [--reference-weeks 8] [--freq W] [--json out.json]
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


class Champion:
    """Just enough of `recsys.serving.ItemRecommender` for `window_recall_per_user`: EASE over a catalog."""

    def __init__(self, item_ids: list[str], vectors: np.ndarray, weights: np.ndarray, popularity: np.ndarray):
        self.item_ids, self.vectors, self.weights, self.popularity = item_ids, vectors, weights, popularity
        self.index = {item: i for i, item in enumerate(item_ids)}

    def score_batch(self, queries):
        out = np.empty((len(queries), len(self.item_ids)))
        for j, q in enumerate(queries):
            out[j] = self.weights[q].sum(axis=0) if len(q) else self.popularity
        return out


def fit_champion(inter: pd.DataFrame, item_ids: list[str], vectors: np.ndarray) -> Champion:
    from recsys.model import baselines

    x = baselines.interaction_matrix(inter, item_ids)
    popularity = np.asarray(x.sum(axis=0)).ravel().astype(float)
    return Champion(item_ids, vectors, baselines.ease_weights(x, 200.0), popularity)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    data = load_dataset("movielens-100k", paths.cache, Pseudonymizer(os.environ["RECSYS_PSEUDONYM_KEY"].encode()))
    items = attach_synthetic_prices(data.items, seed=0)  # movielens has no prices: synthetic, for the price signal
    item_ids = items[S.ITEM_ID].astype(str).tolist()
    vectors, _ = encode_with_cache(TextEncoder(), items[S.TITLE].fillna("").tolist(), EmbeddingCache(paths.cache / "embeddings"), desc="titles")
    vec_of = dict(zip(item_ids, vectors))
    config = DriftConfig()
    print(f"movielens-100k: {len(data.interactions):,} ratings, {len(items):,} items; thresholds {config}")

    def run(windows: list[pd.DataFrame], label: str, injected: dict[int, tuple[str, float]] | None = None) -> list[dict]:
        r = args.reference_weeks
        ref_inter = pd.concat(windows[:r], ignore_index=True)
        fit_inter = pd.concat(windows[: r - 1], ignore_index=True)
        known = sorted(set(ref_inter[S.ITEM_ID]))
        known_vectors = np.stack([vec_of[i] for i in known])
        champ_eval = fit_champion(fit_inter, known, known_vectors)
        eval_users = window_recall_per_user(champ_eval, fit_inter, windows[r - 1], 10, 2000)
        champ = fit_champion(ref_inter, known, known_vectors)
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

    real = [frame for _, frame in replay_windows(S.Dataset(data.name, items, data.interactions, True, True, data.source), args.freq)]
    real_rows = run(real, "real")
    print(f"\nREAL {args.freq} replay (reference = windows 0-{args.reference_weeks - 1}; {time.perf_counter() - t0:.0f} s so far)")
    print(f"{'win':>4} {'start':>10} {'ratings':>7}  {'champion recall drop [90% interval]':<48} alarms")
    for row in real_rows:
        print(f"{row['week']:>4} {row['start']:>10} {row['interactions']:>7}  {recall_txt(row):<48} {', '.join(row['alarms']) or '-'}")
    alarm_weeks = sum(r["drift"] for r in real_rows)
    print(f"real replay: {alarm_weeks}/{len(real_rows)} windows alarm; by signal: {dict(Counter(a for r in real_rows for a in r['alarms']))}")
    print(f"  {recall_summary(real_rows)}")

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
