"""
### recsys_training — validate, embed, fine-tune, evaluate, gate, promote, publish

Trains the LLM-based item encoder on a shop's data and registers it in MLflow.

1. **validate** — read the data set (a packaged real data set, or the shop's own files), run the Great
   Expectations gate; bad input fails here with the table, rule and rows named, and nothing else runs.
2. **load_and_split** — upsert into the warehouse (idempotent), read back, build the evaluation split.
3. **plan_embedding → embed_shard (mapped) → merge_embeddings** — embed every item's text with the
   frozen encoder, `embed_shard_size` items per mapped task, so Celery workers embed in parallel; the
   merge assembles the shards in catalog order.
4. **finetune** / **finetune_gpu** — fine-tune the encoder on co-interaction pairs. With
   `finetune_on_gpu` the run takes `finetune_gpu`, which runs on the Celery queue `gpu` (served by a
   worker on a GPU node); otherwise `finetune` runs on the default queue (GPU when present, else CPU).
5. **fuse_signals** — fuse the text vectors with the numeric signals (sales, price, rating) through a
   small learned projection plus a residual text adaptor, trained over the cached vectors in about a
   minute; kept only when it beats the text vectors on validation.
6. **fit_model** — fit the hybrid recommender: EASE with the item text as side information, plus
   cold-start propagation, its weights tuned on validation.
7. **evaluate** — full-ranking Recall/NDCG@k of the hybrid vs EASE, item-kNN, the fine-tuned and the
   frozen encoder, and popularity, on the same split.
8. **package** — log the model (pyfunc) and register a new version, pending the gate.
9. **score_champion** — score the current champion on the SAME test split (old numbers on old data
   are not comparable).
10. **decide** — the promotion gate: the primary metric (default NDCG@k) must improve on the champion
   by the margin, no guardrail (cold-start recall, coverage, Recall@k) may regress beyond its
   tolerance; the first model ever must beat every baseline. Writes the report (JSON, HTML, plots)
   and the version's description and tags. Decided once per version: a rerun reads it back.
11. **review** (only with `require_approval`) — pauses for a reviewer (Airflow's Required Actions):
    Approve → promote, Reject (or no answer in 7 days) → reject.
12. **promote** / **reject** — move the `champion` alias (the last step; idempotent), or give the
    refused version the `challenger` alias; the champion is untouched.
13. **plan_publish → publish_shard (mapped) → publish** — after a promotion, write top-k related items
    and a bundle for every catalog item to the warehouse table `published_recommendations`, tagged with
    the version: `publish_shard_size` items per mapped task (Celery workers publish in parallel into a
    staging table), then `publish` swaps them all in in one transaction.

Every run is one MLflow run (tag `recsys.run_key` = this DAG run). A task that fails for good ends it
FAILED with tags `failure.task` and `failure.reason` (the error's message); bad input (a file that breaks
a rule, an unusable setting) fails its task at once, without the retry other errors get. Trigger from
the UI with the form's Params, or `airflow dags test recsys_training --conf '{"dataset": "movielens-100k"}'`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from recsys_mlflow import (  # plugins/: Airflow glue
    PromotionOperator,
    ValidationGateOperator,
    mark_mlflow_run_failed,
    mark_mlflow_run_failed_on_dag_failure,
    no_retry_on_bad_input,
    run_inputs,
)
from recsys_review import PromotionReviewOperator


def _params() -> dict[str, Param]:
    """The trigger form, generated from the one declaration of each setting (`recsys.settings`)."""
    from recsys.settings import dag_params  # light (no pandas); inside a function: DAG files import no recsys at top level

    return {name: Param(**spec) for name, spec in dag_params().items()}


def _run_inputs(validated: dict | None = None):
    """The typed config and the run context of the current DAG run (built inside a task), logging to the
    MLflow run `validate` opened (named in its XCom `validated`), with the MLflow server and the warehouse
    from the Airflow connections mlflow_default / recsys_warehouse when defined."""
    return run_inputs(mlflow_run_id=validated["mlflow_run_id"] if validated else None)


def _stage(stage: str, task_id: str | None = None, **task_args):
    """A task running the stage `recsys.stages.<module>.<function>` (stage = "module.function") on this DAG run as
    `function(cfg, run, *args)`: the task takes validate's XCom (the run's MLflow run), then the stage's
    own arguments. Its XCom is what the stage returns; `task_args` are the task's own settings (queue, trigger
    rule). A stage's dict is also pushed key by key (multiple_outputs), as a TaskFlow task returning `dict` is."""
    module, function = stage.split(".")

    @task(task_id=task_id or function, **{"multiple_outputs": True, **task_args})
    def run_stage(validated: dict, *args):
        import importlib  # the stage's module (pandas, torch, mlflow) is imported in the task only

        cfg, run = _run_inputs(validated)
        return getattr(importlib.import_module(f"recsys.stages.{module}"), function)(cfg, run, *args)

    return run_stage


@dag(
    dag_id="recsys_training",
    schedule=None,  # triggered by people (UI/REST) and by the drift monitor
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one training run at a time: runs share the registry's champion
    tags=["recsys", "training"],
    doc_md=__doc__,
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "retry_policy": no_retry_on_bad_input(),  # DataValidationError / InputError: failed at once, no retry
        "on_failure_callback": mark_mlflow_run_failed,  # a task failed for good: its MLflow run ends FAILED, with the reason
        "owner": "recsys",
    },
    on_failure_callback=mark_mlflow_run_failed_on_dag_failure,  # backstop: a DAG run failing without a task's report
    params=_params(),
)
def recsys_training():
    @task(map_index_template="{{ shard_label }}")
    def embed_shard(shard: dict) -> dict:
        from recsys.stages import pipeline

        get_current_context()["shard_label"] = f"items {shard['start']}-{shard['stop']}"  # the UI's name of this mapped task
        cfg, run = _run_inputs()
        return pipeline.embed_shard(cfg, run, shard)

    @task.branch
    def choose_device() -> str:
        cfg, _ = _run_inputs()
        return "finetune_gpu" if cfg.finetune_on_gpu else "finetune"

    @task.branch
    def route(decision: dict) -> str:
        """A reviewer sees only what the gate would promote; everything else goes straight on."""
        cfg, _ = _run_inputs()
        return "review" if decision["promote"] and cfg.gate.require_approval else "apply_gate"

    @task.branch
    def apply_gate(decision: dict) -> str:
        return "promote" if decision["promote"] else "reject"

    review = PromotionReviewOperator(task_id="review", decision_task_id="decide")  # its body is built from the decision

    @task(trigger_rule="none_failed_min_one_success")
    def reject(validated: dict) -> dict:
        from recsys.stages import promotion

        cfg, run = _run_inputs(validated)
        answer = get_current_context()["ti"].xcom_pull(task_ids="review", key="review")
        return promotion.reject(cfg, run, reviewer_rejected=bool(answer), reviewer=answer["by"] if answer else None)

    @task(multiple_outputs=False)
    def plan_publish() -> list:
        from airflow.exceptions import AirflowSkipException

        from recsys.stages import promotion

        cfg, run = _run_inputs()
        if not get_current_context()["params"].get("publish", True):
            raise AirflowSkipException("publish=false")  # the shards and the swap are skipped with it
        return promotion.publish_shards(cfg, run)  # a list: one item range per mapped task

    @task(map_index_template="{{ shard_label }}")
    def publish_shard(shard: dict) -> dict:
        from recsys.stages import promotion

        get_current_context()["shard_label"] = f"items {shard['start']}-{shard['stop']}"
        cfg, run = _run_inputs()
        return promotion.publish_shard(cfg, run, shard)

    @task
    def publish(shards: list) -> dict:
        """Every shard's rows swapped in at once: readers see the old version's rows or the new one's."""
        from recsys.stages import promotion

        cfg, run = _run_inputs()
        return promotion.finish_publish(cfg, run, list(shards))

    validated = ValidationGateOperator(task_id="validate").output  # bad data fails it without retries
    split = _stage("pipeline.load_and_split")(validated)
    planned = _stage("pipeline.embedding_shards", task_id="plan_embedding", multiple_outputs=False)(validated)  # a list: one shard per mapped task
    embedded = _stage("pipeline.merge_embeddings")(validated, embed_shard.expand(shard=planned))
    device = choose_device()
    trained = [_stage("pipeline.finetune")(validated), _stage("pipeline.finetune", task_id="finetune_gpu", queue="gpu")(validated)]
    fused = _stage("pipeline.fuse", task_id="fuse_signals", trigger_rule="none_failed_min_one_success")(validated)  # after whichever fine-tuning ran
    fitted = _stage("pipeline.fit_model")(validated)
    evaluated = _stage("pipeline.evaluate")(validated)
    packaged = _stage("promotion.package")(validated)
    scored = _stage("promotion.score_champion")(validated)
    decision = _stage("promotion.decide")(validated)
    split >> planned
    embedded >> device >> trained
    trained >> fused >> fitted >> evaluated >> packaged >> scored >> decision
    routed = route(decision)
    applied = apply_gate(decision)
    promoted = PromotionOperator(task_id="promote")  # trigger rule none_failed_min_one_success
    [validated, decision] >> promoted
    rejected = reject(validated)
    decision >> rejected  # with its trigger rule, reject counts the decision among the upstream successes
    routed >> [review, applied]
    review >> [promoted, rejected]
    applied >> [promoted, rejected]
    planned_publish = plan_publish()
    promoted >> planned_publish
    publish(publish_shard.expand(shard=planned_publish))

recsys_training()
