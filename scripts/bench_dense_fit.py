"""Cost of one dense hybrid fit (side-information EASE: an n x n Gram matrix inverted) as the catalog grows.

Why `max_dense_items` is 10,000: the hybrid is tuned with ~10-15 such fits per run, each O(n^3) time and
several n x n float64 copies of memory. Each size runs in its own process so peak RSS is its own.

    .venv/bin/python scripts/bench_dense_fit.py --sizes 2500,5000,10000,15000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def one(n: int) -> dict:
    import resource

    import numpy as np
    import scipy.sparse as sp

    from recsys.model.hybrid import side_information_ease

    rng = np.random.default_rng(0)
    users, per_user = 5 * n, 20
    rows = np.repeat(np.arange(users), per_user)
    cols = np.minimum((rng.pareto(1.2, size=users * per_user) * n / 50).astype(np.int64), n - 1)
    x = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(users, n))
    x.data[:] = 1.0
    v = rng.normal(size=(n, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    start = time.perf_counter()
    side_information_ease(x, v, 200.0, 200.0)
    seconds = time.perf_counter() - start
    return {"items": n, "fit_seconds": round(seconds, 1), "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2500,5000,10000,15000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    print(f"{'items':>8} {'one fit (s)':>12} {'peak RSS (GiB)':>15}")
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['items']:>8,} {r['fit_seconds']:>12} {r['peak_rss_gib']:>15}", flush=True)


if __name__ == "__main__":
    main()
