"""API keys as stored: hashes, scopes, revocation and last use (the hashing and the check live in gateway.keys)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Table, bindparam, or_, update
from sqlmodel import col, select

from tacit.db.models import KeyRow, utcnow
from tacit.db.uow import UnitOfWork

__all__ = ["Keys"]


class Keys:
    """The `api_keys` table; `get_key` is read on every authenticated request."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        keys: Table = KeyRow.__table__  # type: ignore[attr-defined]
        # Built once, values bound per call: building the statement each time cost more than the read itself.
        self._by_id = keys.select().where(keys.c.id == bindparam("key_id"))

    def add_key(self, row: KeyRow) -> KeyRow:
        with self._uow.write() as s:
            s.add(row)
            s.commit()
            return row

    def get_key(self, key_id: str) -> KeyRow | None:
        # Read on every authenticated request (a revocation holds at once): a Core select, half the ORM's cost.
        with self._uow.connect() as conn:
            found = conn.execute(self._by_id, {"key_id": key_id}).first()
        return None if found is None else KeyRow(**found._mapping)

    def keys_with_prefix(self, prefix: str) -> list[KeyRow]:
        """Unrevoked keys whose token starts with `prefix`."""
        query = select(KeyRow).where(KeyRow.prefix == prefix, col(KeyRow.revoked_at).is_(None))
        with self._uow.read() as s:
            return list(s.exec(query))

    def list_keys(self) -> list[KeyRow]:
        with self._uow.read() as s:
            return list(s.exec(select(KeyRow).order_by(col(KeyRow.created_at), col(KeyRow.id))))

    def touch_key(self, key_id: str, *, at: dt.datetime, not_since: dt.datetime) -> bool:
        """Set last_used_at = `at` unless it was already set at or after `not_since`; whether it was set."""
        statement = (
            update(KeyRow)
            .where(
                col(KeyRow.id) == key_id,
                or_(col(KeyRow.last_used_at).is_(None), col(KeyRow.last_used_at) < not_since),
            )
            .values(last_used_at=at)
        )
        with self._uow.write() as s:
            count = s.exec(statement).rowcount
            s.commit()
        return bool(count)

    def revoke_key(self, key_id: str) -> KeyRow | None:
        """Mark a key revoked (kept for the audit trail); None for an unknown id."""
        with self._uow.write() as s:
            row = s.get(KeyRow, key_id)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                s.add(row)
                s.commit()
            return row
