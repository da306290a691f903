"""Publish a promoted model's recommendations to the warehouse, for every catalog item at once.

After a model version is promoted, a batch job writes, for EVERY catalog item, its top-k related
items and a complete-the-basket bundle (anchor = that item) to the table
`published_recommendations`, tagged with the model name and version. Downstream readers (email
campaigns, product pages without a live endpoint) read the table instead of calling the model.

One model name holds one version at a time: a publish deletes the name's previous rows and inserts
the new ones in ONE transaction, so a reader sees either the old version's rows or the new one's,
never a mix, and a failure part-way leaves the old rows. Items are scored in chunks of single-item
queries (bounded memory) with the recommender's own scoring and reason functions, so the published
lists, scores and reasons are the ones the served model returns for an `item_id` request.

SQLAlchemy 2 Core: SQLite and PostgreSQL alike (tests/test_publish.py on SQLite,
tests/test_postgres.py on a real PostgreSQL server). On PostgreSQL a publish first takes a
transaction-level advisory lock on the model name, so two concurrent publishes of one name run one
after the other (the later one replaces the earlier one's rows) instead of one failing on the
primary key; run them at READ COMMITTED, the default. On SQLite a publish holds the warehouse write
lock of the file (`recsys.data.warehouse.write_lock`), so concurrent publishes and loads queue instead of
failing with "database is locked", and URLs open engines set up for concurrent use (WAL, busy timeout).

Memory is bounded by the chunk, not by the catalog's row count: each chunk's rows are inserted as
soon as it is scored (still inside the one transaction), so a publish holds about
2 x chunk_size x n_items x 8 bytes (the chunk's scores and argpartition's indices) and
chunk_size x (k + bundle_size) rows at a time; scripts/bench_publish_memory.py measures it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    literal,
    select,
    text,
)
from tqdm.auto import tqdm

from recsys.model.bundles import BundleConfig, cart_preference, compose_bundle, single_item_similarities
from recsys.data.warehouse import create_tables, open_engine, write_lock

if TYPE_CHECKING:
    from recsys.serving import ItemRecommender

log = logging.getLogger(__name__)

RELATED = "related"
BUNDLE = "bundle"
KINDS = (RELATED, BUNDLE)
REASON_SEP = " | "  # the same separator as recsys.serving.REASON_SEP (asserted in the tests)

metadata = MetaData()

published_table = Table(
    "published_recommendations",
    metadata,
    Column("model_name", String(256), primary_key=True),
    Column("model_version", String(64), nullable=False),
    Column("item_id", String(128), primary_key=True),
    Column("kind", String(16), primary_key=True),  # 'related' | 'bundle'
    Column("rank", Integer, primary_key=True, autoincrement=False),  # 1-based
    Column("recommended_item_id", String(128), nullable=False),
    Column("score", Float, nullable=False),
    Column("reasons", Text, nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
    Index("ix_published_recommendations_model_item", "model_name", "item_id"),
)

COLUMNS = [c.name for c in published_table.columns]

# A publish split across workers (`publish_shard` per item range, then `finish_publish`): each shard's rows
# wait here, invisible to readers, until the finish swaps them all in at once.
staging_table = Table(
    "published_recommendations_staging",
    metadata,
    Column("publish_id", String(64), primary_key=True),
    Column("shard", Integer, nullable=False),
    *[Column(c.name, c.type, primary_key=c.name in ("item_id", "kind", "rank"), autoincrement=False, nullable=c.nullable) for c in published_table.columns if c.name != "model_name"],
    Column("model_name", String(256), nullable=False),
    Index("ix_published_recommendations_staging_shard", "publish_id", "shard"),
)

# one row per finished shard, written last, so a shard that died part-way is never counted
shards_table = Table(
    "published_recommendation_shards",
    metadata,
    Column("publish_id", String(64), primary_key=True),
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("model_name", String(256), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("first_item", Integer, nullable=False),  # catalog positions [first_item, end_item)
    Column("end_item", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False),
)

STALE_STAGING = timedelta(days=1)  # a model's staged shards older than this are dropped by its next finish


class PublishedVersionError(RuntimeError):
    """The table holds more than one version for a model name: a publish broke its invariant."""


class PublishIncompleteError(RuntimeError):
    """A sharded publish was finished before all of its shards were written: nothing was published."""


@dataclass(frozen=True)
class PublishResult:
    """What one publish wrote."""

    model_name: str
    model_version: str
    items: int  # catalog items published (each an anchor)
    rows: int  # rows inserted (related + bundle)
    seconds: float


def _engine(engine_or_url: Engine | str) -> tuple[Engine, bool]:
    """(engine with the table created if missing, whether we created the engine and must dispose it)."""
    owned = isinstance(engine_or_url, str)
    engine = open_engine(engine_or_url) if owned else engine_or_url
    create_tables(engine, metadata)  # safe when several processes create it at once
    return engine, owned


def _lock_key(model_name: str) -> int:
    """A signed 64-bit advisory-lock key for a model name (stable across processes and hosts)."""
    digest = hashlib.sha1(f"published_recommendations:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _check_length(column: str, values: list[str]) -> None:
    """ValueError when a value is longer than its VARCHAR column: PostgreSQL would refuse it part-way
    through a publish, SQLite would store it; checked before the old rows are touched."""
    length = published_table.c[column].type.length
    longest = max(values, key=len) if values else ""
    if length is not None and len(longest) > length:
        raise ValueError(
            f"published_recommendations.{column} holds at most {length} characters, got {len(longest)}: "
            f"{longest[:60]!r}{'...' if len(longest) > 60 else ''} (nothing was published; the previous rows are kept)"
        )


def _chunk_scores(recommender: ItemRecommender, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Dense [len(idx), n_items] float64 scores of single-item queries, as `ItemRecommender._scores`, and
    the model's behaviour part of them (each anchor's `pair_weight` to every item; None for a text-only model)."""
    if recommender.model is not None:
        scores, behaviour = recommender.model.scores_and_behaviour([np.array([i], dtype=np.int64) for i in idx])
        return np.array(scores, dtype=np.float64), behaviour
    # text-only model: cosine of each item's vector to every item's (see ItemRecommender._scores)
    q = recommender.vectors[idx]
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12).astype(q.dtype)
    return np.array(q @ recommender.vectors.T, dtype=np.float64), None


def _top_k(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row: the indices of the k best finite scores, best first, ties to the lower index.

    The same order as the served `np.argsort(-scores, kind="stable")[:k]` (finite scores only), via
    argpartition; a row with ties across the k-th place falls back to the stable sort. Works on
    `scores` directly (no negated copy): besides it, one [rows, n] index array from argpartition.
    """
    n_rows, n = scores.shape
    kk = min(k, n)
    if kk == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(n_rows)]
    part = np.argpartition(scores, n - kk, axis=1)[:, n - kk :]  # the kk largest, unordered
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)  # by -score, then by index
    part = np.take_along_axis(part, order, axis=1)
    kth = np.take_along_axis(scores, part[:, -1:], axis=1)  # the k-th best
    ambiguous = (scores >= kth).sum(axis=1) > kk  # more items tie with the k-th than there are places
    out = []
    for r in range(n_rows):
        top = np.argsort(-scores[r], kind="stable")[:kk] if ambiguous[r] else part[r]
        out.append(top[np.isfinite(scores[r, top])])
    return out


def _checked(recommender: ItemRecommender, model_name: str, model_version: str, k: int, bundle_size: int, chunk_size: int) -> tuple[list[str], BundleConfig]:
    """The catalog's item ids and the bundle settings, after every check that must pass before a row is touched."""
    if not str(model_name).strip() or not str(model_version).strip():
        raise ValueError("model_name and model_version must be non-empty")
    if k < 1 or chunk_size < 1:
        raise ValueError(f"k and chunk_size must be >= 1, got k={k}, chunk_size={chunk_size}")
    item_ids = [str(i) for i in recommender.item_ids]
    n = len(item_ids)
    if n == 0:
        raise ValueError("the model's catalog is empty: nothing to publish (the previous rows are kept)")
    if len(set(item_ids)) != n:
        dup = pd.Series(item_ids)[pd.Series(item_ids).duplicated()].unique()[:5].tolist()
        raise ValueError(f"the model's catalog has duplicate item ids (e.g. {dup}): cannot publish one list per item")
    _check_length("model_name", [str(model_name)])
    _check_length("model_version", [str(model_version)])
    _check_length("item_id", item_ids)
    bundle_cfg = BundleConfig(k=bundle_size)  # validates bundle_size
    if recommender.behaviour is None:
        log.warning("model %s version %s carries no behaviour statistics: publishing related items only, no bundles", model_name, model_version)
    return item_ids, bundle_cfg


def _chunk_rows(recommender: ItemRecommender, idx: np.ndarray, item_ids: list[str], base: dict, k: int, bundle_cfg: BundleConfig) -> list[dict]:
    """The published rows (related then bundle, per anchor) of the anchors `idx`, each row `base` plus its
    own columns: the served model's lists, scores and reasons for single-item requests."""
    behaviour = recommender.behaviour
    scores, pair_weights = _chunk_scores(recommender, idx)
    # the bundles' cosines: one matrix product per block of anchors, not a catalog scan each
    similarities = single_item_similarities(behaviour, idx) if behaviour is not None else itertools.repeat(None)
    scores[np.arange(len(idx)), idx] = -np.inf  # never the item itself
    scores[np.isnan(scores)] = -np.inf
    rows = []
    lo = int(idx[0]) if len(idx) else 0
    for i, top, sims in zip(idx.tolist(), _top_k(scores, k), similarities):
        anchor = item_ids[i]
        r = i - lo
        for rank, j in enumerate(top.tolist(), start=1):
            rows.append(
                {
                    **base,
                    "item_id": anchor,
                    "kind": RELATED,
                    "rank": rank,
                    "recommended_item_id": item_ids[j],
                    "score": float(scores[r, j]),
                    "reasons": recommender._reasons(j, [i], None, None if pair_weights is None else float(pair_weights[r, j])),
                }
            )
        if behaviour is not None:
            bundle = compose_bundle(behaviour, [i], bundle_cfg, preference=cart_preference(recommender.model, [i], scores[r]), similarities=sims)
            for rank, item in enumerate(bundle.items, start=1):
                rows.append(
                    {
                        **base,
                        "item_id": anchor,
                        "kind": BUNDLE,
                        "rank": rank,
                        "recommended_item_id": item_ids[item.index],
                        "score": float(item.breakdown["total"]),
                        "reasons": REASON_SEP.join(item.reasons),
                    }
                )
    return rows


def publish_recommendations(
    engine_or_url: Engine | str,
    recommender: ItemRecommender,
    model_name: str,
    model_version: str,
    k: int = 10,
    bundle_size: int = 3,
    chunk_size: int = 512,
    progress: bool = True,
) -> PublishResult:
    """Write every catalog item's top-k related items and its bundle, replacing the name's old rows.

    Args:
        engine_or_url: a SQLAlchemy engine or database URL (SQLite or PostgreSQL).
        recommender: the loaded model (`ItemRecommender.load(model_dir)`).
        model_name: the registered model's name; its previous rows (any version) are replaced.
        model_version: the version being published.
        k: related items per item (fewer when the catalog is smaller).
        bundle_size: the most items in each item's bundle (`BundleConfig(k=bundle_size)`); skipped,
            with a warning, when the model carries no behaviour statistics.
        chunk_size: items scored and inserted per step, inside the one transaction (memory: about
            2 x chunk_size x n_items x 8 bytes, whatever the catalog's total row count).
        progress: show a tqdm progress bar.

    Returns:
        What was written. All-or-nothing: on any error the transaction rolls back and the name's
        previous rows stay as they were.
    """
    item_ids, bundle_cfg = _checked(recommender, model_name, model_version, k, bundle_size, chunk_size)
    n = len(item_ids)

    engine, owned = _engine(engine_or_url)
    start = time.perf_counter()
    published_at = datetime.now(timezone.utc)
    base = {"model_name": model_name, "model_version": model_version, "published_at": published_at}
    n_rows = 0
    try:
        # SQLite: one writer per file; queue on the file's write lock rather than fail on "database is locked"
        with (
            write_lock(engine, f"publish of {model_name}"),
            engine.begin() as conn,
            tqdm(total=n, desc=f"publishing {model_name} v{model_version}", unit="item", disable=not progress) as bar,
        ):
            # one transaction: the old rows go and the new ones come at commit, or nothing changes
            if conn.dialect.name == "postgresql":
                # concurrent publishes of this name queue here until the holder commits or rolls back;
                # the DELETE below then sees (and replaces) the rows the holder committed
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(model_name)})
            deleted = conn.execute(delete(published_table).where(published_table.c.model_name == model_name)).rowcount
            stmt = insert(published_table)
            for lo in range(0, n, chunk_size):
                idx = np.arange(lo, min(lo + chunk_size, n))
                rows = _chunk_rows(recommender, idx, item_ids, base, k, bundle_cfg)
                if rows:
                    conn.execute(stmt, rows)
                n_rows += len(rows)
                bar.update(len(idx))
    finally:
        if owned:
            engine.dispose()
    seconds = time.perf_counter() - start
    log.info(
        "published %s version %s: %d items, %d rows (replaced %s old rows) in %.1fs",
        model_name, model_version, n, n_rows, deleted if deleted is not None and deleted >= 0 else "?", seconds,
    )
    return PublishResult(model_name=model_name, model_version=model_version, items=n, rows=n_rows, seconds=seconds)


def publish_shard(
    engine_or_url: Engine | str,
    recommender: ItemRecommender,
    model_name: str,
    model_version: str,
    publish_id: str,
    shard: int,
    start: int,
    stop: int,
    k: int = 10,
    bundle_size: int = 3,
    chunk_size: int = 512,
    progress: bool = True,
) -> PublishResult:
    """Write the rows of catalog items [start, stop) to the staging table, for `finish_publish` to swap in.

    One step of a publish split across workers (the training DAG maps it over item ranges). Readers see
    nothing of it until the finish. A rerun of the same shard replaces its staged rows; the shard counts as
    written only once its last chunk is in (its row in `published_recommendation_shards` comes last), so a
    shard that died part-way is rewritten by its retry, never half-published. Rows are scored outside any
    transaction (a SQLite warehouse's write lock is held per chunk's insert only), so shards run in parallel.
    """
    item_ids, bundle_cfg = _checked(recommender, model_name, model_version, k, bundle_size, chunk_size)
    if not 0 <= start < stop <= len(item_ids) or shard < 0:
        raise ValueError(f"shard {shard}: items [{start}, {stop}) are not a range of the {len(item_ids)}-item catalog")
    if not str(publish_id).strip() or len(publish_id) > staging_table.c.publish_id.type.length:
        raise ValueError(f"publish_id must be 1-{staging_table.c.publish_id.type.length} characters, got {publish_id!r}")
    engine, owned = _engine(engine_or_url)
    begin = time.perf_counter()
    base = {"publish_id": publish_id, "shard": shard, "model_name": model_name, "model_version": model_version, "published_at": datetime.now(timezone.utc)}
    mine = (staging_table.c.publish_id == publish_id) & (staging_table.c.shard == shard)
    holder = f"publish shard {shard} of {model_name}"  # who holds a SQLite warehouse's write lock (logged by waiters)
    n_rows = 0
    try:
        with write_lock(engine, holder), engine.begin() as conn:  # a retry starts clean
            conn.execute(delete(shards_table).where(shards_table.c.publish_id == publish_id, shards_table.c.shard == shard))
            conn.execute(delete(staging_table).where(mine))
        with tqdm(total=stop - start, desc=f"publishing {model_name} v{model_version} shard {shard}", unit="item", disable=not progress) as bar:
            for lo in range(start, stop, chunk_size):
                idx = np.arange(lo, min(lo + chunk_size, stop))
                rows = _chunk_rows(recommender, idx, item_ids, base, k, bundle_cfg)
                if rows:
                    with write_lock(engine, holder), engine.begin() as conn:
                        conn.execute(insert(staging_table), rows)
                n_rows += len(rows)
                bar.update(len(idx))
        with write_lock(engine, holder), engine.begin() as conn:
            conn.execute(
                insert(shards_table),
                {
                    "publish_id": publish_id, "shard": shard, "model_name": model_name, "model_version": model_version,
                    "first_item": start, "end_item": stop, "rows": n_rows, "written_at": datetime.now(timezone.utc),
                },
            )  # fmt: skip
    finally:
        if owned:
            engine.dispose()
    seconds = time.perf_counter() - begin
    log.info("staged %s version %s shard %d: items %d-%d, %d rows in %.1fs", model_name, model_version, shard, start, stop, n_rows, seconds)
    return PublishResult(model_name=model_name, model_version=model_version, items=stop - start, rows=n_rows, seconds=seconds)


def finish_publish(engine_or_url: Engine | str, model_name: str, model_version: str, publish_id: str, n_items: int, n_shards: int) -> PublishResult:
    """Swap a sharded publish in: the name's old rows go and every staged row comes, in one transaction.

    Raises:
        PublishIncompleteError: a shard has not finished, the shards do not cover the catalog's `n_items`
            items exactly, or one staged another version. Nothing changes: the previous rows stay, the staged
            shards stay for a rerun of the missing ones.
    """
    engine, owned = _engine(engine_or_url)
    begin = time.perf_counter()
    published_at = datetime.now(timezone.utc)
    try:
        with write_lock(engine, f"publish of {model_name}"), engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # as publish_recommendations: publishes of one name queue
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(model_name)})
            done = conn.execute(select(shards_table).where(shards_table.c.publish_id == publish_id).order_by(shards_table.c.first_item)).mappings().all()
            _check_shards(done, model_name, model_version, publish_id, n_items, n_shards)
            deleted = conn.execute(delete(published_table).where(published_table.c.model_name == model_name)).rowcount
            staged = select(*[literal(published_at, DateTime(timezone=True)) if c == "published_at" else staging_table.c[c] for c in COLUMNS])
            n_rows = conn.execute(insert(published_table).from_select(COLUMNS, staged.where(staging_table.c.publish_id == publish_id))).rowcount
            expected = sum(row["rows"] for row in done)
            if n_rows != expected:  # a staged row went missing between the shard and here: refuse rather than publish part
                raise PublishIncompleteError(f"publish {publish_id}: the shards wrote {expected} rows but {n_rows} are staged; nothing was published (rerun the publish)")
            # this publish's staging, and any of this model's that was abandoned a day ago or more
            stale = select(shards_table.c.publish_id).where(shards_table.c.model_name == model_name, shards_table.c.written_at < published_at - STALE_STAGING)
            stale_ids = {publish_id, *conn.execute(stale).scalars().all()}
            conn.execute(delete(staging_table).where(staging_table.c.publish_id.in_(stale_ids)))
            conn.execute(delete(shards_table).where(shards_table.c.publish_id.in_(stale_ids)))
    finally:
        if owned:
            engine.dispose()
    seconds = time.perf_counter() - begin
    log.info(
        "published %s version %s from %d shards: %d items, %d rows (replaced %s old rows) in %.1fs",
        model_name, model_version, n_shards, n_items, n_rows, deleted if deleted is not None and deleted >= 0 else "?", seconds,
    )  # fmt: skip
    return PublishResult(model_name=model_name, model_version=model_version, items=n_items, rows=n_rows, seconds=seconds)


def _check_shards(done: list, model_name: str, model_version: str, publish_id: str, n_items: int, n_shards: int) -> None:
    """PublishIncompleteError unless the finished shards are 0..n_shards-1 of this model and version and
    their item ranges tile [0, n_items)."""
    keep = "nothing was published; the previous rows are kept"
    missing = sorted(set(range(n_shards)) - {row["shard"] for row in done})
    if missing:
        raise PublishIncompleteError(f"publish {publish_id} of {model_name} v{model_version}: shards {missing} of {n_shards} have not finished; {keep} (rerun those shards, then finish)")
    other = sorted({(row["model_name"], row["model_version"]) for row in done} - {(model_name, model_version)})
    if other:
        raise PublishIncompleteError(f"publish {publish_id}: shards staged {other}, not {model_name} v{model_version}; {keep}")
    edges = [(row["first_item"], row["end_item"]) for row in done]
    if len(done) != n_shards or edges[0][0] != 0 or edges[-1][1] != n_items or any(a[1] != b[0] for a, b in zip(edges, edges[1:])):
        raise PublishIncompleteError(f"publish {publish_id}: the shards' item ranges {edges} do not cover the {n_items}-item catalog once; {keep}")


def published_version(engine_or_url: Engine | str, model_name: str) -> str | None:
    """The version published for a model name; None when nothing is published.

    Raises:
        PublishedVersionError: the table holds several versions for the name (a broken invariant:
            publishes replace a name's rows in one transaction).
    """
    engine, owned = _engine(engine_or_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(
                select(published_table.c.model_version)
                .where(published_table.c.model_name == model_name)
                .distinct()
                .order_by(published_table.c.model_version)
            ).scalars().all()
    finally:
        if owned:
            engine.dispose()
    if len(versions) > 1:
        raise PublishedVersionError(
            f"published_recommendations holds {len(versions)} versions for model {model_name!r}: {versions}; "
            "a publish replaces all of a model's rows at once, so the table was modified outside publish_recommendations"
        )
    return versions[0] if versions else None


def read_published(engine_or_url: Engine | str, model_name: str, item_id: str, kind: str = RELATED) -> pd.DataFrame:
    """One item's published list ('related' or 'bundle'), ordered by rank; empty when none."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    t = published_table
    engine, owned = _engine(engine_or_url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(
                select(*[t.c[c] for c in COLUMNS])
                .where(t.c.model_name == model_name, t.c.item_id == str(item_id), t.c.kind == kind)
                .order_by(t.c.rank),
                conn,
            )
    finally:
        if owned:
            engine.dispose()
    # SQLite hands back naive UTC datetimes: make them tz-aware everywhere
    frame["published_at"] = pd.to_datetime(frame["published_at"], utc=True)
    return frame.reset_index(drop=True)
