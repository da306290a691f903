"""The stages after evaluation, one function per DAG task: package the candidate as a registered
version, score the current champion on the SAME split, let the gate decide, and move an alias.

Safety properties (tested):
- the champion alias moves only in `promote`, as its last call; a crash anywhere before leaves it;
- the decision is made once per version: a rerun reads it back instead of deciding again;
- a refused version gets the `challenger` alias and its reasons as tags; the champion stays.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import recsys
from recsys.data import schema as S
from recsys.config import PipelineConfig
from recsys.evaluation.metrics import metric_name
from recsys.stages import item_ranges
from recsys.run import ANN_ARTIFACT, BEHAVIOUR_ARTIFACT, CATALOG_ARTIFACT, CONFIG_ARTIFACT, HYBRID_ARTIFACT, HYBRID_CONFIG_ARTIFACT, RunContext, item_vectors, load_events, load_split, read_json, write_json

log = logging.getLogger(__name__)

DECISION_TAG = "gate.decision"
STATUS_PENDING = "pending"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def candidate_model(cfg: PipelineConfig) -> str:
    """The row of metrics.json that is the candidate: the hybrid, or the text model alone (the fine-tuned
    text vectors fused with the numeric signals: what the packaged catalog holds)."""
    return "hybrid" if cfg.candidate == "hybrid" else "fused"


def package(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Write the self-contained model directory, log it as a pyfunc and register a version
    (pending the gate). A retried task reuses the version this run registered."""
    from recsys.model.bundles import bundle_catalog
    from recsys.serving import ItemRecommender, save_behaviour, save_catalog

    tracking, c = run.mlflow()
    split, catalog = load_split(run)
    titles = catalog[S.TITLE].fillna(catalog[S.ITEM_ID]).astype(str).tolist()
    model_dir = run.model_dir
    vectors = item_vectors(run)
    save_catalog(run.model_file(CATALOG_ARTIFACT), catalog[S.ITEM_ID].tolist(), titles, vectors)
    save_behaviour(run.model_file(BEHAVIOUR_ARTIFACT), bundle_catalog(split, catalog, vectors))
    trend_now = _attach_trend(run, catalog) if cfg.candidate == "hybrid" else None
    if trend_now is not None:
        tracking.log_params(c, run.mlflow_run_id, {"trend.now": trend_now})
    identity = read_json(run.identity)
    _save_reference(cfg, run, split, catalog, vectors, identity)
    ann = _save_ann_index(cfg, run, vectors)
    if ann:
        tracking.log_params(c, run.mlflow_run_id, {"ann.kind": ann["kind"], "ann.nlist": ann["nlist"]})
        tracking.log_metrics(c, run.mlflow_run_id, {metric_name("ann.recall", cfg.eval.k): ann["recall"], "ann.build_seconds": ann["seconds"]})
    # every request kind in the example, so the signature accepts ids, carts and free text (cold start)
    first, second = catalog[S.ITEM_ID].iloc[0], catalog[S.ITEM_ID].iloc[min(1, len(catalog) - 1)]
    example = pd.DataFrame(
        {
            "item_id": [first, None, None, None],
            "cart": [None, f"{first},{second}", None, None],
            "history": [None, None, f"{second},{first}", None],
            "text": [None, None, None, titles[0]],
        }
    )
    write_json(run.model_file(CONFIG_ARTIFACT), {"pipeline": cfg.flat(), "model_name": cfg.model_name, "mlflow_run_id": run.mlflow_run_id, "candidate": cfg.candidate})
    artifacts = ItemRecommender.artifacts_of(model_dir)
    if cfg.candidate == "text":  # the text model alone: no behaviour weights
        artifacts = {k: v for k, v in artifacts.items() if k not in (HYBRID_ARTIFACT, HYBRID_CONFIG_ARTIFACT)}
    version = tracking.log_and_register_model(
        c,
        run.mlflow_run_id,
        cfg.model_name,
        ItemRecommender(),
        artifacts=artifacts,
        code_paths=[str(Path(recsys.__file__).resolve().parent)],  # the whole package: the model loads with the code it was trained with
        input_example=example,
        pip_requirements=_model_requirements(),
    )
    tags = tracking.version_tags(c, cfg.model_name, version)
    if DECISION_TAG not in tags:
        tracking.set_version_tags(
            c,
            cfg.model_name,
            version,
            {
                DECISION_TAG: STATUS_PENDING,
                "candidate": cfg.candidate,
                "dataset": identity["name"],
                "data.digest": identity["digest"],
                "data.interactions": str(identity["interactions"]),
                "split.salt": split.salt,
                "run_key": run.run_key,
            },
        )
    # what this version was trained on: the gate checks the next candidate's test pairs against it
    from recsys.evaluation.lineage import lineage_of

    lineage = lineage_of(split, identity["digest"]).save(run.lineage_dir)
    tracking.log_artifacts(c, run.mlflow_run_id, lineage, tracking.LINEAGE_ARTIFACT)
    write_json(run.package_info, {"model_name": cfg.model_name, "version": version})
    tracking.set_tags(c, run.mlflow_run_id, {"registered_version": version})
    return {"model_name": cfg.model_name, "version": version}


def _attach_trend(run: RunContext, catalog: pd.DataFrame) -> str | None:
    """Serve the trend prior as of the end of the data (`recsys.model.trend`): add it to the model's arrays when
    the hybrid uses one. Returns that moment (ISO), or None when the model has no trend term."""
    from recsys import atomic
    from recsys.model.trend import end_of_data, recent_buyers, trend_prior

    info = read_json(run.hybrid_info)
    weight, days = float(info["config"].get("trend_weight", 0.0)), float(info["config"].get("trend_days", 0.0))
    if not weight:
        return None
    events = load_events(run)
    now = end_of_data(events)
    with np.load(run.hybrid_weights) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays["trend"] = trend_prior(recent_buyers(events, catalog[S.ITEM_ID].tolist(), now, days))
    with atomic.temp_path(run.hybrid_weights, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return now.isoformat()


def _save_reference(cfg: PipelineConfig, run: RunContext, split, catalog: pd.DataFrame, vectors: np.ndarray, identity: dict[str, Any]) -> None:
    """Reference statistics of the training data, stored with the model (the drift monitor reads them)."""
    from recsys.monitoring.monitor import reference_for_model
    from recsys.data.splits import TRAIN

    inter = S.to_canonical_interactions(pd.read_parquet(run.validated_interactions))
    train = inter.merge(split.part(TRAIN)[[S.USER_ID, S.ITEM_ID]].drop_duplicates(), on=[S.USER_ID, S.ITEM_ID])
    metrics = read_json(run.metrics)["test"][candidate_model(cfg)]
    recall = metrics.get(metric_name("recall", cfg.eval.k))
    per_user_path = run.per_user_test
    per_user = np.load(per_user_path)[metric_name(f"{candidate_model(cfg)}.recall", cfg.eval.k)] if per_user_path.exists() else None
    reference_for_model(
        run.model_dir, train, catalog, catalog[S.ITEM_ID].tolist(), vectors, recall, identity["name"], identity["digest"], eval_recall_per_user=per_user, k=cfg.eval.k
    )


def _save_ann_index(cfg: PipelineConfig, run: RunContext, vectors: np.ndarray) -> dict[str, Any] | None:
    """For a catalog of at least `cfg.ann_min_items` items, build the FAISS index serving searches with,
    measure its recall@k against exact search (1,000 catalog items as queries) and save it with the model."""
    import shutil

    out = run.model_file(ANN_ARTIFACT)
    shutil.rmtree(out, ignore_errors=True)  # a rerun, or a catalog that shrank below the threshold: no stale index
    if len(vectors) < cfg.ann_min_items:
        return None
    from recsys.model.ann import AnnConfig, VectorIndex, recall_against_exact

    start = time.perf_counter()
    index = VectorIndex.build(vectors, AnnConfig(min_items_for_ann=cfg.ann_min_items))
    seconds = time.perf_counter() - start
    rng = np.random.default_rng(cfg.split.seed)
    queries = vectors[np.sort(rng.choice(len(vectors), size=min(1000, len(vectors)), replace=False))]
    recall = recall_against_exact(index, vectors, queries, cfg.eval.k)
    index.save(out)
    log.info("ANN index %r over %d items: recall@%d %.3f against exact search, built in %.1f s", index, len(vectors), cfg.eval.k, recall, seconds)
    return {"kind": index.kind, "nlist": index.nlist, "recall": recall, "seconds": seconds}


def _model_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "numpy", "pandas", "scipy", "torch", "transformers", "faiss-cpu")]


def score_champion(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Score the current champion and the candidate on this run's test split, like with like.

    Both are loaded from the registry and scored through the same serving code. Test pairs the
    champion learned from or was tuned on (its recorded lineage, `recsys.evaluation.lineage`) are excluded for
    both, and cold items it trained on leave the cold slice; the counts go into champion.json. Per
    test user, the primary metric and the guardrails are compared with a paired bootstrap (the
    intervals the gate decides with). The champion scored is the one in place when this version was
    first put to the gate, so a rerun after the alias moved compares against the same model."""

    tracking, c = run.mlflow()
    version = read_json(run.package_info)["version"]
    out = run.champion_score
    if out.exists() and read_json(out).get("candidate_version") == version:
        stored = read_json(out)
        return {"champion_version": stored["champion_version"], "reused": True}
    champion = tracking.champion_version(c, cfg.model_name)
    if champion == version:  # decided and promoted by an earlier try whose champion.json was lost
        champion = tracking.version_tags(c, cfg.model_name, version).get(tracking.PREVIOUS_CHAMPION_TAG) or None
    result: dict[str, Any] = {"candidate_version": version, "champion_version": champion, "metrics": None}
    split, catalog = load_split(run)  # read once: the comparison and the panel both use it
    models = {"candidate": tracking.load_recommender(cfg.model_name, version)}
    if champion is not None:
        models["champion"] = tracking.load_recommender(cfg.model_name, champion)
        _trend_at_test_start(run, split, models)
        result |= _score_against_champion(cfg, run, c, version, champion, models, split, catalog)
        tracking.log_metrics(c, run.mlflow_run_id, {f"test.champion.{k}": v for k, v in result["metrics"].items()})
        tracking.log_metrics(c, run.mlflow_run_id, {"gate.excluded_test_pairs": result["overlap"]["excluded_pairs"], "gate.test_users": result["test_users"]})
        from recsys.evaluation.churn import churn_metric_values

        tracking.log_metrics(c, run.mlflow_run_id, churn_metric_values(result["churn"]))
    result["panel"] = _review_panel(cfg, run, c, models, split, catalog)
    write_json(out, result)
    return {"champion_version": champion, "reused": False}


def _trend_at_test_start(run: RunContext, split, models: dict[str, Any]) -> None:
    """Like with like: a version with a trend term (`recsys.model.trend`) is packaged with the prior as of the
    end of its data, which for a retrain on the same data includes the test window. For the comparison every such
    version ranks with the prior as of the test split's first moment, over its own catalog."""
    from recsys.model.trend import recent_buyers, stage_start, trend_prior

    now = stage_start(split.pairs, "test") if split.protocol == "time" else None
    trending = [m for m in models.values() if getattr(m, "model", None) is not None and m.model.config.trend_weight]
    if now is None or not trending:
        return
    events = load_events(run)
    for recommender in trending:
        recommender.model.trend = trend_prior(recent_buyers(events, recommender.item_ids, now, recommender.model.config.trend_days))


def _score_against_champion(cfg: PipelineConfig, run: RunContext, c, version: str, champion: str, models: dict[str, Any], split, catalog: pd.DataFrame) -> dict[str, Any]:
    """Compare the two loaded versions on the test pairs the champion never saw, with its lineage (`recsys.evaluation.comparison`), and their shelves (churn)."""
    from recsys import tracking
    from recsys.evaluation.beyond_accuracy import exposure_by_popularity_bin
    from recsys.evaluation.champion import coverage_of, recommender_scorer
    from recsys.evaluation.comparison import compare_with_champion
    from recsys.evaluation.evaluate import evaluation_context

    item_ids = catalog[S.ITEM_ID].tolist()
    lineage = tracking.version_lineage(c, cfg.model_name, champion, run.champion_lineage_dir)
    context = evaluation_context(split, catalog, item_vectors(run))
    topk: dict[str, np.ndarray] = {}
    result = compare_with_champion(
        item_ids,
        recommender_scorer(models["candidate"], item_ids),
        recommender_scorer(models["champion"], item_ids),
        split,
        lineage,
        cfg.gate,
        cfg.eval.k,
        seed=cfg.split.seed,
        batch_size=cfg.eval.batch_size,
        context=context,
        topk_out=topk,
    )
    overlap = result["overlap"]
    if not overlap["lineage_known"]:
        log.warning("champion version %s recorded no lineage: its overlap with today's test pairs cannot be checked", champion)
    elif overlap["excluded_pairs"] or overlap["excluded_cold_items"]:
        log.warning(
            "champion version %s has seen %d of today's %d test pairs and trained on %d of %d cold items: excluded for both models",
            champion, overlap["excluded_pairs"], overlap["test_pairs"], overlap["excluded_cold_items"], overlap["cold_items"],
        )
    return result | {
        "lineage": {"champion_salt": lineage.salt if lineage else None, "salt": split.salt, "champion_data_digest": lineage.data_digest if lineage else None},
        "catalog_coverage": coverage_of(models["champion"], item_ids),
        "exposure": exposure_by_popularity_bin(topk["champion"], context.popularity).tolist(),
        "churn": _churn(models, item_ids, catalog, context.popularity, cfg.eval.k),
    }


PANEL_TAG = "review.panel"  # on the registered model: the panel every version of it is shown


def _review_panel(cfg: PipelineConfig, run: RunContext, c, models: dict[str, Any], split, catalog: pd.DataFrame) -> dict[str, Any]:
    """What the candidate would show shoppers next to the champion, on the model's fixed panel
    (`recsys.evaluation.panel`): written as evaluation/panel.json and panel.html; a summary returned."""
    import json

    from recsys import tracking
    from recsys.data.splits import train_popularity
    from recsys.evaluation import panel as review

    item_ids = catalog[S.ITEM_ID].tolist()
    popularity = train_popularity(split, item_ids)
    stored = tracking.registered_model_tag(c, cfg.model_name, PANEL_TAG)
    if stored:
        chosen = review.keep_known(json.loads(stored), item_ids)
    else:  # the first version reviewed fixes the panel for every later one
        chosen = review.choose_panel(item_ids, popularity, salt=cfg.model_name)
        tracking.set_registered_model_tag(c, cfg.model_name, PANEL_TAG, json.dumps({"items": chosen["items"], "carts": chosen["carts"]}))
    view = review.side_by_side(chosen, models["candidate"], models.get("champion"))
    out = run.evaluation_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "panel.json", view)
    (out / "panel.html").write_text(review.panel_page(view, f"{cfg.model_name}: candidate vs champion on the review panel"))
    related = [r for r in view["requests"] if r["kind"] == "related items" and r["champion"] is not None]
    changed = sum(any(label != "same" for label in r["changes"]) or bool(r["dropped"]) for r in related)
    return {"requests": len(view["requests"]), "related_lists": len(related), "related_lists_changed": changed}


CHURN_MAX_QUERIES = 5000  # related-item lists compared per version pair; a fixed sample above it


def _churn(models: dict[str, Any], item_ids: list[str], catalog: pd.DataFrame, popularity: np.ndarray, k: int) -> dict[str, Any]:
    """What would change on the shelves: both versions' related items of every catalog item (a fixed
    sample of CHURN_MAX_QUERIES on larger catalogs), compared (`recsys.evaluation.churn`)."""
    from recsys.evaluation.champion import recommender_scorer
    from recsys.evaluation.churn import churn_metrics, churn_queries, related_topk
    from recsys.model.bundles import top_category

    queries = churn_queries(item_ids, CHURN_MAX_QUERIES)
    tops = {name: related_topk(recommender_scorer(model, item_ids), queries, k) for name, model in models.items()}
    categories = [top_category(c) for c in catalog[S.CATEGORY]] if S.CATEGORY in catalog else None
    return churn_metrics(tops["candidate"], tops["champion"], popularity, categories) | {"sampled": len(queries) < len(item_ids)}


def _decision_report(cfg: PipelineConfig, run: RunContext, version: str, decision: dict[str, Any]) -> dict[str, Any]:
    from recsys.provenance import code_version, environment

    metrics = read_json(run.metrics)["test"]
    champion = read_json(run.champion_score)
    models: dict[str, dict[str, float]] = {"candidate": metrics[candidate_model(cfg)]}
    if champion["metrics"] is not None:  # like with like: both on the test pairs the champion never saw
        models["candidate"] = champion["candidate_metrics"]
        models["champion"] = champion["metrics"]
    from recsys.model.baselines import BASELINES

    # every other model of the run: the registered baselines and the text encoder's two stages
    for name in (*BASELINES, "finetuned", "fused"):
        if name in metrics and name != candidate_model(cfg):
            models[name] = metrics[name]
    k = cfg.eval.k
    slices = sorted({m for row in models.values() for m in row if m.endswith(metric_name("_recall", k))})
    env = environment()
    code = code_version()
    return {
        "model_name": cfg.model_name,
        "version": version,
        "run_id": run.mlflow_run_id,
        "created": _now(),
        "candidate": cfg.candidate,
        "champion_version": champion["champion_version"],
        "dataset": read_json(run.identity),
        "code": {**code, "python": env["python"], "torch": env.get("torch", ""), "device": _device()},
        "decision": decision,
        "evidence": _evidence_text(champion),
        "churn": champion.get("churn"),
        "panel": champion.get("panel"),
        "metrics": {"test": models},
        "slices": slices,
    }


def _evidence_text(champion: dict[str, Any]) -> str:
    """One line on what the champion comparison rests on (empty for the first model)."""
    if champion.get("metrics") is None:
        return ""
    o = champion["overlap"]
    if not o["lineage_known"]:
        seen = "the champion recorded no lineage, so its overlap with the test pairs could not be checked"
    else:
        seen = f"{o['excluded_pairs']} of {o['test_pairs']} test pairs and {o['excluded_cold_items']} of {o['cold_items']} cold items excluded as seen by the champion"
        if o["salt_changed"]:
            seen += " (its split salt differs from today's)"
    return f"Candidate and champion compared on {champion['test_users']} test users, {seen}; baselines on the whole test split."


def _device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _plots(run: RunContext, report: dict[str, Any], cfg: PipelineConfig) -> dict[str, str]:
    from recsys.evaluation import plots

    out = run.evaluation_dir
    out.mkdir(parents=True, exist_ok=True)
    k = cfg.eval.k
    made: dict[str, str] = {}
    history_path = run.train_history
    if history_path.exists():
        h = read_json(history_path)
        made["learning_curve"] = str(
            plots.learning_curve(
                {int(s): v for s, v in h["losses"].items()}, {int(s): v for s, v in h["val_history"].items()}, h["val_metric"], out / "learning_curve.png", h["best_step"]
            )
        )
    headline = [metric_name("ndcg", k), metric_name("recall", k), metric_name("cold_recall", k), metric_name("coverage", k)]
    made["comparison"] = str(plots.model_comparison(report["metrics"]["test"], headline, out / "comparison.png"))
    exposure = read_json(run.exposure)
    curves = {"candidate": exposure[candidate_model(cfg)]}
    champion = read_json(run.champion_score)
    if champion.get("exposure"):
        curves["champion"] = champion["exposure"]
    curves.update({m: exposure[m] for m in ("ease", "frozen", "popularity") if m in exposure})
    made["popularity_bias"] = str(plots.popularity_bias(curves, out / "popularity_bias.png"))
    if champion.get("segments"):
        made["segments"] = str(plots.segment_comparison(champion["segments"], metric_name("recall", k), out / "segments.png"))
    return made


def decide(cfg: PipelineConfig, run: RunContext) -> dict[str, Any]:
    """Run the gate once for this version: write the decision, the report (JSON + HTML + plots) and
    the registry description. A rerun returns the decision already made."""
    from recsys.evaluation import gate, report

    tracking, c = run.mlflow()
    version = read_json(run.package_info)["version"]
    out = run.evaluation_dir
    decided = run.gate_record
    existing = tracking.version_tags(c, cfg.model_name, version).get(DECISION_TAG)
    if existing not in (None, STATUS_PENDING):
        stored = _stored_decision(run, c, decided)
        log.info("version %s was already decided (%s): not deciding again", version, existing)
        return _decision_xcom(cfg, run, version, stored)

    metrics = read_json(run.metrics)["test"]
    champion = read_json(run.champion_score)
    baselines = {m: metrics[m] for m in cfg.gate.baselines if m in metrics and m != candidate_model(cfg)}
    if champion["metrics"] is None:  # the first model: against the baselines on the whole test split
        intervals = _baseline_intervals(cfg, run, baselines)
        decision = gate.decide(metrics[candidate_model(cfg)], None, baselines, cfg.gate, cfg.eval.k, intervals, applicable=_applicable_baselines(run))
    else:  # against the champion: both scored on the test pairs the champion never saw, with intervals
        from recsys.evaluation.bootstrap import Interval

        intervals = {m: Interval(**ci) if ci is not None else None for m, ci in champion["intervals"].items()}
        decision = gate.decide(champion["candidate_metrics"], champion["metrics"], baselines, cfg.gate, cfg.eval.k, intervals, champion["test_users"], champion.get("churn"))
    evidence = {k: champion[k] for k in ("overlap", "lineage", "test_users", "intervals", "churn") if k in champion}
    record = decision.to_dict() | {
        "version": version,
        "champion_version": champion["champion_version"],
        "decided_at": _now(),
        "summary_markdown": gate.summary_markdown(decision, champion.get("churn")),
        "not_applicable": list(cfg.gate.not_applicable),
        **evidence,
    }
    full = _decision_report(cfg, run, version, record)
    full["plots"] = _plots(run, full, cfg)
    if (out / "panel.json").exists():
        full["panel_view"] = read_json(out / "panel.json")
    record["review_summary"] = report.review_summary(full)
    report.write_report(full, out)
    write_json(decided, record)
    tracking.log_artifacts(c, run.mlflow_run_id, out, out.name)
    tracking.set_version_description(c, cfg.model_name, version, report.version_description(full))
    reasons = "; ".join(decision.reasons)
    tracking.set_version_tags(
        c,
        cfg.model_name,
        version,
        {
            "gate.reasons": reasons[:4900],
            "gate.primary_metric": decision.primary_metric,
            "gate.compared_with": f"version {champion['champion_version']}" if champion["champion_version"] else "baselines (first model)",
            # written last: its presence means the decision (and everything above) is complete
            DECISION_TAG: decision.status,
        },
    )
    tracking.set_tags(c, run.mlflow_run_id, {"decision": decision.status, "gate.reasons": reasons[:4900]})
    tracking.log_metrics(c, run.mlflow_run_id, {"gate.promote": float(decision.promote)})
    return _decision_xcom(cfg, run, version, record)


def _applicable_baselines(run: RunContext) -> tuple[str, ...]:
    """The baselines `evaluate` fits and scores for this run, by the same rule (the scalable path's head, a time
    split with a validation start): a configured baseline outside them is not applicable, not missing."""
    from recsys.model.baselines import applicable
    from recsys.model.trend import validation_start

    split, _ = load_split(run)
    scalable = int(read_json(run.hybrid_info)["config"].get("head_items", 0)) > 0
    return applicable(scalable, validation_start(split) is not None)


def _baseline_intervals(cfg: PipelineConfig, run: RunContext, baselines: dict[str, Any]) -> dict[str, Any]:
    """A first model's paired-bootstrap gain over each baseline on the primary metric (the same test users, the
    per-user values evaluation stored); {} for a run that stored none."""
    from recsys.evaluation.bootstrap import paired_relative_gain

    if not run.per_user_test.exists():
        return {}
    per_user = np.load(run.per_user_test)
    primary = metric_name(cfg.gate.primary_metric, cfg.eval.k)
    cand = per_user.get(f"{candidate_model(cfg)}.{primary}")
    if cand is None:
        return {}
    return {
        name: paired_relative_gain(cand, per_user[f"{name}.{primary}"], cfg.gate.bootstrap_samples, cfg.gate.confidence, seed=cfg.split.seed)
        for name in baselines
        if f"{name}.{primary}" in per_user
    }


def _stored_decision(run: RunContext, c, path: Path) -> dict[str, Any]:
    if path.exists():
        return read_json(path)
    # another worker decided: its record is in the run's artifacts
    local = c.download_artifacts(run.mlflow_run_id, run.gate_record.relative_to(run.run_dir).as_posix(), str(run.run_dir))
    return read_json(Path(local))


def _decision_xcom(cfg: PipelineConfig, run: RunContext, version: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_name": cfg.model_name,
        "version": version,
        "promote": bool(record["promote"]),
        "status": record["status"],
        "reasons": list(record["reasons"]),
        "champion_version": record.get("champion_version"),
        "summary_markdown": record.get("summary_markdown", ""),
        "review_summary": list(record.get("review_summary") or []),
        "report_path": str(run.evaluation_dir / "report.html"),
        "mlflow_run_id": run.mlflow_run_id,
    }


def promote(cfg: PipelineConfig, run: RunContext, approved_by: str | None = None) -> dict[str, Any]:
    """Make the gated version champion. Idempotent; the alias move is the last call."""

    tracking, c = run.mlflow()
    record = read_json(run.gate_record)
    version = record["version"]
    if not record["promote"]:
        raise RuntimeError(f"version {version} was refused by the gate ({'; '.join(record['reasons'])}): it cannot be promoted")
    current = tracking.champion_version(c, cfg.model_name)
    if current == version:
        log.info("version %s is already champion", version)
    else:
        tags = {tracking.PREVIOUS_CHAMPION_TAG: current or "", "promoted.at": _now()}
        if approved_by:
            tags["approved.by"] = approved_by
        tracking.set_version_tags(c, cfg.model_name, version, tags)
        if tracking.alias_version(c, cfg.model_name, tracking.CHALLENGER) == version:
            tracking.delete_alias(c, cfg.model_name, tracking.CHALLENGER)
        tracking.set_alias(c, cfg.model_name, tracking.CHAMPION, version)  # last: before this line nothing changed for users
    tracking.end_run(c, run.mlflow_run_id)
    return {"model_name": cfg.model_name, "version": version, "champion": version, "previous_champion": current if current != version else record.get("champion_version")}


def reject(cfg: PipelineConfig, run: RunContext, reviewer_rejected: bool = False, reviewer: str | None = None) -> dict[str, Any]:
    """Keep the champion; the refused version gets the `challenger` alias (idempotent)."""

    tracking, c = run.mlflow()
    record = read_json(run.gate_record)
    version = record["version"]
    if reviewer_rejected:
        tracking.set_version_tags(c, cfg.model_name, version, {DECISION_TAG: "rejected by reviewer", "review.by": reviewer or "unknown", "review.at": _now()})
    if tracking.champion_version(c, cfg.model_name) != version:
        tracking.set_alias(c, cfg.model_name, tracking.CHALLENGER, version)
    tracking.end_run(c, run.mlflow_run_id)
    return {"model_name": cfg.model_name, "version": version, "champion": tracking.champion_version(c, cfg.model_name), "reasons": record["reasons"]}


def publish_shards(cfg: PipelineConfig, run: RunContext, shard_size: int | None = None) -> list[dict[str, Any]]:
    """Plan a publish across workers: the champion's catalog in ranges of `cfg.publish_shard_size` items (0 = one
    shard), one mapped task each. The version is fixed here, so every shard publishes the same one even if the
    champion moves meanwhile."""
    import hashlib

    tracking, c = run.mlflow()
    version = tracking.champion_version(c, cfg.model_name)
    if version is None:
        raise RuntimeError(f"{cfg.model_name} has no champion to publish")
    n = tracking.catalog_size(cfg.model_name, version)
    ranges = item_ranges(n, cfg.publish_shard_size if shard_size is None else shard_size)
    publish_id = hashlib.sha256(f"{cfg.model_name}\0{version}\0{run.run_key}".encode()).hexdigest()[:32]  # one per run and version
    log.info("publishing %s version %s: %d items in %d shards", cfg.model_name, version, n, len(ranges))
    return [{**r, "publish_id": publish_id, "version": version, "items": n, "shards": len(ranges)} for r in ranges]


def publish_shard(cfg: PipelineConfig, run: RunContext, shard: dict[str, Any], k: int | None = None) -> dict[str, Any]:
    """Stage one shard's rows (`recsys.stages.publish.publish_shard`); safe to retry."""
    from recsys.stages.publish import publish_shard as stage_rows

    tracking, _ = run.mlflow()
    recommender = tracking.load_recommender(cfg.model_name, shard["version"])
    result = stage_rows(
        run.warehouse_url, recommender, cfg.model_name, shard["version"], shard["publish_id"], shard["index"], shard["start"], shard["stop"], k=k or cfg.eval.k
    )
    return {**shard, "rows": result.rows, "seconds": result.seconds}


def finish_publish(cfg: PipelineConfig, run: RunContext, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Swap every staged shard in at once (`recsys.stages.publish.finish_publish`) and tag the version."""
    from recsys.stages.publish import finish_publish as swap_in

    first = shards[0]
    version = first["version"]
    result = swap_in(run.warehouse_url, cfg.model_name, version, first["publish_id"], first["items"], first["shards"])
    tracking, c = run.mlflow()
    tracking.set_version_tags(c, cfg.model_name, version, {"published.at": _now(), "published.rows": str(result.rows)})
    return {
        "model_name": cfg.model_name, "version": version, "items": result.items, "rows": result.rows, "seconds": result.seconds,
        "shards": len(shards), "shard_seconds": round(sum(s["seconds"] for s in shards), 1),
    }  # fmt: skip
