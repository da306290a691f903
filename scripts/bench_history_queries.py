"""How should a returning customer's history be weighted, and does any weighting or blend separate the hybrid
from the collaborative baselines? Measured on a finished run (completejourney is what it was written for).

Part 1, history weighting. A `history` request (`recsys recommend --history`, the serving `history` column) turns
a user's purchase events, oldest first, into a weighted query (`recsys.model.recommend.history_weights`: a
recency half-life in events, optionally 1 + log(count) per item). Here every validation and test user's events
before the stage's first day are turned into such a query, for every point of a grid, and scored by the run's
hybrid, by EASE on the same head (the run's chosen l2) and by ALS (the run's chosen factors, regularisation and
alpha; the weights enter its fold-in as confidences 1 + alpha w). The point is chosen on the hybrid's
validation NDCG@10 (the gate's metric); test reports the chosen point and the unweighted set of items (what the
pipeline's evaluation uses), with paired bootstrap intervals.

Part 2, blends (`--blends`): the hybrid's per-user standardised scores plus w times ALS's, or plus w times
standardised log-popularity, w chosen on validation NDCG@10, test with its paired interval over ALS.

    .venv/bin/python scripts/bench_history_queries.py RUN_DIR [--blends]

RUN_DIR is a training run's folder (`$RECSYS_HOME/runs/<run>`) with `data/`, `split/` and `model/hybrid.*`.
The ranking is the evaluation's: full ranking over the catalog, the query's own items excluded.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--half-lives", default="0,3000,1000,300,100,30,10", help="events; 0 = no decay")
    parser.add_argument("--blends", action="store_true", help="also part 2: hybrid + ALS / popularity blends")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    import pandas as pd

    from recsys.data import schema as S
    from recsys.data.splits import PART, TEST, VAL
    from recsys.evaluation import metrics
    from recsys.evaluation.bootstrap import paired_relative_gain
    from recsys.evaluation.evaluate import split_queries, top_k_from_scores
    from recsys.model import baselines as B
    from recsys.model.hybrid import load_hybrid
    from recsys.model.recommend import history_weights
    from recsys.run import RunFolder, load_split

    run = RunFolder(args.run_dir)
    split, catalog = load_split(run)
    item_ids, x, is_cold, popularity = B.baseline_inputs(split, catalog)
    n = len(item_ids)
    index = {item: i for i, item in enumerate(item_ids)}
    model, record = load_hybrid(run.hybrid_weights, run.hybrid_info)
    head = model.head if model.head is not None else np.arange(n)
    chosen = {name: rec["chosen"] for name, rec in record["baselines"].items()}
    t0 = time.perf_counter()
    ease = B.ease_weights(x[:, head].tocsr(), float(chosen["ease"]["l2"]))
    als_reg, als_alpha = float(chosen["als"]["regularization"]), float(chosen["als"]["alpha"])
    als = B.als_item_factors(x, int(chosen["als"]["factors"]), als_reg, als_alpha)
    print(f"EASE (head {len(head)}, l2 {chosen['ease']['l2']}) and ALS ({chosen['als']}) fitted in {time.perf_counter() - t0:.0f} s", flush=True)

    # every purchase event, oldest first (ties: the basket, then the line's order)
    events = pd.read_parquet(run.validated_interactions, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP])
    events["col"] = events[S.ITEM_ID].map(index)
    events = events.dropna(subset=["col"]).astype({"col": np.int64}).sort_values([S.USER_ID, S.TIMESTAMP], kind="stable")
    pairs = split.pairs
    starts = {"val": pairs.loc[pairs[PART] == VAL, S.TIMESTAMP].min(), "test": pairs.loc[pairs[PART] == TEST, S.TIMESTAMP].min()}

    stages = {}
    for stage in ("val", "test"):
        queries, targets, _ = split_queries(item_ids, split, stage)
        # split_queries' users, in its order: those with a query item and a target in the catalog
        by_user, target_by_user = split.queries_and_targets(stage)
        users = [u for u in by_user if any(i in index for i in by_user[u]) and any(i in index for i in target_by_user[u])]
        before = events[events[S.TIMESTAMP] < starts[stage]]
        history = before.groupby(S.USER_ID, sort=False)["col"].agg(list).to_dict()
        assert len(users) == len(queries), (len(users), len(queries))
        stages[stage] = (queries, targets, [np.asarray(history.get(u, []), dtype=np.int64) for u in users])
        covered = np.mean([np.isin(q, h).all() for q, h in zip(queries, stages[stage][2])])
        print(f"{stage}: {len(queries)} users, from {starts[stage]}; median {np.median([len(h) for h in stages[stage][2]]):.0f} events; "
              f"query items found in the events: {covered:.1%} of users", flush=True)

    def dense_queries(queries, histories, point) -> np.ndarray:
        """One weighted query per user; only the evaluation's query items carry weight (the same exclusions)."""
        out = np.zeros((len(queries), n), dtype=np.float32)
        for r, (q, h) in enumerate(zip(queries, histories)):
            if point is None:
                out[r, q] = 1.0
            else:
                w = history_weights(h, n, half_life=point[0], frequency=point[1])
                out[r, q] = np.where(w[q] > 0, w[q], w[w > 0].min() if (w > 0).any() else 1.0)
        return out

    def score(name: str, q: np.ndarray) -> np.ndarray:
        if name == "hybrid":
            return model.scores_from_dense(q)
        if name == "ease":
            s = np.full(q.shape, -np.inf, dtype=np.float32)
            s[:, head] = q[:, head] @ ease
            return s
        items = [np.flatnonzero(row) for row in q]
        return B.als_scores(als, als_reg, als_alpha, items, [row[idx] for row, idx in zip(q, items)])

    def per_user(scores_fn, stage: str, point) -> tuple[np.ndarray, np.ndarray]:
        queries, targets, histories = stages[stage]
        topk = []
        for s in range(0, len(queries), args.batch):
            qs = queries[s : s + args.batch]
            sc = np.array(scores_fn(dense_queries(qs, histories[s : s + args.batch], point), qs), dtype=np.float64)
            for r, q in enumerate(qs):
                sc[r, q] = -np.inf
            topk.append(top_k_from_scores(sc, 10))
        topk = np.concatenate(topk)
        return metrics.per_query_recall(topk, targets, 10), metrics.per_query_ndcg(topk, targets, 10)

    def label(point) -> str:
        if point is None:
            return "set (unweighted)"
        return ("no decay" if point[0] == 0 else f"half-life {point[0]:g}") + (" × (1 + log count)" if point[1] else "")

    half_lives = [float(v) for v in args.half_lives.split(",")]
    grid = [None] + [(h, f) for f in (False, True) for h in half_lives]
    print("\n## Part 1: history weighting, validation (Recall@10 / NDCG@10)\n\n| weighting | hybrid | EASE (head) | ALS |\n|---|---|---|---|")
    val = {}
    for point in grid:
        cells = []
        for name in ("hybrid", "ease", "als"):
            r, g = per_user(lambda q, qs, name=name: score(name, q), "val", point)
            val[(name, point)] = (r, g)
            cells.append(f"{np.nanmean(r):.4f} / {np.nanmean(g):.4f}")
        print(f"| {label(point)} | " + " | ".join(cells) + " |", flush=True)
    best = max(grid, key=lambda p: (np.nanmean(val[("hybrid", p)][1]), p is None))
    served = (10.0, False)  # what a history request was weighted by before this measurement
    print(f"\nchosen on the hybrid's validation NDCG@10: {label(best)}")

    print("\n## Part 1: test (Recall@10 / NDCG@10)\n\n| weighting | hybrid | EASE (head) | ALS |\n|---|---|---|---|")
    test = {}
    for point in dict.fromkeys([None, served, best]):
        cells = []
        for name in ("hybrid", "ease", "als"):
            test[(name, point)] = per_user(lambda q, qs, name=name: score(name, q), "test", point)
            cells.append(f"{np.nanmean(test[(name, point)][0]):.4f} / {np.nanmean(test[(name, point)][1]):.4f}")
        print(f"| {label(point)} | " + " | ".join(cells) + " |", flush=True)

    def interval(a: np.ndarray, b: np.ndarray) -> str:
        iv = paired_relative_gain(a, b)
        return "n/a" if iv is None else f"{iv.point:+.1%} [{iv.low:+.1%}, {iv.high:+.1%}]"

    print("\npaired test intervals (Recall@10; NDCG@10):")
    for name in ("hybrid", "ease", "als"):
        a, b = test[(name, best)], test[(name, None)]
        print(f"- {name}, {label(best)} over the set: {interval(a[0], b[0])}; {interval(a[1], b[1])}")
    for point in dict.fromkeys([None, best]):
        for ref in ("als", "ease"):
            a, b = test[("hybrid", point)], test[(ref, point)]
            print(f"- hybrid over {ref}, both {label(point)}: {interval(a[0], b[0])}; {interval(a[1], b[1])}")

    if not args.blends:
        return
    logpop = np.log1p(popularity.astype(np.float32))
    zpop = (logpop - logpop.mean()) / logpop.std()

    def z(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float32)
        return (m - m.mean(axis=1, keepdims=True)) / (m.std(axis=1, keepdims=True) + 1e-12)

    blends = {"ALS": lambda q: z(score("als", q)), "popularity": lambda q: np.repeat(zpop[None, :], len(q), axis=0)}
    weights = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
    print("\n## Part 2: blends (set queries), validation NDCG@10 by weight\n")
    for other, fn in blends.items():
        scores = {w: np.nanmean(per_user(lambda q, qs, w=w, fn=fn: z(score("hybrid", q)) + w * fn(q), "val", None)[1]) for w in weights}
        w_best = max(weights, key=lambda w: scores[w])
        print(f"hybrid + w {other}: " + ", ".join(f"{w:g}: {s:.4f}" for w, s in scores.items()) + f" (hybrid alone {np.nanmean(val[('hybrid', None)][1]):.4f}); chosen {w_best:g}")
        r, g = per_user(lambda q, qs: z(score("hybrid", q)) + w_best * fn(q), "test", None)
        a = test[("als", None)]
        print(f"  test: {np.nanmean(r):.4f} / {np.nanmean(g):.4f}; over ALS {interval(r, a[0])}; {interval(g, a[1])}", flush=True)
    assert math.isfinite(float(np.nanmean(val[("hybrid", None)][1])))


if __name__ == "__main__":
    main()
