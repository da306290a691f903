"""Memory and time of `recsys.stages.publish.publish_recommendations` on synthetic catalogs.

Publishing writes every catalog item's top-k related items and its bundle. Items are scored in
chunks of `chunk_size` single-item queries and each chunk's rows are inserted at once (inside the
one transaction), so the memory a publish needs is about

    2 x chunk_size x n_items x 8 bytes   (the chunk's float64 scores, argpartition's indices)
  + chunk_size x (k + bundle_size) rows  (the chunk's row dicts, then gone)

where an all-in-memory build (score everything, collect every row, insert at the end) needs
n_items^2 x 8 bytes of scores and n_items x (k + bundle_size) rows. For each backend (SQLite file;
PostgreSQL via deploy.postgres_local.LocalPostgres when its binaries are installed), catalog size
and chunk size this prints the rows written, seconds, and the peak RSS increase over the loaded
model (VmHWM reset through /proc/self/clear_refs, else ru_maxrss), plus tracemalloc's peak with
--tracemalloc (slower). Each measurement runs in a fresh child process, so peaks do not mix.
`--all-in-memory-max N` adds one chunk_size = n_items run (the all-in-memory behaviour) for
catalogs up to N items, for comparison.

    .venv/bin/python scripts/bench_publish_memory.py [--sizes 5000 20000] [--chunks 128 1024]
        [--dim 32] [--k 10] [--bundle-size 3] [--no-postgres] [--tracemalloc] [--all-in-memory-max 5000]

Catalog: n items in 50 categories, dim-d unit vectors (text-only model: cosine scoring), 4 purchases
per item by n/3 customers (co-purchase statistics for the bundles), seeded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

MiB = 1024 * 1024


def build_model(d: Path, n: int, dim: int, seed: int = 0) -> None:
    """A model directory (catalog + behaviour, no hybrid weights: an n x n matrix would dominate)."""
    import numpy as np

    from recsys.model.bundles import BundleCatalog
    from recsys.serving import save_behaviour, save_catalog

    rng = np.random.default_rng(seed)
    ids = [f"item-{i:06d}" for i in range(n)]
    titles = [f"Item {i}" for i in range(n)]
    centres = rng.normal(size=(50, dim))
    cat = rng.integers(0, 50, size=n)
    v = centres[cat] + 0.7 * rng.normal(size=(n, dim))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    users = rng.integers(0, max(n // 3, 1), size=4 * n)
    # customers buy within a few categories: items of one category co-occur
    bought = np.where(rng.random(4 * n) < 0.7, (users * 7919 + rng.integers(0, 3, size=4 * n)) % n, rng.integers(0, n, size=4 * n))
    d.mkdir(parents=True, exist_ok=True)
    save_catalog(d / "catalog.npz", ids, titles, v)
    behaviour = BundleCatalog.build(ids, titles, v, [f"Cat {c}" for c in cat], rng.uniform(1, 50, size=n), users, bought)
    save_behaviour(d / "behaviour.npz", behaviour)


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _hwm() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def child(args: argparse.Namespace) -> None:
    """One measurement: load the model, publish once, print a JSON line."""
    import tracemalloc

    from sqlalchemy import create_engine

    from recsys.stages.publish import publish_recommendations
    from recsys.serving import ItemRecommender

    rec = ItemRecommender.load(args.model_dir)
    engine = create_engine(args.url)
    with engine.begin():  # connect (driver, pool) outside the measurement
        pass
    import gc

    gc.collect()
    reset = _reset_hwm()
    base = _rss_now() if reset else _hwm()
    if args.tracemalloc:
        tracemalloc.start()
    t0 = time.perf_counter()
    res = publish_recommendations(engine, rec, f"bench-{args.chunk}", "1", k=args.k, bundle_size=args.bundle_size, chunk_size=args.chunk, progress=False)
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    peak = _hwm()
    engine.dispose()
    print(json.dumps({"rows": res.rows, "items": res.items, "seconds": seconds, "rss_increase": max(peak - base, 0), "tracemalloc_peak": traced, "hwm_reset": reset}))


def _measure(model_dir: Path, url: str, chunk: int, ns: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model-dir", str(model_dir), "--url", url, "--chunk", str(chunk),
           "--k", str(ns.k), "--bundle-size", str(ns.bundle_size)] + (["--tracemalloc"] if ns.tracemalloc else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"measurement failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--chunks", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--bundle-size", type=int, default=3)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--all-in-memory-max", type=int, default=5000, help="also run chunk_size = n_items up to this many items (0: never)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--chunk", type=int, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child:
        child(ns)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    backends: list[tuple[str, str]] = [("sqlite", f"sqlite:///{work / 'warehouse.db'}")]
    pg = None
    if not ns.no_postgres:
        try:
            from deploy.postgres_local import LocalPostgres, PostgresError, free_port, temp_data_dir

            try:
                pg = LocalPostgres(temp_data_dir("bench-publish-pg-"), free_port(), durable=False).start()
                backends.append(("postgresql", pg.create_database("warehouse")))
            except PostgresError as e:
                print(f"# PostgreSQL skipped: {e}".splitlines()[0])
        except ImportError as e:
            print(f"# PostgreSQL skipped: {e}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; dim={ns.dim} k={ns.k} bundle_size={ns.bundle_size}")
    print("# all-in-memory would hold n^2 x 8 B of scores: " + ", ".join(f"n={n}: {n * n * 8 / MiB:,.0f} MiB" for n in ns.sizes))
    header = f"{'backend':<11} {'items':>7} {'chunk':>6} {'rows':>9} {'seconds':>8} {'rows/s':>8} {'peak RSS +MiB':>14} {'scores/chunk MiB':>17}"
    if ns.tracemalloc:
        header += f" {'tracemalloc MiB':>16}"
    print(header)
    results = []
    try:
        for n in ns.sizes:
            model_dir = work / f"model-{n}"
            build_model(model_dir, n, ns.dim)
            chunks = list(ns.chunks) + ([n] if n <= ns.all_in_memory_max else [])
            for backend, url in backends:
                for chunk in chunks:
                    r = _measure(model_dir, url, chunk, ns)
                    r.update(backend=backend, chunk=chunk, n=n)
                    results.append(r)
                    label = f"{chunk}" if chunk != n else f"{chunk}*"
                    line = (f"{backend:<11} {n:>7} {label:>6} {r['rows']:>9} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>8.0f} "
                            f"{r['rss_increase'] / MiB:>14.1f} {min(chunk, n) * n * 8 / MiB:>17.1f}")
                    if ns.tracemalloc:
                        line += f" {r['tracemalloc_peak'] / MiB:>16.1f}"
                    print(line, flush=True)
        print("# * chunk_size = n_items: the all-in-memory behaviour (every score and every row at once)")
    finally:
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.data_dir.parent, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
