"""Time and peak memory of `recsys ingest` on one large inbox batch (the size of a year of a shop's events).

Writes a synthetic batch in the canonical schema (CSV: `--items` items with title, category and
price; `--rows` interactions with user, item, event, timestamp, basket and quantity, seeded), then
ingests it into a fresh SQLite warehouse in a CHILD process, so the peak resident memory measured
(ru_maxrss of that child) is the ingest's alone, not the generator's. Prints rows, seconds, peak
RSS and the warehouse counts after; `--twice` ingests the same batch again (idempotent: no new rows).

    .venv/bin/python scripts/bench_ingest.py [--rows 2000000] [--items 50000] [--home DIR] [--twice]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

GiB = 1024**3


def write_batch(batch: Path, n_rows: int, n_items: int, seed: int = 0) -> None:
    """items.csv + interactions.csv + _READY in `batch` (written in slices: the generator stays small)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    batch.mkdir(parents=True, exist_ok=True)
    ids = np.array([f"SKU-{i:07d}" for i in range(n_items)])
    pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"Product {i} in aisle {i % 300}" for i in range(n_items)],
            "category": [f"Dept {i % 20}/Aisle {i % 300}" for i in range(n_items)],
            "price": np.round(rng.lognormal(1.0, 0.8, n_items), 2),
        }
    ).to_csv(batch / "items.csv", index=False)
    start = pd.Timestamp("2025-01-01", tz="UTC").value // 10**9
    year = 365 * 86400
    popularity = rng.zipf(1.3, size=n_rows) % n_items
    step = 250_000
    with open(batch / "interactions.csv", "w") as fh:
        for lo in range(0, n_rows, step):
            n = min(step, n_rows - lo)
            users = rng.integers(0, max(n_rows // 20, 1), size=n)
            ts = pd.to_datetime(start + rng.integers(0, year, size=n), unit="s", utc=True)
            pd.DataFrame(
                {
                    "user_id": [f"cust{u}" for u in users],
                    "item_id": ids[popularity[lo : lo + n]],
                    "event": rng.choice(["view", "cart", "purchase"], size=n, p=[0.6, 0.15, 0.25]),
                    "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "basket_id": [f"b{u}-{d}" for u, d in zip(users, ts.day_of_year)],
                    "quantity": rng.integers(1, 4, size=n),
                }
            ).to_csv(fh, index=False, header=lo == 0)
    (batch / "_READY").touch()


def ingest_child(home: str) -> None:
    """Run in the child: one `ingest_all` over the home's inbox; print a JSON line."""
    from recsys.stages.ops import ingest_all

    t0 = time.perf_counter()
    result = ingest_all(None, home=home)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "accepted": len(result["accepted"]), "rejected": [b["error"] for b in result["rejected"]], "counts": result["counts"]}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--home", default=None, help="project home to use (default: a temporary one, removed after)")
    ap.add_argument("--twice", action="store_true", help="ingest the same batch a second time (idempotence)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        ingest_child(args.child)
        return 0
    home = Path(args.home or tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        rounds = 2 if args.twice else 1
        for r in range(rounds):
            batch = home / "inbox" / "bench-shop" / f"batch-{r:02d}"
            if r == 0:
                t0 = time.perf_counter()
                write_batch(batch, args.rows, args.items)
                print(f"wrote {args.rows:,} interactions and {args.items:,} items in {time.perf_counter() - t0:.0f} s "
                      f"({(batch / 'interactions.csv').stat().st_size / 2**20:.0f} MiB CSV)")
                first = batch
            else:  # the same files again under a new batch id: nothing new may land
                shutil.copytree(home / "inbox" / "bench-shop" / ".done" / first.name, batch)
                (batch / "_READY").touch()
            out = subprocess.run([sys.executable, __file__, "--child", str(home)], capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            doc = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"ingest {r + 1}: {doc['seconds']:.0f} s ({doc['seconds'] / 60:.1f} min), peak RSS {doc['peak_rss'] / GiB:.2f} GiB, "
                  f"accepted {doc['accepted']}, rejected {len(doc['rejected'])}, warehouse {doc['counts']}")
            for err in doc["rejected"]:
                print(f"  rejected: {err[:500]}")
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
