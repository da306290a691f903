"""Tests of recsys.model.encoder (the real packaged all-MiniLM-L6-v2) and recsys.serving (the pyfunc model)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import EncoderConfig
from recsys.model.encoder import TextEncoder, default_model_path, mean_pool, pick_device
from recsys.serving import CATALOG_ARTIFACT, ENCODER_ARTIFACT, ItemRecommender, save_catalog

MUG = "Red ceramic coffee mug"
CUP = "Blue ceramic coffee cup"
TRAIN = "Wooden toy train set for children"
KNIFE = "Stainless steel kitchen knife"


@pytest.fixture(scope="module")
def encoder():
    # one torch thread: tiny batches, and 2 threads on a busy 2-core machine spin rather than work
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # float32: these tests compare vectors across batch compositions at 1e-5; bf16 autocast (the default
    # on CPUs with native bf16) moves them by ~1e-3 with the padding (tested on its own below / in test_encoder_serving)
    yield TextEncoder(config=EncoderConfig(device="cpu", precision="float32"))
    torch.set_num_threads(threads)


# --- mean_pool ----------------------------------------------------------------------------------------


def test_mean_pool_ignores_padding_and_normalizes():
    hidden = torch.tensor(
        [
            [[3.0, 0.0], [0.0, 4.0], [100.0, 100.0]],  # 3rd token is padding
            [[1.0, 1.0], [5.0, -7.0], [1.0, -1.0]],  # no padding
        ]
    )
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = mean_pool(hidden, mask)
    # row 0: mean of (3,0), (0,4) = (1.5, 2) with norm 2.5 -> (0.6, 0.8)
    # row 1: mean of all three = (7/3, -7/3) -> (1/sqrt2, -1/sqrt2)
    expected = torch.tensor([[0.6, 0.8], [1 / math.sqrt(2), -1 / math.sqrt(2)]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_mean_pool_of_a_fully_masked_row_is_zero_not_nan():
    out = mean_pool(torch.ones(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))
    assert torch.equal(out, torch.zeros(1, 3))


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_encoder_path_must_be_a_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local model folder"):
        TextEncoder(str(tmp_path / "missing"))


# --- TextEncoder.encode ----------------------------------------------------------------------------------


def test_encode_returns_normalized_float32_rows(encoder):
    vecs = encoder.encode([MUG, CUP, TRAIN], progress=False)
    assert vecs.dtype == np.float32
    assert vecs.shape == (3, encoder.dim) == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_encode_keeps_input_order(encoder):
    ab = encoder.encode([MUG, TRAIN], progress=False)
    ba = encoder.encode([TRAIN, MUG], progress=False)
    np.testing.assert_allclose(ab, ba[::-1], atol=1e-5)
    # texts of different lengths over several batches (sorted by length inside): each row is its own text
    texts = [TRAIN, "Mug", KNIFE, CUP, MUG]
    together = encoder.encode(texts, batch_size=2, progress=False)
    alone = np.concatenate([encoder.encode([t], progress=False) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_encode_no_texts(encoder):
    assert encoder.encode([], progress=False).shape == (0, 384)


def test_similar_titles_are_closer(encoder):
    mug, cup, train, knife = encoder.encode([MUG, CUP, TRAIN, KNIFE], progress=False)
    assert mug @ cup > mug @ train
    assert mug @ cup > mug @ knife
    assert cup @ mug > cup @ train


def test_encode_restores_training_mode(encoder):
    encoder.model.train()
    try:
        encoder.encode([MUG], progress=False)
        assert encoder.model.training
    finally:
        encoder.model.eval()


def test_save_and_reload_gives_the_same_vectors(encoder, tmp_path):
    encoder.save(tmp_path / "enc")
    reloaded = TextEncoder(str(tmp_path / "enc"), EncoderConfig(device="cpu", precision="float32"))
    texts = [MUG, TRAIN]
    np.testing.assert_allclose(reloaded.encode(texts, progress=False), encoder.encode(texts, progress=False), atol=1e-6)


# --- serving.ItemRecommender -----------------------------------------------------------------------------
# four hand-made unit vectors (in the encoder's 384 dimensions, only the first two used):
# i0 at 0 deg, i1 at 30 deg, i2 at 90 deg, i3 at 180 deg
C30, S30 = math.cos(math.radians(30)), math.sin(math.radians(30))
IDS = ["i0", "i1", "i2", "i3"]
TITLES = ["Zero", "Thirty", "Ninety", "One-eighty"]


def _hand_vectors() -> np.ndarray:
    v = np.zeros((4, 384), dtype=np.float32)
    v[:, :2] = [[1.0, 0.0], [C30, S30], [0.0, 1.0], [-1.0, 0.0]]
    return v


def _recommender(catalog_path) -> ItemRecommender:
    model = ItemRecommender()
    model.load_context(SimpleNamespace(artifacts={CATALOG_ARTIFACT: str(catalog_path), ENCODER_ARTIFACT: default_model_path()}))
    return model


@pytest.fixture(scope="module")
def hand_model(tmp_path_factory):
    path = save_catalog(tmp_path_factory.mktemp("serving") / "model" / "catalog.npz", IDS, TITLES, _hand_vectors())
    return _recommender(path)


def test_save_catalog_round_trip(tmp_path):
    path = save_catalog(tmp_path / "sub" / "catalog.npz", IDS, TITLES, _hand_vectors().astype(np.float64))
    data = np.load(path)
    assert data["item_ids"].tolist() == IDS
    assert data["titles"].tolist() == TITLES
    assert data["vectors"].dtype == np.float32
    np.testing.assert_array_equal(data["vectors"], _hand_vectors())


def test_predict_item_queries_exact_ranking(hand_model):
    out = hand_model.predict(None, pd.DataFrame({"item_id": ["i0", "i3"]}), params={"k": 3})
    assert list(out.columns) == ["request", "rank", "item_id", "title", "score", "reasons"]
    # i0 = (1, 0): i1 cos30 = .866, i2 0, i3 -1  (i0 itself excluded)
    # i3 = (-1, 0): i2 0, i1 -.866, i0 -1       (i3 itself excluded)
    assert out["request"].tolist() == [0, 0, 0, 1, 1, 1]
    assert out["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert out["item_id"].tolist() == ["i1", "i2", "i3", "i2", "i1", "i0"]
    assert out["title"].tolist() == ["Thirty", "Ninety", "One-eighty", "Ninety", "Thirty", "Zero"]
    np.testing.assert_allclose(out["score"], [C30, 0.0, -1.0, 0.0, -C30, -1.0], atol=1e-6)


def test_predict_respects_k_and_defaults_to_10(hand_model):
    out = hand_model.predict(None, pd.DataFrame({"item_id": ["i1"]}), params={"k": 2})
    # i1 at 30 deg: i0 cos30 = .866, i2 cos60 = .5, i3 -cos30 -> top 2 = [i0, i2]
    assert out["item_id"].tolist() == ["i0", "i2"]
    np.testing.assert_allclose(out["score"], [C30, 0.5], atol=1e-6)
    out = hand_model.predict(None, pd.DataFrame({"item_id": ["i1"]}), params={"k": 1})
    assert out["item_id"].tolist() == ["i0"]


def test_predict_never_returns_the_query_item(hand_model):
    out = hand_model.predict(None, pd.DataFrame({"item_id": IDS}), params={"k": 3})
    for query, group in out.groupby("request"):
        assert IDS[query] not in group["item_id"].tolist()
        assert len(group) == 3


def test_predict_with_k_above_the_catalog_size_excludes_the_query_item(hand_model):
    out = hand_model.predict(None, pd.DataFrame({"item_id": ["i0"]}), params={"k": 10})
    # 4 items, the query excluded -> the 3 others, all with finite scores
    assert out["item_id"].tolist() == ["i1", "i2", "i3"]
    assert np.isfinite(out["score"]).all()


def test_unknown_item_without_text_names_the_row(hand_model):
    with pytest.raises(ValueError, match=r"request row 1: item ids \['nope'\] are not in the catalog"):
        hand_model.predict(None, pd.DataFrame({"item_id": ["i0", "nope"]}), params={"k": 2})
    with pytest.raises(ValueError, match="row 0"):
        hand_model.predict(None, pd.DataFrame({"item_id": ["nope"], "text": ["   "]}), params={"k": 2})


def test_text_query_is_embedded_by_the_encoder(hand_model, encoder):
    text = "A red ceramic mug"
    out = hand_model.predict(None, pd.DataFrame({"item_id": [None], "text": [text]}), params={"k": 4})
    # scores = the encoder's vector of the text against the catalog, nothing excluded
    served = TextEncoder(config=EncoderConfig(device="cpu"))  # the served model's precision: "auto"
    expected = (served.encode([text], progress=False) @ _hand_vectors().T)[0]
    order = np.argsort(-expected, kind="stable")
    assert out["item_id"].tolist() == [IDS[j] for j in order]
    np.testing.assert_allclose(out["score"], expected[order], atol=1e-5)
    assert out["rank"].tolist() == [1, 2, 3, 4]


def test_unknown_item_with_text_falls_back_to_the_text(tmp_path, encoder):
    # a catalog embedded with the same encoder: a new item's text finds its nearest catalog items
    titles = [MUG, TRAIN, KNIFE]
    path = save_catalog(tmp_path / "catalog.npz", ["m", "t", "k"], titles, encoder.encode(titles, progress=False))
    model = _recommender(path)
    frame = pd.DataFrame({"item_id": ["new-1", "t"], "text": ["Blue ceramic coffee cup", None]})
    out = model.predict(None, frame, params={"k": 1})
    # row 0: unknown id -> its text -> nearest item the mug; row 1: the train item by id, itself excluded
    assert out["item_id"].tolist()[0] == "m"
    assert out["request"].tolist() == [0, 1] and out["item_id"].tolist()[1] != "t"


# --- precision ------------------------------------------------------------------------------------


def test_precision_choice_follows_the_device_and_the_cpu():
    from recsys.model.encoder import cpu_has_native_bf16, use_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_bf16(cuda, "auto") is True and use_bf16(cuda, "float32") is False
    assert use_bf16(cpu, "bfloat16") is True and use_bf16(cpu, "float32") is False
    assert use_bf16(cpu, "auto") is cpu_has_native_bf16()  # emulated bf16 is slower than float32: not chosen
    with pytest.raises(ValueError, match="precision must be one of"):
        use_bf16(cpu, "fp16")


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    from recsys.model.encoder import cpu_flags, cpu_has_native_bf16

    # plain AVX-512 emulates bf16 (slower than float32): not native; AVX512-BF16 or AMX-BF16 are
    assert not cpu_has_native_bf16(frozenset({"avx512f", "avx512bw", "avx512_vnni"}))
    assert cpu_has_native_bf16(frozenset({"avx512f", "avx512_bf16"})) and cpu_has_native_bf16(frozenset({"amx_tile", "amx_bf16"}))
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\nbogomips\t: 1\n")
    assert cpu_flags(str(info)) == frozenset({"fpu", "sse", "avx512f", "avx512_bf16"})
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_bf16_vectors_match_float32_ones(encoder):
    """bf16 autocast changes the vectors by ~1e-5 in cosine: the same neighbours, a separate cache entry."""
    fp32 = TextEncoder(config=EncoderConfig(device="cpu", precision="float32"))
    bf16 = TextEncoder(config=EncoderConfig(device="cpu", precision="bfloat16"))
    assert fp32.inference_precision == "float32" and bf16.inference_precision == "bf16-autocast"
    texts = ["red retrospot lunch bag", "set of 3 cake tins pantry design", "white hanging heart t-light holder", "jumbo bag red retrospot"]
    a, b = fp32.encode(texts, progress=False), bf16.encode(texts, progress=False)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.999
    assert np.array_equal(np.argsort(-(a @ a.T), axis=1), np.argsort(-(b @ b.T), axis=1))


def test_text_query_goes_through_the_models_fusion_as_a_new_item(tmp_path, encoder):
    """With a fusion artifact, catalog vectors live in the fused space: a free-text query is embedded,
    then fused as a new item (unknown price, no sales), and scored in that space."""
    import torch

    from recsys.model.fusion import FusedEncoder, FusionAdaptor
    from recsys.data.signals import SignalScaler
    from recsys.serving import FUSION_ARTIFACT

    adaptor = FusionAdaptor(384, 1, 2, text_adaptor=False)
    with torch.no_grad():  # a projection that adds a large push along axis 5 for an item with no sales
        adaptor.features[0].weight.fill_(0.0)
        adaptor.features[0].bias.fill_(1.0)
        adaptor.features[2].weight.zero_()
        adaptor.features[2].bias.zero_()
        adaptor.features[2].bias[5] = 3.0
    scaler = SignalScaler.fit({"sales": np.array([0.0, 10.0, 100.0])})
    fusion_dir = tmp_path / "model" / "fusion"
    FusedEncoder(adaptor, scaler).save(fusion_dir)
    catalog = _hand_vectors()
    catalog[3] = 0.0
    catalog[3, 5] = 1.0  # one catalog item sits where fused new items land
    path = save_catalog(tmp_path / "model" / "catalog.npz", IDS, TITLES, catalog)
    model = ItemRecommender()
    model.load_context(SimpleNamespace(artifacts={CATALOG_ARTIFACT: str(path), ENCODER_ARTIFACT: default_model_path(), FUSION_ARTIFACT: str(fusion_dir)}))
    text = "A red ceramic mug"
    out = model.predict(None, pd.DataFrame({"item_id": [None], "text": [text]}), params={"k": 4})
    served = TextEncoder(default_model_path())
    fused = FusedEncoder.load(fusion_dir).fuse_new(served.encode([text], progress=False))
    expected = (fused @ catalog.T)[0]
    assert out["item_id"].tolist() == [IDS[i] for i in np.argsort(-expected)]
    assert out["item_id"].iloc[0] == "i3"
    assert out["score"].to_numpy() == pytest.approx(np.sort(expected)[::-1], abs=1e-4)
