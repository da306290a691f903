"""Cost of the bundle statistics a model carries (`behaviour.npz`): build time, peak memory, file size,
load time and pairs kept, for a training run's split, with the co-purchase pairs pruned below
`--min-count` customers (1 = every pair, what versions before the pruning stored).

    .venv/bin/python scripts/bench_behaviour.py --run-dir RUN_DIR [--min-count 2]

Run once per setting: the peak RSS is the process's own. On a checkout from before the pruning (no
`min_count` argument) `--min-count 1` measures its single product.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--min-count", type=int, default=2)
    args = ap.parse_args()

    from recsys.model import bundles
    from recsys.run import RunFolder, load_split
    from recsys.serving import _load_behaviour, save_behaviour

    run = RunFolder(args.run_dir)
    split, catalog = load_split(run)
    vectors = np.zeros((len(catalog), 1), dtype=np.float32)  # vectors are not what is measured
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.perf_counter()
    try:
        cat = bundles.bundle_catalog(split, catalog, vectors, min_count=args.min_count)
    except TypeError:  # a checkout from before the pruning: every pair, one product
        if args.min_count != 1:
            raise
        cat = bundles.bundle_catalog(split, catalog, vectors)
    build_s = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{len(catalog):,} items, {(split.pairs['part'] == 'train').sum():,} training pairs; min_count {args.min_count}")
    print(f"build {build_s:.1f} s; peak RSS {rss:.2f} GiB (before the build {rss0:.2f} GiB)")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        path = save_behaviour(Path(d) / "behaviour.npz", cat)
        save_s = time.perf_counter() - t0
        size = path.stat().st_size / 2**30
        t0 = time.perf_counter()
        back = _load_behaviour(str(path), cat.item_ids, cat.titles, vectors)
        load_s = time.perf_counter() - t0
    print(f"pairs kept {cat.cooc.nnz:,}; behaviour.npz {size:.2f} GiB, saved in {save_s:.1f} s, loaded in {load_s:.1f} s "
          f"(cooc in memory {back.cooc.data.nbytes / 2**30 + back.cooc.indices.nbytes / 2**30:.2f} GiB); "
          f"peak RSS of the whole run {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
