"""Connection arguments for Airflow's metadata database when it is the embedded SQLite file.

The embedded mode (`make demo`, `make ui`, the tests) runs the scheduler, the DAG processor, the API server,
the triggerer and the tasks as separate processes on one SQLite file. Airflow turns WAL on, which lets
readers go on, but writers still queue for one lock, and Python's default wait for it is 5 s: on a busy
2-core machine a scheduler loop can hold it longer, and a run triggered from the UI or the REST API in that
moment failed with HTTP 500 "Database error" (database is locked). Waiting up to a minute is what a person
clicking "Trigger" expects instead.

Selected by `[database] sql_alchemy_connect_args` (Makefile, tests). The arguments are empty for any other
database (psycopg2 has no `timeout` argument), so a PostgreSQL URL given to `make ui` or inherited by
`deploy/localcluster.py` works with the same setting.
"""

from __future__ import annotations

import os

BUSY_TIMEOUT_S = 60.0


def connect_args(sql_alchemy_conn: str) -> dict[str, object]:
    """`timeout` for SQLite URLs (sqlite3 and aiosqlite both take it), nothing for other databases."""
    return {"timeout": BUSY_TIMEOUT_S} if sql_alchemy_conn.startswith("sqlite") else {}


def _configured_conn() -> str:
    # the same precedence Airflow uses: the environment variable, then airflow.cfg
    url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if url:
        return url
    from airflow.configuration import conf  # already loaded: Airflow imports this module while configuring its ORM

    return conf.get("database", "sql_alchemy_conn", fallback="")


SYNC_CONNECT_ARGS: dict[str, object] = connect_args(_configured_conn())
ASYNC_CONNECT_ARGS: dict[str, object] = dict(SYNC_CONNECT_ARGS)
