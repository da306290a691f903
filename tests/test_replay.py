"""Tests of recsys.data.replay: time windows, inbox batches, the shuffled control and injected drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data import schema as S
from recsys.data.ingest import READY, inbox_dir, ready_batches
from recsys.paths import ProjectPaths
from recsys.data.privacy import Pseudonymizer
from recsys.errors import DataValidationError
from recsys.data.replay import (
    ReplaySource,
    attach_synthetic_prices,
    batch_id_for,
    inject,
    load_raw_source,
    load_replay_source,
    replay,
    replay_source,
    replay_windows,
    shift_target_category,
    time_windows,
    write_batch,
)

UTC = "UTC"


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz=UTC)


@pytest.fixture
def paths(tmp_path: Path) -> ProjectPaths:
    return ProjectPaths(home=tmp_path / "home")


def _inter(times: list[str], items: list[str] | None = None, users: list[str] | None = None) -> pd.DataFrame:
    n = len(times)
    return S.to_canonical_interactions(
        pd.DataFrame(
            {
                S.USER_ID: users or [f"{i % 3}" for i in range(n)],
                S.ITEM_ID: items or [f"I{i % 4}" for i in range(n)],
                S.EVENT: "rating",
                S.TIMESTAMP: pd.to_datetime(times, utc=True, format="ISO8601"),
                S.RATING: [float(1 + i % 5) for i in range(n)],
            }
        )
    )


def _items(ids: list[str], categories: list[str | None] | None = None) -> pd.DataFrame:
    return S.to_canonical_items(
        pd.DataFrame({S.ITEM_ID: ids, S.TITLE: [f"Title {i}" for i in ids], S.CATEGORY: categories or [None] * len(ids)})
    )


def _dataset(inter: pd.DataFrame, items: pd.DataFrame | None = None) -> S.Dataset:
    if items is None:
        items = _items(sorted(inter[S.ITEM_ID].unique()))
    return S.Dataset("tiny", items, inter, True, True, "test")


# --- windows -------------------------------------------------------------------------------

TIMES = [
    "2024-01-03 10:00",  # Wed: week starting Sun 2023-12-31
    "2024-01-07 00:00",  # Sun 00:00 exactly: the NEXT week (half-open)
    "2024-01-06 23:59:59",  # Sat: first week
    "2024-01-25 12:00",  # Thu: week starting Sun 2024-01-21 (the week of the 14th is empty)
]


def test_weekly_windows_are_half_open_calendar_weeks_without_empty_ones() -> None:
    windows = time_windows(_inter(TIMES), "W")
    assert windows == [
        (ts("2023-12-31"), ts("2024-01-07")),
        (ts("2024-01-07"), ts("2024-01-14")),
        (ts("2024-01-21"), ts("2024-01-28")),
    ]
    assert time_windows(_inter(TIMES), "D") == [
        (ts("2024-01-03"), ts("2024-01-04")),
        (ts("2024-01-06"), ts("2024-01-07")),
        (ts("2024-01-07"), ts("2024-01-08")),
        (ts("2024-01-25"), ts("2024-01-26")),
    ]
    assert time_windows(_inter(TIMES), "MS") == [(ts("2024-01-01"), ts("2024-02-01"))]
    assert time_windows(S.empty_interactions()) == []


def test_replay_windows_cover_every_interaction_once_in_time_order() -> None:
    rng = np.random.default_rng(3)
    times = (ts("2024-01-01") + pd.to_timedelta(rng.integers(0, 60 * 86400, 500), unit="s")).strftime("%Y-%m-%d %H:%M:%S").tolist()
    inter = _inter(times)
    inter = inter.assign(**{S.BASKET_ID: [f"r{i}" for i in range(len(inter))]})  # a row id
    parts = replay_windows(_dataset(inter), "W")
    seen = pd.concat([w for _, w in parts])
    assert sorted(seen[S.BASKET_ID]) == sorted(inter[S.BASKET_ID])  # each row exactly once
    assert seen[S.TIMESTAMP].is_monotonic_increasing
    for (start, end), w in parts:
        assert len(w) and ((w[S.TIMESTAMP] >= start) & (w[S.TIMESTAMP] < end)).all()
    assert [w for w, _ in parts] == time_windows(inter, "W")


# --- batches -------------------------------------------------------------------------------


def test_write_batch_writes_canonical_parquet_then_ready(paths) -> None:
    inter = _inter(TIMES)
    d = inbox_dir(paths, "tiny") / "0000_x"
    d.mkdir(parents=True)
    (d / "items.csv").write_text("stale")  # from an earlier producer: removed
    out = write_batch(paths, "tiny", "0000_x", _items(["I0", "I1"]), inter)
    assert out == d and sorted(p.name for p in d.iterdir()) == [READY, "interactions.parquet", "items.parquet"]
    back = pd.read_parquet(d / "interactions.parquet")
    assert list(back.columns) == list(S.INTERACTION_COLUMNS)
    pd.testing.assert_frame_equal(S.to_canonical_interactions(back), inter)
    assert list(pd.read_parquet(d / "items.parquet").columns) == list(S.ITEM_COLUMNS)
    assert (d / READY).stat().st_mtime_ns >= (d / "interactions.parquet").stat().st_mtime_ns
    write_batch(paths, "tiny", "0000_x", None, inter)  # rewritten without items
    assert sorted(p.name for p in d.iterdir()) == [READY, "interactions.parquet"]
    with pytest.raises(ValueError):
        write_batch(paths, "tiny", "../escape", None, inter)


def test_replay_writes_numbered_batches_with_the_items_they_reference(paths) -> None:
    inter = _inter(TIMES, items=["I0", "I1", "I0", "I2"])
    ds = _dataset(inter, _items(["I0", "I1", "I2", "I3"]))
    written = replay(paths, "tiny", ds, freq="W")
    assert [p.name for p in written] == ["0000_2023-12-31", "0001_2024-01-07", "0002_2024-01-21"]
    assert ready_batches(paths, "tiny") == written
    per_batch = [sorted(pd.read_parquet(p / "items.parquet")[S.ITEM_ID]) for p in written]
    assert per_batch == [["I0"], ["I1"], ["I2"]]  # I3 has no interactions: never sent
    assert [len(pd.read_parquet(p / "interactions.parquet")) for p in written] == [2, 1, 1]
    # dripping: later windows keep their numbers
    later = replay(paths, "tiny2", ds, freq="W", start=1, count=1)
    assert [p.name for p in later] == ["0001_2024-01-07"]
    assert replay(paths, "tiny3", ds, start=9) == []
    assert batch_id_for(7, ts("2024-01-01 06:00")) == "0007_2024-01-01T0600"


def test_replay_refuses_ids_that_would_be_hashed_twice(paths) -> None:
    p = Pseudonymizer(b"k" * 16)
    inter = _inter(TIMES[:2], users=[p.one("a"), p.one("b")])
    with pytest.raises(ValueError, match="hash them twice"):
        replay(paths, "tiny", _dataset(inter))
    assert len(replay(paths, "tiny", _dataset(inter), raw_user_ids=False)) == 2
    with pytest.raises(ValueError, match="not pseudonymized"):
        replay(paths, "tiny", _dataset(_inter(TIMES[:2])), raw_user_ids=False)


def test_shuffled_replay_keeps_sizes_and_windows_but_draws_rows_at_random() -> None:
    rng = np.random.default_rng(5)
    times = (ts("2024-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 40 * 86400, 300)), unit="s")).strftime("%Y-%m-%d %H:%M:%S")
    inter = _inter(times.tolist(), items=[f"I{i // 30}" for i in range(300)])  # item = time: a strong drift
    inter = inter.assign(**{S.BASKET_ID: [f"r{i}" for i in range(300)]})
    real = replay_windows(_dataset(inter), "W")
    shuf = replay_windows(_dataset(inter), "W", shuffle=True, seed=1)
    assert [w for w, _ in shuf] == [w for w, _ in real]
    assert [len(x) for _, x in shuf] == [len(x) for _, x in real]
    for (start, end), x in shuf:
        assert ((x[S.TIMESTAMP] >= start) & (x[S.TIMESTAMP] < end)).all()
    rows = pd.concat([x for _, x in shuf])
    assert sorted(rows[S.BASKET_ID]) == sorted(inter[S.BASKET_ID])  # without replacement
    assert sorted(rows[S.TIMESTAMP]) == sorted(inter[S.TIMESTAMP])  # the real time profile
    assert set(real[0][1][S.BASKET_ID]) != set(shuf[0][1][S.BASKET_ID])
    again = replay_windows(_dataset(inter), "W", shuffle=True, seed=1)
    assert all(a.equals(b) for (_, a), (_, b) in zip(shuf, again))  # seeded


def test_shuffled_replay_of_basket_data_draws_whole_baskets() -> None:
    """Lines drawn one by one scatter every basket over the year: the basket-size signal then alarms on
    every shuffled window. Drawn by basket, a window's baskets are whole (one per window edge may be cut)."""
    rng = np.random.default_rng(7)
    times = (ts("2024-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 40 * 86400, 60)), unit="s")).repeat(5)
    inter = _inter(times.strftime("%Y-%m-%d %H:%M:%S").tolist(), items=[f"I{i % 17}" for i in range(300)])
    inter = inter.assign(**{S.BASKET_ID: [f"b{i // 5}" for i in range(300)]})  # 60 baskets of 5 lines
    real = replay_windows(_dataset(inter), "W")
    shuf = replay_windows(_dataset(inter), "W", shuffle=True, seed=3)
    assert [len(x) for _, x in shuf] == [len(x) for _, x in real]
    sizes = [x.groupby(S.BASKET_ID).size() for _, x in shuf]
    cut = sum(int((s < 5).sum()) for s in sizes)
    assert cut <= 2 * (len(shuf) - 1)  # only the baskets that straddle a window edge
    assert sum(int((s == 5).sum()) for s in sizes) >= 60 - (len(shuf) - 1)
    assert [sorted(set(x[S.BASKET_ID])) for _, x in shuf] != [sorted(set(x[S.BASKET_ID])) for _, x in real]  # drawn, not kept in place
    rows = pd.concat([x for _, x in shuf])
    assert sorted(rows[S.BASKET_ID]) == sorted(inter[S.BASKET_ID])  # without replacement


# --- injected drift ------------------------------------------------------------------------

CATS = {"I0": "Drama > Old", "I1": "Drama", "I2": "Comedy", "I3": "Horror", "I4": "Rare", "I5": None}


def _drift_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    # 200 interactions: Drama 120 (I0 + I1), Comedy 50, Horror 20, Rare 1 (< 1%), no category 9
    items_of = ["I0"] * 60 + ["I1"] * 60 + ["I2"] * 50 + ["I3"] * 20 + ["I4"] + ["I5"] * 9
    times = (ts("2024-01-01") + pd.to_timedelta(np.arange(200), unit="min")).strftime("%Y-%m-%d %H:%M").tolist()
    inter = _inter(times, items=items_of)
    return _items(list(CATS), list(CATS.values())), inter


def test_category_shift_gives_the_rarest_sizable_category_the_exact_share() -> None:
    items, inter = _drift_frames()
    assert shift_target_category(inter, items) == "Horror"  # not Rare (0.5% < 1%), not Drama (the most common)
    new_items, shifted = inject(inter, items, "category_shift", 0.4, seed=0)
    assert len(shifted) == 200 and new_items.equals(items)
    assert (shifted[S.ITEM_ID] == "I3").sum() == 80  # Horror: 20 rows -> exactly 40%
    assert shifted[S.TIMESTAMP].is_monotonic_increasing
    assert shifted[S.ITEM_ID].isin(inter[S.ITEM_ID]).all()
    _, down = inject(inter, items, "category_shift", 0.05, seed=0)
    assert (down[S.ITEM_ID] == "I3").sum() == 10
    assert not inter.equals(shifted) and len(inter) == 200  # input untouched


def test_new_items_moves_the_exact_share_to_brand_new_titled_items() -> None:
    items, inter = _drift_frames()
    out_items, out = inject(inter, items, "new_items", 0.25, seed=7)
    new = out_items[~out_items[S.ITEM_ID].isin(items[S.ITEM_ID])]
    assert out[S.ITEM_ID].isin(new[S.ITEM_ID]).sum() == 50  # exactly 25% of 200
    assert len(out) == 200 and (out[S.TIMESTAMP] == inter[S.TIMESTAMP]).all()
    changed = out[S.ITEM_ID] != inter[S.ITEM_ID]
    assert changed.sum() == 50 and (out.loc[~changed, S.ITEM_ID] == inter.loc[~changed, S.ITEM_ID]).all()
    by_id = items.set_index(S.ITEM_ID)
    for old_id, new_id in zip(inter.loc[changed, S.ITEM_ID], out.loc[changed, S.ITEM_ID]):
        row = new.set_index(S.ITEM_ID).loc[new_id]
        assert new_id == f"{old_id}-new7" and row[S.TITLE] == by_id.loc[old_id, S.TITLE] + " (new edition)"
    assert new[S.ITEM_ID].is_unique and out_items[S.ITEM_ID].is_unique


def test_price_shift_and_synthetic_prices() -> None:
    items, inter = _drift_frames()
    with pytest.raises(ValueError, match="attach_synthetic_prices"):
        inject(inter, items, "price_shift", 0.1, seed=0)
    priced = attach_synthetic_prices(items, seed=0)
    assert priced[S.PRICE].notna().all() and (priced[S.PRICE] > 0).all()
    # deterministic, and an item's price does not depend on the other items in the frame
    assert priced.equals(attach_synthetic_prices(items, seed=0))
    assert attach_synthetic_prices(items.iloc[2:4], seed=0)[S.PRICE].tolist() == priced[S.PRICE].iloc[2:4].tolist()
    assert not priced[S.PRICE].equals(attach_synthetic_prices(items, seed=1)[S.PRICE])
    shifted, same = inject(inter, priced, "price_shift", 0.2, seed=0)
    assert np.allclose(shifted[S.PRICE].to_numpy(float), priced[S.PRICE].to_numpy(float) * 1.2) and same.equals(inter)
    many = attach_synthetic_prices(_items([f"M{i}" for i in range(4000)]))[S.PRICE].to_numpy(float)
    assert 18 < np.median(many) < 22 and 0.7 < np.std(np.log(many)) < 0.9  # lognormal(log 20, 0.8)
    with pytest.raises(ValueError, match="unknown drift kind"):
        inject(inter, items, "nope", 0.1, seed=0)


# --- sources: packaged, files, warehouse ---------------------------------------------------


def test_replay_source_syntax() -> None:
    assert ReplaySource.parse("movielens-100k") == ReplaySource("packaged", name="movielens-100k")
    assert ReplaySource.parse("warehouse: shop-a ") == ReplaySource("warehouse", name="shop-a")
    src = ReplaySource.parse("files:/d/items.csv, /d/inter.parquet")
    assert (src.kind, src.items_path, src.interactions_path) == ("files", Path("/d/items.csv"), Path("/d/inter.parquet"))
    assert str(src) == "files:/d/items.csv,/d/inter.parquet" and not src.pseudonymized
    assert ReplaySource.parse("warehouse:shop-a").pseudonymized
    for bad, why in (("no-such-set", "unknown replay source"), ("warehouse:", "name the warehouse"), ("files:only-one.csv", "two paths")):
        with pytest.raises(ValueError, match=why):
            ReplaySource.parse(bad)


def _shop_files(tmp_path: Path) -> tuple[Path, Path]:
    """A shop's own CSV files: raw user ids, string timestamps, three calendar weeks."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,category\nA1,Red mug,Home > Kitchen\nB2,Blue plate,Home > Kitchen\nC3,Lamp,Home > Light\n")
    inter = tmp_path / "interactions.csv"
    inter.write_text(
        "user_id,item_id,event,timestamp\n"
        "alice,A1,purchase,2024-01-01T10:00:00Z\nbob,B2,view,2024-01-02T10:00:00Z\n"
        "alice,C3,view,2024-01-09T10:00:00Z\ncarol,A1,purchase,2024-01-17T10:00:00Z\n"
    )
    return items, inter


def test_replay_from_a_shops_files_writes_raw_ids_for_ingestion(paths, tmp_path) -> None:
    items, inter = _shop_files(tmp_path)
    written = replay_source(paths, f"files:{items},{inter}", "shop-replay", freq="W")
    assert [p.name for p in written] == ["0000_2023-12-31", "0001_2024-01-07", "0002_2024-01-14"]
    first = pd.read_parquet(written[0] / "interactions.parquet")
    assert sorted(first[S.USER_ID]) == ["alice", "bob"]  # raw: ingestion hashes them once
    assert sorted(pd.read_parquet(written[1] / "items.parquet")[S.ITEM_ID]) == ["C3"]
    with pytest.raises(DataValidationError):
        replay_source(paths, f"files:{items},{tmp_path / 'missing.csv'}", "shop-replay")


def test_replay_from_the_warehouse_rehashes_ids_into_another_data_set(paths, tmp_path) -> None:
    from recsys.data import warehouse
    from recsys.data.ingest import ingest_inbox

    key = Pseudonymizer(b"test-pseudonym-key-not-a-secret")
    items, inter = _shop_files(tmp_path)
    paths.home.mkdir(parents=True, exist_ok=True)
    engine = warehouse.make_engine(paths.warehouse_url)
    stored = load_replay_source(paths, f"files:{items},{inter}")
    stored = S.Dataset("shop", stored.items, stored.interactions.assign(**{S.USER_ID: key.series(stored.interactions[S.USER_ID])}), True, True, "t")
    warehouse.upsert_dataset(engine, stored)

    with pytest.raises(ValueError, match="into itself"):
        replay_source(paths, "warehouse:shop", "shop", warehouse_url=paths.warehouse_url)
    with pytest.raises(ValueError, match="no interactions for 'nothing'"):
        replay_source(paths, "warehouse:nothing", "x", warehouse_url=paths.warehouse_url)
    written = replay_source(paths, "warehouse:shop", "shop-replay", freq="W", count=2, warehouse_url=paths.warehouse_url)
    assert len(written) == 2
    sent = pd.concat([pd.read_parquet(p / "interactions.parquet") for p in written])
    assert sent[S.USER_ID].str.fullmatch(r"u_[0-9a-f]{20}").all()  # the warehouse's pseudonyms, as stored
    # the normal ingestion hashes them once more: one consistent new id per person
    result = ingest_inbox(paths, "shop-replay", engine, key)
    assert [b.accepted for b in result.accepted] == [True, True] and not result.rejected
    _, replayed = warehouse.read_dataset(engine, "shop-replay")
    alice = key.one(key.one("alice"))
    assert (replayed[S.USER_ID] == alice).sum() == 2 and replayed[S.USER_ID].nunique() == 2
    engine.dispose()


def test_cli_replay_takes_files_and_refuses_an_unknown_source(tmp_path, capsys) -> None:
    from recsys import cli

    items, inter = _shop_files(tmp_path)
    assert cli.main(["replay", "--source", f"files:{items},{inter}", "--as", "cli-shop", "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 batch(es) of files:" in out and "0000_2023-12-31" in out
    assert cli.main(["replay", "--source", "nowhere", "--as", "cli-shop"]) == 2
    assert "unknown replay source 'nowhere'" in capsys.readouterr().err


# --- the real data -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def movielens(wheel_cache: Path, tmp_path_factory) -> tuple[S.Dataset, int]:
    home = tmp_path_factory.mktemp("ml-home")
    (home / "cache").symlink_to(wheel_cache, target_is_directory=True)
    raw = load_raw_source(ProjectPaths(home=home), "movielens-100k")
    return raw, len(raw.interactions)


@pytest.mark.network
def test_weekly_replay_of_movielens(paths, movielens) -> None:
    raw, n_loaded = movielens
    assert n_loaded == 100_000 and raw.interactions[S.USER_ID].isin([str(u) for u in range(1, 944)]).all()  # raw ids
    written = replay(paths, "ml", raw, freq="W")
    sizes = [len(pd.read_parquet(p / "interactions.parquet")) for p in written]
    print(f"movielens-100k weekly: {len(sizes)} batches, sizes min {min(sizes)} median {np.median(sizes)} max {max(sizes)}")
    assert len(written) == len(time_windows(raw.interactions, "W")) == 32
    assert sum(sizes) == n_loaded
    assert [p.name[:4] for p in written] == [f"{i:04d}" for i in range(32)] and written[0].name == "0000_1997-09-14"
    # every item shows up with its first interactions, and each batch carries what it references
    seen: set[str] = set()
    for p in written:
        items = set(pd.read_parquet(p / "items.parquet")[S.ITEM_ID])
        assert items == set(pd.read_parquet(p / "interactions.parquet")[S.ITEM_ID])
        seen |= items
    assert seen == set(raw.interactions[S.ITEM_ID])

    shuffled = replay_windows(raw, "W", shuffle=True, seed=0)
    assert [len(w) for _, w in shuffled] == sizes
    for (start, end), w in shuffled:
        assert ((w[S.TIMESTAMP] >= start) & (w[S.TIMESTAMP] < end)).all()


def test_the_cli_in_process_leaves_logging_and_warnings_as_it_found_them(tmp_path, caplog) -> None:
    """`main` silences library logs for its command only: called in-process (a test, a notebook), it must not
    swallow every later warning of that process."""
    import logging
    import warnings

    from recsys import cli

    filters = list(warnings.filters)
    assert cli.main(["replay", "--source", "nowhere", "--as", "cli-shop"]) == 2
    assert logging.root.manager.disable == logging.NOTSET and warnings.filters == filters
    logging.getLogger("recsys.after_the_cli").warning("still heard")
    assert "still heard" in caplog.text
