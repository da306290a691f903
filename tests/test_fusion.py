"""The learned fusion of text vectors with numeric signals (recsys/model/fusion.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.config import FusionConfig, PipelineConfig
from recsys.model.fusion import FusedEncoder, FusionAdaptor, train_fusion
from recsys.data.signals import SignalScaler, available_signals


def test_scaler_logs_amounts_standardises_and_maps_unknown_to_the_mean() -> None:
    raw = {"price": np.array([0.0, math.e - 1, np.nan]), "rating": np.array([1.0, 3.0, np.nan]), "sales": np.array([0.0, 0.0, math.e**2 - 1])}
    scaler = SignalScaler.fit(raw)
    assert scaler.names == ("price", "rating", "sales")
    # price: log1p -> [0, 1, nan]: mean 0.5, std 0.5; rating as is: mean 2, std 1; sales log1p -> [0, 0, 2]
    assert scaler.mean[:2] == pytest.approx((0.5, 2.0))
    assert scaler.std[:2] == pytest.approx((0.5, 1.0))
    z = scaler.transform(raw)
    assert z[:, 0] == pytest.approx([-1.0, 1.0, 0.0])
    assert z[:, 1] == pytest.approx([-1.0, 1.0, 0.0])
    sales_z = (0.0 - 2 / 3) / np.std([0, 0, 2])
    assert z[:, 2] == pytest.approx([sales_z, sales_z, (2 - 2 / 3) / np.std([0, 0, 2])], rel=1e-5)
    # a new item: unknown price and rating (-> mean, 0), no sales yet
    assert scaler.unknown_item() == pytest.approx([0.0, 0.0, sales_z], rel=1e-5)
    assert scaler.new_item_sales() == (2, pytest.approx(sales_z, rel=1e-5))
    assert SignalScaler.fit({"price": raw["price"]}).new_item_sales() is None


def test_available_signals_keeps_only_what_the_data_has() -> None:
    raw = {"price": np.array([np.nan, np.nan]), "sales": np.array([1.0, 2.0]), "rating": None}
    assert list(available_signals(raw, ("price", "sales", "rating"))) == ["sales"]
    assert available_signals(raw, ("price",)) == {}


def test_unknown_signal_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fusion signals \\['colour'\\]"):
        FusionConfig(signals=("price", "colour"))
    with pytest.raises(ValueError, match="colour"):
        PipelineConfig.from_params({"fusion_signals": "sales,colour"})


def test_adaptor_starts_as_the_identity_on_unit_vectors() -> None:
    v = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    adaptor = FusionAdaptor(8, 3, 4, text_adaptor=True)
    assert torch.allclose(adaptor(v, torch.randn(5, 3)), v, atol=1e-6)


def _grouped_problem(n: int = 200, dim: int = 16, seed: int = 0):
    """Items whose co-purchases follow a numeric signal (price group) that their text vectors do not show."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    group = np.arange(n) % 2
    price = np.where(group == 0, 5.0, 500.0) * rng.uniform(0.8, 1.2, size=n)
    pairs = []
    for i in range(n):
        same = np.flatnonzero(group == group[i])
        for j in rng.choice(same[same != i], size=5, replace=False):
            pairs.append((i, j))
    pairs = np.array(pairs, dtype=np.int64)

    def same_group_share(v: np.ndarray) -> float:
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        top = np.argsort(-sims, axis=1)[:, :5]
        return float((group[top] == group[:, None]).mean())

    return vectors, {"price": price}, pairs, same_group_share


def test_fusion_learns_a_signal_the_text_does_not_carry_and_is_kept() -> None:
    vectors, raw, pairs, score = _grouped_problem()
    scaler = SignalScaler.fit(raw)
    features = scaler.transform(raw)
    config = FusionConfig(text_adaptor=False, signals=("price",), steps=60, batch_size=64, eval_every=20, learning_rate=1e-2)
    result = train_fusion(vectors, features, pairs, config, validate=score)
    assert result.val_history[0] == pytest.approx(score(vectors))  # step 0: the text vectors themselves
    assert result.kept and result.best_step > 0
    fused = result.adaptor.apply(vectors, features)
    assert score(vectors) < 0.7 and score(fused) > 0.95  # neighbours now share the price group
    assert np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)


def test_fusion_that_does_not_beat_the_text_vectors_is_not_kept() -> None:
    vectors, raw, pairs, _ = _grouped_problem()
    features = SignalScaler.fit(raw).transform(raw)
    config = FusionConfig(signals=("price",), steps=20, batch_size=64, eval_every=10)
    result = train_fusion(vectors, features, pairs, config, validate=lambda v: 1.0)  # nothing ever beats step 0
    assert result.best_step == 0 and not result.kept
    assert np.allclose(result.adaptor.apply(vectors, features), vectors, atol=1e-6)  # back at the identity


def test_fusion_is_seeded_and_reproducible() -> None:
    vectors, raw, pairs, score = _grouped_problem()
    features = SignalScaler.fit(raw).transform(raw)
    config = FusionConfig(signals=("price",), steps=30, batch_size=64, eval_every=10)
    a = train_fusion(vectors, features, pairs, config, validate=score)
    b = train_fusion(vectors, features, pairs, config, validate=score)
    assert a.losses == b.losses and a.best_step == b.best_step
    assert np.array_equal(a.adaptor.apply(vectors, features), b.adaptor.apply(vectors, features))


def test_new_item_dropout_shows_training_items_as_unsold() -> None:
    """Dropout 1 shows every training item to the projection with the sales input of an unsold item:
    a structure that only sales reveal cannot be learned then; with dropout 0 it is."""
    vectors, _, pairs, score = _grouped_problem()
    n = len(vectors)
    raw = {"sales": np.where(np.arange(n) % 2 == 0, 1.0, 1000.0)}  # sales alone separates the groups
    scaler = SignalScaler.fit(raw)
    features = scaler.transform(raw)
    col, unsold = scaler.new_item_sales()
    as_new = features.copy()
    as_new[:, col] = unsold
    base = dict(text_adaptor=False, signals=("sales",), steps=40, batch_size=64, learning_rate=1e-2)
    seeing = train_fusion(vectors, features, pairs, FusionConfig(**base, new_item_dropout=0.0), new_item_sales=(col, unsold))
    blind = train_fusion(vectors, features, pairs, FusionConfig(**base, new_item_dropout=1.0), new_item_sales=(col, unsold))
    assert score(seeing.adaptor.apply(vectors, features)) > 0.95
    assert score(blind.adaptor.apply(vectors, as_new)) == pytest.approx(score(vectors), abs=0.05)  # what it saw: text alone


def test_saved_fusion_loads_and_fuses_new_items_like_unsold_unknown_items(tmp_path) -> None:
    vectors, raw, pairs, score = _grouped_problem()
    raw = raw | {"sales": np.arange(len(vectors), dtype=np.float64)}
    scaler = SignalScaler.fit(raw)
    features = scaler.transform(raw)
    result = train_fusion(vectors, features, pairs, FusionConfig(signals=("price", "sales"), steps=20, batch_size=64, eval_every=10), validate=score)
    FusedEncoder(result.adaptor, scaler).save(tmp_path / "fusion", {"best_step": result.best_step})
    loaded = FusedEncoder.load(tmp_path / "fusion")
    assert np.array_equal(loaded.adaptor.apply(vectors, features), result.adaptor.apply(vectors, features))
    new = loaded.fuse_new(vectors[:3])
    expected = result.adaptor.apply(vectors[:3], np.repeat(scaler.unknown_item()[None, :], 3, axis=0))
    assert np.allclose(new, expected, atol=1e-6)
