"""Tests of recsys.warehouse against a real SQLite file: loads are idempotent upserts."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pandas as pd
import pytest

from recsys import schema as S
from recsys.warehouse import interaction_keys, make_engine, read_dataset, table_counts, upsert_dataset


def _items(**overrides) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            S.ITEM_ID: ["a", "b", "c"],
            S.TITLE: ["Red mug", "Blue plate", None],
            S.DESCRIPTION: ["A mug", None, None],
            S.CATEGORY: ["Home > Kitchen", "Home > Kitchen", None],
            S.PRICE: [3.5, None, 1.0],
            S.TAGS: ["red|mug", None, None],
        }
    )
    for col, values in overrides.items():
        df[col] = values
    return S.to_canonical_items(df)


def _interactions() -> pd.DataFrame:
    ts = pd.Timestamp("2024-03-01 12:30:00", tz="UTC")
    return S.to_canonical_interactions(
        pd.DataFrame(
            {
                S.USER_ID: ["u_1", "u_1", "u_1", "u_2"],
                S.ITEM_ID: ["a", "b", "b", "c"],
                S.EVENT: ["purchase", "purchase", "purchase", "view"],
                # rows 1 and 2 are identical: two genuine purchases of the same thing in one order
                S.TIMESTAMP: [ts, ts + pd.Timedelta(hours=1), ts + pd.Timedelta(hours=1), pd.NaT],
                S.BASKET_ID: ["o1", "o2", "o2", None],
                S.QUANTITY: [1.0, 2.0, 2.0, None],
                S.RATING: [None, None, None, 4.0],
            }
        )
    )


def _dataset(name: str = "shop", items: pd.DataFrame | None = None, interactions: pd.DataFrame | None = None) -> S.Dataset:
    return S.Dataset(
        name=name,
        items=_items() if items is None else items,
        interactions=_interactions() if interactions is None else interactions,
        has_time=True,
        has_text=True,
        source="test",
    )


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    yield eng
    eng.dispose()


def test_upsert_twice_is_idempotent(engine, tmp_path):
    first = upsert_dataset(engine, _dataset())
    items1, inter1 = read_dataset(engine, "shop")
    second = upsert_dataset(engine, _dataset())
    items2, inter2 = read_dataset(engine, "shop")
    # 3 items; 4 interaction rows (the two identical purchases are kept apart)
    assert first == second == {"items": 3, "interactions": 4}
    pd.testing.assert_frame_equal(items1, items2)
    pd.testing.assert_frame_equal(inter1, inter2)
    # and the file really holds just those rows (counted with the plain sqlite3 driver)
    with sqlite3.connect(tmp_path / "warehouse.db") as con:
        assert con.execute("select count(*) from interactions").fetchone()[0] == 4
        assert con.execute("select count(*) from items").fetchone()[0] == 3


def test_repeated_identical_rows_are_kept_and_reload_keeps_two(engine):
    upsert_dataset(engine, _dataset())
    _, inter = read_dataset(engine, "shop")
    twins = inter[(inter[S.ITEM_ID] == "b") & (inter[S.USER_ID] == "u_1")]
    assert len(twins) == 2
    upsert_dataset(engine, _dataset())
    _, inter = read_dataset(engine, "shop")
    assert len(inter[(inter[S.ITEM_ID] == "b") & (inter[S.USER_ID] == "u_1")]) == 2


def test_read_dataset_returns_the_stored_values(engine):
    upsert_dataset(engine, _dataset())
    items, inter = read_dataset(engine, "shop")
    assert dict(items.dtypes.astype(str)) == {c: str(pd.Series(dtype=t).dtype) for c, t in S.ITEM_DTYPES.items()}
    expected_items = _items()  # already sorted by item_id
    pd.testing.assert_frame_equal(items.reset_index(drop=True), expected_items.reset_index(drop=True))
    # interactions come back in key order: compare as sorted multisets of rows
    cols = list(S.INTERACTION_COLUMNS)
    got = inter.sort_values([S.ITEM_ID, S.USER_ID, S.TIMESTAMP]).reset_index(drop=True)
    want = _interactions().sort_values([S.ITEM_ID, S.USER_ID, S.TIMESTAMP]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[cols], want[cols])


def test_changing_a_title_updates_the_row(engine):
    upsert_dataset(engine, _dataset())
    renamed = _items()
    renamed.loc[renamed[S.ITEM_ID] == "a", S.TITLE] = "Crimson mug"
    counts = upsert_dataset(engine, _dataset(items=renamed))
    items, _ = read_dataset(engine, "shop")
    assert counts["items"] == 3
    row = items[items[S.ITEM_ID] == "a"]
    assert len(row) == 1
    assert row[S.TITLE].iloc[0] == "Crimson mug"
    # the other columns of that item are untouched
    assert row[S.DESCRIPTION].iloc[0] == "A mug"
    assert row[S.PRICE].iloc[0] == 3.5


def test_two_datasets_coexist(engine):
    upsert_dataset(engine, _dataset("shop"))
    other_items = S.to_canonical_items(pd.DataFrame({S.ITEM_ID: ["a", "z"], S.TITLE: ["Other a", "Zebra"]}))
    other_inter = S.to_canonical_interactions(
        pd.DataFrame({S.USER_ID: ["u_9"], S.ITEM_ID: ["z"], S.EVENT: ["view"]})
    )
    upsert_dataset(engine, _dataset("other", items=other_items, interactions=other_inter))
    # same item id "a" in both: distinct rows, each data set reads back only its own
    assert table_counts(engine, "shop") == {"items": 3, "interactions": 4}
    assert table_counts(engine, "other") == {"items": 2, "interactions": 1}
    shop_items, _ = read_dataset(engine, "shop")
    other_items_back, other_inter_back = read_dataset(engine, "other")
    assert shop_items.set_index(S.ITEM_ID).loc["a", S.TITLE] == "Red mug"
    assert other_items_back.set_index(S.ITEM_ID).loc["a", S.TITLE] == "Other a"
    assert other_inter_back[S.USER_ID].tolist() == ["u_9"]
    assert table_counts(engine, "missing") == {"items": 0, "interactions": 0}


def test_timestamps_round_trip_as_tz_aware_utc(engine):
    upsert_dataset(engine, _dataset())
    _, inter = read_dataset(engine, "shop")
    assert str(inter[S.TIMESTAMP].dtype).startswith("datetime64[") and str(inter[S.TIMESTAMP].dt.tz) == "UTC"
    got = sorted(inter[S.TIMESTAMP].dropna().tolist())
    assert got == [
        pd.Timestamp("2024-03-01 12:30:00", tz="UTC"),
        pd.Timestamp("2024-03-01 13:30:00", tz="UTC"),
        pd.Timestamp("2024-03-01 13:30:00", tz="UTC"),
    ]
    assert got[0].to_pydatetime() == dt.datetime(2024, 3, 1, 12, 30, tzinfo=dt.UTC)
    assert inter[S.TIMESTAMP].isna().sum() == 1  # the view without time stays null


def test_interaction_keys_are_deterministic_and_distinct():
    inter = _interactions()
    k1 = interaction_keys(inter)
    k2 = interaction_keys(inter.copy())
    assert k1.tolist() == k2.tolist()
    # 4 rows -> 4 distinct 40-hex-char keys, even for the two identical rows (occurrence 0 and 1)
    assert k1.nunique() == 4
    assert all(len(k) == 40 and set(k) <= set("0123456789abcdef") for k in k1)
    # a key depends on the row's content, not on its position among different rows
    reordered = inter.iloc[[3, 0, 1, 2]].reset_index(drop=True)
    assert interaction_keys(reordered).tolist() == [k1[3], k1[0], k1[1], k1[2]]
    # changing one field gives a new key
    changed = inter.copy()
    changed.loc[0, S.QUANTITY] = 3.0
    k3 = interaction_keys(changed)
    assert k3[0] != k1[0] and k3[1:].tolist() == k1[1:].tolist()


def test_a_third_identical_row_adds_exactly_one_row(engine):
    upsert_dataset(engine, _dataset())
    inter = _interactions()
    more = pd.concat([inter, inter.iloc[[1]]], ignore_index=True)  # a third identical purchase
    counts = upsert_dataset(engine, _dataset(interactions=more))
    assert counts["interactions"] == 5


def test_upserting_what_was_read_back_changes_nothing(engine):
    # the stored values map onto the same keys: a read -> write round trip adds no rows
    upsert_dataset(engine, _dataset())
    items, inter = read_dataset(engine, "shop")
    assert upsert_dataset(engine, _dataset(items=items, interactions=inter)) == {"items": 3, "interactions": 4}
    items2, inter2 = read_dataset(engine, "shop")
    pd.testing.assert_frame_equal(items, items2)
    pd.testing.assert_frame_equal(inter, inter2)


def test_split_salt_is_stored_once_per_data_set_and_changed_only_on_request(engine):
    from recsys.warehouse import split_salt

    assert split_salt(engine, "shop", default="recsys-split-v1:shop") == ("recsys-split-v1:shop", None)
    # later runs get the stored salt, whatever default they bring
    assert split_salt(engine, "shop", default="other-default") == ("recsys-split-v1:shop", None)
    assert split_salt(engine, "other", default="recsys-split-v1:other") == ("recsys-split-v1:other", None)
    # a requested salt replaces it (on purpose) and says what it replaced; it then sticks
    assert split_salt(engine, "shop", requested="fresh") == ("fresh", "recsys-split-v1:shop")
    assert split_salt(engine, "shop", default="recsys-split-v1:shop") == ("fresh", None)
    with pytest.raises(ValueError, match="no split salt"):
        split_salt(engine, "new-shop")
