"""The drift monitor's work, without Airflow: compare the warehouse's recent window with the reference
statistics stored with the champion, score the champion on that window, report, and say whether to retrain.

The reference is written at training time (`reference_for_model`) into the model directory, so it is a
registered artifact of the version and the monitor never re-reads the training data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data import schema as S
from recsys.monitoring.drift import DriftConfig, ReferenceStats, detect_drift, window_from_frames

log = logging.getLogger(__name__)

REFERENCE_DIR = "reference"
EXPERIMENT = "recsys-drift-monitor"


@dataclass(frozen=True)
class MonitorConfig:
    dataset: str  # the data set's name in the warehouse
    model_name: str = "recsys-item-encoder"
    window: str = "7D"  # the recent window: this much event time up to the newest interaction
    k: int | None = None  # None: the reference's k (the training run's), so both recalls are measured alike
    max_recall_users: int = 2000  # users scored for the champion's window recall (bounded cost)
    drift: DriftConfig = field(default_factory=DriftConfig)
    seed: int = 0


def reference_for_model(
    model_dir: Path,
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    item_ids: list[str],
    vectors: np.ndarray,
    eval_recall: float | None,
    dataset: str,
    digest: str,
    window: str = MonitorConfig.window,
    eval_recall_per_user: np.ndarray | None = None,
    k: int | None = None,
) -> Path:
    """Condense the training data into reference statistics inside the model directory.

    eval_recall_per_user: the champion's evaluation Recall@k of each test user (NaN: no target), what
    the monitor's recall signal bootstraps over; without it that signal reports the drop but never
    alarms ("not enough evidence": a mean alone says nothing of how sure it is).
    k: the cut-off of those recalls (the run's `eval.k`), stored so the monitor measures the window alike.
    """
    period = window if interactions[S.TIMESTAMP].notna().any() else None
    ref = ReferenceStats.build(
        interactions, items, item_ids, vectors, eval_recall, dataset=dataset, digest=digest, period=period, eval_recall_per_user=eval_recall_per_user, recall_k=k
    )
    out = model_dir / REFERENCE_DIR
    ref.save(out)
    return out


LEGACY_K = 10  # the k the monitor always used before references stored theirs


def recall_k(reference: ReferenceStats, config: MonitorConfig) -> int:
    """The k of the champion's window recall: the reference's (a recall at another k is not comparable)."""
    if reference.recall_k is not None:
        if config.k is not None and config.k != reference.recall_k:
            log.warning("monitor k=%d ignored: the reference's recall was measured at k=%d", config.k, reference.recall_k)
        return int(reference.recall_k)
    k = config.k if config.k is not None else LEGACY_K
    log.warning("the reference (saved before it kept its k) does not say at which k its recall was measured: assuming k=%d", k)
    return k


def recent_window(interactions: pd.DataFrame, window: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history before the window, the window): the last `window` of event time up to the newest event."""
    ts = interactions[S.TIMESTAMP]
    if ts.isna().all():
        raise ValueError("the drift monitor needs timestamps: this data set has none")
    end = ts.max()
    start = end - pd.Timedelta(window)
    in_window = ts > start
    return interactions[~in_window], interactions[in_window]


def window_recall_per_user(recommender, history: pd.DataFrame, window: pd.DataFrame, k: int, max_users: int, seed: int = 0) -> np.ndarray:
    """The champion's Recall@k of each evaluable window user (float64, in user order): each window
    user's earlier items are the query, the new items they touched in the window the targets (what
    a time-split evaluation measures). Users without a known earlier item or a new one are not
    evaluable; at most `max_users` of them are scored (a seeded sample: bounded cost)."""
    from recsys.evaluation.champion import recommender_scorer
    from recsys.evaluation.evaluate import scorer_top_k

    item_ids = sorted(set(recommender.item_ids) | set(window[S.ITEM_ID].astype(str)))
    index = {item: i for i, item in enumerate(item_ids)}
    past = history.groupby(S.USER_ID)[S.ITEM_ID].agg(lambda s: sorted(set(map(str, s))))
    new = window.groupby(S.USER_ID)[S.ITEM_ID].agg(lambda s: sorted(set(map(str, s))))
    users = sorted(set(past.index) & set(new.index))
    if len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    queries, targets = [], []
    for u in users:
        seen = set(past[u])
        target = [index[i] for i in new[u] if i not in seen]
        query = [index[i] for i in past[u] if i in recommender.index]
        if target and query:
            queries.append(np.array(query, dtype=np.int64))
            targets.append(np.array(target, dtype=np.int64))
    if not queries:
        return np.zeros(0, dtype=np.float64)
    topk = scorer_top_k(recommender_scorer(recommender, item_ids), queries, k)
    # per user: hits in the top k / targets, the terms whose mean is metrics.recall_at_k
    return np.array([np.isin(row[:k], t).sum() / len(t) for row, t in zip(topk, targets, strict=True)], dtype=np.float64)


def window_recall(recommender, history: pd.DataFrame, window: pd.DataFrame, k: int, max_users: int, seed: int = 0) -> tuple[float | None, int]:
    """(the champion's Recall@k on the window, evaluable users): the mean of `window_recall_per_user`."""
    per_user = window_recall_per_user(recommender, history, window, k, max_users, seed)
    return (float(per_user.mean()), len(per_user)) if len(per_user) else (None, 0)


def _vectors_for(recommender, items: pd.DataFrame, template: tuple[str, ...] | None):
    """item ids -> vectors in the champion's space: its own vectors where it knows the item, else the
    item's document embedded by its (fine-tuned) encoder — the same path new items take in serving."""
    from recsys.data.documents import DocumentConfig, item_documents

    by_id = items.drop_duplicates(S.ITEM_ID).set_index(S.ITEM_ID)

    def vectors(ids: list[str]) -> np.ndarray:
        out = np.zeros((len(ids), recommender.vectors.shape[1]), dtype=np.float32)
        unknown = [j for j, i in enumerate(ids) if i not in recommender.index]
        for j, i in enumerate(ids):
            if i in recommender.index:
                out[j] = recommender.vectors[recommender.index[i]]
        if unknown:
            frame = by_id.reindex([ids[j] for j in unknown]).reset_index()
            frame[S.TITLE] = frame[S.TITLE].fillna(frame[S.ITEM_ID])
            cfg = DocumentConfig(template=template) if template else DocumentConfig()
            out[unknown] = recommender._embed_text(item_documents(S.to_canonical_items(frame), cfg))
        return out

    return vectors


def _interval_metrics(report) -> dict[str, float]:
    """The recall drop's interval ends as MLflow metrics (finite ones only: MLflow rejects inf)."""
    ci = report.signal("champion_recall").extra.get("interval") or {}
    return {f"signal.champion_recall.{end}": float(ci[end]) for end in ("low", "high") if isinstance(ci.get(end), (int, float)) and np.isfinite(ci[end])}


def check_drift(config: MonitorConfig, tracking_uri: str, warehouse_url: str, out_dir: Path, artifact_root: Path | None = None) -> dict[str, Any]:
    """One monitoring pass; returns a small JSON-able summary (the DAG's XCom) and writes the report."""
    from recsys import tracking
    from recsys.data import warehouse
    from recsys.monitoring.drift_report import drift_plots, write_drift_report

    started = time.perf_counter()
    c = tracking.client(tracking_uri)
    version = tracking.champion_version(c, config.model_name)
    if version is None:
        return {"drift": False, "status": f"{config.model_name} has no champion yet: nothing to compare with", "reasons": []}
    recommender = tracking.load_recommender(config.model_name, version)
    ref_dir = getattr(recommender, "reference_dir", None)
    if not ref_dir or not Path(ref_dir).exists():
        return {"drift": False, "status": f"champion version {version} carries no reference statistics (trained before monitoring): retrain once", "reasons": [], "champion_version": version}
    reference = ReferenceStats.load(ref_dir)
    engine = warehouse.make_engine(warehouse_url)
    try:
        items, inter = warehouse.read_dataset(engine, config.dataset)
    finally:
        engine.dispose()
    if inter.empty:
        return {"drift": False, "status": f"the warehouse holds no interactions for {config.dataset!r}", "reasons": [], "champion_version": version}
    history, recent = recent_window(inter, config.window)
    template = tuple(recommender.document_template) if getattr(recommender, "document_template", None) else None
    window = window_from_frames(recent, items, _vectors_for(recommender, items, template), seed=config.seed)
    k = recall_k(reference, config)
    per_user = window_recall_per_user(recommender, history, recent, k, config.max_recall_users, config.seed)
    recall, n_users = (float(per_user.mean()) if len(per_user) else None), len(per_user)
    report = detect_drift(reference, window, config.drift, window_recall_per_user=per_user)
    seconds = time.perf_counter() - started

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = drift_plots(reference, window, report, out_dir)
    json_path, html_path = write_drift_report(report, out_dir, plots)
    exp = tracking.ensure_experiment(c, EXPERIMENT, artifact_root)
    run = c.create_run(exp, run_name=f"drift-{config.dataset}-v{version}", tags={"dataset": config.dataset, "champion_version": version, "drift": str(report.drift).lower()})
    run_id = run.info.run_id
    tracking.log_params(c, run_id, {"window": config.window, "k": k} | {f"threshold.{k}": v for k, v in config.drift.__dict__.items()})
    tracking.log_metrics(
        c,
        run_id,
        {f"signal.{s.name}": s.value for s in report.signals if isinstance(s.value, (int, float))}
        | _interval_metrics(report)
        | {"drift": float(report.drift), "window.interactions": float(len(recent)), "window.recall_users": float(n_users), "seconds": seconds},
    )
    tracking.log_artifacts(c, run_id, out_dir, "drift")
    tracking.set_tags(c, run_id, {"reasons": "; ".join(report.reasons)[:4900]})
    tracking.end_run(c, run_id)
    return {
        "drift": bool(report.drift),
        "status": "drift" if report.drift else "no drift",
        "reasons": list(report.reasons),
        "champion_version": version,
        "window": report.window,
        "window_recall": recall,
        "k": k,
        "window_recall_users": n_users,
        "report": str(html_path),
        "report_json": str(json_path),
        "mlflow_run_id": run_id,
        "seconds": seconds,
    }


def new_data_since_champion(model_name: str, dataset: str, tracking_uri: str, warehouse_url: str) -> dict[str, Any]:
    """How many interactions the warehouse holds beyond those the champion was trained on."""
    from recsys import tracking
    from recsys.data import warehouse

    c = tracking.client(tracking_uri)
    version = tracking.champion_version(c, model_name)
    engine = warehouse.make_engine(warehouse_url)
    try:
        now = warehouse.table_counts(engine, dataset)["interactions"]
    finally:
        engine.dispose()
    if version is None:
        return {"champion_version": None, "new_interactions": now, "warehouse_interactions": now}
    trained_on = int(tracking.version_tags(c, model_name, version).get("data.interactions", "0") or 0)
    return {"champion_version": version, "new_interactions": max(now - trained_on, 0), "warehouse_interactions": now, "champion_interactions": trained_on}
