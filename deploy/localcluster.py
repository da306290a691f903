"""The distributed topology without Docker: the services of `docker-compose.yml`, started from installed packages.

    python -m deploy.localcluster up [--workers 2] [--gpu-worker]    # or: make cluster-up
    python -m deploy.localcluster trigger recsys_training --conf '{"sample_users": 300}' --wait
    python -m deploy.localcluster status | env | down

What runs (each its own process group, logs under `<dir>/logs/`):

| service | here | compose |
|---|---|---|
| PostgreSQL 15 (databases airflow, mlflow, warehouse) | `deploy.postgres_local` | `postgres` |
| Redis (Celery broker) | `redis-server` (Debian package) | `redis` |
| MLflow tracking server on PostgreSQL, artifacts served by it, basic-auth | `mlflow server --app-name basic-auth --serve-artifacts` | `mlflow` |
| Airflow API server (UI, REST, execution API), FAB auth manager | `airflow api-server` | `airflow-apiserver` |
| scheduler, DAG processor, triggerer | `airflow scheduler` / `dag-processor` / `triggerer` | same names |
| Celery workers on queue `default` (and `gpu` with --gpu-worker) | `airflow celery worker` | `airflow-worker`, `airflow-worker-gpu` |

The state lives in `<dir>` (default `$RECSYS_HOME/cluster`): the PostgreSQL data, generated secrets
(mode 0600), `cluster.json` (ports, pids) and `env.sh`, which a shell can source to point the `airflow`,
`mlflow` and `recsys` commands at this cluster.

Who may do what (issue 18): Airflow runs the FAB auth manager with the roles of `deploy.airflow_roles`
(Viewer, Operator, Reviewer, Admin); `up` creates the Airflow user `admin`, and `add-user NAME --role R`
adds people (password generated into `secrets/airflow-users/NAME`). The MLflow server runs MLflow's
basic-auth app (users in the PostgreSQL database `mlflow_auth`, default permission NO_PERMISSIONS) with
three accounts from the secrets: `admin`, the workers' service account `recsys-service` (carried by the
Airflow connection `mlflow_default`; it creates the experiments and models, so it holds MANAGE on them)
and the read-only `recsys-reviewer`, given READ on each experiment and registered model the workers create. Every component shares `$RECSYS_HOME` (run folders, the
data and embedding caches): on several hosts that folder is shared storage.

Also a library: the tests start a `LocalCluster` on free ports, drive it through `AirflowApi`, kill a
worker with `kill_service`, and start another with `start_worker`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from deploy import mlflow_auth
from deploy.mlflow_auth import READER as MLFLOW_READER
from deploy.mlflow_auth import SERVICE as MLFLOW_SERVICE
from deploy.postgres_local import LocalPostgres, PostgresError, free_port

REPO = Path(__file__).resolve().parents[1]
DATABASES = ("airflow", "mlflow", "mlflow_auth", "warehouse")
ADMIN = "admin"
DEFAULT_QUEUE = "default"
GPU_QUEUE = "gpu"


class ClusterError(RuntimeError):
    """A service of the local cluster could not be started, or did not become healthy in time."""


@dataclass(frozen=True)
class ClusterConfig:
    """Where the cluster keeps its state and which ports it listens on (loopback only)."""

    directory: Path
    recsys_home: Path
    postgres_port: int = 15432
    redis_port: int = 16379
    mlflow_port: int = 5000
    api_port: int = 8080
    workers: int = 1
    worker_concurrency: int = 2  # task slots per worker (each a process importing torch: ~1 GB RSS while busy)
    gpu_worker: bool = False
    heartbeat_timeout: int = 60  # seconds without a task heartbeat before the scheduler fails (and retries) it
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def default(cls, **overrides: Any) -> "ClusterConfig":
        home = Path(os.environ.get("RECSYS_HOME") or REPO / ".home").resolve()
        directory = Path(overrides.pop("directory", None) or os.environ.get("RECSYS_CLUSTER_DIR") or home / "cluster").resolve()
        return cls(directory=directory, recsys_home=Path(overrides.pop("recsys_home", home)), **overrides)

    @classmethod
    def free_ports(cls, directory: Path, recsys_home: Path, **overrides: Any) -> "ClusterConfig":
        """A config on ports free right now (tests)."""
        ports = {"postgres_port": free_port(), "redis_port": free_port(), "mlflow_port": free_port(), "api_port": free_port()}
        return cls(directory=directory, recsys_home=recsys_home, **(ports | overrides))


class AirflowApi:
    """A small client of Airflow's REST API (stdlib only): JWT login, JSON calls, waiting."""

    def __init__(self, base: str, username: str | None = None, password: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.username, self.password = username, password
        self.token: str | None = None

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as err:
            if err.code == 401 and self.username and path != "/auth/token":
                self.login()  # tokens expire: log in again once
                return self.call(method, path, body, timeout) if self.token else (401, {})
            return err.code, {"error": err.read().decode(errors="replace")}
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return 0, {}

    def login(self) -> None:
        self.token = None
        status, body = self.call("POST", "/auth/token", {"username": self.username, "password": self.password})
        if status not in (200, 201):
            raise ClusterError(f"login to {self.base} as {self.username!r} failed: HTTP {status} {body}")
        self.token = body["access_token"]

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        status, run = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        if status not in (200, 201):
            raise ClusterError(f"could not trigger {dag_id}: HTTP {status} {run}")
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        status, run = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return run.get("state") if status == 200 else None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        status, body = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")
        return body.get("task_instances", []) if status == 200 else []

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 1800, every: float = 5, progress: Callable[[str], None] | None = None) -> str:
        """Wait until the run ends; returns 'success' or 'failed'. Prints task states as they change."""
        deadline, seen = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            summary = ", ".join(f"{t['task_id']}{'' if t.get('map_index', -1) < 0 else '[' + str(t['map_index']) + ']'}={t.get('state')}" for t in self.task_instances(dag_id, run_id) if t.get("state"))
            if progress and summary != seen:
                progress(f"{dag_id} {run_id} {state}: {summary}")
                seen = summary
            if state in ("success", "failed"):
                return state
            time.sleep(every)
        raise ClusterError(f"{dag_id} run {run_id} did not finish in {timeout:.0f} s")


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    tail = ""
    if log and log.exists():
        tail = "\n--- last lines of " + str(log) + " ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class LocalCluster:
    """Start, inspect and stop the non-Docker topology."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.dir = config.directory
        self.logs = self.dir / "logs"
        self.state_file = self.dir / "cluster.json"
        # generated like every other secret (an existing role's password is reset to it at each start)
        password = self._secret("postgres-password", lambda: secrets.token_urlsafe(18))
        self.postgres = LocalPostgres(data_dir=self.dir / "postgres" / "data", port=config.postgres_port, password=password)

    # ---- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {"services": {}}

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, default=str))
        os.replace(tmp, self.state_file)

    def _secret(self, name: str, make: Callable[[], str]) -> str:
        """A generated secret, kept (mode 0600) so restarts reuse it."""
        path = self.dir / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(make())
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def admin_password(self) -> str:
        return self._secret("admin-password", lambda: secrets.token_urlsafe(18))

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.config.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.config.mlflow_port}"

    @property
    def warehouse_url(self) -> str:
        return self.postgres.url("warehouse")

    def mlflow_password(self, account: str) -> str:
        """The generated password of an MLflow account (admin, recsys-service, recsys-reviewer)."""
        return self._secret(f"mlflow-{account}-password", lambda: secrets.token_urlsafe(18))

    def user_password(self, username: str) -> str:
        """The password `add_user` generated for an Airflow user (admin: `admin_password`)."""
        if username == ADMIN:
            return self.admin_password
        path = self.dir / "secrets" / "airflow-users" / username
        if not path.exists():
            raise ClusterError(f"no Airflow user {username!r} was added to this cluster (add-user)")
        return path.read_text().strip()

    def api(self, username: str = ADMIN) -> AirflowApi:
        """A logged-in REST client as this Airflow user."""
        api = AirflowApi(self.api_url, username, self.user_password(username))
        api.login()
        return api

    def add_user(self, username: str, role: str) -> Path:
        """Create an Airflow user with one role (or reset its role); its password is generated into a secret file."""
        from deploy.airflow_roles import ROLES

        if role not in ROLES:
            raise ClusterError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        if username == ADMIN:
            raise ClusterError("the admin account is managed by `up`")
        self._secret(f"airflow-users/{username}", lambda: secrets.token_urlsafe(18))
        self._airflow_user(username, role, self.user_password(username))
        return self.dir / "secrets" / "airflow-users" / username

    def _airflow_user(self, username: str, role: str, password: str) -> None:
        # the password goes through stdin: argv is readable by every local user (ps)
        done = subprocess.run([sys.executable, "-m", "deploy.airflow_roles", "add-user", username, "--role", role], input=password + "\n", env=os.environ | self.env(), cwd=REPO, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise ClusterError(f"could not add Airflow user {username!r}:\n" + "\n".join((done.stdout + done.stderr).splitlines()[-20:]))

    # ---- environment -------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment every Airflow component, worker and client of this cluster uses."""
        from cryptography.fernet import Fernet

        from deploy.airflow_roles import FAB_AUTH_MANAGER

        c = self.config
        airflow_db = self.postgres.url("airflow")
        # the workers reach MLflow as its service account; what they create is shared read-only with reviewers
        mlflow_conn = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": c.mlflow_port,
            "login": MLFLOW_SERVICE,
            "password": self.mlflow_password(MLFLOW_SERVICE),
            "extra": {"ui_url": self.mlflow_url, "readers": MLFLOW_READER},
        }
        pg = self.postgres
        warehouse_conn = {"conn_type": "postgres", "host": pg.host, "port": pg.port, "login": pg.user, "password": pg.password, "schema": "warehouse"}
        venv_bin = str(Path(sys.executable).parent)
        return {
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
            "RECSYS_HOME": str(c.recsys_home),
            "AIRFLOW_HOME": str(self.dir / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": self._secret("fernet-key", lambda: Fernet.generate_key().decode()),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt-secret", lambda: secrets.token_urlsafe(32)),
            "AIRFLOW__API__SECRET_KEY": self._secret("api-secret-key", lambda: secrets.token_urlsafe(32)),  # FAB's session cookies
            "AIRFLOW__API__PORT": str(c.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{c.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg.url("airflow", driver="postgresql"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(c.worker_concurrency),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(c.heartbeat_timeout),
            "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(mlflow_conn),
            "AIRFLOW_CONN_RECSYS_WAREHOUSE": json.dumps(warehouse_conn),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "RECSYS_WAREHOUSE_URL": self.warehouse_url,
            "RECSYS_PSEUDONYM_KEY": os.environ.get("RECSYS_PSEUDONYM_KEY") or self._secret("pseudonym-key", lambda: secrets.token_urlsafe(32)),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        } | c.extra_env

    def _mlflow_server_env(self) -> dict[str, str]:
        """What only the MLflow server process sees: its auth config and the admin's bootstrap password."""
        ini = self.dir / "secrets" / "mlflow-auth.ini"
        mlflow_auth.write_config(str(ini), self.postgres.url("mlflow_auth"))
        return {
            # = --backend-store-uri, kept off the command line (ps, the service log) since it holds a password
            "MLFLOW_BACKEND_STORE_URI": self.postgres.url("mlflow"),
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.mlflow_password(ADMIN),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secret("mlflow-flask-secret-key", lambda: secrets.token_urlsafe(32)),
        }

    def _mlflow_account(self, username: str, password: str) -> None:
        try:
            mlflow_auth.ensure_account(self.mlflow_url, self.mlflow_password(ADMIN), username, password)
        except RuntimeError as err:
            raise ClusterError(str(err)) from err

    def rotate_mlflow_password(self, account: str = MLFLOW_SERVICE, progress: Callable[[str], None] = print) -> None:
        """A new password for an MLflow account; for the service account the workers are restarted with it.

        The workers are stopped first (Celery's warm shutdown lets running tasks finish), so no task
        holds the old password when the server stops accepting it.
        """
        if account not in (MLFLOW_SERVICE, MLFLOW_READER):
            raise ClusterError(f"rotate one of {MLFLOW_SERVICE}, {MLFLOW_READER} (the admin's password: MLflow's update-password API)")
        services = self._state()["services"]
        workers = {name: svc["argv"][svc["argv"].index("--queues") + 1] for name, svc in services.items() if name.startswith("worker") and self.alive(name)} if account == MLFLOW_SERVICE else {}
        for name in workers:
            progress(f"stopping {name} (running tasks finish first)")
            self.kill_service(name, signal.SIGTERM)
            wait_until(name + " to stop", lambda: not self.alive(name), 3600, 1)
        new = secrets.token_urlsafe(18)
        self._mlflow_account(account, new)
        path = self.dir / "secrets" / f"mlflow-{account}-password"
        path.write_text(new)
        path.chmod(0o600)
        self.write_env_file()
        progress(f"{account}: new password in {path}")
        for name, queues in workers.items():
            progress(f"starting {name}")
            self.start_worker(name, queues)

    def write_env_file(self) -> Path:
        path = self.dir / "env.sh"
        lines = [f"export {k}={_shell_quote(v)}" for k, v in sorted(self.env().items())]
        path.write_text("# source this file to point airflow / mlflow / recsys at the local cluster\n" + "\n".join(lines) + "\n")
        path.chmod(0o600)  # it holds the generated secrets
        return path

    # ---- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("a")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=os.environ | env, cwd=self.dir, start_new_session=True)
        log.close()
        state = self._state()
        state["services"][name] = {"pid": proc.pid, "argv": argv, "log": str(self.logs / f"{name}.log"), "started": time.time()}
        self._save_state(state)
        return proc.pid

    def kill_service(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a service's whole process group (a Celery worker and its task processes die together)."""
        pid = self._state()["services"][name]["pid"]
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass

    def alive(self, name: str) -> bool:
        svc = self._state()["services"].get(name)
        return bool(svc) and _process_alive(svc["pid"])

    def _airflow(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("airflow")), *args]

    def start_worker(self, name: str, queues: str = DEFAULT_QUEUE, concurrency: int | None = None) -> None:
        argv = self._airflow("celery", "worker", "--queues", queues, "--celery-hostname", f"{name}@%h", "--concurrency", str(concurrency or self.config.worker_concurrency))
        self._spawn(name, argv, self.env())
        wait_until(f"worker {name} to be ready", lambda: "ready." in (self.logs / f"{name}.log").read_text(errors="replace").rsplit("=== ", 1)[-1], 180, log=self.logs / f"{name}.log")

    def up(self, progress: Callable[[str], None] = print) -> "LocalCluster":
        """Start every service (idempotent: running ones are left alone) and wait until each is healthy."""
        c = self.config
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # the postgres OS user traverses it to its data directory
        if shutil.which("redis-server") is None:
            raise ClusterError("redis-server not found: install Debian's package (make cluster-deps, or apt-get install redis-server)")
        t0 = time.monotonic()
        state = self._state()
        state["config"] = {k: v for k, v in asdict(c).items() if k not in ("directory", "recsys_home", "extra_env")}
        self._save_state(state)
        progress(f"PostgreSQL on 127.0.0.1:{c.postgres_port}")
        try:
            self.postgres.start()
            for db in DATABASES:
                self.postgres.create_database(db)
        except PostgresError as err:
            raise ClusterError(str(err)) from err
        env = self.env()
        self.write_env_file()
        if not self.alive("redis"):
            progress(f"Redis on 127.0.0.1:{c.redis_port}")
            (self.dir / "redis").mkdir(exist_ok=True)
            self._spawn("redis", ["redis-server", "--port", str(c.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir / "redis")], {})
            wait_until("redis", lambda: "Ready to accept connections" in (self.logs / "redis.log").read_text(errors="replace"), 30, 0.3, self.logs / "redis.log")
        if not self.alive("mlflow"):
            progress(f"MLflow tracking server on {self.mlflow_url} (PostgreSQL backend, artifacts served)")
            artifacts = self.dir / "mlflow-artifacts"
            artifacts.mkdir(exist_ok=True)
            argv = [str(Path(sys.executable).with_name("mlflow")), "server", "--app-name", "basic-auth", "--serve-artifacts", "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(c.mlflow_port), "--workers", "1"]
            self._spawn("mlflow", argv, env | self._mlflow_server_env())
        progress("airflow db migrate (PostgreSQL)")
        done = subprocess.run(self._airflow("db", "migrate"), env=os.environ | env, capture_output=True, text=True, timeout=600)
        (self.logs / "db-migrate.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise ClusterError("airflow db migrate failed:\n" + "\n".join((done.stdout + done.stderr).splitlines()[-30:]))
        progress("Airflow roles (Viewer, Operator, Reviewer, Admin) and the admin user")
        done = subprocess.run([sys.executable, "-m", "deploy.airflow_roles", "sync"], env=os.environ | env, cwd=REPO, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise ClusterError("the roles' sync failed:\n" + "\n".join((done.stdout + done.stderr).splitlines()[-30:]))
        self._airflow_user(ADMIN, "Admin", self.admin_password)
        for name, args in (("api-server", ("api-server",)), ("scheduler", ("scheduler",)), ("dag-processor", ("dag-processor",)), ("triggerer", ("triggerer",))):
            if not self.alive(name):
                progress(f"airflow {name}")
                self._spawn(name, self._airflow(*args), env)
        wait_until("the MLflow server", lambda: _http_ok(self.mlflow_url + "/health"), 120, log=self.logs / "mlflow.log")
        progress(f"MLflow accounts {MLFLOW_SERVICE} (the workers) and {MLFLOW_READER} (read-only)")
        for account in (MLFLOW_SERVICE, MLFLOW_READER):
            self._mlflow_account(account, self.mlflow_password(account))
        wait_until("the Airflow API server", lambda: _http_ok(self.api_url + "/api/v2/monitor/health"), 240, 2, self.logs / "api-server.log")
        workers = [(f"worker-{i + 1}", DEFAULT_QUEUE) for i in range(c.workers)] + ([("worker-gpu", GPU_QUEUE)] if c.gpu_worker else [])
        for name, queue in workers:
            if not self.alive(name):
                progress(f"Celery worker {name} (queue {queue})")
                self.start_worker(name, queue)
        api = self.api()
        wait_until("the scheduler to report healthy", lambda: api.call("GET", "/api/v2/monitor/health")[1].get("scheduler", {}).get("status") == "healthy", 120, 2, self.logs / "scheduler.log")
        wait_until("the DAGs to be parsed", lambda: api.call("GET", "/api/v2/dags/recsys_training")[0] == 200, 240, 3, self.logs / "dag-processor.log")
        progress(
            f"up in {time.monotonic() - t0:.0f} s — Airflow UI {self.api_url} (user {ADMIN}, password in {self.dir / 'secrets' / 'admin-password'}), "
            f"MLflow UI {self.mlflow_url} (user {MLFLOW_READER} to review, password in {self.dir / 'secrets' / f'mlflow-{MLFLOW_READER}-password'}); "
            f"`source {self.dir / 'env.sh'}` for the CLIs; add people with `python -m deploy.localcluster add-user NAME --role Reviewer`"
        )
        return self

    def down(self, progress: Callable[[str], None] = print) -> None:
        """Stop every service (workers first), then PostgreSQL. The state on disk is kept."""
        state = self._state()
        order = sorted(state["services"], key=lambda n: (not n.startswith("worker"), n in ("redis", "mlflow", "api-server")))
        for name in order:
            svc = state["services"][name]
            if _process_alive(svc["pid"]):
                progress(f"stopping {name}")
                try:
                    os.killpg(svc["pid"], signal.SIGTERM)
                except ProcessLookupError:
                    continue
                try:
                    wait_until(name + " to stop", lambda: not _process_alive(svc["pid"]), 30, 0.5)
                except ClusterError:
                    os.killpg(svc["pid"], signal.SIGKILL)
        state["services"] = {}
        self._save_state(state)
        if self.postgres.data_dir.exists():
            progress("stopping PostgreSQL")
            self.postgres.stop()

    def status(self) -> dict[str, Any]:
        services = {name: ("running" if _process_alive(svc["pid"]) else "stopped") for name, svc in self._state()["services"].items()}
        return {
            "postgres": "running" if self.postgres.data_dir.exists() and self.postgres.running() else "stopped",
            **services,
            "airflow_ui": self.api_url,
            "mlflow_ui": self.mlflow_url,
            "config": {k: str(v) for k, v in asdict(self.config).items() if k != "extra_env"},
        }


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.localcluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start every service and wait until healthy")
    up.add_argument("--workers", type=int, default=1, help="Celery workers on the default queue")
    up.add_argument("--concurrency", type=int, default=2, help="task slots per worker")
    up.add_argument("--gpu-worker", action="store_true", help="also a worker on the 'gpu' queue (this machine's CPU stands in for a GPU node)")
    up.add_argument("--api-port", type=int, default=int(os.environ.get("RECSYS_CLUSTER_API_PORT", 8080)))
    up.add_argument("--mlflow-port", type=int, default=int(os.environ.get("RECSYS_CLUSTER_MLFLOW_PORT", 5000)))
    up.add_argument("--postgres-port", type=int, default=int(os.environ.get("RECSYS_CLUSTER_POSTGRES_PORT", 15432)))
    up.add_argument("--redis-port", type=int, default=int(os.environ.get("RECSYS_CLUSTER_REDIS_PORT", 16379)))
    sub.add_parser("down", help="stop every service (state is kept)")
    sub.add_parser("status", help="what runs, and where")
    sub.add_parser("env", help="print the path of env.sh (source it to use the CLIs against the cluster)")
    add = sub.add_parser("add-user", help="add an Airflow user with one role (password generated into secrets/airflow-users/NAME)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=("Viewer", "Operator", "Reviewer", "Admin"))
    rot = sub.add_parser("rotate-mlflow-password", help="a new password for an MLflow account (the workers restart with it)")
    rot.add_argument("--account", default=MLFLOW_SERVICE, choices=(MLFLOW_SERVICE, MLFLOW_READER))
    trig = sub.add_parser("trigger", help="trigger a DAG run through the REST API")
    trig.add_argument("dag_id")
    trig.add_argument("--conf", default="{}", help="the run's conf (JSON)")
    trig.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeds")
    trig.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)

    if args.command == "up":
        config = ClusterConfig.default(
            workers=args.workers, worker_concurrency=args.concurrency, gpu_worker=args.gpu_worker, api_port=args.api_port, mlflow_port=args.mlflow_port, postgres_port=args.postgres_port, redis_port=args.redis_port
        )
        LocalCluster(config).up()
        return 0
    cluster = _existing()
    if args.command == "down":
        cluster.down()
    elif args.command == "status":
        print(json.dumps(cluster.status(), indent=2))
    elif args.command == "env":
        print(cluster.write_env_file())
    elif args.command == "add-user":
        print(f"user {args.username} ({args.role}): password in {cluster.add_user(args.username, args.role)}")
    elif args.command == "rotate-mlflow-password":
        cluster.rotate_mlflow_password(args.account)
    elif args.command == "trigger":
        api = cluster.api()
        run_id = api.trigger(args.dag_id, json.loads(args.conf))
        print(f"triggered {args.dag_id} run {run_id}: {cluster.api_url}/dags/{args.dag_id}/runs/{run_id}")
        if args.wait:
            state = api.wait_for_run(args.dag_id, run_id, timeout=args.timeout, progress=lambda line: print(time.strftime("%H:%M:%S"), line, flush=True))
            print(f"{args.dag_id} {run_id}: {state}")
            return 0 if state == "success" else 1
    return 0


def _existing() -> LocalCluster:
    """The cluster recorded under the default directory, with the ports it was started on."""
    config = ClusterConfig.default()
    state_file = config.directory / "cluster.json"
    if state_file.exists():
        saved = json.loads(state_file.read_text()).get("config")
        if saved:
            config = ClusterConfig.default(**{k: v for k, v in saved.items() if k not in ("directory", "recsys_home")})
    return LocalCluster(config)


if __name__ == "__main__":
    sys.exit(main())
