"""
### recsys_ingest — new catalog and interaction batches from the inbox into the warehouse

Producers drop batches into `$RECSYS_HOME/inbox/<dataset>/<batch_id>/` (`interactions.csv|parquet`,
optionally `items.csv|parquet`, canonical schema) and write an empty `_READY` file last. Each run:

1. **ingest** — for every data set folder (or the one named in the `dataset` Param), every ready batch
   in name order: keep a raw copy, pseudonymize user ids, validate with the same Great Expectations gate
   as training, upsert into the warehouse (idempotent, one transaction), move it to `.done/`. A bad batch
   that fails anywhere (files, parsing, a rule, the warehouse refusing a row) is rejected whole and moved
   to `.rejected/<batch_id>/` with `error.json` (stage, table, rule, rows); the other batches and data
   sets go on; nothing already loaded is lost. A folder whose name is not a valid data set name is
   skipped and reported; an unreachable warehouse leaves the batches in the inbox for the next run.
2. **mark_updated** — when something landed, updates the Asset `recsys_warehouse` (the drift monitor
   is scheduled on it), with the data sets and batch ids in the event.
3. **report_rejections** — fails, naming each rejected batch (one line: stage, table, rule, rows, and its
   `error.json`) and each skipped folder, so a person sees it in the UI.

Feed it from a real timestamped data set with `recsys replay` (movielens-100k, week by week).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from recsys_assets import WAREHOUSE  # plugins/


@dag(
    dag_id="recsys_ingest",
    schedule="*/15 * * * *",  # look at the inbox every 15 minutes; trigger by hand for at once
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one ingest at a time (the inbox is also locked)
    tags=["recsys", "ingest"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30), "owner": "recsys"},
    params={
        "dataset": Param(None, type=["null", "string"], description="Inbox folder / warehouse data set to ingest (empty = every folder in the inbox)"),
        "max_batches": Param(None, type=["null", "integer"], minimum=1, description="At most this many batches per data set in this run"),
    },
)
def recsys_ingest():
    @task
    def ingest() -> dict:
        from recsys.stages.ops import ingest_all

        from airflow.sdk.exceptions import AirflowFailException

        params = get_current_context()["params"]
        try:
            return ingest_all(params.get("dataset"), params.get("max_batches"))
        except ValueError as err:  # a bad `dataset` Param: the same on every retry
            raise AirflowFailException(str(err)) from err

    @task.short_circuit
    def anything_new(result: dict) -> bool:
        return bool(result["accepted"])

    @task(outlets=[WAREHOUSE])
    def mark_updated(result: dict) -> dict:
        context = get_current_context()
        extra = {"datasets": sorted({b["dataset"] for b in result["accepted"]}), "batches": [b["batch_id"] for b in result["accepted"]]}
        context["outlet_events"][WAREHOUSE].extra = extra
        return extra

    @task
    def report_rejections(result: dict) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        lines = [f"REJECTED {b['dataset']}/{b['batch_id']}: {b.get('summary') or b['error']} — see {b['path']}/error.json" for b in result["rejected"]]
        lines += [f"SKIPPED {p['dataset']} ({p['stage']}): {p['error']}" for p in result.get("problems", [])]
        if lines:  # the good batches were loaded; these need a person
            raise AirflowFailException(f"{len(lines)} problem(s); nothing of a rejected batch was loaded:\n" + "\n".join(lines))

    result = ingest()
    mark_updated(result).set_upstream(anything_new(result))
    report_rejections(result)


recsys_ingest()
