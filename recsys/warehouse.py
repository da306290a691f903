"""The warehouse: canonical items and interactions behind SQLAlchemy 2.

SQLite file by default, PostgreSQL by URL. Loads are upserts keyed by natural keys, so
loading the same data twice leaves exactly the same rows.

Both backends behave alike (tests/test_warehouse.py on SQLite, tests/test_postgres.py on a real
PostgreSQL server): a key given twice in one load keeps its last row (PostgreSQL refuses to touch
a row twice in one multi-row upsert, SQLite's row-by-row upsert keeps the last); a value longer
than its VARCHAR column is a clear ValueError before anything is written (PostgreSQL enforces the
lengths, SQLite would store it silently); reads come back in code-point order whatever the
database's collation; timestamps come back tz-aware UTC whatever the session time zone.
"""

from __future__ import annotations

import functools
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
    bindparam,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

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

# one row per data set: the salt its stable split is drawn with (recsys.splits). Stored here, beside the
# data, so every run on the data set draws the same partition until someone changes it on purpose.
split_salts_table = Table(
    "split_salts",
    metadata,
    Column("dataset", String(64), primary_key=True),
    Column("salt", String(128), nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
)


def split_salt(engine: Engine, dataset: str, requested: str = "", default: str = "") -> tuple[str, str | None]:
    """The data set's split salt, and the salt it replaced (None when unchanged).

    `requested` (non-empty) sets it on purpose; otherwise the stored salt is used, and a data set without
    one stores `default`."""
    from datetime import datetime, timezone

    with engine.begin() as conn:
        stored = conn.execute(select(split_salts_table.c.salt).where(split_salts_table.c.dataset == dataset)).scalar_one_or_none()
        wanted = requested or stored or default
        if not wanted:
            raise ValueError(f"data set {dataset!r} has no split salt and none was given")
        if stored is None:
            conn.execute(split_salts_table.insert().values(dataset=dataset, salt=wanted, set_at=datetime.now(timezone.utc)))
        elif stored != wanted:
            log.warning("split salt of data set %s changed on request: every part is re-drawn", dataset)
            conn.execute(
                split_salts_table.update().where(split_salts_table.c.dataset == dataset).values(salt=wanted, set_at=datetime.now(timezone.utc))
            )
    return wanted, (stored if stored is not None and stored != wanted else None)


_CHUNK = 20_000  # rows per executemany: bounded memory, few round trips
# PostgreSQL: rows per multi-row INSERT .. VALUES (..), (..) ON CONFLICT statement. SQLAlchemy sends an
# ON CONFLICT executemany one row per round trip (its batching skips upserts), so we batch ourselves;
# 1000 rows x <= 9 columns stays far below PostgreSQL's 65535 bind parameters per statement.
_PG_ROWS_PER_STATEMENT = 1_000


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


def check_lengths(table: Table, frame: pd.DataFrame) -> None:
    """Raise ValueError when a value is longer than its VARCHAR column (PostgreSQL would refuse
    it mid-load; SQLite would store it): the same data load, or fail, on both backends."""
    for col in table.columns:
        length = getattr(col.type, "length", None)
        if length is None or col.name not in frame.columns or not len(frame):
            continue
        lengths = frame[col.name].astype("string").str.len()
        too_long = lengths > length
        if too_long.any():
            example = str(frame[col.name][too_long].iloc[0])
            raise ValueError(
                f"{table.name}.{col.name} holds at most {length} characters, but {int(too_long.sum())} value(s) are longer "
                f"(longest {int(lengths.max())}, e.g. {example[:60]!r}{'...' if len(example) > 60 else ''}); nothing was loaded"
            )


@functools.lru_cache(maxsize=16)
def _pg_upsert_sql(table: Table, n_rows: int, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
    """INSERT .. VALUES (row 0), .., (row n-1) ON CONFLICT (key) DO UPDATE with parameters named
    `<column>__<i>`, compiled ONCE per (table, size, dialect) -- SQLAlchemy does not cache the
    compilation of multi-row VALUES, which would otherwise cost more than the round trip.
    Returns (SQL, parameter names in order for a positional driver, else None)."""
    keys = [c.name for c in table.primary_key.columns]
    stmt = postgresql.insert(table).values(
        [{c.name: bindparam(f"{c.name}__{i}", type_=c.type) for c in table.columns} for i in range(n_rows)]
    )
    updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    compiled = stmt.on_conflict_do_update(index_elements=keys, set_=updates).compile(dialect=dialect)
    return compiled.string, (tuple(compiled.positiontup) if compiled.positional else None)


def _upsert(conn, table: Table, rows: list[dict]) -> None:
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    dialect = conn.dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise ValueError(f"warehouse dialect {dialect!r} is not supported (use sqlite or postgresql)")
    # one row per key, the last one given (what a row-by-row upsert leaves), in key order: a
    # multi-row upsert may not touch a row twice, and concurrent loads lock rows in the same order
    by_key = {tuple(r[k] for k in keys): r for r in rows}
    rows = [by_key[k] for k in sorted(by_key, key=lambda key: tuple(str(v) for v in key))]
    if dialect == "postgresql":
        names = [c.name for c in table.columns]
        for start in range(0, len(rows), _PG_ROWS_PER_STATEMENT):
            batch = rows[start : start + _PG_ROWS_PER_STATEMENT]
            sql, order = _pg_upsert_sql(table, len(batch), conn.dialect)
            params = {f"{name}__{i}": row.get(name) for i, row in enumerate(batch) for name in names}
            conn.exec_driver_sql(sql, tuple(params[p] for p in order) if order is not None else params)
        return
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
    check_lengths(items_table, items)
    check_lengths(interactions_table, inter)
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
    """The data set's canonical items and interactions, as stored, sorted by key in code-point order
    (items by item_id, interactions by interaction_key): the same order on SQLite and on PostgreSQL
    whatever the database's collation."""
    with engine.connect() as conn:
        items = pd.read_sql(
            select(*[items_table.c[c] for c in S.ITEM_COLUMNS]).where(items_table.c.dataset == dataset).order_by(items_table.c.item_id),
            conn,
        )
        inter = pd.read_sql(
            select(*[interactions_table.c[c] for c in S.INTERACTION_COLUMNS], interactions_table.c.interaction_key)
            .where(interactions_table.c.dataset == dataset)
            .order_by(interactions_table.c.interaction_key),
            conn,
        )
    # the SQL ORDER BY follows the database collation (e.g. en_US: "a" < "B"); sort by code point here
    items = items.sort_values(S.ITEM_ID, kind="stable").reset_index(drop=True)
    inter = inter.sort_values("interaction_key", kind="stable").drop(columns="interaction_key").reset_index(drop=True)
    # PostgreSQL hands back the session time zone's offsets, SQLite naive UTC: tz-aware UTC for both
    inter[S.TIMESTAMP] = pd.to_datetime(inter[S.TIMESTAMP], utc=True)
    return S.to_canonical_items(items), S.to_canonical_interactions(inter)
