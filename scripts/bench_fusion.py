"""Does the learned numeric projection help? Fusion variants on a finished run's split and vectors.

Loads a run folder (its split, catalog and fine-tuned item vectors), trains the fusion adaptor
(`recsys/model/fusion.py`) in several variants over the same vectors and pairs, and prints, for each, the text
model alone (cosine to the basket's mean vector) and the hybrid built on those vectors (tuned on
validation exactly as `fit_model` does): test Recall@10, NDCG@10 and the cold slice.

    .venv/bin/python scripts/bench_fusion.py RUN_DIR [--variants none,text,features,both,both-no-sales]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from recsys.model.baselines import baseline_inputs
from recsys.config import FusionConfig, TrainConfig
from recsys.evaluation.evaluate import evaluate_models, evaluate_scorers
from recsys.model.finetune import training_pairs
from recsys.model.fusion import train_run_fusion
from recsys.model.hybrid import HybridConfig, tune_hybrid
from recsys.evaluation.metrics import metric_name
from recsys.run import RunFolder, load_ratings, load_split
from recsys.data.signals import item_features, item_signals
from recsys.data.splits import TRAIN

VARIANTS = {
    "none": None,
    "text": FusionConfig(signals=()),
    "features": FusionConfig(text_adaptor=False),
    "features-no-sales": FusionConfig(text_adaptor=False, signals=("price", "rating")),
    "both": FusionConfig(),
    "both-no-sales": FusionConfig(signals=("price", "rating")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--no-hybrid", action="store_true", help="text model only (skips the hybrid's tuning)")
    parser.add_argument("--select-on", default="pseudo_cold", choices=["pseudo_cold", "validation"], help="how fusion steps are judged")
    args = parser.parse_args()
    k = args.k

    run = RunFolder(args.run_dir)
    split, catalog = load_split(run)
    item_ids, x, is_cold, popularity = baseline_inputs(split, catalog)
    vectors = np.load(run.finetuned_embeddings)
    pairs = training_pairs(split.part(TRAIN), {item: i for i, item in enumerate(item_ids)}, TrainConfig())
    signals = item_signals(catalog, split, load_ratings(run))
    hybrid_features = item_features(catalog, split, load_ratings(run))
    print(f"fusion steps judged on: {args.select_on}")
    print(f"{args.run_dir.name}: {len(item_ids)} items ({int(is_cold.sum())} cold), {len(pairs)} training pairs")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")

    cols = [metric_name("recall", k), metric_name("ndcg", k), metric_name("cold_recall", k)]
    header = f"{'variant':<18}{'kept@step':>10}{'secs':>6}" + "".join(f"{'text ' + c.replace('_at_', '@'):>18}" for c in cols)
    if not args.no_hybrid:
        header += "".join(f"{'hybrid ' + c.replace('_at_', '@'):>20}" for c in cols)
    rows = []
    for name in args.variants.split(","):
        config = VARIANTS[name]
        start = time.perf_counter()
        if config is None:
            fused, step = vectors, 0
        else:
            result, _, feats, _ = train_run_fusion(config, pairs, split, catalog, vectors, signals, k, args.select_on)
            fused, step = (result.adaptor.apply(vectors, feats) if result.kept else vectors), result.best_step
        seconds = time.perf_counter() - start
        text = evaluate_models(item_ids, {"m": fused}, popularity, split, "test", k)["m"]
        line = f"{name:<18}{step:>10}{seconds:>6.0f}" + "".join(f"{text[c]:>18.4f}" for c in cols)
        if not args.no_hybrid:

            def score(model, hidden: np.ndarray) -> float:
                return evaluate_scorers(item_ids, {"m": model.scores}, split, "val", k, extra_cold=np.flatnonzero(hidden))["m"][metric_name("ndcg", k)]

            model, record = tune_hybrid(x, fused, is_cold, score, HybridConfig(), hybrid_features)
            hybrid = evaluate_scorers(item_ids, {"m": model.scores}, split, "test", k)["m"]
            line += "".join(f"{hybrid[c]:>20.4f}" for c in cols)
        rows.append(line)
        print(header if len(rows) == 1 else "", end="\n" if len(rows) == 1 else "")
        print(line, flush=True)


if __name__ == "__main__":
    main()
