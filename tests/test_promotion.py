"""The promotion path on a real MLflow store and registry: package → score the champion on the same
split → gate → promote / reject, a crash before the alias move, reruns, rollback, publishing.

The training stages run once (a small real online-retail sample, fine-tuning skipped); each "run"
below gets its own run folder (a copy of the trained one) and its own registered version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recsys import pipeline, promotion, tracking
from recsys.config import PipelineConfig
from recsys.pipeline import RunContext
from recsys.serving import ItemRecommender

pytestmark = [pytest.mark.slow, pytest.mark.network]

MODEL = "gate-test-model"
BASE = {"dataset": "online-retail", "sample_users": 120, "max_train_steps": 0, "model_name": MODEL, "seed": 7}


def _ctx(key: str) -> RunContext:
    return RunContext.create(run_key=key, logical_date="2026-11-28")


@pytest.fixture(scope="module")
def trained() -> tuple[RunContext, str]:
    cfg = PipelineConfig.from_params(BASE)
    ctx = _ctx("gate-trained")
    run_id = pipeline.validate(cfg, ctx)["mlflow_run_id"]
    for stage in (pipeline.load_and_split, pipeline.embed, pipeline.finetune, pipeline.fuse, pipeline.fit_model, pipeline.evaluate):
        stage(cfg, ctx, run_id)
    return ctx, run_id


def _new_run(trained: tuple[RunContext, str], key: str, **params) -> tuple[PipelineConfig, RunContext, str]:
    """A pipeline run whose training stages are those of `trained` (copied), with its own MLflow run."""
    src, _ = trained
    cfg = PipelineConfig.from_params(BASE | params)
    ctx = _ctx(key)
    if not ctx.run_dir.exists():
        shutil.copytree(src.run_dir, ctx.run_dir, ignore=shutil.ignore_patterns("package.json", "champion.json", "evaluation"))
    _, c = pipeline._mlflow(ctx)
    exp = tracking.ensure_experiment(c, cfg.experiment, ctx.local_artifact_root)
    run_id = tracking.get_or_create_run(c, exp, ctx.run_key, ctx.run_key, {})
    return cfg, ctx, run_id


def _gate(cfg: PipelineConfig, ctx: RunContext, run_id: str) -> dict:
    promotion.package(cfg, ctx, run_id)
    promotion.score_champion(cfg, ctx, run_id)
    return promotion.decide(cfg, ctx, run_id)


@pytest.fixture(scope="module")
def registry(trained):
    """The gate's story, in order; each test below checks one chapter of it."""
    _, c = pipeline._mlflow(trained[0])
    story: dict = {"client": c}
    # 1. the first model ever: must beat every baseline
    cfg, ctx, run_id = _new_run(trained, "gate-first")
    story["first"] = _gate(cfg, ctx, run_id)
    promotion.promote(cfg, ctx, run_id)
    story["first_ctx"] = ctx
    # 2. a deliberately weaker model (the text encoder alone) against that champion
    cfg, ctx, run_id = _new_run(trained, "gate-weak", candidate="text")
    story["weak"] = _gate(cfg, ctx, run_id)
    promotion.reject(cfg, ctx, run_id)
    story["weak_args"] = (cfg, ctx, run_id)
    return story


def test_first_model_beats_every_baseline_and_becomes_champion(registry) -> None:
    c, first = registry["client"], registry["first"]
    assert first["promote"] and first["status"] == "promoted" and first["champion_version"] is None
    assert first["reasons"][0].startswith("first model: ndcg_at_10")
    assert tracking.champion_version(c, MODEL) == first["version"]
    mv = c.get_model_version(MODEL, first["version"])
    assert mv.tags["gate.decision"] == "promoted" and mv.tags["gate.compared_with"] == "baselines (first model)"
    assert mv.tags["previous_champion"] == ""
    # the registry description a reviewer reads: decision, a metrics table, the data
    assert "promoted" in mv.description.lower() and "| candidate" in mv.description.replace("|candidate", "| candidate")
    assert "online-retail" in mv.description


def test_weaker_model_is_refused_with_reasons_and_the_champion_stays(registry) -> None:
    c, first, weak = registry["client"], registry["first"], registry["weak"]
    assert not weak["promote"] and weak["status"] == "rejected"
    assert weak["champion_version"] == first["version"]
    assert any(r.startswith("ndcg_at_10") and "does not improve enough on champion" in r for r in weak["reasons"])
    assert tracking.champion_version(c, MODEL) == first["version"]
    assert tracking.alias_version(c, MODEL, tracking.CHALLENGER) == weak["version"]
    tags = c.get_model_version(MODEL, weak["version"]).tags
    assert tags["gate.decision"] == "rejected" and "ndcg_at_10" in tags["gate.reasons"]
    assert tags["gate.compared_with"] == f"version {first['version']}"


def test_champion_scored_on_the_same_split_as_the_candidate(registry) -> None:
    cfg, ctx, run_id = registry["weak_args"]
    scored = json.loads((ctx.run_dir / "champion.json").read_text())
    candidate = json.loads((ctx.run_dir / "metrics.json").read_text())["test"]
    # the champion IS the hybrid of this same training run: scored through the registry it must
    # reproduce the hybrid's numbers exactly on the same queries and targets
    for metric in ("ndcg_at_10", "recall_at_10", "cold_recall_at_10", "coverage_at_10"):
        assert scored["metrics"][metric] == pytest.approx(candidate["hybrid"][metric], abs=1e-9), metric
    assert scored["catalog_coverage"] == 1.0


def test_report_json_html_and_plots_are_written_and_logged(registry) -> None:
    cfg, ctx, run_id = registry["weak_args"]
    out = ctx.run_dir / "evaluation"
    report = json.loads((out / "report.json").read_text())
    assert report["decision"]["status"] == "rejected"
    assert set(report["metrics"]["test"]) >= {"candidate", "champion", "ease", "itemknn", "frozen", "popularity"}
    assert report["dataset"]["digest"] and report["code"]["git_sha"]
    html = (out / "report.html").read_text()
    assert "rejected" in html.lower() and "data:image/png;base64," in html
    for plot in ("learning_curve.png", "comparison.png", "popularity_bias.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    c = registry["client"]
    logged = {a.path for a in c.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/report.json", "evaluation/gate.json", "evaluation/comparison.png"} <= logged

def test_training_run_records_its_data_code_and_environment(trained) -> None:
    ctx, run_id = trained
    _, c = pipeline._mlflow(ctx)
    run = c.get_run(run_id)
    identity = json.loads((ctx.run_dir / "split" / "identity.json").read_text())
    logged = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert logged == {"online-retail-interactions": identity["interactions_digest"], "online-retail-items": identity["items_digest"]}
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    assert run.data.tags["env.python"] and run.data.tags["env.torch"]
    # per-step training curves are in the run
    assert c.get_metric_history(run_id, "train.val_recall_at_10")


def test_rerun_does_not_decide_twice(registry) -> None:
    cfg, ctx, run_id = registry["weak_args"]
    before = json.loads((ctx.run_dir / "evaluation" / "gate.json").read_text())
    again = promotion.decide(cfg, ctx, run_id)
    after = json.loads((ctx.run_dir / "evaluation" / "gate.json").read_text())
    assert after["decided_at"] == before["decided_at"] and again["status"] == "rejected"
    # a rerun of the whole tail registers no new version and moves nothing
    assert promotion.package(cfg, ctx, run_id)["version"] == registry["weak"]["version"]
    assert promotion.score_champion(cfg, ctx, run_id)["reused"] is True
    promotion.reject(cfg, ctx, run_id)
    c = registry["client"]
    assert tracking.champion_version(c, MODEL) == registry["first"]["version"]


def test_crash_before_the_alias_move_leaves_the_champion_then_a_rerun_promotes(registry, trained, monkeypatch) -> None:
    c, first = registry["client"], registry["first"]
    # an equally good model passes a zero margin: the gate says promote
    cfg, ctx, run_id = _new_run(trained, "gate-equal", gate_min_relative_gain=0.0)
    decision = _gate(cfg, ctx, run_id)
    assert decision["promote"], decision["reasons"]

    def crash(*args, **kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(tracking, "set_alias", crash)
    with pytest.raises(RuntimeError, match="worker killed"):
        promotion.promote(cfg, ctx, run_id)
    assert tracking.champion_version(c, MODEL) == first["version"]
    monkeypatch.undo()
    promotion.promote(cfg, ctx, run_id)  # the retry
    assert tracking.champion_version(c, MODEL) == decision["version"]
    promotion.promote(cfg, ctx, run_id)  # and once more: nothing changes
    assert tracking.champion_version(c, MODEL) == decision["version"]
    assert c.get_model_version(MODEL, decision["version"]).tags["previous_champion"] == first["version"]

    # publishing writes the champion's recommendations, one version in the table
    from recsys.publish import published_version, read_published

    published = promotion.publish(cfg, ctx)
    assert published["version"] == decision["version"] and published["rows"] > published["items"]
    assert published_version(ctx.warehouse_url, MODEL) == decision["version"]
    catalog_item = pd.read_parquet(ctx.run_dir / "split" / "catalog.parquet")["item_id"].iloc[0]
    rows = read_published(ctx.warehouse_url, MODEL, catalog_item)
    assert len(rows) == cfg.eval.k and (rows["model_version"] == decision["version"]).all()

    # rollback: back to the version it replaced, with who and why on both
    from recsys.cli import main

    assert main(["--model-name", MODEL, "rollback", "--reason", "complaints about bundles"]) == 0
    assert tracking.champion_version(c, MODEL) == first["version"]
    rolled = c.get_model_version(MODEL, decision["version"]).tags
    assert rolled["rollback.reason"] == "complaints about bundles" and rolled["rollback.to"] == first["version"]
    assert c.get_model_version(MODEL, first["version"]).tags["restored.from"] == decision["version"]
    assert published_version(ctx.warehouse_url, MODEL) == first["version"]  # republished
    # nothing earlier to go back to
    assert main(["--model-name", MODEL, "rollback", "--reason", "again"]) == 1
    assert tracking.champion_version(c, MODEL) == first["version"]


def test_large_catalog_is_packaged_with_an_ann_index_that_serving_uses(trained) -> None:
    """ann_min_items lowered to this small catalog: package builds the FAISS index, measures its recall
    against exact search, ships it in the registered model, and the served model searches with it."""
    import mlflow.pyfunc

    cfg, ctx, run_id = _new_run(trained, "gate-ann", ann_min_items=50)
    version = promotion.package(cfg, ctx, run_id)["version"]
    meta = json.loads((ctx.run_dir / "model" / "ann" / "ann.json").read_text())
    assert meta["kind"] == "ivf" and meta["n"] == len(pipeline.item_vectors(ctx))
    _, c = pipeline._mlflow(ctx)
    metrics = c.get_run(run_id).data.metrics
    assert metrics["ann.recall_at_10"] >= 0.9
    served = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    request = pd.DataFrame({"item_id": [None], "text": ["red retrospot lunch bag"]})
    with_index = served.predict(request, params={"k": 5})
    assert served.unwrap_python_model()._ann is not None  # the text request's neighbours came from the index
    exact = ItemRecommender.load(ctx.run_dir / "model")
    exact._ann_path = None
    assert with_index["item_id"].tolist() == exact.predict(None, request, params={"k": 5})["item_id"].tolist()
    # below the threshold (the default 50k) a rerun packages no index, and removes a stale one
    promotion.package(PipelineConfig.from_params(BASE), ctx, run_id)
    assert not (ctx.run_dir / "model" / "ann").exists()


def test_fusion_stage_keeps_the_adaptor_only_when_it_wins_and_reruns_clean(trained) -> None:
    import numpy as np

    src, _ = trained
    emb = src.run_dir / "embeddings"
    finetuned, fused = np.load(emb / "finetuned.npy"), np.load(emb / "fused.npy")
    info = json.loads((src.run_dir / "model" / "fusion" / "fusion.json").read_text()) if (src.run_dir / "model" / "fusion").exists() else None
    if info is None:  # not kept: the model is built on the fine-tuned vectors themselves
        assert np.array_equal(fused, finetuned)
    else:  # kept: the chosen variant's step beat step 0 (the text vectors) on the pseudo-cold fold, and every other variant
        history = {int(k): v for k, v in info["val_history"].items()}
        assert info["best_step"] > 0 and history[info["best_step"]] > history[0]
        assert info["selected_on"] == "pseudo_cold" and info["variant_scores"][info["variant"]] == max(info["variant_scores"].values())
        assert not np.allclose(fused, finetuned) and np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    # switched off on a rerun of the same folder: no adaptor survives, the vectors are the fine-tuned ones
    cfg, ctx, run_id = _new_run(trained, "fusion-off", fusion=False)
    assert pipeline.fuse(cfg, ctx, run_id) == {"kept": False, "enabled": False, "best_step": 0, "signals": []}
    assert not (ctx.run_dir / "model" / "fusion").exists()
    assert np.array_equal(np.load(ctx.run_dir / "embeddings" / "fused.npy"), finetuned)
