"""A corpus of bad inbox batches: each is quarantined with a clear error, none blocks the batches behind it.

Every case below is one batch dropped into the inbox, with good batches before, among and after them;
the whole inbox is ingested ONCE on a real SQLite file, and the cases where the database matters
(`WAREHOUSE_CASES`: its limits and refusals) once more on a real PostgreSQL server when its binaries are
installed. For each case the test checks: the batch sits in ``.rejected/<batch>/`` with an ``error.json``
naming the stage, the rule and the rows (no traceback, no content of a file that was never read), nothing
of it reached the warehouse, and the good batches before and after it all loaded (rows lost: 0).

CASES (batch → stage where it is stopped, rule named in error.json, 1-based data rows named)

====================  ========  ==========================================================  =======
case                  stage     rule (fragment)                                             rows
====================  ========  ==========================================================  =======
long_item_id          validate  item_id is at most 128 characters                           3
long_basket_id        validate  basket_id is at most 128 characters                         1
long_user_id_raw      —         (accepted: raw user ids are pseudonymized to 22 characters)  —
price_inf             validate  price >= 0 and finite                                       2
price_1e400           validate  price >= 0 and finite                                       1
quantity_inf          validate  quantity > 0 and finite                                     2
quantity_zero         validate  quantity > 0 and finite                                     1
negative_price        validate  price >= 0 and finite                                       2
rating_out_of_range   validate  rating is between 0 and 10                                  1
price_not_a_number    validate  price holds numbers                                         2
user_id_spaces        validate  user_id is not null or blank                                2
user_id_tab           validate  user_id is not null or blank                                1
null_item_id          validate  item_id is not null                                         2
item_id_untrimmed     validate  item_id is not blank and has no leading or trailing ...     1
basket_id_blank       validate  basket_id is not blank and has no leading or trailing ...   2
nul_in_title          validate  title holds no NUL character                                2
title_blank           validate  title is not blank                                          1
duplicate_item_ids    validate  item_id is unique                                           1, 2
unknown_item          validate  item_id exists in the items table                           3
unknown_event         validate  event is one of                                             1
timestamp_garbage     validate  timestamp holds date-times                                  2
timestamp_future      validate  timestamp is between                                        1
timestamp_too_old     validate  timestamp is between                                        2
missing_event_column  validate  column event exists                                         —
duplicate_header      read      column names are unique                                     —
ragged_csv            read      input file must be well-formed CSV                          1
not_utf8              read      CSV input must be UTF-8 encoded                             —
gzip_not_gzip         read      input file must be readable                                 —
corrupt_parquet       read      input file must be valid Parquet                            —
empty_file            read      input file must contain a header and at least one row      —
header_only           read      input file must contain a header and at least one row      —
two_items_files       read      a batch holds at most one of                                —
no_interactions_file  read      a batch must contain one of                                 —
items_is_directory    files     input file must be a regular file                           —
items_is_symlink      files     input file must be a regular file                           —
interactions_fifo     files     input file must be a regular file                           —
write_refused         write     the batch is processed without error (a trigger aborts)    —
====================  ========  ==========================================================  =======

Separately: an inbox folder with a bad name is reported and skipped while the others load, an
unreachable warehouse leaves the batches in the inbox, ids differing only by case load with a
warning, raw copies are private (0600), and the CLI prints one line per problem.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from recsys.data import schema as S
from recsys.data.ingest import DONE, ERROR_JSON, READY, REJECTED, ingest_inbox, inbox_dir
from recsys.paths import ProjectPaths
from recsys.data.privacy import Pseudonymizer
from recsys.data.validation import ValidationConfig
from recsys.data.warehouse import make_engine, read_dataset

DATASET = "poison"
KEY = b"test-pseudonym-key-not-a-secret"
GOOD_ITEMS = "item_id,title,price\nA1,Red mug,3.5\nB2,Blue plate,4\n"
SECRET = "root-secret-line-never-shown"


def _good_inter(user: str) -> str:
    return f"user_id,item_id,event,timestamp\n{user},A1,purchase,2024-01-01\n{user},B2,view,2024-01-02\n"


@dataclass(frozen=True)
class Case:
    files: dict[str, str | bytes]  # file name -> content (str: text, bytes: raw)
    stage: str | None  # None: the batch is accepted
    rule: str | None = None
    rows: tuple[int, ...] = ()


LONG = "X" * 129
INTER_HEAD = "user_id,item_id,event,timestamp"

CASES: dict[str, Case] = {
    "long_item_id": Case({"items.csv": GOOD_ITEMS + f"{LONG},Long one,1\n", "interactions.csv": f"{INTER_HEAD}\nu1,{LONG},view,2024-01-01\n"}, "validate", "item_id is at most 128 characters", (3,)),
    "long_basket_id": Case({"interactions.csv": f"{INTER_HEAD},basket_id\nu1,A1,view,2024-01-01,{'b' * 200}\n"}, "validate", "basket_id is at most 128 characters", (1,)),
    "long_user_id_raw": Case({"interactions.csv": f"{INTER_HEAD}\n{'u' * 500},A1,view,2024-01-01\n"}, None),
    "price_inf": Case({"items.csv": "item_id,title,price\nA1,Red mug,3.5\nB2,Blue plate,inf\n", "interactions.csv": _good_inter("u1")}, "validate", "price >= 0 and finite", (2,)),
    "price_1e400": Case({"items.csv": "item_id,title,price\nA1,Red mug,1e400\nB2,Blue plate,4\n", "interactions.csv": _good_inter("u1")}, "validate", "price >= 0 and finite", (1,)),
    "quantity_inf": Case({"interactions.csv": f"{INTER_HEAD},quantity\nu1,A1,view,2024-01-01,1\nu1,B2,view,2024-01-01,inf\n"}, "validate", "quantity > 0 and finite", (2,)),
    "quantity_zero": Case({"interactions.csv": f"{INTER_HEAD},quantity\nu1,A1,view,2024-01-01,0\n"}, "validate", "quantity > 0 and finite", (1,)),
    "negative_price": Case({"items.csv": "item_id,title,price\nA1,Red mug,3.5\nB2,Blue plate,-4\n", "interactions.csv": _good_inter("u1")}, "validate", "price >= 0 and finite", (2,)),
    "rating_out_of_range": Case({"interactions.csv": f"{INTER_HEAD},rating\nu1,A1,rating,2024-01-01,11\n"}, "validate", "rating is between 0 and 10", (1,)),
    "price_not_a_number": Case({"items.csv": "item_id,title,price\nA1,Red mug,3.5\nB2,Blue plate,cheap\n", "interactions.csv": _good_inter("u1")}, "validate", "price holds numbers", (2,)),
    "user_id_spaces": Case({"interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2024-01-01\n   ,B2,view,2024-01-01\n"}, "validate", "user_id is not null or blank", (2,)),
    "user_id_tab": Case({"interactions.csv": f"{INTER_HEAD}\n\t,A1,view,2024-01-01\n"}, "validate", "user_id is not null or blank", (1,)),
    "null_item_id": Case({"interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2024-01-01\nu1,,view,2024-01-01\n"}, "validate", "item_id is not null", (2,)),
    "item_id_untrimmed": Case({"items.csv": 'item_id,title,price\n"A1 ",Red mug,3.5\n', "interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2024-01-01\n"}, "validate", "item_id is not blank and has no leading or trailing whitespace", (1,)),
    "basket_id_blank": Case({"interactions.csv": f'{INTER_HEAD},basket_id\nu1,A1,view,2024-01-01,b1\nu1,B2,view,2024-01-01,"  "\n'}, "validate", "basket_id is not blank and has no leading or trailing whitespace", (2,)),
    "nul_in_title": Case({"items.csv": "item_id,title,price\nA1,Red mug,3.5\nB2,Blue\x00plate,4\n", "interactions.csv": _good_inter("u1")}, "validate", "title holds no NUL character", (2,)),
    "title_blank": Case({"items.csv": 'item_id,title,price\nA1,"   ",3.5\nB2,Blue plate,4\n', "interactions.csv": _good_inter("u1")}, "validate", "title is not blank", (1,)),
    "duplicate_item_ids": Case({"items.csv": "item_id,title,price\nA1,Red mug,3.5\nA1,Blue plate,4\n", "interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2024-01-01\n"}, "validate", "item_id is unique", (1, 2)),
    "unknown_item": Case({"interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2024-01-01\nu1,B2,view,2024-01-01\nu1,Z9,view,2024-01-01\n"}, "validate", "item_id exists in the items table", (3,)),
    "unknown_event": Case({"interactions.csv": f"{INTER_HEAD}\nu1,A1,click,2024-01-01\n"}, "validate", "event is one of", (1,)),
    "timestamp_garbage": Case({"interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2024-01-01\nu1,B2,view,yesterday\n"}, "validate", "timestamp holds date-times", (2,)),
    "timestamp_future": Case({"interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2999-01-01\n"}, "validate", "timestamp is between", (1,)),
    "timestamp_too_old": Case({"interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2024-01-01\nu1,B2,view,1970-01-01\n"}, "validate", "timestamp is between", (2,)),
    "missing_event_column": Case({"interactions.csv": "user_id,item_id,timestamp\nu1,A1,2024-01-01\n"}, "validate", "column event exists"),
    "duplicate_header": Case({"items.csv": "item_id,title,price,price\nA1,Red mug,3.5,4\n", "interactions.csv": _good_inter("u1")}, "read", "column names are unique"),
    "ragged_csv": Case({"interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2024-01-01,extra,more\n"}, "read", "input file must be well-formed CSV", (1,)),
    "not_utf8": Case({"interactions.csv": f"{INTER_HEAD}\nu1,A1,view,2024-01-01\n".encode() + b"\xff\xfe,A1,view,2024-01-01\n"}, "read", "CSV input must be UTF-8 encoded"),
    "gzip_not_gzip": Case({"interactions.csv.gz": _good_inter("u1")}, "read", "input file must be readable"),
    "corrupt_parquet": Case({"interactions.parquet": b"PAR1 this is not parquet PAR1"}, "read", "input file must be valid Parquet"),
    "empty_file": Case({"interactions.csv": ""}, "read", "input file must contain a header and at least one row"),
    "header_only": Case({"interactions.csv": f"{INTER_HEAD}\n"}, "read", "input file must contain a header and at least one row"),
    "two_items_files": Case({"items.csv": GOOD_ITEMS, "items.csv.gz": gzip.compress(GOOD_ITEMS.encode()), "interactions.csv": _good_inter("u1")}, "read", "a batch holds at most one of"),
    "no_interactions_file": Case({"items.csv": GOOD_ITEMS}, "read", "a batch must contain one of"),
    # built specially in _write_case (a directory, a link to a file outside the inbox, a named pipe)
    "items_is_directory": Case({"interactions.csv": _good_inter("u1")}, "files", "input file must be a regular file"),
    "items_is_symlink": Case({"interactions.csv": _good_inter("u1")}, "files", "input file must be a regular file"),
    "interactions_fifo": Case({}, "files", "input file must be a regular file"),
    # the database itself refuses the rows (a trigger, created by the fixture) after the gate passed
    "write_refused": Case({"items.csv": "item_id,title,price\nREFUSED,Refused by the warehouse,1\n", "interactions.csv": f"{INTER_HEAD}\nu1,REFUSED,view,2024-01-01\n"}, "write", "the batch is processed without error"),
}


def _write_case(batch: Path, name: str, case: Case, outside: Path) -> None:
    batch.mkdir(parents=True)
    for fname, content in case.files.items():
        p = batch / fname
        p.write_bytes(content) if isinstance(content, bytes) else p.write_bytes(content.encode("utf-8"))
    if name == "items_is_directory":
        (batch / "items.csv").mkdir()
        (batch / "items.csv" / "inner.csv").write_text(GOOD_ITEMS)
    elif name == "items_is_symlink":
        (batch / "items.csv").symlink_to(outside)
    elif name == "interactions_fifo":
        os.mkfifo(batch / "interactions.csv")  # reading it would block for ever: it must never be opened
    (batch / READY).touch()


# the cases where the database matters (its limits, its refusals), run again on a real PostgreSQL server; the
# others are stopped before anything touches a database, the same way whatever the backend
WAREHOUSE_CASES = (
    "long_item_id", "long_basket_id", "long_user_id_raw", "price_inf", "price_1e400", "quantity_inf", "user_id_spaces",
    "item_id_untrimmed", "basket_id_blank", "nul_in_title", "duplicate_item_ids", "unknown_item", "write_refused",
)  # fmt: skip


def _batch_ids(names: tuple[str, ...] | None = None) -> list[tuple[str, str | None]]:
    """(batch id, case name or None for a good batch): a good batch first, after every 8th case, and last."""
    out: list[tuple[str, str | None]] = [("000-good", None)]
    names = sorted(names or CASES)
    for i, name in enumerate(names, start=1):
        out.append((f"{i:03d}a-{name}", name))
        if i % 8 == 0 or i == len(names):
            out.append((f"{i:03d}b-good", None))
    return out


@dataclass
class CorpusRun:
    paths: ProjectPaths
    result: object
    engine: object
    good_users: list[str]
    outside: Path
    names: tuple[str, ...]


def _ingest_corpus(tmp: Path, url: str | None, names: tuple[str, ...] = tuple(CASES)) -> CorpusRun:
    paths = ProjectPaths(home=tmp / "home")
    paths.home.mkdir(parents=True)
    outside = tmp / "outside-secret.csv"  # a file the worker can read, outside the inbox
    outside.write_text(f"{SECRET}\nmore secret\n")
    engine = make_engine(url or paths.warehouse_url)
    with engine.begin() as conn:  # a real refusal by the database, after the gate passed
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON items WHEN NEW.item_id = 'REFUSED' BEGIN SELECT RAISE(ABORT, 'refused by the warehouse'); END"))
        else:
            conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.item_id = 'REFUSED' THEN RAISE EXCEPTION 'refused by the warehouse'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION refuse()"))
    good_users = []
    for batch_id, name in _batch_ids(names):
        batch = inbox_dir(paths, DATASET) / batch_id
        if name is None:
            user = f"good-{batch_id}"
            good_users.append(user)
            _write_case(batch, batch_id, Case({"items.csv": GOOD_ITEMS, "interactions.csv": _good_inter(user)}, None), outside)
        else:
            _write_case(batch, name, CASES[name], outside)
    # as recsys.stages.ops.ingest_all does: events from the future are refused
    result = ingest_inbox(paths, DATASET, engine, Pseudonymizer(KEY), validation_config=ValidationConfig(max_timestamp="2030-01-01"))
    return CorpusRun(paths, result, engine, good_users, outside, names)


@pytest.fixture(scope="module")
def sqlite_corpus(tmp_path_factory) -> CorpusRun:
    return _ingest_corpus(tmp_path_factory.mktemp("poison-sqlite"), None)


def _check_case(run: CorpusRun, name: str) -> None:
    case = CASES[name]
    root = inbox_dir(run.paths, DATASET)
    batch_id = next(b for b, n in _batch_ids(run.names) if n == name)
    by_id = {b.batch_id: b for b in run.result.accepted + run.result.rejected}
    result = by_id[batch_id]
    if case.stage is None:
        assert result.accepted and (root / DONE / batch_id).is_dir(), result.error
        return
    assert not result.accepted and result.stage == case.stage
    dest = root / REJECTED / batch_id
    doc = json.loads((dest / ERROR_JSON).read_text())
    assert doc["stage"] == case.stage
    assert case.rule in doc["rule"], (doc["rule"], case.rule)
    assert tuple(doc["rows"]) == case.rows, doc
    assert "Traceback" not in (dest / ERROR_JSON).read_text()
    assert SECRET not in (dest / ERROR_JSON).read_text() and SECRET not in result.error
    assert "\n" not in result.summary and case.stage in result.summary  # the one-line form the CLI and the DAG print
    assert stat.S_IMODE((dest / ERROR_JSON).stat().st_mode) == 0o600


def _check_nothing_lost(run: CorpusRun) -> None:
    """Every good batch loaded, nothing of a rejected one did: the warehouse holds exactly the good rows."""
    items, inter = read_dataset(run.engine, DATASET)
    pseudo = Pseudonymizer(KEY)
    accepted_cases = [n for n in run.names if CASES[n].stage is None]
    assert sorted(items[S.ITEM_ID]) == ["A1", "B2"]  # no long, untrimmed or refused item
    assert items[S.PRICE].tolist() == [3.5, 4.0]  # no infinite price replaced a good one
    expected_users = {pseudo.one(u) for u in run.good_users} | {pseudo.one("u" * 500)}
    assert set(inter[S.USER_ID]) == expected_users
    assert len(inter) == 2 * len(run.good_users) + len(accepted_cases)
    assert len(run.result.accepted) == len(run.good_users) + len(accepted_cases)
    assert len(run.result.rejected) == len(run.names) - len(accepted_cases)


@pytest.mark.parametrize("name", sorted(CASES))
def test_poison_batch_is_quarantined_with_a_clear_error_sqlite(sqlite_corpus: CorpusRun, name: str) -> None:
    _check_case(sqlite_corpus, name)


def test_no_poison_batch_blocks_the_good_ones_and_no_row_is_lost_sqlite(sqlite_corpus: CorpusRun) -> None:
    _check_nothing_lost(sqlite_corpus)


def test_links_and_pipes_are_never_followed_or_copied(sqlite_corpus: CorpusRun) -> None:
    raw = sqlite_corpus.paths.raw
    copies = [p for p in raw.rglob("*") if p.is_file()]
    assert copies and not any(SECRET in p.read_text(errors="replace") for p in copies)
    # raw copies hold the shop's data: private to the service's user
    assert {stat.S_IMODE(p.stat().st_mode) for p in copies} == {0o600}
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in [raw, *[p for p in raw.rglob("*") if p.is_dir()]])
    assert sqlite_corpus.outside.read_text().startswith(SECRET)  # the target itself untouched


def test_case_only_id_differences_load_with_a_warning(tmp_path: Path) -> None:
    paths = ProjectPaths(home=tmp_path / "home")
    batch = inbox_dir(paths, DATASET) / "b1"
    batch.mkdir(parents=True)
    (batch / "items.csv").write_text("item_id,title\nSKU-0001,Mug\nsku-0001,Mug again\nB2,Plate\n")
    (batch / "interactions.csv").write_text(f"{INTER_HEAD}\nu1,SKU-0001,view,2024-01-01\n")
    (batch / READY).touch()
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    result = ingest_inbox(paths, DATASET, engine, Pseudonymizer(KEY))
    assert [b.batch_id for b in result.accepted] == ["b1"]
    report = json.loads((Path(result.accepted[0].report_dir) / "validation.json").read_text())
    (warning,) = report["summary"]["warnings"]
    assert "differ only by letter case" in warning and "row 1 'SKU-0001'" in warning and "row 2 'sku-0001'" in warning


def _cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "RECSYS_HOME": str(home), **(env or {})},
    )  # fmt: skip


def test_bad_folder_names_are_reported_and_the_other_data_sets_still_load(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for folder in ("my shop", "a" * 65, "shop-b"):
        batch = home / "inbox" / folder / "b1"
        batch.mkdir(parents=True)
        (batch / "items.csv").write_text(GOOD_ITEMS)
        (batch / "interactions.csv").write_text(_good_inter("u1"))
        (batch / READY).touch()

    out = _cli(home, "ingest")

    assert out.returncode == 1
    err_lines = out.stderr.strip().splitlines()
    assert len(err_lines) == 2 and all(line.startswith("SKIPPED ") for line in err_lines), out.stderr
    assert "my shop" in out.stderr and "rename the folder" in out.stderr and "at most 64" in out.stderr
    assert "accepted shop-b/b1" in out.stdout
    assert (home / "inbox" / "my shop" / "b1" / READY).exists()  # left as it was, nothing lost


def test_cli_errors_are_one_line_with_a_non_zero_exit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = _cli(home, "ingest", "--dataset", "../x")
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "data set name '../x'" in out.stderr and "Traceback" not in out.stderr
    debug = _cli(home, "--debug", "ingest", "--dataset", "../x")
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    # a poison batch: one line naming the batch, the stage, the rule and where error.json is
    batch = home / "inbox" / "shop" / "b1"
    batch.mkdir(parents=True)
    (batch / "items.csv").write_text("item_id,title,price\nA1,Mug,inf\n")
    (batch / "interactions.csv").write_text(f"{INTER_HEAD}\nu1,A1,view,2024-01-01\n")
    (batch / READY).touch()
    out = _cli(home, "ingest")
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("REJECTED shop/b1: validate: items: price >= 0 and finite") and "row" in line and "error.json" in line


def test_an_unreachable_warehouse_leaves_the_batches_in_the_inbox(tmp_path: Path) -> None:
    from deploy.postgres_local import free_port  # a port nothing listens on

    home = tmp_path / "home"
    batch = home / "inbox" / "shop" / "b1"
    batch.mkdir(parents=True)
    (batch / "items.csv").write_text(GOOD_ITEMS)
    (batch / "interactions.csv").write_text(_good_inter("u1"))
    (batch / READY).touch()
    out = _cli(home, "ingest", env={"RECSYS_WAREHOUSE_URL": f"postgresql+psycopg2://nobody@127.0.0.1:{free_port()}/none?connect_timeout=3"})
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("SKIPPED shop (warehouse unavailable") and "OperationalError" in line
    assert (batch / READY).exists() and not (home / "inbox" / "shop" / REJECTED).exists()  # kept for the next run


# --- the same corpus on a real PostgreSQL server ------------------------------------------------


@pytest.fixture(scope="module")
def pg_corpus(tmp_path_factory):
    pytest.importorskip("psycopg2")
    from deploy.postgres_local import LocalPostgres, PostgresError, find_bindir, free_port, temp_data_dir

    try:
        find_bindir()
    except PostgresError as e:
        pytest.skip(f"no PostgreSQL server binaries: {e}")
    data_dir = temp_data_dir("recsys-test-pg-")
    server = LocalPostgres(data_dir, free_port(), durable=False).start()
    try:
        yield _ingest_corpus(tmp_path_factory.mktemp("poison-pg"), server.create_database("poison"), WAREHOUSE_CASES)
    finally:
        server.stop()
        import shutil

        shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", WAREHOUSE_CASES)
def test_poison_batch_is_quarantined_with_a_clear_error_postgres(pg_corpus: CorpusRun, name: str) -> None:
    _check_case(pg_corpus, name)


@pytest.mark.slow
def test_no_poison_batch_blocks_the_good_ones_and_no_row_is_lost_postgres(pg_corpus: CorpusRun) -> None:
    _check_nothing_lost(pg_corpus)


def test_the_docstring_table_lists_every_case() -> None:
    table = [line.split()[0] for line in __doc__.splitlines() if line and line.split()[0] in CASES]
    assert table == list(CASES)


@pytest.mark.slow
def test_the_ingest_dag_loads_the_good_batch_and_its_report_names_each_problem(session_home: Path) -> None:
    """A real `airflow dags test recsys_ingest`: a poison batch before a good one, and a badly named folder.
    `ingest` succeeds and loads the good batch, the warehouse asset is updated, `report_rejections` fails
    naming the rejected batch (stage, rule, error.json) and the skipped folder, once (no retry)."""
    import re

    from test_e2e_training import _airflow

    assert _airflow("db", "migrate", timeout=300).returncode == 0
    inbox = session_home / "inbox"
    for folder, batch, items, inter in (
        ("dag-shop", "b1", "item_id,title,price\nA1,Mug,inf\n", f"{INTER_HEAD}\nu1,A1,view,2024-01-01\n"),
        ("dag-shop", "b2", GOOD_ITEMS, _good_inter("u2")),
        ("bad shop", "b1", GOOD_ITEMS, _good_inter("u3")),
    ):
        d = inbox / folder / batch
        d.mkdir(parents=True)
        (d / "items.csv").write_text(items)
        (d / "interactions.csv").write_text(inter)
        (d / READY).touch()

    proc = _airflow("dags", "test", "recsys_ingest")
    out = proc.stdout + proc.stderr
    run_id, state = re.findall(r"DagRun Finished: .*?run_id=([^,]+),.*?state=(\w+)", out)[-1]
    states = _airflow("tasks", "states-for-dag-run", "recsys_ingest", run_id, "-o", "json")
    rows = {r["task_id"]: r for r in json.loads(states.stdout[states.stdout.index("[") :])}

    assert state == "failed"
    assert {t: rows[t]["state"] for t in ("ingest", "anything_new", "mark_updated", "report_rejections")} == {
        "ingest": "success", "anything_new": "success", "mark_updated": "success", "report_rejections": "failed",
    }  # fmt: skip
    assert "REJECTED dag-shop/b1: validate: items: price >= 0 and finite" in out and "error.json" in out
    assert "SKIPPED bad shop (inbox folder)" in out
    assert (inbox / "dag-shop" / DONE / "b2").is_dir() and (inbox / "dag-shop" / REJECTED / "b1" / ERROR_JSON).is_file()
    assert (inbox / "bad shop" / "b1" / READY).exists()
    engine = make_engine(ProjectPaths(home=session_home).warehouse_url)
    assert read_dataset(engine, "dag-shop")[1][S.USER_ID].nunique() == 1  # only the good batch's user
