"""The distributed topology for real (`deploy.localcluster`, the same services as docker-compose.yml):
PostgreSQL, Redis, an MLflow tracking server on PostgreSQL, Airflow's API server, scheduler, DAG
processor and triggerer, and Celery workers, each a separate process.

One training run, triggered through the REST API, with fine-tuning routed to the `gpu` queue. The
worker serving that queue is killed (SIGKILL, its whole process group) in the middle of fine-tuning;
the scheduler notices the missing heartbeat and retries the task on a replacement worker; the run
succeeds; the registry holds exactly one version with the champion alias and nothing half-written;
the champion loads through the MLflow server and answers a request; the recommendations are published
to the PostgreSQL warehouse.

Who may do what (issue 18), on the same run: anonymous requests to both servers are refused; a viewer
cannot trigger; an operator triggers the run but cannot answer its promotion review; a reviewer can,
and is recorded; the workers log, register and promote through the authenticated MLflow server as its
service account; the read-only MLflow account reads the model but cannot move its alias; and no
generated secret appears in any log, the MLflow run's params and tags, or a task's rendered fields.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from recsys import tracking
from recsys.stages.publish import published_version

pytestmark = [pytest.mark.slow, pytest.mark.network]

DAG = "recsys_training"
MODEL = "cluster-test-model"
CONF = {
    "dataset": "online-retail",
    "sample_users": 120,
    "max_train_steps": 24,
    "train_batch_size": 16,
    "embed_shard_size": 600,
    "publish_shard_size": 600,  # publishing, too, is split across the workers and swapped in once
    "finetune_on_gpu": True,
    "model_name": MODEL,
    "gate_baselines": "popularity",
    "fusion": False,  # this test is about the topology; the fusion stage is tested in test_e2e_training / test_promotion
    "require_approval": True,  # a person answers the promotion review (roles)
}
VIEWER, OPERATOR, REVIEWER = "vera", "otto", "rita"


@pytest.fixture(scope="module")
def cluster(session_home: Path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make cluster-deps installs Debian's package)")
    from deploy.localcluster import ClusterConfig, LocalCluster
    from deploy.postgres_local import temp_data_dir

    directory = temp_data_dir("recsys-cluster-")  # traversable by the postgres OS user
    config = ClusterConfig.free_ports(directory, session_home, workers=1, worker_concurrency=2, gpu_worker=True, heartbeat_timeout=20)
    lc = LocalCluster(config)
    try:
        lc.up(progress=lambda line: print("[cluster]", line, flush=True))
        for user, role in ((VIEWER, "Viewer"), (OPERATOR, "Operator"), (REVIEWER, "Reviewer")):
            lc.add_user(user, role)
        yield lc
    finally:
        lc.down(progress=lambda line: print("[cluster]", line, flush=True))
        shutil.rmtree(directory.parent, ignore_errors=True)


def _ti(api, run_id: str, task_id: str) -> dict:
    code, body = api.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}")
    return body if code == 200 else {}


def _log(lc, name: str) -> str:
    return (lc.logs / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def server_uris():
    """mlflow.set_tracking_uri also sets the env var: give the rest of the session its own store back."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"] or saved["MLFLOW_TRACKING_URI"])


def _status(url: str, method: str = "GET") -> int:
    """The HTTP status of an anonymous request."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, data=b"{}" if method != "GET" else None, headers={"Content-Type": "application/json"}), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _secrets(lc) -> dict[str, str]:
    """Every secret the deployment generated (file name -> value), the PostgreSQL password included."""
    found = {p.name: p.read_text().strip() for p in (lc.dir / "secrets").rglob("*") if p.is_file() and not p.name.endswith(".ini")}
    assert found["postgres-password"] == lc.postgres.password
    return found


def test_training_survives_a_killed_worker_and_promotes_through_the_server(cluster, server_uris) -> None:
    lc = cluster
    # nobody anonymous: the Airflow REST API and the UI's own API, the MLflow API and UI
    assert _status(f"{lc.api_url}/api/v2/dags") == 401
    assert _status(f"{lc.api_url}/api/v2/dags/{DAG}/dagRuns", "POST") == 401
    assert _status(f"{lc.api_url}/ui/dags") == 401
    assert _status(f"{lc.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1") == 401
    assert _status(f"{lc.mlflow_url}/") == 401
    # a viewer reads but cannot trigger; the run is triggered by an operator
    viewer = lc.api(VIEWER)
    assert viewer.call("GET", f"/api/v2/dags/{DAG}")[0] == 200
    assert viewer.call("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": CONF})[0] == 403
    api = lc.api(OPERATOR)
    run_id = api.trigger(DAG, CONF)

    # fine-tuning runs on the gpu queue's worker: kill that worker mid-task
    def finetune_running():
        state = api.run_state(DAG, run_id)
        if state == "failed":
            raise AssertionError(f"run failed before fine-tuning: {api.task_instances(DAG, run_id)}")
        return _ti(api, run_id, "finetune_gpu").get("state") == "running"

    from deploy.localcluster import wait_until

    wait_until("finetune_gpu to run", finetune_running, 900, 2)
    time.sleep(10)  # well inside the task: the model is loaded, training steps are running
    assert _ti(api, run_id, "finetune_gpu")["state"] == "running"
    lc.kill_service("worker-gpu", signal.SIGKILL)
    wait_until("the killed worker to be gone", lambda: not lc.alive("worker-gpu"), 30, 0.5)
    killed_at = time.monotonic()
    # the scheduler fails the orphaned attempt (no heartbeat) and schedules a retry
    wait_until("the orphaned attempt to be failed and retried", lambda: _ti(api, run_id, "finetune_gpu").get("try_number", 1) >= 2 or _ti(api, run_id, "finetune_gpu").get("state") == "up_for_retry", 300, 3)
    lc.start_worker("worker-gpu-2", queues="gpu")

    # the gate promotes, and the run waits for a person: the operator may not answer, the reviewer may
    def review_waiting():
        if api.run_state(DAG, run_id) == "failed":
            raise AssertionError(f"the run failed before the review: {api.task_instances(DAG, run_id)}")
        return _ti(api, run_id, "review").get("state") == "awaiting_input"

    wait_until("the review to ask", review_waiting, 1200, 3)
    print(f"recovered and reached the review {time.monotonic() - killed_at:.0f} s after the kill")
    hitl = f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails"
    assert api.call("PATCH", hitl, {"chosen_options": ["Approve"]})[0] == 403
    assert viewer.call("PATCH", hitl, {"chosen_options": ["Approve"]})[0] == 403
    reviewer = lc.api(REVIEWER)
    assert reviewer.call("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": CONF})[0] == 403
    time.sleep(15)  # people answer after a while: an answer racing the parked task's hand-back makes Airflow ask again
    answered: set[int] = set()

    def answered_and_finished():
        ti = _ti(api, run_id, "review")
        if ti.get("state") == "awaiting_input" and ti.get("try_number") not in answered:
            code, body = reviewer.call("PATCH", hitl, {"chosen_options": ["Approve"]})
            assert code == 200, body
            answered.add(ti.get("try_number"))
        state = api.run_state(DAG, run_id)
        return state if state in ("success", "failed") else None

    state = wait_until("the run to finish", answered_and_finished, 900, 5)
    assert state == "success", api.task_instances(DAG, run_id)
    assert answered
    code, detail = api.call("GET", hitl)
    assert code == 200 and detail["responded_by_user"]["name"] == REVIEWER, detail

    tis = api.task_instances(DAG, run_id)
    finetune = _ti(api, run_id, "finetune_gpu")
    assert finetune["state"] == "success" and finetune["try_number"] == 2 and finetune["queue"] == "gpu"
    assert _ti(api, run_id, "finetune")["state"] == "skipped"
    # only workers serving the gpu queue ever ran it
    assert "finetune_gpu" in _log(lc, "worker-gpu-2") and "finetune_gpu" not in _log(lc, "worker-1")
    # the catalog was embedded by several mapped tasks, merged once
    shards = [t for t in tis if t["task_id"] == "embed_shard"]
    assert len(shards) >= 2 and all(t["state"] == "success" for t in shards)
    assert _ti(api, run_id, "merge_embeddings")["state"] == "success"
    published_by = [t for t in tis if t["task_id"] == "publish_shard"]
    assert len(published_by) >= 2 and all(t["state"] == "success" for t in published_by)
    assert _ti(api, run_id, "publish")["state"] == "success"

    # the registry, through the MLflow server as the read-only reviewer account: one complete version,
    # the champion alias on it, approved by the reviewer; written by the workers' service account
    from deploy.localcluster import MLFLOW_READER, MLFLOW_SERVICE

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = MLFLOW_READER, lc.mlflow_password(MLFLOW_READER)
    c = tracking.client(lc.mlflow_url)
    versions = c.search_model_versions(f"name = '{MODEL}'")
    assert [v.version for v in versions] == ["1"]
    assert tracking.champion_version(c, MODEL) == "1"
    tags = c.get_model_version(MODEL, "1").tags
    assert tags["gate.decision"] == "promoted" and tags["approved.by"] == REVIEWER
    run = c.get_run(versions[0].run_id)
    assert run.data.tags["train.gpu_requested"] == "true"
    assert run.data.tags["recsys.run_key"] == f"{DAG}__{run_id}"
    # the workers' account created the experiment and the model (MANAGE); the reviewer account was given READ
    from deploy import mlflow_auth
    from deploy.localcluster import ADMIN

    def permission(account: str, resource_type: str, resource_id: str) -> str:
        return mlflow_auth.permission(lc.mlflow_url, lc.mlflow_password(ADMIN), account, resource_type, resource_id)

    for resource in (("registered_model", MODEL), ("experiment", run.info.experiment_id)):
        assert (permission(MLFLOW_SERVICE, *resource), permission(MLFLOW_READER, *resource)) == ("MANAGE", "READ"), resource
    import mlflow.exceptions

    for write in (lambda: c.set_registered_model_alias(MODEL, "champion", "1"), lambda: c.set_tag(run.info.run_id, "x", "y")):
        with pytest.raises(mlflow.exceptions.MlflowException, match="403|Permission denied"):
            write()

    # no generated secret in a log, the run's params and tags, or a task's rendered fields
    secrets = _secrets(lc)
    assert len(secrets) >= 8 and all(len(v) >= 16 for v in secrets.values()), sorted(secrets)
    logs = [p for p in lc.dir.rglob("*.log") if p.is_file()]
    assert any("taskinstance" in str(p) or "run_id=" in str(p) for p in logs), "no task log found"
    haystacks = {str(p): p.read_text(errors="replace") for p in logs}
    haystacks["mlflow params and tags"] = json.dumps([run.data.params, run.data.tags])
    haystacks["rendered fields"] = json.dumps([t.get("rendered_fields") for t in api.task_instances(DAG, run_id)])
    leaks = [(name, where) for name, value in secrets.items() for where, text in haystacks.items() if value in text]
    assert not leaks, leaks

    # the champion loads through the server (artifacts served by it) and answers a request
    import mlflow
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")  # as the reviewer account: READ is enough
    item = model.unwrap_python_model().item_ids[0]
    recs = model.predict(pd.DataFrame({"item_id": [item]}), params={"k": 5})
    assert len(recs) == 5 and item not in set(recs["item_id"]) and recs["reasons"].str.len().gt(0).all()

    # published to the PostgreSQL warehouse, one version
    assert lc.warehouse_url.startswith("postgresql")
    assert published_version(lc.warehouse_url, MODEL) == "1"
