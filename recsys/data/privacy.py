"""Pseudonymization of user identifiers with a keyed hash (HMAC-SHA256).

Raw user ids are replaced as soon as a loader reads them, so they never reach the
warehouse, MLflow or logs. The key comes from $RECSYS_PSEUDONYM_KEY; an embedded
installation without it gets a random key created once under the project home
(`secrets/pseudonym.key`, mode 0600, git-ignored), so ids stay stable across runs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pandas as pd

from recsys.errors import InputError

KEY_ENV = "RECSYS_PSEUDONYM_KEY"
_PREFIX = "u_"
_DIGEST_CHARS = 20  # 80 bits: collisions are negligible for any shop's user base


class Pseudonymizer:
    """Maps raw user ids to stable opaque ids; the same key always gives the same id."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise InputError("pseudonymization key must be at least 16 bytes (RECSYS_PSEUDONYM_KEY or secrets/pseudonym.key)")
        self._key = key

    def one(self, raw_id: object) -> str:
        digest = hmac.new(self._key, str(raw_id).encode("utf-8"), hashlib.sha256).hexdigest()
        return _PREFIX + digest[:_DIGEST_CHARS]

    def series(self, raw_ids: pd.Series) -> pd.Series:
        """Pseudonymize a column. Ids are trimmed first (``"alice "`` is ``"alice"``: one user, one
        pseudonym); nulls and blank ids (spaces, a tab) become null, which validation reports by row
        with no raw id to leak."""
        uniques = raw_ids.dropna().unique()
        # hash each distinct id once
        mapping = {u: (self.one(t) if (t := str(u).strip()) else None) for u in uniques}
        return raw_ids.map(mapping).astype("string")


def load_key(secrets_dir: Path) -> bytes:
    """The key from the environment, else the installation's key file (created on first use)."""
    env_key = os.environ.get(KEY_ENV)
    if env_key:
        return env_key.encode("utf-8")
    key_file = secrets_dir / "pseudonym.key"
    if not key_file.exists():
        secrets_dir.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: of two tasks racing to create the key, one wins and both read its key
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return key_file.read_text().strip().encode("utf-8")
