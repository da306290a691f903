"""Every MLflow call of the project lives here: runs, params, metrics, artifacts, the registry.

One pipeline run = one MLflow run. Tasks run in separate processes, so the run is found again
by a tag holding the pipeline's run key (a retried task reuses it instead of opening another).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

RUN_KEY_TAG = "recsys.run_key"
# MLflow accounts (comma-separated) given READ on what the workflow creates, on a server with basic-auth
READERS_ENV = "RECSYS_MLFLOW_READERS"
CHAMPION = "champion"
CHALLENGER = "challenger"


def client(tracking_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(c: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, created if missing. A local store gets an explicit artifact location
    (else artifacts land in ./mlruns of whatever the current directory is)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        share_with_readers(c, "experiment", exp.experiment_id)
        return exp.experiment_id
    location = (artifact_root / name).as_uri() if artifact_root else None
    experiment_id = c.create_experiment(name, artifact_location=location)
    share_with_readers(c, "experiment", experiment_id)
    return experiment_id


def readers() -> list[str]:
    return [name.strip() for name in os.environ.get(READERS_ENV, "").split(",") if name.strip()]


def share_with_readers(c: MlflowClient, resource_type: str, resource_id: str) -> list[str]:
    """Grant READ on an experiment or registered model to the reader accounts ($RECSYS_MLFLOW_READERS).

    Only against a tracking server running MLflow's basic-auth app: there the account that creates a
    resource (the workers' service account) holds MANAGE on it, and a server whose default permission is
    NO_PERMISSIONS shows it to nobody else until granted. Idempotent; returns the accounts granted now.
    """
    names = readers()
    if not names or not str(c.tracking_uri).startswith(("http://", "https://")):
        return []
    from mlflow.server.auth.client import AuthServiceClient

    auth = AuthServiceClient(str(c.tracking_uri))
    granted = []
    for name in names:
        try:
            auth.grant_user_permission(name, resource_type, str(resource_id), "READ")
            granted.append(name)
        except mlflow.exceptions.MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":  # e.g. created by another account: training goes on
                log.warning("could not give %s READ on %s %s: %s", name, resource_type, resource_id, err)
    return granted


def get_or_create_run(c: MlflowClient, experiment_id: str, run_key: str, run_name: str, tags: dict[str, str]) -> str:
    """The MLflow run of this pipeline run: found by its run key, or created."""
    found = c.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = c.create_run(experiment_id, run_name=run_name, tags={RUN_KEY_TAG: run_key, **tags})
    return run.info.run_id


def log_params(c: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    existing = c.get_run(run_id).data.params
    for key, value in params.items():
        if key not in existing:  # params are immutable in MLflow; a retried task re-logs nothing
            c.log_param(run_id, key, "" if value is None else value)


def log_metrics(c: MlflowClient, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    for key, value in metrics.items():
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            c.log_metric(run_id, key, float(value), step=step or 0)


def log_artifacts(c: MlflowClient, run_id: str, local: Path, artifact_path: str | None = None) -> None:
    if local.is_dir():
        c.log_artifacts(run_id, str(local), artifact_path)
    elif local.exists():
        c.log_artifact(run_id, str(local), artifact_path)


def set_tags(c: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        c.set_tag(run_id, key, value)


def end_run(c: MlflowClient, run_id: str, failed: bool = False) -> None:
    c.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED))


FAILURE_TASK_TAG = "failure.task"  # the task whose failure ended the pipeline run (absent: the DAG run as a whole)
FAILURE_REASON_TAG = "failure.reason"  # the error's message (never a traceback)
FAILURE_ERROR_TAG = "failure.error"  # the error's class name
FAILURE_NOTE_TAG = "failure.note"  # set when the run had already finished: why its status stayed FINISHED
MAX_REASON_CHARS = 4000  # MLflow keeps tag values up to 8000 characters
_TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})


def trim_reason(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """`text` cut to `limit` characters, saying so when it was cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    marker = " … [cut: the task log has the whole message]"
    return text[: max(limit - len(marker), 0)].rstrip() + marker


def fail_run(c: MlflowClient, run_id: str, reason: str, task_id: str | None = None, error: str | None = None) -> str:
    """Record why the pipeline run failed on its MLflow run and end the run FAILED; returns its status.

    Idempotent, and safe to call from every failure callback of a DAG run:

    - the failure tags (`failure.task`, `failure.reason` trimmed to `MAX_REASON_CHARS`, `failure.error`)
      are written unless a task's failure is already recorded: the first failed task is the cause, later
      ones (a second mapped shard, a consequence) keep it. A reason without a task (the DAG run's own
      callback, `task_id=None`) is only a fallback, replaced by the first task that reports;
    - a RUNNING (or SCHEDULED) run ends FAILED; a FAILED or KILLED one stays as it is;
    - a FINISHED run keeps its status and only gets the tags (plus `failure.note`): the pipeline ends
      its run once the gate decided and the champion alias moved (promote/reject), so a later failure
      (publish) is no failure of what the run recorded — its model version exists, and may be the
      champion serving traffic. Flipping it to FAILED would misreport that; the DAG run shows the failure.
    """
    run = c.get_run(run_id)
    tags, status = run.data.tags, run.info.status
    recorded_task = tags.get(FAILURE_TASK_TAG)
    if not recorded_task and (task_id or not tags.get(FAILURE_REASON_TAG)):
        new = {FAILURE_REASON_TAG: trim_reason(reason) or "(no message)"}
        if task_id:
            new[FAILURE_TASK_TAG] = task_id
        if error:
            new[FAILURE_ERROR_TAG] = error
        if status == "FINISHED":
            new[FAILURE_NOTE_TAG] = "the run had already finished (model registered, gate decided) when this failure happened: its status stays FINISHED"
        set_tags(c, run_id, new)
    if status not in _TERMINAL:
        end_run(c, run_id, failed=True)
        return "FAILED"
    return status


def find_run_by_key(c: MlflowClient, run_key: str, experiment_ids: list[str] | None = None):
    """The newest MLflow run tagged `recsys.run_key = run_key` (in the given experiments, else every
    active one), or None."""
    from mlflow.entities import ViewType

    if "'" in run_key or "\\" in run_key:
        raise ValueError(f"unsupported character in run key {run_key!r}")
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not experiment_ids:
        return None
    found = c.search_runs(experiment_ids, filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=1, order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def fail_run_by_key(c: MlflowClient, run_key: str, reason: str, task_id: str | None = None, error: str | None = None) -> str | None:
    """`fail_run` on the MLflow run of a pipeline run (found by its run key); None when there is none
    (the run failed before its validate task created one)."""
    run = find_run_by_key(c, run_key)
    if run is None:
        log.info("no MLflow run is tagged %s=%r: no run to mark failed", RUN_KEY_TAG, run_key)
        return None
    return fail_run(c, run.info.run_id, reason, task_id, error)


def version_of_run(c: MlflowClient, model_name: str, run_id: str) -> str | None:
    """The registered version created by this run, if any (so a retried register adds no second one)."""
    try:
        versions = c.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    except mlflow.exceptions.MlflowException:
        return None
    return str(max((v.version for v in versions), key=int)) if versions else None


def log_and_register_model(
    c: MlflowClient,
    run_id: str,
    model_name: str,
    python_model: Any,
    artifacts: dict[str, str],
    code_paths: list[str],
    input_example: Any,
    pip_requirements: list[str],
) -> str:
    """Log the pyfunc model in the run and register it; returns the version (reused on retry)."""
    existing = version_of_run(c, model_name, run_id)
    if existing:
        log.info("run %s already registered %s version %s: reusing it", run_id, model_name, existing)
        share_with_readers(c, "registered_model", model_name)
        return existing
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    # params in the signature, so callers can pass {"k": ...} at inference time
    signature = infer_signature(input_example, None, params={"k": 10, "mode": "recommend", "budget": 0.0, "diversity": 0.0, "explain": False})
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts=artifacts,
            code_paths=code_paths,
            input_example=input_example,
            signature=signature,
            pip_requirements=pip_requirements,  # explicit: inference of requirements costs 12-15 s
        )
        mv = mlflow.register_model(info.model_uri, model_name, tags={"run_id": run_id})
    share_with_readers(c, "registered_model", model_name)
    return str(mv.version)


def registered_model_tag(c: MlflowClient, model_name: str, key: str) -> str | None:
    return c.get_registered_model(model_name).tags.get(key)


def set_registered_model_tag(c: MlflowClient, model_name: str, key: str, value: str) -> None:
    c.set_registered_model_tag(model_name, key, value)


def champion_version(c: MlflowClient, model_name: str) -> str | None:
    try:
        return str(c.get_model_version_by_alias(model_name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def set_alias(c: MlflowClient, model_name: str, alias: str, version: str) -> None:
    c.set_registered_model_alias(model_name, alias, version)


def set_version_tags(c: MlflowClient, model_name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        c.set_model_version_tag(model_name, version, key, value)


def set_version_description(c: MlflowClient, model_name: str, version: str, text: str) -> None:
    c.update_model_version(model_name, version, description=text)


def alias_version(c: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version an alias points at, or None."""
    try:
        return str(c.get_model_version_by_alias(model_name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def version_tags(c: MlflowClient, model_name: str, version: str) -> dict[str, str]:
    return dict(c.get_model_version(model_name, version).tags)


def delete_alias(c: MlflowClient, model_name: str, alias: str) -> None:
    try:
        c.delete_registered_model_alias(model_name, alias)
    except mlflow.exceptions.MlflowException:
        pass  # already gone: deleting is idempotent


def load_recommender(model_name: str, version: str):
    """The registered version's `ItemRecommender`, loaded through MLflow (tracking URI set by `client`)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(f"models:/{model_name}/{version}").unwrap_python_model()


def catalog_size(model_name: str, version: str) -> int:
    """How many items the registered version serves, from its catalog artifact alone: a planner needs the count,
    not the model (at 92,331 items the catalog is 0.16 GB of a 1.4 GB model directory)."""
    import tempfile

    import numpy as np

    from recsys.run import CATALOG_ARTIFACT, MODEL_DIR_FILES

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"models:/{model_name}/{version}/artifacts/{MODEL_DIR_FILES[CATALOG_ARTIFACT]}"
        with np.load(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)) as data:
            return len(data["item_ids"])


LINEAGE_ARTIFACT = "lineage"  # the run artifact folder holding a version's `recsys.evaluation.lineage.Lineage`


def version_lineage(c: MlflowClient, model_name: str, version: str, dst: Path):
    """The registered version's training lineage (`recsys.evaluation.lineage.Lineage`), or None for a version that
    recorded none (registered before lineages existed)."""
    from recsys.evaluation.lineage import LINEAGE_INFO, Lineage

    run_id = c.get_model_version(model_name, version).run_id
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(c.download_artifacts(run_id, LINEAGE_ARTIFACT, str(dst)))
    except (mlflow.exceptions.MlflowException, OSError) as err:
        log.warning("version %s of %s has no lineage artifact (%s)", version, model_name, err)
        return None
    return Lineage.load(local) if (local / LINEAGE_INFO).exists() else None


def log_dataset(c: MlflowClient, run_id: str, frame: Any, name: str, source: str, digest: str, context: str = "training") -> None:
    """Record the data set a run trained on (MLflow dataset tracking: name, content digest, schema, profile)."""
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag

    if any(d.dataset.digest == digest and d.dataset.name == name for d in c.get_run(run_id).inputs.dataset_inputs):
        return  # a retried task logs it once
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    try:
        resolved = resolve_dataset_source(source)
    except mlflow.exceptions.MlflowException:  # e.g. "pypi:NAME==VERSION" or two files: keep it as a tag
        resolved = CodeDatasetSource({"source": source})
    dataset = from_pandas(frame, source=resolved, name=name, digest=digest)
    c.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])


PREVIOUS_CHAMPION_TAG = "previous_champion"


def rollback_champion(c: MlflowClient, model_name: str, reason: str, actor: str) -> tuple[str, str]:
    """Point the champion alias back at the version it replaced; record who and why on both versions.
    Returns (from_version, to_version)."""
    from datetime import datetime, timezone

    current = champion_version(c, model_name)
    if current is None:
        raise ValueError(f"{model_name} has no champion to roll back")
    previous = version_tags(c, model_name, current).get(PREVIOUS_CHAMPION_TAG, "")
    if not previous:
        raise ValueError(f"{model_name} version {current} replaced no earlier champion: nothing to roll back to")
    c.get_model_version(model_name, previous)  # fails clearly if that version was deleted
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    set_version_tags(c, model_name, current, {"rollback.at": when, "rollback.by": actor, "rollback.reason": reason, "rollback.to": previous})
    set_version_tags(c, model_name, previous, {"restored.at": when, "restored.by": actor, "restored.reason": reason, "restored.from": current})
    set_alias(c, model_name, CHAMPION, previous)  # last: the alias moves only once the record is written
    return current, previous
