"""Airflow glue for MLflow: a hook, the validate and promote operators, and one-click links to MLflow.

- `MlflowHook` resolves the tracking server from the Airflow connection `mlflow_default` (else
  $MLFLOW_TRACKING_URI, else the embedded SQLite store), hands out an `MlflowClient`, and knows the
  URL a browser uses for the MLflow UI (connection extra `ui_url`).
- `warehouse_url()` resolves the warehouse from the connection `recsys_warehouse` (else
  $RECSYS_WAREHOUSE_URL, else None: the embedded default).
- `run_inputs()` builds a task's (PipelineConfig, RunContext) with both: every task of the training
  DAG resolves them the same way.
- `ValidationGateOperator` / `PromotionOperator` run `recsys.stages.pipeline.validate` and
  `recsys.stages.promotion.promote` and carry the extra links "MLflow run" and "MLflow model version".
- `RecsysMlflowPlugin` registers the links, a global "MLflow run" link on every task of the training
  DAG, a small FastAPI app under /recsys (redirects to and a summary of a DAG run's MLflow run) and
  an "MLflow" tab on the DAG run page.

Airflow imports this module in every component: nothing heavy (mlflow, fastapi, recsys.stages.pipeline)
is imported at module level.
"""

from __future__ import annotations

import html
import logging
import os
import re
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseHook, BaseOperator, BaseOperatorLink

if TYPE_CHECKING:
    from fastapi import FastAPI
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from recsys.config import PipelineConfig
    from recsys.run import RunContext

log = logging.getLogger(__name__)

MLFLOW_CONN_ID = "mlflow_default"
WAREHOUSE_CONN_ID = "recsys_warehouse"
UI_URL_ENV = "RECSYS_MLFLOW_UI_URL"  # the MLflow UI when no connection says it (embedded: `make mlflow-ui`)
RUN_KEY_TAG = "recsys.run_key"  # = recsys.tracking.RUN_KEY_TAG (not imported here: that module imports mlflow)
URL_PREFIX = "/recsys"  # where the plugin's FastAPI app is mounted in the API server
LINKED_DAGS = frozenset({"recsys_training"})  # DAGs whose runs are MLflow runs: their tasks get the global link


def run_key(dag_id: str, run_id: str) -> str:
    """The key that names a DAG run's run folder and tags its MLflow run (`recsys.run_key`)."""
    return f"{dag_id}__{run_id}"


def _optional_connection(conn_id: str | None):
    """The Airflow connection, or None where it is not defined (the embedded mode defines none)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    if not conn_id:
        return None
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class MlflowHook(BaseHook):
    """The MLflow tracking server (and model registry) of an Airflow connection.

    Connection (type http): host, port, optional schema `https`; login/password = basic auth.
    Extras: `tracking_uri` (any URI MLflow accepts, e.g. sqlite:///...; wins over host/port),
    `ui_url` (the MLflow UI as a browser reaches it), `path` (a path prefix of the server),
    `readers` (MLflow accounts, comma-separated, given READ on the experiments and registered models
    the workflow creates on a server with basic-auth).
    Without the connection: $MLFLOW_TRACKING_URI, else the embedded store under the project home.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = MLFLOW_CONN_ID
    conn_type = "http"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str | None = MLFLOW_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self._connection: Any = None
        self._looked_up = False

    @property
    def connection(self):
        """The Airflow connection, or None when it is not defined (looked up once)."""
        if not self._looked_up:
            self._connection = _optional_connection(self.mlflow_conn_id)
            self._looked_up = True
        return self._connection

    @property
    def extras(self) -> dict[str, Any]:
        return self.connection.extra_dejson if self.connection is not None else {}

    def get_tracking_uri(self) -> str:
        conn = self.connection
        if conn is not None:
            if self.extras.get("tracking_uri"):
                return str(self.extras["tracking_uri"])
            if conn.host:
                return self._http_uri(conn)
        from recsys.paths import resolve_tracking_uri

        return resolve_tracking_uri()  # $MLFLOW_TRACKING_URI, else the embedded store

    def _http_uri(self, conn) -> str:
        host = conn.host.strip()
        schema = (conn.schema or "").strip()
        if "://" in host:
            scheme, host = host.split("://", 1)
        elif schema.lower() in ("http", "https"):
            scheme = schema.lower()
        else:
            scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
        path = str(self.extras.get("path") or ("" if schema.lower() in ("http", "https") else schema)).strip("/")
        netloc, _, host_path = host.partition("/")
        if conn.port and urlsplit(f"//{netloc}").port is None:
            netloc = f"{netloc}:{conn.port}"
        parts = [p for p in (host_path.strip("/"), path) if p]
        return f"{scheme}://{netloc}" + ("/" + "/".join(parts) if parts else "")

    def credentials(self) -> dict[str, str]:
        """The environment MLflow's client reads its HTTP credentials from (empty without any)."""
        conn = self.connection
        env: dict[str, str] = {}
        if conn is not None and conn.login:
            env["MLFLOW_TRACKING_USERNAME"] = conn.login
            env["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
        if self.extras.get("token"):
            env["MLFLOW_TRACKING_TOKEN"] = str(self.extras["token"])
        return env

    def export_credentials(self) -> None:
        """Put the credentials where every MLflow client of this process finds them (recsys code included)."""
        os.environ.update(self.credentials())
        if self.extras.get("readers"):
            from recsys.tracking import READERS_ENV

            os.environ[READERS_ENV] = str(self.extras["readers"])

    def get_client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        self.export_credentials()
        uri = self.get_tracking_uri()
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_client().search_experiments(max_results=1)
        except Exception as err:  # the UI's "Test" button shows the message
            return False, str(err)
        return True, f"MLflow at {_strip_userinfo(self.get_tracking_uri())} answered"

    def ui_url(self) -> str | None:
        """The MLflow UI's base URL for a browser: extra `ui_url`, else $RECSYS_MLFLOW_UI_URL, else the
        tracking URI when it is http(s); None for a database or file store (then no links)."""
        chosen = self.extras.get("ui_url") or os.environ.get(UI_URL_ENV)
        if not chosen:
            uri = self.get_tracking_uri()
            chosen = _strip_userinfo(uri) if uri.startswith(("http://", "https://")) else None
        return str(chosen).rstrip("/") if chosen else None

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str | None:
        ui = self.ui_url()
        if not ui:
            return None
        if experiment_id is None:
            experiment_id = self.get_client().get_run(run_id).info.experiment_id
        return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: str | int) -> str | None:
        ui = self.ui_url()
        return f"{ui}/#/models/{quote(name, safe='')}/versions/{version}" if ui else None

    def find_run(self, key: str) -> Run | None:
        """The MLflow run tagged `recsys.run_key = key` in any active experiment (the newest one)."""
        from recsys.tracking import find_run_by_key

        return find_run_by_key(self.get_client(), key)

    def registered_version(self, run: Run) -> tuple[str, str] | None:
        """(model name, version) registered from this run: the registry's record, else the run's
        `registered_version` tag with its `model_name` param."""
        versions = self.get_client().search_model_versions(f"run_id = '{run.info.run_id}'")
        if versions:
            newest = max(versions, key=lambda v: int(v.version))
            return newest.name, str(newest.version)
        tag, name = run.data.tags.get("registered_version"), run.data.params.get("model_name")
        return (name, str(tag)) if tag and name else None


def warehouse_url(conn_id: str | None = WAREHOUSE_CONN_ID) -> str | None:
    """The warehouse's SQLAlchemy URL: the Airflow connection (postgres:// becomes
    postgresql+psycopg2://; extra `sqlalchemy_url` wins), else $RECSYS_WAREHOUSE_URL, else None
    (callers then use the embedded default)."""
    conn = _optional_connection(conn_id)
    if conn is not None:
        explicit = conn.extra_dejson.get("sqlalchemy_url")
        if explicit:
            return str(explicit)
        uri = conn.get_uri()
        for prefix in ("postgres://", "postgresql://"):
            if uri.startswith(prefix):
                return "postgresql+psycopg2://" + uri[len(prefix) :]
        return uri
    from recsys.paths import configured_warehouse_url

    return configured_warehouse_url()


def run_inputs(
    context: Any = None, mlflow_conn_id: str | None = MLFLOW_CONN_ID, warehouse_conn_id: str | None = WAREHOUSE_CONN_ID, mlflow_run_id: str | None = None
) -> tuple[PipelineConfig, RunContext]:
    """The typed config and the run context of the current DAG run, with the MLflow server and the
    warehouse taken from the Airflow connections (inside a task; `context` defaults to the current one),
    logging to `mlflow_run_id` (the run `validate` opened) when given."""
    from recsys.config import PipelineConfig
    from recsys.run import RunContext

    if context is None:
        from airflow.sdk import get_current_context

        context = get_current_context()
    dag_run = context["dag_run"]
    cfg = PipelineConfig.from_params(dict(context["params"]))
    when = dag_run.logical_date or dag_run.run_after
    hook = MlflowHook(mlflow_conn_id)
    hook.export_credentials()  # the recsys code opens its own MLflow clients
    ctx = RunContext.create(
        run_key=run_key(dag_run.dag_id, dag_run.run_id),
        logical_date=when.isoformat(),
        tracking_uri=hook.get_tracking_uri(),
        warehouse_url=warehouse_url(warehouse_conn_id),
        mlflow_run_id=mlflow_run_id,
    )
    return cfg, ctx


# --- failures: input errors are not retried, and a failed DAG run fails its MLflow run

INPUT_ERRORS = ("recsys.errors.DataValidationError", "recsys.errors.InputError")  # dotted: resolved when a task fails


def no_retry_on_bad_input():
    """An Airflow retry policy (`retry_policy`, e.g. in a DAG's default_args): a task that raises
    `DataValidationError` or `InputError` fails at once instead of being retried — bad input fails the
    same way again. Everything else keeps the task's `retries`. (Built on call: creating the rules
    imports `recsys.errors`, which this module must not do when Airflow loads it.)"""
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    rule = RetryRule(exception=list(INPUT_ERRORS), action=RetryAction.FAIL, reason="bad input: a retry would fail the same way")
    return ExceptionRetryPolicy(rules=[rule])


_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")  # scheme://user:password@


def _scrub(text: str) -> str:
    """`text` with the secrets Airflow knows of masked and credentials in URLs removed."""
    try:
        from airflow.sdk._shared.secrets_masker import redact

        text = str(redact(text))
    except Exception:  # the masker is Airflow-internal: its absence must not cost the record
        pass
    return _URL_USERINFO.sub(r"\1***@", text)


def failure_of(exception: BaseException | None) -> tuple[str, str | None]:
    """(reason, error class) of a task's failure: the message only, never a traceback. An
    `AirflowFailException` raised `from` the real error names that error."""
    if exception is None:
        return ("the task failed without an error in its own process (killed, timed out, or marked failed from outside): see its log", None)
    from airflow.sdk.exceptions import AirflowFailException

    shown = exception.__cause__ if isinstance(exception, AirflowFailException) and exception.__cause__ is not None else exception
    message = str(exception) or str(shown) or type(shown).__name__
    return _scrub(message), type(shown).__name__


def _dag_run_key(context: Any) -> str:
    """The run key of the context's DAG run, as `run_inputs` builds it."""
    dag_run = context.get("dag_run")
    if dag_run is not None:
        return run_key(dag_run.dag_id, dag_run.run_id)
    return run_key(context["dag"].dag_id, context["run_id"])  # a DAG callback's minimal context


def _task_label(ti: Any) -> str:
    index = getattr(ti, "map_index", -1)
    return f"{ti.task_id}[{index}]" if index is not None and index >= 0 else ti.task_id


def _fail_mlflow_run(key: str, reason: str, task_id: str | None, error: str | None, mlflow_conn_id: str | None) -> str | None:
    from recsys.tracking import fail_run_by_key

    status = fail_run_by_key(MlflowHook(mlflow_conn_id).get_client(), key, reason, task_id, error)
    if status is not None:
        log.info("failure of %s reported to the MLflow run of %s (status now %s)", task_id or "the DAG run", key, status)
    return status


def mark_mlflow_run_failed(context: Any, mlflow_conn_id: str | None = MLFLOW_CONN_ID) -> None:
    """Task `on_failure_callback` (put it in the DAG's default_args): the DAG run's MLflow run (found by
    its `recsys.run_key` tag) ends FAILED with `failure.task` and `failure.reason` (the error's message,
    trimmed, secrets masked). See `recsys.tracking.fail_run` for what an already ended run keeps.

    Airflow calls it only when the task failed for good: in the task's process after its last try
    (an attempt that will be retried calls `on_retry_callback` instead), or in the DAG processor when
    the task's process died. Never raises: a failure here is logged, the task's own failure stands.
    """
    try:
        reason, error = failure_of(context.get("exception"))
        ti = context.get("ti") or context.get("task_instance")
        _fail_mlflow_run(_dag_run_key(context), reason, _task_label(ti) if ti is not None else None, error, mlflow_conn_id)
    except Exception:
        log.warning("could not mark the DAG run's MLflow run FAILED", exc_info=True)


def mark_mlflow_run_failed_on_dag_failure(context: Any, mlflow_conn_id: str | None = MLFLOW_CONN_ID) -> None:
    """DAG `on_failure_callback`: the backstop for failures no task reported (a DAG run timeout, a
    task marked failed by hand). Ends a still running MLflow run FAILED; the reason (the DAG run's,
    e.g. `task_failure`) is written only where no task recorded its own. Never raises."""
    try:
        _fail_mlflow_run(_dag_run_key(context), _scrub(f"the DAG run failed: {context.get('reason') or 'no reason given'}"), None, None, mlflow_conn_id)
    except Exception:
        log.warning("could not mark the DAG run's MLflow run FAILED", exc_info=True)


# --- extra links. Airflow 3.3: when a task ends, the worker's task runner (`finalize`) calls each of
# the operator's links and stores the URL in XCom under `_link_<class name>`; the API server reads it
# back from there. Links registered by a plugin for an operator class take precedence on the API
# server, which calls them with the serialized operator: they then read the stored XCom themselves.

_LINKS_ATTR = "_recsys_mlflow_links"


class _StoredLink(BaseOperatorLink):
    key = ""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        links = getattr(operator, _LINKS_ATTR, None)
        if links is not None:  # the worker, after execute() recorded the URLs
            return links.get(self.key, "")
        if isinstance(operator, BaseOperator):  # the worker, the task never got that far
            return ""
        # the API server (a serialized operator): what the worker stored
        from airflow.serialization.definitions.operatorlink import XComOperatorLink

        return XComOperatorLink(name=self.name, xcom_key=self.xcom_key).get_link(operator, ti_key=ti_key)


class MlflowRunLink(_StoredLink):
    """The task's MLflow run (also after a validation failure: the run holds the report)."""

    name = "MLflow run"
    key = "run"


class MlflowModelVersionLink(_StoredLink):
    """The registered model version the task promoted."""

    name = "MLflow model version"
    key = "version"


def _api_root() -> str:
    """The API server's path prefix ([api] base_url), '' at the root."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class MlflowDagRunLink(BaseOperatorLink):
    """Global link on every task of the linked DAGs: the plugin's redirect to the DAG run's MLflow
    run. Computed by the API server from the task instance key alone (global links are not stored)."""

    name = "MLflow run"
    dag_ids = LINKED_DAGS

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if ti_key.dag_id not in self.dag_ids:
            return ""  # an empty link is not shown
        return f"{_api_root()}{URL_PREFIX}/mlflow/{quote(ti_key.dag_id, safe='')}/{quote(ti_key.run_id, safe='')}"


class _MlflowLinks:
    """Records the MLflow URLs of a run on the operator for its links (never fails the task)."""

    def _remember_links(self, hook: MlflowHook, *, mlflow_run_id: str | None = None, key: str | None = None, model: tuple[str, str] | None = None) -> None:
        links: dict[str, str] = {}
        try:
            if hook.ui_url():
                if mlflow_run_id is None and key is not None:
                    run = hook.find_run(key)
                    mlflow_run_id, experiment_id = (run.info.run_id, run.info.experiment_id) if run else (None, None)
                else:
                    experiment_id = None
                if mlflow_run_id:
                    links["run"] = hook.run_url(mlflow_run_id, experiment_id) or ""
                if model:
                    links["version"] = hook.model_version_url(*model) or ""
        except Exception:  # a link is a convenience: the task's result stands without it
            log.warning("could not resolve the MLflow links", exc_info=True)
        setattr(self, _LINKS_ATTR, links)


class ValidationGateOperator(_MlflowLinks, BaseOperator):
    """The training DAG's first task: read the data set and run the validation gate
    (`recsys.stages.pipeline.validate`). Bad data or an unusable input setting (`DataValidationError`,
    `InputError`) fails the task without retries (`AirflowFailException`); returns the same dict as
    the pipeline stage (with `mlflow_run_id`)."""

    template_fields = ("mlflow_conn_id", "warehouse_conn_id")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#d9ecf2"

    def __init__(self, *, mlflow_conn_id: str = MLFLOW_CONN_ID, warehouse_conn_id: str = WAREHOUSE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from recsys.stages import pipeline
        from recsys.errors import DataValidationError, InputError

        try:
            cfg, ctx = run_inputs(context, self.mlflow_conn_id, self.warehouse_conn_id)
        except InputError as err:  # a Param that cannot work: no run exists yet
            raise AirflowFailException(str(err)) from err
        hook = MlflowHook(self.mlflow_conn_id)
        try:
            result = pipeline.validate(cfg, ctx)
        except (DataValidationError, InputError) as err:
            self._remember_links(hook, key=ctx.run_key)  # the failed run holds the validation report
            raise AirflowFailException(str(err)) from err  # bad input: a retry would fail the same way
        except Exception:
            self._remember_links(hook, key=ctx.run_key)
            raise
        self._remember_links(hook, mlflow_run_id=result["mlflow_run_id"])
        return result


class PromotionOperator(_MlflowLinks, BaseOperator):
    """Move the `champion` alias to the version the gate accepted (`recsys.stages.promotion.promote`).

    The MLflow run comes from the return value of `validate_task_id`; the reviewer (if any) from the
    XCom `review` of `review_task_id`. Runs after a branch: trigger rule none_failed_min_one_success
    unless the caller sets another."""

    template_fields = ("mlflow_conn_id", "warehouse_conn_id")
    operator_extra_links = (MlflowRunLink(), MlflowModelVersionLink())
    ui_color = "#dff2d9"

    def __init__(
        self,
        *,
        validate_task_id: str = "validate",
        review_task_id: str | None = "review",
        mlflow_conn_id: str = MLFLOW_CONN_ID,
        warehouse_conn_id: str = WAREHOUSE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "none_failed_min_one_success")
        super().__init__(**kwargs)
        self.validate_task_id = validate_task_id
        self.review_task_id = review_task_id
        self.mlflow_conn_id = mlflow_conn_id
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from recsys.stages import promotion

        ti = context["ti"]
        validated = ti.xcom_pull(task_ids=self.validate_task_id)
        if not isinstance(validated, dict) or not validated.get("mlflow_run_id"):
            raise AirflowFailException(f"task {self.validate_task_id!r} returned no mlflow_run_id: {validated!r}")
        answer = ti.xcom_pull(task_ids=self.review_task_id, key="review") if self.review_task_id else None
        cfg, run = run_inputs(context, self.mlflow_conn_id, self.warehouse_conn_id, validated["mlflow_run_id"])
        hook = MlflowHook(self.mlflow_conn_id)
        try:
            result = promotion.promote(cfg, run, approved_by=answer["by"] if answer else None)
        except Exception:
            self._remember_links(hook, mlflow_run_id=validated["mlflow_run_id"])
            raise
        self._remember_links(hook, mlflow_run_id=validated["mlflow_run_id"], model=(result["model_name"], str(result["version"])))
        return result


MlflowRunLink.operators = [ValidationGateOperator, PromotionOperator]
MlflowModelVersionLink.operators = [PromotionOperator]


# --- the API server side: redirects to MLflow and a summary tab on the DAG run page

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>MLflow</title><style>
body{{font-family:system-ui,sans-serif;font-size:14px;margin:16px;color:#222}}
table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{padding:2px 12px 2px 0;text-align:left;vertical-align:top}}
th{{color:#666;font-weight:normal}}code{{font-size:13px}}.hint{{color:#666;font-size:12px}}
</style></head><body>{body}</body></html>"""


def _summary_html(hook: MlflowHook, key: str, mlflow_conn_id: str | None) -> str:
    esc = html.escape
    run = hook.find_run(key)
    if run is None:
        return f"<p>No MLflow run is tagged <code>{RUN_KEY_TAG} = {esc(key)}</code> (yet): a training run creates it in its validate task.</p>"
    info, data = run.info, run.data
    client = hook.get_client()
    experiment = client.get_experiment(info.experiment_id)
    rows = [
        ("run", f"{esc(info.run_name or info.run_id)} <code>{esc(info.run_id)}</code>"),
        ("experiment", esc(experiment.name)),
        ("status", esc(info.status)),
        ("data set", esc(data.tags.get("dataset", ""))),
        ("validation", esc(data.tags.get("validation", ""))),
        ("gate decision", esc(data.tags.get("decision", ""))),
    ]
    links = []
    run_url = hook.run_url(info.run_id, info.experiment_id)
    if run_url:
        links.append(f'<a href="{esc(run_url)}">MLflow run</a>')
    found = hook.registered_version(run)
    if found:
        name, version = found
        aliases = ", ".join(client.get_model_version(name, version).aliases) or "no alias"
        rows.append(("model version", f"{esc(name)} v{esc(version)} ({esc(aliases)})"))
        version_url = hook.model_version_url(name, version)
        if version_url:
            links.append(f'<a href="{esc(version_url)}">MLflow model version</a>')
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows if v)
    metrics = sorted(data.metrics.items())[:80]
    metric_rows = "".join(f"<tr><th>{esc(k)}</th><td>{v:.4g}</td></tr>" for k, v in metrics)
    if links:
        hint = '<p class="hint">Links open MLflow in this tab when its server allows framing (<code>mlflow server --x-frame-options NONE</code>); otherwise open them in a new tab, or use the task\'s "MLflow run" link.</p>'
        link_html = "<p>" + " · ".join(links) + "</p>" + hint
    else:
        link_html = f'<p class="hint">No MLflow UI URL: set the extra <code>ui_url</code> on the connection <code>{esc(str(mlflow_conn_id))}</code> (or ${UI_URL_ENV}).</p>'
    return f"<h3>MLflow run of this DAG run</h3>{link_html}<table>{table}</table><h4>Metrics</h4><table>{metric_rows or '<tr><td>none yet</td></tr>'}</table>"


def create_app(*, mlflow_conn_id: str | None = MLFLOW_CONN_ID, require_auth: bool = True) -> FastAPI:
    """The plugin's FastAPI app (mounted at /recsys in the API server).

    GET /mlflow/{dag_id}/{run_id}[?target=run|version] — 307 to the DAG run's MLflow run (or the
    model version it registered) in the MLflow UI; 404 when there is none.
    GET /panel/{dag_id}/{run_id} — an HTML summary of that MLflow run (the DAG run page's MLflow tab).
    With `require_auth`, Airflow's own check applies: a logged-in user who may read the DAG's runs.
    """
    from typing import Literal

    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, RedirectResponse

    dependencies = []
    if require_auth:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
        from airflow.api_fastapi.core_api.security import requires_access_dag

        dependencies.append(Depends(requires_access_dag("GET", DagAccessEntity.RUN)))
    app = FastAPI(title="recsys MLflow links", dependencies=dependencies, docs_url=None, redoc_url=None, openapi_url=None)

    def _lookup(hook: MlflowHook, key: str) -> Run:
        try:
            run = hook.find_run(key)
        except ValueError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err
        except Exception as err:  # MLflow down or refusing
            raise HTTPException(status_code=502, detail=f"MLflow did not answer: {err}") from err
        if run is None:
            raise HTTPException(
                status_code=404,
                detail=f"no MLflow run is tagged {RUN_KEY_TAG}={key!r}: the DAG run has not reached its validate task, or it is not a recsys training run",
            )
        return run

    @app.get("/mlflow/{dag_id}/{run_id:path}")
    def open_in_mlflow(dag_id: str, run_id: str, target: Literal["run", "version"] = "run") -> RedirectResponse:
        hook = MlflowHook(mlflow_conn_id)
        if not hook.ui_url():
            raise HTTPException(
                status_code=503,
                detail=f"no MLflow UI URL is configured: set the extra 'ui_url' on the Airflow connection {mlflow_conn_id!r} (or ${UI_URL_ENV})",
            )
        key = run_key(dag_id, run_id)
        run = _lookup(hook, key)
        if target == "version":
            found = hook.registered_version(run)
            if found is None:
                raise HTTPException(status_code=404, detail=f"the MLflow run {run.info.run_id} ({RUN_KEY_TAG}={key!r}) has registered no model version (yet): its package task does")
            url = hook.model_version_url(*found)
        else:
            url = hook.run_url(run.info.run_id, run.info.experiment_id)
        return RedirectResponse(url, status_code=307)

    @app.get("/panel/{dag_id}/{run_id:path}", response_class=HTMLResponse)
    def panel(dag_id: str, run_id: str) -> HTMLResponse:
        hook = MlflowHook(mlflow_conn_id)
        try:
            body = _summary_html(hook, run_key(dag_id, run_id), mlflow_conn_id)
        except Exception as err:
            body = f"<p>MLflow did not answer: {html.escape(str(err))}</p>"
        return HTMLResponse(_PAGE.format(body=body))

    return app


@cache
def _plugin_app() -> FastAPI:
    return create_app()


class RecsysMlflowPlugin(AirflowPlugin):
    name = "recsys_mlflow"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink()]
    global_operator_extra_links = [MlflowDagRunLink()]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # built on first use: only the API server needs it
        return [{"app": _plugin_app(), "url_prefix": URL_PREFIX, "name": "recsys MLflow links"}]

    @property
    def external_views(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "MLflow",
                "href": f"{_api_root()}{URL_PREFIX}/panel/{{DAG_ID}}/{{RUN_ID}}",  # the UI fills in {DAG_ID} and {RUN_ID}
                "destination": "dag_run",
                "url_route": "recsys-mlflow",
            }
        ]
