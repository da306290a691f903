"""Bad input files stop the pipeline at validation with a clear message, and lose nothing.

Runs the real `validate` stage (GX, MLflow store, warehouse path) on a shop's own files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from recsys.stages import pipeline
from recsys import tracking
from recsys.data import warehouse
from recsys.config import PipelineConfig
from recsys.errors import DataValidationError
from recsys.run import RunContext

GOOD_ITEMS = "item_id,title,price\nA1,Red mug,3.5\nB2,Blue plate,4\nC3,Green bowl,2.25\n"
GOOD_INTER = "user_id,item_id,event,timestamp\nalice,A1,purchase,2024-01-01\nalice,B2,view,2024-01-02\nbob,C3,cart,2024-01-03\n"

CASES = {
    # name: (items csv, interactions csv, table named, fragments the message must contain)
    "duplicate_item_ids": (
        "item_id,title,price\nA1,Red mug,3.5\nA1,Blue plate,4\nC3,Green bowl,2.25\n",
        GOOD_INTER,
        "items",
        ["expect_column_values_to_be_unique(item_id)", "row 1 item_id='A1'", "row 2 item_id='A1'"],
    ),
    "unknown_item": (
        GOOD_ITEMS,
        GOOD_INTER + "bob,Z9,purchase,2024-01-04\n",
        "interactions",
        ["expect_column_values_to_not_be_in_set(item_id)", "row 4 item_id='Z9'"],
    ),
    "negative_price": (
        "item_id,title,price\nA1,Red mug,3.5\nB2,Blue plate,-4\nC3,Green bowl,2.25\n",
        GOOD_INTER,
        "items",
        ["expect_column_values_to_be_between(price)", "row 2 price='-4'"],
    ),
    "empty_title_column": (
        "item_id,title,price\nA1,,3.5\nB2,,4\nC3,,2.25\n",
        GOOD_INTER,
        "items",
        ["(title)", "row 1"],
    ),
    "missing_column": (
        GOOD_ITEMS,
        "user_id,item_id,timestamp\nalice,A1,2024-01-01\n",
        "interactions",
        ["expect_column_to_exist(event)"],
    ),
    "empty_file": (
        GOOD_ITEMS,
        "",
        "interactions",
        ["file is empty"],
    ),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_validation_and_loses_nothing(case: str, tmp_path: Path, session_home: Path) -> None:
    items_csv, inter_csv, table, fragments = CASES[case]
    items_path = _write(tmp_path / "items.csv", items_csv)
    inter_path = _write(tmp_path / "interactions.csv", inter_csv)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (items_path, inter_path)}
    cfg = PipelineConfig(dataset="files", items_path=str(items_path), interactions_path=str(inter_path), model_name=f"bad-{case}")
    ctx = RunContext.create(f"bad_input__{case}", "2026-11-28T00:00:00+00:00")

    with pytest.raises(DataValidationError) as info:
        pipeline.validate(cfg, ctx)

    message = str(info.value)
    assert f"table '{table}'" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert "alice" not in message and "bob" not in message  # raw user ids never reach messages
    # the raw input is kept, untouched, and a copy is archived under the project home
    for path, digest in before.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
        copies = list((session_home / "raw").glob(f"*/{path.name}"))
        assert any(hashlib.sha256(c.read_bytes()).hexdigest() == digest for c in copies)
    # nothing downstream ran: no validated data, nothing in the warehouse, no model version
    assert not (ctx.run_dir / "data").exists()
    engine = warehouse.make_engine(ctx.warehouse_url)
    assert warehouse.table_counts(engine, "user-files") == {"items": 0, "interactions": 0}
    c = tracking.client(ctx.tracking_uri)
    assert c.search_model_versions(f"name = '{cfg.model_name}'") == []
    # the MLflow run records the failure and carries the validation report
    run = c.search_runs(
        [c.get_experiment_by_name(cfg.experiment).experiment_id],
        filter_string=f"tags.`{tracking.RUN_KEY_TAG}` = '{ctx.run_key}'",
    )[0]
    assert run.info.status == "FAILED" and run.data.tags["validation"] == "failed"
    assert (ctx.run_dir / "validation" / "validation.json").is_file()
    artifacts = [a.path for a in c.list_artifacts(run.info.run_id, "validation")]
    assert "validation/validation.json" in artifacts
    if case != "empty_file":  # an empty file fails before GX has a table to document
        assert (ctx.run_dir / "validation" / "data_docs" / "index.html").is_file()


def test_good_files_pass_and_load_idempotently(tmp_path: Path) -> None:
    items_path = _write(tmp_path / "items.csv", GOOD_ITEMS)
    inter_path = _write(tmp_path / "interactions.csv", GOOD_INTER)
    cfg = PipelineConfig(dataset="files", items_path=str(items_path), interactions_path=str(inter_path))
    counts = []
    for attempt in range(2):
        ctx = RunContext.create(f"good_files_{attempt}", "2026-11-28T00:00:00+00:00")
        out = pipeline.validate(cfg, ctx)
        assert out["items"] == 3 and out["interactions"] == 3
        counts.append(pipeline.load_and_split(cfg, ctx.with_mlflow_run(out["mlflow_run_id"]))["warehouse"])
    assert counts == [{"items": 3, "interactions": 3}, {"items": 3, "interactions": 3}]
    stored = pd.read_parquet(ctx.run_dir / "data" / "interactions.parquet")
    assert not stored["user_id"].isin(["alice", "bob"]).any()  # pseudonymized before anything was written


@pytest.mark.parametrize("kind", ["missing", "directory", "symlink", "outside_roots", "fifo"])
def test_input_paths_must_be_regular_files_inside_the_allowed_folders(kind: str, tmp_path: Path, session_home: Path, monkeypatch) -> None:
    """Checked before anything reads or copies the file: a link or a path outside RECSYS_INPUT_ROOTS
    is never followed, copied under raw/ or echoed; the run ends FAILED with the rule."""
    import os

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setenv("RECSYS_INPUT_ROOTS", str(uploads))
    secret = tmp_path / "elsewhere" / "passwd.csv"  # readable by the worker, outside the allowed folder
    secret.parent.mkdir()
    secret.write_text("root-secret-first-line,x\n1,2\n")
    items_path = _write(uploads / "items.csv", GOOD_ITEMS)
    inter_path = uploads / "interactions.csv"
    expected = {
        "missing": "file not found",
        "directory": "is a directory",
        "symlink": "is a symbolic link",
        "outside_roots": "lies outside the allowed input folders",
        "fifo": "is a pipe",
    }[kind]
    if kind == "directory":
        inter_path.mkdir()
    elif kind == "symlink":
        inter_path.symlink_to(secret)
    elif kind == "outside_roots":
        inter_path = secret
    elif kind == "fifo":
        os.mkfifo(inter_path)
    raw_before = set((session_home / "raw").rglob("*")) if (session_home / "raw").exists() else set()
    cfg = PipelineConfig(dataset="files", items_path=str(items_path), interactions_path=str(inter_path), model_name=f"path-{kind}")
    ctx = RunContext.create(f"bad_path__{kind}", "2026-11-28T00:00:00+00:00")

    with pytest.raises(DataValidationError) as info:
        pipeline.validate(cfg, ctx)

    message = str(info.value)
    assert "table 'interactions'" in message and expected in message and str(inter_path) in message
    assert "root-secret-first-line" not in message
    raw_after = set((session_home / "raw").rglob("*")) if (session_home / "raw").exists() else set()
    assert not any("root-secret" in p.read_text(errors="replace") for p in raw_after - raw_before if p.is_file())
    assert not any(p.name == "interactions.csv" for p in raw_after - raw_before)  # nothing of it was copied
    c = tracking.client(ctx.tracking_uri)
    run = c.search_runs(
        [c.get_experiment_by_name(cfg.experiment).experiment_id], filter_string=f"tags.`{tracking.RUN_KEY_TAG}` = '{ctx.run_key}'"
    )[0]
    assert run.info.status == "FAILED" and run.data.tags["validation"] == "failed"


def test_a_missing_setting_is_an_input_error_that_fails_the_run(session_home: Path) -> None:
    from recsys.errors import InputError

    cfg = PipelineConfig(dataset="files", items_path=None, interactions_path=None, model_name="no-paths")
    ctx = RunContext.create("bad_setting__no_paths", "2026-11-28T00:00:00+00:00")
    with pytest.raises(InputError, match="needs both items_path and interactions_path"):
        pipeline.validate(cfg, ctx)
    c = tracking.client(ctx.tracking_uri)
    run = c.search_runs(
        [c.get_experiment_by_name(cfg.experiment).experiment_id], filter_string=f"tags.`{tracking.RUN_KEY_TAG}` = '{ctx.run_key}'"
    )[0]
    assert run.info.status == "FAILED" and "needs both" in run.data.tags["failure.reason"]
