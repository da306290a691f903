"""A shop's own data: an items file and an interactions file (CSV, CSV.gz or Parquet).

Files are read as they are (ids as strings, no type coercion) so that the validation gate
sees what the shop actually sent and can point at the offending rows. Only user ids are
touched before validation: they are pseudonymized at once, so no raw id reaches a report.
Coercion to the canonical schema happens after validation passes (`user_files_dataset`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd

from recsys.data.datasets.wheels import file_sha256
from recsys.errors import DataValidationError
from recsys.data.input_files import check_regular_file
from recsys.data.privacy import Pseudonymizer
from recsys.data.schema import (
    INTERACTION_DTYPES,
    ITEM_DTYPES,
    TIMESTAMP,
    USER_ID,
    Dataset,
)

logger = logging.getLogger(__name__)

NAME = "user-files"
CSV_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz")
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")
EMPTY_RULE = "file is empty (rule: input file must contain a header and at least one row)"
# Share of interactions that must carry a timestamp for the time split to be meaningful.
HAS_TIME_MIN_FRACTION = 0.5


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def read_table_file(path: Path, table: str = "input") -> pd.DataFrame:
    """Read a CSV (.csv, .csv.gz) or Parquet (.parquet, .pq) file as is, whole.

    CSV cells are read as strings (ids keep leading zeros; empty cells become NA); Parquet keeps
    its own types. The index is a RangeIndex over data rows, so data row N is index N - 1.

    Args:
        path: the file.
        table: "items" or "interactions", for error messages.

    Raises:
        DataValidationError: missing, empty, unsupported or unreadable file.
    """
    (df,) = iter_table_file(path, table, chunk_rows=None)
    return df


def iter_table_file(path: Path, table: str = "input", chunk_rows: int | None = 250_000) -> Iterator[pd.DataFrame]:
    """`read_table_file` in consecutive parts of at most ``chunk_rows`` rows (None: one part), so a
    file larger than memory can be validated and loaded part by part. Each part's index is its
    rows' 0-based position in the file (data row N is index N - 1, across parts).

    Raises:
        DataValidationError: missing, empty, unsupported or unreadable file; raised by the first
            ``next()`` for problems of the file as a whole, later for a part that does not parse.
    """
    path = Path(path)
    src = str(path)
    kind = _kind(path)
    if kind is None:
        supported = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
        raise DataValidationError(
            table, src, [f"unsupported file type {path.name!r} (rule: input file must be one of {supported})"]
        )
    check_regular_file(path, table)  # not a directory, a device, or a link to who knows what
    if path.stat().st_size == 0:
        raise DataValidationError(table, src, [EMPTY_RULE])
    parts = _csv_parts(path, table, chunk_rows) if kind == "csv" else _parquet_parts(path, table, chunk_rows)
    offset = 0
    for df in parts:
        if offset == 0 and len(df) == 0:  # a header without rows is as useless as no file
            raise DataValidationError(table, src, [EMPTY_RULE])
        df.index = pd.RangeIndex(offset, offset + len(df))
        offset += len(df)
        yield df
    if offset == 0:
        raise DataValidationError(table, src, [EMPTY_RULE])


def _csv_parts(path: Path, table: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    src = str(path)
    try:
        # pandas renames a repeated header ("price", "price.1"): look at the header as written
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
        repeated = sorted({str(c) for c in header if header.count(c) > 1})
        if repeated:
            raise DataValidationError(table, src, [f"header: columns {repeated} appear more than once (rule: column names are unique)"])
        reader = pd.read_csv(path, dtype=str, keep_default_na=True, chunksize=chunk_rows)
        for df in [reader] if chunk_rows is None else reader:
            # more fields in the first row than in the header: pandas silently makes the extra leading ones an index
            if not isinstance(df.index, pd.RangeIndex):
                raise DataValidationError(
                    table, src, [f"row 1 has more fields than the header's {len(header)} (rule: input file must be well-formed CSV)"]
                )
            yield df
    except pd.errors.EmptyDataError:  # no header at all (e.g. only blank lines, or an empty .gz)
        raise DataValidationError(table, src, [EMPTY_RULE]) from None
    except pd.errors.ParserError as exc:  # the message names the line, e.g. "Expected 3 fields in line 5, saw 4"
        raise DataValidationError(table, src, [f"cannot parse CSV: {exc} (rule: input file must be well-formed CSV)"]) from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(table, src, [f"not UTF-8 text: {exc} (rule: CSV input must be UTF-8 encoded)"]) from None
    except (OSError, EOFError) as exc:  # e.g. a .csv.gz that is not gzip, or is truncated
        raise DataValidationError(table, src, [f"cannot read file: {exc} (rule: input file must be readable)"]) from None


def _parquet_parts(path: Path, table: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    if chunk_rows is None:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a corrupt file
            raise DataValidationError(table, str(path), [f"cannot read Parquet: {exc} (rule: input file must be valid Parquet)"]) from None
        # a stored pandas index comes back as the index: keep named ones as columns, then renumber
        named = any(n is not None for n in df.index.names)
        yield df.reset_index(drop=not named)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
        for batch in batches:
            # without the pandas metadata a stored index is a plain column: keep named ones, drop __index_level_N__
            df = pa.Table.from_batches([batch]).replace_schema_metadata(None).to_pandas()
            yield df.drop(columns=[c for c in df.columns if str(c).startswith("__index_level_")])
    except DataValidationError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a corrupt file
        raise DataValidationError(table, str(path), [f"cannot read Parquet: {exc} (rule: input file must be valid Parquet)"]) from None


def keep_raw(path: Path, raw_dir: Path) -> Path:
    """Keep an untouched copy of an input file under `raw_dir/<first 16 hex of sha256>/<name>`.

    The file is opened without following a symbolic link and read once: hashed while it is copied
    to a temporary file, which is then renamed into place. Copies are private (mode 0600, folders
    0700): they hold the shop's raw data. Idempotent: the same content is kept once; a different
    file is never overwritten.

    Returns:
        The path of the copy.

    Raises:
        DataValidationError: the path is a link or not a regular file (never followed, never copied).
        FileExistsError: a different file already sits at the target path.
    """
    path = Path(path)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd_in = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:  # ELOOP: a link; ENOENT: gone
        raise DataValidationError("input", str(path), [f"cannot open: {exc.strerror} (rule: input file must be a regular file, not a link)"]) from None
    fd_tmp, tmp = tempfile.mkstemp(prefix=".copy-", dir=raw_dir)  # mode 0600
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd_in, "rb") as src, os.fdopen(fd_tmp, "wb") as dst:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):  # a device or a pipe: never read it
                raise DataValidationError("input", str(path), ["is not a regular file (rule: input file must be a regular file)"])
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                dst.write(chunk)
        hexdigest = digest.hexdigest()
        target = raw_dir / hexdigest[:16] / path.name
        if target.exists():
            if target.is_file() and file_sha256(target) == hexdigest:
                return target
            raise FileExistsError(f"{target} exists with different content; refusing to overwrite it with {path}")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(tmp, target)  # a rename: a crash never leaves a half-copied "raw" file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("kept raw copy of %s at %s", path, target)
    return target


def read_user_files(
    items_path: Path, interactions_path: Path, pseudonymizer: Pseudonymizer
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a shop's items and interactions files as is, with user ids pseudonymized.

    Returns:
        (items, interactions) frames with the files' own columns, for the validation gate.

    Raises:
        DataValidationError: a file is missing, empty, unsupported or unreadable.
    """
    items = read_table_file(Path(items_path), table="items")
    inter = read_table_file(Path(interactions_path), table="interactions")
    for df in (items, inter):  # whichever file has user ids, none leave this function raw
        if USER_ID in df.columns:
            df[USER_ID] = pseudonymizer.series(df[USER_ID])
    return items, inter


def _parse_timestamps(col: pd.Series) -> pd.Series:
    """Parse a timestamp column to UTC; integer-like values are taken as Unix seconds."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return pd.to_datetime(col, utc=True)  # naive -> taken as UTC; aware -> converted
    if pd.api.types.is_numeric_dtype(col):
        return pd.to_datetime(col, unit="s", utc=True)
    values = col.dropna().astype(str).str.strip()
    if len(values) and values.str.fullmatch(r"\d+").all():  # "1700000000" read from a CSV
        return pd.to_datetime(pd.to_numeric(col), unit="s", utc=True)
    try:
        return pd.to_datetime(col, utc=True)
    except (ValueError, TypeError):
        return pd.to_datetime(col, utc=True, format="mixed")  # formats that differ row to row


def _numeric_columns(dtypes: dict[str, str]) -> list[str]:
    return [c for c, t in dtypes.items() if t.startswith(("Float", "Int"))]


def user_files_dataset(
    items_df: pd.DataFrame, inter_df: pd.DataFrame, items_path: Path, interactions_path: Path
) -> Dataset:
    """Coerce validated user frames to the canonical schema.

    Args:
        items_df: the items frame from `read_user_files`, after it passed validation.
        inter_df: the interactions frame, likewise (user ids already pseudonymized).
        items_path: the items file, for lineage.
        interactions_path: the interactions file, for lineage.

    Returns:
        The canonical Dataset; has_time when a timestamp column is present and mostly filled.
    """
    items = items_df.copy()
    inter = inter_df.copy()
    for df, dtypes in ((items, ITEM_DTYPES), (inter, INTERACTION_DTYPES)):
        for col in _numeric_columns(dtypes):
            if col in df.columns:
                df[col] = pd.to_numeric(df[col], errors="raise")  # validation passed: a failure here is a bug
    has_time = False
    if TIMESTAMP in inter.columns:
        inter[TIMESTAMP] = _parse_timestamps(inter[TIMESTAMP])
        has_time = len(inter) > 0 and inter[TIMESTAMP].notna().mean() > HAS_TIME_MIN_FRACTION
    return Dataset.canonical(NAME, items, inter, has_time=bool(has_time), has_text=True, source=f"files:{items_path};{interactions_path}")
