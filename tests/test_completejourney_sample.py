"""A few hundred households of the real completejourney year, through the training stages on the scalable path.

The whole year (92,331 products, 1.46M lines) is measured by the benchmarks (README *Large catalogs*); the
suite runs its real data at a size that fits the suite: 150 households (deterministic sample), the
calendar protocol (months 1-10 train, November validation, December test), fine-tuning and fusion off,
and `max_dense_items` below the sample's catalog so the model takes the path a full-size shop takes:
the head's Gram matrix inverted, every other item folded in; item-item baselines on the same head, ALS
over the whole catalog; the packaged model serves carts of head and of tail items, and text.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from recsys.config import PipelineConfig
from recsys.data import schema as S
from recsys.data.splits import TEST, TRAIN, VAL
from recsys.model.hybrid import load_hybrid
from recsys.model.trend import end_of_data, recent_buyers, trend_prior
from recsys.run import RunContext, load_events, load_split, read_json
from recsys.serving import ItemRecommender
from recsys.stages import pipeline, promotion

pytestmark = [pytest.mark.slow, pytest.mark.network]

PARAMS = {
    "dataset": "completejourney", "sample_users": 150, "time_val_start": "2017-11-01", "time_test_start": "2017-12-01",
    "max_train_steps": 0, "fusion": False, "max_dense_items": 1500, "model_name": "cj-sample", "seed": 7,
    "eval_max_users": 40,  # a big shop's option: tuning, the test report and the gate on a seeded sample of users
}  # fmt: skip


def test_a_completejourney_sample_follows_the_calendar_protocol_and_trains_on_the_scalable_path(session_home) -> None:
    cfg = PipelineConfig.from_params(PARAMS)
    ctx = RunContext.create("cj-sample", "2026-12-06")
    ctx = ctx.with_mlflow_run(pipeline.validate(cfg, ctx)["mlflow_run_id"])
    for stage in (pipeline.load_and_split, pipeline.embed, pipeline.finetune, pipeline.fuse, pipeline.fit_model):
        stage(cfg, ctx)
    split, catalog = load_split(ctx)
    # the protocol: each part's pairs start in its calendar window
    first = split.pairs.groupby("part")[S.TIMESTAMP].agg(["min", "max"])
    assert first.loc[TRAIN, "max"] < pd.Timestamp("2017-11-01", tz="UTC") <= first.loc[VAL, "min"]
    assert first.loc[VAL, "max"] < pd.Timestamp("2017-12-01", tz="UTC") <= first.loc[TEST, "min"]
    assert split.protocol == "time" and len(catalog) > 1500
    # a grocer's prices are there (the median unit price over the training months)
    assert catalog[S.PRICE].notna().mean() > 0.95 and (catalog[S.PRICE].dropna() >= 0).all()
    model, info = load_hybrid(ctx.hybrid_weights, ctx.hybrid_info)
    assert model.head is not None and len(model.head) == 1500 and info["config"]["head_items"] == 1500
    # data with time: the trend prior's weight and window were searched on validation, the trending baseline's too
    assert {"trend_weight", "trend_days"} <= set(info["chosen"]) and info["config"]["trend_weight"] == info["chosen"]["trend_weight"]
    assert any(k.startswith("trend.trend_days_") for k in info["tried"]) and "days" in info["baselines"]["trending"]["chosen"]
    assert model.trend is None  # the prior belongs to a moment: evaluation and packaging attach it
    report = pipeline.evaluate(cfg, ctx)["test"]
    assert report["trending"]["n_queries"] == 40 and np.isfinite(report["trending"]["recall_at_10"])
    # full ranking over every catalog item, for the seeded sample of 40 of the test households with targets
    assert report["hybrid"]["n_queries"] == report["als"]["n_queries"] == 40
    everyone = len(dataclasses.replace(split, max_eval_users=0).queries_and_targets(TEST)[0])
    assert everyone > 50 and split.max_eval_users == 40
    assert read_json(ctx.identity)["split"]["eval_sample"] == 40  # what the report names beside the metrics
    assert report["hybrid"]["coverage_at_10"] > report["popularity"]["coverage_at_10"]
    # new products (first sold in November or December) are reachable: the text side scores them, ALS cannot
    assert report["als"]["cold_recall_at_10"] == 0.0
    assert np.isfinite(report["hybrid"]["cold_recall_at_10"])
    _, c = ctx.mlflow()
    assert c.get_run(ctx.mlflow_run_id).data.metrics["hybrid.head_items"] == 1500
    # packaged and served: the head, diag(P) and the training matrix's structure travel with the model
    promotion.package(cfg, ctx)
    served = ItemRecommender.load(ctx.run_dir / "model")
    assert served.model.head is not None and np.array_equal(served.model.head, model.head)
    if info["chosen"]["trend_weight"]:  # served with the prior as of the end of its data
        events = load_events(ctx)
        expected = trend_prior(recent_buyers(events, served.item_ids, end_of_data(events), info["chosen"]["trend_days"]))
        np.testing.assert_array_equal(served.model.trend, expected)
    else:
        assert served.model.trend is None
    tail = [served.item_ids[j] for j in np.setdiff1d(np.flatnonzero(~model.is_cold), model.head)[:2]]  # bought, outside the head
    head = [served.item_ids[j] for j in model.head[:2]]
    request = pd.DataFrame({"cart": [",".join(head), ",".join(tail), None], "text": [None, None, "organic whole milk"]})
    out = served.predict(None, request, params={"k": 5})
    assert out.groupby("request").size().tolist() == [5, 5, 5]
    assert not set(out.loc[out["request"] == 0, "item_id"]) & set(head) and not set(out.loc[out["request"] == 1, "item_id"]) & set(tail)
