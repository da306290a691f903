"""The validation gate: tiny hand-built frames with exact expected outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recsys.errors import DataValidationError
from recsys.data.validation import ValidationConfig, validate_dataset

CONFIG = ValidationConfig(max_timestamp="2024-01-02")


def _items(**overrides: list) -> pd.DataFrame:
    """Five items as a raw CSV reader gives them: every cell a string."""
    data = {
        "item_id": ["A1", "B2", "C3", "D4", "E5"],
        "title": ["Mug", "Plate", "Bowl", "Cup", "Jug"],
        "price": ["1.50", "2", "0", None, "10.25"],
    }
    data.update(overrides)
    return pd.DataFrame(data, dtype="str")


def _interactions(**overrides: list) -> pd.DataFrame:
    data = {
        "user_id": ["u1", "u1", "u2", "u3"],
        "item_id": ["A1", "B2", "C3", "A1"],
        "event": ["view", "cart", "purchase", "rating"],
        "timestamp": ["2023-01-01 10:00:00", "2023-01-02 11:00:00", "2023-06-01 12:00:00", None],
        "quantity": ["1", "2", "1", None],
        "rating": [None, None, None, "4.5"],
    }
    data.update(overrides)
    return pd.DataFrame(data, dtype="str")


def _validate(tmp_path: Path, items: pd.DataFrame, interactions: pd.DataFrame, has_text: bool = True) -> dict:
    return validate_dataset(
        items,
        interactions,
        out_dir=tmp_path / "report",
        config=CONFIG,
        has_text=has_text,
        item_source="items.csv",
        interaction_source="interactions.csv",
    )


def _fail(tmp_path: Path, items: pd.DataFrame, interactions: pd.DataFrame, has_text: bool = True) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        _validate(tmp_path, items, interactions, has_text)
    err = info.value
    # the full result is written before anything is raised
    report = tmp_path / "report"
    assert err.report_dir == str(report)
    assert (report / "validation.json").is_file()
    assert (report / "data_docs" / "index.html").is_file()
    assert json.loads((report / "validation.json").read_text())["summary"]["success"] is False
    return err


def _line(err: DataValidationError, start: str) -> str:
    found = [f for f in err.failures if f.startswith(start)]
    assert len(found) == 1, err.failures
    return found[0]


def test_clean_dataset_passes_and_writes_report(tmp_path: Path) -> None:
    items, interactions = _items(), _interactions()
    before = (items.copy(), interactions.copy())
    summary = _validate(tmp_path, items, interactions)

    assert summary["success"] is True
    assert summary["tables"]["items"]["rows"] == 5
    assert summary["tables"]["interactions"]["rows"] == 4
    assert summary["tables"]["items"]["expectations_evaluated"] > 5
    assert summary["tables"]["interactions"]["expectations_evaluated"] > 10
    json.dumps(summary)  # JSON-able

    report = Path(summary["report_dir"])
    document = json.loads(Path(summary["validation_json"]).read_text())
    assert document["summary"] == summary
    assert set(document["gx_results"]) == {"items", "interactions"}
    assert all(r["success"] for r in document["gx_results"]["items"]["results"])
    index = Path(summary["data_docs_index"])
    assert index == report / "data_docs" / "index.html" and index.is_file()
    html = index.read_text()
    assert "validations/items/" in html and "validations/interactions/" in html
    # the caller's frames are not touched
    pd.testing.assert_frame_equal(items, before[0])
    pd.testing.assert_frame_equal(interactions, before[1])


def test_canonical_frames_pass(tmp_path: Path) -> None:
    from recsys.data.schema import to_canonical_interactions, to_canonical_items

    items = to_canonical_items(_items().assign(price=lambda d: d["price"].astype(float)))
    interactions = _interactions()
    interactions = to_canonical_interactions(
        interactions.assign(
            timestamp=pd.to_datetime(interactions["timestamp"], utc=True),
            quantity=interactions["quantity"].astype(float),
            rating=interactions["rating"].astype(float),
        )
    )
    assert _validate(tmp_path, items, interactions)["success"] is True


def test_duplicate_item_ids(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(item_id=["B2", "A1", "C3", "D4", "A1"]), _interactions())
    assert err.table == "items" and err.source == "items.csv"
    assert err.failures == [
        "expect_column_values_to_be_unique(item_id): 2 of 5 rows break \"item_id is unique\" "
        "— row 2 item_id='A1', row 5 item_id='A1'"
    ]
    assert "Validation failed for table 'items' (source: items.csv)" in str(err)


def test_unknown_item_in_interactions(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(), _interactions(item_id=["A1", "B2", "ZZ9", "A1"]))
    assert err.table == "interactions" and err.source == "interactions.csv"
    assert err.failures == [
        "expect_column_values_to_not_be_in_set(item_id): 1 of 4 rows break \"item_id exists in the items table\" "
        "— row 3 item_id='ZZ9'"
    ]


def test_negative_price(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(price=["1", "-3.5", None, "2", "3"]), _interactions())
    assert err.table == "items"
    assert err.failures == [
        "expect_column_values_to_be_between(price): 1 of 5 rows break \"price >= 0 and finite (nulls allowed)\" "
        "— row 2 price='-3.5'"
    ]


def test_non_numeric_price(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(price=["1", "cheap", "2", "  ", "3,50"]), _interactions())
    line = _line(err, "expect_column_values_to_be_in_type_list(price)")
    # a blank cell is a missing price, not a bad one
    assert line.startswith('expect_column_values_to_be_in_type_list(price): 2 of 5 rows break "price holds numbers"')
    assert "row 2 price='cheap', row 5 price='3,50'" in line
    assert "skipped expect_column_values_to_be_between(price)" in line
    assert len(err.failures) == 1


def test_all_titles_null(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(title=[None] * 5), _interactions())
    assert err.table == "items"
    line = _line(err, "expect_column_values_to_not_be_null(title)")
    assert '5 of 5 rows break "title is non-null in at least 90% of rows"' in line
    assert "row 1 title=null, row 2 title=null" in line
    assert len(err.failures) == 1  # an all-null column is still a text column

    # without text the same catalog is fine
    summary = validate_dataset(
        _items(title=[None] * 5), _interactions(), out_dir=tmp_path / "nt", config=CONFIG,
        has_text=False, item_source="items.csv", interaction_source="interactions.csv",
    )
    assert summary["success"] is True


def test_blank_title(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(title=["Mug", "  ", "Bowl", "Cup", "Jug"]), _interactions())
    assert err.failures == [
        "expect_column_values_to_not_match_regex(title): 1 of 5 rows break \"title is not blank\" — row 2 title='  '"
    ]


def test_missing_item_column(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items().drop(columns=["title"]), _interactions())
    assert err.table == "items"
    assert err.failures == [
        "expect_column_to_exist(title): breaks \"column title exists\" — columns found: item_id, price; "
        "skipped 2 rule(s) on title: expect_column_values_to_not_be_null, expect_column_values_to_not_match_regex"
    ]
    document = json.loads((tmp_path / "report" / "validation.json").read_text())
    assert {s["column"] for s in document["tables"]["items"]["skipped"]} == {"title"}


def test_missing_interaction_column(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(), _interactions().drop(columns=["event"]))
    assert err.table == "interactions"
    assert len(err.failures) == 1
    line = err.failures[0]
    assert line.startswith('expect_column_to_exist(event): breaks "column event exists"')
    assert "expect_column_values_to_be_in_set" in line and "expect_column_values_to_not_be_null" in line


def test_header_only_table(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(), _interactions().iloc[0:0])
    assert err.table == "interactions"
    assert err.failures == [
        'expect_table_row_count_to_be_between: breaks "table has at least 1 row" — the table has 0 rows'
    ]


def test_empty_items_fails_both_tables(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items().iloc[0:0], _interactions())
    assert err.table == "items"
    assert err.failures[0] == 'expect_table_row_count_to_be_between: breaks "table has at least 1 row" — the table has 0 rows'
    # the other table's failures ride along, prefixed
    assert err.failures[1].startswith("[interactions] expect_column_values_to_not_be_in_set(item_id): 4 of 4 rows break")
    assert "[interactions]" in str(err)


def test_unknown_event(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(), _interactions(event=["view", "click", "purchase", "VIEW"]))
    assert err.failures == [
        "expect_column_values_to_be_in_set(event): 2 of 4 rows break "
        "\"event is one of view, cart, purchase, rating\" — row 2 event='click', row 4 event='VIEW'"
    ]


def test_timestamp_outside_window(tmp_path: Path) -> None:
    ts = ["2023-01-01 10:00:00", "1985-05-05 00:00:00", "2024-03-01 00:00:00", None]
    err = _fail(tmp_path, _items(), _interactions(timestamp=ts))
    line = _line(err, "expect_column_values_to_be_between(timestamp)")
    assert line == (
        "expect_column_values_to_be_between(timestamp): 2 of 4 rows break "
        "\"timestamp is between 1990-01-01T00:00:00+00:00 and 2024-01-02T00:00:00+00:00\" "
        "— row 2 timestamp='1985-05-05 00:00:00', row 3 timestamp='2024-03-01 00:00:00'"
    )


def test_unparseable_timestamp(tmp_path: Path) -> None:
    ts = ["2023-01-01 10:00:00", "yesterday", "2023-01-03", None]
    err = _fail(tmp_path, _items(), _interactions(timestamp=ts))
    line = _line(err, "expect_column_values_to_be_in_type_list(timestamp)")
    assert '1 of 4 rows break "timestamp holds date-times" — row 2 timestamp=\'yesterday\'' in line


def test_quantity_and_rating_ranges(tmp_path: Path) -> None:
    err = _fail(tmp_path, _items(), _interactions(quantity=["1", "0", "2", None], rating=[None, None, None, "11"]))
    assert err.failures == [
        "expect_column_values_to_be_between(quantity): 1 of 4 rows break \"quantity > 0 and finite (nulls allowed)\" "
        "— row 2 quantity='0'",
        "expect_column_values_to_be_between(rating): 1 of 4 rows break "
        "\"rating is between 0 and 10 (nulls allowed)\" — row 4 rating='11'",
    ]


def test_examples_are_capped(tmp_path: Path) -> None:
    n = 8
    items = pd.DataFrame({"item_id": ["X"] * n, "title": ["t"] * n}, dtype="str")
    config = ValidationConfig(max_examples=3)
    with pytest.raises(DataValidationError) as info:
        validate_dataset(items, _interactions(item_id=["X"] * 4), out_dir=tmp_path, config=config,
                         has_text=True, item_source="i.csv", interaction_source="x.csv")
    assert info.value.failures == [
        "expect_column_values_to_be_unique(item_id): 8 of 8 rows break \"item_id is unique\" "
        "— row 1 item_id='X', row 2 item_id='X', row 3 item_id='X', ..."
    ]
