"""Probes of the hardening review (issue 14) against a real gateway process on loopback (its services down)."""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.keys import create_key
from tacit.db import Store
from tests.e2e.conftest import Service, free_port, rss_bytes

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Service, str, list[str]]]:
    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    store = Store(database)
    store.migrate()
    token, _ = create_key(store, ["admin"])
    prefixes = [create_key(store, ["read"])[1].prefix for _ in range(3)]
    store.close()
    down = "http://127.0.0.1:9"
    port = free_port()
    env = {
        **os.environ,
        "TACIT_HOME": str(tmp_path / "home"),
        "TACIT_GATEWAY_PORT": str(port),
        "TACIT_GATEWAY_DATABASE_URL": database,
        "TACIT_GATEWAY_FEATURE_URL": down,
        "TACIT_GATEWAY_REWARD_URL": down,
        "TACIT_GATEWAY_JUDGE_URL": down,
        "TACIT_GATEWAY_RESCORE_INTERVAL_S": "3600",
    }
    service = Service(
        "gateway", [sys.executable, "-m", "tacit_cli.cli", "serve", "gateway"], env, port, tmp_path / "gateway.log"
    )
    service.start()
    try:
        yield service, token, prefixes
    finally:
        service.stop()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_random_megabyte_tokens_leave_memory_flat(gateway: tuple[Service, str, list[str]]) -> None:
    # Finding 1: 300 random 1 MB tokens grew the gateway by 273 MB in 2.2 s, never freed.
    service, token, _ = gateway
    assert service.process is not None
    with httpx.Client(base_url=service.url, timeout=10) as client:
        assert client.get("/v1/sessions", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        before = rss_bytes(service.process.pid)
        statuses = []
        started = time.monotonic()
        for _ in range(300):
            probe = "tacit_" + secrets.token_urlsafe(768 * 1024)  # 1 MiB
            statuses.append(client.get("/v1/sessions", headers={"Authorization": f"Bearer {probe}"}).status_code)
        elapsed = time.monotonic() - started
        after = rss_bytes(service.process.pid)
        assert client.get("/v1/sessions", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    print(f"token probe: RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MB, 300 requests in {elapsed:.1f} s")
    assert set(statuses) == {431}
    assert after - before < 20 * 2**20


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(gateway: tuple[Service, str, list[str]]) -> None:
    # Finding 2: rotating X-Forwarded-For from loopback beat a per-address limit (uvicorn trusts 127.0.0.1).
    # Wrong secrets for three keys' prefixes (each costs a scrypt): under each prefix's budget, over the address's.
    service, _, prefixes = gateway
    statuses = []
    started = time.monotonic()
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for i in range(300):  # the per-address budget is 100 failed authentications, refilled at 1 a second
            fake = prefixes[i % 3] + secrets.token_urlsafe(32)[:35]
            headers = {"Authorization": f"Bearer {fake}", "X-Forwarded-For": f"10.0.{i // 250}.{i % 250}"}
            statuses.append(client.get("/v1/sessions", headers=headers).status_code)
            if statuses[-1] != 401:
                break
    elapsed = time.monotonic() - started
    # A believed X-Forwarded-For would have given each request an address of its own: never a 429.
    assert statuses[-1] == 429
    assert 100 <= len(statuses) - 1 <= 100 + elapsed + 1
