"""A training DAG run that fails ends its MLflow run FAILED with the reason; bad input is never retried.

Real components: `airflow dags test` of dags/recsys_training.py (the e2e tests' helpers), the session's
MLflow SQLite store, Airflow's metadata database read back through its own models; for the callbacks
alone, the real DAG's tasks and Airflow's runtime task instance and template context.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from test_e2e_training import _trigger, airflow_db  # noqa: F401  (the e2e tests' DAG run helper; airflow_db is a fixture)
from test_plugins import GOOD_INTER, GOOD_ITEMS, _dag_run, _store_conn, no_creds  # noqa: F401  (no_creds is a fixture)

import recsys_mlflow as rm  # importable: test_plugins put plugins/ on sys.path
from recsys import tracking
from recsys.errors import DataValidationError, InputError

DAG_ID = "recsys_training"
SYSTEM_FILE = Path("/etc/passwd")  # a file the worker can read and that no run may take


def _client():
    return tracking.client(os.environ["MLFLOW_TRACKING_URI"])


def _tries(run_id: str) -> dict[str, tuple[str, int, int]]:
    """task id -> (state, try number, earlier tries kept in the history), from Airflow's database."""
    from sqlalchemy import func, select

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id)).all()
        history = dict(
            session.execute(
                select(TaskInstanceHistory.task_id, func.count()).where(TaskInstanceHistory.dag_id == DAG_ID, TaskInstanceHistory.run_id == run_id).group_by(TaskInstanceHistory.task_id)
            ).all()
        )
    return {task: (str(state), int(tries), int(history.get(task, 0))) for task, state, tries in rows}


def _raw_copies_of(content: bytes, raw: Path) -> list[Path]:
    return [p for p in raw.rglob("*") if p.is_file() and p.read_bytes() == content] if raw.exists() else []


def _bad_paths(case: str, tmp_path: Path) -> tuple[dict, str, str]:
    """(conf, offending path, words the reason must hold) of a case."""
    items, inter = tmp_path / "items.csv", tmp_path / "interactions.csv"
    items.write_text(GOOD_ITEMS)
    inter.write_text(GOOD_INTER)
    if case == "missing":
        bad = tmp_path / "no-such-interactions.csv"
        conf = {"interactions_path": str(bad), "items_path": str(items)}
        rule = "file not found"
    elif case == "directory":
        bad = tmp_path / "a-folder"
        bad.mkdir()
        conf = {"interactions_path": str(bad), "items_path": str(items)}
        rule = "is a directory"
    else:  # a link to a system file: never followed, never copied
        bad = tmp_path / "catalog.csv"
        bad.symlink_to(SYSTEM_FILE)
        conf = {"items_path": str(bad), "interactions_path": str(inter)}
        rule = "is a symbolic link"
    return {"dataset": "files", "model_name": f"failures-{uuid.uuid4().hex[:6]}"} | conf, str(bad), rule


@pytest.mark.slow  # a real `airflow dags test` run: ~30 s
@pytest.mark.parametrize(
    "case",
    # one real DAG run per kind costs ~30 s: missing files and directories are covered at the pipeline
    # level (tests/test_bad_input.py); the wiring (no retry, MLflow run FAILED) is the same for every kind
    ["symlink"],
)
def test_bad_input_path_fails_validate_once_and_fails_the_mlflow_run(case: str, tmp_path: Path, airflow_db: None, session_home: Path) -> None:
    secret = SYSTEM_FILE.read_bytes()
    copies_before = len(_raw_copies_of(secret, session_home / "raw"))
    conf, bad, rule = _bad_paths(case, tmp_path)

    state, run_id, out = _trigger(conf)

    assert state == "failed", out[-4000:]
    tries = _tries(run_id)
    assert tries["validate"] == ("failed", 1, 0), tries  # one try, no retry: bad input fails the same way again
    assert all(tries[t][0] == "upstream_failed" for t in ("load_and_split", "merge_embeddings", "fit_model", "package", "decide", "promote")), tries
    run = tracking.find_run_by_key(_client(), f"{DAG_ID}__{run_id}")
    assert run is not None, out[-4000:]
    tags = run.data.tags
    assert run.info.status == "FAILED"
    assert tags[tracking.FAILURE_TASK_TAG] == "validate"
    assert tags[tracking.FAILURE_ERROR_TAG] == "DataValidationError"
    reason = tags[tracking.FAILURE_REASON_TAG]
    assert bad in reason and rule in reason and "(rule: " in reason, reason
    assert "Traceback" not in reason
    if case == "symlink":
        assert len(_raw_copies_of(secret, session_home / "raw")) == copies_before == 0  # never copied
        for line in secret.decode().splitlines()[:5]:
            assert line not in reason and line not in out  # nor shown, in MLflow or in the task log


@pytest.mark.slow
def test_a_later_task_is_retried_then_fails_the_mlflow_run(tmp_path: Path, airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Good data, but the warehouse cannot be opened: load_and_split fails, is retried once (not an input
    error), and only its final failure ends the MLflow run FAILED with the reason. (~70 s: the retry
    waits the DAG's 30 s retry_delay.)"""
    conf, _, _ = _bad_paths("missing", tmp_path)
    conf["interactions_path"] = str(tmp_path / "interactions.csv")  # both files good
    monkeypatch.setenv("RECSYS_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'no-such-folder' / 'warehouse.db'}")

    state, run_id, out = _trigger(conf)

    assert state == "failed", out[-4000:]
    tries = _tries(run_id)
    assert tries["validate"] == ("success", 1, 0), tries
    assert tries["load_and_split"] == ("failed", 2, 1), tries  # retried once: a warehouse outage may pass
    assert out.count("failure of load_and_split reported to the MLflow run") == 1  # not on the retried attempt
    run = tracking.find_run_by_key(_client(), f"{DAG_ID}__{run_id}")
    assert run.info.status == "FAILED" and run.data.tags["validation"] == "passed"
    assert run.data.tags[tracking.FAILURE_TASK_TAG] == "load_and_split"
    assert run.data.tags[tracking.FAILURE_ERROR_TAG] == "OperationalError"
    assert "unable to open database file" in run.data.tags[tracking.FAILURE_REASON_TAG]
    assert "Traceback" not in run.data.tags[tracking.FAILURE_REASON_TAG]


# --- the callbacks on their own: the real DAG's tasks, Airflow's runtime task instance and context


@pytest.fixture(scope="module")
def training_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def _context(dag, task_id: str, run_id: str, exception: BaseException | None, map_index: int = -1) -> dict:
    """The template context Airflow hands a task's callbacks (built as the DAG processor builds it)."""
    from airflow.sdk.api.datamodels._generated import TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    task = dag.get_task(task_id)
    dag_run = _dag_run(DAG_ID, run_id)
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task_id,
        dag_id=DAG_ID,
        run_id=run_id,
        try_number=2,
        map_index=map_index,
        dag_version_id=uuid.uuid4(),
        task=task,
        max_tries=1,
        _ti_context_from_server=TIRunContext.model_construct(dag_run=dag_run, max_tries=1, variables=[], connections=[], xcom_keys_to_clear=[]),
    )
    context = ti.get_template_context()
    context["exception"] = exception
    return context


def _pipeline_run(status: str | None = None) -> tuple[str, str]:
    """(DAG run id, MLflow run id) of a pipeline run as validate opens it, ended with `status` if given."""
    c = _client()
    exp = tracking.ensure_experiment(c, "dag-failure-tests", None)
    dag_run_id = f"manual__{uuid.uuid4().hex}"
    run_id = tracking.get_or_create_run(c, exp, f"{DAG_ID}__{dag_run_id}", dag_run_id, {"dataset": "files"})
    if status:
        c.set_terminated(run_id, status)
    return dag_run_id, run_id


@pytest.fixture
def mlflow_default(monkeypatch: pytest.MonkeyPatch, no_creds: None) -> None:
    """The connection the callbacks use (mlflow_default), to the session's MLflow store."""
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "extra": {"tracking_uri": os.environ["MLFLOW_TRACKING_URI"]}}))


def _callbacks(dag, task_id: str) -> list:
    callbacks = dag.get_task(task_id).on_failure_callback
    return list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]


def test_the_dag_wires_the_callbacks_and_the_retry_policy(training_dag) -> None:
    for task in training_dag.tasks:
        assert rm.mark_mlflow_run_failed in _callbacks(training_dag, task.task_id), task.task_id
        assert task.retries >= 1  # other errors keep their retry
    assert training_dag.on_failure_callback == rm.mark_mlflow_run_failed_on_dag_failure
    policy = training_dag.get_task("load_and_split").retry_policy
    from airflow.sdk import RetryAction

    assert policy.evaluate(DataValidationError("items", "x.csv", ["bad"]), 1, 2).action == RetryAction.FAIL
    assert policy.evaluate(InputError("dataset='files' needs both paths"), 1, 2).action == RetryAction.FAIL
    assert policy.evaluate(ValueError("a bug"), 1, 2).action == RetryAction.DEFAULT
    assert policy.evaluate(ConnectionError("warehouse down"), 1, 2).action == RetryAction.DEFAULT


def test_task_callback_fails_the_running_mlflow_run_and_keeps_the_first_reason(training_dag, mlflow_default: None) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    dag_run_id, run_id = _pipeline_run()
    try:
        raise InputError("fusion_signals names no signal the data has: postgresql://recsys:hunter2@db:5432/wh")
    except InputError as cause:
        try:
            raise AirflowFailException(str(cause)) from cause
        except AirflowFailException as err:
            failed = err
    context = _context(training_dag, "embed_shard", dag_run_id, failed, map_index=2)
    for callback in _callbacks(training_dag, "embed_shard"):
        callback(context)  # as the task runner calls it
    run = _client().get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.FAILURE_TASK_TAG] == "embed_shard[2]"
    assert run.data.tags[tracking.FAILURE_ERROR_TAG] == "InputError"
    reason = run.data.tags[tracking.FAILURE_REASON_TAG]
    assert reason.startswith("fusion_signals names no signal") and "hunter2" not in reason and "postgresql://***@db:5432/wh" in reason

    # later reports keep the first task's reason: another shard, then the DAG run's own callback
    rm.mark_mlflow_run_failed(_context(training_dag, "embed_shard", dag_run_id, RuntimeError("shard 3 too"), map_index=3))
    training_dag.on_failure_callback({"dag": training_dag, "run_id": dag_run_id, "reason": "task_failure"})
    run = _client().get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[tracking.FAILURE_TASK_TAG] == "embed_shard[2]"
    assert run.data.tags[tracking.FAILURE_REASON_TAG] == reason


def test_a_failure_after_the_run_finished_is_recorded_but_keeps_finished(training_dag, mlflow_default: None) -> None:
    """publish fails after promote ended the run: the model version exists (maybe the champion), so
    the run stays FINISHED and carries the failure as tags."""
    dag_run_id, run_id = _pipeline_run("FINISHED")
    rm.mark_mlflow_run_failed(_context(training_dag, "publish", dag_run_id, RuntimeError("warehouse refused: " + "x" * 9000)))
    run = _client().get_run(run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags[tracking.FAILURE_TASK_TAG] == "publish" and tags[tracking.FAILURE_ERROR_TAG] == "RuntimeError"
    assert tags[tracking.FAILURE_REASON_TAG].startswith("warehouse refused: xxx") and len(tags[tracking.FAILURE_REASON_TAG]) <= tracking.MAX_REASON_CHARS
    assert "FINISHED" in tags[tracking.FAILURE_NOTE_TAG]


def test_dag_callback_fails_a_run_no_task_reported_and_a_task_then_refines_it(training_dag, mlflow_default: None) -> None:
    dag_run_id, run_id = _pipeline_run()
    rm.mark_mlflow_run_failed_on_dag_failure({"dag": training_dag, "run_id": dag_run_id, "reason": "timed_out"})
    run = _client().get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[tracking.FAILURE_REASON_TAG] == "the DAG run failed: timed_out"
    assert tracking.FAILURE_TASK_TAG not in run.data.tags
    # a task killed from outside: the DAG processor calls the task's callback without an exception
    rm.mark_mlflow_run_failed(_context(training_dag, "finetune", dag_run_id, None))
    tags = _client().get_run(run_id).data.tags
    assert tags[tracking.FAILURE_TASK_TAG] == "finetune" and "killed, timed out, or marked failed from outside" in tags[tracking.FAILURE_REASON_TAG]


def test_the_callback_never_raises(training_dag, mlflow_default: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    rm.mark_mlflow_run_failed(_context(training_dag, "validate", f"manual__{uuid.uuid4().hex}", RuntimeError("x")))  # no MLflow run yet: nothing to do
    rm.mark_mlflow_run_failed({"no": "context"})  # nothing usable: logged
    assert "could not mark the DAG run's MLflow run FAILED" in caplog.text
    caplog.clear()
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", '{"conn_type": "http", "extra": {"tracking_uri": "http://127.0.0.1:9"}}')  # nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    rm.mark_mlflow_run_failed_on_dag_failure({"dag": training_dag, "run_id": "manual__x", "reason": "task_failure"})
    assert "could not mark the DAG run's MLflow run FAILED" in caplog.text


def test_validation_gate_fails_an_unusable_setting_without_retry(monkeypatch: pytest.MonkeyPatch, no_creds: None) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    op = rm.ValidationGateOperator(task_id="validate", mlflow_conn_id=_store_conn(monkeypatch))
    context = {"dag_run": _dag_run(DAG_ID, f"manual__{uuid.uuid4().hex}"), "params": {"dataset": "files", "items_path": None, "interactions_path": None}}
    with pytest.raises(AirflowFailException, match="needs both items_path and interactions_path") as raised:
        op.execute(context)
    assert isinstance(raised.value.__cause__, InputError)
