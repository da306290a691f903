"""Tests of recsys.config: defaults, the DAG Params mapping and the flat view for MLflow."""

from __future__ import annotations

import dataclasses

import pytest

from recsys.config import EncoderConfig, EvalConfig, FusionConfig, GateConfig, PipelineConfig, SplitConfig, TrainConfig
from recsys.data.documents import DocumentConfig


def test_defaults():
    cfg = PipelineConfig()
    assert cfg.dataset == "online-retail"
    assert cfg.items_path is None and cfg.interactions_path is None and cfg.sample_users is None
    assert cfg.model_name == "recsys-item-encoder"
    assert cfg.experiment == "recsys-training"
    assert cfg.min_text_share == 0.9
    assert cfg.split == SplitConfig(
        seed=42, min_items_per_user=4, cold_item_share=0.10, holdout_share=0.20, time_val_share=0.10, time_test_share=0.10
    )
    assert cfg.encoder == EncoderConfig(model_path=None, max_length=48, batch_size=128, device="auto", num_threads=None)
    # pinned on purpose: a deliberate change of a tuned default updates this test too
    assert cfg.train == TrainConfig(
        max_steps=60,
        batch_size=48,
        learning_rate=5e-5,
        warmup_steps=10,
        weight_decay=0.01,
        temperature=0.05,
        grad_clip=1.0,
        max_pairs_per_user=50,
        pair_strategy="cooccurrence",
        neighbours_per_item=10,
        min_cooccurrence=3,
        eval_every=30,
        patience=2,
        seed=42,
    )
    assert cfg.eval == EvalConfig(k=10, batch_size=1024)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PipelineConfig().dataset = "x"  # type: ignore[misc]


def test_from_empty_params_is_the_default():
    assert PipelineConfig.from_params({}) == PipelineConfig()


def test_from_params_maps_every_param():
    cfg = PipelineConfig.from_params(
        {
            "dataset": "files",
            "items_path": "/data/items.csv",
            "interactions_path": "/data/events.parquet",
            "sample_users": "200",
            "max_train_steps": "5",
            "k": 20,
            "seed": "7",
            "learning_rate": "1e-4",
            "train_batch_size": 16,
            "pair_strategy": "random",
            "model_path": "/models/e5",
            "model_name": "my-model",
            "experiment": "my-exp",
            "min_text_share": "0.5",
            "not_a_param": "ignored",
        }
    )
    assert cfg.dataset == "files"
    assert cfg.items_path == "/data/items.csv"
    assert cfg.interactions_path == "/data/events.parquet"
    assert cfg.sample_users == 200
    assert cfg.train.max_steps == 5
    assert cfg.eval.k == 20
    # the seed drives both the split and the training
    assert cfg.split.seed == 7 and cfg.train.seed == 7
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert cfg.train.batch_size == 16
    assert cfg.train.pair_strategy == "random"
    assert cfg.encoder.model_path == "/models/e5"
    assert cfg.model_name == "my-model" and cfg.experiment == "my-exp"
    assert cfg.min_text_share == 0.5
    # what no param names keeps its default
    assert cfg.train.warmup_steps == 10 and cfg.split.min_items_per_user == 4 and cfg.encoder.max_length == 48
    assert isinstance(cfg.train.max_steps, int) and isinstance(cfg.eval.k, int) and isinstance(cfg.split.seed, int)


@pytest.mark.parametrize("blank", [None, ""])
def test_none_and_empty_mean_default(blank):
    params = {
        k: blank
        for k in (
            "dataset",
            "items_path",
            "interactions_path",
            "sample_users",
            "max_train_steps",
            "k",
            "seed",
            "learning_rate",
            "train_batch_size",
            "pair_strategy",
            "model_path",
            "model_name",
            "experiment",
            "min_text_share",
        )
    }
    assert PipelineConfig.from_params(params) == PipelineConfig()


def test_zero_steps_is_kept_not_defaulted():
    # 0 is a real value (no fine-tuning), unlike None / ""
    cfg = PipelineConfig.from_params({"max_train_steps": 0, "seed": 0})
    assert cfg.train.max_steps == 0
    assert cfg.split.seed == 0 and cfg.train.seed == 0


def test_flat_keys():
    flat = PipelineConfig.from_params({"max_train_steps": 5, "seed": 3, "k": 7}).flat()
    assert flat["train.max_steps"] == 5
    assert flat["split.seed"] == 3 and flat["train.seed"] == 3
    assert flat["eval.k"] == 7
    assert flat["encoder.model_path"] is None
    assert flat["dataset"] == "online-retail"
    # one key per top-level scalar field and per field of each section, nothing else
    expected = {"dataset", "items_path", "interactions_path", "sample_users", "model_name", "experiment", "min_text_share", "candidate", "train_profile", "warehouse_dataset", "trigger_reason", "embed_shard_size", "publish_shard_size", "finetune_on_gpu", "ann_min_items", "max_dense_items"}
    for section, cls in (
        ("fusion", FusionConfig),
        ("split", SplitConfig),
        ("documents", DocumentConfig),
        ("encoder", EncoderConfig),
        ("train", TrainConfig),
        ("eval", EvalConfig),
        ("gate", GateConfig),
    ):
        expected |= {f"{section}.{f.name}" for f in dataclasses.fields(cls)}
    assert set(flat) == expected
    assert all("." not in k or k.split(".")[0] in {"split", "documents", "encoder", "train", "fusion", "eval", "gate"} for k in flat)


def test_document_template_param():
    cfg = PipelineConfig.from_params({"document_template": "title, sales_band"})
    assert cfg.documents.template == ("title", "sales_band")
    with pytest.raises(ValueError, match="unknown document fields"):
        DocumentConfig(template=("title", "colour"))  # the section checks itself; from_params checks the declared choices (test_settings)


def test_training_options_params():
    cfg = PipelineConfig.from_params({"head": "additive", "freeze_layers": 3})
    assert cfg.train.head == "additive" and cfg.train.freeze_layers == 3


def test_embedding_shards_and_gpu_routing_params():
    cfg = PipelineConfig.from_params({"embed_shard_size": 500, "finetune_on_gpu": "true"})
    assert cfg.embed_shard_size == 500 and cfg.finetune_on_gpu is True
    assert PipelineConfig.from_params({}).finetune_on_gpu is False
    with pytest.raises(ValueError, match="embed_shard_size"):
        PipelineConfig.from_params({"embed_shard_size": -1})


def test_fusion_params():
    cfg = PipelineConfig.from_params({"fusion": "false", "fusion_signals": "price, rating", "fusion_text_adaptor": False, "fusion_select_on": "validation", "seed": 5})
    assert cfg.fusion == FusionConfig(enabled=False, signals=("price", "rating"), text_adaptor=False, select_on="validation", seed=5)
    assert PipelineConfig().fusion.enabled and PipelineConfig().fusion.select_on == "auto"
    with pytest.raises(ValueError, match="select_on"):
        PipelineConfig.from_params({"fusion_select_on": "test"})


def test_ann_min_items_param():
    assert PipelineConfig().ann_min_items == 50_000
    assert PipelineConfig.from_params({"ann_min_items": "1000"}).ann_min_items == 1000
    with pytest.raises(ValueError, match="ann_min_items"):
        PipelineConfig.from_params({"ann_min_items": 0})
