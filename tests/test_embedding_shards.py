"""The catalog is embedded in shards (one mapped Airflow task each) and merged back in catalog order:
the merged vectors are the vectors of a single pass, whatever order the shards finish in."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.stages import pipeline
from recsys.config import PipelineConfig
from recsys.model.encoder import TextEncoder
from recsys.run import RunContext

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.fixture(scope="module")
def prepared() -> tuple[PipelineConfig, RunContext, str]:
    cfg = PipelineConfig.from_params({"dataset": "online-retail", "sample_users": 40, "max_train_steps": 0, "seed": 3, "embed_shard_size": 64, "encoder_precision": "float32"})  # float32: compared at 2e-5
    ctx = RunContext.create(run_key="embedding-shards", logical_date="2026-11-28")
    run_id = pipeline.validate(cfg, ctx)["mlflow_run_id"]
    ctx = ctx.with_mlflow_run(run_id)
    pipeline.load_and_split(cfg, ctx)
    return cfg, ctx, run_id


def test_plan_covers_the_catalog_in_contiguous_shards(prepared) -> None:
    cfg, ctx, _ = prepared
    n = len(pipeline.catalog_documents(cfg, ctx))
    shards = pipeline.embedding_shards(cfg, ctx)
    assert [s["index"] for s in shards] == list(range(len(shards)))
    assert shards[0]["start"] == 0 and shards[-1]["stop"] == n
    assert all(a["stop"] == b["start"] for a, b in zip(shards, shards[1:]))
    assert all(s["stop"] - s["start"] == 64 for s in shards[:-1]) and 0 < shards[-1]["stop"] - shards[-1]["start"] <= 64
    assert pipeline.embedding_shards(cfg, ctx, shard_size=0) == [{"index": 0, "start": 0, "stop": n}]


def test_merged_shards_equal_one_pass_in_any_finishing_order(prepared) -> None:
    cfg, ctx, run_id = prepared
    shards = pipeline.embedding_shards(cfg, ctx)
    assert len(shards) >= 3
    done = [pipeline.embed_shard(cfg, ctx, s) for s in reversed(shards)]  # workers finish in any order
    merged = pipeline.merge_embeddings(cfg, ctx, done)
    vectors = np.load(merged["embeddings"])
    one_pass = TextEncoder(config=cfg.encoder).encode(pipeline.catalog_documents(cfg, ctx))
    assert merged["shards"] == len(shards) and merged["items"] == len(one_pass)
    np.testing.assert_allclose(vectors, one_pass, atol=2e-5)


def test_a_missing_shard_fails_the_merge(prepared) -> None:
    cfg, ctx, run_id = prepared
    shards = pipeline.embedding_shards(cfg, ctx)
    done = [pipeline.embed_shard(cfg, ctx, s) for s in shards]
    with pytest.raises(RuntimeError, match="do not cover the catalog"):
        pipeline.merge_embeddings(cfg, ctx, done[:-1])
