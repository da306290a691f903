"""The diversity / long-tail knob, measured: accuracy against exposure of less popular items.

Loads a finished run folder (its split and hybrid model), ranks every test query at several
diversity levels and prints Recall@10, NDCG@10, catalog coverage and the share of recommended slots
that go to long-tail items (outside the 20% most popular). Also prints the time to score all users.

    .venv/bin/python scripts/bench_diversity.py RUN_DIR [--levels 0,0.1,0.3,0.5,1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from recsys.evaluation import metrics
from recsys.model.baselines import baseline_inputs
from recsys.evaluation.evaluate import split_queries, top_k_from_scores
from recsys.model.hybrid import load_hybrid
from recsys.model.recommend import diversify, long_tail_mask
from recsys.run import RunFolder, load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--levels", default="0,0.1,0.3,0.5,1")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    run = RunFolder(args.run_dir)
    split, catalog = load_split(run)
    item_ids, _, _, popularity = baseline_inputs(split, catalog)
    model, _ = load_hybrid(run.hybrid_weights, run.hybrid_info)
    queries, targets, _ = split_queries(item_ids, split, "test")
    tail = long_tail_mask(popularity)

    start = time.perf_counter()
    scores = np.concatenate([model.scores(queries[i : i + 1024]) for i in range(0, len(queries), 1024)])
    for row, q in enumerate(queries):
        scores[row, q] = -np.inf
    seconds = time.perf_counter() - start
    print(f"{len(queries)} users scored over {len(item_ids)} items in {seconds:.2f} s ({1000 * seconds / len(queries):.2f} ms/user)")
    print(f"{'diversity':>9} {'recall@10':>10} {'ndcg@10':>9} {'coverage':>9} {'long-tail share':>16}")
    for level in (float(x) for x in args.levels.split(",")):
        top = top_k_from_scores(diversify(scores, popularity, level), args.k)
        coverage = len(np.unique(top)) / len(item_ids)
        print(
            f"{level:>9g} {metrics.recall_at_k(top, targets, args.k):>10.4f} {metrics.ndcg_at_k(top, targets, args.k):>9.4f}"
            f" {coverage:>9.3f} {tail[top].mean():>16.3f}"
        )


if __name__ == "__main__":
    main()
