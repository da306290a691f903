"""The training pipeline's stages, one function per DAG task.

Each stage reads what earlier stages wrote under the run folder, writes only under it, logs to the
run's one MLflow run, and returns a small JSON-able dict (what Airflow passes along in XCom).
Re-running a stage overwrites its own output: retries are safe. Every stage takes `(cfg, run)`: the
run context (`recsys.run.RunContext`) names the run's files and carries its MLflow run id.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import atomic
from recsys.data import schema as S
from recsys.config import PipelineConfig
from recsys.evaluation.metrics import metric_name
from recsys.stages import item_ranges
from recsys.run import RunContext, item_vectors, load_events, load_ratings, load_split, load_validated, read_json, write_json

log = logging.getLogger(__name__)


def _read_input(cfg: PipelineConfig, run: RunContext) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The raw input frames (user ids already pseudonymized) and what is known of the data set."""
    from recsys.data.privacy import Pseudonymizer, load_key

    pseudonymizer = Pseudonymizer(load_key(run.paths.secrets))
    if cfg.dataset == "files":
        from recsys.data.datasets.files import keep_raw, read_user_files
        from recsys.errors import InputError
        from recsys.data.input_files import allowed_roots, check_input_file

        if not cfg.items_path or not cfg.interactions_path:
            raise InputError("dataset='files' needs both items_path and interactions_path")
        roots = allowed_roots(run.paths.home)
        # checked before anything reads or copies them: regular files inside the allowed folders only
        items_path = check_input_file(cfg.items_path, "items", roots)
        inter_path = check_input_file(cfg.interactions_path, "interactions", roots)
        # the raw files are kept whatever validation says next
        kept = [str(keep_raw(p, run.paths.raw)) for p in (items_path, inter_path)]
        items, inter = read_user_files(items_path, inter_path, pseudonymizer)
        meta = {"name": "files", "has_text": True, "items_source": str(items_path), "interactions_source": str(inter_path), "raw_copies": kept}
        return items, inter, meta
    if cfg.dataset == "warehouse":  # what the ingest DAG loaded: already pseudonymized and validated once
        from recsys.data import warehouse
        from recsys.errors import InputError

        name = cfg.warehouse_dataset
        if not name:
            raise InputError("dataset='warehouse' needs warehouse_dataset (the data set's name in the warehouse)")
        engine = warehouse.make_engine(run.warehouse_url)
        try:
            items, inter = warehouse.read_dataset(engine, name)
        finally:
            engine.dispose()
        if inter.empty:
            raise InputError(f"the warehouse holds no interactions for data set {name!r}")
        source = f"warehouse:{name}"
        meta = {
            "name": name,
            "has_text": bool(items[S.TITLE].notna().any()),
            "has_time": bool(inter[S.TIMESTAMP].notna().all()),
            "items_source": source,
            "interactions_source": source,
        }
        return items, inter, meta
    from recsys.data.datasets import load_dataset

    ds = load_dataset(cfg.dataset, run.paths.cache, pseudonymizer)
    meta = {"name": ds.name, "has_text": ds.has_text, "has_time": ds.has_time, "items_source": ds.source, "interactions_source": ds.source}
    return ds.items, ds.interactions, meta


def validate(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Read the input, run the validation gate, and write the validated canonical data set.

    On bad input this raises `DataValidationError` (naming table, rule and rows) after writing the
    full report to the run folder and MLflow; nothing downstream runs and nothing is stored.
    """
    from recsys.errors import DataValidationError, InputError
    from recsys.data.validation import ValidationConfig, validate_dataset

    tracking, c = run.mlflow()
    exp_id = tracking.ensure_experiment(c, cfg.experiment, run.local_artifact_root)
    run_id = tracking.get_or_create_run(c, exp_id, run.run_key, run.run_key, {"dataset": cfg.dataset, "trigger.reason": cfg.trigger_reason or "manual"})
    tracking.log_params(c, run_id, cfg.flat())
    from recsys.provenance import code_version, environment

    code = code_version()
    # mlflow.source.git.commit: the MLflow UI shows it on the run page
    tracking.set_tags(c, run_id, {"mlflow.source.git.commit": code["git_sha"], "code.git_dirty": code["git_dirty"], "code.recsys_version": code["recsys_version"]})
    tracking.set_tags(c, run_id, {f"env.{k}": v for k, v in environment().items()})

    report_dir = run.validation_dir
    vcfg = ValidationConfig(min_text_share=cfg.min_text_share, max_timestamp=(run.logical_date + pd.Timedelta(days=1)).isoformat())
    try:
        try:
            items, inter, meta = _read_input(cfg, run)
        except DataValidationError as err:  # unreadable or empty file: no table to hand to GX
            write_json(run.validation_report, {"success": False, "table": err.table, "source": err.source, "failures": err.failures})
            raise
        summary = validate_dataset(
            items,
            inter,
            out_dir=report_dir,
            config=vcfg,
            has_text=bool(meta["has_text"]),
            item_source=meta["items_source"],
            interaction_source=meta["interactions_source"],
        )
    except DataValidationError:
        tracking.log_artifacts(c, run_id, report_dir, "validation")
        tracking.set_tags(c, run_id, {"validation": "failed"})
        tracking.end_run(c, run_id, failed=True)
        raise
    except InputError as err:  # a setting that cannot work: the run ends here, with the reason on it
        tracking.set_tags(c, run_id, {"validation": "failed"})
        tracking.fail_run(c, run_id, str(err), "validate", type(err).__name__)  # the DAG's failure callback then keeps it
        raise
    tracking.log_artifacts(c, run_id, report_dir, "validation")
    tracking.set_tags(c, run_id, {"validation": "passed"})

    if cfg.dataset == "files":
        from recsys.data.datasets.files import user_files_dataset

        dataset = user_files_dataset(items, inter, Path(cfg.items_path), Path(cfg.interactions_path))
    else:
        dataset = S.Dataset(meta["name"], items, inter, bool(meta["has_time"]), bool(meta["has_text"]), meta["items_source"])
    if cfg.sample_users:
        dataset = S.sample_users(dataset, cfg.sample_users)
    if len(dataset.items) > cfg.max_dense_items:
        log.info(
            "%s: %d catalog items, more than max_dense_items (%d): the model takes the scalable path (EASE weights on the "
            "%d most-bought items inverted, every other item folded in against them)",
            dataset.name, len(dataset.items), cfg.max_dense_items, cfg.max_dense_items,
        )  # fmt: skip
    run.data_dir.mkdir(parents=True, exist_ok=True)
    dataset.items.to_parquet(run.validated_items, index=False)
    dataset.interactions.to_parquet(run.validated_interactions, index=False)
    info = {"name": dataset.name, "has_time": dataset.has_time, "has_text": dataset.has_text, "source": dataset.source}
    write_json(run.dataset_info, info)
    tracking.log_metrics(c, run_id, {"data.items": len(dataset.items), "data.interactions": len(dataset.interactions)})
    return {"mlflow_run_id": run_id, "run_dir": str(run.run_dir), "items": len(dataset.items), "interactions": len(dataset.interactions), "validation": summary.get("success", True)}


def load_and_split(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Upsert the validated data into the warehouse, read the data set back, and split it."""
    from dataclasses import replace

    from recsys.data import warehouse
    from recsys.data.splits import default_salt, make_split

    tracking, c = run.mlflow()
    validated = load_validated(run)
    engine = warehouse.make_engine(run.warehouse_url)
    counts = warehouse.upsert_dataset(engine, validated)
    items, inter = warehouse.read_dataset(engine, validated.name)
    engine.dispose()
    if cfg.sample_users:  # the warehouse may hold more than this run's sample
        keep = set(validated.items[S.ITEM_ID])
        items = items[items[S.ITEM_ID].isin(keep)].reset_index(drop=True)
        inter = inter[inter[S.USER_ID].isin(set(validated.interactions[S.USER_ID]))].reset_index(drop=True)
    dataset = S.Dataset(validated.name, items, inter, validated.has_time, validated.has_text, validated.source)
    # the data set's split salt: stored in the warehouse beside the data, changed only on request
    engine = warehouse.make_engine(run.warehouse_url)
    try:
        salt, replaced = warehouse.split_salt(engine, validated.name, cfg.split.salt, default_salt(validated.name))
    finally:
        engine.dispose()
    split = make_split(dataset, replace(cfg.split, salt=salt))

    run.split_dir.mkdir(parents=True, exist_ok=True)
    items.sort_values(S.ITEM_ID).reset_index(drop=True).to_parquet(run.split_catalog, index=False)
    split.pairs.to_parquet(run.split_pairs, index=False)
    write_json(
        run.split_info,
        {
            "protocol": split.protocol,
            "cold_items": sorted(split.cold_items),
            "salt": split.salt,
            "tuning_items": sorted(split.tuning_items),
            "salt_replaced": replaced,
            "max_eval_users": split.max_eval_users,
        },
    )
    summary = split.summary()
    from recsys.provenance import frame_digest

    # the data's identity: what the model was trained on, as MLflow datasets with content digests
    identity = {
        "name": dataset.name,
        "source": str(dataset.source),
        "digest": frame_digest(items, inter),
        "items_digest": frame_digest(items),
        "interactions_digest": frame_digest(inter),
        "items": int(len(items)),
        "users": int(inter[S.USER_ID].nunique()),
        "interactions": int(len(inter)),
        "split": {"protocol": split.protocol, "salt": split.salt, "tuning_items": len(split.tuning_items), **{k: v for k, v in summary.items() if k != "protocol"}},
    }
    write_json(run.identity, identity)
    tracking.log_dataset(c, run.mlflow_run_id, inter, f"{dataset.name}-interactions", str(dataset.source), identity["interactions_digest"], "training")
    tracking.log_dataset(c, run.mlflow_run_id, items, f"{dataset.name}-items", str(dataset.source), identity["items_digest"], "catalog")
    tracking.set_tags(c, run.mlflow_run_id, {"data.digest": identity["digest"]})
    tracking.log_metrics(c, run.mlflow_run_id, {f"split.{k}": v for k, v in summary.items() if k != "protocol"})
    tracking.log_metrics(c, run.mlflow_run_id, {f"warehouse.{k}": v for k, v in counts.items()})
    tracking.set_tags(c, run.mlflow_run_id, {"split.protocol": split.protocol, "split.salt": split.salt} | ({"split.salt_replaced": replaced} if replaced else {}))
    return {"warehouse": counts, **summary}


def catalog_documents(cfg: PipelineConfig, run: RunContext) -> list[str]:
    """The item documents of this run (written once, so every stage embeds the same text).

    Sales and rating bands come from the training part of the split only: nothing of the
    validation or test interactions leaks into the text.
    """
    from recsys.data.documents import item_documents
    from recsys.data.signals import train_mean_rating
    from recsys.data.splits import TRAIN

    path = run.documents
    if path.exists():
        return read_json(path)
    split, catalog = load_split(run)
    train = split.part(TRAIN)
    sales = train[S.ITEM_ID].value_counts()
    docs = item_documents(catalog, cfg.documents, sales=sales, mean_rating=train_mean_rating(load_ratings(run), split))
    write_json(path, docs)
    return docs


def _embed_catalog(encoder, docs: list[str], out: Path, desc: str, cache_dir: Path | None = None) -> dict[str, float]:
    """Embed the documents (through the embedding cache when given) and save the vectors."""
    from recsys.model.embedding_cache import EmbeddingCache, encode_with_cache

    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    vectors, stats = encode_with_cache(encoder, docs, cache, desc=desc)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors)
    seconds = stats["seconds"]
    return {"seconds": seconds, "items_per_second": len(docs) / max(seconds, 1e-9), "cached": stats["cached"], "computed": stats["computed"]}


def embedding_shards(cfg: PipelineConfig, run: RunContext, shard_size: int | None = None) -> list[dict[str, int]]:
    """Split the catalog into contiguous shards of `shard_size` items (0 = one shard): one mapped task each.

    Also writes the run's item documents, so every shard embeds exactly the same texts."""
    _, catalog = load_split(run)
    catalog_documents(cfg, run)
    return item_ranges(len(catalog), cfg.embed_shard_size if shard_size is None else shard_size)


def embed_shard(cfg: PipelineConfig, run: RunContext, shard: dict[str, int]) -> dict[str, Any]:
    """Embed one shard of the catalog with the frozen encoder, through the shared embedding cache.

    Writes only its own file (atomically), so a retried or duplicated shard task is harmless."""
    from recsys.model.encoder import TextEncoder

    docs = catalog_documents(cfg, run)[shard["start"] : shard["stop"]]
    encoder = TextEncoder(config=cfg.encoder)
    out = run.frozen_shard(shard["index"])
    with atomic.temp_path(out, suffix=".npy") as tmp:
        stats = _embed_catalog(encoder, docs, tmp, f"embedding shard {shard['index']} ({len(docs)} items)", run.paths.cache / "embeddings")
    return {**shard, **stats, "path": str(out), "device": str(encoder.device), "model_path": encoder.model_path}


def merge_embeddings(cfg: PipelineConfig, run: RunContext, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Assemble the shards (in catalog order) into the run's frozen item vectors and log the embedding stats."""
    tracking, c = run.mlflow()
    _, catalog = load_split(run)
    ordered = sorted(shards, key=lambda s: s["index"])
    expected = embedding_shards(cfg, run)
    got = [(s["start"], s["stop"]) for s in ordered]
    if got != [(s["start"], s["stop"]) for s in expected]:
        raise RuntimeError(f"embedding shards {got} do not cover the catalog of {len(catalog)} items as planned {[(s['start'], s['stop']) for s in expected]}")
    vectors = np.concatenate([np.load(s["path"]) for s in ordered]) if ordered else np.zeros((0, 0), dtype=np.float32)
    if len(vectors) != len(catalog):
        raise RuntimeError(f"merged {len(vectors)} vectors for {len(catalog)} catalog items")
    out = run.frozen_embeddings
    with atomic.temp_path(out, suffix=".npy") as tmp:
        np.save(tmp, vectors)
    seconds = float(sum(s["seconds"] for s in ordered))
    stats = {
        "seconds": seconds,
        "items_per_second": len(catalog) / max(seconds, 1e-9),
        "cached": int(sum(s["cached"] for s in ordered)),
        "computed": int(sum(s["computed"] for s in ordered)),
        "shards": len(ordered),
    }
    tracking.log_metrics(
        c,
        run.mlflow_run_id,
        {"embed.frozen_seconds": seconds, "embed.items_per_second": stats["items_per_second"], "embed.cached": stats["cached"], "embed.computed": stats["computed"], "embed.shards": len(ordered)},
    )
    if ordered:
        tracking.set_tags(c, run.mlflow_run_id, {"encoder.model_path": ordered[0]["model_path"], "encoder.device": ordered[0]["device"]})
    return {"embeddings": str(out), "items": len(catalog), **stats}


def embed(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Embed every catalog item with the frozen encoder (the baseline and the starting point), in one process.

    The DAG runs the same steps as mapped tasks: `embedding_shards` -> `embed_shard` per shard -> `merge_embeddings`."""
    shards = [embed_shard(cfg, run, shard) for shard in embedding_shards(cfg, run)]
    return merge_embeddings(cfg, run, shards)


def finetune(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Fine-tune the encoder on co-interaction pairs of the training split, keeping the weights
    that score best on validation Recall@k (the frozen encoder included), then save the item vectors."""
    from recsys.data.splits import train_popularity
    from recsys.model.encoder import TextEncoder
    from recsys.evaluation.evaluate import evaluate_models
    from recsys.model.finetune import finetune_encoder, training_pairs
    from recsys.data.splits import fine_tuning_part, validation_candidates

    tracking, c = run.mlflow()
    split, catalog = load_split(run)
    item_ids = catalog[S.ITEM_ID].tolist()
    index = {item: i for i, item in enumerate(item_ids)}
    docs = catalog_documents(cfg, run)
    pairs = training_pairs(fine_tuning_part(split), index, cfg.train)
    popularity = train_popularity(split, item_ids)
    encoder = TextEncoder(config=cfg.encoder)
    train_cfg = cfg.train_for(encoder.device.type)
    candidates = validation_candidates(split, item_ids, train_cfg.val_max_items)
    whole_catalog = len(candidates) == len(item_ids)
    candidate_ids, candidate_docs = [item_ids[i] for i in candidates], [docs[i] for i in candidates]
    if not whole_catalog:
        log.info("fine-tuning's validation ranks over %d of %d items (val_max_items)", len(candidates), len(item_ids))
    # the best validation's vectors, kept by finetune_encoder's own rule (the first score, then only a
    # strictly better one); one copy at a time, however many validations run
    best: dict[str, Any] = {"score": None, "vectors": None}

    def validate_recall(enc: TextEncoder) -> float:
        # the first call scores the untouched encoder: its vectors were written by `embed`
        first = best["score"] is None
        vectors = np.load(run.frozen_embeddings, mmap_mode="r")[candidates] if first else enc.encode(candidate_docs, desc="validation embedding")
        score = evaluate_models(candidate_ids, {"m": vectors}, popularity[candidates], split, "val", cfg.eval.k)["m"][metric_name("recall", cfg.eval.k)]
        if first or score > best["score"]:
            best["score"], best["vectors"] = score, vectors
        return score

    losses: dict[int, float] = {}
    start = time.perf_counter()
    if cfg.finetune_on_gpu and encoder.device.type != "cuda":
        # routed to the gpu queue, but this worker has no usable CUDA device: train anyway, say so loudly
        log.warning("finetune_on_gpu is set but this worker has no CUDA device: training on %s", encoder.device)
    tracking.set_tags(c, run.mlflow_run_id, {"train.device": str(encoder.device), "train.gpu_requested": str(cfg.finetune_on_gpu).lower()})
    if train_cfg != cfg.train:
        log.info("training on %s with the GPU recipe: %s", encoder.device, train_cfg)
        tracking.set_tags(c, run.mlflow_run_id, {"train.profile": "gpu-recipe"} | {f"train.effective.{k}": str(getattr(train_cfg, k)) for k in ("batch_size", "learning_rate", "max_steps", "epochs", "eval_every", "patience")})
    result = finetune_encoder(encoder, docs, pairs, train_cfg, on_step=losses.__setitem__, validate=validate_recall)
    train_seconds = time.perf_counter() - start
    for step, loss in losses.items():
        tracking.log_metrics(c, run.mlflow_run_id, {"train.loss": loss}, step=step)
    for step, score in result.val_history.items():
        tracking.log_metrics(c, run.mlflow_run_id, {metric_name("train.val_recall", cfg.eval.k): score}, step=step)
    write_json(
        run.train_history,
        {"losses": losses, "val_history": result.val_history, "best_step": result.best_step, "val_metric": metric_name("recall", cfg.eval.k)},
    )
    encoder_dir = run.encoder_dir
    encoder.save(encoder_dir)
    if whole_catalog:
        best_vectors = best["vectors"]
    elif result.best_step:  # validations saw the candidates only: one pass over the catalog with the best weights
        best_vectors = encoder.encode(docs, desc="embedding with the fine-tuned encoder")
    else:
        best_vectors = np.load(run.frozen_embeddings)
    np.save(run.finetuned_embeddings, best_vectors)
    if result.best_step:  # the encoder holds exactly the best weights: a later re-embed (serving, a refresh) hits the cache
        from recsys.model.embedding_cache import EmbeddingCache, document_hash, model_fingerprint

        try:
            EmbeddingCache(run.paths.cache / "embeddings").put_many(model_fingerprint(encoder), [document_hash(d) for d in docs], best_vectors)
        except OSError as err:
            log.warning("could not cache the fine-tuned vectors: %s", err)
    steps = len(result.losses)
    tracking.log_metrics(
        c,
        run.mlflow_run_id,
        {
            "train.pairs": len(pairs),
            "train.steps": steps,
            "train.best_step": result.best_step,
            "train.seconds": train_seconds,
            "train.pairs_per_second": steps * train_cfg.batch_size / max(train_seconds, 1e-9),
            "train.val_candidates": len(candidates),
        },
    )
    return {"encoder_dir": str(encoder_dir), "steps": steps, "best_step": result.best_step, "pairs": int(len(pairs)), "val_history": result.val_history, "seconds": train_seconds}


def fuse(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Fuse the fine-tuned text vectors with the items' numeric signals through a small learned
    projection (`recsys.model.fusion`), trained on the fine-tuning pairs over the cached vectors.

    Up to three variants are trained — the residual text adaptor alone, the signal projection alone, and
    both — and the one whose best step scores highest on the selection criterion (`train_run_fusion`:
    held-out items for the hybrid, plain validation for the text model) is kept; none is kept when none
    beats the text vectors. Writes `embeddings/fused.npy` and, when kept, the adaptor into the model
    directory (serving applies it to new items' text)."""
    from dataclasses import replace

    from recsys.model.finetune import training_pairs
    from recsys.model.fusion import FusedEncoder, train_run_fusion
    from recsys.data.signals import available_signals, item_signals
    from recsys.data.splits import fine_tuning_part

    tracking, c = run.mlflow()
    split, catalog = load_split(run)
    vectors = np.load(run.finetuned_embeddings)
    fusion_dir = run.fusion_dir
    shutil.rmtree(fusion_dir, ignore_errors=True)  # a rerun starts clean: no adaptor of an earlier attempt survives
    out = run.fused_embeddings
    if not cfg.fusion.enabled:
        np.save(out, vectors)
        tracking.log_params(c, run.mlflow_run_id, {"fusion.kept": False})
        return {"kept": False, "enabled": False, "best_step": 0, "signals": []}
    select_on = cfg.fusion.select_on if cfg.fusion.select_on != "auto" else ("pseudo_cold" if cfg.candidate == "hybrid" else "validation")
    signals = item_signals(catalog, split, load_ratings(run))
    present = tuple(available_signals(signals, cfg.fusion.signals))
    variants = {}  # simplest first: on a tie the simpler one wins
    if cfg.fusion.text_adaptor:
        variants["text"] = replace(cfg.fusion, signals=())
    if present:
        variants["signals"] = replace(cfg.fusion, signals=present, text_adaptor=False)
    if present and cfg.fusion.text_adaptor:
        variants["both"] = replace(cfg.fusion, signals=present)
    pairs = training_pairs(fine_tuning_part(split), {item: i for i, item in enumerate(catalog[S.ITEM_ID])}, cfg.train)
    trained = {}
    for name, variant in variants.items():
        log.info("fusion variant %r (signals: %s)", name, ",".join(variant.signals) or "none")
        trained[name] = train_run_fusion(variant, pairs, split, catalog, vectors, signals, cfg.eval.k, select_on)
    scores = {name: r[0].val_history[r[0].best_step] for name, r in trained.items()}
    kept = [name for name in trained if trained[name][0].kept]
    chosen = max(kept, key=lambda name: scores[name]) if kept else None  # max keeps the first of equals
    metric = metric_name(f"fusion.val_{select_on}_recall", cfg.eval.k)
    for name, (result, *_rest) in trained.items():
        for step, score in result.val_history.items():
            tracking.log_metrics(c, run.mlflow_run_id, {f"{metric}.{name}": score}, step=step)
        tracking.log_metrics(c, run.mlflow_run_id, {f"fusion.{name}.best_step": result.best_step, f"fusion.{name}.seconds": result.seconds})
    if chosen is None:
        np.save(out, vectors)
        tracking.log_params(c, run.mlflow_run_id, {"fusion.kept": False, "fusion.signals_used": "none", "fusion.selected_on": select_on, "fusion.variant": "none"})
        tracking.log_metrics(c, run.mlflow_run_id, {"fusion.best_step": 0})
        log.info("fusion: not kept (no variant beat the text vectors on %s: %s)", select_on, scores)
        return {"kept": False, "enabled": True, "best_step": 0, "signals": [], "selected_on": select_on, "variant": None, "scores": scores}
    result, scaler, features, hidden = trained[chosen]
    used = list(scaler.names) if scaler is not None and result.adaptor.features is not None else []
    np.save(out, result.adaptor.apply(vectors, features).astype(np.float32))
    FusedEncoder(result.adaptor, scaler if used else None).save(
        fusion_dir, {"variant": chosen, "best_step": result.best_step, "val_history": result.val_history, "selected_on": select_on, "held_out_items": len(hidden), "variant_scores": scores}
    )
    tracking.log_params(c, run.mlflow_run_id, {"fusion.kept": True, "fusion.signals_used": ",".join(used) or "none", "fusion.selected_on": select_on, "fusion.variant": chosen})
    tracking.log_metrics(c, run.mlflow_run_id, {"fusion.best_step": result.best_step})
    log.info("fusion: kept %r at step %d (%s: %s)", chosen, result.best_step, select_on, scores)
    return {"kept": True, "enabled": True, "best_step": result.best_step, "signals": used, "selected_on": select_on, "variant": chosen, "scores": scores}


def fit_model(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Fit the hybrid recommender (EASE + text side information + cold propagation) on the fine-tuned
    item vectors, tuning its weights on validation (its pseudo-cold fold is the split's tuning fold, which
    fine-tuning never saw); tune the EASE and item-kNN baselines on validation on their own, with the same
    bracketed-grid rule (`recsys.model.tuning`), so the candidate is compared with baselines as well tuned as it.
    Every baseline of the registry (`recsys.model.baselines.BASELINES`) with something to tune is tuned here."""
    from recsys.model import baselines
    from recsys.evaluation.evaluate import evaluate_scorers
    from recsys.model.hybrid import HybridConfig, head_items, model_arrays, tune_hybrid, tune_trend
    from recsys.model.trend import recent_buyers, trend_prior, validation_start
    from recsys.data.signals import item_features
    from recsys.data.splits import tuning_fold

    tracking, c = run.mlflow()
    split, catalog = load_split(run)
    item_ids, x, is_cold, popularity = baselines.baseline_inputs(split, catalog)
    vectors = item_vectors(run)
    head = head_items(x, cfg.max_dense_items)  # None (the dense model) when the catalog fits
    # data with time: what sold in the days before validation starts (the trend prior, the trending baseline)
    val_start = validation_start(split)
    events = load_events(run) if val_start is not None else None
    recent = (lambda days: recent_buyers(events, item_ids, val_start, days)) if val_start is not None else None
    data = baselines.BaselineData(item_ids, x, popularity, np.load(run.frozen_embeddings), head, recent)
    metric = metric_name(cfg.gate.primary_metric, cfg.eval.k)

    def validation_score(model, hidden: np.ndarray) -> float:
        t0 = time.perf_counter()
        score = evaluate_scorers(item_ids, {"m": model.scores}, split, "val", cfg.eval.k, extra_cold=np.flatnonzero(hidden))["m"][metric]
        # tuning is the longest stage on a large catalog: one line per point tried
        knobs = {k: getattr(model.config, k) for k in ("l2", "text_weight", "feature_weight", "cold_weight")}
        log.info("hybrid %s (%d hidden): validation %s %.4f, scored in %.1f s", knobs, int(hidden.sum()), metric, score, time.perf_counter() - t0)
        return score

    def scorer_score(name: str, scorer) -> float:
        t0 = time.perf_counter()
        score = evaluate_scorers(item_ids, {"m": scorer}, split, "val", cfg.eval.k)["m"][metric]
        log.info("%s: validation %s %.4f, scored in %.1f s", name, metric, score, time.perf_counter() - t0)
        return score

    start = time.perf_counter()
    features = item_features(catalog, split, load_ratings(run))
    config = HybridConfig(seed=cfg.split.seed, head_items=0 if head is None else len(head))
    model, record = tune_hybrid(x, vectors, is_cold, validation_score, config, features, pseudo_cold=tuning_fold(split, catalog), head=head)
    if recent is not None:  # data with time: what is selling now, as of validation's first moment
        model, trend_record = tune_trend(
            model,
            lambda days: trend_prior(recent(days)),
            lambda scorer: evaluate_scorers(item_ids, {"m": scorer}, split, "val", cfg.eval.k)["m"][metric],
        )
        for key in ("chosen", "edge_hit", "tried", "searches"):
            record[key] = {**record[key], **trend_record[key]}
        record["score"] = max(record["score"], trend_record["score"])
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    tuned = {b.name: b.tune(data, functools.partial(scorer_score, b.name)) for b in baselines.BASELINES.values() if b.tune is not None and b.applies(head is not None, recent is not None)}
    baseline_seconds = time.perf_counter() - start
    records = {"hybrid": record, **tuned}
    for name, rec in records.items():
        hits = [p for p, hit in rec["edge_hit"].items() if hit]
        if hits:
            log.warning("%s: the best %s is at the edge of its grid, even after extending it: the optimum may lie beyond", name, ", ".join(hits))
    run.model_dir.mkdir(parents=True, exist_ok=True)
    np.savez(run.hybrid_weights, **model_arrays(model))
    write_json(run.hybrid_info, {"config": model.config.__dict__, "baselines": tuned, **record})
    tracking.log_params(
        c,
        run.mlflow_run_id,
        {f"hybrid.{k}": v for k, v in record["chosen"].items()}
        | {f"baseline.{name}.{p}": v for name, rec in tuned.items() for p, v in rec["chosen"].items()}
        | {f"tuning.{name}.edge_hit.{p}": hit for name, rec in records.items() for p, hit in rec["edge_hit"].items()},
    )
    tracking.log_metrics(
        c,
        run.mlflow_run_id,
        {"hybrid.fit_seconds": seconds, "baselines.tune_seconds": baseline_seconds, "hybrid.head_items": 0 if head is None else len(head)}
        | {f"hybrid.val.{k}": v for k, v in record["tried"].items()}
        | {f"baseline.{name}.val.{k}": v for name, rec in tuned.items() for k, v in rec["tried"].items()},
    )
    chosen = {name: rec["chosen"] for name, rec in tuned.items()}
    edges = {name: rec["edge_hit"] for name, rec in records.items()}
    return {"model": str(run.hybrid_weights), "chosen": record["chosen"], "baselines": chosen, "edge_hit": edges, "seconds": seconds}


def evaluate(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Full-ranking evaluation on val and test of the candidate (hybrid) and every baseline:
    EASE, item-kNN, the fine-tuned and the frozen text encoder, popularity — same queries, same run."""
    from recsys.model import baselines
    from recsys.evaluation.evaluate import evaluate_scorers, evaluation_context, vector_scorer
    from recsys.model.hybrid import load_hybrid
    from recsys.model.trend import recent_buyers, stage_start, trend_prior, validation_start

    tracking, c = run.mlflow()
    split, catalog = load_split(run)
    item_ids, x, _, popularity = baselines.baseline_inputs(split, catalog)
    hybrid, info = load_hybrid(run.hybrid_weights, run.hybrid_info)
    tuned = info.get("baselines", {})
    timed = validation_start(split) is not None
    events = load_events(run) if timed else None
    scalable = hybrid.head is not None
    context = evaluation_context(split, catalog, item_vectors(run))
    test_topk: dict[str, np.ndarray] = {}
    per_user: dict[str, dict[str, np.ndarray]] = {}
    report = {}
    data = baselines.BaselineData(item_ids, x, popularity, np.load(run.frozen_embeddings), hybrid.head)
    chosen = {name: tuned.get(name, {}).get("chosen", {}) for name in baselines.BASELINES}
    # every registered baseline at the values chosen on validation (`fit_model`); those that read the events'
    # times are fitted again per stage, the others once
    fixed = {name: b.fit(data, chosen[name]) for name, b in baselines.BASELINES.items() if b.applies(scalable) and not b.needs_time}
    vectors = {"fused": vector_scorer(item_vectors(run)), "finetuned": vector_scorer(np.load(run.finetuned_embeddings))}
    for stage in ("val", "test"):
        # data with time: the trend prior and the trending baseline as of the stage's first moment, nothing from inside it
        start = stage_start(split.pairs, stage) if timed else None
        recent = (lambda days, start=start: recent_buyers(events, item_ids, start, days)) if start is not None else None
        if recent is not None and hybrid.config.trend_weight:
            hybrid.trend = trend_prior(recent(hybrid.config.trend_days))
        stage_data = dataclasses.replace(data, recent_buyers=recent)
        timed_scorers = {name: b.fit(stage_data, chosen[name]) for name, b in baselines.BASELINES.items() if b.needs_time and b.applies(scalable, recent is not None)}
        # the evaluation's queries are customers' histories: the hybrid ranks them with its trend prior
        scorers = {"hybrid": functools.partial(hybrid.scores, with_trend=True), **vectors, **{name: fixed.get(name) or timed_scorers[name] for name in baselines.BASELINES if name in fixed or name in timed_scorers}}
        report[stage] = evaluate_scorers(
            item_ids, scorers, split, stage, cfg.eval.k, cfg.eval.batch_size, context=context,
            topk_out=test_topk if stage == "test" else None, per_query_out=per_user if stage == "test" else None,
        )
    # per test user, every model's metrics: the drift monitor's reference and paired comparisons bootstrap over them
    np.savez(run.per_user_test, **{f"{m}.{name}": v for m, rows in per_user.items() for name, v in rows.items()})
    # bundles: composed from each test user's known items, scored against their held-out items
    from recsys.evaluation.bundle_eval import bundle_metrics
    from recsys.model.bundles import BundleConfig, bundle_catalog, cart_preference
    from recsys.evaluation.evaluate import split_queries

    queries, targets, _ = split_queries(item_ids, split, "test")
    prices = catalog[S.PRICE].to_numpy(dtype=np.float64, na_value=np.nan)
    known = prices[np.isfinite(prices)]
    budget = float(4 * np.median(known)) if len(known) else None  # a typical 4-item bundle's price
    behaviour, bundle_cfg = bundle_catalog(split, catalog, item_vectors(run)), BundleConfig(k=4, budget=budget)
    # either can be the candidate, and each is measured as it is served (`cart_preference`): the hybrid weighs
    # its own ranking into the bundle, the text model has no ranking to add
    for model, scorer in (("hybrid", hybrid), ("fused", None)):
        preference = (lambda cart, m=scorer: cart_preference(m, cart)) if scorer is not None else None
        bundles = bundle_metrics(behaviour, queries, targets, bundle_cfg, seed=cfg.split.seed, preference=preference)
        report["test"][model].update(bundles | {"bundle_budget": budget or 0.0})
    write_json(run.metrics, report)
    from recsys.evaluation.beyond_accuracy import exposure_by_popularity_bin

    # where each model's recommendations land on the popularity curve (the long-tail plot)
    write_json(run.exposure, {m: exposure_by_popularity_bin(t, popularity).tolist() for m, t in test_topk.items()})
    flat = {f"{stage}.{model}.{m}": v for stage, models in report.items() for model, ms in models.items() for m, v in ms.items()}
    tracking.log_metrics(c, run.mlflow_run_id, flat)
    tracking.log_artifacts(c, run.mlflow_run_id, run.metrics)
    return {"metrics": str(run.metrics), "test": report["test"]}

