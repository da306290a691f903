"""What a model was built from: the code version, the environment, and a content digest of the data."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

GIT_SHA_ENV = "RECSYS_GIT_SHA"  # set by images built without the .git folder


def code_version(repo: Path | None = None) -> dict[str, str]:
    """The git commit of the code (and whether the tree had uncommitted changes), and the package version."""
    root = repo or Path(__file__).resolve().parents[1]
    sha, dirty = os.environ.get(GIT_SHA_ENV, ""), ""
    if not sha and (root / ".git").exists():
        try:
            sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10, check=True).stdout
            dirty = "true" if status.strip() else "false"
        except (OSError, subprocess.SubprocessError):
            sha = ""
    try:
        pkg = version("recsys")
    except PackageNotFoundError:
        pkg = "unknown"
    return {"git_sha": sha or "unknown", "git_dirty": dirty or "unknown", "recsys_version": pkg}


def environment() -> dict[str, str]:
    """Interpreter, platform and the versions of the packages that shape the model."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "executable": sys.executable}
    for pkg in ("torch", "transformers", "mlflow", "numpy", "scipy", "pandas", "apache-airflow"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return env


def frame_digest(*frames: pd.DataFrame) -> str:
    """A content digest of data frames (values, column names, row order): equal data, equal digest."""
    h = hashlib.sha256()
    for frame in frames:
        h.update("\x1f".join(map(str, frame.columns)).encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
