"""The warehouse load and the published-recommendations swap against a REAL PostgreSQL server.

One local PostgreSQL 15 server per test module (`deploy.postgres_local.LocalPostgres`, started from
the installed binaries; as root it runs as the `postgres` OS user), a fresh database per test.
Skipped, with the reason, only when the PostgreSQL server binaries are not installed. The data are
the tiny hand-built ones of tests/test_warehouse.py and tests/test_publish.py, with exact expected
values; what SQLite cannot show is checked here: readers on other connections during a swap, two
concurrent publishes of one name, a session time zone other than UTC, a non-C collation, PostgreSQL's
VARCHAR limits, duplicate keys inside one multi-row upsert, and concurrent loads (of two data sets side
by side; of one data set in turns) and table creations.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, func, select, text

pytest.importorskip("psycopg2", reason="psycopg2 (the PostgreSQL driver) is not installed")
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:  # `deploy` is not an installed package: import it from the checkout
    sys.path.insert(0, _REPO)

from deploy.postgres_local import LocalPostgres, PostgresError, find_bindir, free_port, temp_data_dir  # noqa: E402
from recsys.stages import publish  # noqa: E402
from recsys.data import schema as S  # noqa: E402
from recsys.stages.publish import published_table, published_version, publish_recommendations, read_published  # noqa: E402
from recsys.serving import ItemRecommender  # noqa: E402
from recsys.data.warehouse import (  # noqa: E402
    interaction_keys,
    interactions_table,
    items_table,
    make_engine,
    read_dataset,
    table_counts,
    upsert_dataset,
    upsert_frames,
)
from published_rows import published_rows
# the tiny hand-built data of the SQLite tests (tests/ is on sys.path: pytest's default import mode)
from test_publish import EXPECTED_TOP3, IDS, W, _publish, _write_model, publish_concurrently  # noqa: E402
from test_warehouse import _dataset, _interactions, _items, _many_interactions  # noqa: E402

try:
    find_bindir()
    _NO_SERVER = None
except PostgresError as e:
    _NO_SERVER = str(e)
pytestmark = pytest.mark.skipif(_NO_SERVER is not None, reason=f"no PostgreSQL server binaries: {_NO_SERVER}")


# -- the server, a database per test ----------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[LocalPostgres]:
    data_dir = temp_data_dir("recsys-test-pg-")
    server = LocalPostgres(data_dir, free_port(), durable=False).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
def url(pg: LocalPostgres) -> str:
    return pg.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def engine(url: str):
    eng = make_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory) -> ItemRecommender:
    return _write_model(tmp_path_factory.mktemp("pg_publish") / "model", W, behaviour=True)


def _count(url: str, table, **where) -> int:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            stmt = select(func.count()).select_from(table)
            for col, value in where.items():
                stmt = stmt.where(table.c[col] == value)
            return int(conn.execute(stmt).scalar_one())
    finally:
        eng.dispose()


# -- the local server itself --------------------------------------------------------------------


def test_local_server_is_idempotent_and_password_protected(pg: LocalPostgres):
    assert pg.running()
    assert pg.start() is pg  # already running: a no-op
    url = pg.create_database("idem")
    assert pg.create_database("idem") == url == f"postgresql+psycopg2://recsys:recsys@127.0.0.1:{pg.port}/idem"
    eng = create_engine(url)
    with eng.connect() as conn:
        assert conn.execute(text("select current_user, current_database()")).one() == ("recsys", "idem")
        owner = conn.execute(text("select pg_get_userbyid(datdba) from pg_database where datname = 'idem'")).scalar_one()
        assert owner == "recsys"
        assert conn.execute(text("show server_version_num")).scalar_one().startswith("15")
        assert conn.execute(text("show fsync")).scalar_one() == "off"  # durable=False: a throwaway server
        assert conn.execute(text("show listen_addresses")).scalar_one() == "127.0.0.1"
    eng.dispose()
    wrong = create_engine(url.replace("recsys:recsys@", "recsys:wrong@"))
    with pytest.raises(Exception, match="password authentication failed"):
        wrong.connect()
    wrong.dispose()


def test_start_failure_names_the_cause_with_the_server_log(tmp_path_factory):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        data_dir = temp_data_dir("recsys-test-pg-busy-")
        try:
            with pytest.raises(PostgresError, match=r"(?s)failed to start.*server log tail.*(could not bind|Address already in use)"):
                LocalPostgres(data_dir, taken.getsockname()[1]).start(timeout=15)
        finally:
            LocalPostgres(data_dir, 1).stop()
            shutil.rmtree(data_dir.parent, ignore_errors=True)


# -- the warehouse ------------------------------------------------------------------------------


def test_upsert_twice_is_idempotent(engine, url):
    first = upsert_dataset(engine, _dataset())
    items1, inter1 = read_dataset(engine, "shop")
    second = upsert_dataset(engine, _dataset())
    items2, inter2 = read_dataset(engine, "shop")
    assert first == second == {"items": 3, "interactions": 4}  # the two identical purchases stay two rows
    pd.testing.assert_frame_equal(items1, items2)
    pd.testing.assert_frame_equal(inter1, inter2)
    # the server really holds just those rows, counted on another connection
    assert _count(url, items_table) == 3
    assert _count(url, interactions_table) == 4


def test_read_dataset_round_trips_exactly(engine):
    upsert_dataset(engine, _dataset())
    items, inter = read_dataset(engine, "shop")
    assert dict(items.dtypes.astype(str)) == {c: str(pd.Series(dtype=t).dtype) for c, t in S.ITEM_DTYPES.items()}
    assert dict(inter.dtypes.astype(str)) == {c: str(pd.Series(dtype=t).dtype) for c, t in S.INTERACTION_DTYPES.items()}
    pd.testing.assert_frame_equal(items.reset_index(drop=True), _items().reset_index(drop=True))
    cols = list(S.INTERACTION_COLUMNS)
    got = inter.sort_values([S.ITEM_ID, S.USER_ID, S.TIMESTAMP]).reset_index(drop=True)
    want = _interactions().sort_values([S.ITEM_ID, S.USER_ID, S.TIMESTAMP]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[cols], want[cols])
    # and what was read back, loaded again, is the same rows
    assert upsert_dataset(engine, _dataset(items=items, interactions=inter)) == {"items": 3, "interactions": 4}


def test_an_updated_row_is_updated_in_place(engine):
    upsert_dataset(engine, _dataset())
    renamed = _items()
    renamed.loc[renamed[S.ITEM_ID] == "a", S.TITLE] = "Crimson mug"
    renamed.loc[renamed[S.ITEM_ID] == "b", S.PRICE] = 9.25
    assert upsert_dataset(engine, _dataset(items=renamed)) == {"items": 3, "interactions": 4}
    items, _ = read_dataset(engine, "shop")
    by_id = items.set_index(S.ITEM_ID)
    assert by_id.loc["a", S.TITLE] == "Crimson mug" and by_id.loc["a", S.DESCRIPTION] == "A mug" and by_id.loc["a", S.PRICE] == 3.5
    assert by_id.loc["b", S.PRICE] == 9.25
    assert by_id.loc["c", S.TITLE] is pd.NA


def test_timestamps_round_trip_whatever_the_session_time_zone(pg, url):
    # a server / session in another zone (DST!) hands back offsets other than +00:00
    eng = make_engine(url)
    upsert_dataset(eng, _dataset())
    eng.dispose()
    ny = create_engine(url, connect_args={"options": "-c timezone=America/New_York"})
    with ny.connect() as conn:
        assert conn.execute(text("show timezone")).scalar_one() == "America/New_York"
    _, inter = read_dataset(ny, "shop")
    ny.dispose()
    assert str(inter[S.TIMESTAMP].dt.tz) == "UTC"
    assert sorted(inter[S.TIMESTAMP].dropna().tolist()) == [
        pd.Timestamp("2024-03-01 12:30:00", tz="UTC"),
        pd.Timestamp("2024-03-01 13:30:00", tz="UTC"),
        pd.Timestamp("2024-03-01 13:30:00", tz="UTC"),
    ]
    assert inter[S.TIMESTAMP].isna().sum() == 1


def test_read_order_does_not_depend_on_the_database_collation(pg, url):
    # the official postgres image initialises en_US.utf8: ICU en-US orders "a" < "B" and "-" first,
    # SQLite (and the C collation) orders by code point; read_dataset must give one order everywhere
    icu_db = f"icu_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {icu_db} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"))
    admin.dispose()
    items = S.to_canonical_items(pd.DataFrame({S.ITEM_ID: ["a1", "B", "a-2", "a", "Z"], S.TITLE: ["t1", "t2", "t3", "t4", "t5"]}))
    inter = S.to_canonical_interactions(pd.DataFrame({S.USER_ID: ["u"], S.ITEM_ID: ["a"], S.EVENT: ["view"]}))
    eng = make_engine(pg.url(icu_db))
    with eng.connect() as conn:  # the collation really differs from code-point order
        assert conn.execute(text("select array_agg(x order by x) from (values ('a'), ('B')) v(x)")).scalar_one() == ["a", "B"]
    upsert_dataset(eng, _dataset(items=items, interactions=inter))
    got, _ = read_dataset(eng, "shop")
    eng.dispose()
    assert got[S.ITEM_ID].tolist() == sorted(["a1", "B", "a-2", "a", "Z"]) == ["B", "Z", "a", "a-2", "a1"]


def test_duplicate_item_ids_in_one_load_keep_the_last_like_sqlite(engine):
    # one multi-row INSERT .. ON CONFLICT may not touch a row twice on PostgreSQL; the load keeps
    # the last definition, as SQLite's row-by-row upsert does
    items = pd.concat([_items(), _items().iloc[[0]].assign(**{S.TITLE: "Later mug"})], ignore_index=True)
    assert upsert_dataset(engine, _dataset(items=S.to_canonical_items(items))) == {"items": 3, "interactions": 4}
    got, _ = read_dataset(engine, "shop")
    assert got.set_index(S.ITEM_ID).loc["a", S.TITLE] == "Later mug"


def test_an_id_longer_than_its_column_is_a_clear_error_and_loads_nothing(engine):
    long_id = "x" * 129  # items.item_id is VARCHAR(128): PostgreSQL enforces it, SQLite would not
    items = S.to_canonical_items(pd.DataFrame({S.ITEM_ID: ["a", long_id]}))
    with pytest.raises(ValueError, match=r"item_id.*128"):
        upsert_dataset(engine, _dataset(items=items))
    assert table_counts(engine, "shop") == {"items": 0, "interactions": 0}


def test_a_large_load_in_several_statements(engine, monkeypatch):
    # more rows than one statement carries (and than PostgreSQL's 65535 bind parameters allow)
    from recsys.data import warehouse

    monkeypatch.setattr(warehouse, "_CHUNK", 4_000)
    n = 9_000
    items = S.to_canonical_items(pd.DataFrame({S.ITEM_ID: [f"i{j:05d}" for j in range(n)], S.PRICE: [float(j) for j in range(n)]}))
    inter = S.to_canonical_interactions(
        pd.DataFrame({S.USER_ID: [f"u{j % 97}" for j in range(n)], S.ITEM_ID: [f"i{j:05d}" for j in range(n)], S.EVENT: ["purchase"] * n})
    )
    assert upsert_dataset(engine, _dataset(items=items, interactions=inter)) == {"items": n, "interactions": n}
    assert upsert_dataset(engine, _dataset(items=items, interactions=inter)) == {"items": n, "interactions": n}
    got, _ = read_dataset(engine, "shop")
    assert got[S.PRICE].sum() == sum(range(n))


def test_concurrent_loads_of_two_data_sets_run_side_by_side_and_both_land(url):
    # load A holds its transaction open (items and its first chunk written) while load B of another
    # data set runs start to finish: nothing serialises them, and both commit whole
    north = _many_interactions(3_000, seed=3)
    south = _many_interactions(2_000, seed=4)
    b_done = threading.Event()
    a_waited: list[bool] = []
    errors: list[BaseException] = []

    def slow_chunks():
        yield north.iloc[:1_500]
        a_waited.append(b_done.wait(30))  # True only if B committed while A was still open
        yield north.iloc[1_500:]

    def load_a() -> None:
        eng = make_engine(url)
        try:
            upsert_frames(eng, "north", _items(), slow_chunks())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            eng.dispose()

    th = threading.Thread(target=load_a)
    th.start()
    eng = make_engine(url)
    try:
        assert upsert_dataset(eng, _dataset("south", interactions=south)) == {"items": 3, "interactions": 2_000}
        b_done.set()
        th.join(60)
        assert not errors, errors
        assert a_waited == [True]
        assert table_counts(eng, "north") == {"items": 3, "interactions": 3_000}
        assert table_counts(eng, "south") == {"items": 3, "interactions": 2_000}
    finally:
        b_done.set()
        eng.dispose()


def test_concurrent_loads_of_one_data_set_take_turns_and_both_land(url, caplog):
    # chunks cannot be locked in one global key order, so loads of ONE data set take turns on an
    # advisory lock (no deadlock, no failure); the second adds only its new rows
    first = _many_interactions(2_000, seed=5)
    second = pd.concat([first.iloc[:1_000], _many_interactions(500, seed=6, users=10_000)], ignore_index=True)
    release = threading.Event()
    errors: list[BaseException] = []

    def held_chunks():
        yield first.iloc[:1_000]
        release.wait(30)
        yield first.iloc[1_000:]

    def load(chunks) -> None:
        eng = make_engine(url)
        try:
            upsert_frames(eng, "shop", _items(), chunks)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            eng.dispose()

    a = threading.Thread(target=load, args=(held_chunks(),))
    b = threading.Thread(target=load, args=([second],))
    with caplog.at_level(logging.INFO, logger="recsys.data.warehouse"):
        a.start()
        time.sleep(0.5)  # A holds the data set's lock
        b.start()
        time.sleep(1.0)
        assert b.is_alive()  # B waits for A's commit
        release.set()
        a.join(60)
        b.join(60)
    assert not errors, errors
    assert "waiting for the load lock of data set 'shop'" in caplog.text
    expected = set(interaction_keys(first)) | set(interaction_keys(second))
    assert 2_000 < len(expected) <= 2_500  # the first 1000 rows of `second` are rows of `first`
    eng = make_engine(url)
    assert table_counts(eng, "shop") == {"items": 3, "interactions": len(expected)}
    eng.dispose()


def test_tables_are_created_once_when_processes_start_at_once(pg):
    # concurrent CREATE TABLEs of one name would fail on PostgreSQL's catalog: they take turns
    url = pg.create_database(f"t_{uuid.uuid4().hex[:12]}")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            make_engine(url).dispose()
            published_version(url, "recs")  # the published table, too
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert _count(url, items_table) == 0 and _count(url, published_table) == 0


# -- the published-recommendations swap ---------------------------------------------------------


def test_publish_v1_then_v2_holds_only_v2(url, hybrid):
    r1 = _publish(url, hybrid, "1", chunk_size=4)  # two chunks, the second one short
    rows1 = published_rows(url, "recs")
    related = rows1[rows1["kind"] == "related"]
    assert {a: g.sort_values("rank")["recommended_item_id"].tolist() for a, g in related.groupby("item_id")} == EXPECTED_TOP3
    assert len(rows1) == r1.rows
    publish_recommendations(url, hybrid, "other", "7", k=1, progress=False)
    other_before = published_rows(url, "other")
    n_bundle = int((rows1["kind"] == "bundle").sum())
    r2 = _publish(url, hybrid, "2", k=2, chunk_size=2)
    rows2 = published_rows(url, "recs")
    assert set(rows2["model_version"]) == {"2"}
    assert (rows2["kind"] == "related").sum() == 6 * 2
    assert (rows2["kind"] == "bundle").sum() == n_bundle
    assert len(rows2) == r2.rows == 12 + n_bundle
    assert published_version(url, "recs") == "2"
    pd.testing.assert_frame_equal(published_rows(url, "other"), other_before)
    # the served lists and reasons are what was published
    for item in IDS:
        served = hybrid.predict(None, pd.DataFrame({"item_id": [item]}), params={"k": 2})
        got = read_published(url, "recs", item)
        assert got["recommended_item_id"].tolist() == served["item_id"].tolist()
        assert got["reasons"].tolist() == served["reasons"].tolist()
        assert str(got["published_at"].dt.tz) == "UTC"


def test_sharded_publish_on_postgres_swaps_in_the_one_process_rows(url, pg, hybrid):
    """Two shards staged from two threads (two workers), then the swap: the rows of a one-process publish."""
    other = pg.create_database(f"t_{uuid.uuid4().hex[:12]}")
    _publish(other, hybrid, "2")
    expected = published_rows(other)
    _publish(url, hybrid, "1")
    errors: list[BaseException] = []

    def shard(i: int, start: int, stop: int) -> None:
        try:
            publish.publish_shard(url, hybrid, "recs", "2", "pg-p1", i, start, stop, k=3, chunk_size=2, progress=False)
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=shard, args=args) for args in ((0, 0, 3), (1, 3, 6))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert published_version(url, "recs") == "1"  # staged, not yet visible
    result = publish.finish_publish(url, "recs", "2", "pg-p1", n_items=6, n_shards=2)
    pd.testing.assert_frame_equal(published_rows(url), expected)
    assert result.rows == len(expected) and _count(url, publish.staging_table) == 0 and _count(url, publish.shards_table) == 0


def test_a_failure_part_way_through_v2_leaves_exactly_v1(url, hybrid, monkeypatch):
    _publish(url, hybrid, "1")
    before = published_rows(url)
    real = publish._chunk_scores
    calls = {"n": 0, "seen_by_reader": None}

    def flaky(recommender, idx):
        calls["n"] += 1
        if calls["n"] == 3:
            # chunks 1 and 2 are inserted and v1 deleted, all uncommitted: another connection sees v1
            calls["seen_by_reader"] = published_rows(url)
            raise RuntimeError("scoring failed on chunk 3")
        return real(recommender, idx)

    monkeypatch.setattr(publish, "_chunk_scores", flaky)
    with pytest.raises(RuntimeError, match="chunk 3"):
        _publish(url, hybrid, "2", chunk_size=2)
    assert calls["n"] == 3
    pd.testing.assert_frame_equal(calls["seen_by_reader"], before)
    pd.testing.assert_frame_equal(published_rows(url), before)
    assert published_version(url, "recs") == "1"


def test_concurrent_readers_see_the_old_or_the_new_version_never_a_mix(url, hybrid, monkeypatch):
    _publish(url, hybrid, "1")
    n1 = len(published_rows(url, "recs"))
    real = publish._chunk_scores

    def slow(recommender, idx):
        time.sleep(0.05)  # keep the swap open while the reader polls
        return real(recommender, idx)

    monkeypatch.setattr(publish, "_chunk_scores", slow)
    seen: list[tuple[tuple[str, int], ...]] = []
    done = threading.Event()
    reader_engine = create_engine(url)

    def reader() -> None:
        t = published_table
        stmt = select(t.c.model_version, func.count()).where(t.c.model_name == "recs").group_by(t.c.model_version).order_by(t.c.model_version)
        with reader_engine.connect() as conn:
            while True:
                final = done.is_set()  # set only after the publish committed: this read must see version 2
                seen.append(tuple(tuple(r) for r in conn.execute(stmt).all()))
                conn.commit()  # a fresh snapshot per read (READ COMMITTED autobegin)
                if final:
                    break

    th = threading.Thread(target=reader)
    th.start()
    try:
        res = _publish(url, hybrid, "2", k=2, chunk_size=1)
    finally:
        done.set()
        th.join(30)
        reader_engine.dispose()
    assert not th.is_alive()
    states = set(seen)
    assert states <= {(("1", n1),), (("2", res.rows),)}, states
    assert (("1", n1),) in states and seen[-1] == (("2", res.rows),)


def test_two_concurrent_publishes_of_one_name_serialise(url, hybrid, monkeypatch):
    _publish(url, hybrid, "1")
    results, errors = publish_concurrently(url, hybrid, monkeypatch, delay=0.02)
    assert not errors, errors
    # whichever committed last holds the table, whole: one version, its exact row count
    final = published_version(url, "recs")
    assert final in {"2", "3"}
    assert len(published_rows(url, "recs")) == results[final].rows


def test_publish_checks_lengths_before_touching_the_old_rows(url, hybrid):
    _publish(url, hybrid, "1")
    before = published_rows(url)
    with pytest.raises(ValueError, match=r"model_version.*64"):
        _publish(url, hybrid, "v" * 65)
    pd.testing.assert_frame_equal(published_rows(url), before)
