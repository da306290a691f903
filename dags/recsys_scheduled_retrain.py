"""
### recsys_scheduled_retrain — weekly retraining, only when new data arrived

Every Monday: if the warehouse holds interactions of the champion's data set that the champion was not
trained on (counts against the version's `data.interactions` tag), start `recsys_training` on the
warehouse's data with `trigger_reason` saying how much is new. Nothing new: nothing runs. Never while
another training run is running or queued.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

TRAINING_DAG = "recsys_training"


@dag(
    dag_id="recsys_scheduled_retrain",
    schedule="0 3 * * 1",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["recsys", "training"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30), "owner": "recsys"},
    params={"model_name": Param("recsys-item-encoder", type="string", description="Registered model to refresh")},
)
def recsys_scheduled_retrain():
    @task
    def check_new_data() -> dict:
        from recsys.stages.ops import scheduled_retrain_check

        return scheduled_retrain_check(get_current_context()["params"]["model_name"])

    @task.short_circuit
    def should_retrain(result: dict) -> bool:
        print(result["status"])
        if not result["retrain"]:
            return False
        return not get_current_context()["ti"].get_dr_count(dag_id=TRAINING_DAG, states=["running", "queued"])

    result = check_new_data()
    trigger = TriggerDagRunOperator(
        task_id="trigger_training",
        trigger_dag_id=TRAINING_DAG,
        conf="{{ ti.xcom_pull(task_ids='check_new_data')['training_conf'] }}",
        wait_for_completion=False,
    )
    should_retrain(result) >> trigger


recsys_scheduled_retrain()
