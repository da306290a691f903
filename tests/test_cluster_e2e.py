"""The distributed topology for real (`deploy.localcluster`, the same services as docker-compose.yml):
PostgreSQL, Redis, an MLflow tracking server on PostgreSQL, Airflow's API server, scheduler, DAG
processor and triggerer, and Celery workers, each a separate process.

One training run, triggered through the REST API, with fine-tuning routed to the `gpu` queue. The
worker serving that queue is killed (SIGKILL, its whole process group) in the middle of fine-tuning;
the scheduler notices the missing heartbeat and retries the task on a replacement worker; the run
succeeds; the registry holds exactly one version with the champion alias and nothing half-written;
the champion loads through the MLflow server and answers a request; the recommendations are published
to the PostgreSQL warehouse.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
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
    "finetune_on_gpu": True,
    "model_name": MODEL,
    "gate_baselines": "popularity",
    "fusion": False,  # this test is about the topology; the fusion stage is tested in test_e2e_training / test_promotion
}


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

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"] or saved["MLFLOW_TRACKING_URI"])


def test_training_survives_a_killed_worker_and_promotes_through_the_server(cluster, server_uris) -> None:
    lc = cluster
    api = lc.api()
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

    state = api.wait_for_run(DAG, run_id, timeout=1200, progress=lambda line: print(line[:300], flush=True))
    print(f"recovered and finished {time.monotonic() - killed_at:.0f} s after the kill")
    assert state == "success", api.task_instances(DAG, run_id)

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

    # the registry, through the MLflow server: one complete version, the champion alias on it
    c = tracking.client(lc.mlflow_url)
    versions = c.search_model_versions(f"name = '{MODEL}'")
    assert [v.version for v in versions] == ["1"]
    assert tracking.champion_version(c, MODEL) == "1"
    assert c.get_model_version(MODEL, "1").tags["gate.decision"] == "promoted"
    run = c.get_run(versions[0].run_id)
    assert run.data.tags["train.gpu_requested"] == "true"
    assert run.data.tags["recsys.run_key"] == f"{DAG}__{run_id}"

    # the champion loads through the server (artifacts served by it) and answers a request
    import mlflow
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")  # tracking.client pointed mlflow at the server
    item = model.unwrap_python_model().item_ids[0]
    recs = model.predict(pd.DataFrame({"item_id": [item]}), params={"k": 5})
    assert len(recs) == 5 and item not in set(recs["item_id"]) and recs["reasons"].str.len().gt(0).all()

    # published to the PostgreSQL warehouse, one version
    assert lc.warehouse_url.startswith("postgresql")
    assert published_version(lc.warehouse_url, MODEL) == "1"
