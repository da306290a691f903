"""Publishing split across workers: one shard vs N shards in parallel processes, on a real model directory.

The training DAG publishes a promoted model as `plan_publish` -> `publish_shard` (mapped, one Celery task per
item range) -> `publish` (one swap). This script does the same with N worker processes on one machine: each
loads the model (as a Celery worker's task does), stages its range with `recsys.stages.publish.publish_shard`,
and the parent then swaps them in with `finish_publish`. For each worker count it prints the stage's wall time
(first shard start -> swap end), the swap, items/s, the rows and each worker's load time, staging time and peak
RSS, and checks that every count published the same lists, reasons and scores (a digest of the published table).

    .venv/bin/python scripts/bench_sharded_publish.py MODEL_DIR [--workers 1 2] [--items N] [--warehouse URL]

`--items N` publishes the first N catalog items only (a rate, not the whole catalog): the swap then needs a
catalog of N items, so the script swaps only when N is the whole catalog and otherwise reports the staging
alone. Each worker count gets a fresh SQLite warehouse unless `--warehouse` names one (PostgreSQL).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

MODEL = "bench-publish"
VERSION = "1"


def _stage(args: tuple[str, str, int, int, int, str]) -> dict:
    """One worker: load the model, stage items [start, stop) as shard `index`."""
    model_dir, url, index, start, stop, publish_id = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from recsys.serving import ItemRecommender
    from recsys.stages.publish import publish_shard

    began = time.time()
    rec = ItemRecommender.load(Path(model_dir))
    loaded = time.time()
    result = publish_shard(url, rec, MODEL, VERSION, publish_id, index, start, stop, progress=False)
    return {
        "index": index, "items": stop - start, "rows": result.rows, "load_s": loaded - began, "stage_s": result.seconds,
        "start": began, "end": time.time(), "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }  # fmt: skip


def _digest(url: str) -> str:
    from sqlalchemy import create_engine, select

    from recsys.stages.publish import published_table as t

    engine = create_engine(url)
    h = hashlib.sha256()
    with engine.connect() as conn:
        for row in conn.execute(select(t.c.item_id, t.c.kind, t.c.rank, t.c.recommended_item_id, t.c.score, t.c.reasons).order_by(t.c.item_id, t.c.kind, t.c.rank)):
            # scores to 1e-9: a row's float64 score may differ in its last bit with the chunk it was scored in
            h.update(repr((*row[:4], round(row[4], 9), row[5])).encode())
    engine.dispose()
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--items", type=int, default=0, help="publish the first N items only (0 = the whole catalog)")
    ap.add_argument("--warehouse", default=None, help="a warehouse URL (default: a fresh SQLite file per worker count)")
    args = ap.parse_args()

    from recsys.serving import ItemRecommender
    from recsys.stages.publish import finish_publish

    n_catalog = len(ItemRecommender.load(args.model_dir).item_ids)
    n = args.items or n_catalog
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"model {args.model_dir} ({n_catalog} items), publishing {n}; commit {commit}; {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            url = args.warehouse or f"sqlite:///{os.environ.get('BENCH_KEEP_DIR', tmp)}/warehouse-{workers}.db"
            publish_id = f"bench-{workers}-{int(time.time())}"
            bounds = [round(i * n / workers) for i in range(workers + 1)]
            jobs = [(str(args.model_dir), url, i, bounds[i], bounds[i + 1], publish_id) for i in range(workers)]
            began = time.time()
            with mp.get_context("spawn").Pool(workers) as pool:
                shards = pool.map(_stage, jobs)
            staged = time.time()
            swap_s = None
            if n == n_catalog:
                swap_s = finish_publish(url, MODEL, VERSION, publish_id, n, workers).seconds
                digests[workers] = _digest(url)
            wall = time.time() - began
            rows = sum(s["rows"] for s in shards)
            print(
                f"{workers} worker(s): wall {wall:.1f} s (staging {staged - began:.1f} s, swap {'not run: part of the catalog' if swap_s is None else f'{swap_s:.1f} s'}), "
                f"{n / wall:.1f} items/s, {rows} rows; per shard: "
                + "; ".join(f"#{s['index']} {s['items']} items load {s['load_s']:.1f} s + stage {s['stage_s']:.1f} s, peak RSS {s['peak_rss_gib']:.2f} GiB" for s in shards)
            )  # fmt: skip
    if len(set(digests.values())) > 1:
        raise SystemExit(f"the published rows differ between worker counts: {digests}")
    if digests:
        print(f"published lists, reasons and scores (to 1e-9) identical across worker counts (digest {next(iter(digests.values()))})")


if __name__ == "__main__":
    main()
