"""The human review step for real: Airflow's own scheduler, API server and executor (`airflow
standalone`), the training DAG triggered through the REST API with `require_approval`, a reviewer
answering through the REST API (what the UI's Required Actions page calls), and the alias moving only then.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from recsys import tracking

pytestmark = [pytest.mark.slow, pytest.mark.network]

MODEL = "review-test-model"
DAG = "recsys_training"
CONF = {"dataset": "online-retail", "sample_users": 250, "max_train_steps": 6, "train_batch_size": 16, "model_name": MODEL, "require_approval": True}
USER, PASSWORD = "reviewer", "review-password-for-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, {"error": err.read().decode(errors="replace")}
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, {}

    def wait(self, what: str, check, timeout: float, every: float = 3.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}")


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
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # only the DAG under test runs (unpaused below)
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
