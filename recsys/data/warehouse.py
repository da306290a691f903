"""The warehouse: canonical items and interactions behind SQLAlchemy 2.

SQLite file by default, PostgreSQL by URL. Loads are upserts keyed by natural keys, so
loading the same data twice leaves exactly the same rows.

Both backends behave alike (tests/test_warehouse.py on SQLite, tests/test_postgres.py on a real
PostgreSQL server): a key given twice in one load keeps its last row (PostgreSQL refuses to touch
a row twice in one multi-row upsert, SQLite's row-by-row upsert keeps the last); a value longer
than its VARCHAR column is a clear ValueError before anything is written (PostgreSQL enforces the
lengths, SQLite would store it silently); reads come back in code-point order whatever the
database's collation; timestamps come back tz-aware UTC whatever the session time zone.

Concurrent writers never fail on locking. SQLite allows one writer per file: writers (loads, split
salts, table creation, recommendation publishes) queue on a file lock beside the database
(`write_lock`), and WAL mode with a busy timeout lets readers read while a writer commits.
PostgreSQL runs loads of different data sets side by side; loads of one data set take turns on an
advisory lock (a load streams in chunks, so it cannot lock its rows in one global order).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from urllib.parse import urlparse

import numpy as np
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
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from recsys.data import schema as S

log = logging.getLogger(__name__)

metadata = MetaData()

items_table = Table(
    "items",
    metadata,
    Column("dataset", String(S.DATASET_NAME_MAX), primary_key=True),
    Column(S.ITEM_ID, String(S.MAX_LENGTHS[S.ITEM_ID]), primary_key=True),
    Column(S.TITLE, Text),
    Column(S.DESCRIPTION, Text),
    Column(S.CATEGORY, Text),
    Column(S.PRICE, Float),
    Column(S.TAGS, Text),
)

interactions_table = Table(
    "interactions",
    metadata,
    Column("dataset", String(S.DATASET_NAME_MAX), primary_key=True),
    # a content hash of the row (plus its occurrence number among identical rows): the natural
    # key that makes a reload an upsert rather than a duplicate
    Column("interaction_key", String(40), primary_key=True),
    Column(S.USER_ID, String(S.MAX_LENGTHS[S.USER_ID]), nullable=False, index=True),
    Column(S.ITEM_ID, String(S.MAX_LENGTHS[S.ITEM_ID]), nullable=False),
    Column(S.EVENT, String(S.MAX_LENGTHS[S.EVENT]), nullable=False),
    Column(S.TIMESTAMP, DateTime(timezone=True)),
    Column(S.BASKET_ID, String(S.MAX_LENGTHS[S.BASKET_ID])),
    Column(S.QUANTITY, Float),
    Column(S.RATING, Float),
)

# one row per data set: the salt its stable split is drawn with (recsys.data.splits). Stored here, beside the
# data, so every run on the data set draws the same partition until someone changes it on purpose.
split_salts_table = Table(
    "split_salts",
    metadata,
    Column("dataset", String(S.DATASET_NAME_MAX), primary_key=True),
    Column("salt", String(128), nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
)


# -- engines, locks and tables -------------------------------------------------------------------

_BUSY_TIMEOUT_S = 60  # SQLite: how long a statement waits for another connection's lock before failing


def _sqlite_file(engine: Engine) -> str | None:
    """The absolute path of the engine's SQLite database file; None for other databases and in-memory SQLite."""
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return None
    db = url.database or ""
    if str(url.query.get("uri", "")).lower() in {"true", "1"} or db.startswith("file:"):
        parsed = urlparse(db)
        if "mode=memory" in parsed.query:
            return None
        db = parsed.path
    if not db or db == ":memory:":
        return None
    return os.path.abspath(db)


@contextlib.contextmanager
def write_lock(engine: Engine, name: str = "warehouse") -> Iterator[None]:
    """Hold the write lock of the engine's SQLite database file (shared by all processes and threads).

    SQLite allows one writer per file and fails a writer that waits longer than its busy timeout, so
    writers queue here instead, for as long as it takes: an `fcntl.flock` on `<db file>.write.lock`.
    `name` says in the log who waits. A no-op for PostgreSQL (it handles concurrent writers) and for
    in-memory SQLite. Not re-entrant: do not nest it for one file in one thread.
    """
    db = _sqlite_file(engine)
    if db is None:
        yield
        return
    path = f"{db}.write.lock"
    try:
        fh = open(path, "a+b")  # noqa: SIM115 - closed below
    except OSError as e:
        # e.g. a read-only folder: SQLite's own locking (and the busy timeout) still guards the file
        log.warning("cannot open the warehouse write lock %s (%s): %s writes without it", path, e, name)
        yield
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for the warehouse write lock %s (%s): another writer holds it ...", path, name)
            start = time.monotonic()
            fcntl.flock(fh, fcntl.LOCK_EX)
            log.info("got the warehouse write lock %s (%s) after %.1fs", path, name, time.monotonic() - start)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lock_key(text_key: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key (stable across processes and hosts)."""
    return int.from_bytes(hashlib.sha1(text_key.encode()).digest()[:8], "big", signed=True)


def _pg_xact_lock(conn, key: str, what: str) -> None:
    """Take a PostgreSQL transaction-level advisory lock, saying in the log when it has to wait."""
    params = {"key": _lock_key(key)}
    if not conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), params).scalar_one():
        log.info("waiting for %s: another transaction holds its lock ...", what)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), params)


def open_engine(url: str) -> Engine:
    """An engine for a database URL, set up for concurrent use; creates no tables.

    SQLite files get a busy timeout and WAL journaling (persistent in the file): readers then never
    wait for a writer, nor fail while it commits."""
    engine = create_engine(url)
    if engine.url.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
                # after a checkpoint, cut the WAL back (a big load grows it to the size of its data)
                cur.execute("PRAGMA journal_size_limit = 67108864")
                try:
                    cur.execute("PRAGMA journal_mode = WAL")  # a no-op once the file is in WAL mode
                except sqlite3.OperationalError as e:
                    # switching needs a moment without other connections; the next connection tries again
                    log.warning("SQLite database %s stays in its journal mode for now: %s", engine.url.database, e)
            finally:
                cur.close()

    return engine


def create_tables(engine: Engine, tables: MetaData) -> None:
    """Create the missing tables of `tables`; safe when several processes do it at once."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        if all(inspector.has_table(t.name, schema=t.schema) for t in tables.sorted_tables):
            return  # the usual case: no lock, so readers never queue behind a long write
    with write_lock(engine, "create tables"), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # two concurrent CREATE TABLEs of one name: one would fail on PostgreSQL's catalog
            _pg_xact_lock(conn, "recsys:create tables", "the table-creation lock")
        tables.create_all(conn)


def make_engine(url: str) -> Engine:
    """An engine for the warehouse URL (see `open_engine`), with its tables created if missing."""
    engine = open_engine(url)
    create_tables(engine, metadata)
    return engine


def split_salt(engine: Engine, dataset: str, requested: str = "", default: str = "") -> tuple[str, str | None]:
    """The data set's split salt, and the salt it replaced (None when unchanged).

    `requested` (non-empty) sets it on purpose; otherwise the stored salt is used, and a data set without
    one stores `default`."""
    from datetime import datetime, timezone

    query = select(split_salts_table.c.salt).where(split_salts_table.c.dataset == dataset)
    with engine.connect() as conn:
        stored = conn.execute(query).scalar_one_or_none()
    if not (requested or stored or default):
        raise ValueError(f"data set {dataset!r} has no split salt and none was given")
    if stored is not None and stored == (requested or stored):
        return stored, None  # nothing to write: no write lock, so a running load does not hold us up
    with write_lock(engine, f"split salt of {dataset}"), engine.begin() as conn:
        stored = conn.execute(query).scalar_one_or_none()  # again: another writer may have set it meanwhile
        wanted = requested or stored or default
        if stored is None:
            conn.execute(split_salts_table.insert().values(dataset=dataset, salt=wanted, set_at=datetime.now(timezone.utc)))
        elif stored != wanted:
            log.warning("split salt of data set %s changed on request: every part is re-drawn", dataset)
            conn.execute(
                split_salts_table.update().where(split_salts_table.c.dataset == dataset).values(salt=wanted, set_at=datetime.now(timezone.utc))
            )
    return wanted, (stored if stored is not None and stored != wanted else None)


_CHUNK = 20_000  # rows converted and sent per executemany: bounded memory, few round trips
# PostgreSQL: rows per multi-row INSERT .. VALUES (..), (..) ON CONFLICT statement. SQLAlchemy sends an
# ON CONFLICT executemany one row per round trip (its batching skips upserts), so we batch ourselves;
# 1000 rows x <= 9 columns stays far below PostgreSQL's 65535 bind parameters per statement.
_PG_ROWS_PER_STATEMENT = 1_000


# -- interaction keys ------------------------------------------------------------------------------

# numpy's unit for pandas' 0, 3, 6 or 9 digits of fractional seconds
_FRACTION_UNIT = {0: "s", 3: "ms", 6: "us", 9: "ns"}


def _finest_timestamp(ts: pd.Series) -> tuple[int, pd.Timestamp | None]:
    """(level, a timestamp of that level): the value that decides how pandas writes the column as text.

    pandas writes a datetime column in ONE format for all rows: 9, 6 or 3 fraction digits when any value
    needs them (level 4, 3, 2), and a naive column without its times when all are midnights (level 1
    keeps them). Appending this value to any part of the column makes pandas write that part as it
    writes the whole column."""
    if not pd.api.types.is_datetime64_any_dtype(ts):
        return 0, None
    v = ts.dropna()
    if v.empty:
        return 0, None
    us = v.dt.microsecond.to_numpy()
    levels = [(4, v.dt.nanosecond.to_numpy() != 0), (3, us % 1000 != 0), (2, us != 0)]
    if getattr(ts.dtype, "tz", None) is None:  # tz-aware columns always show their times
        levels.append((1, (v != v.dt.normalize()).to_numpy()))
    for level, hits in levels:
        first = np.flatnonzero(hits)
        if len(first):
            return level, v.iloc[int(first[0])]
    return 0, None


def _fraction_digits(witness: pd.Timestamp | None) -> int:
    if witness is None:
        return 0
    ns = witness.value % 1_000_000_000
    return 9 if ns % 1000 else 6 if ns % 1_000_000 else 3 if ns else 0


def _utc_ns_text_fast(ts: pd.Series, digits: int) -> pd.Series:
    """pandas' text of a datetime64[ns, UTC] column with `digits` fraction digits, 6x faster (numpy's
    C formatter); NaT -> NA."""
    stamps = np.datetime_as_string(ts.array.asi8.view("M8[ns]"), unit=_FRACTION_UNIT[digits])
    stamps = np.strings.add(np.strings.replace(stamps, "T", " ", 1), "+00:00")
    return pd.Series(stamps, index=ts.index, dtype="string").mask(ts.isna())


@functools.cache
def _fast_timestamp_text_agrees() -> bool:
    """Whether `_utc_ns_text_fast` writes exactly what this pandas writes (checked once per process):
    keys must not change, so a pandas that formats otherwise gets its own formatter."""
    base = pd.Series(pd.to_datetime(["1677-09-22 00:12:43", "1969-12-31 23:59:59", "2024-02-29 12:30:00", "2262-04-11 23:47:16", None], utc=True))
    base = base.astype("datetime64[ns, UTC]")
    for digits, step in ((0, None), (3, "500ms"), (6, "7us"), (9, "1ns")):
        probe = base if step is None else pd.concat([base, base.iloc[[2]] + pd.Timedelta(step)], ignore_index=True)
        try:
            agrees = _utc_ns_text_fast(probe, digits).equals(probe.astype("string"))
        except Exception:  # noqa: BLE001 - e.g. a numpy without np.strings: use pandas' formatter
            agrees = False
        if not agrees:
            log.warning("this pandas/numpy writes timestamps differently: interaction keys use pandas' slower formatter")
            return False
    return True


def _timestamp_text(ts: pd.Series, witness: pd.Timestamp | None) -> pd.Series:
    """`ts.astype("string")` as pandas writes it when `ts` is part of a column whose finest value is `witness`."""
    if isinstance(ts.dtype, pd.DatetimeTZDtype) and ts.dtype.unit == "ns" and str(ts.dtype.tz) == "UTC" and _fast_timestamp_text_agrees():
        return _utc_ns_text_fast(ts, _fraction_digits(witness))
    if witness is None:
        return ts.astype("string")
    padded = pd.concat([ts, pd.Series([witness], dtype=ts.dtype)])
    return padded.astype("string").iloc[:-1]


def _row_text(interactions: pd.DataFrame, witness: pd.Timestamp | None) -> pd.Series:
    """Each row's fields as text joined by \\x1f (NA as \\x00): what the interaction key hashes."""
    parts = []
    for c in S.INTERACTION_COLUMNS:
        col = interactions[c]
        parts.append((_timestamp_text(col, witness) if c == S.TIMESTAMP else col.astype("string")).fillna("\x00"))
    return parts[0].str.cat(parts[1:], sep="\x1f")


class _OccurrenceCounter:
    """How many identical rows came before each row, across every slice and chunk of one load (in file
    order): a running count per 128-bit row-content digest, in sorted arrays that merge like a binary
    counter (about 24 bytes per distinct row, amortised O(log n) work per row)."""

    def __init__(self) -> None:
        self._levels: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted unique digests "S16", counts); sizes fall down the list

    def occurrences(self, digests: np.ndarray) -> np.ndarray:
        """Each row's occurrence number among the rows with its digest, earlier calls' rows included."""
        if not len(digests):
            return np.zeros(0, dtype=np.int64)
        uniq, inv, counts = np.unique(digests, return_inverse=True, return_counts=True)
        prior = np.zeros(len(uniq), dtype=np.int64)
        for keys, n in self._levels:
            pos = np.minimum(np.searchsorted(keys, uniq), len(keys) - 1)
            hit = keys[pos] == uniq
            prior[hit] += n[pos[hit]]
        # rank of each row among the rows of this batch with its digest, in row order
        order = np.argsort(inv, kind="stable")
        grouped = inv[order]
        within = np.empty(len(inv), dtype=np.int64)
        within[order] = np.arange(len(inv)) - np.searchsorted(grouped, grouped, side="left")
        self._push(uniq, counts.astype(np.int64))
        return prior[inv] + within

    def _push(self, keys: np.ndarray, counts: np.ndarray) -> None:
        while self._levels and len(self._levels[-1][0]) <= 2 * len(keys):
            older, older_counts = self._levels.pop()
            keys, inv = np.unique(np.concatenate([older, keys]), return_inverse=True)
            counts = np.bincount(inv, weights=np.concatenate([older_counts, counts])).astype(np.int64)
        self._levels.append((keys, counts))


def _content_digests(row_text: pd.Series) -> np.ndarray:
    """128-bit digests ("S16") of the row texts, for counting identical rows (two 64-bit siphashes)."""
    h1 = pd.util.hash_pandas_object(row_text, index=False, hash_key="recsys-occur-one").to_numpy()
    h2 = pd.util.hash_pandas_object(row_text, index=False, hash_key="recsys-occur-two").to_numpy()
    return np.ascontiguousarray(np.stack([h1, h2], axis=1)).view("S16").ravel()


class _InteractionKeyer:
    """Interaction keys for the chunks of one load, in file order: the same keys `interaction_keys`
    gives the chunks' concatenation (see `upsert_frames` for the one exception)."""

    def __init__(self) -> None:
        self._counter = _OccurrenceCounter()
        self._level, self._witness = 0, None
        self._rows = self._timed_rows = 0

    def digests(self, chunk: pd.DataFrame) -> np.ndarray:
        """The chunk's keys as raw sha1 digests: uint8 [len(chunk), 20]."""
        level, witness = _finest_timestamp(chunk[S.TIMESTAMP])
        if level > self._level:
            if self._timed_rows:  # earlier rows were written in a coarser format than the whole file's
                log.warning(
                    "interaction timestamps after row %d are finer than the earlier ones (e.g. %s): the earlier rows' keys "
                    "differ from those of a load of the whole file in one frame", self._rows, witness,
                )
            self._level, self._witness = level, witness
        out = np.empty((len(chunk), 20), dtype=np.uint8)
        sha1 = hashlib.sha1
        for lo in range(0, len(chunk), _CHUNK):
            text_ = _row_text(chunk.iloc[lo : lo + _CHUNK], self._witness)
            occurrence = self._counter.occurrences(_content_digests(text_))
            keyed = (text_ + "\x1f" + pd.Series(occurrence, index=text_.index).astype(str)).tolist()
            out[lo : lo + len(keyed)] = np.frombuffer(b"".join([sha1(s.encode("utf-8")).digest() for s in keyed]), dtype=np.uint8).reshape(-1, 20)
        self._rows += len(chunk)
        self._timed_rows += int(chunk[S.TIMESTAMP].notna().sum())
        return out


def _hex(digests: np.ndarray) -> list[str]:
    """Raw 20-byte digests (uint8 [n, 20]) as 40-character hex strings."""
    h = digests.tobytes().hex()
    return [h[i : i + 40] for i in range(0, len(h), 40)]


def interaction_keys(interactions: pd.DataFrame) -> pd.Series:
    """Deterministic row keys: sha1 of the row's fields and its occurrence among identical rows.

    The occurrence number keeps genuinely repeated events (two identical purchases) as two rows
    while a reload of the same file maps each row onto its earlier self.
    """
    digests = _InteractionKeyer().digests(interactions)
    return pd.Series(_hex(digests), index=interactions.index, dtype="string")


# -- loads ---------------------------------------------------------------------------------------


def _records(df: pd.DataFrame, **extra: object) -> list[dict]:
    """The frame's rows as dicts, plus `extra` columns (a list: one value per row; else one for all)."""
    # None for every kind of missing value: the DB-API drivers do not understand pd.NA / NaT
    columns = {c: df[c].astype(object).where(df[c].notna(), None).tolist() for c in df.columns}
    columns.update({k: v if isinstance(v, list) else [v] * len(df) for k, v in extra.items()})
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


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
    """Upsert rows that are already one per key and in key order (see `upsert_frames`)."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    dialect = conn.dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise ValueError(f"warehouse dialect {dialect!r} is not supported (use sqlite or postgresql)")
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


def _key_order(digests: np.ndarray) -> np.ndarray:
    """Row positions in key order (hex order = byte order), one per key: the last row given for it."""
    n = len(digests)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a = np.ascontiguousarray(digests[:, :8]).view(">u8").ravel()
    b = np.ascontiguousarray(digests[:, 8:16]).view(">u8").ravel()
    c = np.ascontiguousarray(digests[:, 16:]).view(">u4").ravel()
    order = np.lexsort((np.arange(n), c, b, a))  # ties (a sha1 collision) keep file order
    a, b, c = a[order], b[order], c[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (c[1:] != c[:-1])
    return order[last]


def upsert_frames(engine: Engine, name: str, items: pd.DataFrame, interaction_chunks: Iterable[pd.DataFrame]) -> dict[str, int]:
    """Upsert canonical items and canonical interaction chunks (in file order) in ONE transaction.

    A caller can stream a file larger than memory: each chunk is keyed, checked and written in
    slices of `_CHUNK` rows, and only 20 bytes of key and ~24 bytes of occurrence count per row stay
    behind. The keys are those `interaction_keys` gives the chunks' concatenation (occurrences count
    across chunks), except for the rows before a chunk whose timestamps have finer fractional seconds
    than all earlier rows (pandas would write the whole column with that precision; a warning says so).
    A key given twice keeps its last row. A value longer than its column (items first, then each chunk
    before it is written) or any other error rolls everything back: nothing is written.
    Returns the table sizes for that data set afterwards.
    """
    check_lengths(items_table, pd.DataFrame({"dataset": [name]}))
    check_lengths(items_table, items)
    # one row per item id, the last one given (what a row-by-row upsert leaves), in code-point order:
    # a multi-row upsert may not touch a row twice, and concurrent loads lock rows in the same order
    items = items.drop_duplicates(subset=[S.ITEM_ID], keep="last")
    items = items.sort_values(S.ITEM_ID, kind="stable", key=lambda s: s.astype("string"))
    item_columns = [c for c in items.columns if c in items_table.c]
    inter_columns = list(S.INTERACTION_COLUMNS)
    keyer = _InteractionKeyer()
    n_chunks = n_rows = 0
    with write_lock(engine, f"load of {name}"), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # loads of one data set take turns (the chunks' rows cannot be locked in one global key
            # order, which could deadlock); loads of different data sets never touch the same rows
            _pg_xact_lock(conn, f"recsys:warehouse load:{name}", f"the load lock of data set {name!r}")
        for lo in range(0, len(items), _CHUNK):
            _upsert(conn, items_table, _records(items.iloc[lo : lo + _CHUNK][item_columns], dataset=name))
        for chunk in interaction_chunks:
            check_lengths(interactions_table, chunk)
            digests = keyer.digests(chunk)
            order = _key_order(digests)
            for lo in range(0, len(order), _CHUNK):
                rows = order[lo : lo + _CHUNK]
                part = chunk.iloc[rows][inter_columns]
                _upsert(conn, interactions_table, _records(part, dataset=name, interaction_key=_hex(digests[rows])))
            n_chunks, n_rows = n_chunks + 1, n_rows + len(chunk)
    counts = table_counts(engine, name)
    log.info("warehouse now holds %s for data set %s (loaded %d interaction rows in %d chunk(s))", counts, name, n_rows, n_chunks)
    return counts


def upsert_dataset(engine: Engine, dataset: S.Dataset) -> dict[str, int]:
    """Upsert a canonical data set (items and interactions in ONE transaction: a failed load leaves
    the previous rows as they were); returns the table sizes for that data set afterwards."""
    # checked up front too, so that bad data fails at once rather than after queueing for the write lock
    check_lengths(interactions_table, dataset.interactions)
    return upsert_frames(engine, dataset.name, dataset.items, [dataset.interactions])


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
