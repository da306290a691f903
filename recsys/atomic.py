"""Atomic file writes: a file is written under a temporary name beside its target and renamed onto it,
so a reader (or a crash) sees the old file or the new one, never half of one.

One writer for every module that replaces files others read (run folders, reports, the drift reference,
inbox batches). No fsync: these files are rebuilt by a rerun, so surviving a power cut is not promised.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def temp_path(path: str | os.PathLike[str], *, suffix: str = "", mkdir: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` for writers that want a path (np.save, to_parquet); renamed onto
    `path` when the block ends without an error, removed otherwise.

    `suffix` ends the temporary name (np.save appends ".npy" to a name without it); `mkdir` creates
    the parent folders first."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    # hidden and unique per process and call: concurrent writers never share a temporary file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, mkdir: bool = False) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with temp_path(path, mkdir=mkdir) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, *, mkdir: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    return write_bytes(path, text.encode("utf-8"), mkdir=mkdir)


def write_json(path: str | os.PathLike[str], data: Any, *, mkdir: bool = False, **dumps: Any) -> Path:
    """Write `data` as JSON (`json.dumps` with `dumps`) to `path` atomically; returns `path`."""
    return write_text(path, json.dumps(data, **dumps), mkdir=mkdir)
