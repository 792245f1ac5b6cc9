"""`tacit up` under load while its children are SIGKILLed, then stopped and started again at once (issue 14,
finding 4: killing reward_svc stopped the whole stack, 341 of 500 requests refused, and a restart was refused as
"port in use" for 40-60 s)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import msgspec
import pytest

from tacit.simulate import simulate_session
from tacit_cli.tests.test_up import needs_redis_server
from tacit_cli.tests.test_up_hardening import _Up
from tacit_cli.up import free_port
from tests.reliability.out import write_fragment

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow]

REQUESTS = 500
THREADS = 4
#: Which child is SIGKILLed once this many requests were sent.
KILLS = {100: "reward_svc", 250: "feature_svc", 400: "cpu worker"}


@needs_redis_server
def test_children_killed_under_load_come_back_and_nothing_is_refused(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    stack = _Up(home, port)
    figures: dict[str, object] = {"requests": REQUESTS, "threads": THREADS}
    try:
        key = stack.wait_for("admin key: ", 300).split("admin key: ", 1)[1].strip()
        stack.wait_for("Ctrl-C stops everything", 30)
        before = json.loads((home / "up.json").read_text())["services"]
        statuses: Counter[str] = Counter()
        sent = 0
        lock = threading.Lock()
        killed_at: dict[str, float] = {}

        def client() -> None:
            nonlocal sent
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as http:
                while True:
                    with lock:
                        if sent >= REQUESTS:
                            return
                        sent += 1
                        n = sent
                        victim = KILLS.get(n)
                        if victim is not None:
                            os.kill(before[victim]["pid"], signal.SIGKILL)
                            killed_at[victim] = time.monotonic()
                    body = msgspec.json.encode(simulate_session(seed=20_000 + n, samples=120))
                    try:
                        status = str(http.post("/v1/sessions", content=body).status_code)
                    except httpx.HTTPError as err:
                        status = type(err).__name__
                    with lock:
                        statuses[status] += 1

        start = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        figures["load_s"] = round(time.monotonic() - start, 1)
        figures["statuses"] = dict(statuses)
        back = {}
        for victim, at in killed_at.items():
            stack.wait_for(f"{victim} exited with code -9", 60)
            stack.wait_for(f"{victim} is back", 120)
            back[victim] = round(time.monotonic() - at, 1)
        figures["killed_then_back_within_s"] = back
        after = json.loads((home / "up.json").read_text())["services"]
        assert all(after[victim]["pid"] != before[victim]["pid"] for victim in KILLS.values())
        assert after["gateway"]["pid"] == before["gateway"]["pid"]
        assert set(statuses) <= {"200", "201", "202"}, statuses
    finally:
        stopped_at = time.monotonic()
        assert stack.stop() == 0, "".join(stack.lines)
        figures["stop_s"] = round(time.monotonic() - stopped_at, 1)

    start = time.monotonic()
    again = _Up(home, port)  # at once, on the same port
    try:
        again.wait_for("Ctrl-C stops everything", 300)
        figures["restart_on_the_same_port_ready_after_s"] = round(time.monotonic() - start, 1)
        assert not any("is in use" in line for line in again.lines)
    finally:
        assert again.stop() == 0, "".join(again.lines)
    write_fragment("faults", {"tacit_up_supervision": figures})
    print(json.dumps(figures))
