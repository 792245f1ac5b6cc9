"""API keys on SQLite and PostgreSQL: hashing, authentication, revocation and scopes (the command: tacit_cli)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import update

from gateway.keys import (
    PREFIX_CHARS,
    SCOPES,
    allowed,
    authenticate,
    create_key,
    hash_token,
    list_keys,
    revoke,
    verify_token,
)
from tacit.db import KeyRow, Store
from tacit.db.testing import database_text


def _set_last_used(store: Store, key_id: str, when: dt.datetime | None) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(KeyRow).where(KeyRow.id == key_id).values(last_used_at=when))  # type: ignore[arg-type]


def test_create_and_authenticate(store: Store) -> None:
    token, row = create_key(store, ["read", "ingest", "read"], "laptop")
    assert token.startswith("tacit_")
    assert len(token) == len("tacit_") + 43
    assert row.scopes == ["ingest", "read"]
    assert row.name == "laptop"
    assert row.prefix == token[:PREFIX_CHARS]
    assert row.revoked_at is None
    assert row.last_used_at is None

    found = authenticate(store, token)
    assert found is not None
    assert found.id == row.id
    assert found.last_used_at is not None
    assert authenticate(store, token) is not None  # from the in-process cache, still checked against the row

    assert authenticate(store, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert authenticate(store, "") is None
    assert authenticate(store, "Bearer " + token) is None
    assert authenticate(store, "tacit_short") is None
    assert authenticate(store, "tacit_" + "x" * 300) is None


def test_the_token_is_never_stored(store: Store) -> None:
    tokens = [create_key(store, ["admin"], f"k{i}")[0] for i in range(2)]
    for token in tokens:
        assert authenticate(store, token) is not None
    dump = database_text(store.url)
    for token in tokens:
        assert token not in dump
        assert token[PREFIX_CHARS:] not in dump  # not even the secret part
        assert token[: PREFIX_CHARS + 1] not in dump  # nothing beyond the shown prefix
    stored = [row.hash for row in list_keys(store)]
    assert all(h.startswith("scrypt$") for h in stored)
    assert len(set(stored)) == 2


def test_hashes_are_salted_and_verified_in_constant_time_form() -> None:
    token = "tacit_" + "a" * 43
    first, second = hash_token(token), hash_token(token)
    assert first != second  # per-key salt
    assert verify_token(token, first)
    assert verify_token(token, second)
    assert not verify_token(token + "b", first)
    assert not verify_token(token, "pbkdf2$1$2$3$4$5")
    assert not verify_token(token, "garbage")


def test_revoked_keys_are_refused_at_once(store: Store) -> None:
    token, row = create_key(store, ["read"])
    keep, _ = create_key(store, ["read"])
    assert authenticate(store, token) is not None  # now cached in this process
    revoked = revoke(store, row.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert authenticate(store, token) is None
    assert authenticate(store, keep) is not None
    assert revoke(store, "missing") is None
    again = revoke(store, row.id)
    assert again is not None
    assert again.revoked_at == revoked.revoked_at
    listed = {k.id: k for k in list_keys(store)}
    assert listed[row.id].revoked_at is not None  # kept for the audit trail


def test_last_used_is_written_at_most_once_a_minute(store: Store) -> None:
    token, row = create_key(store, ["ingest"])
    authenticate(store, token)
    first = store.keys.get_key(row.id)
    assert first is not None
    assert first.last_used_at is not None
    authenticate(store, token)
    second = store.keys.get_key(row.id)
    assert second is not None
    assert second.last_used_at == first.last_used_at
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    _set_last_used(store, row.id, old)
    authenticate(store, token)
    third = store.keys.get_key(row.id)
    assert third is not None
    assert third.last_used_at is not None
    assert third.last_used_at > old + dt.timedelta(minutes=4)


def test_a_key_of_another_database_is_not_accepted_from_the_cache(store: Store, tmp_path: Path) -> None:
    token, row = create_key(store, ["read"])
    assert authenticate(store, token) is not None
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        other.migrate()
        assert authenticate(other, token) is None
        # Same id, another hash: the cache entry does not match the row.
        other.keys.add_key(KeyRow(id=row.id, prefix=row.prefix, hash=hash_token("tacit_else"), scopes=["admin"]))
        assert authenticate(other, token) is None
    finally:
        other.close()


def test_scopes() -> None:
    assert SCOPES == ("ingest", "read", "train", "admin")
    assert allowed(["read"], "read")
    assert not allowed(["read"], "ingest")
    assert not allowed(["ingest", "read"], "train")
    assert all(allowed(["admin"], scope) for scope in SCOPES)
    assert not allowed([], "read")
    with pytest.raises(ValueError, match="unknown scope"):
        allowed(["admin"], "root")


def test_create_key_checks_scopes(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        create_key(store, ["read", "root"], "x")
    with pytest.raises(ValueError, match="at least one"):
        create_key(store, [], "x")
    assert list_keys(store) == []
