"""The DAG files load without import errors and follow the project's DAG conventions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[1] / "dags"
HEAVY = {"torch", "pandas", "numpy", "mlflow", "transformers", "great_expectations", "sklearn", "recsys"}


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert "recsys_training" in dagbag.dags


def test_conventions(dagbag: DagBag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.catchup is False, dag_id
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_training_dag_shape(dagbag: DagBag) -> None:
    dag = dagbag.dags["recsys_training"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # triggered (UI, REST, drift monitor), not scheduled
    assert dag.max_active_runs == 1
    order = ["validate", "load_and_split", "plan_embedding", "embed_shard", "merge_embeddings", "choose_device", "finetune", "fuse_signals", "fit_model", "evaluate", "package", "score_champion", "decide", "route"]
    assert set(dag.task_ids) == set(order) | {"finetune_gpu", "apply_gate", "review", "promote", "reject", "plan_publish", "publish_shard", "publish"}
    for upstream, downstream in zip(order, order[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    # embedding is one mapped task per shard; fine-tuning goes to the `gpu` queue only when asked
    assert type(dag.get_task("embed_shard")).__name__.endswith("MappedOperator")
    assert dag.get_task("choose_device").downstream_task_ids == {"finetune", "finetune_gpu"}
    assert dag.get_task("finetune_gpu").queue == "gpu"
    assert dag.get_task("finetune").queue == "default"
    assert dag.get_task("fuse_signals").upstream_task_ids == {"validate", "finetune", "finetune_gpu"}
    assert dag.get_task("fuse_signals").trigger_rule == "none_failed_min_one_success"  # after whichever fine-tuning ran
    assert dag.get_task("fit_model").upstream_task_ids == {"validate", "fuse_signals"}
    # the gate's two ways to the alias: straight on, or through a reviewer; both can promote or reject
    assert dag.get_task("route").downstream_task_ids == {"review", "apply_gate"}
    for via in ("review", "apply_gate"):
        assert dag.get_task(via).downstream_task_ids == {"promote", "reject"}
    assert dag.get_task("promote").trigger_rule == "none_failed_min_one_success"
    # publishing: planned after the promotion, one mapped task per item range, then one swap
    assert dag.get_task("plan_publish").upstream_task_ids == {"promote"}
    assert type(dag.get_task("publish_shard")).__name__.endswith("MappedOperator")
    assert dag.get_task("publish_shard").upstream_task_ids == {"plan_publish"}
    assert dag.get_task("publish").upstream_task_ids == {"publish_shard"}
    assert type(dag.get_task("review")).__name__ == "PromotionReviewOperator"
    params = dag.params
    for name in ("dataset", "max_train_steps", "k", "sample_users", "items_path", "interactions_path", "require_approval", "gate_min_relative_gain", "candidate", "embed_shard_size", "finetune_on_gpu", "fusion", "fusion_signals", "fusion_text_adaptor"):
        assert name in params


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_no_heavy_top_level_imports(path: Path) -> None:
    """DAG files are parsed often: heavy libraries are imported inside tasks only."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            continue
        assert not HEAVY.intersection(names), f"{path.name}: top-level import of {names}"


def test_ingest_dag_marks_the_warehouse_asset(dagbag: DagBag) -> None:
    dag = dagbag.dags["recsys_ingest"]
    assert dag.max_active_runs == 1
    assert dag.get_task("ingest").downstream_task_ids == {"anything_new", "mark_updated", "report_rejections"}
    assert [o.name for o in dag.get_task("mark_updated").outlets] == ["recsys_warehouse"]
    assert dag.get_task("mark_updated").upstream_task_ids == {"anything_new", "ingest"}


def test_drift_monitor_runs_daily_and_on_new_data_and_triggers_training(dagbag: DagBag) -> None:
    dag = dagbag.dags["recsys_drift_monitor"]
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["recsys_warehouse"]
    trigger = dag.get_task("trigger_training")  # mapped: one training run per drifted model
    assert trigger.operator_name == "TriggerDagRunOperator" and trigger.partial_kwargs["trigger_dag_id"] == "recsys_training"
    assert dag.get_task("check_drift").downstream_task_ids == {"training_to_start"}
    assert dag.get_task("training_to_start").downstream_task_ids == {"trigger_training"}


def test_scheduled_retrain_is_weekly_and_gated_on_new_data(dagbag: DagBag) -> None:
    dag = dagbag.dags["recsys_scheduled_retrain"]
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.get_task("check_new_data").downstream_task_ids == {"should_retrain"}
    assert dag.get_task("trigger_training").trigger_dag_id == "recsys_training"
