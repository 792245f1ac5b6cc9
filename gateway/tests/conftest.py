"""Fixtures shared by the gateway's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tacit.db import Store
from tacit.db.testing import postgres_schema


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty gateway database: a SQLite file, or a fresh schema in the session's PostgreSQL database.
    (Test modules that need other settings, e.g. fewer score attempts, define their own `store`.)"""
    if request.param == "sqlite":
        st = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
        st.migrate()
        yield st
        st.close()
    else:
        with postgres_schema(request.getfixturevalue("postgres_url")) as url:
            st = Store(url)
            st.migrate()
            yield st
            st.close()
