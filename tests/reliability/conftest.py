"""The process stack of tests/e2e on SQLite, one per test module (PostgreSQL is covered by tests/e2e)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import cpu_worker, stack  # noqa: F401 (the fixtures; stack with this package's database_url)


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'gateway.db'}"
