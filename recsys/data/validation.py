"""The validation gate: two Great Expectations suites (items, interactions) over the input frames.

Every run writes its full result to a report folder (``validation.json`` and GX's own HTML data
docs) before anything is raised, so a failing run can always be inspected. Failures are raised
as one :class:`~recsys.errors.DataValidationError` whose lines name the expectation, the column,
the rule in words, how many rows break it and the first offending rows (``row N`` is the 1-based
data row of the input file, i.e. DataFrame index + 1).

The frames may be raw user files (every cell a string, columns missing, ...). They are never
mutated: a *prepared* copy is validated in which numbers and timestamps are parsed, so that GX
compares typed values. A cell that does not parse stays as its original string in an object
column; GX's type rule then names exactly those rows (its per-value check on object columns),
and the range rule on that column is skipped, since comparing strings with numbers means nothing.

GX 1.24 notes (checked against the installed source):
- ``ExpectColumnValuesToBeInTypeList`` checks the column dtype, except on ``object`` columns,
  where it checks each value and returns offending indexes. No type name matches pandas 3's
  default ``str`` dtype, so text columns are validated as ``string`` dtype (``"StringDtype"``).
- No type name matches a tz-aware datetime dtype either (the dtype check is ``dtype in [...]``
  against numpy dtypes/pandas classes), so a cleanly parsed timestamp column gets no type rule.
- An expectation on a missing column does not fail cleanly, it records a metric exception; so
  such expectations are left out of the suite and reported as skipped.
- ``result_format="SUMMARY"`` fills ``partial_unexpected_index_list`` for pandas (index labels),
  capped by ``partial_unexpected_count``; "COMPLETE" would put every offending index into
  validation.json, which is unbounded on a bad 270k-row file.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from recsys import atomic
from recsys.errors import DataValidationError
from recsys.data.schema import (
    BASKET_ID,
    CATEGORY,
    DESCRIPTION,
    EVENT,
    EVENT_TYPES,
    INTERACTION_REQUIRED,
    ITEM_ID,
    ITEM_REQUIRED,
    MAX_LENGTHS,
    PRICE,
    QUANTITY,
    RATING,
    TAGS,
    TIMESTAMP,
    TITLE,
    USER_ID,
)

logger = logging.getLogger(__name__)

ITEMS = "items"
INTERACTIONS = "interactions"
VALIDATION_JSON = "validation.json"
DATA_DOCS_DIR = "data_docs"
_SITE = "report"

# type names GX resolves (numpy dtype names for the dtype check, python/pandas types for the
# per-value check that GX runs on object columns)
_NUMBER_TYPES = ["float64", "int64", "float", "int", "Float64Dtype", "Int64Dtype"]
_DATETIME_TYPES = ["Timestamp"]
_TEXT_TYPES = ["StringDtype"]

_ID_COLUMNS = (ITEM_ID, USER_ID, BASKET_ID)
_TEXT_COLUMNS = (TITLE, DESCRIPTION, CATEGORY, TAGS, EVENT)
_NUMBER_COLUMNS = (PRICE, QUANTITY, RATING)
# the largest finite float: "between 0 and this" also refuses inf and 1e400 (parsed as inf), which the
# warehouse would store as infinity and every price band / mean would inherit
_FINITE_MAX = float(np.finfo(np.float64).max)
# an id with surrounding whitespace (or none at all) would be a second product / basket beside the trimmed one
_UNTRIMMED = r"^\s|\s$|^$"
_NUL = r"\x00"  # PostgreSQL cannot store a NUL character in text (SQLite would): refused for both
_MAX_SHOWN = 60  # characters of a cell shown in a message (a 10 MB id is named, not echoed)


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds of the gate. ``max_timestamp`` comes from the caller (logical date + 1 day)."""

    min_text_share: float = 0.9  # share of items that must have a title (when the data has text)
    min_timestamp: str = "1990-01-01"  # ISO; naive means UTC
    max_timestamp: str | None = None  # ISO; None = no upper bound
    max_examples: int = 5  # offending rows shown per failed rule


# --- preparing a frame for GX ------------------------------------------------------------


@dataclass
class _Prepared:
    """A frame ready for GX plus what was learnt while preparing it."""

    frame: pd.DataFrame
    unparsed: set[str] = field(default_factory=set)  # columns with cells that did not parse
    notes: list[str] = field(default_factory=list)  # problems found before GX (e.g. duplicate columns)


def _blank(s: pd.Series) -> pd.Series:
    """Cells that count as missing: NA, or a string of only whitespace (CSV readers vary)."""
    return s.isna() | s.astype("string").str.strip().eq("").fillna(False).astype(bool)


def _mixed(parsed: pd.Series, raw: pd.Series, bad: pd.Series) -> pd.Series:
    """Parsed values, with the original string kept where parsing failed (object dtype)."""
    out = parsed.astype(object).where(parsed.notna(), None)
    out[bad] = raw[bad].astype(object)
    return out


def _as_number(raw: pd.Series) -> tuple[pd.Series, bool]:
    """Numbers as float64; returns (series, had_unparseable_cells)."""
    if pd.api.types.is_bool_dtype(raw):
        # True/False is not a price or a quantity; as text, GX's per-value type check names the
        # rows (a bool would pass it, bool being a subclass of int)
        return raw.astype("string").astype(object).where(raw.notna(), None), True
    if pd.api.types.is_numeric_dtype(raw):
        return raw.astype("float64"), False  # Float64 -> float64: GX's vectorised range check
    missing = _blank(raw)
    parsed = pd.to_numeric(raw.where(~missing).astype(object), errors="coerce").astype("float64")
    bad = parsed.isna() & ~missing
    if not bad.any():
        return parsed, False
    return _mixed(parsed, raw, bad), True


def _as_timestamp(raw: pd.Series) -> tuple[pd.Series, bool]:
    """Timestamps as datetime64[UTC]; returns (series, had_unparseable_cells)."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC"), False
    if pd.api.types.is_datetime64_dtype(raw):
        return raw.dt.tz_localize("UTC"), False
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        # epoch numbers have no unit we could trust: leave the column as is, the type rule names it
        return raw, False
    missing = _blank(raw)
    text = raw.where(~missing).astype(object)
    with warnings.catch_warnings():  # "could not infer format": expected on messy input
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(text, utc=True, errors="coerce")  # fast path: one inferred format
        retry = parsed.isna() & ~missing
        if retry.any():  # cells in another format: parse only those, one by one
            parsed[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
    bad = parsed.isna() & ~missing
    if not bad.any():
        return parsed, False
    return _mixed(parsed, raw, bad), True


def _as_text(raw: pd.Series) -> pd.Series:
    """Text columns as pandas ``string`` (GX has no type name for pandas 3's ``str`` dtype)."""
    if raw.isna().all() or pd.api.types.is_object_dtype(raw) or pd.api.types.is_string_dtype(raw):
        return raw.astype("string")
    return raw  # numbers/dates where text is expected: the type rule reports the dtype


def _prepare(df: pd.DataFrame) -> _Prepared:
    """A typed copy of ``df`` for GX; the caller's frame is left untouched."""
    notes: list[str] = []
    frame = df
    dup = frame.columns[frame.columns.duplicated()]
    if len(dup):
        notes.append(
            f"columns {sorted(map(str, set(dup)))} appear more than once "
            '(rule: "column names are unique"); the first of each was validated'
        )
        frame = frame.loc[:, ~frame.columns.duplicated()]
    frame = frame.copy(deep=False)
    frame.columns = [str(c) for c in frame.columns]
    # row numbers in messages are index + 1: keep the index only when it is a plain integer one
    if not (pd.api.types.is_integer_dtype(frame.index) and frame.index.is_unique):
        frame = frame.reset_index(drop=True)
    prepared = _Prepared(frame=frame, notes=notes)
    for col in frame.columns:
        if col in _ID_COLUMNS:
            # ids compare as text: 7 in one file and "7" in the other are the same item
            frame[col] = frame[col].astype("string")
        elif col in _TEXT_COLUMNS:
            frame[col] = _as_text(frame[col])
        elif col in _NUMBER_COLUMNS:
            frame[col], bad = _as_number(frame[col])
            if bad:
                prepared.unparsed.add(col)
        elif col == TIMESTAMP:
            frame[col], bad = _as_timestamp(frame[col])
            if bad:
                prepared.unparsed.add(col)
    return prepared


# --- building the suites -----------------------------------------------------------------


@dataclass
class _Plan:
    """The expectations of one table and the ones left out (with why)."""

    expectations: list[Any] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def add(self, expectation: Any, rule: str) -> None:
        # the rule in words travels in GX's own meta, so JSON and data docs carry it too
        expectation.meta = {"rule": rule}
        self.expectations.append(expectation)

    def skip(self, exp_type: str, column: str, reason: str) -> None:
        self.skipped.append({"expectation_type": exp_type, "column": column, "reason": reason})


def _iso_utc(value: str) -> str:
    """An ISO timestamp with an explicit UTC offset (GX compares it with tz-aware values)."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return ts.isoformat()


def _columns_exist(plan: _Plan, gxe: Any, prep: _Prepared, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    present = set(prep.frame.columns)
    for col in required:
        plan.add(gxe.ExpectColumnToExist(column=col), f"column {col} exists")
    for col in optional:
        if col in present:
            plan.add(gxe.ExpectColumnToExist(column=col), f"column {col} exists")


def _typed_range(
    plan: _Plan, gxe: Any, prep: _Prepared, col: str, type_list: list[str], kind: str, rng: Any, rule: str
) -> None:
    """Type rule on ``col``, then its range rule unless cells did not parse."""
    ok = col not in prep.unparsed and _dtype_ok(prep.frame[col], kind)
    # GX 1.24 has no type name matching a tz-aware dtype (its dtype check is `dtype in [...]`),
    # so a cleanly parsed timestamp column needs no type rule; any other one gets it, and on an
    # object column GX checks each value and names the rows that are not Timestamps.
    if kind != "date-times" or not ok:
        plan.add(gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=type_list), f"{col} holds {kind}")
    if not ok:
        plan.skip("expect_column_values_to_be_between", col, f"{col} has values that are not {kind}")
    else:
        plan.add(rng, rule)


def _dtype_ok(s: pd.Series, kind: str) -> bool:
    if kind == "numbers":
        return pd.api.types.is_float_dtype(s) or pd.api.types.is_integer_dtype(s)
    return isinstance(s.dtype, pd.DatetimeTZDtype)


def _dtype_is_text(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.StringDtype)


def _id_rules(plan: _Plan, gxe: Any, col: str) -> None:
    """What the warehouse needs of an id column: trimmed, non-empty, and no longer than its column."""
    plan.add(
        gxe.ExpectColumnValuesToNotMatchRegex(column=col, regex=f"{_UNTRIMMED}|{_NUL}"),
        f"{col} is not blank and has no leading or trailing whitespace or NUL character",
    )
    if col in MAX_LENGTHS:
        plan.add(
            gxe.ExpectColumnValueLengthsToBeBetween(column=col, min_value=1, max_value=MAX_LENGTHS[col]),
            f"{col} is at most {MAX_LENGTHS[col]} characters",
        )


def _items_plan(gxe: Any, prep: _Prepared, config: ValidationConfig, has_text: bool) -> _Plan:
    plan = _Plan()
    df = prep.frame
    present = set(df.columns)
    _columns_exist(plan, gxe, prep, ITEM_REQUIRED, (DESCRIPTION, CATEGORY, PRICE, TAGS))
    plan.add(gxe.ExpectTableRowCountToBeBetween(min_value=1), "table has at least 1 row")
    if ITEM_ID in present:
        plan.add(gxe.ExpectColumnValuesToNotBeNull(column=ITEM_ID), f"{ITEM_ID} is not null")
        _id_rules(plan, gxe, ITEM_ID)
        plan.add(gxe.ExpectColumnValuesToBeUnique(column=ITEM_ID), f"{ITEM_ID} is unique")
    else:
        for t in ("expect_column_values_to_not_be_null", "expect_column_values_to_be_unique"):
            plan.skip(t, ITEM_ID, f"column {ITEM_ID} is missing")
    if PRICE in present:
        _typed_range(
            plan, gxe, prep, PRICE, _NUMBER_TYPES, "numbers",
            gxe.ExpectColumnValuesToBeBetween(column=PRICE, min_value=0, max_value=_FINITE_MAX), f"{PRICE} >= 0 and finite (nulls allowed)",
        )
    if TITLE in present:
        if has_text:
            share = config.min_text_share
            plan.add(
                gxe.ExpectColumnValuesToNotBeNull(column=TITLE, mostly=share),
                f"{TITLE} is non-null in at least {share:.0%} of rows",
            )
        plan.add(gxe.ExpectColumnValuesToNotMatchRegex(column=TITLE, regex=r"^\s*$"), f"{TITLE} is not blank")
    else:
        if has_text:
            plan.skip("expect_column_values_to_not_be_null", TITLE, f"column {TITLE} is missing")
        plan.skip("expect_column_values_to_not_match_regex", TITLE, f"column {TITLE} is missing")
    # schema rule: text columns hold text (numbers parsed by the reader would show here)
    for col in (TITLE, DESCRIPTION, CATEGORY, TAGS):
        if col in present:
            plan.add(gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=_TEXT_TYPES), f"{col} holds text")
            if _dtype_is_text(df[col]):
                plan.add(gxe.ExpectColumnValuesToNotMatchRegex(column=col, regex=_NUL), f"{col} holds no NUL character")
    return plan


def _interactions_plan(
    gxe: Any, prep: _Prepared, config: ValidationConfig, item_ids: pd.Index | None
) -> _Plan:
    plan = _Plan()
    df = prep.frame
    present = set(df.columns)
    _columns_exist(plan, gxe, prep, INTERACTION_REQUIRED, (TIMESTAMP, BASKET_ID, QUANTITY, RATING))
    plan.add(gxe.ExpectTableRowCountToBeBetween(min_value=1), "table has at least 1 row")
    for col in (USER_ID, ITEM_ID, EVENT):
        if col in present:
            # user ids arrive pseudonymized: a blank raw id became null there (recsys.data.privacy)
            plan.add(gxe.ExpectColumnValuesToNotBeNull(column=col), f"{col} is not null" + (" or blank" if col == USER_ID else ""))
        else:
            plan.skip("expect_column_values_to_not_be_null", col, f"column {col} is missing")
    for col in (USER_ID, ITEM_ID, BASKET_ID):
        if col in present:
            _id_rules(plan, gxe, col)
    if EVENT in present:
        plan.add(
            gxe.ExpectColumnValuesToBeInSet(column=EVENT, value_set=list(EVENT_TYPES)),
            f"{EVENT} is one of {', '.join(EVENT_TYPES)}",
        )
    else:
        plan.skip("expect_column_values_to_be_in_set", EVENT, f"column {EVENT} is missing")
    if ITEM_ID not in present:
        plan.skip("expect_column_values_to_not_be_in_set", ITEM_ID, f"column {ITEM_ID} is missing")
    elif item_ids is None:
        plan.skip("expect_column_values_to_not_be_in_set", ITEM_ID, f"the items table has no {ITEM_ID} column")
    else:
        # "in the catalog" as "not among this table's ids that are missing from the catalog": the same rows
        # fail, but the expectation carries the few unknown ids instead of the whole catalog, which GX
        # copies and serialises many times per run (a 50k-item catalog made this one rule cost ~20 s)
        ids = df[ITEM_ID].dropna().unique()
        unknown = sorted(pd.Index(ids).difference(item_ids).tolist())
        plan.add(
            gxe.ExpectColumnValuesToNotBeInSet(column=ITEM_ID, value_set=unknown),
            f"{ITEM_ID} exists in the items table",
        )
    if TIMESTAMP in present and df[TIMESTAMP].notna().any():
        lo, hi = _iso_utc(config.min_timestamp), _iso_utc(config.max_timestamp) if config.max_timestamp else None
        window = f"between {lo} and {hi}" if hi else f"on or after {lo}"
        _typed_range(
            plan, gxe, prep, TIMESTAMP, _DATETIME_TYPES, "date-times",
            gxe.ExpectColumnValuesToBeBetween(column=TIMESTAMP, min_value=lo, max_value=hi),
            f"{TIMESTAMP} is {window}",
        )
    if QUANTITY in present:
        _typed_range(
            plan, gxe, prep, QUANTITY, _NUMBER_TYPES, "numbers",
            gxe.ExpectColumnValuesToBeBetween(column=QUANTITY, min_value=0, strict_min=True, max_value=_FINITE_MAX),
            f"{QUANTITY} > 0 and finite (nulls allowed)",
        )
    if RATING in present:
        _typed_range(
            plan, gxe, prep, RATING, _NUMBER_TYPES, "numbers",
            gxe.ExpectColumnValuesToBeBetween(column=RATING, min_value=0, max_value=10),
            f"{RATING} is between 0 and 10 (nulls allowed)",
        )
    return plan


# --- running GX --------------------------------------------------------------------------


def _context(docs_dir: Path) -> Any:
    """An in-memory GX context whose only data docs site is ``docs_dir`` (no analytics, no bars)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            _SITE: {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _run_suite(context: Any, name: str, frame: pd.DataFrame, plan: _Plan, max_examples: int) -> Any:
    import great_expectations as gx

    source = context.data_sources.add_pandas(f"{name}_source")
    batch_definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in plan.expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_definition, suite=suite))
    # SUMMARY: counts plus the first `max_examples` offending indexes (bounded output)
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max(1, max_examples)}
    return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)


# --- turning GX results into lines a person can act on ------------------------------------


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return "null"
    if isinstance(value, pd.Timestamp):
        return repr(value.isoformat())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and len(value) > _MAX_SHOWN:
        return f"{value[:_MAX_SHOWN]!r}... ({len(value)} characters)"
    return repr(value)


def _row_label(index: Any) -> str:
    return f"row {int(index) + 1}" if isinstance(index, (int, np.integer)) else f"row {index!r}"


def _lookup(raw: pd.DataFrame, frame: pd.DataFrame, index: Any, col: str, fallback: Any) -> Any:
    """The cell as the user wrote it (raw frame), else what GX saw."""
    try:
        if raw.index.equals(frame.index) and col in raw.columns:
            cell = raw.loc[index, col]
            if not isinstance(cell, (pd.Series, pd.DataFrame)):
                return cell
    except (KeyError, TypeError, ValueError):
        pass
    return fallback


def _failure_line(
    result: Any, raw: pd.DataFrame, frame: pd.DataFrame, plan: _Plan, max_examples: int
) -> str:
    cfg = result.expectation_config
    exp_type = cfg.type
    col = cfg.kwargs.get("column")
    rule = (cfg.meta or {}).get("rule", exp_type)
    head = f"{exp_type}({col})" if col else exp_type
    info = result.exception_info or {}
    raised = info.get("raised_exception") if "raised_exception" in info else any(
        isinstance(v, dict) and v.get("raised_exception") for v in info.values()
    )
    if raised:
        messages = [info.get("exception_message")] + [
            v.get("exception_message") for v in info.values() if isinstance(v, dict)
        ]
        message = next((m for m in messages if m), "unknown error")
        return f'{head}: could not check "{rule}": {message}'
    res = result.result or {}
    if exp_type == "expect_column_to_exist":
        skipped = [s["expectation_type"] for s in plan.skipped if s["column"] == col]
        line = f'{head}: breaks "{rule}" — columns found: {", ".join(map(str, raw.columns)) or "none"}'
        if skipped:
            line += f"; skipped {len(skipped)} rule(s) on {col}: {', '.join(skipped)}"
        return line
    if "partial_unexpected_index_list" in res and res.get("unexpected_count"):
        count, total = res["unexpected_count"], res.get("element_count", len(frame))
        indexes = list(res.get("partial_unexpected_index_list") or [])[:max_examples]
        values = list(res.get("partial_unexpected_list") or [])
        examples = []
        for i, index in enumerate(indexes):
            fallback = values[i] if i < len(values) else None
            examples.append(f"{_row_label(index)} {col}={_fmt(_lookup(raw, frame, index, col, fallback))}")
        more = ", ..." if count > len(examples) else ""
        line = f'{head}: {count} of {total} rows break "{rule}" — {", ".join(examples)}{more}'
    elif exp_type == "expect_table_row_count_to_be_between":
        line = f'{head}: breaks "{rule}" — the table has {res.get("observed_value")} rows'
    elif exp_type == "expect_column_values_to_be_in_type_list":
        line = f'{head}: breaks "{rule}" — the column type is {res.get("observed_value")}'
    else:
        line = f'{head}: breaks "{rule}" — observed {_fmt(res.get("observed_value"))}'
    skipped = [s for s in plan.skipped if s["column"] == col and exp_type == "expect_column_values_to_be_in_type_list"]
    if skipped:
        line += f"; skipped {', '.join(s['expectation_type'] for s in skipped)}({col}) until it holds"
    return line


def _table_report(
    name: str, source: str, raw: pd.DataFrame, prep: _Prepared, plan: _Plan, result: Any, max_examples: int
) -> dict[str, Any]:
    failures = list(prep.notes)
    failures += [
        _failure_line(r, raw, prep.frame, plan, max_examples) for r in result.results if not r.success
    ]
    return {
        "table": name,
        "source": source,
        "success": not failures,
        "rows": int(len(prep.frame)),
        "expectations_evaluated": len(result.results),
        "expectations_failed": sum(not r.success for r in result.results),
        "skipped": plan.skipped,
        "failures": failures,
    }


def case_only_duplicates(ids: pd.Series, max_examples: int = 5) -> list[str]:
    """Warnings for ids that differ from another only by letter case (``SKU-0001`` / ``sku-0001``).

    Not an error: some shops do use case to tell products apart. But more often it is one product
    typed twice, so the report names the groups (first examples, with their 1-based rows).
    """
    s = ids.dropna().astype("string")
    folded = s.str.casefold()
    distinct = pd.DataFrame({"id": s, "key": folded}).drop_duplicates("id")
    groups = distinct.groupby("key")["id"].nunique()
    clashing = groups[groups > 1].index
    if not len(clashing):
        return []
    examples = []
    for key in clashing[:max_examples]:
        members = s[folded == key]
        shown = ", ".join(f"row {int(i) + 1} {_fmt(v)}" for i, v in members.drop_duplicates().items())
        examples.append(f"{{{shown}}}")
    more = ", ..." if len(clashing) > max_examples else ""
    return [
        f"{ITEM_ID}: {len(clashing)} group(s) of ids differ only by letter case and are kept as different items "
        f"— {', '.join(examples)}{more} (warning: fix the source if they are one product)"
    ]


def _order_results(result: Any, plan: _Plan) -> None:
    """GX returns results grouped its own way; put them back in the order the rules were written."""
    rank = {e.id: i for i, e in enumerate(plan.expectations)}
    result.results.sort(key=lambda r: rank.get(r.expectation_config.id, len(rank)))


def _finite(value: Any) -> Any:
    """NaN/inf -> None, so validation.json is strict JSON (json.dumps would write bare NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _merge_parts(name: str, source: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One table report from the reports of its consecutive row ranges (a large file read in parts)."""
    if len(parts) == 1:
        return parts[0]
    failures: list[str] = []
    for part in parts:  # row numbers are already the file's; say which range a count is out of
        failures += [f"(rows {part['first_row']}-{part['last_row']}) {line}" for line in part["failures"]]
    skipped = {(s["expectation_type"], s["column"]): s for part in parts for s in part["skipped"]}
    return {
        "table": name,
        "source": source,
        "success": all(p["success"] for p in parts),
        "rows": sum(p["rows"] for p in parts),
        "parts": len(parts),
        "expectations_evaluated": sum(p["expectations_evaluated"] for p in parts),
        "expectations_failed": sum(p["expectations_failed"] for p in parts),
        "skipped": list(skipped.values()),
        "failures": failures,
    }


def validate_dataset(
    items: pd.DataFrame,
    interactions: pd.DataFrame | Iterable[pd.DataFrame],
    *,
    out_dir: Path,
    config: ValidationConfig,
    has_text: bool,
    item_source: str,
    interaction_source: str,
) -> dict[str, Any]:
    """Validate items and interactions with GX; always write ``validation.json`` and data docs.

    Args:
        items: the items table, canonical or raw (unparsed strings, missing columns).
        interactions: the interactions table, canonical or raw; or its consecutive parts (a large
            file read in chunks, each indexed by its rows' 0-based position in the file). Every
            interactions rule is about one row at a time, so parts are judged one by one and only
            one part is held at once; their results are merged into one report.
        out_dir: report folder; ``validation.json`` and ``data_docs/index.html`` go there.
        config: thresholds and the timestamp window.
        has_text: the data set has titles, so the title-presence rule applies.
        item_source, interaction_source: where the tables came from (shown in errors).

    Returns:
        A JSON-able summary: success, warnings, report paths, and per table the row count and
        number of expectations evaluated.

    Raises:
        DataValidationError: a rule failed (items first; the other table's failures are added
            with an ``[interactions]`` prefix). Raised after the report is written.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs_dir = out_dir / DATA_DOCS_DIR
    shutil.rmtree(docs_dir, ignore_errors=True)  # the docs index must show this run only

    import great_expectations.expectations as gxe

    items_prep = _prepare(items)
    item_ids: pd.Index | None = None
    if ITEM_ID in items_prep.frame.columns:
        item_ids = pd.Index(items_prep.frame[ITEM_ID].dropna().unique())
    context = _context(docs_dir)
    results: dict[str, Any] = {}
    reports: dict[str, dict[str, Any]] = {}

    plan = _items_plan(gxe, items_prep, config, has_text)
    result = _run_suite(context, ITEMS, items_prep.frame, plan, config.max_examples)
    _order_results(result, plan)
    results[ITEMS] = result
    reports[ITEMS] = _table_report(ITEMS, item_source, items, items_prep, plan, result, config.max_examples)

    parts = [interactions] if isinstance(interactions, pd.DataFrame) else interactions
    part_reports: list[dict[str, Any]] = []
    for k, part in enumerate(parts):
        prep = _prepare(part)
        plan = _interactions_plan(gxe, prep, config, item_ids)
        name = INTERACTIONS if k == 0 else f"{INTERACTIONS}_part_{k + 1}"
        result = _run_suite(context, name, prep.frame, plan, config.max_examples)
        _order_results(result, plan)
        results[name] = result
        report = _table_report(INTERACTIONS, interaction_source, part, prep, plan, result, config.max_examples)
        first = int(prep.frame.index[0]) + 1 if len(prep.frame) and pd.api.types.is_integer_dtype(prep.frame.index) else 1
        part_reports.append(report | {"first_row": first, "last_row": first + len(prep.frame) - 1})
        del prep, part  # one part in memory at a time
    reports[INTERACTIONS] = _merge_parts(INTERACTIONS, interaction_source, part_reports)

    docs_index = docs_dir / "index.html"
    context.build_data_docs(site_names=[_SITE])

    success = all(r["success"] for r in reports.values())
    warnings_found = case_only_duplicates(items_prep.frame[ITEM_ID], config.max_examples) if ITEM_ID in items_prep.frame.columns else []
    for line in warnings_found:
        logger.warning("validation of %s: %s", item_source, line)
    summary: dict[str, Any] = {
        "success": success,
        "warnings": warnings_found,
        "report_dir": str(out_dir),
        "validation_json": str(out_dir / VALIDATION_JSON),
        "data_docs_index": str(docs_index),
        "tables": {
            name: {k: r[k] for k in ("source", "rows", "expectations_evaluated", "expectations_failed")}
            for name, r in reports.items()
        },
    }
    document = {
        "summary": summary,
        "config": asdict(config),
        "has_text": has_text,
        "tables": reports,
        "gx_results": {name: r.to_json_dict() for name, r in results.items()},
    }
    json_path = out_dir / VALIDATION_JSON
    atomic.write_json(json_path, _finite(document), indent=2, default=_json_default)
    logger.info("validation %s in %.2fs; report: %s", "passed" if success else "failed",
                time.perf_counter() - started, out_dir)

    failed = [name for name in (ITEMS, INTERACTIONS) if not reports[name]["success"]]
    if failed:
        first = failed[0]
        lines = list(reports[first]["failures"])
        for other in failed[1:]:
            lines += [f"[{other}] {line}" for line in reports[other]["failures"]]
        raise DataValidationError(first, reports[first]["source"], lines, str(out_dir))
    return summary
