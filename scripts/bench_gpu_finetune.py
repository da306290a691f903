"""GPU benchmark (issue 3): full fine-tuning of the item encoder with big batches vs the frozen encoder.

On online-retail with the pipeline's own split and documents (the same as scripts/bench_quality.py:
fixed pseudonymization key, SplitConfig defaults, `pipeline.catalog_documents`), without MLflow, Great
Expectations or the SQL warehouse (none of them changes the data: the split only depends on the set of
(user, item) pairs and on the item ids), so it runs where only torch/transformers/pandas/scipy are.

1. frozen encoder: val Recall@10, test Recall@10 / NDCG@10 / cold Recall@10 of the text model (cosine to
   the basket's mean vector, as `evaluate_models`), and of the hybrid tuned on validation exactly as
   `pipeline.fit_model` does (item features included); EASE for reference.
2. full fine-tuning (`recsys.model.finetune.finetune_encoder`, symmetric in-batch softmax on co-occurrence pairs)
   for a few (batch, learning rate, epochs) configs, validating every N steps with early stopping; the
   weights are reset to the original ones between configs; each config is time-boxed (--time-budget).
   The same metrics for its best validation step, the hybrid on its vectors, and training pairs/s.
3. embedding speed: TextEncoder.encode vs SentenceTransformer.encode, same model, docs and batch size.

    PYTHONPATH=. python scripts/bench_gpu_finetune.py --model .gpu_carry/model --configs gpu
    PYTHONPATH=. python scripts/bench_gpu_finetune.py --sample-users 200 --configs tiny --speed-n 200   # CPU smoke test

A config is "batch:lr:epochs" (comma-separated list) or a preset: gpu, tiny.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from recsys.stages import pipeline  # noqa: E402  (module level: numpy/pandas only; stages import their needs lazily)
from recsys.data import schema as S  # noqa: E402
from recsys.model.baselines import baseline_inputs  # noqa: E402
from recsys.config import EncoderConfig, PipelineConfig, TrainConfig  # noqa: E402
from recsys.model.encoder import TextEncoder  # noqa: E402
from recsys.evaluation.evaluate import evaluate_scorers, scorer_top_k, split_queries, vector_scorer  # noqa: E402
from recsys.model.finetune import finetune_encoder, training_pairs  # noqa: E402
from recsys.evaluation.metrics import metric_name  # noqa: E402
from recsys.run import RunContext, load_ratings, load_split  # noqa: E402
from recsys.data.signals import item_features  # noqa: E402
from recsys.data.splits import default_salt, fine_tuning_part, make_split, tuning_fold  # noqa: E402

BENCH_KEY = "benchmark-key-not-a-secret"  # the key scripts/bench_quality.py fixes: the same users, the same split
PRESETS = {
    # batch:lr:epochs — 26,720 co-occurrence pairs on online-retail: 104 / 26 / 13 steps per epoch
    "gpu": "256:5e-5:3,1024:1e-4:6,2048:2e-4:10,1024:3e-5:6",
    "tiny": "16:5e-5:1",
}
KEYS = ("recall_at_10", "ndcg_at_10", "cold_recall_at_10")
T0 = time.perf_counter()


class _TimeUp(Exception):
    pass


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def parse_configs(spec: str) -> list[dict]:
    spec = PRESETS.get(spec, spec)
    out = []
    for part in spec.split(","):
        bs, lr, ep = part.strip().split(":")
        out.append({"batch_size": int(bs), "learning_rate": float(lr), "epochs": float(ep)})
    return out


def pick(row: dict) -> dict:
    return {k: float(row[k]) for k in KEYS if k in row}


def build_run(args) -> tuple[PipelineConfig, RunContext, dict]:
    """Write what the pipeline's validate + load_and_split would write (data/, split/) into a temp run folder."""
    from recsys.data.datasets import load_dataset
    from recsys.data.privacy import Pseudonymizer

    params = {"dataset": "online-retail", "sample_users": args.sample_users}
    cfg = PipelineConfig.from_params(params)
    home = tempfile.mkdtemp(prefix="recsys-gpu-bench-")
    ctx = RunContext.create("gpu-bench", "2026-11-28T00:00:00+00:00", home=home)
    key = os.environ.get("RECSYS_PSEUDONYM_KEY") or BENCH_KEY
    ds = load_dataset("online-retail", Path(args.cache_dir), Pseudonymizer(key.encode("utf-8")))
    if cfg.sample_users:
        ds = S.sample_users(ds, cfg.sample_users)
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    ctx.split_dir.mkdir(parents=True, exist_ok=True)
    ds.items.to_parquet(ctx.validated_items, index=False)
    ds.interactions.to_parquet(ctx.validated_interactions, index=False)
    ctx.dataset_info.write_text(json.dumps({"name": ds.name, "has_time": ds.has_time, "has_text": ds.has_text, "source": ds.source}))
    # as load_and_split: the warehouse hands back the canonical frames sorted by key
    items = S.to_canonical_items(ds.items.sort_values(S.ITEM_ID).reset_index(drop=True))
    inter = S.to_canonical_interactions(ds.interactions)
    split = make_split(S.Dataset(ds.name, items, inter, ds.has_time, ds.has_text, ds.source), replace(cfg.split, salt=default_salt(ds.name)))
    items.sort_values(S.ITEM_ID).reset_index(drop=True).to_parquet(ctx.split_catalog, index=False)
    split.pairs.to_parquet(ctx.split_pairs, index=False)
    ctx.split_info.write_text(
        json.dumps({"protocol": split.protocol, "cold_items": sorted(split.cold_items), "salt": split.salt, "tuning_items": sorted(split.tuning_items)})
    )
    return cfg, ctx, split.summary()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("RECSYS_BENCH_MODEL"), help="local model folder (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--cache-dir", default=None, help="folder holding the PyARMViz wheel (default: $RECSYS_HOME/cache)")
    ap.add_argument("--sample-users", type=int, default=None)
    ap.add_argument("--configs", default="gpu", help="preset (gpu, tiny) or 'batch:lr:epochs,...'")
    ap.add_argument("--temperature", type=float, default=TrainConfig.temperature)
    ap.add_argument("--evals-per-epoch", type=float, default=2.0, help="validations per epoch (at least every --max-eval-every steps)")
    ap.add_argument("--max-eval-every", type=int, default=26)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=None, help="cap on steps per config (smoke tests)")
    ap.add_argument("--time-budget", type=float, default=55.0, help="seconds of fine-tuning per config (validations included)")
    ap.add_argument("--deadline", type=float, default=360.0, help="seconds after start by which the script should end")
    ap.add_argument("--hybrid-reserve", type=float, default=90.0, help="no config starts later than deadline minus this (time for a hybrid fit)")
    ap.add_argument("--no-hybrid", action="store_true")
    ap.add_argument("--speed-n", type=int, default=0, help="docs for the embedding-speed phase (0: the whole catalog)")
    ap.add_argument("--speed-batch", default="128,512")
    ap.add_argument("--speed-repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON results (default: $OUT/gpu_bench.json, else ./gpu_bench.json)")
    args = ap.parse_args()
    out_path = Path(args.out or (Path(os.environ["OUT"]) / "gpu_bench.json" if os.environ.get("OUT") else "gpu_bench.json"))
    if args.cache_dir is None:
        from recsys.paths import project_paths

        args.cache_dir = str(project_paths().cache)
    if args.model is None:
        from recsys.model.encoder import default_model_path

        args.model = default_model_path()

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    res: dict = {"phases": {}, "configs": []}
    res["machine"] = {
        "device": torch.cuda.get_device_name(0) if dev == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    import transformers

    res["machine"]["transformers"] = transformers.__version__
    say(f"device {res['machine']['device']}; torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=2, default=str))

    def phase(name: str, start: float) -> None:
        res["phases"][name] = round(time.perf_counter() - start, 2)
        say(f"phase {name}: {res['phases'][name]:.1f} s")
        save()

    # --- data, split, documents: the pipeline's ---------------------------------------------------------
    t = time.perf_counter()
    cfg, ctx, summary = build_run(args)
    split, catalog = load_split(ctx)
    docs = pipeline.catalog_documents(cfg, ctx)
    item_ids, x, is_cold, popularity = baseline_inputs(split, catalog)
    features = item_features(catalog, split, load_ratings(ctx))
    index = {item: i for i, item in enumerate(item_ids)}
    pairs = training_pairs(fine_tuning_part(split), index, cfg.train)  # the tuning fold held out, as the pipeline does
    k = cfg.eval.k
    res["data"] = {**summary, "items": len(item_ids), "train_pairs": int(len(pairs)), "features": None if features is None else list(features.shape), "doc_example": docs[0]}
    say(f"data: {summary}; {len(item_ids)} items, {len(pairs)} co-occurrence pairs; item features {res['data']['features']}")
    phase("data", t)

    # --- encoder: fp16-stored weights loaded back as fp32 -----------------------------------------------
    t = time.perf_counter()
    enc = TextEncoder(args.model, EncoderConfig(model_path=args.model))
    src_dtype = str(next(enc.model.parameters()).dtype)
    enc.model.float()  # transformers 5 loads a checkpoint in its stored dtype; train and embed in fp32 (+ bf16 autocast on CUDA)
    orig_state = {name: v.detach().clone() for name, v in enc.model.state_dict().items()}
    res["model"] = {"path": args.model, "loaded_dtype": src_dtype, "run_dtype": str(next(enc.model.parameters()).dtype), "device": str(enc.device),
                    "note": "weights stored as fp16 (to travel), run in fp32; frozen and fine-tuned start from the same weights"}
    say(f"model {args.model}: stored/loaded {src_dtype}, running {res['model']['run_dtype']} on {enc.device}")
    frozen = enc.encode(docs, progress=False)
    phase("model_and_frozen_embed", t)

    split_val, split_test = split_queries(item_ids, split, "val"), split_queries(item_ids, split, "test")

    def text_report(vectors: np.ndarray) -> dict:
        sc = {"m": vector_scorer(vectors)}
        val = evaluate_scorers(item_ids, sc, split, "val", k, cfg.eval.batch_size)["m"]
        test = evaluate_scorers(item_ids, sc, split, "test", k, cfg.eval.batch_size)["m"]
        return {"val": pick(val), "test": pick(test)}

    def per_query_recall(scorer, stage_queries) -> np.ndarray:
        queries, targets, _ = stage_queries
        topk = scorer_top_k(scorer, queries, k, cfg.eval.batch_size)
        return np.array([np.isin(row[:k], tg).sum() / len(tg) for row, tg in zip(topk, targets)])

    def paired(a: np.ndarray, b: np.ndarray) -> dict:
        d = a - b
        return {"diff": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))), "rel": float(d.mean() / max(b.mean(), 1e-12))}

    def hybrid_report(vectors: np.ndarray) -> tuple[dict, object]:
        from recsys.model.hybrid import HybridConfig, tune_hybrid

        # fit_model tunes on the promotion gate's primary metric (NDCG@k by default)
        metric = metric_name(f"{getattr(getattr(cfg, 'gate', None), 'primary_metric', 'ndcg')}", k)

        def validation_score(model, hidden: np.ndarray) -> float:
            return evaluate_scorers(item_ids, {"m": model.scores}, split, "val", k, extra_cold=np.flatnonzero(hidden))["m"][metric]

        model, record = tune_hybrid(x, vectors, is_cold, validation_score, HybridConfig(seed=cfg.split.seed), features, pseudo_cold=tuning_fold(split, catalog))
        rows = {st: pick(evaluate_scorers(item_ids, {"m": model.scores}, split, st, k, cfg.eval.batch_size)["m"]) for st in ("val", "test")}
        return {**rows, "chosen": record["chosen"], "tried": record["tried"]}, model

    # --- 3. embedding speed (frozen weights; before fine-tuning so it always runs) -----------------------
    t = time.perf_counter()
    try:
        res["speed"] = embed_speed(enc, docs, args)
    except Exception as err:  # noqa: BLE001 - a benchmark phase failing must not lose the others
        res["speed"] = {"error": repr(err)}
        say(f"embedding speed failed: {err!r}")
    enc.model.load_state_dict(orig_state)
    phase("embedding_speed", t)

    # --- 1. frozen encoder ----------------------------------------------------------------------------
    t = time.perf_counter()
    res["frozen"] = {"text": text_report(frozen)}
    say(f"frozen text model: {res['frozen']['text']}")
    pq_text_frozen = per_query_recall(vector_scorer(frozen), split_test)
    pq_hybrid_frozen = None
    if not args.no_hybrid:
        res["frozen"]["hybrid"], hmodel = hybrid_report(frozen)
        pq_hybrid_frozen = per_query_recall(hmodel.scores, split_test)
        say(f"frozen hybrid: val {res['frozen']['hybrid']['val']} test {res['frozen']['hybrid']['test']} chose {res['frozen']['hybrid']['chosen']}")
        from recsys.model import baselines

        # EASE tuned on validation on its own, bracketed (as the pipeline's fit_model does)
        ease, ease_record = baselines.tune_ease(
            x, lambda w: evaluate_scorers(item_ids, {"m": lambda q: baselines.item_item_scores(w, q)}, split, "val", k)["m"][metric_name("ndcg", k)]
        )
        ease_l2 = ease_record["chosen"]["l2"]
        res["ease"] = {"l2": ease_l2, "test": pick(evaluate_scorers(item_ids, {"m": lambda q: baselines.item_item_scores(ease, q)}, split, "test", k)["m"])}
        say(f"EASE l2 {ease_l2:g}: test {res['ease']['test']}")
    phase("frozen_eval", t)

    # --- 2. fine-tuning configs -----------------------------------------------------------------------
    frozen_val = res["frozen"]["text"]["val"][metric_name("recall", k)]
    best_vectors: dict[int, np.ndarray] = {}
    for ci, c in enumerate(parse_configs(args.configs)):
        if time.perf_counter() - T0 > args.deadline - args.hybrid_reserve:
            say(f"deadline: config {c} skipped")
            res["configs"].append({**c, "skipped": "deadline"})
            continue
        t = time.perf_counter()
        enc.model.load_state_dict(orig_state)  # every config starts from the original weights
        steps_per_epoch = len(pairs) // c["batch_size"]
        epochs = int(np.ceil(c["epochs"]))
        rng = np.random.default_rng(cfg.train.seed)
        # epoch 1 is the pipeline's own order; later epochs reshuffle (finetune_encoder walks the array once)
        multi = np.concatenate([pairs] + [pairs[rng.permutation(len(pairs))] for _ in range(epochs - 1)])
        max_steps = max(1, int(round(c["epochs"] * steps_per_epoch)))
        if args.max_steps:
            max_steps = min(max_steps, args.max_steps)
        eval_every = max(1, min(args.max_eval_every, int(round(steps_per_epoch / args.evals_per_epoch))))
        if args.max_steps:
            eval_every = max(1, min(eval_every, max_steps // 2))
        tc = replace(cfg.train, batch_size=c["batch_size"], learning_rate=c["learning_rate"], max_steps=max_steps, eval_every=eval_every,
                     patience=args.patience, temperature=args.temperature, warmup_steps=min(cfg.train.warmup_steps, max(1, max_steps // 10)))
        name = f"b{c['batch_size']}_lr{c['learning_rate']:g}_ep{c['epochs']:g}"
        say(f"config {name}: {max_steps} steps ({steps_per_epoch}/epoch), validate every {eval_every}, patience {tc.patience}, warmup {tc.warmup_steps}")
        scored: dict[int, np.ndarray] = {}
        history: dict[int, float] = {}
        clock = {"last": None, "val_s": 0.0, "step_s": [], "losses": []}
        deadline = min(t + args.time_budget, T0 + args.deadline - args.hybrid_reserve / 2)

        def validate(e: TextEncoder) -> float:
            v0 = time.perf_counter()
            step = len(clock["step_s"])
            vec = frozen if step == 0 else e.encode(docs, progress=False)
            score = evaluate_scorers(item_ids, {"m": vector_scorer(vec)}, split, "val", k, cfg.eval.batch_size)["m"][metric_name("recall", k)]
            scored[step], history[step] = vec, float(score)
            now = time.perf_counter()
            clock["val_s"] += now - v0
            clock["last"] = now
            loss = np.mean(clock["losses"][-eval_every:]) if clock["losses"] else float("nan")
            say(f"  step {step:4d}: val Recall@{k} {score:.4f} (frozen {frozen_val:.4f}); mean loss {loss:.4f}; validation {now - v0:.1f} s")
            return score

        def on_step(step: int, loss: float) -> None:
            now = time.perf_counter()
            clock["step_s"].append(now - clock["last"])
            clock["last"] = now
            clock["losses"].append(loss)
            if now > deadline:
                raise _TimeUp

        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        timed_out = False
        try:
            finetune_encoder(enc, docs, multi, tc, on_step=on_step, validate=validate)
        except _TimeUp:
            timed_out = True  # the validations that ran are in `history` (= TrainResult.val_history)
        run_s = time.perf_counter() - t
        best_step = max(history, key=lambda s: (history[s], -s))
        steps_run = len(clock["step_s"])
        train_s = sum(clock["step_s"])
        steady = clock["step_s"][3:] or clock["step_s"]
        rec = {
            "name": name, **c, "temperature": tc.temperature, "max_steps": max_steps, "steps_per_epoch": steps_per_epoch, "eval_every": eval_every,
            "patience": tc.patience, "warmup_steps": tc.warmup_steps, "steps_run": steps_run, "epochs_run": steps_run / max(steps_per_epoch, 1),
            "timed_out": timed_out, "best_step": int(best_step), "best_epoch": best_step / max(steps_per_epoch, 1), "val_history": history,
            "seconds": round(run_s, 1), "train_seconds": round(train_s, 1), "validation_seconds": round(clock["val_s"], 1),
            "pairs_per_s_mean": steps_run * c["batch_size"] / max(train_s, 1e-9),
            "pairs_per_s_median_step": c["batch_size"] / max(statistics.median(steady), 1e-9) if steady else 0.0,
            "loss_first": clock["losses"][0] if clock["losses"] else None, "loss_last": clock["losses"][-1] if clock["losses"] else None,
            "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if dev == "cuda" else None,
        }
        rec["beat_frozen_on_val"] = bool(best_step != 0 and history[best_step] > frozen_val)
        rec["val_gain_vs_frozen"] = history[best_step] - frozen_val
        say(f"config {name}: {steps_run} steps in {train_s:.1f} s of training (+{clock['val_s']:.1f} s validation); "
            f"{rec['pairs_per_s_median_step']:.0f} pairs/s (median step), best step {best_step} val {history[best_step]:.4f}"
            f"{' [time box]' if timed_out else ''}")
        vec = scored[best_step]
        best_vectors[ci] = vec
        if best_step == 0:
            rec["text"] = res["frozen"]["text"]
            rec["note"] = "fine-tuning did not beat the frozen encoder on validation: the frozen weights are kept"
        else:
            rec["text"] = text_report(vec)
            rec["text_vs_frozen_test_recall"] = paired(per_query_recall(vector_scorer(vec), split_test), pq_text_frozen)
        say(f"  text model (best step): {rec['text']}")
        res["configs"].append(rec)
        phase(f"config_{name}", t)

    # hybrid on each config's best vectors (best validation first), while time remains
    if not args.no_hybrid:
        order = sorted(best_vectors, key=lambda i: -res["configs"][i]["val_history"][res["configs"][i]["best_step"]])
        for ci in order:
            rec = res["configs"][ci]
            if rec["best_step"] == 0:
                rec["hybrid"] = res["frozen"]["hybrid"]
                continue
            if time.perf_counter() - T0 > args.deadline - 30:  # a hybrid fit takes ~30 s on 16 cores
                rec["hybrid"] = {"skipped": "deadline"}
                say(f"deadline: hybrid for {rec['name']} skipped")
                continue
            t = time.perf_counter()
            rec["hybrid"], hmodel = hybrid_report(best_vectors[ci])
            if pq_hybrid_frozen is not None:
                rec["hybrid_vs_frozen_test_recall"] = paired(per_query_recall(hmodel.scores, split_test), pq_hybrid_frozen)
            say(f"hybrid on {rec['name']}: val {rec['hybrid']['val']} test {rec['hybrid']['test']} chose {rec['hybrid']['chosen']}")
            phase(f"hybrid_{rec['name']}", t)

    res["total_seconds"] = round(time.perf_counter() - T0, 1)
    save()
    print_table(res, k)
    say(f"results: {out_path}")


def embed_speed(enc: TextEncoder, docs: list[str], args) -> dict:
    """items/s of TextEncoder.encode vs SentenceTransformer.encode (fp32, and under the same bf16 autocast), same docs/batch."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import __version__ as st_version

    texts = docs[: args.speed_n] if args.speed_n else docs
    dev = enc.device
    st = SentenceTransformer(args.model, device=str(dev))
    st.to(torch.float32)
    st.max_seq_length = enc.config.max_length
    out = {"n": len(texts), "max_length": enc.config.max_length, "sentence_transformers": st_version, "st_dtype": str(next(st.parameters()).dtype), "batches": {}}
    use_amp = dev.type == "cuda"

    def sync() -> None:
        if use_amp:
            torch.cuda.synchronize()

    for bs in [int(b) for b in str(args.speed_batch).split(",")]:
        def ours() -> np.ndarray:
            return enc.encode(texts, batch_size=bs, progress=False)

        def st_fp32() -> np.ndarray:
            return st.encode(texts, batch_size=bs, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)

        def st_bf16() -> np.ndarray:
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                return np.asarray(st.encode(texts, batch_size=bs, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True), dtype=np.float32)

        fns = {"textencoder": ours, "st_fp32": st_fp32}
        if use_amp:
            fns["st_bf16_autocast"] = st_bf16
        times: dict[str, list[float]] = {n: [] for n in fns}
        vecs: dict[str, np.ndarray] = {}
        for fn in fns.values():  # warm-up
            fn()
        for _ in range(args.speed_repeats):
            for n, fn in fns.items():  # interleaved
                sync()
                s = time.perf_counter()
                vecs[n] = np.asarray(fn(), dtype=np.float32)
                sync()
                times[n].append(time.perf_counter() - s)
        row = {n: {"items_per_s": len(texts) / statistics.median(ts), "runs_s": [round(x, 4) for x in ts]} for n, ts in times.items()}
        for n in fns:
            if n != "textencoder":
                row[n]["ours_speedup"] = row["textencoder"]["items_per_s"] / row[n]["items_per_s"]
                row[n]["max_abs_diff_vs_ours"] = float(np.abs(vecs[n] - vecs["textencoder"]).max())
                row[n]["min_cosine_vs_ours"] = float((vecs[n] * vecs["textencoder"]).sum(axis=1).min())
        out["batches"][bs] = row
        say(f"embedding speed, batch {bs}: " + "; ".join(f"{n} {r['items_per_s']:.0f} items/s" for n, r in row.items())
            + "; ours/st_fp32 " + f"{row['st_fp32']['ours_speedup']:.2f}x"
            + (f", ours/st_bf16 {row['st_bf16_autocast']['ours_speedup']:.2f}x" if "st_bf16_autocast" in row else ""))
    del st
    if use_amp:
        torch.cuda.empty_cache()
    return out


def print_table(res: dict, k: int) -> None:
    r, n, c = metric_name("recall", k), metric_name("ndcg", k), metric_name("cold_recall", k)
    print(f"\n=== {res['machine']['device']} — online-retail, full ranking, bench_quality split; total {res.get('total_seconds')} s ===")
    print(f"{'model':<34}{'val R@10':>9}{'test R@10':>10}{'NDCG@10':>9}{'cold R@10':>10} | {'hyb val':>8}{'hyb R@10':>9}{'hyb NDCG':>9}{'hyb cold':>9}{'pairs/s':>9}{'best step':>10}")

    def line(label: str, text: dict, hyb: dict | None, pps: str = "", best: str = "") -> None:
        h = hyb if hyb and "test" in hyb else None
        hv = f"{h['val'][n]:>8.4f}{h['test'][r]:>9.4f}{h['test'][n]:>9.4f}{h['test'][c]:>9.4f}" if h else f"{'-':>8}{'-':>9}{'-':>9}{'-':>9}"
        print(f"{label:<34}{text['val'][r]:>9.4f}{text['test'][r]:>10.4f}{text['test'][n]:>9.4f}{text['test'][c]:>10.4f} | {hv}{pps:>9}{best:>10}")

    line("frozen", res["frozen"]["text"], res["frozen"].get("hybrid"))
    for rec in res["configs"]:
        if "text" not in rec:
            print(f"{rec.get('name', rec)}: skipped")
            continue
        line(rec["name"] + (" [time box]" if rec["timed_out"] else ""), rec["text"], rec.get("hybrid"), f"{rec['pairs_per_s_median_step']:.0f}", f"{rec['best_step']}/{rec['steps_run']}")
    if "ease" in res:
        print(f"EASE (l2 {res['ease']['l2']:g}) test R@10 {res['ease']['test'][r]:.4f} NDCG@10 {res['ease']['test'][n]:.4f}")
    print("(hyb val = hybrid validation NDCG@10, the metric it is tuned on; text val = validation Recall@10, the early-stopping metric)")
    for rec in res["configs"]:
        for key in ("text_vs_frozen_test_recall", "hybrid_vs_frozen_test_recall"):
            if key in rec:
                d = rec[key]
                print(f"{rec['name']}: {key} {d['diff']:+.4f} ± {1.96 * d['se']:.4f} (95%, paired over test users; {100 * d['rel']:+.1f}%)")
    sp = res.get("speed", {})
    for bs, row in sp.get("batches", {}).items():
        print(f"embedding speed batch {bs} ({sp['n']} docs, max_length {sp['max_length']}): "
              + ", ".join(f"{nm} {v['items_per_s']:.0f}/s" + (f" (ours {v['ours_speedup']:.2f}x, max diff {v['max_abs_diff_vs_ours']:.1e})" if "ours_speedup" in v else "")
                          for nm, v in row.items()))
    print("phases (s): " + ", ".join(f"{kk} {v}" for kk, v in res["phases"].items()))


if __name__ == "__main__":
    main()
