"""Top-k inner-product search over L2-normalised item vectors: exact for ordinary catalogs, FAISS ANN for large ones.

The recommender scores an item by the inner product of unit vectors (cosine similarity). For the
catalog sizes this project mostly sees, an exact batched matrix product is fast enough and has
recall 1.0 by construction, so an approximate index is only built once the catalog passes
``AnnConfig.min_items_for_ann``; below it ``VectorIndex`` is exact. Use ``recall_against_exact`` to
measure what an ANN index gives up, and ``scripts/bench_ann.py`` for the latency side.

    index = VectorIndex.build(item_vectors, AnnConfig())
    scores, ids = index.search(query_vectors, k=10, exclude=[seen_ids_of_query_0, ...])
    index.save("artifacts/ann"); index = VectorIndex.load("artifacts/ann")

Vectors are not normalised here: pass unit vectors if you want cosine similarity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

KINDS = ("ivf", "hnsw")
INDEX_FILE = "index.faiss"
META_FILE = "ann.json"
FORMAT_VERSION = 1

# faiss warns (on stderr) when k-means gets fewer than 39 points per centroid; we never ask for that.
_MIN_POINTS_PER_CENTROID = 39
# Training sample per IVF centroid: enough for stable centroids, a fraction of the cost of faiss's
# default 256 (IVF build time is dominated by k-means on 2 cores).
_TRAIN_POINTS_PER_CENTROID = 64
# k-means iterations for the IVF centroids: 10 gives the same recall as faiss's default 25 on the
# benchmark's 200k x 384 set (0.83 vs 0.83 at nprobe=16, 1.0 vs 1.0 at 64) for less than half the build time.
_KMEANS_ITERS = 10
# Exact search scores queries in batches whose score matrix stays under this many float32s (128 MiB).
_EXACT_BATCH_FLOATS = 32 * 1024 * 1024


@dataclass(frozen=True)
class AnnConfig:
    """When to use an approximate index, and how to build and search it.

    min_items_for_ann: catalogs with fewer items are searched exactly. Why 50k: on the project's
        2-core CPU (scripts/bench_ann.py, d=384, k=10, shared machine at load ~7) exact search of a
        50k catalog costs ~0.7-0.9 ms/query in a batch of 1,000 and ~9-14 ms for a lone query (reading
        50k x 384 floats, 77 MB, is memory-bound), with recall 1.0 and no index to train, store or keep
        in step with the catalog; at 10k it is ~0.2 ms batched / ~2-3 ms alone. IVF at 50k answers
        in ~0.1-0.3 ms but costs a 6-8 s build and recall@10 0.95 at nprobe=16. At 200k exact grows
        to ~3 ms batched / ~32-37 ms alone, past a serving budget, while IVF nprobe=64 gives
        recall@10 1.00 at ~0.65 ms/query (build ~25 s): that is where the ANN index pays for itself.
    nlist: IVF inverted lists; None -> ~4*sqrt(n), capped so k-means gets >= 39 points per list.
    nprobe: IVF lists visited per query (recall/latency knob; nprobe == nlist is exhaustive). Recall at
        a fixed nprobe falls as nlist grows with n (benchmark, nprobe=16: 0.95 at 50k, 0.83 at
        200k); ~nlist/28 (64 at 200k) kept recall@10 at 1.00 there.
    hnsw_m: HNSW graph degree.
    hnsw_ef_construction / hnsw_ef_search: HNSW candidate-list sizes at build / query time
        (query-time value is raised to the number of results fetched when that is larger).
    kind: "ivf" (IndexIVFFlat, inner product) or "hnsw" (IndexHNSWFlat, inner product).
    seed: seeds the k-means training sample and k-means itself, so IVF builds are reproducible.
        HNSW builds are reproducible only with threads=1 (faiss inserts in parallel otherwise).
    threads: OpenMP threads faiss may use while building and searching; None leaves faiss's default.
    """

    min_items_for_ann: int = 50_000  # below: exact matmul (see above for the benchmark numbers behind 50k)
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    kind: str = "ivf"
    seed: int = 42
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"AnnConfig.kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("min_items_for_ann", "nprobe", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"AnnConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"AnnConfig.nlist must be >= 1 or None, got {self.nlist!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"AnnConfig.threads must be >= 1 or None, got {self.threads!r}")


def default_nlist(n: int) -> int:
    """~4*sqrt(n) inverted lists, but never so many that k-means has < 39 training points per list."""
    return max(1, min(round(4 * math.sqrt(n)), n // _MIN_POINTS_PER_CENTROID))


@contextlib.contextmanager
def _omp_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _as_matrix(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, d], got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} have dimension {a.shape[1]}, the index has {dim}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return a


def _select_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (values, column ids) per row of a [b, n] score matrix, best first, ties by lower id; k <= n.

    Same answer as argpartition + sort (recsys.evaluation.evaluate.top_k_from_scores), several times faster
    for large n: the k-th largest of ~8k block maxima is a lower bound on each row's k-th largest
    score, so only the few scores at or above it need sorting.
    """
    b, n = scores.shape
    n_blocks = max(8 * k, 64)
    if n < 4 * n_blocks:  # small catalog: a plain sort is cheap
        ids = np.broadcast_to(np.arange(n), scores.shape)
        order = np.lexsort((ids, -scores), axis=-1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), order
    width = n // n_blocks
    head = n_blocks * width
    block_max = scores[:, :head].reshape(b, n_blocks, width).max(axis=2)
    if head < n:
        block_max = np.concatenate([block_max, scores[:, head:].max(axis=1, keepdims=True)], axis=1)
    # k distinct blocks reach this value, so every row has >= k candidates
    threshold = np.partition(block_max, block_max.shape[1] - k, axis=1)[:, block_max.shape[1] - k]
    rows, cols = np.nonzero(scores >= threshold[:, None])
    vals = scores[rows, cols]
    order = np.lexsort((cols, -vals, rows))  # by row, then best score, then lower id
    rows, cols, vals = rows[order], cols[order], vals[order]
    first = np.searchsorted(rows, np.arange(b))
    take = first[:, None] + np.arange(k)
    return vals[take], cols[take]


def _exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Batched matmul, excluded ids set to -inf, exact top-k; ties broken by the lower id."""
    n = len(vectors)
    nq = len(queries)
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    kk = min(k, n)
    batch = max(1, _EXACT_BATCH_FLOATS // max(n, 1))
    for start in range(0, nq, batch):
        scores = queries[start : start + batch] @ vectors.T
        if exclude is not None:
            for row in range(len(scores)):
                scores[row, exclude[start + row]] = -np.inf
        vals, ids = _select_top_k(scores, kk)
        ids = np.where(np.isneginf(vals), -1, ids)  # excluded items, only reached once the catalog is exhausted
        out_s[start : start + len(scores), :kk] = vals
        out_i[start : start + len(scores), :kk] = ids
    return out_s, out_i


class VectorIndex:
    """Top-k inner-product search; exact below ``AnnConfig.min_items_for_ann`` items, FAISS ANN above.

    Build with ``VectorIndex.build``, or ``VectorIndex.load`` a saved one. Searching is read-only and
    passes search parameters per call, so one index may serve several threads.
    """

    def __init__(self, index: faiss.Index, config: AnnConfig, kind: str, nlist: int | None = None):
        self._index = index
        self.config = config
        self._kind = kind  # "exact", "ivf" or "hnsw"
        self._nlist = nlist
        self._vectors: np.ndarray | None = None
        if kind == "exact":  # a numpy view of IndexFlatIP's storage: exact search is a plain matmul
            self._vectors = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, config: AnnConfig | None = None) -> VectorIndex:
        """Exact index when len(vectors) < config.min_items_for_ann, else the ANN kind in config."""
        config = config or AnnConfig()
        x = _as_matrix(vectors, "vectors")
        n, d = x.shape
        if n == 0 or d == 0:
            raise ValueError(f"cannot index an empty catalog (vectors shape {x.shape})")
        with _omp_threads(config.threads):
            if n < config.min_items_for_ann:
                index = faiss.IndexFlatIP(d)
                index.add(x)
                return cls(index, config, "exact")
            if config.kind == "hnsw":
                index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = config.hnsw_ef_construction
                index.hnsw.efSearch = config.hnsw_ef_search
                index.add(x)
                return cls(index, config, "hnsw")
            nlist = min(config.nlist, n) if config.nlist is not None else default_nlist(n)
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.own_fields = True
            quantizer.this.disown()  # the IVF index frees it
            index.cp.seed = config.seed
            index.cp.niter = _KMEANS_ITERS
            index.cp.spherical = True  # unit-norm centroids: the right k-means for cosine similarity
            n_train = min(n, max(nlist * _TRAIN_POINTS_PER_CENTROID, nlist * _MIN_POINTS_PER_CENTROID))
            index.cp.max_points_per_centroid = max(n_train // nlist + 1, 1)  # keep faiss from resampling
            rng = np.random.default_rng(config.seed)
            sample = x if n_train >= n else x[np.sort(rng.choice(n, n_train, replace=False))]
            index.train(sample)
            index.add(x)
            index.nprobe = min(config.nprobe, nlist)
            return cls(index, config, "ivf", nlist)

    # ---- properties ---------------------------------------------------------------------------

    @property
    def is_exact(self) -> bool:
        return self._kind == "exact"

    @property
    def kind(self) -> str:
        """"exact", "ivf" or "hnsw": what was actually built (config.kind applies only above the threshold)."""
        return self._kind

    @property
    def nlist(self) -> int | None:
        return self._nlist

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        extra = f", nlist={self._nlist}, nprobe={self.config.nprobe}" if self._kind == "ivf" else ""
        return f"VectorIndex(kind={self._kind!r}, n={len(self)}, d={self.dim}{extra})"

    def with_search_params(self, *, nprobe: int | None = None, hnsw_ef_search: int | None = None) -> VectorIndex:
        """The same built index (shared, not copied) searched with other query-time parameters."""
        changes = {}
        if nprobe is not None:
            changes["nprobe"] = nprobe
        if hnsw_ef_search is not None:
            changes["hnsw_ef_search"] = hnsw_ef_search
        other = VectorIndex.__new__(VectorIndex)
        other.__dict__.update(self.__dict__)
        other.config = dataclasses.replace(self.config, **changes)
        return other

    # ---- search -------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores float32 [nq, k], ids int64 [nq, k]) per query, best first.

        exclude: one array of item ids per query that must not be returned (e.g. items the user already
        has); ids outside the catalog are ignored. The ANN kinds over-fetch k + len(exclude) and filter,
        so k results remain whenever the catalog has k non-excluded items (a query whose probed lists or
        graph walk come up short is re-run exhaustively). Only when the catalog is exhausted are rows
        padded with id -1 and score -inf.
        """
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_matrix(queries, "queries", self.dim)
        nq, n = len(q), len(self)
        excl = None
        if exclude is not None:
            if len(exclude) != nq:
                raise ValueError(f"exclude has {len(exclude)} entries, expected one per query ({nq})")
            excl = []
            for e in exclude:
                e = np.unique(np.asarray(e, dtype=np.int64).ravel())
                excl.append(e[(e >= 0) & (e < n)])
        if nq == 0:
            return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
        with _omp_threads(self.config.threads):
            if self._kind == "exact":
                return _exact_top_k(self._vectors, q, k, excl)
            return self._ann_search(q, k, excl)

    def _params(self, fetch: int, exhaustive: bool = False):
        if self._kind == "ivf":
            return faiss.SearchParametersIVF(nprobe=self._nlist if exhaustive else min(self.config.nprobe, self._nlist))
        return faiss.SearchParametersHNSW(efSearch=max(self.config.hnsw_ef_search, fetch))

    def _raw(self, q: np.ndarray, fetch: int, exhaustive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if exhaustive and self._kind == "hnsw":  # the graph's flat storage: a brute-force scan
            return faiss.downcast_index(self._index.storage).search(q, fetch)
        return self._index.search(q, fetch, params=self._params(fetch, exhaustive))

    def _ann_search(self, q: np.ndarray, k: int, excl: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        nq, n = len(q), len(self)
        n_excl = np.zeros(nq, dtype=np.int64) if excl is None else np.array([len(e) for e in excl], dtype=np.int64)
        want = np.minimum(k, n - n_excl)  # results each row must end up with
        # Group rows by over-fetch size (rounded up to a power of two) so one long history doesn't
        # make every query in the batch fetch thousands of candidates.
        extra = np.where(n_excl > 0, 2 ** np.ceil(np.log2(np.maximum(n_excl, 1))).astype(np.int64), 0)
        fetch = np.minimum(n, k + extra)
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        for f in np.unique(fetch):
            rows = np.flatnonzero(fetch == f)
            for exhaustive in (False, True):
                s, i = self._raw(q[rows], int(f), exhaustive)
                got = self._filter(s, i, k, rows, excl, out_s, out_i)
                rows = rows[got < want[rows]]
                if len(rows) == 0:
                    break
        return out_s, out_i

    @staticmethod
    def _filter(s, i, k, rows, excl, out_s, out_i) -> np.ndarray:
        """Drop padding and excluded ids, keep the first k survivors per row; returns survivors per row."""
        keep = i >= 0
        if excl is not None:
            for r, row in enumerate(rows):
                if len(excl[row]):
                    keep[r] &= ~np.isin(i[r], excl[row])
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        ok = np.take_along_axis(keep, order, axis=1)
        ids = np.where(ok, np.take_along_axis(i, order, axis=1), -1)
        scores = np.where(ok, np.take_along_axis(s, order, axis=1), -np.inf).astype(np.float32)
        width = ids.shape[1]
        out_i[rows, :width] = ids
        out_s[rows, :width] = scores
        out_i[rows, width:] = -1
        out_s[rows, width:] = -np.inf
        return ok.sum(axis=1)

    # ---- persistence --------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``path/index.faiss`` (faiss.write_index) and ``path/ann.json`` (config and kind)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path / INDEX_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self._kind,
            "n": len(self),
            "dim": self.dim,
            "nlist": self._nlist,
            "faiss_version": faiss.__version__,
            "config": dataclasses.asdict(self.config),
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        path = Path(path)
        meta_file, index_file = path / META_FILE, path / INDEX_FILE
        if not meta_file.is_file() or not index_file.is_file():
            raise FileNotFoundError(f"no saved VectorIndex at {path} (expected {META_FILE} and {INDEX_FILE})")
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: unsupported format_version {meta.get('format_version')!r}")
        config = AnnConfig(**meta["config"])
        index = faiss.read_index(str(index_file))
        if index.ntotal != meta["n"] or index.d != meta["dim"]:
            raise ValueError(f"{path}: index holds {index.ntotal} x {index.d}, {META_FILE} says {meta['n']} x {meta['dim']}")
        return cls(index, config, meta["kind"], meta.get("nlist"))


def recall_against_exact(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean over queries of |index top-k ∩ exact top-k| / k, exact = brute-force inner product over vectors."""
    x = _as_matrix(vectors, "vectors")
    q = _as_matrix(queries, "queries", x.shape[1])
    if len(q) == 0:
        raise ValueError("recall_against_exact needs at least one query")
    k = min(int(k), len(x))
    _, exact = _exact_top_k(x, q, k, None)
    _, approx = index.search(q, k)
    hits = sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact))
    return hits / (len(q) * k)
