"""Gate benchmark: does the promotion gate move `champion` only on evidence across a season of retrains?

A sequence of retrains on online-retail with growing data: week 0 holds `--start-share` of the users
(pseudonymized ids in order: a random but fixed order), every later week adds `--step-share` more.
Every week the shipped recipe is retrained from scratch with that week's seed: the stable split
(`recsys.data.splits`), the fusion text adaptor trained on the fine-tuning pairs (the tuning fold held out),
and the hybrid tuned on validation with its pseudo-cold fold on the tuning fold. The frozen encoder is
used as the text model (fine-tuning on 2 CPU cores barely moves it: see the README), so every week
costs a minute or two (`--fusion-steps` of the adaptor; the pipeline's default is 600). Two scenarios, decided by the gate's own code (`recsys.evaluation.comparison`,
`recsys.evaluation.gate.decide`) with the default `GateConfig`:

  (a) same recipe, another seed: the candidate of week t against the champion in place (the recipe
      of an earlier week; it moves when the gate promotes). Target: promoted at most 1 time in 20.
  (a0) the seed alone: the recipe retrained on the SAME week's data with another seed, against the
      week's recipe model. Target: promoted at most 1 time in 20.
  (b) truly better: the hybrid of week t against a weakened champion of week t-1 (the frozen text
      vectors alone). Target: promoted every time.

Each comparison also reports how many of the week's test pairs the champion had trained on (the
lineage check): with the stable split it must be 0.

    .venv/bin/python scripts/bench_gate.py [--weeks 11] [--start-share 0.45] [--step-share 0.05]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.evaluation.metrics import metric_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="online-retail")
    parser.add_argument("--weeks", type=int, default=11)
    parser.add_argument("--start-share", type=float, default=0.45)
    parser.add_argument("--step-share", type=float, default=0.05)
    parser.add_argument("--fusion-steps", type=int, default=200, help="fusion adaptor steps per retrain (the seeded part of the recipe here)")
    args = parser.parse_args()

    home = Path(os.environ.get("RECSYS_HOME", ".home"))
    os.environ.setdefault("RECSYS_PSEUDONYM_KEY", "benchmark-key-not-a-secret")  # the same users in every run
    from tqdm import tqdm

    from recsys.model import baselines
    from recsys.data import schema as S
    from recsys.evaluation.comparison import compare_with_champion
    from recsys.config import FusionConfig, GateConfig, SplitConfig, TrainConfig
    from recsys.data.datasets import load_dataset
    from recsys.data.documents import DocumentConfig, item_documents
    from recsys.model.embedding_cache import EmbeddingCache, encode_with_cache
    from recsys.model.encoder import TextEncoder
    from recsys.evaluation.evaluate import EvaluationContext, evaluate_scorers, vector_scorer
    from recsys.model.finetune import training_pairs
    from recsys.model.fusion import train_fusion
    from recsys.evaluation.gate import decide
    from recsys.model.hybrid import HybridConfig, tune_hybrid
    from recsys.evaluation.lineage import lineage_of
    from recsys.data.splits import tuning_fold
    from recsys.data.privacy import Pseudonymizer
    from recsys.data.splits import TRAIN, basket_split, default_salt

    ds = load_dataset(args.dataset, home / "cache", Pseudonymizer(os.environ["RECSYS_PSEUDONYM_KEY"].encode()))
    catalog = ds.items.sort_values(S.ITEM_ID).reset_index(drop=True)
    item_ids = catalog[S.ITEM_ID].tolist()
    index = {item: i for i, item in enumerate(item_ids)}
    users = sorted(ds.interactions[S.USER_ID].unique())
    docs = item_documents(catalog, DocumentConfig())
    frozen, _ = encode_with_cache(TextEncoder(), docs, EmbeddingCache(home / "cache" / "embeddings"), desc="frozen catalog vectors")
    gate, k = GateConfig(), 10
    split_cfg = SplitConfig(salt=default_salt(ds.name))

    def train_recipe(split, seed: int):
        """The shipped recipe on a week's split: fusion text adaptor, then the tuned hybrid. Returns (scorer, info)."""
        train = split.part(TRAIN)
        ft = train[~train[S.ITEM_ID].isin(split.tuning_items)]
        pairs = training_pairs(ft, index, replace(TrainConfig(), seed=seed))
        hidden = tuning_fold(split, catalog)

        def fold_score(v: np.ndarray) -> float:
            return evaluate_scorers(item_ids, {"m": vector_scorer(v)}, split, "val", k, extra_cold=hidden)["m"][metric_name("cold_recall", k)]

        fused = train_fusion(frozen, None, pairs, replace(FusionConfig(), signals=(), seed=seed, steps=args.fusion_steps), fold_score)
        vectors = fused.adaptor.apply(frozen, None).astype(np.float32) if fused.kept else frozen
        x = baselines.interaction_matrix(train, item_ids)
        is_cold = np.asarray(x.sum(axis=0)).ravel() == 0

        def val_score(model, hidden_mask: np.ndarray) -> float:
            return evaluate_scorers(item_ids, {"m": model.scores}, split, "val", k, extra_cold=np.flatnonzero(hidden_mask))["m"][metric_name("ndcg", k)]

        model, record = tune_hybrid(x, vectors, is_cold, val_score, HybridConfig(seed=seed), pseudo_cold=hidden)
        return model.scores, {"fusion_kept": fused.kept, **record["chosen"]}

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {len(users)} users, {len(item_ids)} items")
    weeks = []
    start = time.perf_counter()
    for week in tqdm(range(args.weeks), desc="weekly retrains"):
        share = min(1.0, args.start_share + week * args.step_share)
        kept = set(users[: int(round(share * len(users)))])
        split = basket_split(ds.interactions[ds.interactions[S.USER_ID].isin(kept)], catalog[S.ITEM_ID], split_cfg)
        scorer, info = train_recipe(split, seed=1000 + week)
        other = train_recipe(split, seed=2000 + week)[0] if week else None  # (a0): same data, another seed
        weeks.append({"week": week, "users": len(kept), "split": split, "lineage": lineage_of(split, f"week-{week}"), "recipe": scorer, "reseeded": other, "info": info})
    print(f"{args.weeks} retrains in {time.perf_counter() - start:.0f} s")

    def judged(candidate, champion, champion_lineage, split, seed: int) -> tuple[dict, object]:
        x = baselines.interaction_matrix(split.part(TRAIN), item_ids)
        context = EvaluationContext(vectors=frozen, popularity=np.asarray(x.sum(axis=0)).ravel(), n_users=int(x.shape[0]))
        result = compare_with_champion(item_ids, candidate, champion, split, champion_lineage, gate, k, seed=seed, context=context)
        from recsys.evaluation.bootstrap import Interval

        intervals = {m: Interval(**ci) if ci else None for m, ci in result["intervals"].items()}
        return result, decide(result["candidate_metrics"], result["metrics"], {}, gate, k, intervals, result["test_users"])

    primary = metric_name(f"{gate.primary_metric}", k)
    rows = []
    champion = weeks[0]
    for w in weeks[1:]:
        result, d = judged(w["recipe"], champion["recipe"], champion["lineage"], w["split"], w["week"])
        ci = result["intervals"][primary]
        rows.append(("a", w["week"], champion["week"], result, ci, d))
        if d.promote:
            champion = w
    for w in weeks[1:]:
        result, d = judged(w["reseeded"], w["recipe"], w["lineage"], w["split"], w["week"])
        rows.append(("a0", w["week"], w["week"], result, result["intervals"][primary], d))
    weak = vector_scorer(frozen)
    for prev, w in zip(weeks, weeks[1:]):
        result, d = judged(w["recipe"], weak, prev["lineage"], w["split"], w["week"])
        rows.append(("b", w["week"], prev["week"], result, result["intervals"][primary], d))

    print(f"\n| scenario | week | users | champion from week | test users | excluded test pairs | {primary} candidate | champion | relative change [95% CI] | decision (first failed check) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for scenario, week, champ_week, result, ci, d in rows:
        change = f"{ci['point'] * 100:+.1f}% [{ci['low'] * 100:+.1f}%, {ci['high'] * 100:+.1f}%]" if ci else "n/a"
        print(
            f"| {scenario} | {week} | {weeks[week]['users']} | {champ_week} | {result['test_users']} | {result['overlap']['excluded_pairs']} |"
            f" {result['candidate_metrics'][primary]:.4f} | {result['metrics'][primary]:.4f} | {change} | {d.status}{_failed(d)} |"
        )
    labels = (("a0", "same data, another seed", "at most 1 in 20"), ("a", "same recipe, another seed, grown data", "at most 1 in 20"), ("b", "hybrid vs weakened champion", "every time"))
    for scenario, label, target in labels:
        decided = [d for s, *_rest, d in rows if s == scenario]
        print(f"({scenario}) {label}: promoted {sum(d.promote for d in decided)} of {len(decided)} (target: {target})")
    excluded = sum(r[3]["overlap"]["excluded_pairs"] for r in rows)
    print(f"test pairs the champion had trained on, over all comparisons: {excluded}")
    print(pd.DataFrame([w["info"] | {"week": w["week"]} for w in weeks]).set_index("week").to_string())


def _failed(decision) -> str:
    """The first failed check, for the table (empty when promoted)."""
    failed = [c for c in decision.checks if not c.passed]
    return f" ({failed[0].kind} {failed[0].metric})" if failed else ""


if __name__ == "__main__":
    main()
