"""Where the project keeps its state: one home folder, overridable with RECSYS_HOME.

Everything mutable (embedded Airflow, MLflow store and artifacts, the data cache, the
warehouse, run folders) lives under it, so deleting it resets the installation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "RECSYS_HOME"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
WAREHOUSE_URL_ENV = "RECSYS_WAREHOUSE_URL"
_REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ProjectPaths:
    """The fixed layout under the project home."""

    home: Path

    @property
    def cache(self) -> Path:
        """Downloaded data-set wheels, keyed by file name (sha256-checked on every read)."""
        return self.home / "cache"

    @property
    def raw(self) -> Path:
        """Copies of user-supplied input files, kept untouched whatever validation says."""
        return self.home / "raw"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    @property
    def warehouse_url(self) -> str:
        return f"sqlite:///{self.home / 'warehouse.db'}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def secrets(self) -> Path:
        return self.home / "secrets"

    def run_dir(self, run_id: str) -> Path:
        """The folder a pipeline run writes to (and only that run): a retry overwrites its own output."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")
        if not safe:
            raise ValueError(f"run id {run_id!r} has no usable characters")
        return self.runs / safe


def project_paths(home: str | os.PathLike[str] | None = None) -> ProjectPaths:
    """Resolve the project home: the argument, else $RECSYS_HOME, else `<repo>/.home`."""
    chosen = home or os.environ.get(HOME_ENV) or (_REPO_ROOT / ".home")
    return ProjectPaths(home=Path(chosen).expanduser().resolve())


# The one resolver of the two service URLs: an explicit value (an orchestrator's connection) wins over
# the environment, which wins over the embedded default under the project home.


def resolve_tracking_uri(explicit: str | None = None, paths: ProjectPaths | None = None) -> str:
    """The MLflow tracking URI: `explicit`, else $MLFLOW_TRACKING_URI, else the embedded store."""
    return explicit or os.environ.get(TRACKING_URI_ENV) or (paths or project_paths()).mlflow_tracking_uri


def configured_warehouse_url() -> str | None:
    """$RECSYS_WAREHOUSE_URL, or None where it is not set (the caller's embedded default applies)."""
    return os.environ.get(WAREHOUSE_URL_ENV) or None


def resolve_warehouse_url(explicit: str | None = None, paths: ProjectPaths | None = None) -> str:
    """The warehouse's SQLAlchemy URL: `explicit`, else $RECSYS_WAREHOUSE_URL, else the embedded SQLite file."""
    return explicit or configured_warehouse_url() or (paths or project_paths()).warehouse_url


def local_artifact_root(paths: ProjectPaths, uri: str) -> Path | None:
    """Where MLflow artifacts go for a local store (SQLite or files); None for a tracking server,
    which manages its own artifact store."""
    return paths.mlflow_artifacts if uri.startswith(("sqlite:", "file:")) or "://" not in uri else None
