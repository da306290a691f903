"""Tests of recsys.data.ingest: inbox batches through the real GX gate into a real SQLite warehouse."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from recsys.data import schema as S
from recsys.errors import DataValidationError
from recsys.data.ingest import DONE, ERROR_JSON, READY, REJECTED, error_document, ingest_inbox, inbox_dir, ready_batches
from recsys.paths import ProjectPaths
from recsys.data.privacy import Pseudonymizer
from recsys.data.warehouse import make_engine, read_dataset, table_counts, upsert_dataset

DATASET = "shop"
ITEMS = "item_id,title,price\nA1,Red mug,3.5\nB2,Blue plate,4\n"
INTER = "user_id,item_id,event,timestamp\nalice,A1,purchase,2024-01-01\nbob,B2,view,2024-01-02\n"


@pytest.fixture
def paths(tmp_path: Path) -> ProjectPaths:
    return ProjectPaths(home=tmp_path / "home")


@pytest.fixture
def pseudo() -> Pseudonymizer:
    return Pseudonymizer(b"test-pseudonym-key-not-a-secret")


@pytest.fixture
def engine(paths: ProjectPaths):
    paths.home.mkdir(parents=True, exist_ok=True)
    return make_engine(paths.warehouse_url)


def _batch(paths: ProjectPaths, batch_id: str, inter: str, items: str | None = None, ready: bool = True, **extra: str) -> Path:
    d = inbox_dir(paths, DATASET) / batch_id
    d.mkdir(parents=True, exist_ok=True)
    if items is not None:
        (d / "items.csv").write_text(items)
    (d / "interactions.csv").write_text(inter)
    for name, text in extra.items():
        (d / name).write_text(text)
    if ready:
        (d / READY).touch()
    return d


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_good_batch_is_upserted_moved_to_done_and_reingested_idempotently(paths, pseudo, engine) -> None:
    batch = _batch(paths, "0001", INTER, ITEMS, note="first")
    digests = {p.name: _sha(p) for p in batch.glob("*.csv")}

    result = ingest_inbox(paths, DATASET, engine, pseudo)

    assert [b.batch_id for b in result.accepted] == ["0001"] and result.rejected == []
    b = result.accepted[0]
    assert (b.items, b.interactions) == (2, 2)
    assert b.time_range == ("2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00")
    assert result.counts_before == {"items": 0, "interactions": 0}
    assert result.counts == table_counts(engine, DATASET) == {"items": 2, "interactions": 2}
    assert result.rows_upserted == {"items": 2, "interactions": 2}
    done = inbox_dir(paths, DATASET) / DONE / "0001"
    assert not batch.exists() and done.is_dir() and b.path == str(done)
    assert (done / "validation" / "validation.json").is_file() and b.report_dir == str(done / "validation")
    assert (done / "validation" / "data_docs" / "index.html").is_file()
    # raw copies kept, byte for byte
    assert sorted(Path(p).name for p in b.raw_copies) == ["interactions.csv", "items.csv"]
    assert all(_sha(Path(p)) == digests[Path(p).name] for p in b.raw_copies)
    # user ids pseudonymized at read, exactly once
    items, inter = read_dataset(engine, DATASET)
    assert sorted(inter[S.USER_ID]) == sorted([pseudo.one("alice"), pseudo.one("bob")])
    assert set(items[S.ITEM_ID]) == {"A1", "B2"} and items.set_index(S.ITEM_ID).loc["A1", S.PRICE] == 3.5
    json.dumps(result.to_dict())  # JSON-able

    # the same batch again (a producer retry): upserted again, no new rows, .done copy replaced
    _batch(paths, "0001", INTER, ITEMS, note="second")
    again = ingest_inbox(paths, DATASET, paths.warehouse_url, pseudo)
    assert [b.batch_id for b in again.accepted] == ["0001"]
    assert again.counts == again.counts_before == {"items": 2, "interactions": 2}
    assert (done / "note").read_text() == "second"
    assert [p.name for p in (inbox_dir(paths, DATASET) / DONE).iterdir()] == ["0001"]


def test_batch_without_ready_is_ignored_until_ready(paths, pseudo, engine) -> None:
    batch = _batch(paths, "0001", INTER, ITEMS, ready=False)
    assert ready_batches(paths, DATASET) == []
    result = ingest_inbox(paths, DATASET, engine, pseudo)
    assert result.accepted == result.rejected == [] and batch.is_dir()
    assert table_counts(engine, DATASET) == {"items": 0, "interactions": 0}
    assert not paths.raw.exists()  # not even copied: it may be half-written

    (batch / READY).touch()
    assert ready_batches(paths, DATASET) == [batch]
    assert [b.batch_id for b in ingest_inbox(paths, DATASET, engine, pseudo).accepted] == ["0001"]


BAD = {
    # batch id: (items csv, interactions csv, table, rule, rows)
    "0002_dup_items": (
        "item_id,title\nN1,New lamp\nN1,New chair\nN2,New desk\n",
        "user_id,item_id,event,timestamp\ncarol,N2,purchase,2024-02-01\n",
        "items", "item_id is unique", [1, 2],
    ),
    "0003_unknown_item": (
        "item_id,title\nN3,New rug\n",
        "user_id,item_id,event,timestamp\ncarol,N3,view,2024-02-02\ncarol,Z9,view,2024-02-02\n",
        "interactions", "item_id exists in the items table", [2],
    ),
    "0004_bad_timestamp": (
        None,
        "user_id,item_id,event,timestamp\ncarol,A1,view,2024-02-03\ncarol,B2,view,next tuesday\n",
        "interactions", "timestamp holds date-times", [2],
    ),
}  # fmt: skip


def test_bad_batches_are_rejected_whole_and_good_ones_after_them_still_load(paths, pseudo, engine) -> None:
    _batch(paths, "0001", INTER, ITEMS)
    assert len(ingest_inbox(paths, DATASET, engine, pseudo).accepted) == 1
    for batch_id, (items, inter, *_) in BAD.items():
        _batch(paths, batch_id, inter, items)
    # a good batch after the bad ones: references a warehouse item (A1) and one of its own (N9)
    _batch(paths, "0005_good", "user_id,item_id,event,timestamp\ndave,A1,cart,2024-02-04\ndave,N9,view,2024-02-05\n", "item_id,title\nN9,New vase\n")

    result = ingest_inbox(paths, DATASET, engine, pseudo)

    assert [b.batch_id for b in result.rejected] == list(BAD)
    assert [b.batch_id for b in result.accepted] == ["0005_good"]
    # nothing of a rejected batch reached the warehouse: only batch 0001 and the good one
    assert result.counts_before == {"items": 2, "interactions": 2}
    assert result.counts == {"items": 3, "interactions": 4}
    items, inter = read_dataset(engine, DATASET)
    assert set(items[S.ITEM_ID]) == {"A1", "B2", "N9"}
    assert pseudo.one("carol") not in set(inter[S.USER_ID])
    root = inbox_dir(paths, DATASET)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == []
    for b in result.rejected:
        _, _, table, rule, rows = BAD[b.batch_id]
        folder = root / REJECTED / b.batch_id
        assert b.path == str(folder) and not b.accepted and b.time_range == (None, None)
        doc = json.loads((folder / ERROR_JSON).read_text())
        assert (doc["batch_id"], doc["table"], doc["rule"], doc["rows"]) == (b.batch_id, table, rule, rows)
        assert b.batch_id in b.error and f"table '{table}'" in b.error and rule in b.error
        assert "carol" not in b.error and "carol" not in (folder / ERROR_JSON).read_text()  # no raw user id
        assert str(folder) in doc["message"]  # paths point at where the batch is now
        assert (folder / "validation" / "validation.json").is_file()
        kept = [Path(p) for p in b.raw_copies]
        assert kept and all(p.is_file() and p.is_relative_to(paths.raw) for p in kept)


def test_a_fixed_batch_replaces_its_rejected_copy(paths, pseudo, engine) -> None:
    _batch(paths, "0001", INTER.replace("B2", "Z9"), ITEMS)
    assert [b.batch_id for b in ingest_inbox(paths, DATASET, engine, pseudo).rejected] == ["0001"]
    _batch(paths, "0001", INTER, ITEMS)
    assert [b.batch_id for b in ingest_inbox(paths, DATASET, engine, pseudo).accepted] == ["0001"]
    assert not (inbox_dir(paths, DATASET) / REJECTED / "0001").exists()


def test_unusable_batch_layouts_are_rejected_before_the_gate(paths, pseudo, engine) -> None:
    _batch(paths, "0001", INTER, ITEMS, **{"interactions.parquet": "not parquet"})  # two interactions files
    d = inbox_dir(paths, DATASET) / "0002"
    d.mkdir(parents=True)
    (d / "items.csv").write_text(ITEMS)
    (d / READY).touch()  # no interactions file
    _batch(paths, "0003", "", ITEMS)  # empty interactions file

    result = ingest_inbox(paths, DATASET, engine, pseudo, max_batches=2)
    assert [b.batch_id for b in result.rejected] == ["0001", "0002"]
    assert "several interactions files" in result.rejected[0].error
    assert "no interactions file" in result.rejected[1].error
    assert ready_batches(paths, DATASET) == [inbox_dir(paths, DATASET) / "0003"]  # max_batches: left for later
    result = ingest_inbox(paths, DATASET, engine, pseudo)
    assert "file is empty" in result.rejected[0].error
    doc = json.loads((inbox_dir(paths, DATASET) / REJECTED / "0003" / ERROR_JSON).read_text())
    assert doc["table"] == "interactions" and doc["rule"].startswith("input file must contain")
    assert table_counts(engine, DATASET) == {"items": 0, "interactions": 0}


def test_pseudonymize_false_accepts_only_pseudonymized_ids(paths, pseudo, engine) -> None:
    _batch(paths, "0001", INTER, ITEMS)  # raw ids
    hashed = INTER.replace("alice", pseudo.one("alice")).replace("bob", pseudo.one("bob"))
    _batch(paths, "0002", hashed, ITEMS)
    with pytest.raises(ValueError, match="pseudonymizer"):
        ingest_inbox(paths, DATASET, engine, None)

    result = ingest_inbox(paths, DATASET, engine, None, pseudonymize=False)

    assert [b.batch_id for b in result.rejected] == ["0001"] and [b.batch_id for b in result.accepted] == ["0002"]
    doc = json.loads((inbox_dir(paths, DATASET) / REJECTED / "0001" / ERROR_JSON).read_text())
    assert doc["rows"] == [1, 2] and "pseudonymized" in doc["rule"] and "alice" not in json.dumps(doc)
    _, inter = read_dataset(engine, DATASET)
    assert sorted(inter[S.USER_ID]) == sorted([pseudo.one("alice"), pseudo.one("bob")])  # stored as given, not re-hashed


def test_catalog_for_the_referential_check_is_warehouse_plus_batch(paths, pseudo, engine) -> None:
    # another data set's items do not count
    other = S.Dataset("other", S.to_canonical_items(pd.DataFrame({S.ITEM_ID: ["X1"], S.TITLE: ["X"]})), S.empty_interactions(), True, True, "t")
    upsert_dataset(engine, other)
    _batch(paths, "0001", INTER, ITEMS)
    _batch(paths, "0002", "user_id,item_id,event\nerin,X1,view\n")  # X1 only exists in "other"
    result = ingest_inbox(paths, DATASET, engine, pseudo)
    assert [b.batch_id for b in result.rejected] == ["0002"]
    assert "row 1 item_id='X1'" in result.rejected[0].error
    assert result.rejected[0].error.count("rows break") == 1


def test_error_document_parses_gate_lines() -> None:
    err = DataValidationError(
        "items", "f.csv",
        [
            'expect_column_values_to_be_unique(item_id): 2 of 3 rows break "item_id is unique" — row 1 item_id=\'A\', row 3 item_id=\'A\'',
            '[interactions] expect_column_values_to_not_be_in_set(item_id): 1 of 9 rows break "item_id exists in the items table" — row 7 item_id=\'Q\'',
        ],
    )  # fmt: skip
    doc = error_document("b", "shop", err)
    assert (doc["table"], doc["rule"], doc["expectation"], doc["rows"]) == ("items", "item_id is unique", "expect_column_values_to_be_unique", [1, 3])
    assert doc["failures"][1]["table"] == "interactions" and doc["failures"][1]["rows"] == [7]
    assert doc["failures"][0]["rows_failing"] == 2


@pytest.mark.network
def test_replayed_movielens_lands_with_the_loaders_user_ids(paths, pseudo, engine, wheel_cache) -> None:
    """Replay writes raw ids, ingestion hashes them once: the warehouse matches load_dataset exactly."""
    from recsys.data.datasets import load_dataset
    from recsys.data.replay import load_raw_source, replay, replay_windows

    home = paths  # the engine fixture created the home
    (home.home / "cache").symlink_to(wheel_cache, target_is_directory=True)
    raw = load_raw_source(home, "movielens-100k")
    written = replay(home, "ml", raw, freq="W", count=2)
    result = ingest_inbox(home, "ml", engine, pseudo)
    assert [b.batch_id for b in result.accepted] == [p.name for p in written] and result.rejected == []

    loaded = load_dataset("movielens-100k", home.cache, pseudo)
    expected = pd.concat([w for _, w in replay_windows(loaded, "W")[:2]])
    _, stored = read_dataset(engine, "ml")
    assert result.counts["interactions"] == len(expected) == sum(b.interactions for b in result.accepted)
    key = [S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING]
    assert sorted(map(tuple, stored[key].astype(str).to_numpy())) == sorted(map(tuple, expected[key].astype(str).to_numpy()))

    replay(home, "ml", raw, freq="W", count=2)  # the same windows again
    again = ingest_inbox(home, "ml", engine, pseudo)
    assert len(again.accepted) == 2 and again.counts == result.counts


def test_a_batch_read_in_parts_loads_the_same_rows_and_names_the_files_rows(paths, pseudo, engine, tmp_path) -> None:
    """chunk_rows=2: five interactions in three parts. A bad row in the last part is named by its row in
    the file and nothing of the batch loads; the good batch loads exactly what a one-part read loads."""
    inter = INTER + "carol,A1,cart,2024-01-03\ncarol,B2,purchase,2024-01-04\ncarol,B2,purchase,2024-01-04\n"
    bad = inter.replace("2024-01-04\n", "2999-01-04\n")  # rows 4 and 5: from the future
    _batch(paths, "0001", bad, ITEMS)
    _batch(paths, "0002", inter, ITEMS)
    from recsys.data.validation import ValidationConfig

    result = ingest_inbox(paths, DATASET, engine, pseudo, validation_config=ValidationConfig(max_timestamp="2030-01-01"), chunk_rows=2)

    (rejected,) = result.rejected
    doc = json.loads((inbox_dir(paths, DATASET) / REJECTED / "0001" / ERROR_JSON).read_text())
    assert doc["stage"] == "validate" and doc["rows"] == [4, 5]  # rows of the file, across parts
    assert any("(rows 3-4)" in f["line"] for f in doc["failures"]) and any("(rows 5-5)" in f["line"] for f in doc["failures"])
    report = json.loads((inbox_dir(paths, DATASET) / REJECTED / "0001" / "validation" / "validation.json").read_text())
    assert report["tables"]["interactions"]["parts"] == 3 and report["tables"]["interactions"]["rows"] == 5
    (accepted,) = result.accepted
    assert accepted.interactions == 5 and accepted.time_range == ("2024-01-01T00:00:00+00:00", "2024-01-04T00:00:00+00:00")
    chunked = read_dataset(engine, DATASET)[1]
    whole = make_engine(f"sqlite:///{tmp_path / 'whole.db'}")
    paths2 = ProjectPaths(home=tmp_path / "home2")
    _batch(paths2, "0002", inter, ITEMS)
    ingest_inbox(paths2, DATASET, whole, pseudo)
    pd.testing.assert_frame_equal(chunked, read_dataset(whole, DATASET)[1])  # same rows; the repeated purchase kept twice
    assert len(chunked) == 5
