"""Does the trend prior (what is selling now, `recsys.model.trend`) help, and is the gain the hybrid's or the prior's?

On a finished run on data with time (completejourney is what it was written for), the same search the pipeline
runs (`recsys.model.trend.search_trend`: the prior's weight and window chosen on validation, with the prior as
of validation's first moment) is run for the run's hybrid *and* for ALS at the run's chosen values; the trending
baseline's window is tuned on validation as the pipeline does. Test uses the prior as of the test split's first
moment. Printed: validation and test Recall@10 / NDCG@10 of the hybrid and ALS with and without the prior, the
trending baseline and popularity, and paired bootstrap intervals (the gate's) of the hybrid with its prior over
each of them.

    .venv/bin/python scripts/bench_trend.py RUN_DIR

RUN_DIR is a training run's folder (`$RECSYS_HOME/runs/<run>`) with `data/`, `split/` and `model/hybrid.*`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from recsys.evaluation.bootstrap import paired_relative_gain
    from recsys.evaluation.evaluate import evaluate_scorers
    from recsys.evaluation.metrics import metric_name
    from recsys.model import baselines as B
    from recsys.model.hybrid import HybridConfig, load_hybrid
    from recsys.model.trend import add_trend, recent_buyers, search_trend, stage_start, trend_prior
    from recsys.run import RunFolder, load_events, load_split

    run = RunFolder(args.run_dir)
    split, catalog = load_split(run)
    if split.protocol != "time":
        raise SystemExit(f"{run.run_dir}: the split has no time ({split.protocol}); the trend prior needs it")
    item_ids, x, _, popularity = B.baseline_inputs(split, catalog)
    model, record = load_hybrid(run.hybrid_weights, run.hybrid_info)
    model = dataclasses.replace(model, config=dataclasses.replace(model.config, trend_weight=0.0), trend=None)
    chosen = {name: rec["chosen"] for name, rec in record["baselines"].items()}
    events = load_events(run)
    starts = {stage: stage_start(split.pairs, stage) for stage in ("val", "test")}
    data = B.BaselineData(item_ids, x, popularity, np.load(run.frozen_embeddings), model.head)
    t0 = time.perf_counter()
    als = B.BASELINES["als"].fit(data, chosen["als"])
    print(f"{len(item_ids)} items; validation from {starts['val']}, test from {starts['test']}; ALS {chosen['als']} fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    recall, ndcg = metric_name("recall", args.k), metric_name("ndcg", args.k)

    def recent(stage: str):
        return lambda days: recent_buyers(events, item_ids, starts[stage], days)

    def val_score(scorer) -> float:  # the gate's metric, as the pipeline tunes on it
        return evaluate_scorers(item_ids, {"m": scorer}, split, "val", args.k)["m"][ndcg]

    grids = HybridConfig().trend_grids()
    searched = {}
    for name, scorer in (("hybrid", model.scores), ("als", als)):
        t0 = time.perf_counter()
        searched[name] = search_trend(scorer, lambda days: trend_prior(recent("val")(days)), val_score, grids["trend_weight"], grids["trend_days"], 28.0)
        print(f"{name} + prior: chose {searched[name]['chosen']} (validation NDCG@{args.k} {searched[name]['score']:.4f}; edge hit {searched[name]['edge_hit']}) in {time.perf_counter() - t0:.0f} s", flush=True)
    trending_record = B.BASELINES["trending"].tune(dataclasses.replace(data, recent_buyers=recent("val")), val_score)
    print(f"trending: chose {trending_record['chosen']} (edge hit {trending_record['edge_hit']})", flush=True)

    def with_prior(scorer, stage: str, rec: dict):
        prior = trend_prior(recent(stage)(rec["chosen"]["trend_days"]))
        return lambda queries: add_trend(np.array(scorer(queries), dtype=np.float32), prior, rec["chosen"]["trend_weight"])

    per_user: dict[str, dict[str, np.ndarray]] = {}
    print(f"\n| model | validation Recall@{args.k} / NDCG@{args.k} | test Recall@{args.k} / NDCG@{args.k} |\n|---|---|---|")
    rows = {}
    for stage in ("val", "test"):
        scorers = {
            "hybrid + prior": with_prior(model.scores, stage, searched["hybrid"]),
            "hybrid": model.scores,
            "als + prior": with_prior(als, stage, searched["als"]),
            "als": als,
            "trending": B.BASELINES["trending"].fit(dataclasses.replace(data, recent_buyers=recent(stage)), trending_record["chosen"]),
            "popularity": B.BASELINES["popularity"].fit(data, {}),
        }
        rows[stage] = evaluate_scorers(item_ids, scorers, split, stage, args.k, per_query_out=per_user if stage == "test" else None)
    for name in rows["test"]:
        v, t = rows["val"][name], rows["test"][name]
        print(f"| {name} | {v[recall]:.4f} / {v[ndcg]:.4f} | {t[recall]:.4f} / {t[ndcg]:.4f} |")
    print(f"\npaired test intervals of the hybrid with its prior ({int(rows['test']['hybrid']['n_queries'])} households; Recall@{args.k}; NDCG@{args.k}):")
    for ref in ("als", "als + prior", "trending", "hybrid"):
        cells = []
        for metric in (recall, ndcg):
            iv = paired_relative_gain(per_user["hybrid + prior"][metric], per_user[ref][metric], 2000, 0.95, seed=42)
            cells.append(f"{iv.point:+.1%} [{iv.low:+.1%}, {iv.high:+.1%}]")
        print(f"- over {ref}: " + "; ".join(cells))
    print(json.dumps({"hybrid": searched["hybrid"]["chosen"], "als": searched["als"]["chosen"], "trending": trending_record["chosen"]}))


if __name__ == "__main__":
    main()
