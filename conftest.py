"""Shared pytest fixtures: the IFLLM dev subset, unpacked once into a cache directory."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tacit.ifllm.archive import find_shared, unpack_release

ROOT = Path(__file__).resolve().parent


def shared_dir() -> Path | None:
    """The team's `shared/` folder: $TACIT_SHARED, else the nearest `shared/` beside an ancestor."""
    if os.environ.get("TACIT_SHARED"):
        return Path(os.environ["TACIT_SHARED"])
    return find_shared(ROOT)


@pytest.fixture(scope="session")
def ifllm_dir() -> Path:
    """Unpacked IFLLM dev subset ($TACIT_IFLLM_DIR, or ../shared/ifllm/ifllm-dev.tar.xz unpacked to a cache)."""
    if os.environ.get("TACIT_IFLLM_DIR"):
        return Path(os.environ["TACIT_IFLLM_DIR"])
    shared = shared_dir()
    tarball = shared / "ifllm" / "ifllm-dev.tar.xz" if shared else None
    if tarball is None or not tarball.exists():
        pytest.skip("IFLLM dev subset not available (set TACIT_IFLLM_DIR or provide ../shared/ifllm)")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tacit" / "ifllm-dev"
    return unpack_release(tarball, cache)


@pytest.fixture(scope="module")
def ifllm_small(ifllm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-worker IFLLM folder cut from the dev subset (same layout), for import tests."""
    import csv
    import shutil

    root = tmp_path_factory.mktemp("ifllm-small") / "ifllm"
    workers = sorted(p.name for p in (ifllm_dir / "user_behavior").iterdir() if p.is_dir())[:2]
    (root / "user_behavior").mkdir(parents=True)
    for worker in workers:
        shutil.copytree(ifllm_dir / "user_behavior" / worker, root / "user_behavior" / worker)
    for table in ("query_logs_table.csv", "task_table.csv"):
        with (ifllm_dir / table).open(newline="", encoding="utf-8") as src:
            reader = csv.DictReader(src)
            rows = [row for row in reader if row["user_id"].strip() in workers]
            with (root / table).open("w", newline="", encoding="utf-8") as dst:
                writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
                writer.writeheader()
                writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def ifllm_readme_counts() -> dict[str, int]:
    """The counts the data README states for this subset (so tests never hard-code them)."""
    shared = shared_dir()
    readme = shared / "ifllm" / "README.md" if shared else None
    if readme is None or not readme.exists():
        pytest.skip("IFLLM README not available")
    text = readme.read_text()
    match = re.search(
        r"(\d+) questions from (\d+) workers in (\d+) tasks; (\d+) pairwise questions\s+\((\d+) with a preference "
        r"label\) and (\d+) pointwise \((\d+) labelled\)",
        text,
    )
    if match is None:
        pytest.skip("IFLLM README does not state the counts")
    keys = ["questions", "workers", "tasks", "pairwise", "pairwise_labelled", "pointwise", "pointwise_labelled"]
    return dict(zip(keys, map(int, match.groups()), strict=True))


def _postgres_admin_url() -> str:
    return os.environ.get("TACIT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _fresh_postgres() -> Iterator[str]:
    """Create a database, yield its URL, drop it afterwards; skips when no PostgreSQL is reachable."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    admin = sqlalchemy.create_engine(_postgres_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"tacit_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # no server, no rights: the SQLite variant still runs
        pytest.skip(f"PostgreSQL not available: {type(err).__name__}")
    base = _postgres_admin_url().rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards); skips when none is reachable."""
    yield from _fresh_postgres()


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test module: stacks of different modules never see each other's rows
    (one module's trained models scored sessions another module's pair snapshot then counted as foreign)."""
    yield from _fresh_postgres()


#: Redis databases test sessions may claim (Redis has 16; 0-9 are left to stacks people run by hand).
_TEST_DATABASES = range(10, 16)
_CLAIM_KEY = "tacit:test-session"
_CLAIM_TTL_S = 3 * 3600  # a crashed session's claim lapses; no session runs this long


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database of this test session's own (flushed first); skips when no server answers.

    Each session (and each xdist worker) claims a free database with a key set only if absent, so two suites
    running at once on one machine never flush each other's Celery queues. `TACIT_TEST_REDIS` names one instead.
    """
    redis = pytest.importorskip("redis")
    if explicit := os.environ.get("TACIT_TEST_REDIS"):
        client = redis.Redis.from_url(explicit)
        try:
            client.ping()
        except Exception as err:
            pytest.skip(f"Redis not available: {type(err).__name__}")
        client.flushdb()
        yield explicit
        return
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    token = f"{os.getpid()}@{socket.gethostname()}"
    # start at this worker's usual database, so an idle machine keeps the old mapping (gw0 -> 10, gw1 -> 11)
    order = [_TEST_DATABASES[(worker + i) % len(_TEST_DATABASES)] for i in range(len(_TEST_DATABASES))]
    for number in order:
        url = f"redis://127.0.0.1:6379/{number}"
        client = redis.Redis.from_url(url)
        try:
            claimed = client.set(_CLAIM_KEY, token, nx=True, ex=_CLAIM_TTL_S)
        except Exception as err:
            pytest.skip(f"Redis not available: {type(err).__name__}")
        if not claimed:
            continue  # another test session's database
        client.flushdb()
        client.set(_CLAIM_KEY, token, ex=_CLAIM_TTL_S)  # the flush took the claim with it
        try:
            yield url
        finally:
            if client.get(_CLAIM_KEY) == token.encode():
                client.delete(_CLAIM_KEY)
        return
    pytest.skip(f"every test Redis database ({_TEST_DATABASES.start}-{_TEST_DATABASES.stop - 1}) is claimed")


@pytest.fixture(scope="session")
def reference_features_dir() -> Path:
    shared = shared_dir()
    path = shared / "spec" / "reference-features" if shared else None
    if path is None or not (path / "extracted_features.csv").exists():
        pytest.skip("reference feature tables not available")
    return path
