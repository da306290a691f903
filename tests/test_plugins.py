"""The Airflow plugin `plugins/recsys_mlflow.py`: hook, operators, links, and the redirect app.

Real components throughout: Airflow connections given the way deployments give them
(`AIRFLOW_CONN_*` environment variables, JSON and URI forms), the session's MLflow SQLite store and
registry (conftest), the real `recsys` validation stage, Airflow's own plugin manager and API-server
models, FastAPI's TestClient. The slow test runs a small DAG with `airflow dags test` and reads the
links back through Airflow's REST API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

import airflow  # noqa: F401  (puts the plugins folder on sys.path, as in every Airflow component)

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

import recsys_mlflow as rm  # noqa: E402
from airflow.sdk.api.datamodels._generated import DagRun  # noqa: E402  (the runtime context's dag_run)
from airflow.sdk.exceptions import AirflowFailException  # noqa: E402

from recsys.paths import WAREHOUSE_URL_ENV  # noqa: E402

UI = "http://mlflow.example.test:5000"
GOOD_ITEMS = "item_id,title,price\nA1,Red mug,3.5\nB2,Blue plate,4\nC3,Green bowl,2.25\n"
GOOD_INTER = "user_id,item_id,event,timestamp\nalice,A1,purchase,2024-01-01\nalice,B2,view,2024-01-02\nbob,C3,cart,2024-01-03\n"


def _conn_id() -> str:
    return f"mlflow_test_{uuid.uuid4().hex[:8]}"


def _set_conn(monkeypatch: pytest.MonkeyPatch, value: dict | str) -> str:
    """Define an Airflow connection the way deployments do: AIRFLOW_CONN_<ID> (JSON or URI)."""
    conn_id = _conn_id()
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value if isinstance(value, str) else json.dumps(value))
    return conn_id


def _store_conn(monkeypatch: pytest.MonkeyPatch, ui_url: str | None = UI) -> str:
    """A connection to the session's real MLflow store (extra tracking_uri), with a UI URL."""
    extra = {"tracking_uri": os.environ["MLFLOW_TRACKING_URI"]} | ({"ui_url": ui_url} if ui_url else {})
    return _set_conn(monkeypatch, {"conn_type": "http", "extra": extra})


@pytest.fixture
def no_creds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", rm.UI_URL_ENV):
        monkeypatch.delenv(name, raising=False)


def _tagged_run(client, key: str, metrics: dict[str, float] | None = None) -> tuple[str, str]:
    """An MLflow run tagged as the pipeline tags it; returns (experiment id, run id)."""
    exp = client.get_experiment_by_name("plugin-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment("plugin-tests")
    run = client.create_run(exp_id, run_name=key, tags={rm.RUN_KEY_TAG: key, "dataset": "files", "decision": "promote"})
    for name, value in (metrics or {}).items():
        client.log_metric(run.info.run_id, name, value)
    return exp_id, run.info.run_id


def _dag_run(dag_id: str, run_id: str) -> DagRun:
    when = datetime(2026, 11, 28, tzinfo=timezone.utc)
    return DagRun(
        dag_id=dag_id,
        run_id=run_id,
        logical_date=when,
        data_interval_start=None,
        data_interval_end=None,
        run_after=when,
        start_date=when,
        end_date=None,
        run_type="manual",
        state="running",
        consumed_asset_events=[],
        partition_key=None,
    )


# --- the hook -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conn", "tracking_uri"),
    [
        ({"conn_type": "http", "host": "mlflow", "port": 5000}, "http://mlflow:5000"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ({"conn_type": "http", "host": "mlflow.example.com", "schema": "https", "port": 8443}, "https://mlflow.example.com:8443"),
        ({"conn_type": "http", "host": "https://mlflow.example.com/tracking", "port": 443}, "https://mlflow.example.com:443/tracking"),
        ({"conn_type": "http", "host": "mlflow", "port": 5000, "extra": {"path": "/mlflow/"}}, "http://mlflow:5000/mlflow"),
        ({"conn_type": "http", "host": "ignored", "extra": {"tracking_uri": "sqlite:////tmp/x/mlflow.db"}}, "sqlite:////tmp/x/mlflow.db"),
    ],
)
def test_hook_tracking_uri_from_connection(conn: dict | str, tracking_uri: str, monkeypatch: pytest.MonkeyPatch, no_creds: None) -> None:
    hook = rm.MlflowHook(_set_conn(monkeypatch, conn))
    assert hook.get_tracking_uri() == tracking_uri
    # the UI defaults to the tracking server itself; a database store has no UI
    assert hook.ui_url() == (tracking_uri if tracking_uri.startswith("http") else None)


def test_hook_basic_auth_and_ui_url(monkeypatch: pytest.MonkeyPatch, no_creds: None) -> None:
    conn_id = _set_conn(
        monkeypatch,
        {"conn_type": "http", "host": "mlflow", "port": 5000, "login": "alice", "password": "s3cret-pass", "extra": {"ui_url": "http://localhost:5000/"}},
    )
    hook = rm.MlflowHook(conn_id)
    assert hook.get_tracking_uri() == "http://mlflow:5000"
    assert hook.ui_url() == "http://localhost:5000"  # the browser's URL, not the internal one
    assert hook.credentials() == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cret-pass"}
    client = hook.get_client()  # exports the credentials for every MLflow client of the process
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret-pass"
    assert client.tracking_uri == "http://mlflow:5000"
    # the URI form, credentials in the authority: never in the UI URL
    hook = rm.MlflowHook(_set_conn(monkeypatch, "http://bob:pa%3Ass@mlflow:5000"))
    assert hook.credentials() == {"MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": "pa:ss"}
    assert hook.get_tracking_uri() == "http://mlflow:5000" and hook.ui_url() == "http://mlflow:5000"


def test_hook_without_connection_falls_back(monkeypatch: pytest.MonkeyPatch, session_home: Path, no_creds: None) -> None:
    hook = rm.MlflowHook("mlflow_not_defined_anywhere")
    assert hook.connection is None  # no error: the embedded mode defines no connection
    assert hook.get_tracking_uri() == os.environ["MLFLOW_TRACKING_URI"]
    assert hook.ui_url() is None and hook.run_url("abc", "1") is None and hook.model_version_url("m", 1) is None
    assert hook.credentials() == {}
    monkeypatch.setenv(rm.UI_URL_ENV, "http://localhost:5000/")
    assert hook.model_version_url("recsys item/encoder", 3) == "http://localhost:5000/#/models/recsys%20item%2Fencoder/versions/3"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert hook.get_tracking_uri() == f"sqlite:///{session_home.resolve() / 'mlflow' / 'mlflow.db'}"  # the embedded store


def test_hook_client_talks_to_the_store_and_builds_links(monkeypatch: pytest.MonkeyPatch, no_creds: None) -> None:
    hook = rm.MlflowHook(_store_conn(monkeypatch))
    assert hook.test_connection()[0] is True
    client = hook.get_client()
    key = f"recsys_training__manual__{uuid.uuid4().hex}"
    exp_id, run_id = _tagged_run(client, key)
    assert hook.run_url(run_id) == f"{UI}/#/experiments/{exp_id}/runs/{run_id}"  # the experiment looked up
    found = hook.find_run(key)
    assert found is not None and found.info.run_id == run_id
    assert hook.find_run("recsys_training__never") is None
    assert hook.registered_version(found) is None
    name = f"plugin-model-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    mv = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)
    assert hook.registered_version(found) == (name, str(mv.version))
    assert hook.model_version_url(name, mv.version) == f"{UI}/#/models/{name}/versions/{mv.version}"


def test_hook_connection_test_reports_failure(monkeypatch: pytest.MonkeyPatch, no_creds: None) -> None:
    hook = rm.MlflowHook(_set_conn(monkeypatch, {"conn_type": "http", "host": "127.0.0.1", "port": 9, "extra": {}}))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    ok, message = hook.test_connection()
    assert ok is False and message


# --- warehouse, run inputs ----------------------------------------------------------------------


def test_warehouse_url_from_connection_env_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAREHOUSE_URL_ENV, raising=False)
    uri = rm.warehouse_url(_set_conn(monkeypatch, "postgres://rec%40sys:pa%3Ass@postgres:5432/warehouse"))
    assert uri == "postgresql+psycopg2://rec%40sys:pa%3Ass@postgres:5432/warehouse"
    from sqlalchemy.engine import make_url

    url = make_url(uri)  # what recsys.data.warehouse hands to SQLAlchemy
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == ("postgresql+psycopg2", "rec@sys", "pa:ss", "postgres", 5432, "warehouse")
    json_form = {"conn_type": "postgres", "host": "db", "login": "u", "password": "p", "schema": "warehouse", "port": 5432}
    assert rm.warehouse_url(_set_conn(monkeypatch, json_form)) == "postgresql+psycopg2://u:p@db:5432/warehouse"
    explicit = {"conn_type": "generic", "extra": {"sqlalchemy_url": "sqlite:////tmp/wh.db"}}
    assert rm.warehouse_url(_set_conn(monkeypatch, explicit)) == "sqlite:////tmp/wh.db"
    assert rm.warehouse_url("recsys_warehouse_not_defined") is None  # the caller's embedded default
    monkeypatch.setenv(WAREHOUSE_URL_ENV, "postgresql+psycopg2://x@y/z")
    assert rm.warehouse_url("recsys_warehouse_not_defined") == "postgresql+psycopg2://x@y/z"


def test_run_inputs_resolves_like_the_dag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_creds: None) -> None:
    from recsys.paths import project_paths

    mlflow_conn = _set_conn(monkeypatch, {"conn_type": "http", "host": "mlflow", "port": 5000, "login": "alice", "password": "s3cret-pass"})
    wh_conn = _set_conn(monkeypatch, "postgres://u:p@postgres:5432/warehouse")
    context = {"dag_run": _dag_run("recsys_training", "manual__2026-11-28T00:00:00+00:00"), "params": {"dataset": "movielens-100k", "k": 5}}
    cfg, ctx = rm.run_inputs(context, mlflow_conn, wh_conn)
    assert cfg.dataset == "movielens-100k" and cfg.eval.k == 5
    assert ctx.run_key == "recsys_training__manual__2026-11-28T00:00:00+00:00"
    assert ctx.run_dir == project_paths().run_dir(ctx.run_key)
    assert ctx.tracking_uri == "http://mlflow:5000"
    assert ctx.warehouse_url == "postgresql+psycopg2://u:p@postgres:5432/warehouse"
    assert str(ctx.logical_date) == "2026-11-28 00:00:00+00:00"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"  # for the MLflow clients recsys opens
    # no connections at all (embedded mode): the environment, then the project's defaults
    monkeypatch.delenv(WAREHOUSE_URL_ENV, raising=False)
    cfg, ctx = rm.run_inputs(context, "nope_mlflow", "nope_warehouse")
    assert ctx.tracking_uri == os.environ["MLFLOW_TRACKING_URI"] and ctx.warehouse_url == project_paths().warehouse_url


# --- operators ----------------------------------------------------------------------------------


def _files_params(tmp_path: Path, inter: str = GOOD_INTER) -> dict:
    items, interactions = tmp_path / "items.csv", tmp_path / "interactions.csv"
    items.write_text(GOOD_ITEMS)
    interactions.write_text(inter)
    return {"dataset": "files", "items_path": str(items), "interactions_path": str(interactions), "model_name": "plugin-gate-tests"}


def test_validation_gate_operator_passes_good_data_and_links_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_creds: None) -> None:
    op = rm.ValidationGateOperator(task_id="validate", mlflow_conn_id=_store_conn(monkeypatch))
    assert op.trigger_rule == "all_success" and [link.name for link in op.operator_extra_links] == ["MLflow run"]
    context = {"dag_run": _dag_run("recsys_training", f"manual__{uuid.uuid4().hex}"), "params": _files_params(tmp_path)}
    result = op.execute(context)
    assert result["validation"] is True and result["items"] == 3 and result["mlflow_run_id"]
    client = rm.MlflowHook(op.mlflow_conn_id).get_client()
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags[rm.RUN_KEY_TAG] == f"recsys_training__{context['dag_run'].run_id}"
    link = op.operator_extra_links[0].get_link(op, ti_key=None)  # what the task runner stores when the task ends
    assert link == f"{UI}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def test_validation_gate_operator_fails_bad_data_without_retry_and_still_links(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_creds: None) -> None:
    op = rm.ValidationGateOperator(task_id="validate", mlflow_conn_id=_store_conn(monkeypatch))
    run_id = f"manual__{uuid.uuid4().hex}"
    context = {"dag_run": _dag_run("recsys_training", run_id), "params": _files_params(tmp_path, GOOD_INTER + "bob,Z9,purchase,2024-01-04\n")}
    with pytest.raises(AirflowFailException, match=r"expect_column_values_to_not_be_in_set\(item_id\)"):
        op.execute(context)
    run = rm.MlflowHook(op.mlflow_conn_id).find_run(f"recsys_training__{run_id}")
    assert run is not None and run.data.tags["validation"] == "failed" and run.info.status == "FAILED"
    assert op.operator_extra_links[0].get_link(op, ti_key=None) == f"{UI}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def test_operator_links_are_empty_without_a_ui(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_creds: None) -> None:
    op = rm.ValidationGateOperator(task_id="validate", mlflow_conn_id=_store_conn(monkeypatch, ui_url=None))
    op.execute({"dag_run": _dag_run("recsys_training", f"manual__{uuid.uuid4().hex}"), "params": _files_params(tmp_path)})
    assert op.operator_extra_links[0].get_link(op, ti_key=None) == ""  # an empty link is not shown


def test_promotion_operator_defaults() -> None:
    op = rm.PromotionOperator(task_id="promote")
    assert op.trigger_rule == "none_failed_min_one_success"
    assert (op.validate_task_id, op.review_task_id) == ("validate", "review")
    assert [link.name for link in op.operator_extra_links] == ["MLflow run", "MLflow model version"]
    assert rm.PromotionOperator(task_id="promote", trigger_rule="all_success").trigger_rule == "all_success"
    assert op.operator_extra_links[1].get_link(op, ti_key=None) == ""  # before it ran


def test_global_link_points_training_tasks_at_the_redirect() -> None:
    from airflow.models.taskinstancekey import TaskInstanceKey

    link = rm.MlflowDagRunLink()
    key = TaskInstanceKey(dag_id="recsys_training", task_id="embed", run_id="manual__2026-11-28T00:00:00+00:00", try_number=1)
    assert link.get_link(None, ti_key=key) == "/recsys/mlflow/recsys_training/manual__2026-11-28T00%3A00%3A00%2B00%3A00"
    assert link.get_link(None, ti_key=key._replace(dag_id="recsys_ingest")) == ""  # no MLflow run: hidden


# --- the FastAPI app ----------------------------------------------------------------------------


@pytest.fixture
def app_client(monkeypatch: pytest.MonkeyPatch, no_creds: None):
    from fastapi.testclient import TestClient

    conn_id = _store_conn(monkeypatch)
    return conn_id, TestClient(rm.create_app(mlflow_conn_id=conn_id, require_auth=False))


def test_redirect_to_the_run_and_its_version(app_client) -> None:
    conn_id, http = app_client
    hook = rm.MlflowHook(conn_id)
    client = hook.get_client()
    run_id = "manual__2026-11-28T10:00:00+00:00"  # ':' and '+' as the UI encodes them
    exp_id, mlflow_run = _tagged_run(client, f"recsys_training__{run_id}", {"test.ndcg_at_10": 0.25})
    response = http.get("/mlflow/recsys_training/manual__2026-11-28T10%3A00%3A00%2B00%3A00", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == f"{UI}/#/experiments/{exp_id}/runs/{mlflow_run}"

    response = http.get(f"/mlflow/recsys_training/{run_id}", params={"target": "version"}, follow_redirects=False)
    assert response.status_code == 404 and "registered no model version" in response.json()["detail"]
    name = f"plugin-redirect-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    client.create_model_version(name, source=f"runs:/{mlflow_run}/model", run_id=mlflow_run)
    mv = client.create_model_version(name, source=f"runs:/{mlflow_run}/model", run_id=mlflow_run)
    response = http.get(f"/mlflow/recsys_training/{run_id}?target=version", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == f"{UI}/#/models/{name}/versions/{mv.version}"

    client.set_registered_model_alias(name, "champion", mv.version)
    page = http.get(f"/panel/recsys_training/{run_id}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for fragment in (mlflow_run, "test.ndcg_at_10", "0.25", f"v{mv.version} (champion)", f"{UI}/#/experiments/{exp_id}/runs/{mlflow_run}"):
        assert fragment in page.text


def test_redirect_unknown_run_is_404_with_a_clear_message(app_client) -> None:
    _, http = app_client
    response = http.get("/mlflow/recsys_training/manual__never_ran", follow_redirects=False)
    assert response.status_code == 404
    assert response.json()["detail"] == (
        "no MLflow run is tagged recsys.run_key='recsys_training__manual__never_ran': "
        "the DAG run has not reached its validate task, or it is not a recsys training run"
    )
    page = http.get("/panel/recsys_ingest/manual__x")
    assert page.status_code == 200 and "No MLflow run is tagged" in page.text
    assert http.get("/mlflow/recsys_training/bad'quote", follow_redirects=False).status_code == 400
    assert http.get("/mlflow/recsys_training/x?target=nope", follow_redirects=False).status_code == 422


def test_redirect_without_ui_url_says_what_to_configure(monkeypatch: pytest.MonkeyPatch, no_creds: None) -> None:
    from fastapi.testclient import TestClient

    conn_id = _store_conn(monkeypatch, ui_url=None)
    response = TestClient(rm.create_app(mlflow_conn_id=conn_id, require_auth=False)).get("/mlflow/recsys_training/x", follow_redirects=False)
    assert response.status_code == 503 and "ui_url" in response.json()["detail"] and conn_id in response.json()["detail"]


def test_app_requires_an_airflow_login() -> None:
    from fastapi.testclient import TestClient

    http = TestClient(rm.create_app())
    for path in ("/mlflow/recsys_training/x", "/panel/recsys_training/x"):
        response = http.get(path, follow_redirects=False)
        assert response.status_code == 401 and response.json() == {"detail": "Not authenticated"}


# --- the plugin ---------------------------------------------------------------------------------


def test_plugin_registers_links_app_and_dag_run_tab() -> None:
    from airflow import plugins_manager
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse, FastAPIAppResponse

    plugins, errors = plugins_manager._get_plugins()
    assert errors == {}
    plugin = next(p for p in plugins if p.name == "recsys_mlflow")
    assert {type(link).__name__ for link in plugins_manager.get_operator_extra_links()} >= {"MlflowRunLink", "MlflowModelVersionLink"}
    assert [type(link).__name__ for link in plugins_manager.get_global_operator_extra_links()] == ["MlflowDagRunLink"]
    by_link = {type(link).__name__: sorted(op.__name__ for op in link.operators) for link in plugin.operator_extra_links}
    assert by_link == {"MlflowRunLink": ["PromotionOperator", "ValidationGateOperator"], "MlflowModelVersionLink": ["PromotionOperator"]}
    (app,) = plugins_manager.get_fastapi_plugins()[0]
    FastAPIAppResponse.model_validate({**app, "app": type(app["app"]).__name__})  # the API server's own schema
    assert app["url_prefix"] == "/recsys"
    views, _ = plugins_manager._get_ui_plugins()
    (view,) = [v for v in views if v["url_route"] == "recsys-mlflow"]
    assert ExternalViewResponse.model_validate(view).destination == "dag_run"
    assert view["href"] == "/recsys/panel/{DAG_ID}/{RUN_ID}"  # the UI fills in the DAG run
    info = {p["name"]: p for p in plugins_manager.get_plugin_info()}["recsys_mlflow"]
    assert info["fastapi_apps"][0]["url_prefix"] == "/recsys"


def test_plugin_module_imports_nothing_heavy() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import recsys_mlflow; "
        "print(sorted(m for m in ('mlflow', 'torch', 'pandas', 'recsys', 'recsys.stages.pipeline', 'fastapi', 'great_expectations') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(PLUGINS)], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --- end to end in Airflow: links stored by the task runner, read through the REST API ----------

PROBE_DAG = '''
"""Probe for tests/test_plugins.py: the plugin's operators in a real DAG run."""
import json
from pathlib import Path

import pendulum
from airflow.sdk import dag, get_current_context, task
from recsys_mlflow import MlflowHook, PromotionOperator, ValidationGateOperator, run_inputs


@dag(dag_id="recsys_plugin_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, params=PARAMS)
def probe():
    validated = ValidationGateOperator(task_id="validate")

    @task
    def decide(validated: dict) -> dict:
        """Stands in for package/score/decide: registers a version and writes the gate's record."""
        cfg, ctx = run_inputs()
        client = MlflowHook().get_client()
        if not client.search_registered_models(f"name = '{cfg.model_name}'"):
            client.create_registered_model(cfg.model_name)
        mv = client.create_model_version(cfg.model_name, source=f"runs:/{validated['mlflow_run_id']}/model", run_id=validated["mlflow_run_id"])
        gate = ctx.run_dir / "evaluation" / "gate.json"
        gate.parent.mkdir(parents=True, exist_ok=True)
        gate.write_text(json.dumps({"version": str(mv.version), "promote": True, "reasons": [], "champion_version": None}))
        return {"promote": True}

    @task
    def review() -> None:
        get_current_context()["ti"].xcom_push(key="review", value={"option": "Approve", "by": "alice", "at": "now"})

    promote = PromotionOperator(task_id="promote")
    decided = decide(validated.output)
    reviewed = review()
    decided >> reviewed >> promote


probe()
'''


@pytest.mark.slow
def test_links_are_stored_by_airflow_and_served_by_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_home: Path, no_creds: None) -> None:
    """`airflow dags test` runs validate -> decide -> review -> promote; the task runner stores the
    operators' links in XCom; the API server serves them and the plugin's redirect."""
    model = f"plugin-probe-{uuid.uuid4().hex[:6]}"
    dags = tmp_path / "dags"
    dags.mkdir()
    params = _files_params(tmp_path) | {"model_name": model}
    (dags / "probe.py").write_text(PROBE_DAG.replace("PARAMS", repr(params)))
    conn = json.dumps({"conn_type": "http", "extra": {"tracking_uri": os.environ["MLFLOW_TRACKING_URI"], "ui_url": UI}})
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", conn)
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", uuid.uuid4().hex * 2)  # the API server signs its tokens with it
    env = os.environ | {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    migrate = subprocess.run([airflow_bin, "db", "migrate"], capture_output=True, text=True, timeout=300, env=env)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    proc = subprocess.run([airflow_bin, "dags", "test", "recsys_plugin_probe"], capture_output=True, text=True, timeout=300, env=env)
    out = proc.stdout + proc.stderr
    assert "state=success" in out, out[-6000:]

    # the promotion happened, attributed to the reviewer
    hook = rm.MlflowHook()
    client = hook.get_client()
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.tags["approved.by"] == "alice"
    run = client.get_run(champion.run_id)
    run_url = f"{UI}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    dag_run_id = run.data.tags[rm.RUN_KEY_TAG].split("__", 1)[1]

    # the API server, as the UI calls it
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    http = TestClient(create_app())
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    headers = {"Authorization": f"Bearer {token}"}
    base = f"/api/v2/dags/recsys_plugin_probe/dagRuns/{dag_run_id}/taskInstances"
    links = {t: http.get(f"{base}/{t}/links", headers=headers).json()["extra_links"] for t in ("validate", "promote", "decide")}
    assert links["validate"] == {"MLflow run": run_url}
    assert links["promote"] == {"MLflow model version": f"{UI}/#/models/{model}/versions/{champion.version}", "MLflow run": run_url}
    assert links["decide"] == {"MLflow run": None}  # the global link: only for the training DAG's tasks
    from airflow import plugins_manager

    (global_link,) = plugins_manager.get_global_operator_extra_links()
    monkeypatch.setattr(type(global_link), "dag_ids", frozenset({"recsys_plugin_probe"}))  # as if this were the training DAG
    redirect = http.get(f"{base}/decide/links", headers=headers).json()["extra_links"]["MLflow run"]
    assert redirect == f"/recsys/mlflow/recsys_plugin_probe/{quote(dag_run_id, safe='')}"
    response = http.get(redirect, cookies={"_token": token}, follow_redirects=False)  # the browser, logged in to Airflow
    assert response.status_code == 307 and response.headers["location"] == run_url

    response = http.get(f"/recsys/mlflow/recsys_plugin_probe/{dag_run_id}", headers=headers, follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == run_url
    response = http.get(f"/recsys/mlflow/recsys_plugin_probe/{dag_run_id}?target=version", cookies={"_token": token}, follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"].endswith(f"/#/models/{model}/versions/{champion.version}")


def test_the_embedded_airflow_database_waits_for_its_write_lock(tmp_path: Path) -> None:
    """A writer that holds SQLite's lock longer than Python's default 5 s no longer fails Airflow's own
    connections with "database is locked" (a UI/API trigger answered HTTP 500 on a busy machine)."""
    import sqlite3
    import threading
    import time

    import recsys_sqlite
    from airflow.settings import _get_connect_args
    from sqlalchemy import create_engine, text

    assert recsys_sqlite.connect_args("postgresql+psycopg2://u@h/db") == {}  # psycopg2 has no `timeout`
    args = _get_connect_args("sync")  # what Airflow's metadata engine is built with in this session (conftest)
    assert args["timeout"] == recsys_sqlite.BUSY_TIMEOUT_S == 60
    db = tmp_path / "metadata.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as a long scheduler transaction holds it
    holder.execute("INSERT INTO t VALUES (1)")
    threading.Timer(6.0, holder.commit).start()
    engine = create_engine(f"sqlite:///{db}", connect_args=dict(args))
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    assert time.monotonic() - started >= 5.0  # it waited past the default instead of failing
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 2
    holder.close()
