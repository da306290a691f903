"""A shop's own data: an items file and an interactions file (CSV, CSV.gz or Parquet).

Files are read as they are (ids as strings, no type coercion) so that the validation gate
sees what the shop actually sent and can point at the offending rows. Only user ids are
touched before validation: they are pseudonymized at once, so no raw id reaches a report.
Coercion to the canonical schema happens after validation passes (`user_files_dataset`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from recsys.datasets.wheels import file_sha256
from recsys.errors import DataValidationError
from recsys.privacy import Pseudonymizer
from recsys.schema import (
    INTERACTION_DTYPES,
    ITEM_DTYPES,
    TIMESTAMP,
    USER_ID,
    Dataset,
    to_canonical_interactions,
    to_canonical_items,
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
    """Read a CSV (.csv, .csv.gz) or Parquet (.parquet, .pq) file as is.

    CSV cells are read as strings (ids keep leading zeros; empty cells become NA); Parquet keeps
    its own types. The index is a RangeIndex over data rows, so data row N is index N - 1.

    Args:
        path: the file.
        table: "items" or "interactions", for error messages.

    Raises:
        DataValidationError: missing, empty, unsupported or unreadable file.
    """
    path = Path(path)
    src = str(path)
    kind = _kind(path)
    if kind is None:
        supported = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
        raise DataValidationError(
            table, src, [f"unsupported file type {path.name!r} (rule: input file must be one of {supported})"]
        )
    if not path.is_file():
        raise DataValidationError(table, src, ["file not found (rule: input file must exist and be a regular file)"])
    if path.stat().st_size == 0:
        raise DataValidationError(table, src, [EMPTY_RULE])

    if kind == "csv":
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=True)
        except pd.errors.EmptyDataError:  # no header at all (e.g. only blank lines, or an empty .gz)
            raise DataValidationError(table, src, [EMPTY_RULE]) from None
        except pd.errors.ParserError as exc:  # the message names the line, e.g. "Expected 3 fields in line 5, saw 4"
            raise DataValidationError(
                table, src, [f"cannot parse CSV: {exc} (rule: input file must be well-formed CSV)"]
            ) from None
        except UnicodeDecodeError as exc:
            raise DataValidationError(
                table, src, [f"not UTF-8 text: {exc} (rule: CSV input must be UTF-8 encoded)"]
            ) from None
        except (OSError, EOFError) as exc:  # e.g. a .csv.gz that is not gzip, or is truncated
            raise DataValidationError(table, src, [f"cannot read file: {exc} (rule: input file must be readable)"]) from None
    else:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a corrupt file
            raise DataValidationError(
                table, src, [f"cannot read Parquet: {exc} (rule: input file must be valid Parquet)"]
            ) from None
        # a stored pandas index comes back as the index: keep named ones as columns, then renumber
        named = any(n is not None for n in df.index.names)
        df = df.reset_index(drop=not named)

    if len(df) == 0:  # a header without rows is as useless as no file
        raise DataValidationError(table, src, [EMPTY_RULE])
    df.index = pd.RangeIndex(len(df))
    return df


def keep_raw(path: Path, raw_dir: Path) -> Path:
    """Keep an untouched copy of an input file under `raw_dir/<first 16 hex of sha256>/<name>`.

    Idempotent: the same content is copied once. A different file is never overwritten.

    Returns:
        The path of the copy.

    Raises:
        FileExistsError: a different file already sits at the target path.
    """
    path = Path(path)
    digest = file_sha256(path)
    target = Path(raw_dir) / digest[:16] / path.name
    if target.exists():
        if target.is_file() and file_sha256(target) == digest:
            return target
        raise FileExistsError(f"{target} exists with different content; refusing to overwrite it with {path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # copy to a temporary name, then rename: a crash never leaves a half-copied "raw" file
    fd, tmp = tempfile.mkstemp(prefix=".copy-", dir=target.parent)
    os.close(fd)
    try:
        shutil.copy2(path, tmp)
        os.replace(tmp, target)
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
    return Dataset(
        name=NAME,
        items=to_canonical_items(items),
        interactions=to_canonical_interactions(inter),
        has_time=bool(has_time),
        has_text=True,
        source=f"files:{items_path};{interactions_path}",
    )
