"""SANSA (sparse approximate EASE, PyPI `sansa`) as the scalable collaborative model, on a finished run.

Takes the project home of a `scripts/bench_quality.py` run (run key "bench"), tunes SANSA's `l2` and
`weight_matrix_density` on the validation split with the same bracketed coordinate search as every other
model (`recsys.model.tuning`), then scores it on the test split and compares it, per test user with the
paired bootstrap, to the models the run stored (`per_user_test.npz`: the hybrid, ALS, EASE on the head, ...).

SANSA is not a dependency of the project: `sansa` 1.1.0 needs `scikit-sparse`, which has no wheel; its 0.4.16
sdist builds against Debian's SuiteSparse. A side environment that reuses the project's packages:

    apt-get install libsuitesparse-dev
    .venv/bin/python -m venv /tmp/sv
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" > /tmp/sv/lib/python3.11/site-packages/project.pth
    /tmp/sv/bin/pip install "numba==0.68.1" "llvmlite>=0.50,<0.51" Cython setuptools wheel
    /tmp/sv/bin/pip install --no-deps --no-build-isolation "scikit-sparse==0.4.16" "sansa==1.1.0"
    /tmp/sv/bin/python scripts/bench_sansa.py --home H

Known about sansa 1.1.0 (measured): `recommend()` fails when a row has fewer than k non-zero scores, so this
uses `forward()` and ranks the dense scores; an item column with no interactions breaks the fit, so the fit
sees the trained items only and every other item scores below all of them (as for EASE and ALS, which
cannot rank an item nobody bought either).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="the project home of a finished bench_quality run")
    parser.add_argument("--run-key", default="bench", help="the run's key (bench_scale.py: scale)")
    parser.add_argument("--l2", default="10,50,250", help="starting grid of l2 (log, extended past an edge)")
    parser.add_argument("--density", default="0.0002,0.001,0.005", help="starting grid of weight_matrix_density")
    parser.add_argument("--factorizer", choices=("icf", "cholmod"), default="icf", help="incomplete Cholesky (scales) or exact CHOLMOD (memory)")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{args.home}/mlflow.db"
    os.environ.setdefault("RECSYS_PSEUDONYM_KEY", "benchmark-key-not-a-secret")

    import logging

    from sansa import CHOLMODGramianFactorizerConfig, ICFGramianFactorizerConfig, SANSA, SANSAConfig, UMRUnitLowerTriangleInverterConfig

    logging.getLogger("sansa").setLevel(logging.WARNING)
    from recsys.config import PipelineConfig
    from recsys.evaluation.bootstrap import paired_relative_gain
    from recsys.evaluation.evaluate import evaluate_scorers
    from recsys.evaluation.metrics import metric_name
    from recsys.model import baselines
    from recsys.model.baselines import query_matrix
    from recsys.model.tuning import Grid, coordinate_search
    from recsys.run import RunContext, load_split

    run = RunContext.create(args.run_key, "2026-11-28T00:00:00+00:00", home=args.home)
    cfg = PipelineConfig()
    k = cfg.eval.k
    split, catalog = load_split(run)
    item_ids, x, _, _ = baselines.baseline_inputs(split, catalog)
    n = len(item_ids)
    active = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)  # an empty column breaks the fit
    x_active = x[:, active].tocsr().astype(np.float32)
    metric = metric_name(cfg.gate.primary_metric, k)
    print(f"{n} items, {len(active)} with training interactions, {x.shape[0]} users, {x.nnz} training pairs", flush=True)

    def fit(l2: float, density: float) -> SANSA:
        config = SANSAConfig(
            l2=l2,
            weight_matrix_density=density,
            gramian_factorizer_config=ICFGramianFactorizerConfig() if args.factorizer == "icf" else CHOLMODGramianFactorizerConfig(),
            lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig(),
        )
        return SANSA(config).fit(x_active)

    def scorer(model: SANSA):
        def scores(queries):
            q = query_matrix(queries, n)[:, active]
            out = np.full((len(queries), n), -1e9, dtype=np.float32)  # untrained items: below every trained one
            out[:, active] = model.forward(q).toarray()
            return out

        return scores

    fits: dict[tuple[float, float], float] = {}

    def validation(point: dict[str, float]) -> float:
        t0 = time.perf_counter()
        model = fit(point["l2"], point["density"])
        fitted = time.perf_counter() - t0
        score = evaluate_scorers(item_ids, {"m": scorer(model)}, split, "val", k)["m"][metric]
        fits[(point["l2"], point["density"])] = fitted
        print(f"  l2 {point['l2']:g}, density {point['density']:g}: validation {metric} {score:.4f} (fit {fitted:.1f} s, scored {time.perf_counter() - t0 - fitted:.1f} s)", flush=True)
        return score

    l2_values = tuple(float(v) for v in args.l2.split(","))
    density_values = tuple(float(v) for v in args.density.split(","))
    grids = {
        "l2": Grid(values=l2_values, lower=0.01, upper=1e6, log=True),
        "density": Grid(values=density_values, lower=1e-6, upper=0.05, log=True),
    }
    start = time.perf_counter()
    result = coordinate_search(validation, grids, {"l2": l2_values[len(l2_values) // 2], "density": density_values[len(density_values) // 2]})
    print(f"tuned in {time.perf_counter() - start:.0f} s: chose {result.chosen}, edge hit {result.edge_hit}", flush=True)
    model = fit(result.chosen["l2"], result.chosen["density"])
    per: dict[str, dict[str, np.ndarray]] = {}
    report = evaluate_scorers(item_ids, {"sansa": scorer(model)}, split, "test", k, per_query_out=per)
    cols = [metric_name("recall", k), metric_name("ndcg", k)]
    stored = np.load(run.per_user_test)
    print(f"\nSANSA test ({int(report['sansa']['n_queries'])} users): " + ", ".join(f"{c} {report['sansa'][c]:.4f}" for c in cols))
    for name in ("hybrid", "als", "ease", "itemknn"):
        for m in cols:
            key = f"{name}.{m}"
            if key not in stored:
                continue
            if len(stored[key]) != len(per["sansa"][m]):
                raise SystemExit(f"the stored per-user metrics cover {len(stored[key])} users, SANSA's {len(per['sansa'][m])}: not the same evaluation")
            ci = paired_relative_gain(stored[key], per["sansa"][m], 2000, 0.95, seed=42)
            print(f"{name} vs SANSA {m}: {float(np.nanmean(stored[key])):.4f} vs {float(np.nanmean(per['sansa'][m])):.4f}, {ci.point * 100:+.1f}% [95% CI {ci.low * 100:+.1f}%, {ci.high * 100:+.1f}%] over {ci.n} users")


if __name__ == "__main__":
    main()
