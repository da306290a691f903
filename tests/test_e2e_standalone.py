"""Airflow for real: its own scheduler, API server, DAG processor and executor (`airflow standalone`),
everything driven through the REST API.

1. Human review: the training DAG with `require_approval`; a reviewer answers through the REST API (what
   the UI's Required Actions page calls); the alias moves only then.
2. Drift: movielens-100k replayed week by week into the inbox; the ingest DAG loads it and updates the
   Asset; a champion is trained on the warehouse's data; a later real week makes the asset-scheduled
   drift monitor alarm and trigger a training run whose configuration says why, and which goes through
   the promotion gate.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.localcluster import AirflowApi, ClusterError, wait_until
from recsys import tracking

pytestmark = [pytest.mark.slow, pytest.mark.network]

MODEL = "review-test-model"
DAG = "recsys_training"
# the review flow is under test here, not the model: the fusion stage is off (tested in test_e2e_training)
CONF = {"dataset": "online-retail", "sample_users": 250, "max_train_steps": 6, "train_batch_size": 16, "model_name": MODEL, "require_approval": True, "fusion": False}
USER, PASSWORD = "reviewer", "review-password-for-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api(AirflowApi):
    """The project's REST client (deploy/localcluster.py), with waiting that fails the test."""

    def wait(self, what: str, check, timeout: float, every: float = 3.0):
        try:
            return wait_until(what, check, timeout, every)
        except ClusterError as err:
            raise AssertionError(str(err)) from err


@pytest.fixture(scope="module")
def airflow_server(session_home: Path):
    port = _free_port()
    passwords = session_home / "airflow" / "review-passwords.json"
    passwords.parent.mkdir(parents=True, exist_ok=True)
    passwords.write_text(json.dumps({USER: PASSWORD}))
    env = os.environ | {
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # only the DAGs under test run (unpaused by the tests)
    }
    log = (session_home / "airflow" / "standalone.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), "standalone"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    api = Api(f"http://127.0.0.1:{port}")
    try:
        api.wait("the API server", lambda: api.call("GET", "/api/v2/monitor/health")[0] == 200, timeout=240)
        status, body = api.call("POST", "/auth/token", {"username": USER, "password": PASSWORD})
        assert status in (200, 201), body
        api.token = body["access_token"]
        api.wait("the DAG to be parsed", lambda: api.call("GET", f"/api/v2/dags/{DAG}")[0] == 200, timeout=180)
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_champion_moves_only_after_a_reviewer_approves(airflow_server: Api) -> None:
    api = airflow_server
    api.call("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
    status, run = api.call("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": CONF})
    assert status in (200, 201), run
    run_id = run["dag_run_id"]
    ti = f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances"

    def review_waiting():
        code, body = api.call("GET", f"{ti}/review")
        state = body.get("state") if code == 200 else None
        if state in ("failed", "upstream_failed", "skipped"):
            raise AssertionError(f"review ended as {state}: {api.call('GET', ti)[1]}")
        run_state = api.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}")[1].get("state")
        if run_state == "failed":
            raise AssertionError(f"the run failed before the review: {api.call('GET', ti)[1]}")
        return state == "awaiting_input"

    api.wait("the review step to ask", review_waiting, timeout=900, every=5)
    c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
    # the gate said promote, but nothing moved yet: the reviewer decides
    assert tracking.champion_version(c, MODEL) is None
    code, detail = api.call("GET", f"{ti}/review/-1/hitlDetails")
    assert code == 200, detail
    assert "Gate: promoted" in detail["body"] and detail["options"] == ["Approve", "Reject"]
    # the body leads with three lines to act on (a first model: baselines beaten, no shelves to compare) and names the report
    assert detail["body"].startswith("**PROMOTED**: first model of this name, 4 of 4 baselines beaten on ndcg_at_10")
    assert "Shelves: no champion to compare with" in detail["body"] and "evaluation/report.html`" in detail["body"]
    # Airflow 3.3.2 + LocalExecutor race: an answer that arrives before the executor has reported the
    # parked workload's end makes the scheduler retry the task, which then asks again. People answer
    # after more than a few seconds; the test waits like one, and answers again if asked again.
    time.sleep(15)
    answered: set[int] = set()

    def finished():
        code, body = api.call("GET", f"{ti}/review")
        if body.get("state") == "awaiting_input" and body.get("try_number") not in answered:
            status, answer = api.call("PATCH", f"{ti}/review/-1/hitlDetails", {"chosen_options": ["Approve"]})
            assert status == 200, answer
            answered.add(body.get("try_number"))
        state = api.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}")[1].get("state")
        return state if state in ("success", "failed") else None

    assert api.wait("the run to finish", finished, timeout=600, every=5) == "success"
    assert answered
    states = {t["task_id"]: t["state"] for t in api.call("GET", ti)[1]["task_instances"]}
    assert states["review"] == states["promote"] == "success" and states["reject"] == "skipped"
    version = tracking.champion_version(c, MODEL)
    assert version is not None
    assert c.get_model_version(MODEL, version).tags["approved.by"] == USER


DRIFT_MODEL = "movielens-replay"
REFERENCE_WEEKS = 12  # weeks the champion is trained on (fewer leave too few returning users to evaluate)
ALARM_WEEK = 18  # weeks 12-18 arrive next; against the 12-week reference, week 18 alarms on real data (item popularity KS 0.15)


def _run_dag(api: Api, dag_id: str, conf: dict, timeout: float = 900) -> tuple[str, dict]:
    api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    status, run = api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
    assert status in (200, 201), run
    run_id = run["dag_run_id"]

    def done():
        state = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")[1].get("state")
        return state if state in ("success", "failed") else None

    state = api.wait(f"{dag_id} to finish", done, timeout=timeout, every=5)
    tis = _task_states(api, dag_id, run_id)
    assert state == "success", tis
    return run_id, tis


def _task_states(api: Api, dag_id: str, run_id: str) -> dict[str, str]:
    rows = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")[1]["task_instances"]
    return {t["task_id"]: t["state"] for t in rows}


def _runs(api: Api, dag_id: str) -> list[dict]:
    return api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")[1].get("dag_runs", [])


def _ingested(api: Api, dataset: str, interactions: int, timeout: float = 600) -> None:
    """Wait until the warehouse holds `interactions` rows of `dataset` and an ingest run marked the Asset.
    (Unpausing the ingest DAG also starts its scheduled run: either run may take the batches.)"""
    from recsys.data import warehouse
    from recsys.paths import project_paths

    engine = warehouse.make_engine(project_paths().warehouse_url)

    def landed():
        marked = any(_task_states(api, "recsys_ingest", r["dag_run_id"]).get("mark_updated") == "success" for r in _runs(api, "recsys_ingest"))
        return marked and warehouse.table_counts(engine, dataset)["interactions"] == interactions

    api.wait(f"{interactions} interactions of {dataset} in the warehouse", landed, timeout=timeout, every=5)
    engine.dispose()


def test_replayed_drift_triggers_a_training_run_that_says_why(airflow_server: Api) -> None:
    from recsys.paths import project_paths
    from recsys.data.replay import load_raw_source, replay, replay_windows

    api = airflow_server
    paths = project_paths()
    source = load_raw_source(paths, "movielens-100k")
    sizes = [len(frame) for _, frame in replay_windows(source, "W")]
    replay(paths, DRIFT_MODEL, source, freq="W", start=0, count=REFERENCE_WEEKS)
    _run_dag(api, "recsys_ingest", {"dataset": DRIFT_MODEL})
    _ingested(api, DRIFT_MODEL, sum(sizes[:REFERENCE_WEEKS]))
    # the champion: trained on what the warehouse holds (no fine-tuning: this test is about the flow; on 12
    # weeks of movielens EASE leads the hybrid, so this first model only has to beat popularity)
    conf = {"dataset": "warehouse", "warehouse_dataset": DRIFT_MODEL, "model_name": DRIFT_MODEL, "max_train_steps": 0, "gate_baselines": "popularity", "fusion": False}
    _run_dag(api, "recsys_training", conf)
    c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
    champion = tracking.champion_version(c, DRIFT_MODEL)
    assert champion is not None, [v.tags.get("gate.reasons") for v in c.search_model_versions(f"name = '{DRIFT_MODEL}'")]
    assert c.get_model_version(DRIFT_MODEL, champion).tags["dataset"] == DRIFT_MODEL

    # the monitor checks every model whose champion was trained on the updated data set
    api.call("PATCH", "/api/v2/dags/recsys_drift_monitor", {"is_paused": False})
    before = {r["dag_run_id"] for r in _runs(api, "recsys_training")}
    replay(paths, DRIFT_MODEL, source, freq="W", start=REFERENCE_WEEKS, count=ALARM_WEEK - REFERENCE_WEEKS + 1)
    _run_dag(api, "recsys_ingest", {"dataset": DRIFT_MODEL})
    _ingested(api, DRIFT_MODEL, sum(sizes[: ALARM_WEEK + 1]))

    def asset_monitor_run():
        runs = [r for r in _runs(api, "recsys_drift_monitor") if r.get("run_type") == "asset_triggered"]
        return runs[-1] if runs and runs[-1]["state"] in ("success", "failed") else None

    run = api.wait("the asset-triggered drift monitor", asset_monitor_run, timeout=600, every=5)
    assert run["state"] == "success", _task_states(api, "recsys_drift_monitor", run["dag_run_id"])

    def triggered():
        new = [r for r in _runs(api, "recsys_training") if r["dag_run_id"] not in before]
        return new[-1] if new and new[-1]["state"] in ("success", "failed") else None

    training = api.wait("the training run the monitor triggered", triggered, timeout=900, every=5)
    reason = training["conf"]["trigger_reason"]
    assert reason.startswith(f"drift on {DRIFT_MODEL} against champion v{champion}"), reason
    assert training["conf"]["dataset"] == "warehouse" and training["conf"]["warehouse_dataset"] == DRIFT_MODEL
    assert training["state"] == "success", _task_states(api, "recsys_training", training["dag_run_id"])
    exp = c.get_experiment_by_name("recsys-training")
    mlflow_run = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.RUN_KEY_TAG}` = 'recsys_training__{training['dag_run_id']}'")[0]
    assert mlflow_run.data.tags["trigger.reason"] == reason
    assert mlflow_run.data.tags["decision"] in ("promoted", "rejected")  # it went through the gate
    # the drift report is in MLflow too
    drift_exp = c.get_experiment_by_name("recsys-drift-monitor")
    drift_runs = c.search_runs([drift_exp.experiment_id], filter_string="tags.drift = 'true'")
    assert drift_runs and any(a.path == "drift/drift.html" for a in c.list_artifacts(drift_runs[0].info.run_id, "drift"))
