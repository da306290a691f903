"""The pyfunc with the hybrid model and behaviour statistics: every request kind, reasons, bundles."""

from __future__ import annotations

import json
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recsys.model.bundles import BundleCatalog
from recsys.model.hybrid import HybridConfig, fit_hybrid
from recsys.model.baselines import interaction_matrix
from recsys.serving import (
    BEHAVIOUR_ARTIFACT,
    CATALOG_ARTIFACT,
    HYBRID_ARTIFACT,
    HYBRID_CONFIG_ARTIFACT,
    ItemRecommender,
    save_behaviour,
    save_catalog,
)

IDS = ["mug_r", "mug_b", "saucer", "spoon", "candle", "new_mug"]
TITLES = ["Red mug", "Blue mug", "Saucer", "Tea spoon", "Candle", "Green mug"]


def _vectors() -> np.ndarray:
    v = np.array([[1, 0.2, 0], [1, 0.3, 0], [0.6, 1, 0], [0.5, 0.9, 0.2], [0, 0, 1], [1, 0.25, 0]], dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("hybrid")
    train = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c", "c", "d", "d", "e"],
            "item_id": ["mug_r", "saucer", "spoon", "mug_b", "saucer", "mug_r", "saucer", "spoon", "saucer", "candle"],
        }
    )
    x = interaction_matrix(train, IDS)
    is_cold = np.asarray(x.sum(axis=0)).ravel() == 0  # new_mug
    hybrid = fit_hybrid(x, _vectors(), is_cold, HybridConfig(l2=1.0, text_weight=1.0, cold_weight=0.5))
    np.savez(d / "hybrid.npz", weights=hybrid.weights, vectors=hybrid.vectors, is_cold=hybrid.is_cold)
    (d / "hybrid.json").write_text(json.dumps({"config": asdict(hybrid.config)}))
    index = {i: n for n, i in enumerate(IDS)}
    behaviour = BundleCatalog.build(IDS, TITLES, _vectors(), [None] * 6, np.array([8, 8, 5, 3, 12, 9.0]), train["user_id"].to_numpy(), train["item_id"].map(index).to_numpy())
    artifacts = {
        CATALOG_ARTIFACT: str(save_catalog(d / "catalog.npz", IDS, TITLES, _vectors())),
        HYBRID_ARTIFACT: str(d / "hybrid.npz"),
        HYBRID_CONFIG_ARTIFACT: str(d / "hybrid.json"),
        BEHAVIOUR_ARTIFACT: str(save_behaviour(d / "behaviour.npz", behaviour)),
    }
    m = ItemRecommender()
    m.load_context(SimpleNamespace(artifacts=artifacts))
    return m, hybrid


def test_item_request_ranks_by_the_hybrid_scores(model):
    m, hybrid = model
    out = m.predict(None, pd.DataFrame({"item_id": ["mug_r"]}), params={"k": 5})
    expected = hybrid.scores([np.array([0])])[0]
    expected[0] = -np.inf
    order = [j for j in np.argsort(-expected, kind="stable") if np.isfinite(expected[j])][:5]
    assert out["item_id"].tolist() == [IDS[j] for j in order]
    np.testing.assert_allclose(out["score"], expected[order], rtol=1e-5)


def test_reasons_quote_the_real_evidence(model):
    m, _ = model
    out = m.predict(None, pd.DataFrame({"item_id": ["mug_r"]}), params={"k": 5}).set_index("item_id")
    # saucer was bought with the red mug by a and c: 2 customers
    assert "bought together with Red mug by 2 customers" in out.loc["saucer", "reasons"]
    sim = float(_vectors()[0] @ _vectors()[1])
    assert f"close in meaning to Red mug (similarity {sim:.2f})" in out.loc["mug_b", "reasons"]
    assert "new item (no sales in the training data), recommended from its description" in out.loc["new_mug", "reasons"]
    assert "bought together" not in out.loc["candle", "reasons"]  # never bought with the red mug


def test_history_is_weighted_by_recency_and_count(model):
    m, hybrid = model
    out = m.predict(None, pd.DataFrame({"history": ["candle,mug_r,candle,spoon"]}), params={"k": 2})
    q = np.zeros(6, dtype=np.float32)
    # the served defaults: half-life 1000 events, times 1 + log(count); candle twice, latest one event ago
    q[4], q[0], q[3] = 0.5 ** (1 / 1000) * (1 + np.log(2)), 0.5 ** (2 / 1000), 1.0
    expected = hybrid.scores_from_dense(q[None, :])[0]
    expected[[0, 3, 4]] = -np.inf
    assert out["item_id"].tolist() == [IDS[j] for j in np.argsort(-expected, kind="stable")[:2]]
    np.testing.assert_allclose(out["score"], np.sort(expected)[::-1][:2], rtol=1e-5)


def test_new_user_gets_popular_items(model):
    m, _ = model
    out = m.predict(None, pd.DataFrame({"item_id": [None]}), params={"k": 2})
    # training customers per item: saucer 4, mug_r 2 / spoon 2 (tie -> lower index first)
    assert out["item_id"].tolist() == ["saucer", "mug_r"]
    assert out["reasons"].tolist()[0] == "popular: bought by 4 customers"


def test_diversity_lifts_less_popular_items(model):
    m, _ = model
    plain = m.predict(None, pd.DataFrame({"item_id": ["mug_b"]}), params={"k": 5})
    diverse = m.predict(None, pd.DataFrame({"item_id": ["mug_b"]}), params={"k": 5, "diversity": 5.0})
    assert plain["item_id"].iloc[0] == "saucer"  # the co-purchase favourite
    assert diverse["item_id"].iloc[0] != "saucer"


def test_bundle_mode_respects_budget_and_carries_reasons(model):
    m, _ = model
    out = m.predict(None, pd.DataFrame({"cart": ["mug_r"]}), params={"k": 3, "mode": "bundle", "budget": 10.0})
    assert "mug_r" not in set(out["item_id"])
    prices = dict(zip(IDS, [8, 8, 5, 3, 12, 9.0]))
    assert sum(prices[i] for i in out["item_id"]) <= 10.0
    assert all(out["reasons"])


def test_unknown_mode_is_rejected(model):
    m, _ = model
    with pytest.raises(ValueError, match="params.mode"):
        m.predict(None, pd.DataFrame({"item_id": ["mug_r"]}), params={"mode": "nope"})


def test_a_text_request_gets_reasons_true_of_each_item(model, monkeypatch):
    """A free text is a new item: that is said once by the caller (the CLI), not on every row. Each row says
    what is true of its item: the text's similarity, the co-purchases with the text's nearest catalog items
    that scored it, and "new item" only for items without training history."""
    m, _ = model
    text = _vectors()[0]  # described exactly like the red mug
    monkeypatch.setattr(m, "_embed_text", lambda texts: np.array([text] * len(texts)))
    out = m.predict(None, pd.DataFrame({"text": ["a red mug"]}), params={"k": 6}).set_index("item_id")
    from recsys.model.bundles import NEW_ITEM_REASON

    for item, reasons in out["reasons"].items():
        sim = float(_vectors()[IDS.index(item)] @ text)
        assert reasons.startswith(f"close in meaning to the given description (similarity {sim:.2f})"), item
        assert (NEW_ITEM_REASON in reasons) == (item == "new_mug"), item  # the only item nobody bought
    # the saucer was scored through the red mug, the text's nearest item: bought with it by a and c
    assert "bought together with Red mug by 2 customers" in out.loc["saucer", "reasons"]
    assert "bought together" not in out.loc["candle", "reasons"]


def test_a_budget_on_a_catalog_without_prices_says_what_to_do(model, monkeypatch):
    from dataclasses import replace

    m, _ = model
    monkeypatch.setattr(m, "behaviour", replace(m.behaviour, prices=np.full(len(IDS), np.nan)))
    with pytest.raises(ValueError, match=r"no prices, so a budget cannot be applied: ask without one"):
        m.predict(None, pd.DataFrame({"cart": ["mug_r"]}), params={"k": 3, "mode": "bundle", "budget": 10.0})
    # without a budget the same catalog composes a bundle, every pick with a reason
    out = m.predict(None, pd.DataFrame({"cart": ["mug_r"]}), params={"k": 3, "mode": "bundle"})
    assert len(out) >= 1 and out["reasons"].str.len().gt(0).all()


def test_explain_adds_each_picks_objective_terms(model):
    m, _ = model
    plain = m.predict(None, pd.DataFrame({"cart": ["mug_r"]}), params={"k": 3, "mode": "bundle"})
    out = m.predict(None, pd.DataFrame({"cart": ["mug_r"]}), params={"k": 3, "mode": "bundle", "explain": True})
    assert "breakdown" not in plain and out["item_id"].tolist() == plain["item_id"].tolist()
    for score, text in zip(out["score"], out["breakdown"], strict=True):
        t = json.loads(text)
        assert t["total"] == pytest.approx(score, abs=1e-4)
        assert t["relevance"] + t["complementarity"] + t["preference"] + t["diversity"] - t["redundancy"] == pytest.approx(t["total"], abs=5e-4)
    # the saucer is picked for what people bought with the red mug: its complementarity term is positive
    saucer = json.loads(out.set_index("item_id").loc["saucer", "breakdown"])
    assert saucer["complementarity"] > 0
    # the candle adds nothing but variety (no co-purchase, no similarity, no category): its reason says that
    candle = out.set_index("item_id").loc["candle"]
    assert json.loads(candle["breakdown"])["diversity"] > 0 and candle["reasons"].startswith("adds variety: unlike the rest of the basket")


def test_a_text_is_scored_through_its_nearest_items_with_behaviour(model):
    """A text is a new item: like the model's own cold items it borrows from warm neighbours. The green mug
    (never sold) is the text's exact match, but carries no behaviour, so it is not one of them."""
    m, hybrid = model
    text = _vectors()[IDS.index("new_mug")]
    sims, idx = m._text_neighbours(text)
    warm = [j for j in range(len(IDS)) if not hybrid.is_cold[j]]
    expected = sorted(warm, key=lambda j: -float(_vectors()[j] @ text))[: hybrid.config.cold_neighbours]
    assert idx.tolist() == expected
    np.testing.assert_allclose(sims, [_vectors()[j] @ text for j in expected], rtol=1e-6)
    assert IDS.index("new_mug") not in idx.tolist()


def test_a_model_with_a_trend_prior_ranks_histories_with_it_and_items_without(model, tmp_path, monkeypatch):
    """The packaged prior (as of the end of the data) enters a history request's ranking, where an item among the
    catalog's top sellers of the window is told so; an item's related items are ranked without it."""
    import recsys.serving as serving
    from recsys.model.trend import add_trend

    _, hybrid = model
    cfg = HybridConfig(**{**asdict(hybrid.config), "trend_weight": 1.0, "trend_days": 28.0})
    prior = np.array([0.0, -0.5, -1.0, 0.5, 2.0, -1.0], dtype=np.float32)  # the candle sells most now
    np.savez(tmp_path / "hybrid.npz", weights=hybrid.weights, vectors=hybrid.vectors, is_cold=hybrid.is_cold, trend=prior)
    (tmp_path / "hybrid.json").write_text(json.dumps({"config": asdict(cfg)}))
    artifacts = {
        CATALOG_ARTIFACT: str(save_catalog(tmp_path / "catalog.npz", IDS, TITLES, _vectors())),
        HYBRID_ARTIFACT: str(tmp_path / "hybrid.npz"),
        HYBRID_CONFIG_ARTIFACT: str(tmp_path / "hybrid.json"),
        BEHAVIOUR_ARTIFACT: str(save_behaviour(tmp_path / "behaviour.npz", model[0].behaviour)),
    }
    m = ItemRecommender()
    m.load_context(SimpleNamespace(artifacts=artifacts))
    np.testing.assert_array_equal(m.model.trend, prior)
    monkeypatch.setattr(serving, "TREND_REASON_TOP", 0.2)  # six items: the top one is the top 17%
    # a customer's history (what the prior was validated on): ranked with it, and the top seller says so
    from recsys.model.recommend import history_weights

    out = m.predict(None, pd.DataFrame({"history": ["mug_r,spoon"]}), params={"k": 4})
    q = history_weights([0, 3], 6)
    expected = add_trend(hybrid.scores_from_dense(q[None, :]), prior, 1.0)[0]
    expected[[0, 3]] = -np.inf
    order = [j for j in np.argsort(-expected, kind="stable") if np.isfinite(expected[j])][:4]
    assert out["item_id"].tolist() == [IDS[j] for j in order]
    np.testing.assert_allclose(out["score"], expected[order], rtol=1e-5)
    reasons = out.set_index("item_id")["reasons"]
    assert "selling now: in the top 17% of the catalog by customers in the last 28 days" in reasons["candle"]
    assert all("selling now" not in reasons[i] for i in reasons.index if i != "candle")
    # an item's related items: no prior (on one item it would turn every list into the week's best sellers)
    related = m.predict(None, pd.DataFrame({"item_id": ["mug_r"]}), params={"k": 5})
    plain = hybrid.scores([np.array([0])])[0]
    plain[0] = -np.inf
    np.testing.assert_allclose(related["score"], np.sort(plain[np.isfinite(plain)])[::-1][:5], rtol=1e-5)
    assert not related["reasons"].str.contains("selling now").any()
