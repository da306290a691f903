"""Quality benchmark: the pipeline's model against every baseline on one data set, all in one run.

Runs the training pipeline's stages (no Airflow) into a throw-away project home and prints the test
table with the hybrid's lift over EASE and its cold-slice lift over the frozen encoder.

    .venv/bin/python scripts/bench_quality.py --dataset online-retail [--max-train-steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch

from recsys.evaluation.metrics import metric_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="online-retail")
    parser.add_argument("--max-train-steps", type=int, default=60)
    parser.add_argument("--sample-users", type=int, default=None)
    parser.add_argument("--param", action="append", default=[], help="extra DAG Param as key=value (repeatable)")
    parser.add_argument("--home", default=None, help="project home (default: a temporary folder; the data cache is reused from RECSYS_HOME)")
    parser.add_argument("--refit", action="store_true", help="reuse the run already in --home up to fusion; fit and evaluate again")
    parser.add_argument("--evaluate-only", action="store_true", help="reuse the run already in --home up to the model fit; evaluate again")
    args = parser.parse_args()

    home = args.home or tempfile.mkdtemp(prefix="recsys-bench-")
    os.makedirs(home, exist_ok=True)
    cache = os.path.join(os.environ.get("RECSYS_HOME", ".home"), "cache")
    if os.path.isdir(cache) and not os.path.exists(os.path.join(home, "cache")):
        os.symlink(os.path.abspath(cache), os.path.join(home, "cache"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home}/mlflow.db"
    # a fixed pseudonymization key: the same users, hence the same split, in every benchmark run
    os.environ.setdefault("RECSYS_PSEUDONYM_KEY", "benchmark-key-not-a-secret")
    os.environ.pop("RECSYS_WAREHOUSE_URL", None)

    from recsys.stages import pipeline
    from recsys.config import PipelineConfig
    from recsys.run import RunContext

    params = {"dataset": args.dataset, "max_train_steps": args.max_train_steps, "sample_users": args.sample_users}
    params |= dict(p.split("=", 1) for p in args.param)
    cfg = PipelineConfig.from_params(params)
    ctx = RunContext.create("bench", "2026-11-28T00:00:00+00:00", home=home)
    start = time.perf_counter()
    if args.refit or args.evaluate_only:  # the model code changed, the data and vectors did not
        from recsys import tracking
        from recsys.run import read_json

        _, c = ctx.mlflow()
        ctx = ctx.with_mlflow_run(tracking.find_run_by_key(c, ctx.run_key).info.run_id)
        history = read_json(ctx.train_history)
        trained = {"steps": len(history["losses"]), "best_step": history["best_step"]}
        fused = {"kept": ctx.fusion_dir.exists(), "selected_on": "(from the first run)", "variant": "?", "best_step": "?", "signals": []}
    else:
        validated = pipeline.validate(cfg, ctx)
        ctx = ctx.with_mlflow_run(validated["mlflow_run_id"])
        pipeline.load_and_split(cfg, ctx)
        pipeline.embed(cfg, ctx)
        trained = pipeline.finetune(cfg, ctx)
        fused = pipeline.fuse(cfg, ctx)
    if args.evaluate_only:
        from recsys.run import read_json

        info = read_json(ctx.hybrid_info)
        fitted = {"chosen": info["chosen"], "baselines": {n: r["chosen"] for n, r in info["baselines"].items()}, "edge_hit": {"hybrid": info["edge_hit"]} | {n: r["edge_hit"] for n, r in info["baselines"].items()}}
    else:
        fitted = pipeline.fit_model(cfg, ctx)
    report = pipeline.evaluate(cfg, ctx)["test"]
    seconds = time.perf_counter() - start

    k = cfg.eval.k
    cols = [metric_name("recall", k), metric_name("ndcg", k), metric_name("cold_recall", k)]
    print(f"\n{args.dataset} {args.param}: test split, full ranking over the catalog ({int(report['hybrid']['n_queries'])} queries)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; pipeline {seconds:.0f} s")
    print(f"fusion ({fused.get('selected_on')}): " + (f"kept {fused['variant']!r} at step {fused['best_step']}, signals {','.join(fused['signals']) or 'none'}" if fused["kept"] else "not kept") + f"; variant scores {fused.get('scores')}")
    print(f"fine-tuning: {trained['steps']} steps, best step {trained['best_step']}; hybrid chose {json.dumps(fitted['chosen'])}; baselines chose {json.dumps(fitted['baselines'])}")
    print(f"grid edge hit after extending (True = the optimum may lie beyond the searched range): {json.dumps(fitted['edge_hit'])}")
    print(f"{'model':<12}" + "".join(f"{c:>20}" for c in cols))
    for name, row in report.items():
        print(f"{name:<12}" + "".join(f"{row[c]:>20.4f}" for c in cols))
    h, e, f = report["hybrid"], report["ease"], report["frozen"]
    print(f"hybrid vs EASE: Recall@{k} {100 * (h[cols[0]] / e[cols[0]] - 1):+.1f}%, NDCG@{k} {100 * (h[cols[1]] / e[cols[1]] - 1):+.1f}%")
    if f[cols[2]]:
        print(f"hybrid vs frozen encoder on the cold slice: {100 * (h[cols[2]] / f[cols[2]] - 1):+.1f}%")
    print_intervals(ctx, k)


def print_intervals(run, k: int) -> None:
    """The hybrid's relative gain over EASE per test user (the run's per-user test metrics), with its
    paired-bootstrap 95% interval."""
    import numpy as np

    from recsys.evaluation.bootstrap import paired_relative_gain

    per = np.load(run.per_user_test)
    # every collaborative baseline the run scored (ALS only on the scalable path)
    for baseline in ("ease", "itemknn", "als"):
        for metric in (metric_name("recall", k), metric_name("ndcg", k)):
            if f"{baseline}.{metric}" not in per:
                continue
            ci = paired_relative_gain(per[f"hybrid.{metric}"], per[f"{baseline}.{metric}"], 2000, 0.95, seed=42)
            print(f"hybrid vs {baseline} {metric}: {ci.point * 100:+.1f}% [95% CI {ci.low * 100:+.1f}%, {ci.high * 100:+.1f}%] over {ci.n} users")


if __name__ == "__main__":
    main()
