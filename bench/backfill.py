"""Rescoring benchmark: a reward model scores stored sessions, one at a time versus in batches on one and two workers.

    .venv/bin/python bench/backfill.py [--sessions 10000] [--baseline 1000] [--samples 60]

Starts the whole stack with `tacit up` in a temporary home (SQLite, a private Redis, one cpu worker, a demo pairwise
model), posts `--sessions` simulated labelled sessions from 50 users through the gateway's batch route (each is
stored with its features and scored by the active model), and trains a second model (not activated) through the API.
Then the second model scores the stored sessions three ways, in the same run, each starting from no score by it:

- one at a time: the same rescoring code with batches of one session (one task's work per session: one database
  read, one reward_svc request, one transaction), run in this process without a queue, on the first `--baseline`
  sessions (a subset keeps the run short; sessions/s is what is compared);
- batched, one worker: `POST /v1/reward/models/{id}/rescore`, batches of 500 on the stack's cpu worker;
- batched, two workers: the same with a second cpu worker started beside it.

The stored features are of the set both models use, so no path extracts features again. Prints a table (sessions,
seconds, sessions/s, speed-up over one at a time) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _tables import print_table  # noqa: E402  (the bench folder is scripts, not a package)

# the repository first: bench/gateway.py would otherwise stand in for the gateway package
sys.path.insert(0, str(ROOT))

USERS = 50


def _up(home: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    """`tacit up` in `home`: bench/gateway.py's launcher (shared with the throughput and load benchmarks)."""
    spec = importlib.util.spec_from_file_location("bench_gateway", ROOT / "bench" / "gateway.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    process, key, _ = module._up(home, port)
    return process, key


def _worker_env(home: Path) -> dict[str, str]:
    """What `tacit up` gives its cpu worker (read back from up.json and the home)."""
    state = json.loads((home / "up.json").read_text())
    services = state["services"]
    redis = state["redis"]["url"]
    password = (home / "redis" / "password").read_text().strip()
    redis_url = redis.replace(":***@", f":{password}@", 1)  # up.json redacts the password
    url = {name: info.get("url") for name, info in services.items()}
    return {
        **os.environ,
        "TACIT_HOME": str(home),
        "TACIT_WORKER_REDIS_URL": redis_url,
        "TACIT_REWARD_REDIS_URL": redis_url,
        "TACIT_WORKER_REWARD_URL": str(url["reward_svc"]),
        "TACIT_WORKER_FEATURE_URL": str(url["feature_svc"]),
        "HF_HUB_OFFLINE": "1",
    }


def _post_sessions(client: httpx.Client, n: int, samples: int) -> float:
    from tacit.simulate import simulate_session

    started = time.perf_counter()
    for start in range(0, n, 250):
        sessions = [
            simulate_session(
                seed=i,
                samples=samples,
                user_id=f"bf-u{i % USERS:02d}",
                session_id=f"bf-{i:06d}",
                task_id=f"bf-task-{i % 40}",
                prefer="right" if i % 2 else "left",
            )
            for i in range(start, min(n, start + 250))
        ]
        answer = client.post("/v1/sessions:batch", content=msgspec.json.encode({"sessions": sessions}), timeout=300)
        answer.raise_for_status()
        print(f"\rposted {min(n, start + 250)}/{n} sessions", end="", flush=True)
    print()
    return time.perf_counter() - started


def _train(client: httpx.Client, home: Path) -> str:
    from reward_svc.demo import write_demo_table

    table = write_demo_table(home / "data" / "bench-backfill.parquet", seed=7)
    answer = client.post(
        "/v1/reward/models", json={"data": str(table), "task": "pairwise", "model": "swap_lr", "demo": True, "seeds": 1}
    )
    answer.raise_for_status()
    model_id = str(answer.json()["id"])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        info = client.get(f"/v1/reward/models/{model_id}").json()
        if info["status"] == "succeeded":
            return model_id
        if info["status"] in ("failed", "cancelled"):
            raise SystemExit(f"training failed: {info['error']}")
        time.sleep(1)
    raise SystemExit("training did not finish in 600 s")


def _forget(database: Path, model_id: str) -> None:
    """Remove the model's scores (so the next run starts from none); the bench's own reset, not an API."""
    with sqlite3.connect(database, timeout=60) as conn:
        conn.execute("DELETE FROM session_scores WHERE model_id = ?", (model_id,))


def _one_at_a_time(home: Path, model_id: str, users: list[str], env: dict[str, str]) -> tuple[int, float]:
    from gateway.rescoring import run_batch
    from tacit.db import Store

    store = Store(f"sqlite:///{home / 'gateway.db'}")
    try:
        job, batches = store.rescoring.create_rescore_job(
            {"model_id": model_id, "mode": "pairwise", "user_ids": users}, batch_size=1, user_ids=users
        )
        with (
            httpx.Client(base_url=env["TACIT_WORKER_REWARD_URL"], timeout=60) as reward,
            httpx.Client(base_url=env["TACIT_WORKER_FEATURE_URL"], timeout=60) as features,
        ):
            started = time.perf_counter()
            for i, batch in enumerate(batches, 1):
                run_batch(store, reward, features, job.id, batch)
                if i % 100 == 0:
                    print(f"\rone at a time: {i}/{len(batches)}", end="", flush=True)
            elapsed = time.perf_counter() - started
        print()
        return len(batches), elapsed
    finally:
        store.close()


def _batched(client: httpx.Client, model_id: str, label: str) -> tuple[int, float, dict[str, Any]]:
    started = time.perf_counter()
    answer = client.post(f"/v1/reward/models/{model_id}/rescore", json={})
    answer.raise_for_status()
    job = answer.json()
    while job["status"] in ("queued", "running"):
        time.sleep(0.2)
        job = client.get(f"/v1/reward/rescores/{job['id']}").json()
        print(f"\r{label}: {job['done']}/{job['total']}", end="", flush=True)
    elapsed = time.perf_counter() - started
    print()
    if job["status"] != "succeeded":
        raise SystemExit(f"{label}: job {job['status']}: {job['error']}")
    return int(job["total"]), elapsed, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1000, help="sessions scored one at a time (a subset)")
    parser.add_argument("--samples", type=int, default=60, help="samples per stream of each simulated session")
    args = parser.parse_args()

    from tacit_cli.up import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tacit-backfill-") as tmp:
        home = Path(tmp)
        process, key = _up(home, port)
        second: subprocess.Popen[bytes] | None = None
        try:
            env = _worker_env(home)
            headers = {"authorization": f"Bearer {key}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
                ingest_s = _post_sessions(client, args.sessions, args.samples)
                model_id = _train(client, home)
                print(f"model {model_id} trained (not active)")
                baseline_users = [f"bf-u{u:02d}" for u in range(max(1, round(USERS * args.baseline / args.sessions)))]
                n_one, t_one = _one_at_a_time(home, model_id, baseline_users, env)
                _forget(home / "gateway.db", model_id)
                n_w1, t_w1, _ = _batched(client, model_id, "one worker")
                _forget(home / "gateway.db", model_id)
                log = (home / "logs" / "worker_cpu_2.log").open("ab")
                second = subprocess.Popen(
                    [sys.executable, "-m", "tacit_cli.cli", "worker", "--queues", "cpu"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                deadline = time.monotonic() + 120
                while b" ready." not in (home / "logs" / "worker_cpu_2.log").read_bytes():
                    if second.poll() is not None or time.monotonic() > deadline:
                        tail = (home / "logs" / "worker_cpu_2.log").read_text()[-3000:]
                        raise SystemExit(f"the second worker did not start:\n{tail}")
                    time.sleep(0.2)
                n_w2, t_w2, _ = _batched(client, model_id, "two workers")
        finally:
            if second is not None and second.poll() is None:
                os.killpg(second.pid, signal.SIGTERM)
                second.wait(timeout=60)
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=120)

    rate_one = n_one / t_one
    rows = [
        ["one at a time (batches of 1, in process)", str(n_one), f"{t_one:.1f}", f"{rate_one:.0f}", "1.0x"],
        ["batched, 1 cpu worker", str(n_w1), f"{t_w1:.1f}", f"{n_w1 / t_w1:.0f}", f"{n_w1 / t_w1 / rate_one:.1f}x"],
        ["batched, 2 cpu workers", str(n_w2), f"{t_w2:.1f}", f"{n_w2 / t_w2:.0f}", f"{n_w2 / t_w2 / rate_one:.1f}x"],
    ]
    print_table(
        f"Rescoring {args.sessions} stored sessions with a second model ({os.cpu_count()} CPUs; sessions were posted "
        f"in {ingest_s:.0f} s; batched times are from the request to the job's success, queue included)",
        ["path", "sessions", "s", "sessions/s", "vs one at a time"],
        rows,
    )


if __name__ == "__main__":
    main()
