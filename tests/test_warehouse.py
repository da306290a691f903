"""Tests of recsys.data.warehouse against a real SQLite file: loads are idempotent upserts, keys never change,
and concurrent writers (real OS processes) queue on the file's write lock instead of failing."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from recsys.data import schema as S
from recsys.data import warehouse
from recsys.data.warehouse import (
    interaction_keys,
    interactions_table,
    items_table,
    make_engine,
    read_dataset,
    split_salt,
    table_counts,
    upsert_dataset,
    upsert_frames,
    write_lock,
)


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
    from recsys.data.warehouse import split_salt

    assert split_salt(engine, "shop", default="recsys-split-v1:shop") == ("recsys-split-v1:shop", None)
    # later runs get the stored salt, whatever default they bring
    assert split_salt(engine, "shop", default="other-default") == ("recsys-split-v1:shop", None)
    assert split_salt(engine, "other", default="recsys-split-v1:other") == ("recsys-split-v1:other", None)
    # a requested salt replaces it (on purpose) and says what it replaced; it then sticks
    assert split_salt(engine, "shop", requested="fresh") == ("fresh", "recsys-split-v1:shop")
    assert split_salt(engine, "shop", default="recsys-split-v1:shop") == ("fresh", None)
    with pytest.raises(ValueError, match="no split salt"):
        split_salt(engine, "new-shop")


# -- interaction keys: stable, whatever the slicing ------------------------------------------------

# the keys of _interactions() as the warehouse has always stored them: they must never change
GOLDEN_KEYS = [
    "dcb5412a77c102178fd5ca1ebe8af6f980e5dfed",
    "b28efd90fd0af7e290e2fafd89b4e280473ed52d",
    "81424e5bae71887dff1bc9796f30a6897f5dbc3d",
    "5110b6d2242a47f509bbd49bf172573aa33e2dc0",
]


def _reference_keys(interactions: pd.DataFrame) -> pd.Series:
    """The original, whole-frame definition of the keys (the spec the faster code must match)."""
    cols = list(S.INTERACTION_COLUMNS)
    as_text = interactions[cols].astype("string").fillna("\x00")
    joined = as_text[cols[0]].str.cat([as_text[c] for c in cols[1:]], sep="\x1f")
    occurrence = joined.groupby(joined).cumcount().astype(str)
    return (joined + "\x1f" + occurrence).map(lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest())


def _many_interactions(n: int, seed: int = 0, sub_second: str | None = None, users: int = 50) -> pd.DataFrame:
    """n rows with many exact repeats (few users, items, events; whole-minute timestamps, 10% missing);
    `sub_second` ("ms", "us" or "ns") gives ONE late row a fractional second."""
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2024-03-01", tz="UTC").value + rng.integers(0, 20, n) * 60 * 10**9
    if sub_second:
        ts[n - 2] += {"ms": 500_000_000, "us": 7_000, "ns": 3}[sub_second]
    stamps = pd.Series(pd.to_datetime(ts, utc=True)).astype("datetime64[ns, UTC]").mask(rng.random(n) < 0.1)
    return S.to_canonical_interactions(
        pd.DataFrame(
            {
                S.USER_ID: [f"u_{u}" for u in rng.integers(0, users, n)],
                S.ITEM_ID: rng.choice(["a", "b", "c", "é"], n),
                S.EVENT: rng.choice(["view", "purchase"], n),
                S.TIMESTAMP: stamps,
                S.BASKET_ID: rng.choice(["o1", None], n),
                S.QUANTITY: rng.choice([1.0, 2.5, np.nan, 1e20, 0.1 + 0.2], n),
                S.RATING: rng.choice([np.nan, 4.0], n),
            }
        )
    )


def test_interaction_keys_are_the_keys_stored_so_far():
    assert interaction_keys(_interactions()).tolist() == GOLDEN_KEYS
    assert _reference_keys(_interactions()).tolist() == GOLDEN_KEYS


@pytest.mark.parametrize("sub_second", [None, "ms", "us", "ns"])
def test_interaction_keys_match_the_whole_frame_definition_in_slices(monkeypatch, sub_second):
    # keys are computed in slices of _CHUNK rows: identical rows in different slices still count up,
    # and a timestamp with a fractional second in the last slice still sets every row's format
    monkeypatch.setattr(warehouse, "_CHUNK", 97)
    inter = _many_interactions(1_000, seed=1, sub_second=sub_second)
    want = _reference_keys(inter)
    got = interaction_keys(inter)
    assert got.tolist() == want.tolist() and got.index.equals(inter.index)
    assert got.nunique() == len(inter)  # every repeat got its own occurrence number


def _stored(engine, name: str) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(select(interactions_table).where(interactions_table.c.dataset == name), conn)
    return frame.sort_values("interaction_key").reset_index(drop=True)


@pytest.mark.parametrize("sub_second", [None, "ns"])
def test_upsert_frames_in_chunks_stores_what_upsert_dataset_stores(tmp_path, monkeypatch, sub_second):
    monkeypatch.setattr(warehouse, "_CHUNK", 64)  # several slices per chunk, too
    inter = _many_interactions(900, seed=2, sub_second=sub_second, users=5)
    # chunk boundaries cut through runs of identical rows: a row and its twin land in different chunks
    bounds = [0, 1, 250, 251, 600, 900]
    chunks = [inter.iloc[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert any(
        set(map(tuple, c1.astype(str).values)) & set(map(tuple, c2.astype(str).values))
        for c1, c2 in zip(chunks, chunks[1:], strict=False)
    )
    whole = make_engine(f"sqlite:///{tmp_path / 'whole.db'}")
    streamed = make_engine(f"sqlite:///{tmp_path / 'streamed.db'}")
    counts = upsert_dataset(whole, _dataset(interactions=inter))
    assert counts == {"items": 3, "interactions": 900}
    assert upsert_frames(streamed, "shop", _items(), iter(chunks)) == counts
    pd.testing.assert_frame_equal(_stored(streamed, "shop"), _stored(whole, "shop"))
    assert sorted(_stored(whole, "shop")["interaction_key"]) == sorted(_reference_keys(inter))
    # a streamed reload, and a whole-frame reload of the streamed load, add nothing
    assert upsert_frames(streamed, "shop", _items(), chunks) == counts
    assert upsert_dataset(streamed, _dataset(interactions=inter)) == counts
    whole.dispose()
    streamed.dispose()


def test_upsert_frames_checks_every_chunk_and_writes_nothing_on_failure(engine):
    bad = _interactions().assign(**{S.USER_ID: "u" * 65})  # interactions.user_id is VARCHAR(64)
    with pytest.raises(ValueError, match=r"interactions\.user_id holds at most 64"):
        upsert_frames(engine, "shop", _items(), [_interactions(), bad])
    # the items and the first chunk were written in the same transaction: rolled back
    assert table_counts(engine, "shop") == {"items": 0, "interactions": 0}

    def failing_reader():
        yield _interactions()
        raise OSError("the file went away")

    with pytest.raises(OSError, match="went away"):
        upsert_frames(engine, "shop", _items(), failing_reader())
    assert table_counts(engine, "shop") == {"items": 0, "interactions": 0}
    with pytest.raises(ValueError, match=r"dataset holds at most 64"):
        upsert_frames(engine, "x" * 65, _items(), [])


def test_a_key_given_twice_keeps_its_last_row_across_slices(engine, monkeypatch):
    monkeypatch.setattr(warehouse, "_CHUNK", 2)
    items = pd.concat([_items(), _items().iloc[[0]].assign(**{S.TITLE: "Later mug"})], ignore_index=True)
    assert upsert_dataset(engine, _dataset(items=S.to_canonical_items(items))) == {"items": 3, "interactions": 4}
    got, _ = read_dataset(engine, "shop")
    assert got.set_index(S.ITEM_ID).loc["a", S.TITLE] == "Later mug"


# -- concurrent writers on one SQLite file -----------------------------------------------------------

_CHILD = r"""
import json, logging, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
import numpy as np, pandas as pd
from recsys.data import schema as S
from recsys.data import warehouse

role, url, name, n, go, stop = sys.argv[1:7]
n = int(n)
if role == "writer":
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    items = S.to_canonical_items(pd.DataFrame({{S.ITEM_ID: [f"i{{j}}" for j in range(1000)], S.TITLE: "t"}}))
    inter = S.to_canonical_interactions(pd.DataFrame({{
        S.USER_ID: [f"u_{{u}}" for u in rng.integers(0, 5000, n)],
        S.ITEM_ID: [f"i{{j}}" for j in rng.integers(0, 1000, n)],
        S.EVENT: "purchase",
        S.TIMESTAMP: pd.to_datetime(1_700_000_000 + np.arange(n), unit="s", utc=True),
    }}))
    engine = warehouse.make_engine(url)
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.005)
    print(json.dumps(warehouse.upsert_dataset(engine, S.Dataset(name, items, inter, True, True, "test"))), flush=True)
else:
    engine = warehouse.make_engine(url)
    seen, reads = set(), 0
    print("ready", flush=True)
    while not Path(stop).exists():
        for ds in name.split(","):
            c = warehouse.table_counts(engine, ds)
            seen.add((ds, c["items"], c["interactions"]))
        reads += 1
    print(json.dumps({{"reads": reads, "seen": sorted(seen)}}), flush=True)
"""


def _spawn(tmp_path, *args: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(_CHILD.format(repo=str(Path(__file__).resolve().parents[1])))
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


@pytest.mark.slow  # two 150k-row loads in real processes: ~20 s
def test_concurrent_loads_into_one_sqlite_file_both_land_and_readers_never_fail(tmp_path):
    # two OS processes load 150k interaction rows each (two data sets) into ONE SQLite file at the
    # same moment, while a third reads the counts in a loop: nothing fails, every count is exact
    n = 150_000
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    make_engine(url).dispose()
    go, stop = tmp_path / "go", tmp_path / "stop"
    reader = _spawn(tmp_path, "reader", url, "north,south", "0", str(go), str(stop))
    writers = [_spawn(tmp_path, "writer", url, name, str(n), str(go), str(stop)) for name in ("north", "south")]
    go.touch()
    outs = [w.communicate(timeout=300) for w in writers]
    stop.touch()
    reader_out, reader_err = reader.communicate(timeout=60)
    for w, (out, err) in zip(writers, outs, strict=True):
        assert w.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"items": 1000, "interactions": n}
    # one of them found the other writing and queued on the lock (rather than failing)
    assert sum("waiting for the warehouse write lock" in err for _, err in outs) == 1, [err[-2000:] for _, err in outs]
    assert reader.returncode == 0, reader_err[-3000:]
    result = json.loads(reader_out.strip().splitlines()[-1])
    assert result["reads"] > 0
    # each load is one transaction: a reader sees a table empty or whole for a data set, never part of
    # it (table_counts reads the two tables one after the other: a commit may fall in between)
    assert {(items, inter) for _, items, inter in result["seen"]} <= {(0, 0), (0, n), (1000, 0), (1000, n)}
    eng = make_engine(url)
    assert table_counts(eng, "north") == table_counts(eng, "south") == {"items": 1000, "interactions": n}
    eng.dispose()


def test_a_writer_waits_for_the_lock_longer_than_the_busy_timeout(tmp_path, monkeypatch, caplog):
    # SQLite alone fails a writer after its busy timeout; behind the write lock it waits as long as it takes
    monkeypatch.setattr(warehouse, "_BUSY_TIMEOUT_S", 0.2)
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    holder, waiter = make_engine(url), make_engine(url)
    held = threading.Event()

    def hold() -> None:
        with write_lock(holder), holder.begin() as conn:
            conn.execute(items_table.insert().values(dataset="held", item_id="x"))  # SQLite's write lock, too
            held.set()
            time.sleep(1.5)

    th = threading.Thread(target=hold)
    th.start()
    held.wait(10)
    with caplog.at_level(logging.INFO, logger="recsys.data.warehouse"):
        assert upsert_dataset(waiter, _dataset()) == {"items": 3, "interactions": 4}
        assert split_salt(waiter, "shop", default="salt") == ("salt", None)
    th.join()
    assert "waiting for the warehouse write lock" in caplog.text
    assert table_counts(waiter, "held") == {"items": 1, "interactions": 0}
    # readers never queue: the file is in WAL mode
    with sqlite3.connect(tmp_path / "warehouse.db") as con:
        assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "warehouse.db.write.lock").exists()
    holder.dispose()
    waiter.dispose()


def test_write_lock_is_a_no_op_for_in_memory_sqlite():
    eng = make_engine("sqlite://")
    with write_lock(eng), write_lock(eng):  # nothing to lock: nesting cannot deadlock
        pass
    assert upsert_dataset(eng, _dataset()) == {"items": 3, "interactions": 4}
    eng.dispose()
