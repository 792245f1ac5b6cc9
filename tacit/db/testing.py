"""Helpers for tests of code that uses the Store: an empty PostgreSQL schema per test, and a database dump."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import MetaData, create_engine, select, text
from sqlalchemy.engine import make_url

__all__ = ["database_text", "postgres_schema", "rows_mentioning"]


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """The URL of a new, empty schema in the PostgreSQL database at `url`, dropped (with its tables) on exit."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        # libpq `options`: every connection of this URL resolves unqualified names in the new schema.
        yield (
            make_url(url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _as_text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        with suppress(zlib.error):
            raw = zlib.decompress(raw)
        return raw.decode("utf-8", "replace")
    return str(value)


def database_text(url: str) -> str:
    """Every value of every table at `url` as text (compressed payloads inflated), for "never stored" checks."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        parts: list[str] = []
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                parts.extend(_as_text(value) for row in conn.execute(select(table)) for value in row)
        return "\n".join(parts)
    finally:
        engine.dispose()


def rows_mentioning(url: str, needle: str) -> dict[str, int]:
    """Per table at `url` (reflected, not a list kept by hand), how many rows hold `needle` in some value."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                table.name: sum(
                    any(needle in _as_text(value) for value in row if value is not None)
                    for row in conn.execute(select(table))
                )
                for table in meta.sorted_tables
            }
    finally:
        engine.dispose()
