"""Tests of recsys.data.privacy: keyed pseudonyms of user ids and the key's origin."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from recsys.data.privacy import KEY_ENV, Pseudonymizer, load_key

KEY_A = b"key-a-0123456789abcdef"
KEY_B = b"key-b-0123456789abcdef"


def test_same_key_same_id():
    assert Pseudonymizer(KEY_A).one("12345") == Pseudonymizer(KEY_A).one("12345")


def test_different_key_different_id():
    assert Pseudonymizer(KEY_A).one("12345") != Pseudonymizer(KEY_B).one("12345")


def test_different_users_different_ids():
    p = Pseudonymizer(KEY_A)
    assert p.one("12345") != p.one("12346")


def test_id_shape_and_hmac_value():
    import hashlib
    import hmac

    # "u_" + the first 20 hex chars of HMAC-SHA256(key, raw id)
    expected = "u_" + hmac.new(KEY_A, b"12345", hashlib.sha256).hexdigest()[:20]
    got = Pseudonymizer(KEY_A).one("12345")
    assert got == expected
    assert len(got) == 22


def test_series_keeps_nulls_null_and_never_leaks_the_raw_id():
    p = Pseudonymizer(KEY_A)
    raw = pd.Series(["17850", None, "13047", "17850", pd.NA], dtype=object)
    out = p.series(raw)
    assert str(out.dtype) == "string"
    assert out.isna().tolist() == [False, True, False, False, True]
    # same raw id -> same pseudonym, and it equals one()
    assert out[0] == out[3] == p.one("17850")
    assert out[2] == p.one("13047")
    for value in out.dropna():
        assert value.startswith("u_")
        assert "17850" not in value and "13047" not in value


def test_series_of_numbers_matches_their_text():
    # a numeric id column pseudonymizes like the same ids as text
    p = Pseudonymizer(KEY_A)
    assert p.series(pd.Series([42, 7])).tolist() == [p.one("42"), p.one("7")]


def test_short_key_rejected():
    with pytest.raises(ValueError, match="16 bytes"):
        Pseudonymizer(b"0123456789abcde")  # 15 bytes
    Pseudonymizer(b"0123456789abcdef")  # 16 bytes is enough


def test_load_key_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, "env-secret-0123456789")
    assert load_key(tmp_path / "secrets") == b"env-secret-0123456789"
    # the environment wins: no key file is created
    assert not (tmp_path / "secrets" / "pseudonym.key").exists()


def test_load_key_creates_a_private_key_file_once(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    secrets_dir = tmp_path / "home" / "secrets"
    key = load_key(secrets_dir)
    key_file = secrets_dir / "pseudonym.key"
    assert key_file.is_file()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # 32 random bytes as hex -> 64 characters, usable as a key
    assert len(key) == 64 and set(key.decode()) <= set("0123456789abcdef")
    Pseudonymizer(key)
    # the next call reads the same key and leaves the file as it was
    before = key_file.read_bytes()
    assert load_key(secrets_dir) == key
    assert key_file.read_bytes() == before
    # and a different installation gets a different key
    assert load_key(tmp_path / "other" / "secrets") != key


def test_empty_environment_value_falls_back_to_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, "")
    key = load_key(tmp_path / "secrets")
    assert (tmp_path / "secrets" / "pseudonym.key").read_text().strip().encode() == key
