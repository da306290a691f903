"""The warehouse: canonical items and interactions behind SQLAlchemy 2.

SQLite file by default, PostgreSQL by URL. Loads are upserts keyed by natural keys, so
loading the same data twice leaves exactly the same rows.
"""

from __future__ import annotations

import hashlib
import logging

import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from recsys import schema as S

log = logging.getLogger(__name__)

metadata = MetaData()

items_table = Table(
    "items",
    metadata,
    Column("dataset", String(64), primary_key=True),
    Column(S.ITEM_ID, String(128), primary_key=True),
    Column(S.TITLE, Text),
    Column(S.DESCRIPTION, Text),
    Column(S.CATEGORY, Text),
    Column(S.PRICE, Float),
    Column(S.TAGS, Text),
)

interactions_table = Table(
    "interactions",
    metadata,
    Column("dataset", String(64), primary_key=True),
    # a content hash of the row (plus its occurrence number among identical rows): the natural
    # key that makes a reload an upsert rather than a duplicate
    Column("interaction_key", String(40), primary_key=True),
    Column(S.USER_ID, String(64), nullable=False, index=True),
    Column(S.ITEM_ID, String(128), nullable=False),
    Column(S.EVENT, String(16), nullable=False),
    Column(S.TIMESTAMP, DateTime(timezone=True)),
    Column(S.BASKET_ID, String(128)),
    Column(S.QUANTITY, Float),
    Column(S.RATING, Float),
)

_CHUNK = 20_000  # rows per executemany: bounded memory, few round trips


def make_engine(url: str) -> Engine:
    """An engine for the warehouse URL, with its tables created if missing."""
    engine = create_engine(url)
    metadata.create_all(engine)
    return engine


def interaction_keys(interactions: pd.DataFrame) -> pd.Series:
    """Deterministic row keys: sha1 of the row's fields and its occurrence among identical rows.

    The occurrence number keeps genuinely repeated events (two identical purchases) as two rows
    while a reload of the same file maps each row onto its earlier self.
    """
    cols = list(S.INTERACTION_COLUMNS)
    as_text = interactions[cols].astype("string").fillna("\x00")
    joined = as_text[cols[0]].str.cat([as_text[c] for c in cols[1:]], sep="\x1f")
    occurrence = joined.groupby(joined).cumcount().astype(str)
    return (joined + "\x1f" + occurrence).map(lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest())


def _records(df: pd.DataFrame) -> list[dict]:
    # None for every kind of missing value: the DB-API drivers do not understand pd.NA / NaT
    obj = df.astype(object).where(df.notna(), None)
    return obj.to_dict("records")


def _upsert(conn, table: Table, rows: list[dict]) -> None:
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    dialect = conn.dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise ValueError(f"warehouse dialect {dialect!r} is not supported (use sqlite or postgresql)")
    for start in range(0, len(rows), _CHUNK):
        stmt = insert(table)
        updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
        conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=updates), rows[start : start + _CHUNK])


def upsert_dataset(engine: Engine, dataset: S.Dataset) -> dict[str, int]:
    """Upsert a canonical data set (items and interactions in ONE transaction: a failed load leaves
    the previous rows as they were); returns the table sizes for that data set afterwards."""
    items = dataset.items.assign(dataset=dataset.name)
    inter = dataset.interactions.assign(dataset=dataset.name)
    inter = inter.assign(interaction_key=interaction_keys(dataset.interactions).to_numpy())
    # timestamps go in as python datetimes (tz-aware UTC), not pandas Timestamps
    with engine.begin() as conn:
        _upsert(conn, items_table, _records(items))
        _upsert(conn, interactions_table, _records(inter))
    counts = table_counts(engine, dataset.name)
    log.info("warehouse now holds %s for data set %s", counts, dataset.name)
    return counts


def table_counts(engine: Engine, dataset: str) -> dict[str, int]:
    """Row counts of both tables for one data set."""
    with engine.connect() as conn:
        n_items = conn.execute(select(func.count()).select_from(items_table).where(items_table.c.dataset == dataset)).scalar_one()
        n_inter = conn.execute(
            select(func.count()).select_from(interactions_table).where(interactions_table.c.dataset == dataset)
        ).scalar_one()
    return {"items": int(n_items), "interactions": int(n_inter)}


def read_dataset(engine: Engine, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data set's canonical items and interactions, as stored (sorted by key for determinism)."""
    with engine.connect() as conn:
        items = pd.read_sql(
            select(*[items_table.c[c] for c in S.ITEM_COLUMNS]).where(items_table.c.dataset == dataset).order_by(items_table.c.item_id),
            conn,
        )
        inter = pd.read_sql(
            select(*[interactions_table.c[c] for c in S.INTERACTION_COLUMNS])
            .where(interactions_table.c.dataset == dataset)
            .order_by(interactions_table.c.interaction_key),
            conn,
        )
    inter[S.TIMESTAMP] = pd.to_datetime(inter[S.TIMESTAMP], utc=True)
    return S.to_canonical_items(items), S.to_canonical_interactions(inter)
