"""Serving through the FAISS index (large catalogs): candidates from the index, measured against exact search."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recsys.model.ann import AnnConfig, VectorIndex
from recsys.serving import ANN_ARTIFACT, CATALOG_ARTIFACT, ItemRecommender, save_catalog

N, DIM, CLUSTERS = 4000, 64, 40


def _clustered_vectors(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, DIM))
    v = centres[rng.integers(0, CLUSTERS, size=N)] + 0.6 * rng.normal(size=(N, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ann-serving")
    vectors = _clustered_vectors()
    ids = [f"i{j}" for j in range(N)]
    catalog = save_catalog(root / "catalog.npz", ids, ids, vectors)
    index = VectorIndex.build(vectors, AnnConfig(min_items_for_ann=1, nprobe=8))
    assert index.kind == "ivf"
    index.save(root / "ann")

    def load(with_ann: bool) -> ItemRecommender:
        model = ItemRecommender()
        artifacts = {CATALOG_ARTIFACT: str(catalog)} | ({ANN_ARTIFACT: str(root / "ann")} if with_ann else {})
        model.load_context(SimpleNamespace(artifacts=artifacts))
        return model

    return load(True), load(False), vectors


def test_ann_served_recommendations_match_exact_search_closely(models) -> None:
    ann, exact, vectors = models
    queries = [f"i{j}" for j in range(0, N, 40)]  # 100 item requests
    frame = pd.DataFrame({"item_id": queries})
    got = ann.predict(None, frame, params={"k": 10})
    want = exact.predict(None, frame, params={"k": 10})
    overlaps = []
    for r, item in enumerate(queries):
        g = got[got["request"] == r]
        w = want[want["request"] == r]
        assert len(g) == 10 and item not in set(g["item_id"])  # k results, never the query item
        j = int(item[1:])
        rows = [int(i[1:]) for i in g["item_id"]]
        # the scores are the exact cosines of the returned items, best first
        np.testing.assert_allclose(g["score"], vectors[rows] @ vectors[j], atol=1e-5)
        assert list(g["score"]) == sorted(g["score"], reverse=True)
        overlaps.append(len(set(g["item_id"]) & set(w["item_id"])) / 10)
    assert ann._ann is not None and exact._ann is None  # the ANN model searched through its index
    recall = float(np.mean(overlaps))
    print(f"served recall@10 against exact: {recall:.3f}")
    assert recall >= 0.9


def test_ann_serving_excludes_the_cart_and_still_fills_k(models) -> None:
    ann, _, _ = models
    cart = "i1,i2,i3"
    out = ann.predict(None, pd.DataFrame({"cart": [cart]}), params={"k": 25})
    assert len(out) == 25
    assert not set(out["item_id"]) & set(cart.split(","))
