"""MLflow's basic-auth app for this workflow: its config file and the accounts, in both topologies.

    python -m deploy.mlflow_auth config PATH     # the server's auth config ($MLFLOW_AUTH_DATABASE_URI)
    python -m deploy.mlflow_auth accounts        # create / re-password the service and reviewer accounts

The server's users live in their own database (`mlflow_auth`) and its default permission is
NO_PERMISSIONS: a signed-in account sees only what it created or was granted. Three accounts:

| account | what it may |
|---|---|
| `admin` | everything, users included (created by the server from $MLFLOW_AUTH_ADMIN_PASSWORD at its first start) |
| `recsys-service` | the Airflow workers (connection `mlflow_default`): creates the experiments and registered models, so holds MANAGE on them |
| `recsys-reviewer` | read-only: the workers give it READ on each experiment and registered model they create |

With workspaces off (MLflow's default) any signed-in account may also create experiments of its own;
none but the service account and the admin can write to the workflow's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

ADMIN = "admin"
SERVICE = "recsys-service"
READER = "recsys-reviewer"


def config_text(database_uri: str) -> str:
    """The server's auth config; '%' is escaped for configparser (URL-escaped passwords hold it)."""
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri.replace('%', '%%')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # a password check is a PBKDF2 hash (~0.5 s of a busy core here): without the cache, packaging a
        # model (hundreds of requests) took minutes. A password change through the API clears the
        # entry on the worker that handled it; other server workers accept the old one for up to 60 s
        "auth_cache_ttl_seconds = 60\n"
    )


def write_config(path: str, database_uri: str) -> None:
    """Write the config readable by its owner only (it holds the auth database's password)."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(config_text(database_uri))
    os.replace(path + ".tmp", path)


def admin_call(url: str, admin_password: str, method: str, path: str, body: dict) -> tuple[int, str]:
    """One call to the server's auth API as its admin (a GET sends `body` as the query string)."""
    token = base64.b64encode(f"{ADMIN}:{admin_password}".encode()).decode()
    if method == "GET":
        path, data = path + "?" + urllib.parse.urlencode(body), None
    else:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def ensure_account(url: str, admin_password: str, username: str, password: str) -> str:
    """Create the account, or set an existing one's password to this one; returns 'created' or 'updated'."""
    status, body = admin_call(url, admin_password, "POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password})
    if status == 200:
        return "created"
    if "RESOURCE_ALREADY_EXISTS" in body:
        status, body = admin_call(url, admin_password, "PATCH", "/api/2.0/mlflow/users/update-password", {"username": username, "password": password})
        if status == 200:
            return "updated"
    raise RuntimeError(f"MLflow account {username!r}: HTTP {status} {body[:300]}")


def permission(url: str, admin_password: str, username: str, resource_type: str, resource_id: str) -> str:
    """The account's effective permission on an experiment or registered model (READ, MANAGE, NO_PERMISSIONS...)."""
    query = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    status, body = admin_call(url, admin_password, "GET", "/api/3.0/mlflow/users/permissions/get", query)
    if status != 200:
        raise RuntimeError(f"permission of {username!r} on {resource_type} {resource_id}: HTTP {status} {body[:300]}")
    return str(json.loads(body)["permission"])


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"{name} is not set")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.mlflow_auth", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser("config", help="write the server's auth config ($MLFLOW_AUTH_DATABASE_URI) to PATH")
    cfg.add_argument("path")
    sub.add_parser("accounts", help="the service and reviewer accounts ($MLFLOW_URL, $MLFLOW_AUTH_ADMIN_PASSWORD, $MLFLOW_SERVICE_PASSWORD, $MLFLOW_REVIEWER_PASSWORD)")
    args = parser.parse_args(argv)
    if args.command == "config":
        write_config(args.path, _env("MLFLOW_AUTH_DATABASE_URI"))
        return 0
    url, admin = _env("MLFLOW_URL"), _env("MLFLOW_AUTH_ADMIN_PASSWORD")
    for username, variable in ((SERVICE, "MLFLOW_SERVICE_PASSWORD"), (READER, "MLFLOW_REVIEWER_PASSWORD")):
        print(f"MLflow account {username}: {ensure_account(url, admin, username, _env(variable))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
