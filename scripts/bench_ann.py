"""Exact vs FAISS ANN top-k search on seeded clustered unit vectors, to choose AnnConfig.min_items_for_ann.

For each catalog size: exact search (recsys.model.ann's batched numpy matmul + argpartition, the same code
VectorIndex uses below the threshold) ms/query; IVF (IndexIVFFlat, inner product) build seconds, and
ms/query and recall@k against exact for several nprobe; HNSW (IndexHNSWFlat) build seconds, ms/query
and recall@k. Queries are searched as one batch; ms/query = batch time / number of queries.

    .venv/bin/python scripts/bench_ann.py [--sizes 10000 50000 200000] [--queries 1000] [--k 10]

Items: 40 categories x 250 product lines, each item a noisy copy of its line's centre (unit norm);
a random pair has cosine ~0, a query's 10th neighbour ~0.35.
Queries: the normalised mean of 3 items of one category, like recsys.evaluation.evaluate.query_vectors.
"1 query per call" times 100 single-query searches (serving without batching).
HNSW builds above --hnsw-max-items (default 100k) are skipped: at 200k one takes ~2 minutes on 2
cores, which would push the default run past 4 minutes; pass --hnsw-max-items 200000 to include it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import faiss  # noqa: E402

from recsys.model.ann import AnnConfig, VectorIndex, default_nlist, recall_against_exact  # noqa: E402

DIM = 384
N_CATEGORIES = 40
LINES_PER_CATEGORY = 250  # 10,000 fine clusters: neighbourhoods straddle IVF cells, as in real embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered_vectors(n: int, n_queries: int, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(items [n, dim], queries [n_queries, dim]), all unit norm, hierarchical clusters, fixed seed."""
    rng = np.random.default_rng(seed)
    cat_c = _unit(rng.normal(size=(N_CATEGORIES, dim)))
    line_c = _unit(np.repeat(cat_c, LINES_PER_CATEGORY, axis=0) + 1.0 * _unit(rng.normal(size=(N_CATEGORIES * LINES_PER_CATEGORY, dim))))
    line = rng.integers(0, len(line_c), n)
    items = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 50_000):  # chunked to keep the float64 temporaries small
        e = min(n, s + 50_000)
        items[s:e] = _unit(line_c[line[s:e]] + 1.5 * _unit(rng.normal(size=(e - s, dim))))
    cat = line // LINES_PER_CATEGORY
    by_cat = [np.flatnonzero(cat == c) for c in range(N_CATEGORIES)]
    qcat = rng.integers(0, N_CATEGORIES, n_queries)
    picks = np.stack([rng.choice(by_cat[c], 3) for c in qcat])
    return items, _unit(items[picks].mean(axis=1))


def argpartition_top_k(items: np.ndarray, queries: np.ndarray, k: int, batch: int = 1024) -> np.ndarray:
    """Exact top-k the way recsys.evaluation.evaluate does it: batched matmul + argpartition + sort of the k."""
    out = []
    for s in range(0, len(queries), batch):
        scores = queries[s : s + batch] @ items.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out)


def _timed_search(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    index.search(queries[: min(len(queries), 32)], k)  # warm-up (page in, thread pool)
    t = time.perf_counter()
    _, ids = index.search(queries, k)
    return 1000 * (time.perf_counter() - t) / len(queries), ids


def _one_at_a_time(index: VectorIndex, queries: np.ndarray, k: int, n: int = 100) -> float:
    """ms per query when each request carries one query (serving without batching)."""
    index.search(queries[:1], k)
    t = time.perf_counter()
    for i in range(min(n, len(queries))):
        index.search(queries[i : i + 1], k)
    return 1000 * (time.perf_counter() - t) / min(n, len(queries))


def _recall(ids: np.ndarray, exact: np.ndarray, k: int) -> float:
    return sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(ids, exact)) / (len(ids) * k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--hnsw-max-items", type=int, default=100_000, help="skip HNSW builds above this many items")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    cores = os.cpu_count()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()} {platform.processor() or ''}".rstrip() + f", {cores} cores ({affinity} usable), load avg {load:.1f}")
    print(f"numpy {np.__version__}, faiss {faiss.__version__}, faiss omp threads {faiss.omp_get_max_threads()}")
    print(f"d={DIM}, queries={args.queries}, k={args.k}, batched search; ms/query = batch time / queries\n")
    t_all = time.perf_counter()
    k = args.k
    exact_cfg = AnnConfig(min_items_for_ann=2**62)
    for n in args.sizes:
        items, queries = clustered_vectors(n, args.queries, seed=args.seed)
        print(f"n={n:,}")
        argpartition_top_k(items, queries[:32], k)
        t = time.perf_counter()
        argpartition_top_k(items, queries, k)
        ms = 1000 * (time.perf_counter() - t) / len(queries)
        print(f"  exact  matmul+argpartition (evaluate) {ms:8.3f} ms/query  recall@{k} 1.000")
        exact = VectorIndex.build(items, exact_cfg)
        ms, exact_ids = _timed_search(exact, queries, k)
        print(f"  exact  VectorIndex (matmul+blockmax)  {ms:8.3f} ms/query  recall@{k} 1.000")
        print(f"  exact  VectorIndex, 1 query per call  {_one_at_a_time(exact, queries, k):8.3f} ms/query")

        t = time.perf_counter()
        ivf = VectorIndex.build(items, AnnConfig(min_items_for_ann=1, kind="ivf", seed=args.seed))
        build = time.perf_counter() - t
        print(f"  ivf    build {build:6.1f} s (nlist={default_nlist(n)})")
        for nprobe in args.nprobe:
            ms, ids = _timed_search(ivf.with_search_params(nprobe=nprobe), queries, k)
            print(f"  ivf    nprobe={nprobe:<4d}                     {ms:8.3f} ms/query  recall@{k} {_recall(ids, exact_ids, k):.3f}")
        print(f"  ivf    nprobe={ivf.config.nprobe:<4d} 1 query per call     {_one_at_a_time(ivf, queries, k):8.3f} ms/query")
        del ivf

        if n > args.hnsw_max_items:
            print(f"  hnsw   skipped: n > --hnsw-max-items={args.hnsw_max_items:,} (build takes minutes on 2 cores)")
        else:
            cfg = AnnConfig(min_items_for_ann=1, kind="hnsw", seed=args.seed)
            t = time.perf_counter()
            hnsw = VectorIndex.build(items, cfg)
            build = time.perf_counter() - t
            ms, ids = _timed_search(hnsw, queries, k)
            print(
                f"  hnsw   build {build:6.1f} s (M={cfg.hnsw_m}, efC={cfg.hnsw_ef_construction}) "
                f"efSearch={cfg.hnsw_ef_search} {ms:8.3f} ms/query  recall@{k} {_recall(ids, exact_ids, k):.3f}"
            )
            print(f"  hnsw   1 query per call                  {_one_at_a_time(hnsw, queries, k):8.3f} ms/query")
            del hnsw
        print(flush=True)
    print(f"total {time.perf_counter() - t_all:.0f} s")
    # sanity: the library's recall helper agrees with the one used above (cheap, smallest size)
    if args.sizes:
        items, queries = clustered_vectors(min(args.sizes), min(args.queries, 100), seed=args.seed)
        assert recall_against_exact(VectorIndex.build(items, exact_cfg), items, queries, k) == 1.0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
