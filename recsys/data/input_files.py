"""Which input files a run may read: regular files inside the folders the deployment allows.

A path handed to a run (the training DAG's ``items_path`` / ``interactions_path``, a batch file in
the inbox) is checked BEFORE anything reads or copies it:

- it exists and is a regular file: not a directory, a device, a pipe or a socket;
- it is not a symbolic link (a link could point at any file the worker can read);
- its real path lies inside an allowed root. For the DAG's file Params the roots are the folders in
  ``$RECSYS_INPUT_ROOTS`` (``os.pathsep``-separated), by default ``$RECSYS_HOME/uploads`` only; for
  the inbox, the data set's inbox folder.

A path that breaks a rule is a `DataValidationError` naming the file and the rule, and never any of
the file's content. It is the input's fault, so Airflow fails the task without retrying.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from recsys.errors import DataValidationError

ROOTS_ENV = "RECSYS_INPUT_ROOTS"
UPLOADS = "uploads"  # the default allowed root, under the project home
REGULAR_FILE_RULE = "input file must be a regular file (no directory, link, device or pipe)"


def allowed_roots(home: Path) -> list[Path]:
    """The folders the DAG's file Params may point into: ``$RECSYS_INPUT_ROOTS`` or ``<home>/uploads``."""
    configured = [p for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(p).expanduser() for p in configured] if configured else [Path(home) / UPLOADS]


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular_file(path: Path | str, table: str) -> Path:
    """The path, if it names a regular file itself (a link is not followed).

    Raises:
        DataValidationError: missing, unreadable, or a directory, link, device, pipe or socket.
    """
    path = Path(path)
    src = str(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise DataValidationError(table, src, ["file not found (rule: input file must exist and be a regular file)"]) from None
    except OSError as exc:  # permission denied on a parent, name too long, ...
        raise DataValidationError(table, src, [f"cannot inspect the file: {exc.strerror} (rule: input file must be readable)"]) from None
    if not stat.S_ISREG(mode):
        raise DataValidationError(table, src, [f"is {_kind(mode)} (rule: {REGULAR_FILE_RULE})"])
    return path


def check_input_file(path: Path | str, table: str, roots: list[Path]) -> Path:
    """The path, if it is a regular file (not a link) whose real path lies inside one of ``roots``.

    Raises:
        DataValidationError: missing, not a regular file, a link, or outside every root (the
            message names the path, the roots and the rule; never the file's content).
    """
    path = check_regular_file(path, table)
    src = str(path)
    real = Path(os.path.realpath(path))
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    if not any(real.is_relative_to(r) for r in real_roots):
        where = ", ".join(str(r) for r in roots) or "(none configured)"
        raise DataValidationError(
            table, src, [f"lies outside the allowed input folders {where} (rule: input files are read only from the folders in ${ROOTS_ENV})"]
        )
    return path


__all__ = ["ROOTS_ENV", "UPLOADS", "allowed_roots", "check_input_file", "check_regular_file"]
