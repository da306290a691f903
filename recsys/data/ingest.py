"""Incremental ingestion: new batches of catalog and interaction data dropped into an inbox.

Layout, under the project home::

    inbox/<dataset>/<batch_id>/interactions.(csv|csv.gz|parquet)   required
    inbox/<dataset>/<batch_id>/items.(csv|csv.gz|parquet)          optional
    inbox/<dataset>/<batch_id>/_READY                              written LAST by the producer
    inbox/<dataset>/.done/<batch_id>/                              accepted batches
    inbox/<dataset>/.rejected/<batch_id>/                          rejected batches (+ error.json)

Files are in the canonical schema (`recsys.data.schema`). A folder without ``_READY`` is still being
copied and is never read. Ready batches are processed in batch id (name) order; each one is:

0. checked: its data files must be regular files inside the inbox (`recsys.data.input_files`: a link, a
   directory named ``items.csv`` or a device is an error of the batch, never followed or read);
1. kept: an untouched copy of every data file goes to ``paths.raw`` (`keep_raw`, mode 0600), whatever follows;
2. read as is from the raw copy (`iter_table_file`: interactions in parts of `CHUNK_ROWS` rows, so a
   batch larger than memory goes through), user ids pseudonymized at once (as `read_user_files` does);
3. validated by the same GX gate as the training DAG (`validate_dataset`), the report going to the
   batch's own ``validation/`` folder. Interactions may reference items of the batch or items the
   warehouse already holds for the data set: the items table handed to the gate is the batch's
   items followed by the warehouse items the batch does not redefine (restricted to the columns
   the batch file has, so its schema rules still judge the batch file). Row numbers in messages
   are the batch file's data rows. Note: the title-share rule (``min_text_share``) is therefore
   judged over that whole catalog, not over the batch's items alone;
4. upserted into the warehouse, the parts read again from the raw copy (`upsert_frames`: one
   transaction; a re-ingested batch adds no rows);
5. moved to ``.done/<batch_id>/`` (replacing an earlier copy of the same batch id).

A batch that fails anywhere (its files, parsing, a rule, the conversion, the warehouse refusing a
row, a bug) is rejected WHOLE and nothing of it is written (the write is one transaction): it is
moved to ``.rejected/<batch_id>/`` with an ``error.json`` (stage, table, rule, rows, the message; no
traceback) and ingestion goes on with the next batch. Only an unreachable or locked database (not
the batch's fault) leaves the batch in the inbox, to be retried (idempotently) by the next run;
`recsys.stages.ops.ingest_all` then reports it and goes on with the next data set.

Pseudonymization: batches normally carry the shop's raw user ids, hashed here at read. A producer
that already pseudonymized them with the installation's key (e.g. `recsys.data.replay` with
``raw_user_ids=False``) must be ingested with ``pseudonymize=False``; ids are then required to look
pseudonymized (``u_`` + 20 hex digits), so raw ids can never slip into the warehouse that way.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
from sqlalchemy import Engine, select

from recsys.data import schema as S
from recsys.data.datasets.files import iter_table_file, keep_raw, read_table_file, user_files_dataset
from recsys.errors import DataValidationError
from recsys.data.input_files import check_input_file
from recsys.paths import ProjectPaths
from recsys.data.privacy import Pseudonymizer
from recsys.data.validation import VALIDATION_JSON, ValidationConfig, validate_dataset
from recsys.data.warehouse import items_table, make_engine, table_counts, upsert_frames

logger = logging.getLogger(__name__)

INBOX = "inbox"
READY = "_READY"
DONE = ".done"
REJECTED = ".rejected"
ERROR_JSON = "error.json"
VALIDATION_DIR = "validation"
ITEMS = "items"
INTERACTIONS = "interactions"
SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".parquet")
PSEUDONYM_PATTERN = r"u_[0-9a-f]{20}"  # what `recsys.data.privacy.Pseudonymizer.one` produces
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_LOCK = ".lock"
# interactions are read, validated and written this many rows at a time: memory stays bounded by a part,
# not by the batch (a 2M-row batch in 8 parts)
CHUNK_ROWS = 250_000


# --- results -----------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What happened to one batch."""

    batch_id: str
    accepted: bool
    items: int  # rows in the batch's items file (0 without one)
    interactions: int  # rows in the batch's interactions file (0 if it could not be read)
    time_range: tuple[str | None, str | None]  # ISO min/max interaction timestamp (accepted batches)
    error: str | None  # the full message of a rejected batch
    report_dir: str  # the validation report, in the batch's final folder
    path: str = ""  # the batch's final folder (.done/<id> or .rejected/<id>)
    raw_copies: list[str] = field(default_factory=list)
    stage: str | None = None  # where a rejected batch failed: files, read, validate, convert, write
    summary: str | None = None  # a rejected batch's error in one line (stage, table, rule, rows)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["time_range"] = list(self.time_range)
        return out


@dataclass
class IngestResult:
    """One `ingest_inbox` call: the batches it accepted and rejected, and the warehouse after."""

    dataset: str
    accepted: list[BatchResult] = field(default_factory=list)
    rejected: list[BatchResult] = field(default_factory=list)
    rows_upserted: dict[str, int] = field(default_factory=lambda: {ITEMS: 0, INTERACTIONS: 0})  # rows written (new or not)
    counts_before: dict[str, int] = field(default_factory=dict)  # warehouse rows for the data set before
    counts: dict[str, int] = field(default_factory=dict)  # ... and after: the difference is what was new

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "accepted": [b.to_dict() for b in self.accepted],
            "rejected": [b.to_dict() for b in self.rejected],
            "rows_upserted": dict(self.rows_upserted),
            "counts_before": dict(self.counts_before),
            "counts": dict(self.counts),
        }


# --- the inbox -----------------------------------------------------------------------------


def check_name(name: str, what: str) -> str:
    """A data-set name must be a plain folder name (no separators, not hidden) that fits the warehouse key."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"{what} {name!r} must match {_NAME.pattern} (letters, digits, _ . -; not hidden, no spaces or separators)")
    if len(name) > S.DATASET_NAME_MAX:
        raise ValueError(f"{what} {name[:40]!r}... is {len(name)} characters long (at most {S.DATASET_NAME_MAX})")
    return name


def inbox_dir(paths: ProjectPaths, dataset: str) -> Path:
    """``<home>/inbox/<dataset>``: where producers drop the data set's batches."""
    return paths.home / INBOX / check_name(dataset, "data set name")


def ready_batches(paths: ProjectPaths, dataset: str) -> list[Path]:
    """Batch folders that carry ``_READY``, in batch id order (hidden folders such as .done skipped)."""
    root = inbox_dir(paths, dataset)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / READY).is_file()]
    return sorted(found, key=lambda p: p.name)


@contextmanager
def _inbox_lock(root: Path) -> Iterator[None]:
    """One ingestion per data-set inbox at a time (overlapping DAG runs wait for each other)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(root / _LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _move(batch_dir: Path, dest: Path) -> Path:
    """Move a batch folder to ``dest``, replacing an earlier folder of the same batch id."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.replaced-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(batch_dir, dest)  # same file system: a rename, never a half-moved folder
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


# --- reading one batch ---------------------------------------------------------------------


def _data_files(batch_dir: Path, table: str) -> list[Path]:
    """Every entry named like a data file, whatever it is: a directory or a link called items.csv is an
    error of the batch (`check_input_file` names it), not a batch without items."""
    return [batch_dir / f"{table}{suffix}" for suffix in SUFFIXES if os.path.lexists(batch_dir / f"{table}{suffix}")]


def _one_file(batch_dir: Path, table: str, files: list[Path], required: bool) -> Path | None:
    names = ", ".join(f"{table}{s}" for s in SUFFIXES)
    if len(files) > 1:
        raise DataValidationError(
            table, str(batch_dir),
            [f"several {table} files ({', '.join(p.name for p in files)}) (rule: a batch holds at most one of {names})"],
        )  # fmt: skip
    if not files:
        if required:
            raise DataValidationError(table, str(batch_dir), [f"no {table} file (rule: a batch must contain one of {names})"])
        return None
    return files[0]


def _check_pseudonymized(inter: pd.DataFrame, source: str, max_examples: int) -> None:
    """With pseudonymize=False, every user id must already look pseudonymized (rows named, values never)."""
    if S.USER_ID not in inter.columns:
        return  # the gate reports the missing column
    ids = inter[S.USER_ID]
    bad = ids.notna() & ~ids.astype("string").str.fullmatch(PSEUDONYM_PATTERN).fillna(False).astype(bool)
    if bad.any():
        rows = [f"row {i + 1}" for i in bad[bad].index[:max_examples]]
        more = ", ..." if bad.sum() > len(rows) else ""
        rule = "user_id is already pseudonymized (u_ + 20 hex digits) when ingesting with pseudonymize=False"
        raise DataValidationError(
            INTERACTIONS, source,
            [f'user_ids_pseudonymized({S.USER_ID}): {int(bad.sum())} of {len(ids)} rows break "{rule}" — {", ".join(rows)}{more}'],
        )  # fmt: skip


def _warehouse_items(engine: Engine, dataset: str) -> pd.DataFrame:
    """The items the warehouse holds for the data set (items only: interactions are not read)."""
    with engine.connect() as conn:
        df = pd.read_sql(
            select(*[items_table.c[c] for c in S.ITEM_COLUMNS]).where(items_table.c.dataset == dataset),
            conn,
        )
    # sorted here, by code point: SQL ORDER BY follows the database's collation (en_US on PostgreSQL differs from SQLite)
    return S.to_canonical_items(df.sort_values(S.ITEM_ID, kind="stable").reset_index(drop=True))


def _catalog_for_gate(batch_items: pd.DataFrame | None, known: pd.DataFrame) -> pd.DataFrame:
    """Batch items first (their row numbers stay the file's), then warehouse items not redefined by the batch."""
    if batch_items is None:
        return known.reset_index(drop=True)
    if S.ITEM_ID not in batch_items.columns:
        return batch_items  # the gate names the missing column
    cols = [c for c in batch_items.columns if c in known.columns]  # a column missing from the file stays missing
    redefined = set(batch_items[S.ITEM_ID].dropna().astype(str))
    extra = known.loc[~known[S.ITEM_ID].isin(redefined), cols]
    if extra.empty:
        return batch_items
    # as text, like the CSV the batch probably came from (the gate parses numbers itself)
    extra = extra.astype(object).where(extra.notna(), None)
    return pd.concat([batch_items, extra], ignore_index=True)


def _write_read_error(report_dir: Path, err: DataValidationError) -> None:
    """A batch that failed before GX had a table: still leave a validation.json behind."""
    report_dir.mkdir(parents=True, exist_ok=True)
    doc = {"success": False, "table": err.table, "source": err.source, "failures": err.failures}
    (report_dir / VALIDATION_JSON).write_text(json.dumps(doc, indent=2, default=str))


_HEAD = re.compile(r"^(?:\[(?P<table>\w+)\] )?(?P<exp>[A-Za-z_]+)(?:\((?P<col>[^)]*)\))?: ")
_QUOTED_RULE = re.compile(r'"([^"]+)"')
_PAREN_RULE = re.compile(r"\(rule: ([^)]*)\)")
_COUNT = re.compile(r"(\d+) of (\d+) rows")
_ROW = re.compile(r"\brow (\d+)\b")


def _parse_failure(line: str, table: str) -> dict[str, Any]:
    """Split one failure line of the gate into expectation, column, rule, rows."""
    head = _HEAD.match(line)
    rule = _QUOTED_RULE.search(line) or _PAREN_RULE.search(line)
    count = _COUNT.search(line)
    return {
        "table": (head.group("table") if head and head.group("table") else table),
        "expectation": head.group("exp") if head else None,
        "column": head.group("col") if head else None,
        "rule": rule.group(1) if rule else line,
        "rows": [int(r) for r in _ROW.findall(line)],  # 1-based data rows of the file (first examples only)
        "rows_failing": int(count.group(1)) if count else None,
        "line": line,
    }


def error_document(batch_id: str, dataset: str, err: DataValidationError) -> dict[str, Any]:
    """The JSON written as ``error.json`` of a rejected batch."""
    failures = [_parse_failure(line, err.table) for line in err.failures]
    first = next((f for f in failures if f["table"] == err.table), failures[0] if failures else None)
    rows = sorted({r for f in failures if f["table"] == err.table for r in f["rows"]})
    return {
        "batch_id": batch_id,
        "dataset": dataset,
        "table": err.table,
        "source": err.source,
        "rule": first["rule"] if first else None,
        "expectation": first["expectation"] if first else None,
        "rows": rows,
        "message": str(err),
        "failures": failures,
        "report_dir": err.report_dir,
    }


# --- ingestion -----------------------------------------------------------------------------


@dataclass
class _ValidatedBatch:
    """A batch that passed the gate: its canonical items, and its interactions as canonical parts
    re-read on demand from the raw copy (what was validated is what is loaded, one part at a time)."""

    items: pd.DataFrame
    interaction_parts: Callable[[], Iterator[pd.DataFrame]]
    stats: dict[str, Any]  # filled while the parts are read: rows, min_ts, max_ts


def _pseudonymized_parts(
    path: Path, source: str, pseudonymizer: Pseudonymizer | None, config: ValidationConfig, stage: list[str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The interactions file in parts, user ids pseudonymized (or checked) at once; ``stage`` says
    "read" while a part is read and "validate" while the caller judges it. Messages name ``source``."""
    parts = iter_table_file(path, table=INTERACTIONS, chunk_rows=chunk_rows)
    while True:
        stage[0] = "read"
        try:
            part = next(parts)
        except StopIteration:
            stage[0] = "validate"  # what follows the last part is the caller's judgement
            return
        except DataValidationError as err:
            raise DataValidationError(err.table, source, err.failures) from None
        if S.USER_ID in part.columns:  # no raw user id goes further than this
            if pseudonymizer is not None:
                part[S.USER_ID] = pseudonymizer.series(part[S.USER_ID])
            else:
                _check_pseudonymized(part, source, config.max_examples)
        stage[0] = "validate"
        yield part


def _prepare_batch(
    batch_dir: Path,
    dataset: str,
    engine: Engine,
    paths: ProjectPaths,
    pseudonymizer: Pseudonymizer | None,
    config: ValidationConfig,
    raw_copies: list[str],
    sizes: dict[str, int],
    stage: list[str],
    chunk_rows: int,
) -> _ValidatedBatch:
    """Check, keep, read and validate one batch; ``stage[0]`` follows along (for error.json).

    The interactions file is read in parts of ``chunk_rows`` rows, so a batch larger than memory is
    validated part by part. Raises DataValidationError (or whatever broke); writes nothing to the
    warehouse."""
    report_dir = batch_dir / VALIDATION_DIR
    shutil.rmtree(report_dir, ignore_errors=True)  # a re-sent batch gets a fresh report
    item_files, inter_files = _data_files(batch_dir, ITEMS), _data_files(batch_dir, INTERACTIONS)
    try:
        stage[0] = "files"
        for table, files in ((ITEMS, item_files), (INTERACTIONS, inter_files)):
            for path in files:  # regular files inside the inbox only: never follow a link out of it
                check_input_file(path, table, [batch_dir])
        kept = {}
        for path in item_files + inter_files:  # raw copies first, whatever happens next
            kept[path] = keep_raw(path, paths.raw)
            raw_copies.append(str(kept[path]))
        stage[0] = "read"
        items_path = _one_file(batch_dir, ITEMS, item_files, required=False)
        inter_path = _one_file(batch_dir, INTERACTIONS, inter_files, required=True)
        assert inter_path is not None
        batch_items = None
        if items_path:
            try:  # read from the raw copy (it cannot change from here on), named as the batch's file
                batch_items = read_table_file(kept[items_path], table=ITEMS)
            except DataValidationError as err:
                raise DataValidationError(err.table, str(items_path), err.failures) from None
            if S.USER_ID in batch_items.columns and pseudonymizer is not None:
                batch_items[S.USER_ID] = pseudonymizer.series(batch_items[S.USER_ID])
        sizes[ITEMS] = len(batch_items) if batch_items is not None else 0
        parts = _pseudonymized_parts(kept[inter_path], str(inter_path), pseudonymizer, config, stage, chunk_rows)
        first = next(parts, None)  # problems of the file as a whole are found here, before the gate
        assert first is not None  # iter_table_file raises on a file without rows

        def counted() -> Iterator[pd.DataFrame]:
            for part in itertools.chain([first], parts):
                sizes[INTERACTIONS] += len(part)
                yield part

        known = _warehouse_items(engine, dataset)
        catalog = _catalog_for_gate(batch_items, known)
        items_source = str(items_path) if items_path else f"warehouse items of {dataset!r} (the batch has no items file)"
        if items_path and len(catalog) > len(batch_items):
            items_source += f" (rows 1-{len(batch_items)}) + {len(catalog) - len(batch_items)} warehouse items of {dataset!r}"
        del known
        validate_dataset(
            catalog,
            counted(),
            out_dir=report_dir,
            config=config,
            has_text=True,
            item_source=items_source,
            interaction_source=str(inter_path),
        )
    except DataValidationError as err:
        if not (report_dir / VALIDATION_JSON).exists():  # failed before the gate had a table: still leave a report
            _write_read_error(report_dir, err)
        err.report_dir = str(report_dir)
        raise
    stage[0] = "convert"
    items = _convert(INTERACTIONS, str(items_path or batch_dir), report_dir, lambda: user_files_dataset(
        batch_items if batch_items is not None else S.empty_items(), S.empty_interactions(), items_path or batch_dir, inter_path
    ).items)  # fmt: skip
    stats: dict[str, Any] = {"rows": 0, "min_ts": None, "max_ts": None}

    def canonical_parts() -> Iterator[pd.DataFrame]:
        for part in _pseudonymized_parts(kept[inter_path], str(inter_path), pseudonymizer, config, stage, chunk_rows):
            stage[0] = "convert"
            inter = _convert(INTERACTIONS, str(inter_path), report_dir, lambda: user_files_dataset(
                S.empty_items(), part, items_path or batch_dir, inter_path
            ).interactions)  # fmt: skip
            ts = inter[S.TIMESTAMP].dropna()
            if len(ts):
                stats["min_ts"] = min(ts.min(), stats["min_ts"]) if stats["min_ts"] is not None else ts.min()
                stats["max_ts"] = max(ts.max(), stats["max_ts"]) if stats["max_ts"] is not None else ts.max()
            stats["rows"] += len(inter)
            stage[0] = "write"
            yield inter
        stage[0] = "write"

    return _ValidatedBatch(items, canonical_parts, stats)


def _convert(table: str, source: str, report_dir: Path, convert: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The gate passed but the canonical cast did not: still the batch's fault, said as a rule."""
    try:
        return convert()
    except (ValueError, TypeError) as exc:
        raise DataValidationError(
            table, source, [f"cannot convert to the canonical schema: {exc} (rule: values fit the canonical schema)"], str(report_dir)
        ) from None


def warehouse_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or stayed locked: not the batch's fault, so it is not
    quarantined; it stays in the inbox and the next run retries it (idempotently)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))


def _quarantine(
    batch_dir: Path, dataset: str, stage: str, err: BaseException, sizes: dict[str, int], raw_copies: list[str]
) -> BatchResult:
    """Move a failed batch to ``.rejected/<batch_id>/`` with ``error.json``; return its result."""
    batch_id = batch_dir.name
    dest = _move(batch_dir, batch_dir.parent / REJECTED / batch_id)
    report_dir = dest / VALIDATION_DIR
    if isinstance(err, DataValidationError):
        # the folder moved: point the message, sources and report at where things are now
        moved = DataValidationError(
            err.table, err.source.replace(str(batch_dir), str(dest)), [f.replace(str(batch_dir), str(dest)) for f in err.failures], str(report_dir)
        )
        doc = error_document(batch_id, dataset, moved)
        detail = str(moved)
    else:  # the warehouse refused the rows, or a bug: the exception's message, never its traceback
        message = f"{type(err).__name__}: {' '.join(str(err).split())}"[:2000].replace(str(batch_dir), str(dest))
        doc = {
            "batch_id": batch_id, "dataset": dataset, "table": None, "source": str(dest),
            "rule": "the batch is processed without error", "expectation": None, "rows": [],
            "message": message, "failures": [], "report_dir": str(report_dir) if report_dir.exists() else None,
        }  # fmt: skip
        detail = message
    doc["stage"] = stage
    (dest / ERROR_JSON).write_text(json.dumps(doc, indent=2, default=str))
    os.chmod(dest / ERROR_JSON, 0o600)
    message = f"batch {dataset}/{batch_id} rejected at {stage} (nothing of it was loaded): {detail}"
    logger.error("%s\n  error: %s", message, dest / ERROR_JSON)
    return BatchResult(
        batch_id, False, sizes[ITEMS], sizes[INTERACTIONS], (None, None), message, str(report_dir), str(dest), raw_copies,
        stage=stage, summary=one_line(doc),
    )  # fmt: skip


def one_line(doc: dict[str, Any]) -> str:
    """An error.json as one line: stage, table, rule, rows and where the whole story is."""
    parts = [f"{doc.get('stage', '?')}"]
    if doc.get("table"):
        parts.append(f"{doc['table']}")
    first = (doc.get("failures") or [{}])[0]
    rule = doc.get("rule") or ""
    if first.get("rows_failing") is not None:
        rule += f" ({first['rows_failing']} rows"
        rule += f", first: {', '.join(map(str, doc['rows'][:5]))})" if doc.get("rows") else ")"
    elif not doc.get("failures"):
        rule += f" — {doc.get('message')}"
    more = len(doc.get("failures") or []) - 1
    return f"{': '.join(parts)}: {rule}" + (f" (+{more} more rule(s))" if more > 0 else "")


def ingest_batch(
    batch_dir: Path,
    paths: ProjectPaths,
    dataset: str,
    engine: Engine,
    pseudonymizer: Pseudonymizer | None,
    config: ValidationConfig,
    totals: dict[str, int] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> BatchResult:
    """Ingest one ready batch folder (see the module doc); returns what happened to it.

    Any failure of the batch (its files, parsing, validation, the conversion, the warehouse refusing
    its rows, a bug) quarantines it to ``.rejected/<batch_id>/`` with an ``error.json``; nothing of
    it is written to the warehouse (one transaction).

    Raises:
        sqlalchemy.exc.OperationalError | InterfaceError: the warehouse is unreachable or stayed
            locked (`warehouse_unavailable`); the batch stays in the inbox for a retry.
    """
    batch_id = batch_dir.name
    root = batch_dir.parent
    raw_copies: list[str] = []
    sizes = {ITEMS: 0, INTERACTIONS: 0}
    stage = ["files"]
    started = time.perf_counter()
    logger.info("batch %s/%s: reading %s", dataset, batch_id, batch_dir)
    try:
        batch = _prepare_batch(batch_dir, dataset, engine, paths, pseudonymizer, config, raw_copies, sizes, stage, chunk_rows)
        stage[0] = "write"
        upsert_frames(engine, dataset, batch.items, batch.interaction_parts())
    except Exception as err:  # noqa: BLE001 - whatever broke, one bad batch must not block the ones behind it
        if warehouse_unavailable(err):
            logger.error("batch %s/%s: the warehouse is unavailable (%s); the batch stays in %s for a retry", dataset, batch_id, type(err).__name__, batch_dir)
            raise
        if not isinstance(err, DataValidationError):
            logger.error("batch %s/%s: %s failed unexpectedly", dataset, batch_id, stage[0], exc_info=True)
        return _quarantine(batch_dir, dataset, stage[0], err, sizes, raw_copies)
    n_items, n_inter = len(batch.items), batch.stats["rows"]
    if totals is not None:
        totals[ITEMS] += n_items
        totals[INTERACTIONS] += n_inter
    dest = _move(batch_dir, root / DONE / batch_id)
    stale = root / REJECTED / batch_id
    if stale.exists():  # an earlier, rejected version of this batch id: it has been fixed
        shutil.rmtree(stale, ignore_errors=True)
        logger.info("batch %s/%s: removed the earlier rejected copy %s", dataset, batch_id, stale)
    time_range = tuple(t.isoformat() if t is not None else None for t in (batch.stats["min_ts"], batch.stats["max_ts"]))
    logger.info(
        "batch %s/%s accepted in %.1fs: %d items, %d interactions, %s .. %s",
        dataset, batch_id, time.perf_counter() - started, n_items, n_inter, *time_range,
    )  # fmt: skip
    return BatchResult(batch_id, True, n_items, n_inter, time_range, None, str(dest / VALIDATION_DIR), str(dest), raw_copies)


def ingest_inbox(
    paths: ProjectPaths,
    dataset: str,
    engine_or_url: Engine | str,
    pseudonymizer: Pseudonymizer | None,
    validation_config: ValidationConfig | None = None,
    max_batches: int | None = None,
    *,
    pseudonymize: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> IngestResult:
    """Ingest the ready batches of ``inbox/<dataset>`` in batch id order.

    Args:
        paths: the project home.
        dataset: the data-set name: the inbox sub-folder and the warehouse's ``dataset`` key.
        engine_or_url: the warehouse (an Engine, or a URL such as ``paths.warehouse_url``).
        pseudonymizer: hashes the batches' raw user ids (`Pseudonymizer(load_key(paths.secrets))`).
        validation_config: the gate's thresholds; default ``ValidationConfig()`` (no upper bound on
            timestamps: pass ``max_timestamp`` to have one).
        max_batches: process at most this many ready batches (the rest wait for the next call).
        pseudonymize: False only for batches whose user ids were already pseudonymized with this
            installation's key; their ids must then look pseudonymized or the batch is rejected.
        chunk_rows: interactions are read, validated and written this many rows at a time.

    Returns:
        The accepted and rejected batches, rows upserted, and warehouse counts before and after.

    Raises:
        ValueError: bad arguments. A warehouse failure is raised too (the batch stays in the inbox).
    """
    if pseudonymize and pseudonymizer is None:
        raise ValueError("pseudonymize=True needs a pseudonymizer (recsys.data.privacy.Pseudonymizer(load_key(paths.secrets)))")
    if max_batches is not None and max_batches < 0:
        raise ValueError(f"max_batches must be >= 0, got {max_batches}")
    own_engine = isinstance(engine_or_url, str)
    engine = make_engine(engine_or_url) if own_engine else engine_or_url
    config = validation_config or ValidationConfig()
    root = inbox_dir(paths, dataset)
    result = IngestResult(dataset=dataset)
    try:
        with _inbox_lock(root):
            result.counts_before = table_counts(engine, dataset)
            batches = ready_batches(paths, dataset)
            if max_batches is not None:
                batches = batches[:max_batches]
            logger.info("inbox %s: %d ready batch(es) to ingest", root, len(batches))
            for batch_dir in batches:
                br = ingest_batch(
                    batch_dir, paths, dataset, engine, pseudonymizer if pseudonymize else None, config, result.rows_upserted, chunk_rows
                )  # fmt: skip
                (result.accepted if br.accepted else result.rejected).append(br)
            result.counts = table_counts(engine, dataset)
    finally:
        if own_engine:
            engine.dispose()
    logger.info(
        "inbox %s: %d accepted, %d rejected; warehouse %s -> %s",
        root, len(result.accepted), len(result.rejected), result.counts_before, result.counts,
    )  # fmt: skip
    return result


__all__ = [
    "BatchResult",
    "IngestResult",
    "ingest_inbox",
    "ingest_batch",
    "ready_batches",
    "inbox_dir",
    "error_document",
    "READY",
    "DONE",
    "REJECTED",
    "ERROR_JSON",
]
