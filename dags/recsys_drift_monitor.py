"""
### recsys_drift_monitor — is today's data still the data behind the champion?

Runs daily and whenever `recsys_ingest` updates the warehouse (Asset `recsys_warehouse`).

1. **check_drift** — for the `model_name` Param, or every registered model with a champion (on new data:
   those trained on the updated data sets), loads the champion and the reference statistics stored with it at training time,
   takes the warehouse's most recent window of its data set (`window`, default the last 7 days of event
   time) and compares: category and event mix (PSI, Jensen-Shannon), price, basket size, user activity
   and item popularity (Kolmogorov-Smirnov with an effect-size floor, Wasserstein), item-text embeddings
   (a domain classifier's cross-validated ROC AUC), the share of interactions on items the champion never
   saw, and the champion's own Recall@k on the window against its evaluation score. The decision, every
   signal's value and threshold go to `drift.json` / `drift.html` (with plots) and an MLflow run in the
   experiment `recsys-drift-monitor`.
2. **training_to_start** — the drifted models, unless a training run is already running or queued.
3. **trigger_training** — (mapped, one per drifted model) starts `recsys_training` on the warehouse's data, with `trigger_reason` in its
   run configuration saying what drifted and by how much (visible in the run's conf and as the MLflow
   tag `trigger.reason`). The new model then goes through the promotion gate like any other.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import AssetOrTimeSchedule, Param, dag, get_current_context, task
from airflow.timetables.trigger import CronTriggerTimetable
from recsys_assets import WAREHOUSE  # plugins/

TRAINING_DAG = "recsys_training"


@dag(
    dag_id="recsys_drift_monitor",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 4 * * *", timezone="UTC"), assets=[WAREHOUSE]),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "monitoring"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30), "owner": "recsys"},
    params={
        "model_name": Param(None, type=["null", "string"], description="Registered model to watch (empty = every model with a champion; on new data, those trained on the updated data sets)"),
        "window": Param("7D", type="string", description="Recent window: this much event time up to the newest interaction (pandas offset)"),
        "thresholds": Param({}, type="object", description='Drift thresholds overriding the defaults, e.g. {"psi_threshold": 0.25, "auc_threshold": 0.7}'),
    },
)
def recsys_drift_monitor():
    @task
    def check_drift() -> dict:
        from recsys.stages.ops import monitor_all

        context = get_current_context()
        params = context["params"]
        events = context.get("triggering_asset_events") or {}
        updated = sorted({d for evs in events.values() for e in evs for d in (e.extra or {}).get("datasets", [])}) or None
        return monitor_all(params.get("model_name"), params["window"], run_key=context["run_id"], datasets=updated, thresholds=params.get("thresholds") or None)

    @task
    def training_to_start(result: dict) -> list[dict]:
        """The drifted models' training runs, unless a training run is already running or queued."""
        confs = result["training_confs"]
        if not confs:
            print("no drift: no retraining")
            return []
        running = get_current_context()["ti"].get_dr_count(dag_id=TRAINING_DAG, states=["running", "queued"])
        if running:
            print(f"drift, but {running} training run(s) already running or queued: not starting another")
            return []
        return confs

    confs = training_to_start(check_drift())
    TriggerDagRunOperator.partial(task_id="trigger_training", trigger_dag_id=TRAINING_DAG, wait_for_completion=False).expand(conf=confs)


recsys_drift_monitor()
