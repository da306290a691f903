"""Who may do what: the roles' permissions (deploy/airflow_roles.py), MLflow's auth config
(deploy/mlflow_auth.py) and the grants of recsys.tracking. The whole thing runs for real in
tests/test_cluster_e2e.py (anonymous, viewer, operator, reviewer, the service and reviewer accounts)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from deploy import airflow_roles, mlflow_auth
from recsys import tracking

ANSWER_REVIEW = ("can_edit", "HITL Detail")
TRIGGER = ("can_create", "DAG Runs")
CLEAR = ("can_edit", "Task Instances")
EDIT_DAG = ("can_edit", "DAGs")
READ_RUNS = ("can_read", "DAG Runs")
READ_LOGS = ("can_read", "Task Logs")


def test_operator_triggers_and_clears_but_cannot_answer_a_review() -> None:
    operator = set(airflow_roles.role_permissions()[airflow_roles.OPERATOR])
    assert {TRIGGER, CLEAR, EDIT_DAG, READ_RUNS, READ_LOGS} <= operator
    assert ANSWER_REVIEW not in operator


def test_reviewer_answers_but_cannot_trigger_or_clear() -> None:
    reviewer = set(airflow_roles.role_permissions()[airflow_roles.REVIEWER])
    # FAB checks both for an answer: the review itself and editing the DAG it belongs to
    assert {ANSWER_REVIEW, EDIT_DAG, READ_RUNS, READ_LOGS} <= reviewer
    assert not reviewer & {TRIGGER, CLEAR, ("can_delete", "DAG Runs"), ("can_edit", "DAG Runs")}
    # nothing of FAB's operator-level permissions (connections, variables, pools)
    assert not any(resource in ("Connections", "Variables", "Pools") and action != "can_read" for action, resource in reviewer)


def test_each_role_lists_a_permission_once() -> None:
    for name, perms in airflow_roles.role_permissions().items():
        assert len(perms) == len(set(perms)), name


def test_add_user_refuses_unknown_roles_and_short_passwords() -> None:
    with pytest.raises(ValueError, match="unknown role 'Root'"):
        airflow_roles.add_user("alice", "Root", "x" * 20)
    with pytest.raises(ValueError, match="at least 12 characters"):
        airflow_roles.add_user("alice", airflow_roles.REVIEWER, "short")


def test_mlflow_auth_config_survives_a_percent_in_the_database_password(tmp_path: Path) -> None:
    uri = "postgresql+psycopg2://mlflow:p%40ss%25word@db:5432/mlflow_auth"
    path = tmp_path / "auth.ini"
    mlflow_auth.write_config(str(path), uri)
    parser = configparser.ConfigParser()
    parser.read(path)
    assert parser["mlflow"]["database_uri"] == uri
    assert parser["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_no_grants_without_readers_or_against_a_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not tracking.client: it would repoint the session's MLflow
    monkeypatch.delenv(tracking.READERS_ENV, raising=False)
    assert tracking.readers() == []
    monkeypatch.setenv(tracking.READERS_ENV, " recsys-reviewer , alice,")
    assert tracking.readers() == ["recsys-reviewer", "alice"]
    # a local store has no users: nothing to grant, and creating the experiment still works
    experiment_id = tracking.ensure_experiment(c, "access-test", tmp_path / "artifacts")
    assert tracking.share_with_readers(c, "experiment", experiment_id) == []
