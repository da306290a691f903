"""The scalable path against the dense hybrid on the same run: same split, same item vectors, same tuning rule.

Takes a project home where `scripts/bench_quality.py` finished a run (`--home`, run key "bench"), refits the
hybrid on the catalog's head only (the `head` most-bought items get EASE weights, every other item is scored
from its text neighbours in the head: what a catalog above `max_dense_items` gets), tunes it on validation
exactly as `fit_model` tunes the dense one, and prints both on the test split with the paired-bootstrap
interval of the difference per test user.

    .venv/bin/python scripts/bench_quality.py --dataset online-retail --home /tmp/or
    .venv/bin/python scripts/bench_scalable.py --home /tmp/or --head 2000 --head 1000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="the project home of a finished bench_quality run")
    parser.add_argument("--head", type=int, action="append", required=True, help="head size (repeatable)")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{args.home}/mlflow.db"
    os.environ.setdefault("RECSYS_PSEUDONYM_KEY", "benchmark-key-not-a-secret")

    from recsys.config import PipelineConfig
    from recsys.data.signals import item_features
    from recsys.data.splits import tuning_fold
    from recsys.evaluation.bootstrap import paired_relative_gain
    from recsys.evaluation.evaluate import evaluate_scorers
    from recsys.evaluation.metrics import metric_name
    from recsys.model import baselines
    from recsys.model.hybrid import HybridConfig, head_items, load_hybrid, tune_hybrid
    from recsys.run import RunContext, item_vectors, load_ratings, load_split

    run = RunContext.create("bench", "2026-11-28T00:00:00+00:00", home=args.home)
    cfg = PipelineConfig()
    k = cfg.eval.k
    split, catalog = load_split(run)
    item_ids, x, is_cold, _ = baselines.baseline_inputs(split, catalog)
    vectors = item_vectors(run)
    features = item_features(catalog, split, load_ratings(run))
    dense, info = load_hybrid(run.hybrid_weights, run.hybrid_info)
    metric = metric_name(cfg.gate.primary_metric, k)

    def validation_score(model, hidden: np.ndarray) -> float:
        return evaluate_scorers(item_ids, {"m": model.scores}, split, "val", k, extra_cold=np.flatnonzero(hidden))["m"][metric]

    scorers = {"dense": dense.scores}
    chosen = {"dense": info["chosen"]}
    for size in args.head:
        head = head_items(x, size)
        start = time.perf_counter()
        config = HybridConfig(seed=cfg.split.seed, head_items=0 if head is None else len(head))
        model, record = tune_hybrid(x, vectors, is_cold, validation_score, config, features, pseudo_cold=tuning_fold(split, catalog), head=head)
        print(f"head {size}: tuned in {time.perf_counter() - start:.0f} s, chose {record['chosen']}, edge hit {record['edge_hit']}", flush=True)
        scorers[f"head_{size}"] = model.scores
        chosen[f"head_{size}"] = record["chosen"]
    per: dict[str, dict[str, np.ndarray]] = {}
    report = evaluate_scorers(item_ids, scorers, split, "test", k, per_query_out=per)
    cols = [metric_name("recall", k), metric_name("ndcg", k), metric_name("cold_recall", k)]
    print(f"\n{len(item_ids)} items, {int(report['dense']['n_queries'])} test queries; dense hybrid chose {chosen['dense']}")
    print(f"{'model':<14}" + "".join(f"{c:>18}" for c in cols))
    for name, row in report.items():
        print(f"{name:<14}" + "".join(f"{row[c]:>18.4f}" for c in cols))
    for name in scorers:
        if name == "dense":
            continue
        for m in cols[:2]:
            ci = paired_relative_gain(per[name][m], per["dense"][m], 2000, 0.95, seed=42)
            print(f"{name} vs dense {m}: {ci.point * 100:+.1f}% [95% CI {ci.low * 100:+.1f}%, {ci.high * 100:+.1f}%] over {ci.n} users")


if __name__ == "__main__":
    main()
