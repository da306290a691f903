"""The training pipeline's stages, one function per DAG task.

Each stage reads what earlier stages wrote under the run folder, writes only under it, logs to the
run's one MLflow run, and returns a small JSON-able dict (what Airflow passes along in XCom).
Re-running a stage overwrites its own output: retries are safe.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import schema as S
from recsys.config import FusionConfig, PipelineConfig
from recsys.metrics import metric_name
from recsys.paths import ProjectPaths, project_paths

log = logging.getLogger(__name__)

WAREHOUSE_URL_ENV = "RECSYS_WAREHOUSE_URL"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class RunContext:
    """Where one pipeline run reads and writes."""

    paths: ProjectPaths
    run_key: str  # the orchestrator's run id: names the run folder and finds the MLflow run
    run_dir: Path
    tracking_uri: str
    warehouse_url: str
    logical_date: pd.Timestamp  # the run's date: bounds the plausible-timestamp window (never now())

    @classmethod
    def create(
        cls,
        run_key: str,
        logical_date: str | pd.Timestamp,
        home: str | None = None,
        tracking_uri: str | None = None,
        warehouse_url: str | None = None,
    ) -> "RunContext":
        """Resolve where a run reads and writes: explicit URLs (an orchestrator's connections) win over
        $MLFLOW_TRACKING_URI / $RECSYS_WAREHOUSE_URL, which win over the embedded defaults under the home."""
        paths = project_paths(home)
        return cls(
            paths=paths,
            run_key=run_key,
            run_dir=paths.run_dir(run_key),
            tracking_uri=tracking_uri or os.environ.get(TRACKING_URI_ENV) or paths.mlflow_tracking_uri,
            warehouse_url=warehouse_url or os.environ.get(WAREHOUSE_URL_ENV) or paths.warehouse_url,
            logical_date=pd.Timestamp(logical_date).tz_convert("UTC") if pd.Timestamp(logical_date).tzinfo else pd.Timestamp(logical_date, tz="UTC"),
        )

    @property
    def local_artifact_root(self) -> Path | None:
        # a tracking server manages its own artifact store; a local store needs an explicit one
        return self.paths.mlflow_artifacts if self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.tracking_uri else None


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)  # atomic: a crash never leaves half a file behind
    return path


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _mlflow(ctx: RunContext):
    from recsys import tracking

    return tracking, tracking.client(ctx.tracking_uri)


def _sample_users(dataset: S.Dataset, n_users: int) -> S.Dataset:
    """Keep `n_users` users (the first by pseudonymized id: a random but reproducible choice) and the items they touched."""
    users = sorted(dataset.interactions[S.USER_ID].dropna().unique())[:n_users]
    inter = dataset.interactions[dataset.interactions[S.USER_ID].isin(users)].reset_index(drop=True)
    items = dataset.items[dataset.items[S.ITEM_ID].isin(set(inter[S.ITEM_ID]))].reset_index(drop=True)
    return S.Dataset(dataset.name, items, inter, dataset.has_time, dataset.has_text, dataset.source + f" (sample of {len(users)} users)")


def _read_input(cfg: PipelineConfig, ctx: RunContext) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The raw input frames (user ids already pseudonymized) and what is known of the data set."""
    from recsys.privacy import Pseudonymizer, load_key

    pseudonymizer = Pseudonymizer(load_key(ctx.paths.secrets))
    if cfg.dataset == "files":
        from recsys.datasets.files import keep_raw, read_user_files
        from recsys.errors import InputError
        from recsys.input_files import allowed_roots, check_input_file

        if not cfg.items_path or not cfg.interactions_path:
            raise InputError("dataset='files' needs both items_path and interactions_path")
        roots = allowed_roots(ctx.paths.home)
        # checked before anything reads or copies them: regular files inside the allowed folders only
        items_path = check_input_file(cfg.items_path, "items", roots)
        inter_path = check_input_file(cfg.interactions_path, "interactions", roots)
        # the raw files are kept whatever validation says next
        kept = [str(keep_raw(p, ctx.paths.raw)) for p in (items_path, inter_path)]
        items, inter = read_user_files(items_path, inter_path, pseudonymizer)
        meta = {"name": "files", "has_text": True, "items_source": str(items_path), "interactions_source": str(inter_path), "raw_copies": kept}
        return items, inter, meta
    if cfg.dataset == "warehouse":  # what the ingest DAG loaded: already pseudonymized and validated once
        from recsys import warehouse
        from recsys.errors import InputError

        name = cfg.warehouse_dataset
        if not name:
            raise InputError("dataset='warehouse' needs warehouse_dataset (the data set's name in the warehouse)")
        engine = warehouse.make_engine(ctx.warehouse_url)
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
    from recsys.datasets import load_dataset

    ds = load_dataset(cfg.dataset, ctx.paths.cache, pseudonymizer)
    meta = {"name": ds.name, "has_text": ds.has_text, "has_time": ds.has_time, "items_source": ds.source, "interactions_source": ds.source}
    return ds.items, ds.interactions, meta


def validate(cfg: PipelineConfig, ctx: RunContext) -> dict[str, Any]:
    """Read the input, run the validation gate, and write the validated canonical data set.

    On bad input this raises `DataValidationError` (naming table, rule and rows) after writing the
    full report to the run folder and MLflow; nothing downstream runs and nothing is stored.
    """
    from recsys.errors import DataValidationError, InputError
    from recsys.validation import ValidationConfig, validate_dataset

    tracking, c = _mlflow(ctx)
    exp_id = tracking.ensure_experiment(c, cfg.experiment, ctx.local_artifact_root)
    run_id = tracking.get_or_create_run(c, exp_id, ctx.run_key, ctx.run_key, {"dataset": cfg.dataset, "trigger.reason": cfg.trigger_reason or "manual"})
    tracking.log_params(c, run_id, cfg.flat())
    from recsys.provenance import code_version, environment

    code = code_version()
    # mlflow.source.git.commit: the MLflow UI shows it on the run page
    tracking.set_tags(c, run_id, {"mlflow.source.git.commit": code["git_sha"], "code.git_dirty": code["git_dirty"], "code.recsys_version": code["recsys_version"]})
    tracking.set_tags(c, run_id, {f"env.{k}": v for k, v in environment().items()})

    report_dir = ctx.run_dir / "validation"
    vcfg = ValidationConfig(min_text_share=cfg.min_text_share, max_timestamp=(ctx.logical_date + pd.Timedelta(days=1)).isoformat())
    try:
        try:
            items, inter, meta = _read_input(cfg, ctx)
        except DataValidationError as err:  # unreadable or empty file: no table to hand to GX
            _write_json(report_dir / "validation.json", {"success": False, "table": err.table, "source": err.source, "failures": err.failures})
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
        from recsys.datasets.files import user_files_dataset

        dataset = user_files_dataset(items, inter, Path(cfg.items_path), Path(cfg.interactions_path))
    else:
        dataset = S.Dataset(meta["name"], items, inter, bool(meta["has_time"]), bool(meta["has_text"]), meta["items_source"])
    if cfg.sample_users:
        dataset = _sample_users(dataset, cfg.sample_users)
    data_dir = ctx.run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    dataset.items.to_parquet(data_dir / "items.parquet", index=False)
    dataset.interactions.to_parquet(data_dir / "interactions.parquet", index=False)
    info = {"name": dataset.name, "has_time": dataset.has_time, "has_text": dataset.has_text, "source": dataset.source}
    _write_json(data_dir / "dataset.json", info)
    tracking.log_metrics(c, run_id, {"data.items": len(dataset.items), "data.interactions": len(dataset.interactions)})
    return {"mlflow_run_id": run_id, "run_dir": str(ctx.run_dir), "items": len(dataset.items), "interactions": len(dataset.interactions), "validation": summary.get("success", True)}


def _load_validated(run_dir: Path) -> S.Dataset:
    data_dir = run_dir / "data"
    info = _read_json(data_dir / "dataset.json")
    items = S.to_canonical_items(pd.read_parquet(data_dir / "items.parquet"))
    inter = S.to_canonical_interactions(pd.read_parquet(data_dir / "interactions.parquet"))
    return S.Dataset(info["name"], items, inter, info["has_time"], info["has_text"], info["source"])


def load_and_split(cfg: PipelineConfig, ctx: RunContext, mlflow_run_id: str) -> dict[str, Any]:
    """Upsert the validated data into the warehouse, read the data set back, and split it."""
    from dataclasses import replace

    from recsys import warehouse
    from recsys.splits import default_salt, make_split

    tracking, c = _mlflow(ctx)
    validated = _load_validated(ctx.run_dir)
    engine = warehouse.make_engine(ctx.warehouse_url)
    counts = warehouse.upsert_dataset(engine, validated)
    items, inter = warehouse.read_dataset(engine, validated.name)
    engine.dispose()
    if cfg.sample_users:  # the warehouse may hold more than this run's sample
        keep = set(validated.items[S.ITEM_ID])
        items = items[items[S.ITEM_ID].isin(keep)].reset_index(drop=True)
        inter = inter[inter[S.USER_ID].isin(set(validated.interactions[S.USER_ID]))].reset_index(drop=True)
    dataset = S.Dataset(validated.name, items, inter, validated.has_time, validated.has_text, validated.source)
    # the data set's split salt: stored in the warehouse beside the data, changed only on request
    engine = warehouse.make_engine(ctx.warehouse_url)
    try:
        salt, replaced = warehouse.split_salt(engine, validated.name, cfg.split.salt, default_salt(validated.name))
    finally:
        engine.dispose()
    split = make_split(dataset, replace(cfg.split, salt=salt))

    split_dir = ctx.run_dir / "split"
    split_dir.mkdir(parents=True, exist_ok=True)
    items.sort_values(S.ITEM_ID).reset_index(drop=True).to_parquet(split_dir / "catalog.parquet", index=False)
    split.pairs.to_parquet(split_dir / "pairs.parquet", index=False)
    _write_json(
        split_dir / "split.json",
        {"protocol": split.protocol, "cold_items": sorted(split.cold_items), "salt": split.salt, "tuning_items": sorted(split.tuning_items), "salt_replaced": replaced},
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
    _write_json(split_dir / "identity.json", identity)
    tracking.log_dataset(c, mlflow_run_id, inter, f"{dataset.name}-interactions", str(dataset.source), identity["interactions_digest"], "training")
    tracking.log_dataset(c, mlflow_run_id, items, f"{dataset.name}-items", str(dataset.source), identity["items_digest"], "catalog")
    tracking.set_tags(c, mlflow_run_id, {"data.digest": identity["digest"]})
    tracking.log_metrics(c, mlflow_run_id, {f"split.{k}": v for k, v in summary.items() if k != "protocol"})
    tracking.log_metrics(c, mlflow_run_id, {f"warehouse.{k}": v for k, v in counts.items()})
    tracking.set_tags(c, mlflow_run_id, {"split.protocol": split.protocol, "split.salt": split.salt} | ({"split.salt_replaced": replaced} if replaced else {}))
    return {"warehouse": counts, **summary}


def _load_split(run_dir: Path):
    from recsys.splits import Split

    split_dir = run_dir / "split"
    info = _read_json(split_dir / "split.json")
    split = Split(
        pairs=pd.read_parquet(split_dir / "pairs.parquet"),
        cold_items=frozenset(info["cold_items"]),
        protocol=info["protocol"],
        salt=info.get("salt", ""),
        tuning_items=frozenset(info.get("tuning_items", ())),
    )
    catalog = pd.read_parquet(split_dir / "catalog.parquet")
    return split, S.to_canonical_items(catalog)


def _train_mean_rating(ctx: RunContext, split) -> pd.Series | None:
    """Mean rating per item over the training interactions (None when the data has no ratings)."""
    from recsys.splits import TRAIN

    inter = pd.read_parquet(ctx.run_dir / "data" / "interactions.parquet", columns=[S.USER_ID, S.ITEM_ID, S.RATING])
    rated = inter.dropna(subset=[S.RATING]).merge(split.part(TRAIN)[[S.USER_ID, S.ITEM_ID]], on=[S.USER_ID, S.ITEM_ID])
    return rated.groupby(S.ITEM_ID)[S.RATING].mean() if len(rated) else None


def catalog_documents(cfg: PipelineConfig, ctx: RunContext) -> list[str]:
    """The item documents of this run (written once, so every stage embeds the same text).

    Sales and rating bands come from the training part of the split only: nothing of the
    validation or test interactions leaks into the text.
    """
    from recsys.documents import item_documents
    from recsys.splits import TRAIN

    path = ctx.run_dir / "split" / "documents.json"
    if path.exists():
        return _read_json(path)
    split, catalog = _load_split(ctx.run_dir)
    train = split.part(TRAIN)
    sales = train[S.ITEM_ID].value_counts()
    docs = item_documents(catalog, cfg.documents, sales=sales, mean_rating=_train_mean_rating(ctx, split))
    _write_json(path, docs)
    return docs


def _embed_catalog(encoder, docs: list[str], out: Path, desc: str, cache_dir: Path | None = None) -> dict[str, float]:
    """Embed the documents (through the embedding cache when given) and save the vectors."""
    from recsys.embedding_cache import EmbeddingCache, encode_with_cache

    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    vectors, stats = encode_with_cache(encoder, docs, cache, desc=desc)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors)
    seconds = stats["seconds"]
    return {"seconds": seconds, "items_per_second": len(docs) / max(seconds, 1e-9), "cached": stats["cached"], "computed": stats["computed"]}


FROZEN_EMBEDDINGS = "frozen.npy"


def embedding_shards(cfg: PipelineConfig, ctx: RunContext, shard_size: int | None = None) -> list[dict[str, int]]:
    """Split the catalog into contiguous shards of `shard_size` items (0 = one shard): one mapped task each.

    Also writes the run's item documents, so every shard embeds exactly the same texts."""
    _, catalog = _load_split(ctx.run_dir)
    catalog_documents(cfg, ctx)
    n = len(catalog)
    size = cfg.embed_shard_size if shard_size is None else shard_size
    size = n if size <= 0 else size
    return [{"index": i, "start": start, "stop": min(start + size, n)} for i, start in enumerate(range(0, max(n, 1), max(size, 1)))]


def _shard_path(ctx: RunContext, index: int) -> Path:
    return ctx.run_dir / "embeddings" / "frozen-shards" / f"shard-{index:05d}.npy"


def embed_shard(cfg: PipelineConfig, ctx: RunContext, shard: dict[str, int]) -> dict[str, Any]:
    """Embed one shard of the catalog with the frozen encoder, through the shared embedding cache.

    Writes only its own file (atomically), so a retried or duplicated shard task is harmless."""
    from recsys.encoder import TextEncoder

    docs = catalog_documents(cfg, ctx)[shard["start"] : shard["stop"]]
    encoder = TextEncoder(config=cfg.encoder)
    out = _shard_path(ctx, shard["index"])
    tmp = out.with_name(out.stem + ".tmp.npy")
    stats = _embed_catalog(encoder, docs, tmp, f"embedding shard {shard['index']} ({len(docs)} items)", ctx.paths.cache / "embeddings")
    os.replace(tmp, out)
    return {**shard, **stats, "path": str(out), "device": str(encoder.device), "model_path": encoder.model_path}


def merge_embeddings(cfg: PipelineConfig, ctx: RunContext, mlflow_run_id: str, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Assemble the shards (in catalog order) into the run's frozen item vectors and log the embedding stats."""
    tracking, c = _mlflow(ctx)
    _, catalog = _load_split(ctx.run_dir)
    ordered = sorted(shards, key=lambda s: s["index"])
    expected = embedding_shards(cfg, ctx)
    got = [(s["start"], s["stop"]) for s in ordered]
    if got != [(s["start"], s["stop"]) for s in expected]:
        raise RuntimeError(f"embedding shards {got} do not cover the catalog of {len(catalog)} items as planned {[(s['start'], s['stop']) for s in expected]}")
    vectors = np.concatenate([np.load(s["path"]) for s in ordered]) if ordered else np.zeros((0, 0), dtype=np.float32)
    if len(vectors) != len(catalog):
        raise RuntimeError(f"merged {len(vectors)} vectors for {len(catalog)} catalog items")
    out = ctx.run_dir / "embeddings" / FROZEN_EMBEDDINGS
    tmp = out.with_name("frozen.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, out)
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
        mlflow_run_id,
        {"embed.frozen_seconds": seconds, "embed.items_per_second": stats["items_per_second"], "embed.cached": stats["cached"], "embed.computed": stats["computed"], "embed.shards": len(ordered)},
    )
    if ordered:
        tracking.set_tags(c, mlflow_run_id, {"encoder.model_path": ordered[0]["model_path"], "encoder.device": ordered[0]["device"]})
    return {"embeddings": str(out), "items": len(catalog), **stats}


def embed(cfg: PipelineConfig, ctx: RunContext, mlflow_run_id: str) -> dict[str, Any]:
    """Embed every catalog item with the frozen encoder (the baseline and the starting point), in one process.

    The DAG runs the same steps as mapped tasks: `embedding_shards` -> `embed_shard` per shard -> `merge_embeddings`."""
    shards = [embed_shard(cfg, ctx, shard) for shard in embedding_shards(cfg, ctx)]
    return merge_embeddings(cfg, ctx, mlflow_run_id, shards)


def finetune(cfg: PipelineConfig, ctx: RunContext, mlflow_run_id: str) -> dict[str, Any]:
    """Fine-tune the encoder on co-interaction pairs of the training split, keeping the weights
    that score best on validation Recall@k (the frozen encoder included), then save the item vectors."""
    from recsys.encoder import TextEncoder
    from recsys.evaluate import evaluate_models
    from recsys.finetune import finetune_encoder, training_pairs

    tracking, c = _mlflow(ctx)
    split, catalog = _load_split(ctx.run_dir)
    item_ids = catalog[S.ITEM_ID].tolist()
    index = {item: i for i, item in enumerate(item_ids)}
    docs = catalog_documents(cfg, ctx)
    pairs = training_pairs(fine_tuning_part(split), index, cfg.train)
    popularity = _train_popularity(split, item_ids)
    encoder = TextEncoder(config=cfg.encoder)
    scored: list[np.ndarray] = []  # item vectors at each validation, in order

    def validate_recall(enc: TextEncoder) -> float:
        # the first call scores the untouched encoder: its vectors were written by `embed`
        vectors = np.load(ctx.run_dir / "embeddings" / "frozen.npy") if not scored else enc.encode(docs, desc="validation embedding")
        scored.append(vectors)
        return evaluate_models(item_ids, {"m": vectors}, popularity, split, "val", cfg.eval.k)["m"][metric_name("recall", cfg.eval.k)]

    losses: dict[int, float] = {}
    start = time.perf_counter()
    train_cfg = cfg.train_for(encoder.device.type)
    if cfg.finetune_on_gpu and encoder.device.type != "cuda":
        # routed to the gpu queue, but this worker has no usable CUDA device: train anyway, say so loudly
        log.warning("finetune_on_gpu is set but this worker has no CUDA device: training on %s", encoder.device)
    tracking.set_tags(c, mlflow_run_id, {"train.device": str(encoder.device), "train.gpu_requested": str(cfg.finetune_on_gpu).lower()})
    if train_cfg != cfg.train:
        log.info("training on %s with the GPU recipe: %s", encoder.device, train_cfg)
        tracking.set_tags(c, mlflow_run_id, {"train.profile": "gpu-recipe"} | {f"train.effective.{k}": str(getattr(train_cfg, k)) for k in ("batch_size", "learning_rate", "max_steps", "epochs", "eval_every", "patience")})
    result = finetune_encoder(encoder, docs, pairs, train_cfg, on_step=losses.__setitem__, validate=validate_recall)
    train_seconds = time.perf_counter() - start
    for step, loss in losses.items():
        tracking.log_metrics(c, mlflow_run_id, {"train.loss": loss}, step=step)
    for step, score in result.val_history.items():
        tracking.log_metrics(c, mlflow_run_id, {metric_name("train.val_recall", cfg.eval.k): score}, step=step)
    _write_json(
        ctx.run_dir / "train_history.json",
        {"losses": losses, "val_history": result.val_history, "best_step": result.best_step, "val_metric": metric_name("recall", cfg.eval.k)},
    )
    encoder_dir = ctx.run_dir / "model" / "encoder"
    encoder.save(encoder_dir)
    best_vectors = scored[list(result.val_history).index(result.best_step)]
    np.save(ctx.run_dir / "embeddings" / "finetuned.npy", best_vectors)
    if result.best_step:  # the encoder holds exactly the best weights: a later re-embed (serving, a refresh) hits the cache
        from recsys.embedding_cache import EmbeddingCache, document_hash, model_fingerprint

        try:
            EmbeddingCache(ctx.paths.cache / "embeddings").put_many(model_fingerprint(encoder), [document_hash(d) for d in docs], best_vectors)
        except OSError as err:
            log.warning("could not cache the fine-tuned vectors: %s", err)
    steps = len(result.losses)
    tracking.log_metrics(
        c,
        mlflow_run_id,
        {
            "train.pairs": len(pairs),
            "train.steps": steps,
            "train.best_step": result.best_step,
            "train.seconds": train_seconds,
            "train.pairs_per_second": steps * train_cfg.batch_size / max(train_seconds, 1e-9),
        },
    )
    return {"encoder_dir": str(encoder_dir), "steps": steps, "best_step": result.best_step, "pairs": int(len(pairs)), "val_history": result.val_history, "seconds": train_seconds}


def tuning_fold(split, catalog: pd.DataFrame) -> np.ndarray:
    """Catalog indices (sorted) of the split's tuning-fold items that have training interactions: the
    warm items the tuning steps hide and treat as new (an item nobody trained on is cold already)."""
    from recsys.splits import TRAIN

    trained = set(split.part(TRAIN)[S.ITEM_ID])
    return np.flatnonzero(catalog[S.ITEM_ID].map(lambda i: i in split.tuning_items and i in trained).to_numpy(dtype=bool))


def fine_tuning_part(split) -> pd.DataFrame:
    """The training pairs the encoder and the fusion projection learn from: the training part without the
    tuning fold's items, so cold-start choices (`cold_weight`, the fusion variant) are judged on items the
    vectors have never learned, as real new items will be."""
    from recsys.splits import TRAIN

    train = split.part(TRAIN)
    return train[~train[S.ITEM_ID].isin(split.tuning_items)]


FUSED_EMBEDDINGS = "fused.npy"  # the item vectors every later stage uses (the fine-tuned ones when fusion is off or not kept)


def item_vectors(ctx: RunContext) -> np.ndarray:
    """The item vectors the model is built on: fused with the numeric signals (`fuse`), or the fine-tuned
    text vectors for a run folder written before the fusion stage existed."""
    emb = ctx.run_dir / "embeddings"
    return np.load(emb / FUSED_EMBEDDINGS if (emb / FUSED_EMBEDDINGS).exists() else emb / "finetuned.npy")


def item_signals(ctx: RunContext, catalog: pd.DataFrame, split) -> dict[str, np.ndarray | None]:
    """Raw numeric signals per catalog item: price, training sales count, mean training rating (NaN = unknown)."""
    price = pd.to_numeric(catalog[S.PRICE], errors="coerce").astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    mean_rating = _train_mean_rating(ctx, split)
    rating = catalog[S.ITEM_ID].map(mean_rating).to_numpy(dtype=np.float64, na_value=np.nan) if mean_rating is not None else None
    return {"price": price, "sales": _train_popularity(split, catalog[S.ITEM_ID].tolist()).astype(np.float64), "rating": rating}


def train_run_fusion(fusion: FusionConfig, pairs: np.ndarray, split, catalog: pd.DataFrame, vectors: np.ndarray, signals: dict, k: int, select_on: str = "pseudo_cold"):
    """Train the fusion adaptor on a run's split, judging each step as `select_on` says.

    "pseudo_cold": fusion is there for the items behaviour cannot reach. A projection that sharpens warm
    items but misplaces new ones is worse for the hybrid, whose EASE part already knows the warm items
    (measured on online-retail, scripts/bench_fusion.py: sales fused in and judged on plain validation
    lift the text model's Recall@10 +57% but halve its cold-slice recall). So the split's tuning fold
    (`Split.tuning_items`: warm items kept out of the fine-tuning pairs too) is held out of the training
    pairs and shown to the projection as new (0 sales), and a step is scored by validation Recall@k on
    those items. "validation": plain validation Recall@k
    (the text model served alone). Either way the text vectors (step 0) stay a candidate.

    `pairs` are the fine-tuning pairs (`recsys.finetune.training_pairs`). Returns (FusionResult,
    SignalScaler or None, features or None, held-out item indices).
    """
    from recsys.evaluate import evaluate_scorers, vector_scorer
    from recsys.fusion import train_fusion
    from recsys.signals import SignalScaler, available_signals

    if select_on not in ("pseudo_cold", "validation"):
        raise ValueError(f"select_on must be pseudo_cold or validation, got {select_on!r}")
    item_ids = catalog[S.ITEM_ID].tolist()
    raw = available_signals(signals, fusion.signals)
    scaler = SignalScaler.fit(raw) if raw else None
    features = scaler.transform(raw) if scaler is not None else None
    hidden = np.zeros(0, dtype=np.int64)
    fold_features = features
    metric = metric_name("recall", k)
    if select_on == "pseudo_cold":
        metric = metric_name("cold_recall", k)
        hidden = tuning_fold(split, catalog)
        pairs = pairs[~np.isin(pairs, hidden).any(axis=1)]
        if scaler is not None and scaler.new_item_sales() is not None:
            col, unsold = scaler.new_item_sales()
            fold_features = features.copy()
            fold_features[hidden, col] = unsold  # held-out items look new to the projection, as real new items will

    def validate(v: np.ndarray) -> float:
        return evaluate_scorers(item_ids, {"m": vector_scorer(v)}, split, "val", k, extra_cold=hidden)["m"][metric]

    # validate() sees the vectors fused with the fold's features (the held-out items as new)
    result = train_fusion(vectors, fold_features, pairs, fusion, validate, scaler.new_item_sales() if scaler is not None else None)
    return result, scaler, features, hidden


def fuse(cfg: PipelineConfig, ctx: RunContext, mlflow_run_id: str) -> dict[str, Any]:
    """Fuse the fine-tuned text vectors with the items' numeric signals through a small learned
    projection (`recsys.fusion`), trained on the fine-tuning pairs over the cached vectors.

    Up to three variants are trained — the residual text adaptor alone, the signal projection alone, and
    both — and the one whose best step scores highest on the selection criterion (`train_run_fusion`:
    held-out items for the hybrid, plain validation for the text model) is kept; none is kept when none
    beats the text vectors. Writes `embeddings/fused.npy` and, when kept, the adaptor into the model
    directory (serving applies it to new items' text)."""
    from dataclasses import replace

    from recsys.finetune import training_pairs
    from recsys.fusion import FusedEncoder
    from recsys.signals import available_signals

    tracking, c = _mlflow(ctx)
    split, catalog = _load_split(ctx.run_dir)
    vectors = np.load(ctx.run_dir / "embeddings" / "finetuned.npy")
    fusion_dir = ctx.run_dir / "model" / "fusion"
    shutil.rmtree(fusion_dir, ignore_errors=True)  # a rerun starts clean: no adaptor of an earlier attempt survives
    out = ctx.run_dir / "embeddings" / FUSED_EMBEDDINGS
    if not cfg.fusion.enabled:
        np.save(out, vectors)
        tracking.log_params(c, mlflow_run_id, {"fusion.kept": False})
        return {"kept": False, "enabled": False, "best_step": 0, "signals": []}
    select_on = cfg.fusion.select_on if cfg.fusion.select_on != "auto" else ("pseudo_cold" if cfg.candidate == "hybrid" else "validation")
    signals = item_signals(ctx, catalog, split)
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
            tracking.log_metrics(c, mlflow_run_id, {f"{metric}.{name}": score}, step=step)
        tracking.log_metrics(c, mlflow_run_id, {f"fusion.{name}.best_step": result.best_step, f"fusion.{name}.seconds": result.seconds})
    if chosen is None:
        np.save(out, vectors)
        tracking.log_params(c, mlflow_run_id, {"fusion.kept": False, "fusion.signals_used": "none", "fusion.selected_on": select_on, "fusion.variant": "none"})
        tracking.log_metrics(c, mlflow_run_id, {"fusion.best_step": 0})
        log.info("fusion: not kept (no variant beat the text vectors on %s: %s)", select_on, scores)
        return {"kept": False, "enabled": True, "best_step": 0, "signals": [], "selected_on": select_on, "variant": None, "scores": scores}
    result, scaler, features, hidden = trained[chosen]
    used = list(scaler.names) if scaler is not None and result.adaptor.features is not None else []
    np.save(out, result.adaptor.apply(vectors, features).astype(np.float32))
    FusedEncoder(result.adaptor, scaler if used else None).save(
        fusion_dir, {"variant": chosen, "best_step": result.best_step, "val_history": result.val_history, "selected_on": select_on, "held_out_items": len(hidden), "variant_scores": scores}
    )
    tracking.log_params(c, mlflow_run_id, {"fusion.kept": True, "fusion.signals_used": ",".join(used) or "none", "fusion.selected_on": select_on, "fusion.variant": chosen})
    tracking.log_metrics(c, mlflow_run_id, {"fusion.best_step": result.best_step})
    log.info("fusion: kept %r at step %d (%s: %s)", chosen, result.best_step, select_on, scores)
    return {"kept": True, "enabled": True, "best_step": result.best_step, "signals": used, "selected_on": select_on, "variant": chosen, "scores": scores}


def _train_popularity(split, item_ids: list[str]) -> np.ndarray:
    """Training interactions per item, in `item_ids` order."""
    from recsys.splits import TRAIN

    return split.part(TRAIN)[S.ITEM_ID].value_counts().reindex(item_ids, fill_value=0).to_numpy()


def _baseline_inputs(split, catalog: pd.DataFrame):
    from recsys import baselines
    from recsys.splits import TRAIN

    item_ids = catalog[S.ITEM_ID].tolist()
    train = split.part(TRAIN)
    x = baselines.interaction_matrix(train, item_ids)
    is_cold = np.asarray(x.sum(axis=0)).ravel() == 0  # no training interaction (the cold split, and any item never bought)
    popularity = _train_popularity(split, item_ids)
    return item_ids, x, is_cold, popularity


def bundle_catalog(split, catalog: pd.DataFrame, vectors: np.ndarray):
    """What bundles and reasons read: item fields plus co-purchase statistics of the training part only."""
    from recsys.bundles import BundleCatalog, top_category
    from recsys.splits import TRAIN

    titles = catalog[S.TITLE].fillna(catalog[S.ITEM_ID]).astype(str).tolist()
    index = {item: i for i, item in enumerate(catalog[S.ITEM_ID])}
    train = split.part(TRAIN)
    train = train[train[S.ITEM_ID].isin(index)]
    return BundleCatalog.build(
        catalog[S.ITEM_ID].tolist(),
        titles,
        vectors,
        [top_category(c) for c in catalog[S.CATEGORY]],
        catalog[S.PRICE].to_numpy(dtype=np.float64, na_value=np.nan),
        train[S.USER_ID].to_numpy(),
        train[S.ITEM_ID].map(index).to_numpy(),
    )


def item_features(ctx: RunContext, catalog: pd.DataFrame, split) -> np.ndarray | None:
    """Standardised numeric item features for the hybrid: log price and the mean training rating
    (0 where unknown). Sales are left out on purpose: they would only say which items are new."""
    from recsys.signals import SignalScaler, available_signals

    raw = available_signals(item_signals(ctx, catalog, split), ("price", "rating"))
    return SignalScaler.fit(raw).transform(raw) if raw else None


def fit_model(cfg: PipelineConfig, ctx: RunContext, mlflow_run_id: str) -> dict[str, Any]:
    """Fit the hybrid recommender (EASE + text side information + cold propagation) on the fine-tuned
    item vectors, tuning its weights on validation (its pseudo-cold fold is the split's tuning fold, which
    fine-tuning never saw); tune the EASE and item-kNN baselines on validation on their own, with the same
    bracketed-grid rule (`recsys.tuning`), so the candidate is compared with baselines as well tuned as it."""
    from recsys import baselines
    from recsys.evaluate import evaluate_scorers
    from recsys.hybrid import HybridConfig, tune_hybrid

    tracking, c = _mlflow(ctx)
    split, catalog = _load_split(ctx.run_dir)
    item_ids, x, is_cold, _ = _baseline_inputs(split, catalog)
    vectors = item_vectors(ctx)
    metric = metric_name(cfg.gate.primary_metric, cfg.eval.k)

    def validation_score(model, hidden: np.ndarray) -> float:
        return evaluate_scorers(item_ids, {"m": model.scores}, split, "val", cfg.eval.k, extra_cold=np.flatnonzero(hidden))["m"][metric]

    def weights_score(weights: np.ndarray) -> float:
        return evaluate_scorers(item_ids, {"m": lambda q: baselines.item_item_scores(weights, q)}, split, "val", cfg.eval.k)["m"][metric]

    start = time.perf_counter()
    features = item_features(ctx, catalog, split)
    model, record = tune_hybrid(x, vectors, is_cold, validation_score, HybridConfig(seed=cfg.split.seed), features, pseudo_cold=tuning_fold(split, catalog))
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    _, ease = baselines.tune_ease(x, weights_score)
    _, knn = baselines.tune_itemknn(x, weights_score)
    baseline_seconds = time.perf_counter() - start
    tuned = {"ease": ease, "itemknn": knn}
    records = {"hybrid": record, **tuned}
    for name, rec in records.items():
        hits = [p for p, hit in rec["edge_hit"].items() if hit]
        if hits:
            log.warning("%s: the best %s is at the edge of its grid, even after extending it: the optimum may lie beyond", name, ", ".join(hits))
    model_dir = ctx.run_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    np.savez(model_dir / "hybrid.npz", weights=model.weights, vectors=model.vectors, is_cold=model.is_cold)
    _write_json(model_dir / "hybrid.json", {"config": model.config.__dict__, "ease_l2": ease["chosen"]["l2"], "baselines": tuned, **record})
    tracking.log_params(
        c,
        mlflow_run_id,
        {f"hybrid.{k}": v for k, v in record["chosen"].items()}
        | {f"baseline.{name}.{p}": v for name, rec in tuned.items() for p, v in rec["chosen"].items()}
        | {f"tuning.{name}.edge_hit.{p}": hit for name, rec in records.items() for p, hit in rec["edge_hit"].items()},
    )
    tracking.log_metrics(
        c,
        mlflow_run_id,
        {"hybrid.fit_seconds": seconds, "baselines.tune_seconds": baseline_seconds}
        | {f"hybrid.val.{k}": v for k, v in record["tried"].items()}
        | {f"baseline.{name}.val.{k}": v for name, rec in tuned.items() for k, v in rec["tried"].items()},
    )
    chosen = {name: rec["chosen"] for name, rec in tuned.items()}
    edges = {name: rec["edge_hit"] for name, rec in records.items()}
    return {"model": str(model_dir / "hybrid.npz"), "chosen": record["chosen"], "baselines": chosen, "ease_l2": ease["chosen"]["l2"], "edge_hit": edges, "seconds": seconds}


def load_hybrid(model_dir: Path):
    from recsys.hybrid import HybridConfig, HybridModel

    data = np.load(model_dir / "hybrid.npz")
    info = _read_json(model_dir / "hybrid.json")
    cfg = HybridConfig.from_dict(info["config"])
    return HybridModel(weights=data["weights"], vectors=data["vectors"], is_cold=data["is_cold"], config=cfg), info


def evaluation_context(ctx: RunContext, split, catalog: pd.DataFrame):
    """What the beyond-accuracy metrics and slices need, the same for every model scored in a run."""
    from recsys.bundles import top_category
    from recsys.evaluate import EvaluationContext

    _, x, _, popularity = _baseline_inputs(split, catalog)
    categories = [top_category(c) for c in catalog[S.CATEGORY]]
    return EvaluationContext(
        ks=(20, 50),
        vectors=item_vectors(ctx),
        popularity=popularity,
        n_users=int(x.shape[0]),
        categories=categories if any(c is not None for c in categories) else None,
    )


PER_USER_TEST = "per_user_test.npz"  # per-user test metrics of every model, written by `evaluate`


def evaluate(cfg: PipelineConfig, ctx: RunContext, mlflow_run_id: str) -> dict[str, Any]:
    """Full-ranking evaluation on val and test of the candidate (hybrid) and every baseline:
    EASE, item-kNN, the fine-tuned and the frozen text encoder, popularity — same queries, same run."""
    from recsys import baselines
    from recsys.evaluate import evaluate_scorers, popularity_scorer, vector_scorer

    tracking, c = _mlflow(ctx)
    split, catalog = _load_split(ctx.run_dir)
    item_ids, x, _, popularity = _baseline_inputs(split, catalog)
    emb = ctx.run_dir / "embeddings"
    hybrid, info = load_hybrid(ctx.run_dir / "model")
    # the baselines at the values chosen on validation (`fit_model`)
    ease = baselines.ease_weights(x, info["ease_l2"])
    knn_chosen = info.get("baselines", {}).get("itemknn", {}).get("chosen", {})
    knn = baselines.itemknn_weights(x, knn_chosen.get("neighbours"), float(knn_chosen.get("shrink", 0.0)))
    scorers = {
        "hybrid": hybrid.scores,
        "ease": lambda q: baselines.item_item_scores(ease, q),
        "itemknn": lambda q: baselines.item_item_scores(knn, q),
        "fused": vector_scorer(item_vectors(ctx)),
        "finetuned": vector_scorer(np.load(emb / "finetuned.npy")),
        "frozen": vector_scorer(np.load(emb / "frozen.npy")),
        "popularity": popularity_scorer(popularity),
    }
    context = evaluation_context(ctx, split, catalog)
    test_topk: dict[str, np.ndarray] = {}
    per_user: dict[str, dict[str, np.ndarray]] = {}
    report = {
        stage: evaluate_scorers(
            item_ids, scorers, split, stage, cfg.eval.k, cfg.eval.batch_size, context=context,
            topk_out=test_topk if stage == "test" else None, per_query_out=per_user if stage == "test" else None,
        )
        for stage in ("val", "test")
    }
    # per test user, every model's metrics: the drift monitor's reference and paired comparisons bootstrap over them
    np.savez(ctx.run_dir / PER_USER_TEST, **{f"{m}.{name}": v for m, rows in per_user.items() for name, v in rows.items()})
    # bundles: composed from each test user's known items, scored against their held-out items
    from recsys.bundle_eval import bundle_metrics
    from recsys.bundles import BundleConfig
    from recsys.evaluate import split_queries

    queries, targets, _ = split_queries(item_ids, split, "test")
    prices = catalog[S.PRICE].to_numpy(dtype=np.float64, na_value=np.nan)
    known = prices[np.isfinite(prices)]
    budget = float(4 * np.median(known)) if len(known) else None  # a typical 4-item bundle's price
    bundles = bundle_metrics(bundle_catalog(split, catalog, item_vectors(ctx)), queries, targets, BundleConfig(k=4, budget=budget), seed=cfg.split.seed)
    for model in ("hybrid", "fused"):  # either can be the candidate; both serve the same bundle composer
        report["test"][model].update(bundles | {"bundle_budget": budget or 0.0})
    _write_json(ctx.run_dir / "metrics.json", report)
    from recsys.beyond_accuracy import exposure_by_popularity_bin

    # where each model's recommendations land on the popularity curve (the long-tail plot)
    _write_json(ctx.run_dir / "exposure.json", {m: exposure_by_popularity_bin(t, popularity).tolist() for m, t in test_topk.items()})
    flat = {f"{stage}.{model}.{m}": v for stage, models in report.items() for model, ms in models.items() for m, v in ms.items()}
    tracking.log_metrics(c, mlflow_run_id, flat)
    tracking.log_artifacts(c, mlflow_run_id, ctx.run_dir / "metrics.json")
    return {"metrics": str(ctx.run_dir / "metrics.json"), "test": report["test"]}

