"""Stage functions of the operational DAGs (ingest, drift monitor, scheduled retraining), one per task,
returning small JSON-able dicts. The training DAG's stages are in `recsys.stages.pipeline` / `recsys.stages.promotion`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.paths import ProjectPaths, local_artifact_root, project_paths, resolve_tracking_uri, resolve_warehouse_url

log = logging.getLogger(__name__)

TRAINING_DAG = "recsys_training"


def _urls(paths: ProjectPaths) -> tuple[str, str]:
    return resolve_tracking_uri(paths=paths), resolve_warehouse_url(paths=paths)


def inbox_datasets(paths: ProjectPaths) -> list[str]:
    """The data sets with an inbox folder."""
    from recsys.data.ingest import INBOX

    root = paths.home / INBOX
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.exists() else []


def ingest_all(dataset: str | None = None, max_batches: int | None = None, home: str | None = None) -> dict[str, Any]:
    """Ingest the ready batches of one data set's inbox, or of every inbox folder.

    A bad inbox folder name or an unavailable warehouse is reported under ``problems`` (data set,
    stage, error) and the other data sets go on; a bad batch is quarantined (`recsys.data.ingest`).

    Raises:
        ValueError: ``dataset`` is not a valid data-set name (a setting, not an inbox folder).
    """
    from recsys.data.ingest import check_name, ingest_inbox, warehouse_unavailable
    from recsys.data.privacy import Pseudonymizer, load_key
    from recsys.data.validation import ValidationConfig

    if dataset:
        check_name(dataset, "data set name")
    paths = project_paths(home)
    _, warehouse_url = _urls(paths)
    pseudonymizer = Pseudonymizer(load_key(paths.secrets))
    accepted, rejected, problems, counts = [], [], [], {}
    for name in [dataset] if dataset else inbox_datasets(paths):
        try:
            check_name(name, "inbox folder")
        except ValueError as err:  # e.g. inbox/my shop/: reported, the other folders go on
            log.error("skipping %s: %s", paths.home / "inbox" / name, err)
            problems.append({"dataset": name, "stage": "inbox folder", "error": f"{err}; rename the folder to ingest it"})
            continue
        # events from the future are a producer's bug (clock, time zone): the gate refuses them
        config = ValidationConfig(max_timestamp=(pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)).isoformat())
        try:
            result = ingest_inbox(paths, name, warehouse_url, pseudonymizer, validation_config=config, max_batches=max_batches)
        except Exception as err:  # noqa: BLE001 - one data set's trouble must not stop the others
            stage = "warehouse unavailable (batches stay in the inbox for the next run)" if warehouse_unavailable(err) else "inbox"
            log.error("data set %s: %s", name, stage, exc_info=True)
            problems.append({"dataset": name, "stage": stage, "error": f"{type(err).__name__}: {' '.join(str(err).split())}"[:1000]})
            continue
        accepted += [b.to_dict() | {"dataset": name} for b in result.accepted]
        rejected += [b.to_dict() | {"dataset": name} for b in result.rejected]
        counts[name] = result.counts
    return {"accepted": accepted, "rejected": rejected, "problems": problems, "counts": counts}


def champion_dataset(model_name: str, tracking_uri: str) -> tuple[str | None, str | None]:
    """(champion version, the warehouse data set it was trained on)."""
    from recsys import tracking

    c = tracking.client(tracking_uri)
    version = tracking.champion_version(c, model_name)
    if version is None:
        return None, None
    return version, tracking.version_tags(c, model_name, version).get("dataset")


def champion_recipe(model_name: str, tracking_uri: str) -> dict[str, Any]:
    """The Params the champion was trained with (the recipe settings of `recsys.settings`: those that shape
    the model), from its MLflow run: a retraining follows the champion's recipe on the new data."""
    from recsys import tracking
    from recsys.settings import recipe_from_logged

    c = tracking.client(tracking_uri)
    version = tracking.champion_version(c, model_name)
    if version is None:
        return {}
    return recipe_from_logged(c.get_run(c.get_model_version(model_name, version).run_id).data.params)


def training_conf(model_name: str, dataset: str, reason: str, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training DAG's run configuration for a retraining on the warehouse's data (with the
    champion's recipe), saying why."""
    return (recipe or {}) | {"dataset": "warehouse", "warehouse_dataset": dataset, "model_name": model_name, "trigger_reason": reason[:1000]}


def monitor(model_name: str, window: str = "7D", run_key: str = "manual", home: str | None = None, thresholds: dict[str, Any] | None = None) -> dict[str, Any]:
    """One drift check of the champion's data set; with drift, the training conf that records why."""
    from recsys.monitoring.drift import DriftConfig
    from recsys.monitoring.monitor import MonitorConfig, check_drift

    paths = project_paths(home)
    tracking_uri, warehouse_url = _urls(paths)
    version, dataset = champion_dataset(model_name, tracking_uri)
    if version is None or not dataset:
        return {"drift": False, "status": f"{model_name} has no champion (or it does not name its data set): nothing to monitor", "reasons": []}
    drift = DriftConfig.from_dict(thresholds) if thresholds else DriftConfig()
    config = MonitorConfig(dataset=dataset, model_name=model_name, window=window, drift=drift)
    out_dir = paths.home / "monitor" / _safe(run_key)
    try:
        result = check_drift(config, tracking_uri, warehouse_url, out_dir, local_artifact_root(paths, tracking_uri))
    except ValueError as err:  # e.g. a data set without timestamps: nothing to watch, not a failure
        return {"drift": False, "status": str(err), "reasons": [], "champion_version": version, "dataset": dataset}
    result["dataset"] = dataset
    if result["drift"]:
        reason = f"drift on {dataset} against champion v{version} (report {result['report']}): " + "; ".join(result["reasons"])
        result["training_conf"] = training_conf(model_name, dataset, reason, champion_recipe(model_name, tracking_uri))
    return result


def monitored_models(tracking_uri: str, datasets: list[str] | None = None) -> list[str]:
    """Registered models that have a champion (trained on one of `datasets`, when given)."""
    from recsys import tracking

    c = tracking.client(tracking_uri)
    names = []
    for model in c.search_registered_models():
        if tracking.CHAMPION not in (model.aliases or {}):
            continue
        if datasets is not None:
            _, dataset = champion_dataset(model.name, tracking_uri)
            if dataset not in datasets:
                continue
        names.append(model.name)
    return sorted(names)


def monitor_all(model_name: str | None, window: str, run_key: str, datasets: list[str] | None = None, thresholds: dict[str, Any] | None = None, home: str | None = None) -> dict[str, Any]:
    """Check one model, or every model with a champion (on the updated data sets); collect the
    training configurations of those that drifted."""
    paths = project_paths(home)
    tracking_uri, _ = _urls(paths)
    names = [model_name] if model_name else monitored_models(tracking_uri, datasets)
    results = {name: monitor(name, window, run_key=f"{run_key}__{name}", home=home, thresholds=thresholds) for name in names}
    for name, result in results.items():
        log.info("%s: %s %s", name, result["status"], "; ".join(result.get("reasons", [])))
    confs = [r["training_conf"] for r in results.values() if r.get("training_conf")]
    return {"models": names, "results": results, "training_confs": confs}


def scheduled_retrain_check(model_name: str, home: str | None = None) -> dict[str, Any]:
    """Whether the weekly retraining should run: only when new data arrived since the champion was trained."""
    from recsys.monitoring.monitor import new_data_since_champion

    paths = project_paths(home)
    tracking_uri, warehouse_url = _urls(paths)
    version, dataset = champion_dataset(model_name, tracking_uri)
    if version is None or not dataset:
        return {"retrain": False, "status": f"{model_name} has no champion trained on a warehouse data set: nothing to refresh"}
    news = new_data_since_champion(model_name, dataset, tracking_uri, warehouse_url)
    if news["new_interactions"] <= 0:
        return {"retrain": False, "status": f"no new interactions for {dataset} since champion v{version} was trained", **news}
    reason = f"scheduled: {news['new_interactions']} new interactions for {dataset} since champion v{version} was trained"
    return {"retrain": True, "status": reason, "training_conf": training_conf(model_name, dataset, reason, champion_recipe(model_name, tracking_uri)), **news}


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def replay_into_inbox(source: str, dataset_name: str, freq: str, start: int, count: int | None, shuffle: bool, seed: int, home: str | None = None) -> list[Path]:
    """Write time windows of a timestamped data set into the inbox (the `recsys replay` command): a
    packaged one by name, warehouse:<data set name> or files:<items path>,<interactions path>."""
    from recsys.data.replay import replay_source

    paths = project_paths(home)
    _, warehouse_url = _urls(paths)
    return replay_source(paths, source, dataset_name, freq=freq, start=start, count=count, shuffle=shuffle, seed=seed, warehouse_url=warehouse_url)

