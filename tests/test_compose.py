"""The Docker deployment (docker-compose.yml, deploy/Dockerfile, the postgres init script, .env.example),
checked without Docker: the file is parsed and held to the topology contract.

When a Docker Compose v2 CLI is on the machine (`docker compose` or `docker-compose`), `config -q` also
validates the file against the compose specification (no daemon needed); otherwise that test is skipped.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
INIT_SCRIPT = REPO / "deploy" / "postgres-init" / "01-databases.sh"
DOCKERIGNORE = REPO / ".dockerignore"

CONTRACT_SERVICES = {
    "postgres",
    "redis",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
}
AIRFLOW_SERVICES = {s for s in CONTRACT_SERVICES if s.startswith("airflow-")} | {"flower"}
ONE_SHOT = {"airflow-init"}
VOLUMES = {"postgres-data", "mlflow-artifacts", "recsys-home", "airflow-logs"}
DATABASES = ("airflow", "mlflow", "warehouse")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; `$${...}` is an escaped literal
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET_NAME = re.compile(r"(?:^|_)(?:PASSWORD|SECRET|KEY|TOKEN)(?:_|$)", re.IGNORECASE)
URL_PASSWORD = re.compile(r"[a-z0-9+]+://[^/:@\s]+:([^@\s]*)@")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _strings(node):
    """Every string in a parsed YAML tree (keys included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _interpolate(value: str, given: dict[str, str] | None = None) -> str:
    """Compose's interpolation, with every variable unset unless given (defaults used, required -> 'x')."""
    given = given or {}

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in given:
            return given[name]
        if op in (":-", "-"):
            return arg
        return "x"

    return VAR_REF.sub(sub, value).replace("$$", "$")


def _published(service: dict) -> set[tuple[int, int]]:
    """(published, target) pairs of a service's ports, short or long syntax."""
    out = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.add((int(port["published"]), int(port["target"])))
            continue
        parts = _interpolate(str(port)).rsplit(":", 2)
        if len(parts) >= 2:
            out.add((int(parts[-2]), int(parts[-1].split("/")[0])))
    return out


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _compose_vars() -> dict[str, set[str]]:
    """Variable name -> the interpolation operators it is used with ('' for a bare ${VAR})."""
    used: dict[str, set[str]] = {}
    for text in _strings(yaml.safe_load(COMPOSE.read_text())):
        for m in VAR_REF.finditer(text):
            used.setdefault(m.group(1), set()).add(m.group(2) or "")
    return used


# ---------------------------------------------------------------- services, ports, volumes


def test_every_contract_service_exists(services: dict) -> None:
    assert CONTRACT_SERVICES <= set(services), CONTRACT_SERVICES - set(services)


def test_published_ui_ports(services: dict) -> None:
    assert (8080, 8080) in _published(services["airflow-apiserver"])
    assert (5000, 5000) in _published(services["mlflow"])
    # the backing services stay internal
    assert not services["postgres"].get("ports")
    assert not services["redis"].get("ports")


def test_named_volumes(compose: dict, services: dict) -> None:
    assert VOLUMES <= set(compose.get("volumes") or {}), VOLUMES - set(compose.get("volumes") or {})

    def mounts(name: str) -> dict[str, str]:
        out = {}
        for v in services[name].get("volumes") or []:
            if isinstance(v, dict):
                out[v["source"]] = v["target"]
            else:
                src, dst = v.split(":")[:2]
                out[src] = dst
        return out

    assert mounts("postgres")["postgres-data"] == "/var/lib/postgresql/data"
    assert mounts("postgres")["./deploy/postgres-init"] == "/docker-entrypoint-initdb.d"
    assert "mlflow-artifacts" in mounts("mlflow")
    for name in AIRFLOW_SERVICES & set(services):
        m = mounts(name)
        # the project home is shared by ALL Airflow containers: tasks pass files through it
        assert m.get("recsys-home") == _env(services[name])["RECSYS_HOME"], name
        assert "airflow-logs" in m, name


def test_every_long_running_service_has_a_healthcheck(services: dict) -> None:
    for name, svc in services.items():
        if name in ONE_SHOT:
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"{name} has no healthcheck"


def test_healthcheck_commands(services: dict) -> None:
    def joined(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert "pg_isready" in joined("postgres")
    assert "redis-cli ping" in joined("redis")
    assert "http://localhost:5000/health" in joined("mlflow")
    assert "http://localhost:8080/api/v2/monitor/health" in joined("airflow-apiserver")
    assert "http://localhost:8974/health" in joined("airflow-scheduler")
    assert _env(services["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() == "true"
    assert "--job-type DagProcessorJob" in joined("airflow-dag-processor")
    assert "--job-type TriggererJob" in joined("airflow-triggerer")
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        assert "inspect ping" in joined(worker) and "celery@$${HOSTNAME}" in joined(worker), worker


def test_startup_order(services: dict) -> None:
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec["condition"] in allowed, (name, dep)
            if dep == "airflow-init":
                assert spec["condition"] == "service_completed_successfully", name
            elif dep in services and services[dep].get("healthcheck"):
                assert spec["condition"] == "service_healthy", (name, dep)
    for name in AIRFLOW_SERVICES & set(services):
        deps = services[name]["depends_on"]
        assert {"postgres", "redis"} <= set(deps), name
        if name != "airflow-init":
            assert "airflow-init" in deps, name
    assert "postgres" in services["mlflow"]["depends_on"]
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        deps = services[worker]["depends_on"]
        assert {"airflow-apiserver", "mlflow"} <= set(deps), worker  # execution API, tracking server


# ---------------------------------------------------------------- Airflow configuration


def test_airflow_configuration(services: dict) -> None:
    for name in AIRFLOW_SERVICES & set(services):
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/recsys/app/dags", name
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/recsys/app/plugins", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False", name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["RECSYS_HOME"] == "/opt/recsys/home", name
        assert env["RECSYS_WAREHOUSE_URL"].startswith("postgresql+psycopg2://warehouse:"), name
        assert env["RECSYS_WAREHOUSE_URL"].endswith("@postgres:5432/warehouse"), name
        assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1", name
        for var in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "RECSYS_PSEUDONYM_KEY"):
            assert env.get(var), (name, var)


def test_connections(services: dict) -> None:
    env = _env(services["airflow-worker"])
    mlflow_conn = json.loads(_interpolate(env["AIRFLOW_CONN_MLFLOW_DEFAULT"]))
    assert mlflow_conn["conn_type"] == "http"
    assert (mlflow_conn["host"], mlflow_conn["port"]) == ("mlflow", 5000)
    assert mlflow_conn["extra"]["ui_url"] == "http://localhost:5000"
    ui = json.loads(_interpolate(env["AIRFLOW_CONN_MLFLOW_DEFAULT"], {"MLFLOW_UI_URL": "https://mlflow.example.com"}))
    assert ui["extra"]["ui_url"] == "https://mlflow.example.com"
    assert re.fullmatch(r"postgres://warehouse:\$\{[^}]+\}@postgres:5432/warehouse", env["AIRFLOW_CONN_RECSYS_WAREHOUSE"])


def _airflow_config_options() -> set[tuple[str, str]]:
    """(section, option) pairs Airflow and the celery provider know, read from their files (no import)."""
    spec = importlib.util.find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("apache-airflow is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    options = set()
    for section, body in yaml.safe_load((root / "config_templates" / "config.yml").read_text()).items():
        options |= {(section, opt) for opt in (body.get("options") or {})}
    provider = root / "providers" / "celery" / "get_provider_info.py"
    if provider.exists():
        func = next(n for n in ast.parse(provider.read_text()).body if isinstance(n, ast.FunctionDef))
        info = ast.literal_eval(next(n for n in func.body if isinstance(n, ast.Return)).value)
        for section, body in info.get("config", {}).items():
            options |= {(section, opt) for opt in (body.get("options") or {})}
    return options


def test_every_airflow_setting_exists_in_the_installed_airflow(services: dict) -> None:
    known = _airflow_config_options()
    for name, svc in services.items():
        for var in _env(svc):
            if var.startswith("AIRFLOW__"):
                section, _, option = var[len("AIRFLOW__"):].lower().partition("__")
                assert (section, option) in known, f"{name}: {var} is not an Airflow setting"


def test_fab_auth_manager_and_its_users(services: dict) -> None:
    """Every Airflow component runs the FAB auth manager; airflow-init syncs the roles and creates the admin."""
    from deploy.airflow_roles import FAB_AUTH_MANAGER

    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER, name
        assert not any(var.startswith("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER") for var in env), name
    init = services["airflow-init"]
    script = " ".join(_command(init))
    assert "airflow db migrate" in script and "python -m deploy.airflow_roles sync" in script
    assert VAR_REF.fullmatch(_env(init)["_AIRFLOW_ADMIN_PASSWORD"])
    # the init passwords reach only the services that need them
    only = {"_AIRFLOW_ADMIN_PASSWORD": {"airflow-init"}, "MLFLOW_SERVICE_PASSWORD": {"airflow-init"}, "MLFLOW_REVIEWER_PASSWORD": {"airflow-init"}, "MLFLOW_AUTH_ADMIN_PASSWORD": {"airflow-init", "mlflow"}}
    for var, allowed in only.items():
        assert {name for name, svc in services.items() if var in _env(svc)} == allowed, var
    # mlflow must be up before airflow-init creates its accounts
    assert init["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_mlflow_default_carries_the_service_account(services: dict) -> None:
    conn = json.loads(_env(services["airflow-worker"])["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert conn["login"] == "recsys-service" and VAR_REF.fullmatch(conn["password"]).group(1) == "MLFLOW_SERVICE_PASSWORD"
    assert conn["extra"]["readers"] == "recsys-reviewer"


def test_init_script_creates_roles_users_and_accounts(services: dict, tmp_path: Path) -> None:
    """Run airflow-init's script with `airflow` and `python` stubbed: passwords go through stdin or the
    environment, never the command line."""
    cmd = _command(services["airflow-init"])
    assert cmd[:2] == ["bash", "-c"]
    script = cmd[2].replace("$$", "$").replace("cd /opt/recsys/app", "cd " + str(tmp_path))
    env = dict(os.environ, _AIRFLOW_ADMIN_USERNAME="admin", _AIRFLOW_ADMIN_PASSWORD='pa"ss word')
    stub = (
        'airflow() { echo "airflow $*" >> "$CALLS"; }; '
        'python() { echo "python $*" >> "$CALLS"; if [ "$3" = add-user ]; then echo "stdin $(cat)" >> "$CALLS"; fi; }; '
        'export -f airflow python; exec bash -c "$0"'
    )
    calls = tmp_path / "calls"
    r = subprocess.run(["bash", "-c", stub, script], env={**env, "CALLS": str(calls)}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ran = calls.read_text().splitlines()
    assert ran.index("airflow db migrate") < ran.index("python -m deploy.airflow_roles sync")
    assert "python -m deploy.airflow_roles add-user admin --role Admin" in ran
    assert 'stdin pa"ss word' in ran and not any("pa\"ss" in line for line in ran if not line.startswith("stdin"))
    assert "python -m deploy.mlflow_auth accounts" in ran
    assert "airflow connections get mlflow_default -o json" in ran
    assert "airflow connections get recsys_warehouse -o json" in ran


# ---------------------------------------------------------------- workers and queues


def test_default_worker_serves_the_default_queue(services: dict) -> None:
    worker = services["airflow-worker"]
    cmd = _command(worker)
    assert cmd[:3] == ["airflow", "celery", "worker"]
    assert cmd[cmd.index("--queues") + 1] == "default"
    assert not worker.get("profiles")


def test_gpu_worker(services: dict) -> None:
    gpu = services["airflow-worker-gpu"]
    assert gpu.get("profiles") == ["gpu"]
    cmd = _command(gpu)
    assert cmd[:3] == ["airflow", "celery", "worker"]
    assert cmd[cmd.index("--queues") + 1] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count") == 1 for d in devices)
    # the CUDA build of the pinned torch, from PyPI (no CPU index), in an image of its own
    pinned = re.search(r"^torch==([^+\s#]+)\+cpu", (REPO / "requirements.txt").read_text(), re.M).group(1)
    args = gpu["build"]["args"]
    assert args["TORCH_SPEC"] == f"torch=={pinned}"
    assert args["TORCH_INDEX_URL"] == ""
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile"
    assert _interpolate(gpu["image"]) != _interpolate(services["airflow-worker"]["image"])
    # everything else runs without a GPU
    for name, svc in services.items():
        if name != "airflow-worker-gpu":
            assert "deploy" not in svc or "devices" not in str(svc["deploy"]), name


def test_training_dag_routes_gpu_finetuning_to_the_gpu_queue() -> None:
    assert 'queue="gpu"' in (REPO / "dags" / "recsys_training.py").read_text()


def test_flower_is_optional(services: dict) -> None:
    if "flower" in services:
        assert services["flower"].get("profiles") == ["flower"]
        assert (5555, 5555) in _published(services["flower"])


# ---------------------------------------------------------------- MLflow


def test_mlflow_server(services: dict) -> None:
    svc = services["mlflow"]
    cmd = _command(svc)
    assert cmd[:2] == ["mlflow", "server"]
    # basic-auth: users in their own database, the config written from the environment before the server starts
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    env = _env(svc)
    assert env["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert "deploy.mlflow_auth config" in " ".join(svc["entrypoint"]) and 'exec "$$@"' in svc["entrypoint"][2]
    backend = _env(svc).get("MLFLOW_BACKEND_STORE_URI") or cmd[cmd.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql+psycopg2://mlflow:") and backend.endswith("@postgres:5432/mlflow")
    assert "--serve-artifacts" in cmd
    assert cmd[cmd.index("--artifacts-destination") + 1] == "/mlflow/artifacts"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    # MLflow 3 rejects unknown Host headers: the Airflow containers' `mlflow:5000` must be accepted
    hosts = _interpolate(cmd[cmd.index("--allowed-hosts") + 1]).split(",")
    assert "mlflow:5000" in hosts and any(h.startswith("localhost") for h in hosts)


# ---------------------------------------------------------------- secrets and .env.example


def test_no_literal_secret(compose: dict, services: dict) -> None:
    for name, svc in services.items():
        for var, value in _env(svc).items():
            if SECRET_NAME.search(var) and not var.endswith(("_FILE", "_PATH")):
                m = VAR_REF.fullmatch(value)
                assert m, f"{name}: {var} is not a ${{...}} reference"
                assert m.group(2) in (":?", "?"), f"{name}: {var} must be required (${{VAR:?...}}), not defaulted"
    for text in _strings(compose):
        for m in URL_PASSWORD.finditer(text):
            assert VAR_REF.fullmatch(m.group(1)), f"literal password in {text!r}"


def test_env_example_documents_every_variable() -> None:
    used = _compose_vars()
    documented = _env_example()
    assert set(used) == set(documented), {
        "used but not in .env.example": set(used) - set(documented),
        "in .env.example but unused": set(documented) - set(used),
    }
    # every variable has a comment right above it
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#") and "=" in line:
            assert i > 0 and lines[i - 1].startswith("#"), f"{line.split('=')[0]} has no comment"
    # required variables ship empty: a copied .env.example stops compose until they are filled in
    for var, ops in used.items():
        if ops & {":?", "?"}:
            assert documented[var] == "", f"{var} has a value in .env.example"


def test_env_file_is_git_ignored() -> None:
    assert ".env" in (REPO / ".gitignore").read_text().split()
    ignored = DOCKERIGNORE.read_text().split()
    for entry in (".env", ".venv/", ".home/", ".git/"):
        assert entry in ignored, entry


# ---------------------------------------------------------------- PostgreSQL init script


def test_postgres_init_script_creates_the_databases(services: dict, tmp_path: Path) -> None:
    """Run the script with a fake psql that records what it is asked."""
    assert os.access(INIT_SCRIPT, os.X_OK)
    for var in ("AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "WAREHOUSE_DB_PASSWORD", "POSTGRES_PASSWORD"):
        assert var in _env(services["postgres"]), var
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "psql").write_text('#!/usr/bin/env bash\n{ printf "%s\\n" "ARGS $*"; cat; } >> "$LOG"\n')
    (fake / "psql").chmod(0o755)
    log = tmp_path / "log"
    env = {
        "PATH": f"{fake}{os.pathsep}{os.environ.get('PATH', '')}",
        "LOG": str(log),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "AIRFLOW_DB_PASSWORD": "pw-airflow",
        "MLFLOW_DB_PASSWORD": "pw-mlflow",
        "WAREHOUSE_DB_PASSWORD": "pw-warehouse",
    }
    r = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    calls = [line for line in text.splitlines() if line.startswith("ARGS ")]
    assert len(calls) == len(DATABASES) + 1
    for db, call in zip(DATABASES, calls):
        assert f"-v name={db}" in call and f"-v password=pw-{db}" in call and "ON_ERROR_STOP=1" in call
    assert "CREATE DATABASE" in text and "CREATE ROLE" in text
    # the MLflow server's users and permissions: their own database, owned by the mlflow role
    assert "ON_ERROR_STOP=1" in calls[-1] and "CREATE DATABASE mlflow_auth OWNER mlflow" in text
    # passwords go to psql as variables (quoted by psql), never into the SQL text
    assert all("pw-" not in line for line in text.splitlines() if not line.startswith("ARGS"))
    # a missing password stops it before anything is created
    log.unlink()
    r = subprocess.run(["bash", str(INIT_SCRIPT)], env={**env, "MLFLOW_DB_PASSWORD": ""}, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and not log.exists()


# ---------------------------------------------------------------- image


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    pinned = re.search(r"^(torch==\S+)", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert re.search(rf'^ARG TORCH_SPEC="?{re.escape(pinned)}"?$', text, re.M), "TORCH_SPEC default != requirements' torch"
    assert "https://download.pytorch.org/whl/cpu" in text
    assert "-r /tmp/requirements.txt -c /tmp/constraints.txt" in text
    assert "--no-deps" in text and "-e ." in text
    for folder in ("dags", "plugins", "recsys", "deploy"):
        assert re.search(rf"^COPY {folder}/ \./{folder}/$", text, re.M), folder
    assert "WORKDIR /opt/recsys/app" in text
    assert re.search(r"^ARG AIRFLOW_UID=50000$", text, re.M)
    assert re.search(r"^USER \$\{AIRFLOW_UID\}$", text, re.M)
    assert "HF_HUB_OFFLINE=1" in text and "TRANSFORMERS_OFFLINE=1" in text
    assert "curl" in text


# ---------------------------------------------------------------- the compose CLI, where there is one


def _compose_cli() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(cmd[0]):
            continue
        try:
            r = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0 and re.search(r"\bv?2\.\d+", r.stdout):
            return cmd
    return None


def _config_ok(cli: list[str], env_file: Path, *profiles: str) -> tuple[bool, str]:
    """`compose config -q`: fine when it exits 0 and prints nothing but warnings (some wrappers lose the exit code)."""
    cmd = [*cli, "--project-directory", str(REPO), "-f", str(COMPOSE), "--env-file", str(env_file)]
    for profile in profiles:
        cmd += ["--profile", profile]
    # variables of the shell would override the env file
    env = {k: v for k, v in os.environ.items() if k not in _compose_vars()}
    r = subprocess.run([*cmd, "config", "-q"], capture_output=True, text=True, timeout=60, env=env)
    noise = [line for line in r.stderr.splitlines() if line.strip() and not re.match(r"(?i)\s*(WARN|time=.*level=warn)", line)]
    return r.returncode == 0 and not noise, r.stderr


def test_compose_config_is_valid(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI on this machine")
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(f"{k}={v or 'Test0secret0value'}" for k, v in _env_example().items()) + "\n")
    for profiles in ((), ("gpu", "flower")):
        ok, err = _config_ok(cli, env_file, *profiles)
        assert ok, err
    # a .env without the secrets: compose refuses to run
    empty = tmp_path / "empty.env"
    empty.write_text("")
    ok, err = _config_ok(cli, empty)
    assert not ok and "set it in .env" in err
