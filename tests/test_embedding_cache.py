"""Tests of recsys.model.embedding_cache with the real packaged encoder (all-MiniLM-L6-v2, ~1 s to load)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recsys.config import EncoderConfig
from recsys.model.embedding_cache import (
    EmbeddingCache,
    _backend_definition,
    document_hash,
    encode_with_cache,
    fingerprint_parts,
    model_fingerprint,
)
from recsys.model.encoder import TextEncoder

TITLES = [
    "Red ceramic coffee mug",
    "Blue ceramic coffee cup",
    "Wooden toy train set for children",
    "Stainless steel kitchen knife",
    "White hanging heart t-light holder",
    "Jumbo bag red retrospot",
    "Regency cakestand 3 tier",
    "Party bunting",
    "Lunch bag black skull",
    "Set of 3 cake tins pantry design",
    "Pack of 72 retrospot cake cases",
    "Natural slate heart chalkboard",
    "Assorted colour bird ornament",
    "Paper chain kit 50's christmas",
    "Spotty bunting",
    "Alarm clock bakelike red",
    "Heart of wicker small",
    "Chocolate hot water bottle",
    "Jam making set with jars",
    "Vintage snap cards",
    "Hand warmer owl design",
    "Glass star frosted t-light holder",
    "Rabbit night light",
    "Doormat union flag",
    "Set of 4 knick knack tins doily",
    "Garden trowel with ash handle",
    "Cotton tote bag with flowers",
    "Scented soy candle lavender",
    "Leather wallet for men, brown",
    "Mini paint set vintage",
]


@pytest.fixture(scope="module")
def encoder():
    # one torch thread: tiny batches, and 2 threads on a busy 2-core machine spin rather than work
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # float32: these tests compare vectors across batch compositions at 1e-5; bf16 autocast (the default
    # on CPUs with native bf16) moves them by ~1e-3 with the padding (tested on its own below / in test_encoder_serving)
    yield TextEncoder(config=EncoderConfig(device="cpu", precision="float32"))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fingerprint(encoder):
    return model_fingerprint(encoder)


@pytest.fixture
def calls(encoder):
    """Counts the real encoder's `encode` calls and records the texts each one received."""
    seen: list[list[str]] = []
    original = encoder.encode

    def counting(texts, *args, **kwargs):
        seen.append(list(texts))
        return original(texts, *args, **kwargs)

    encoder.encode = counting
    yield seen
    del encoder.encode  # the instance attribute shadowed the method; removing it restores the method


def _embed(encoder, texts, cache, **kw):
    return encode_with_cache(encoder, texts, cache, progress=False, **kw)


# --- keys -----------------------------------------------------------------------------------------


def test_document_hash_is_sha256_of_utf8_truncated():
    import hashlib

    assert document_hash("Crème brûlée") == hashlib.sha256("Crème brûlée".encode()).hexdigest()[:32]
    assert document_hash("a") != document_hash("a ")
    assert len(document_hash("")) == 32
    document_hash("lone surrogate \ud800")  # any str hashes, none raises


def test_fingerprint_is_stable_across_two_loads(encoder, fingerprint):
    again = TextEncoder(config=EncoderConfig(device="cpu", precision="float32"))
    assert model_fingerprint(again) == fingerprint
    assert model_fingerprint(encoder) == fingerprint  # recomputing does not change it


def test_fingerprint_ignores_tokenizer_call_state(encoder, fingerprint):
    # every tokenizer call rewrites the backend's truncation/padding settings; they are not identity
    encoder.tokenizer(["x"], padding=True, truncation=True, max_length=7)
    assert model_fingerprint(encoder) == fingerprint
    backend = encoder.tokenizer.backend_tokenizer
    backend.no_truncation()  # serialized as null
    backend.no_padding()
    assert model_fingerprint(encoder) == fingerprint
    definition = _backend_definition(backend.to_str())
    assert '"truncation"' not in definition[:1000] and '"padding"' not in definition[:1000]
    assert json.loads(definition)["model"] == json.loads(backend.to_str())["model"]


def test_fingerprint_covers_weights_max_length_and_precision(encoder, fingerprint):
    tuned = copy.deepcopy(encoder)
    with torch.no_grad():
        tuned.model.encoder.layer[0].attention.self.query.weight[0, 0] += 1e-3
    assert model_fingerprint(tuned) != fingerprint
    assert model_fingerprint(encoder) == fingerprint  # the original is untouched

    def like(**changes):  # the same model and tokenizer, other settings
        fields = {"model": encoder.model, "tokenizer": encoder.tokenizer, "device": encoder.device, "config": encoder.config, "inference_precision": encoder.inference_precision}
        return SimpleNamespace(**(fields | changes))

    assert model_fingerprint(like()) == fingerprint
    assert model_fingerprint(like(config=dataclasses.replace(encoder.config, max_length=32))) != fingerprint
    # bf16-autocast vectors (a GPU, or a CPU with native bf16) are cached apart from float32 ones
    fp32, bf16 = like(inference_precision="float32"), like(inference_precision="bf16-autocast")
    assert fingerprint_parts(fp32)["precision"] == "float32" and fingerprint_parts(bf16)["precision"] == "bf16-autocast"
    assert model_fingerprint(fp32) != model_fingerprint(bf16)
    # an encoder-like object that does not say: CUDA means bf16 autocast
    on_gpu = like(device=torch.device("cuda"), inference_precision=None)
    assert fingerprint_parts(on_gpu)["precision"] == "bf16-autocast"


def test_saved_and_reloaded_encoder_keeps_its_fingerprint(encoder, fingerprint, tmp_path):
    encoder.save(tmp_path / "enc")
    reloaded = TextEncoder(str(tmp_path / "enc"), config=EncoderConfig(device="cpu", precision="float32"))
    assert model_fingerprint(reloaded) == fingerprint  # content, not the path


# --- encode_with_cache ----------------------------------------------------------------------------


def test_second_call_is_fully_cached_and_identical(encoder, calls, tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    first, s1 = _embed(encoder, TITLES, cache)
    assert s1 == {**s1, "total": 30, "unique": 30, "cached": 0, "computed": 30}
    assert len(calls) == 1 and sorted(calls[0]) == sorted(TITLES)
    second, s2 = _embed(encoder, TITLES, cache)
    assert s2["cached"] == 30 and s2["computed"] == 0
    assert len(calls) == 1  # the encoder was not called again
    assert second.dtype == np.float32 and second.shape == (30, encoder.dim)
    assert np.array_equal(first, second)
    np.testing.assert_allclose(first, encoder.encode(TITLES, progress=False), atol=1e-5)


def test_changing_one_text_computes_one(encoder, calls, tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    before, _ = _embed(encoder, TITLES, cache)
    changed = list(TITLES)
    changed[17] = "Chocolate hot water bottle, large"
    after, stats = _embed(encoder, changed, cache)
    assert stats["computed"] == 1 and stats["cached"] == 29
    assert calls[-1] == ["Chocolate hot water bottle, large"]
    keep = np.arange(30) != 17
    assert np.array_equal(after[keep], before[keep])
    np.testing.assert_allclose(after[17], encoder.encode([changed[17]], progress=False)[0], atol=1e-5)


def test_duplicates_are_embedded_once_and_order_is_kept(encoder, calls, tmp_path):
    texts = [TITLES[3], TITLES[0], TITLES[3], TITLES[5], TITLES[0], TITLES[3]]
    vectors, stats = _embed(encoder, texts, EmbeddingCache(tmp_path / "emb"))
    assert stats == {**stats, "total": 6, "unique": 3, "cached": 0, "computed": 3}
    assert len(calls) == 1 and sorted(calls[0]) == sorted({TITLES[0], TITLES[3], TITLES[5]})
    reference = encoder.encode([TITLES[3], TITLES[0], TITLES[5]], progress=False)
    np.testing.assert_allclose(vectors, reference[[0, 1, 0, 2, 1, 0]], atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2]) and np.array_equal(vectors[0], vectors[5])


def test_order_is_input_order_whatever_was_cached(encoder, tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    _embed(encoder, TITLES[::2], cache)  # half of them cached first
    shuffled = [TITLES[i] for i in np.random.default_rng(0).permutation(30)]
    vectors, stats = _embed(encoder, shuffled, cache)
    assert stats["cached"] == 15 and stats["computed"] == 15
    np.testing.assert_allclose(vectors, encoder.encode(shuffled, progress=False), atol=1e-5)


def test_without_a_cache_it_just_encodes(encoder, calls):
    vectors, stats = _embed(encoder, TITLES + TITLES[:2], None)
    assert stats == {**stats, "total": 32, "unique": 30, "cached": 0, "computed": 30}
    np.testing.assert_allclose(vectors, encoder.encode(TITLES + TITLES[:2], progress=False), atol=1e-5)
    empty, stats = _embed(encoder, [], None)
    assert empty.shape == (0, encoder.dim) and stats["computed"] == 0


def test_a_changed_weight_misses_the_cache(encoder, fingerprint, tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    frozen, _ = _embed(encoder, TITLES, cache, fingerprint=fingerprint)
    tuned = copy.deepcopy(encoder)
    with torch.no_grad():
        tuned.model.embeddings.word_embeddings.weight[1000:2000] += 1e-3
    vectors, stats = _embed(tuned, TITLES, cache)
    assert stats["cached"] == 0 and stats["computed"] == 30
    assert not np.array_equal(vectors, frozen)
    assert sorted(cache.stats()["fingerprints"]) == sorted([fingerprint, model_fingerprint(tuned)])


def test_a_different_max_length_misses_the_cache(encoder, fingerprint, tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    _embed(encoder, TITLES, cache, fingerprint=fingerprint)
    shorter = TextEncoder(config=EncoderConfig(device="cpu", max_length=8))
    vectors, stats = _embed(shorter, TITLES, cache)
    assert stats["computed"] == 30
    np.testing.assert_allclose(vectors, shorter.encode(TITLES, progress=False), atol=1e-5)


def test_cache_persists_across_instances(encoder, fingerprint, calls, tmp_path):
    first, _ = _embed(encoder, TITLES, EmbeddingCache(tmp_path / "emb"))
    n_calls = len(calls)
    again, stats = _embed(encoder, TITLES, EmbeddingCache(tmp_path / "emb"))
    assert stats["computed"] == 0 and len(calls) == n_calls
    assert np.array_equal(first, again)
    assert EmbeddingCache(tmp_path / "emb").stats()["fingerprints"][fingerprint]["items"] == 30


def test_a_leftover_tmp_file_is_ignored(encoder, fingerprint, tmp_path):
    cache_dir = tmp_path / "emb"
    first, _ = _embed(encoder, TITLES[:10], EmbeddingCache(cache_dir), fingerprint=fingerprint)
    # a writer that crashed mid-shard: a half-written temporary file next to the good shard
    (cache_dir / fingerprint / "shard-99999999999999999999-dead.npz.tmp").write_bytes(b"PK\x03\x04 half a zip")
    vectors, stats = _embed(encoder, TITLES, EmbeddingCache(cache_dir), fingerprint=fingerprint)
    assert stats["cached"] == 10 and stats["computed"] == 20
    assert np.array_equal(vectors[:10], first)


def test_a_crash_during_a_write_leaves_nothing_readable(encoder, fingerprint, tmp_path, monkeypatch):
    cache_dir = tmp_path / "emb"
    real_replace = os.replace

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    vectors, stats = _embed(encoder, TITLES[:5], EmbeddingCache(cache_dir), fingerprint=fingerprint)
    assert stats["computed"] == 5 and vectors.shape == (5, encoder.dim)  # a failed write never fails the embedding
    monkeypatch.setattr(os, "replace", real_replace)
    assert list((cache_dir / fingerprint).iterdir()) == []  # the temporary file was removed
    _, stats = _embed(encoder, TITLES[:5], EmbeddingCache(cache_dir), fingerprint=fingerprint)
    assert stats["computed"] == 5


# --- the store itself (no encoder) ------------------------------------------------------------------


def _vectors(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_get_many_returns_found_mask_and_vectors_in_order(tmp_path):
    cache = EmbeddingCache(tmp_path)
    keys = [document_hash(str(i)) for i in range(6)]
    vecs = _vectors(6)
    assert cache.put_many("fp", keys[:4], vecs[:4]) == 4
    found, got = cache.get_many("fp", [keys[5], keys[2], keys[0], keys[4]])
    assert found.tolist() == [False, True, True, False]
    assert np.array_equal(got, vecs[[2, 0]])
    found, got = cache.get_many("other-fp", keys)
    assert not found.any() and len(got) == 0


def test_put_many_skips_known_keys_duplicates_and_non_finite_rows(tmp_path):
    cache = EmbeddingCache(tmp_path)
    vecs = _vectors(3)
    assert cache.put_many("fp", ["a", "b"], vecs[:2]) == 2
    bad = vecs.copy()
    bad[2, 1] = np.nan
    assert cache.put_many("fp", ["a", "c", "c", "d"], np.stack([vecs[1], vecs[2], vecs[0], bad[2]])) == 1
    found, got = cache.get_many("fp", ["a", "c", "d"])
    assert found.tolist() == [True, True, False]
    assert np.array_equal(got, vecs[[0, 2]])  # the first vector stored for a key wins
    assert cache.put_many("fp", [], np.zeros((0, 4), np.float32)) == 0


def test_put_many_rejects_bad_input(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put_many("fp", ["a"], _vectors(1))
    with pytest.raises(ValueError, match="one vector per key"):
        cache.put_many("fp", ["x", "y"], _vectors(1))
    with pytest.raises(ValueError, match="4-dim"):
        cache.put_many("fp", ["x"], _vectors(1, dim=5))
    with pytest.raises(ValueError, match="ASCII"):
        cache.put_many("fp", ["é"], _vectors(1))
    with pytest.raises(ValueError, match="safe folder"):
        cache.put_many("../escape", ["x"], _vectors(1))
    assert not (tmp_path.parent / "escape").exists()


def test_a_damaged_shard_costs_its_entries_only(tmp_path):
    EmbeddingCache(tmp_path).put_many("fp", ["a", "b"], _vectors(2))
    (tmp_path / "fp" / "shard-00000000000000000000-broken.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "fp" / "shard-00000000000000000001-wrongdim.npz", hashes=np.array([b"c"]), vectors=_vectors(1, dim=7))
    cache = EmbeddingCache(tmp_path)
    found, _ = cache.get_many("fp", ["a", "b", "c"])
    assert found.tolist() == [True, True, False]
    assert cache.stats()["shards_skipped"] == 2


def test_a_second_writer_is_seen_without_reopening(tmp_path):
    a, b = EmbeddingCache(tmp_path), EmbeddingCache(tmp_path)
    vecs = _vectors(4)
    a.put_many("fp", ["k0", "k1"], vecs[:2])
    assert a.get_many("fp", ["k2"])[0].tolist() == [False]  # a has loaded its index
    b.put_many("fp", ["k2", "k3", "k0"], np.stack([vecs[2], vecs[3], vecs[0]]))  # b loaded a's shard: skips k0
    found, got = a.get_many("fp", ["k0", "k1", "k2", "k3"])
    assert found.all() and np.array_equal(got, vecs)
    assert len(list((tmp_path / "fp").glob("shard-*.npz"))) == 2


def test_concurrent_writers_never_collide(tmp_path):
    def write(worker: int) -> None:
        cache = EmbeddingCache(tmp_path)
        for batch in range(5):
            keys = [f"w{worker}-{batch}-{i}" for i in range(20)]
            cache.put_many("fp", keys, _vectors(20, seed=worker * 100 + batch))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache = EmbeddingCache(tmp_path)
    assert cache.stats()["fingerprints"]["fp"] == {"items": 400, "dim": 4, "shards": 20, "bytes": cache.stats()["bytes"]}
    found, got = cache.get_many("fp", ["w3-4-19", "w0-0-0"])
    assert found.all()
    assert np.array_equal(got, np.stack([_vectors(20, seed=304)[19], _vectors(20, seed=0)[0]]))


def test_many_shards_load_into_one_array_and_compact(tmp_path):
    writer = EmbeddingCache(tmp_path)
    vecs = _vectors(200)
    for s in range(50):
        writer.put_many("fp", [f"k{i}" for i in range(4 * s, 4 * s + 4)], vecs[4 * s : 4 * s + 4])
    stale = tmp_path / "fp" / "shard-x.npz.tmp"
    stale.write_bytes(b"")
    os.utime(stale, (0, 0))
    reader = EmbeddingCache(tmp_path)
    found, got = reader.get_many("fp", [f"k{i}" for i in range(200)])
    assert found.all() and np.array_equal(got, vecs)
    assert reader._indices["fp"].vectors.shape == (200, 4)  # consolidated: one array, not 50
    assert reader.compact("fp") == 50
    assert [p.name for p in (tmp_path / "fp").iterdir() if p.suffix == ".npz"] == [next(iter(reader._indices["fp"].shards))]
    assert not stale.exists()
    found, got = EmbeddingCache(tmp_path).get_many("fp", [f"k{i}" for i in range(200)])
    assert found.all() and np.array_equal(got, vecs)
    assert writer.get_many("fp", ["k7"])[0].all()  # a reader that knew the old shards still finds everything
