"""recsys.model.ann: exact below the threshold, FAISS IVF / HNSW above it, exclusion, recall, persistence."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from recsys.model.ann import AnnConfig, VectorIndex, default_nlist, recall_against_exact

ANGLES = [0, 30, 60, 90, 180, 270]  # degrees; item i is the unit vector at ANGLES[i]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _at(*degrees: float) -> np.ndarray:
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def _clustered(n: int, d: int, n_queries: int, seed: int = 0, n_clusters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = _unit(rng.normal(size=(n_clusters, d)))
    items = _unit(centers[rng.integers(0, n_clusters, n)] + 0.7 * _unit(rng.normal(size=(n, d))))
    queries = _unit(centers[rng.integers(0, n_clusters, n_queries)] + 0.7 * _unit(rng.normal(size=(n_queries, d))))
    return items, queries


@pytest.fixture(scope="module")
def six() -> VectorIndex:
    return VectorIndex.build(_at(*ANGLES), AnnConfig())


@pytest.fixture(scope="module")
def clustered_5k() -> tuple[np.ndarray, np.ndarray]:
    return _clustered(5000, 64, 200, seed=7)


# ---- exact path: hand-checkable answers ---------------------------------------------------------


def test_exact_top2_by_hand(six):
    assert six.is_exact and six.kind == "exact" and len(six) == 6 and six.dim == 2
    scores, ids = six.search(_at(10, 80), k=2)
    # 10 deg: items at 0 and 30 deg (10 and 20 deg away); 80 deg: items at 90 and 60 deg
    assert ids.tolist() == [[0, 1], [3, 2]]
    np.testing.assert_allclose(scores, np.cos(np.radians([[10, 20], [10, 20]])), atol=1e-6)
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_exact_exclusion_still_returns_k(six):
    scores, ids = six.search(_at(10, 10), k=2, exclude=[np.array([0]), np.array([0, 1, 2, 3])])
    assert ids.tolist() == [[1, 2], [5, 4]]  # 60 deg; then 270 (cos 260) beats 180 (cos 170)
    np.testing.assert_allclose(scores, np.cos(np.radians([[20, 50], [260, 170]])), atol=1e-6)


def test_padding_only_when_catalog_exhausted(six):
    scores, ids = six.search(_at(10), k=3, exclude=[np.array([0, 1, 2, 3, 4])])
    assert ids.tolist() == [[5, -1, -1]]
    assert np.isneginf(scores[0, 1:]).all() and np.isfinite(scores[0, 0])
    scores, ids = six.search(_at(10), k=8)  # k > catalog
    assert ids[0, :6].tolist() == [0, 1, 2, 3, 5, 4] and ids[0, 6:].tolist() == [-1, -1]
    # ids outside the catalog in exclude are ignored; duplicates don't matter
    _, ids = six.search(_at(10), k=2, exclude=[np.array([0, 0, 99, -3])])
    assert ids.tolist() == [[1, 2]]


def test_exact_ties_break_to_lower_id():
    vecs = _at(0, 90, 0, 90)  # items 0 and 2 identical, 1 and 3 identical
    _, ids = VectorIndex.build(vecs).search(_at(45, 0), k=4)
    assert ids.tolist() == [[0, 1, 2, 3], [0, 2, 1, 3]]


def test_exact_matches_brute_force_on_a_larger_catalog():
    items, queries = _clustered(3000, 16, 40, seed=3)  # big enough for the block-max selection path
    index = VectorIndex.build(items)
    excl = [np.arange(i, i + 20) for i in range(len(queries))]
    scores, ids = index.search(queries, k=15, exclude=excl)
    full = queries @ items.T
    for row, e in enumerate(excl):
        full[row, e] = -np.inf
    ref = np.argsort(-full, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(full, ref, axis=1), rtol=1e-6)


# ---- threshold ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_exact_below_threshold_ann_at_or_above(kind):
    items, _ = _clustered(500, 32, 1, seed=1)
    cfg = AnnConfig(min_items_for_ann=500, kind=kind)
    below = VectorIndex.build(items[:499], cfg)
    above = VectorIndex.build(items, cfg)
    assert below.is_exact and below.kind == "exact"
    assert not above.is_exact and above.kind == kind
    if kind == "ivf":
        assert above.nlist == default_nlist(500) == 12  # 4*sqrt(500)=89 capped at 500//39
    assert AnnConfig().min_items_for_ann == 50_000


# ---- ANN recall, exclusion, fallback ------------------------------------------------------------


def test_ivf_recall_at_10(clustered_5k):
    items, queries = clustered_5k
    index = VectorIndex.build(items, AnnConfig(min_items_for_ann=1000))  # default nprobe=16
    assert index.kind == "ivf" and index.nlist == default_nlist(5000) == 128
    recall = recall_against_exact(index, items, queries, k=10)
    low = recall_against_exact(index.with_search_params(nprobe=1), items, queries, k=10)
    print(f"IVF recall@10 vs exact on 5,000 x 64: nprobe=16 {recall:.3f}, nprobe=1 {low:.3f}")
    assert recall >= 0.9
    assert low < recall  # the knob does something; the index is shared, not rebuilt
    assert recall_against_exact(VectorIndex.build(items), items, queries, k=10) == 1.0


def test_hnsw_recall_at_10(clustered_5k):
    items, queries = clustered_5k
    index = VectorIndex.build(items, AnnConfig(min_items_for_ann=1000, kind="hnsw", hnsw_m=16))
    assert index.kind == "hnsw"
    recall = recall_against_exact(index, items, queries, k=10)
    print(f"HNSW recall@10 vs exact on 5,000 x 64: {recall:.3f}")
    assert recall >= 0.9


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_ann_exclusion_keeps_k_results(clustered_5k, kind):
    items, queries = clustered_5k
    index = VectorIndex.build(items, AnnConfig(min_items_for_ann=1000, kind=kind, nprobe=32))
    _, top = index.search(queries, k=10)
    # exclude each query's own top 5 plus a varying number of random items (different over-fetch sizes)
    rng = np.random.default_rng(0)
    excl = [np.concatenate([top[i, :5], rng.integers(0, len(items), i % 40)]) for i in range(len(queries))]
    scores, ids = index.search(queries, k=10, exclude=excl)
    assert ids.shape == (len(queries), 10) and (ids >= 0).all() and np.isfinite(scores).all()
    for row, e in zip(ids, excl):
        assert not np.isin(row, e).any() and len(set(row.tolist())) == 10
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    for row, t, e in zip(ids, top, excl):  # the unexcluded rest of the top 10 moves up, in order
        rest = t[~np.isin(t, e)]
        np.testing.assert_array_equal(row[: len(rest)], rest)


def test_ivf_short_lists_fall_back_to_exhaustive():
    items, queries = _clustered(600, 16, 5, seed=2)
    index = VectorIndex.build(items, AnnConfig(min_items_for_ann=100, nprobe=1))  # 15 lists of ~40 items
    excl = [np.arange(50) for _ in range(len(queries))]
    scores, ids = index.search(queries, k=100, exclude=excl)
    assert (ids >= 0).all() and not np.isin(ids, np.arange(50)).any()
    ref_s, ref_i = VectorIndex.build(items).search(queries, k=100, exclude=excl)
    assert all(set(a) == set(b) for a, b in zip(ids.tolist(), ref_i.tolist()))  # exhaustive IVF == exact
    np.testing.assert_allclose(np.sort(scores, axis=1), np.sort(ref_s, axis=1), rtol=1e-5)


def test_ivf_build_is_deterministic(clustered_5k):
    items, queries = clustered_5k
    cfg = AnnConfig(min_items_for_ann=1000, nprobe=4, seed=3)
    a = VectorIndex.build(items, cfg).search(queries, k=10)
    b = VectorIndex.build(items, cfg).search(queries, k=10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


# ---- persistence --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_save_load_round_trip(tmp_path, clustered_5k, kind):
    items, queries = clustered_5k
    cfg = AnnConfig(min_items_for_ann=10**9 if kind == "exact" else 1000, kind="ivf" if kind == "exact" else kind, nprobe=8)
    index = VectorIndex.build(items, cfg)
    excl = [np.arange(i % 7) for i in range(len(queries))]
    before = index.search(queries, k=10, exclude=excl)
    index.save(tmp_path / "ann")
    meta = json.loads((tmp_path / "ann" / "ann.json").read_text())
    assert meta["kind"] == kind and meta["config"]["nprobe"] == 8 and meta["n"] == 5000
    loaded = VectorIndex.load(tmp_path / "ann")
    assert loaded.kind == kind and loaded.config == cfg and len(loaded) == 5000 and loaded.nlist == index.nlist
    after = loaded.search(queries, k=10, exclude=excl)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])


def test_load_missing_dir_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved VectorIndex"):
        VectorIndex.load(tmp_path / "nothing")


# ---- bad input and side effects -----------------------------------------------------------------


def test_bad_input_is_rejected(six):
    with pytest.raises(ValueError, match="dimension"):
        six.search(np.ones((1, 3), dtype=np.float32), k=2)
    with pytest.raises(ValueError, match="NaN"):
        six.search(np.array([[np.nan, 1.0]]), k=2)
    with pytest.raises(ValueError, match="k must be"):
        six.search(_at(0), k=0)
    with pytest.raises(ValueError, match="one per query"):
        six.search(_at(0, 10), k=2, exclude=[np.array([0])])
    with pytest.raises(ValueError, match="2-D"):
        six.search(np.ones(2, dtype=np.float32), k=2)
    with pytest.raises(ValueError, match="empty catalog"):
        VectorIndex.build(np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="kind"):
        AnnConfig(kind="flat")
    with pytest.raises(ValueError, match="nprobe"):
        AnnConfig(nprobe=0)
    scores, ids = six.search(np.zeros((0, 2), dtype=np.float32), k=3)
    assert scores.shape == ids.shape == (0, 3)


def test_threads_setting_is_restored(clustered_5k):
    items, queries = clustered_5k
    before = faiss.omp_get_max_threads()
    index = VectorIndex.build(items, AnnConfig(min_items_for_ann=1000, threads=1))
    index.search(queries, k=5)
    assert faiss.omp_get_max_threads() == before


def test_hnsw_exhaustive_fallback_is_exact(clustered_5k):
    items, queries = clustered_5k
    index = VectorIndex.build(items, AnnConfig(min_items_for_ann=1000, kind="hnsw", hnsw_m=8))
    scores, ids = index._raw(queries, 10, exhaustive=True)  # what a short HNSW row is re-run with
    ref_s, ref_i = VectorIndex.build(items).search(queries, k=10)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5)
    assert np.mean([len(np.intersect1d(a, b)) for a, b in zip(ids, ref_i)]) == 10
