"""recsys.stages.publish: every item's related items and bundle, written to a real SQLite warehouse table."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from datetime import timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, insert, select

from recsys.stages import publish
from recsys.data import warehouse
from recsys.model.bundles import BundleCatalog
from recsys.model.hybrid import HybridConfig
from recsys.stages.publish import (
    PublishedVersionError,
    PublishResult,
    published_table,
    published_version,
    publish_recommendations,
    read_published,
)
from recsys.serving import REASON_SEP, ItemRecommender, save_behaviour, save_catalog
from published_rows import published_rows

IDS = ["mug", "saucer", "spoon", "candle", "tea", "gift"]
TITLES = ["Mug", "Saucer", "Tea spoon", "Candle", "Green tea", "Gift card"]
# hand-made item-item weights (row = the query item), no text term: a single-item query scores row i.
# mug's own weight is the largest of its row (the item itself must still never be listed);
# tea's row ties 0.4 between mug, candle and gift across the 3rd place (lower index wins, as served).
W = np.array(
    [
        [5.0, 0.9, 0.5, 0.1, 0.3, -0.2],
        [0.2, 0.0, 0.8, 0.4, 0.6, 0.7],
        [0.7, 0.3, 0.0, 0.9, 0.1, 0.2],
        [0.5, 0.6, 0.2, 0.0, 0.8, 0.1],
        [0.4, 0.1, 0.9, 0.4, 0.0, 0.4],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.0],
    ],
    dtype=np.float32,
)
EXPECTED_TOP3 = {
    "mug": ["saucer", "spoon", "tea"],
    "saucer": ["spoon", "gift", "tea"],
    "spoon": ["candle", "mug", "saucer"],
    "candle": ["tea", "saucer", "mug"],
    "tea": ["spoon", "mug", "candle"],
    "gift": ["tea", "candle", "spoon"],
}
# purchases: mug+saucer bought together by a and b (support 2, lift 2.5); gift card never bought
USERS = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
BOUGHT = [0, 1, 0, 1, 2, 3, 3, 4, 2, 4]


def _vectors() -> np.ndarray:
    # the gift card points away from everything: its bundle has no item with a positive gain (empty)
    v = np.array([[1, 0.2, 0], [0.6, 1, 0], [0.5, 0.9, 0.2], [0, 0, 1], [0.7, 0.1, 0.6], [-1, -1, -1]], dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write_model(d, weights: np.ndarray | None, behaviour: bool) -> ItemRecommender:
    """A model directory as training writes it, loaded the way the publish job loads it."""
    d.mkdir(parents=True, exist_ok=True)
    save_catalog(d / "catalog.npz", IDS, TITLES, _vectors())
    if weights is not None:
        cfg = HybridConfig(text_score_weight=0.0)
        np.savez(d / "hybrid.npz", weights=weights, vectors=_vectors(), is_cold=np.zeros(len(IDS), dtype=bool))
        (d / "hybrid.json").write_text(json.dumps({"config": asdict(cfg)}))
    if behaviour:
        cat = BundleCatalog.build(IDS, TITLES, _vectors(), ["Kitchen", "Kitchen", "Kitchen", "Home", None, None], [8, 5, 3, 12, 4, 25.0], USERS, BOUGHT)
        save_behaviour(d / "behaviour.npz", cat)
    return ItemRecommender.load(d)


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory) -> ItemRecommender:
    return _write_model(tmp_path_factory.mktemp("publish") / "model", W, behaviour=True)


@pytest.fixture(scope="module")
def text_only(tmp_path_factory) -> ItemRecommender:
    return _write_model(tmp_path_factory.mktemp("publish_text") / "model", None, behaviour=False)


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


def _publish(url, rec, version, **kw) -> PublishResult:
    return publish_recommendations(url, rec, "recs", version, progress=False, **{"k": 3, **kw})


def test_related_items_are_the_exact_top_k_of_the_hand_weights(url, hybrid):
    res = _publish(url, hybrid, "1", chunk_size=4)  # two chunks, the second one short
    rows = published_rows(url, "recs")
    related = rows[rows["kind"] == "related"]
    assert {a: g.sort_values("rank")["recommended_item_id"].tolist() for a, g in related.groupby("item_id")} == EXPECTED_TOP3
    assert (related["item_id"] != related["recommended_item_id"]).all()  # never the item itself (mug's own 5.0)
    assert related.groupby("item_id")["rank"].apply(list).tolist() == [[1, 2, 3]] * len(IDS)
    index = {i: n for n, i in enumerate(IDS)}
    expected_scores = [float(W[index[a], index[b]]) for a, b in zip(related["item_id"], related["recommended_item_id"])]
    np.testing.assert_allclose(related["score"], expected_scores, rtol=1e-6)
    assert set(rows["model_version"]) == {"1"}
    assert (res.model_name, res.model_version, res.items, res.rows) == ("recs", "1", 6, len(rows))
    assert res.seconds >= 0


def test_published_lists_scores_and_reasons_are_the_served_ones(url, hybrid):
    assert publish.REASON_SEP == REASON_SEP
    _publish(url, hybrid, "1")
    for item in IDS:
        served = hybrid.predict(None, pd.DataFrame({"item_id": [item]}), params={"k": 3})
        got = read_published(url, "recs", item)
        assert got["recommended_item_id"].tolist() == served["item_id"].tolist()
        np.testing.assert_allclose(got["score"], served["score"], rtol=1e-6)
        assert got["reasons"].tolist() == served["reasons"].tolist()
        served_bundle = hybrid.predict(None, pd.DataFrame({"item_id": [item]}), params={"k": 3, "mode": "bundle"})
        served_bundle = served_bundle[served_bundle["rank"] > 0]  # rank 0 = the served "why empty" note
        got_bundle = read_published(url, "recs", item, kind="bundle")
        assert got_bundle["recommended_item_id"].tolist() == served_bundle["item_id"].tolist()
        np.testing.assert_allclose(got_bundle["score"].astype(float), served_bundle["score"].astype(float), rtol=1e-6)
        assert got_bundle["reasons"].tolist() == served_bundle["reasons"].tolist()
    # the evidence really is there: co-purchase for saucer after mug, the cold-start note for the gift card
    mug = read_published(url, "recs", "mug").set_index("recommended_item_id")
    assert "bought together with Mug by 2 customers (lift 2.5)" in mug.loc["saucer", "reasons"]
    assert "new item (no sales in the training data), recommended from its description" in read_published(url, "recs", "saucer").set_index("recommended_item_id").loc["gift", "reasons"]


def test_bundle_rows_ranked_from_one_and_empty_bundles_write_nothing(url, tmp_path):
    # the purchase model gives the gift card nothing (its row of weights is zero), its text points away
    # from everything: no item has a positive gain, so its bundle is empty
    weights = W.copy()
    weights[IDS.index("gift")] = 0.0
    model = _write_model(tmp_path / "model", weights, behaviour=True)
    _publish(url, model, "1", bundle_size=2)
    bundles = published_rows(url, "recs").query("kind == 'bundle'")
    assert set(bundles["item_id"]) == set(IDS) - {"gift"}  # the gift card's bundle is empty: no rows
    for anchor, g in bundles.groupby("item_id"):
        assert g["rank"].tolist() == list(range(1, len(g) + 1))
        assert 1 <= len(g) <= 2
        assert anchor not in set(g["recommended_item_id"])
    assert read_published(url, "recs", "gift", kind="bundle").empty


def test_v2_replaces_every_v1_row(url, hybrid):
    _publish(url, hybrid, "1")
    publish_recommendations(url, hybrid, "other", "7", k=1, progress=False)
    n_bundle = len(published_rows(url, "recs").query("kind == 'bundle'"))
    other_before = published_rows(url, "other")
    res = _publish(url, hybrid, "2", k=2, chunk_size=2)
    rows = published_rows(url, "recs")
    assert set(rows["model_version"]) == {"2"}
    assert (rows["kind"] == "related").sum() == 6 * 2  # k=2 now, not v1's 3
    assert (rows["kind"] == "bundle").sum() == n_bundle
    assert len(rows) == res.rows == 12 + n_bundle
    assert published_version(url, "recs") == "2"
    pd.testing.assert_frame_equal(published_rows(url, "other"), other_before)  # another model name is untouched
    assert published_version(url, "other") == "7"


def test_a_failure_part_way_leaves_exactly_the_old_rows(url, hybrid, monkeypatch):
    _publish(url, hybrid, "1")
    before = published_rows(url)
    real = publish.compose_bundle
    calls = {"n": 0, "seen_by_reader": None}

    def flaky(catalog, cart, config, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            # items 0 and 1 were inserted (chunk_size=1) and the old rows deleted, all uncommitted:
            # a reader on another connection still sees the whole old version
            calls["seen_by_reader"] = published_rows(url)
            raise RuntimeError("boom on the 3rd item")
        return real(catalog, cart, config, **kw)

    monkeypatch.setattr(publish, "compose_bundle", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        _publish(url, hybrid, "2", chunk_size=1)
    assert calls["n"] == 3
    pd.testing.assert_frame_equal(calls["seen_by_reader"], before)
    pd.testing.assert_frame_equal(published_rows(url), before)
    assert published_version(url, "recs") == "1"


def test_publishing_the_same_version_twice_gives_identical_rows(url, hybrid):
    first = _publish(url, hybrid, "1", chunk_size=2)
    rows = published_rows(url)
    engine = create_engine(url)  # an Engine works as well as a URL
    second = publish_recommendations(engine, hybrid, "recs", "1", k=3, chunk_size=512, progress=False)
    engine.dispose()
    pd.testing.assert_frame_equal(published_rows(url), rows)
    assert first.rows == second.rows == len(rows)


def test_text_only_model_without_behaviour_publishes_cosine_related_items_only(url, text_only, caplog):
    with caplog.at_level(logging.WARNING, logger="recsys.stages.publish"):
        res = publish_recommendations(url, text_only, "text", "3", k=2, chunk_size=4, progress=False)
    assert "no bundles" in caplog.text
    rows = published_rows(url, "text")
    assert set(rows["kind"]) == {"related"} and len(rows) == res.rows == 12
    assert (rows["reasons"] == "").all()
    v = _vectors().astype(np.float64)
    for n, item in enumerate(IDS):
        cos = v @ v[n]
        cos[n] = -np.inf
        expected = [IDS[j] for j in np.argsort(-cos, kind="stable")[:2]]
        got = read_published(url, "text", item)
        assert got["recommended_item_id"].tolist() == expected
        np.testing.assert_allclose(got["score"], np.sort(cos)[::-1][:2], rtol=1e-5, atol=1e-6)
        served = text_only.predict(None, pd.DataFrame({"item_id": [item]}), params={"k": 2})
        assert got["recommended_item_id"].tolist() == served["item_id"].tolist()
    # hand-checked: the gift card points away from all; candle's nearest is the tea (shares z)
    assert read_published(url, "text", "candle")["recommended_item_id"].tolist()[0] == "tea"


def test_published_version_none_one_or_a_clear_error(url, hybrid):
    assert published_version(url, "recs") is None  # creates the table if missing
    _publish(url, hybrid, "1")
    assert published_version(url, "recs") == "1"
    engine = create_engine(url)
    with engine.begin() as conn:  # corrupt: a second version's row beside v1's
        conn.execute(
            insert(published_table),
            [{"model_name": "recs", "model_version": "2", "item_id": "zz", "kind": "related", "rank": 1,
              "recommended_item_id": "mug", "score": 1.0, "reasons": "", "published_at": pd.Timestamp.now(tz="UTC").to_pydatetime()}],
        )
    engine.dispose()
    with pytest.raises(PublishedVersionError, match=r"2 versions for model 'recs'"):
        published_version(url, "recs")
    # a publish repairs it: it replaces every row of the name
    _publish(url, hybrid, "3")
    assert published_version(url, "recs") == "3"


def test_read_published_ordered_with_tz_aware_timestamps(url, hybrid):
    _publish(url, hybrid, "1")
    got = read_published(url, "recs", "spoon")
    assert got["rank"].tolist() == [1, 2, 3]
    assert list(got.columns) == [c.name for c in published_table.columns]
    assert got["published_at"].dt.tz is not None and got["published_at"].nunique() == 1
    assert str(got["published_at"].dt.tz) == str(timezone.utc) or str(got["published_at"].dt.tz) == "UTC"
    assert read_published(url, "recs", "nope").empty
    with pytest.raises(ValueError, match="kind"):
        read_published(url, "recs", "spoon", kind="upsell")


def test_table_schema_and_argument_checks(url, hybrid):
    t = published_table
    assert [c.name for c in t.primary_key.columns] == ["model_name", "item_id", "kind", "rank"]
    assert [[c.name for c in ix.columns] for ix in t.indexes] == [["model_name", "item_id"]]
    with pytest.raises(ValueError, match="k and chunk_size"):
        _publish(url, hybrid, "1", k=0)
    with pytest.raises(ValueError, match="non-empty"):
        _publish(url, hybrid, " ")
    assert published_version(url, "recs") is None  # nothing was written


def publish_concurrently(url, hybrid, monkeypatch, delay: float) -> tuple[dict, list]:
    """Publish versions "2" (k=2) and "3" (k=1) of "recs" from two threads at once, each chunk slowed by
    `delay` s so the transactions overlap; returns (results by version, errors raised)."""
    real = publish._chunk_scores

    def slow(recommender, idx):
        time.sleep(delay)
        return real(recommender, idx)

    monkeypatch.setattr(publish, "_chunk_scores", slow)
    results, errors = {}, []

    def run(version: str, k: int) -> None:
        try:
            results[version] = _publish(url, hybrid, version, k=k, chunk_size=1)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=run, args=(v, k)) for v, k in (("2", 2), ("3", 1))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    return results, errors


def test_two_concurrent_publishes_of_one_name_into_sqlite_both_succeed(url, hybrid, monkeypatch, caplog):
    # SQLite alone would fail the second writer once its busy timeout (shortened here) ran out; the
    # publishes queue on the file's write lock instead, and the later one replaces the earlier's rows
    monkeypatch.setattr(warehouse, "_BUSY_TIMEOUT_S", 0.2)
    _publish(url, hybrid, "1")
    with caplog.at_level(logging.INFO, logger="recsys.data.warehouse"):
        results, errors = publish_concurrently(url, hybrid, monkeypatch, delay=0.1)  # each holds its transaction ~0.6 s
    assert not errors, errors
    assert "waiting for the warehouse write lock" in caplog.text
    final = published_version(url, "recs")  # one version, whole
    assert final in {"2", "3"}
    assert len(published_rows(url, "recs")) == results[final].rows


# -- a publish split across workers: shards staged, then one swap ----------------------------------------------


def _staged(url) -> tuple[int, int]:
    """(staged rows, finished-shard rows) left in the staging tables."""
    engine, _ = publish._engine(url)
    with engine.connect() as conn:
        counts = tuple(len(conn.execute(select(t)).all()) for t in (publish.staging_table, publish.shards_table))
    engine.dispose()
    return counts


def _shards(url, rec, version, ranges, publish_id="p1", **kw) -> list[PublishResult]:
    return [
        publish.publish_shard(url, rec, "recs", version, publish_id, i, start, stop, progress=False, **{"k": 3, **kw})
        for i, (start, stop) in enumerate(ranges)
    ]


def test_sharded_publish_writes_exactly_the_rows_of_one_process(url, tmp_path, hybrid):
    one = _publish(url, hybrid, "2")
    expected = published_rows(url)
    sharded_url = f"sqlite:///{tmp_path / 'sharded.db'}"
    _publish(sharded_url, hybrid, "1")  # an older version published before
    staged = _shards(sharded_url, hybrid, "2", [(0, 2), (2, 5), (5, 6)], chunk_size=2)  # the middle shard in two chunks
    assert [r.items for r in staged] == [2, 3, 1]
    assert published_version(sharded_url, "recs") == "1"  # staged rows are invisible to readers
    result = publish.finish_publish(sharded_url, "recs", "2", "p1", n_items=6, n_shards=3)
    pd.testing.assert_frame_equal(published_rows(sharded_url), expected)
    assert result.rows == one.rows == sum(r.rows for r in staged) == len(expected)
    assert _staged(sharded_url) == (0, 0)  # the staging is emptied by the swap
    stamps = pd.read_sql(select(published_table.c.published_at).distinct(), create_engine(sharded_url))
    assert len(stamps) == 1  # one publish time for every row, the swap's


def test_finishing_before_every_shard_is_written_publishes_nothing(url, hybrid):
    _publish(url, hybrid, "1")
    before = published_rows(url)
    _shards(url, hybrid, "2", [(0, 2), (4, 6)])  # shards 0 and 1 of three; shard 2 = items 2-4 not yet
    with pytest.raises(publish.PublishIncompleteError, match=r"shards \[2\] of 3 have not finished; nothing was published; the previous rows are kept"):
        publish.finish_publish(url, "recs", "2", "p1", n_items=6, n_shards=3)
    pd.testing.assert_frame_equal(published_rows(url), before)
    assert _staged(url)[1] == 2  # the finished shards wait for the missing one
    publish.publish_shard(url, hybrid, "recs", "2", "p1", 2, 2, 4, k=3, progress=False)
    with pytest.raises(publish.PublishIncompleteError, match=r"item ranges \[\(0, 2\), \(2, 4\), \(4, 6\)\] do not cover the 7-item"):
        publish.finish_publish(url, "recs", "2", "p1", n_items=7, n_shards=3)
    publish.finish_publish(url, "recs", "2", "p1", n_items=6, n_shards=3)
    assert published_version(url, "recs") == "2" and _staged(url) == (0, 0)


def test_a_shard_that_died_part_way_is_not_counted_and_its_retry_starts_clean(url, hybrid, monkeypatch):
    real = publish._chunk_rows
    calls = {"n": 0}

    def dies_on_second_chunk(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker lost")
        return real(*args, **kw)

    monkeypatch.setattr(publish, "_chunk_rows", dies_on_second_chunk)
    with pytest.raises(RuntimeError, match="worker lost"):
        publish.publish_shard(url, hybrid, "recs", "1", "p1", 0, 0, 6, k=3, chunk_size=3, progress=False)
    staged_rows, finished = _staged(url)
    assert staged_rows > 0 and finished == 0  # the first chunk is staged, the shard is not finished
    with pytest.raises(publish.PublishIncompleteError, match=r"shards \[0\]"):
        publish.finish_publish(url, "recs", "1", "p1", n_items=6, n_shards=1)
    monkeypatch.setattr(publish, "_chunk_rows", real)
    retry = publish.publish_shard(url, hybrid, "recs", "1", "p1", 0, 0, 6, k=3, chunk_size=3, progress=False)
    publish.publish_shard(url, hybrid, "recs", "1", "p1", 0, 0, 6, k=3, chunk_size=3, progress=False)  # a duplicate run: harmless
    assert _staged(url) == (retry.rows, 1)
    publish.finish_publish(url, "recs", "1", "p1", n_items=6, n_shards=1)
    one_process = f"sqlite:///{url.removeprefix('sqlite:///')}.one.db"
    _publish(one_process, hybrid, "1")
    pd.testing.assert_frame_equal(published_rows(url), published_rows(one_process))


def test_finish_refuses_shards_of_another_version_and_drops_abandoned_staging(url, hybrid):
    _shards(url, hybrid, "2", [(0, 6)], publish_id="mixed")
    with pytest.raises(publish.PublishIncompleteError, match=r"shards staged \[\('recs', '2'\)\], not recs v3"):
        publish.finish_publish(url, "recs", "3", "mixed", n_items=6, n_shards=1)
    # an abandoned publish of this model, staged two days ago, goes with the next finish; another model's stays
    _shards(url, hybrid, "1", [(0, 6)], publish_id="old")
    publish.publish_shard(url, hybrid, "other", "1", "other-old", 0, 0, 6, k=3, progress=False)
    engine = create_engine(url)
    with engine.begin() as conn:
        long_ago = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=2)
        conn.execute(publish.shards_table.update().where(publish.shards_table.c.publish_id.in_(["old", "other-old"])).values(written_at=long_ago))
    _shards(url, hybrid, "4", [(0, 6)], publish_id="new")
    publish.finish_publish(url, "recs", "4", "new", n_items=6, n_shards=1)
    with engine.connect() as conn:
        left = set(conn.execute(select(publish.shards_table.c.publish_id)).scalars())
    engine.dispose()
    assert left == {"mixed", "other-old"}  # "mixed" is a day old at most: it may still be finishing
    assert published_version(url, "recs") == "4"


def test_shard_argument_checks(url, hybrid):
    for start, stop in ((0, 7), (3, 3), (-1, 2)):
        with pytest.raises(ValueError, match=r"not a range of the 6-item catalog"):
            publish.publish_shard(url, hybrid, "recs", "1", "p1", 0, start, stop, progress=False)
    with pytest.raises(ValueError, match="publish_id must be 1-64 characters"):
        publish.publish_shard(url, hybrid, "recs", "1", "x" * 65, 0, 0, 6, progress=False)
    assert _staged(url) == (0, 0)
