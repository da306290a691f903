"""Wall time of the training DAG's sharded embedding on 1 vs 2 Celery workers (the non-Docker topology).

For each worker count, a fresh local cluster (PostgreSQL, Redis, MLflow server, Airflow API server,
scheduler, DAG processor, triggerer, N workers with one task slot each) and a fresh embedding cache;
the training DAG is triggered through the REST API on the full online-retail catalog and stopped once
`merge_embeddings` has succeeded. Printed: shards, the embedding stage's wall time (first shard start
→ merge end), the sum of the shard tasks' durations, and the speed-up.

    .venv/bin/python scripts/bench_sharded_embedding.py [--shard-size 500] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deploy.localcluster import ClusterConfig, LocalCluster, wait_until  # noqa: E402
from deploy.postgres_local import temp_data_dir  # noqa: E402


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _shard_plan(api, run_id: str) -> list[dict]:
    code, body = api.call("GET", f"/api/v2/dags/recsys_training/dagRuns/{run_id}/taskInstances/plan_embedding/xcomEntries/return_value?deserialize=true")
    return body["value"] if code == 200 else [{"stop": 0}]


def measure(workers: int, shard_size: int, wheel_cache: Path, conf: dict) -> dict:
    directory = temp_data_dir("recsys-bench-cluster-")
    home = directory.parent / "home"
    (home / "cache").mkdir(parents=True)
    for wheel in wheel_cache.glob("*.whl"):  # the data sets, but no cached item vectors
        (home / "cache" / wheel.name).symlink_to(wheel)
    cluster = LocalCluster(ClusterConfig.free_ports(directory, home, workers=workers, worker_concurrency=1))
    try:
        cluster.up(progress=lambda line: print(f"  [{workers} worker(s)] {line}", flush=True))
        api = cluster.api()
        run_id = api.trigger("recsys_training", conf | {"embed_shard_size": shard_size})

        def merged():
            tis = {(t["task_id"], t.get("map_index", -1)): t for t in api.task_instances("recsys_training", run_id)}
            merge = tis.get(("merge_embeddings", -1), {})
            if merge.get("state") in ("failed", "upstream_failed") or api.run_state("recsys_training", run_id) == "failed":
                raise RuntimeError(f"embedding failed: {merge}")
            return tis if merge.get("state") == "success" else None

        tis = wait_until("merge_embeddings", merged, 3600, 3)
        api.call("PATCH", f"/api/v2/dags/recsys_training/dagRuns/{run_id}", {"state": "failed"})  # the rest is not measured
        shards = [t for (task, _), t in tis.items() if task == "embed_shard"]
        start = min(_ts(t["start_date"]) for t in shards)
        end = _ts(tis[("merge_embeddings", -1)]["end_date"])
        return {
            "workers": workers,
            "shards": len(shards),
            "items": max(s["stop"] for s in _shard_plan(api, run_id)),
            "stage_wall_s": round(end - start, 1),
            "shard_task_seconds_sum": round(sum(t["duration"] or 0 for t in shards), 1),
        }
    finally:
        cluster.down(progress=lambda line: None)
        shutil.rmtree(directory.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--wheel-cache", type=Path, default=REPO / ".home" / "cache")
    args = parser.parse_args()
    conf = {"dataset": "online-retail", "max_train_steps": 0, "model_name": "bench-sharded-embedding", "publish": False}
    results = []
    for n in args.workers:
        t0 = time.monotonic()
        results.append(measure(n, args.shard_size, args.wheel_cache, conf))
        print(f"  {results[-1]} (whole measurement {time.monotonic() - t0:.0f} s)", flush=True)
    base = results[0]["stage_wall_s"]
    print(f"\nshard size {args.shard_size}, online-retail full catalog, 2 cores, one task slot per worker")
    print(f"{'workers':>8} {'shards':>7} {'items':>6} {'stage wall s':>13} {'sum of shard tasks s':>21} {'speed-up':>9}")
    for r in results:
        print(f"{r['workers']:>8} {r['shards']:>7} {r['items'] or '-':>6} {r['stage_wall_s']:>13} {r['shard_task_seconds_sum']:>21} {base / r['stage_wall_s']:>8.2f}x")


if __name__ == "__main__":
    main()
