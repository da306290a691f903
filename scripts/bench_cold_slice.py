"""What the cold slice (items with no training sales) says on a finished run, and whether the trend prior should
treat such items as average ("neutral") rather than as unsold.

Part 1, the prior for items without history. The trend prior (`recsys.model.trend`) standardises
log(1 + recent buyers) over the catalog, so an item that has never sold before the moment scored gets the
prior of an unsold item: below the mean. "Neutral" standardises over the items that have sold before that moment
and gives the others 0 (absence of evidence, not evidence). Both are scored at the run's chosen window and
weight, and at half and twice the weight, on validation (the choice) and test, with the full ranking's
overall and cold Recall@10 and the test's paired interval of neutral over the shipped rule.

Part 2, the new-arrivals shelf: every model's scores restricted to the cold items, so that the cold targets are
ranked among new items only (what a "new for you" shelf would show) rather than against the whole catalog,
where no model puts them in the top 10 on a grocer's year. Recall@10 and @50 of the hybrid (without its prior:
the prior is 0 or below for every such item), the fine-tuned and the frozen text encoder, with paired intervals.

    .venv/bin/python scripts/bench_cold_slice.py RUN_DIR

RUN_DIR is a training run's folder on data with time (`$RECSYS_HOME/runs/<run>`) whose hybrid chose a trend
prior (`model/hybrid.*` with trend_weight > 0).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()

    from recsys.data import schema as S
    from recsys.evaluation.bootstrap import paired_relative_gain
    from recsys.evaluation.evaluate import evaluate_scorers, vector_scorer
    from recsys.model import baselines as B
    from recsys.model.hybrid import load_hybrid
    from recsys.model.trend import add_trend, recent_buyers, stage_start, trend_prior
    from recsys.run import RunFolder, load_events, load_split

    run = RunFolder(args.run_dir)
    split, catalog = load_split(run)
    item_ids, x, is_cold, popularity = B.baseline_inputs(split, catalog)
    model, _ = load_hybrid(run.hybrid_weights, run.hybrid_info)
    days, weight = model.config.trend_days, model.config.trend_weight
    if split.protocol != "time" or not weight:
        raise SystemExit(f"{run.run_dir}: needs a time split and a hybrid with a trend prior (protocol {split.protocol}, trend_weight {weight})")
    events = load_events(run)
    ids = np.asarray(item_ids, dtype=object)
    print(f"{len(item_ids)} items, {int(is_cold.sum())} without training sales; the run's prior: {days:g} days, weight {weight:g}", flush=True)

    def interval(a: np.ndarray, b: np.ndarray) -> str:
        ok = ~np.isnan(a) & ~np.isnan(b)
        if not ok.any() or b[ok].sum() == 0:
            return "no reference hit"
        iv = paired_relative_gain(a[ok], b[ok], 2000, 0.95, seed=42)
        return f"{iv.point:+.1%} [{iv.low:+.1%}, {iv.high:+.1%}] over {int(ok.sum())} users"

    print("\nPart 1: the prior for items without history (full ranking)")
    print("| stage | weight | shipped R@10 / NDCG@10 / cold R@10 | neutral R@10 / NDCG@10 / cold R@10 |\n|---|---|---|---|")
    per_test: dict[str, dict[str, np.ndarray]] = {}
    for stage in ("val", "test"):
        now = stage_start(split.pairs, stage)
        sold_before = np.isin(ids, events.loc[events[S.TIMESTAMP] < now, S.ITEM_ID].unique())
        raw = recent_buyers(events, item_ids, now, days)
        shipped, buyers = trend_prior(raw), np.log1p(raw)
        neutral = np.zeros(len(ids), dtype=np.float32)
        spread = buyers[sold_before].std()
        neutral[sold_before] = (buyers[sold_before] - buyers[sold_before].mean()) / spread if spread > 0 else 0.0
        for w in (weight / 2, weight, weight * 2):
            scorers = {
                "shipped": lambda q, w=w: add_trend(np.array(model.scores(q), dtype=np.float32), shipped, w),
                "neutral": lambda q, w=w: add_trend(np.array(model.scores(q), dtype=np.float32), neutral, w),
            }
            out = per_test if stage == "test" and w == weight else None
            r = evaluate_scorers(item_ids, scorers, split, stage, 10, per_query_out=out)
            cells = [" / ".join(f"{r[n][m]:.4f}" for m in ("recall_at_10", "ndcg_at_10", "cold_recall_at_10")) for n in ("shipped", "neutral")]
            print(f"| {stage} | {w:g} | {cells[0]} | {cells[1]} |", flush=True)
    for m in ("recall_at_10", "ndcg_at_10"):
        print(f"test, neutral over shipped at weight {weight:g}, {m}: {interval(per_test['neutral'][m], per_test['shipped'][m])}")

    print("\nPart 2: the new-arrivals shelf (cold targets ranked among cold items only)")
    cold = np.zeros(len(ids), dtype=bool)
    index = {item: j for j, item in enumerate(item_ids)}
    cold[[index[i] for i in split.cold_items if i in index]] = True
    data = B.BaselineData(item_ids, x, popularity, np.load(run.frozen_embeddings), model.head)
    base = {"hybrid": model.scores, "finetuned": vector_scorer(np.load(run.finetuned_embeddings)), "frozen": B.BASELINES["frozen"].fit(data, {})}

    def shelf(scorer):
        def scores(queries):
            s = np.array(scorer(queries), dtype=np.float32)
            s[:, ~cold] = -np.inf
            return s

        return scores

    print("| k | stage | hybrid | fine-tuned encoder | frozen encoder |\n|---|---|---|---|---|")
    for k in (10, 50):
        per: dict[str, dict[str, np.ndarray]] = {}
        for stage in ("val", "test"):
            r = evaluate_scorers(item_ids, {n: shelf(s) for n, s in base.items()}, split, stage, k, per_query_out=per if stage == "test" else None)
            print(f"| {k} | {stage} | " + " | ".join(f"{r[n][f'cold_recall_at_{k}']:.4f}" for n in base) + " |", flush=True)
        for ref in ("finetuned", "frozen"):
            print(f"test, hybrid over {ref} on the shelf at {k}: {interval(per['hybrid'][f'cold_recall_at_{k}'], per[ref][f'cold_recall_at_{k}'])}")


if __name__ == "__main__":
    main()
