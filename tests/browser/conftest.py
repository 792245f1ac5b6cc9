"""A real Chromium (Debian's, driven by Playwright) for the collector's browser tests; skips without one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import stack  # noqa: F401 (the e2e stack fixture, reused by the demo test)

CHROMIUM = Path(os.environ.get("TACIT_CHROMIUM", "/usr/bin/chromium"))
# No GPU, no sandbox (containers), and nothing that reaches out to the network on its own.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Chromium from the system (never a downloaded one); skips when it or Playwright is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo test's stack on SQLite only (the e2e suite covers PostgreSQL)."""
    return f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'gateway.db'}"


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $TACIT_TEST_ARTIFACTS (for CI to keep), else the pytest temporary directory."""
    if os.environ.get("TACIT_TEST_ARTIFACTS"):
        path = Path(os.environ["TACIT_TEST_ARTIFACTS"])
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("browser-artifacts")
