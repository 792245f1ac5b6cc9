"""Gateway ingest benchmark: POST /v1/sessions (store + features + score) from a separate process on loopback.

    .venv/bin/python bench/gateway.py [--seconds 20] [--concurrency 8] [--samples 300]

Starts the stack with `tacit up` in a temporary home (a demo reward model on simulated readers), then a load
process posts distinct simulated pairwise sessions for `--seconds` at a fixed concurrency and reports throughput,
latency percentiles and errors. Baseline in the same run, from the same load process: the two service calls the
gateway makes per session (POST /v1/features on feature_svc, POST /v1/score on reward_svc) without the gateway,
so the table shows what storage, auth and the extra hop cost. Target (issue): >= 300 sessions/s, p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _sessions(n: int, samples: int, seed: int) -> list[bytes]:
    from tacit.simulate import simulate_session

    base = simulate_session(seed=seed, samples=samples, user_id="bench-user", task_id="bench")
    encoded = msgspec.to_builtins(base)
    bodies = []
    for i in range(n):
        encoded["session_id"] = f"bench-{seed}-{i}"
        encoded["user_id"] = f"bench-user-{i % 50}"
        bodies.append(msgspec.json.encode(encoded))
    return bodies


async def _drive(
    kind: str, urls: dict[str, str], key: str, bodies: list[bytes], seconds: float, concurrency: int
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = {"next": 0}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def one(body: bytes) -> None:
            if kind == "gateway":
                response = await client.post(f"{urls['gateway']}/v1/sessions", content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}")
                return
            session = msgspec.json.decode(body)
            vector = await client.post(
                f"{urls['features']}/v1/features", content=msgspec.json.encode({"session": session}), headers=headers
            )
            if vector.status_code != 200:
                raise RuntimeError(f"features HTTP {vector.status_code}")
            score = await client.post(
                f"{urls['reward']}/v1/score", content=b'{"vectors": [' + vector.content + b"]}", headers=headers
            )
            if score.status_code != 200:
                raise RuntimeError(f"score HTTP {score.status_code}")

        async def worker() -> None:
            while time.perf_counter() < deadline:
                i = counter["next"]
                counter["next"] += 1
                body = bodies[i % len(bodies)]
                if kind == "gateway" and i >= len(bodies):
                    # every gateway request a new session id, so each one is stored and scored
                    body = body.replace(b'"session_id":"bench-', f'"session_id":"r{i}-bench-'.encode(), 1)
                start = time.perf_counter()
                try:
                    await one(body)
                except Exception as err:  # counted, not raised: the table reports them
                    errors[str(err)[:60]] = errors.get(str(err)[:60], 0) + 1
                    continue
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "path": kind,
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "rate": len(latencies) / elapsed,
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
    }


def _load_process(
    kind: str, urls: dict[str, str], key: str, samples: int, seconds: float, concurrency: int, out: Any
) -> None:
    bodies = _sessions(2000, samples, seed=1 if kind == "gateway" else 2)
    out.put(asyncio.run(_drive(kind, urls, key, bodies, seconds, concurrency)))


def _up(home: Path, port: int) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tacit_cli.cli", "up", "--home", str(home), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    key = ""
    lines = []
    assert process.stdout is not None
    deadline = time.monotonic() + 300
    for line in process.stdout:
        lines.append(line)
        if line.startswith("admin key: "):
            key = line.split(": ", 1)[1].strip()
        if line.startswith("Ctrl-C") or time.monotonic() > deadline:
            break
    if not key or key.startswith("none"):
        process.terminate()
        raise SystemExit("tacit up did not print an admin key:\n" + "".join(lines[-30:]))
    state = json.loads((home / "up.json").read_text())
    urls = {name: info["url"] for name, info in state["services"].items() if info.get("url")}
    urls["gateway"] = f"http://127.0.0.1:{port}"
    return process, key, {k: urls[k] for k in ("gateway",)} | _service_urls(urls)


def _service_urls(urls: dict[str, str]) -> dict[str, str]:
    found = {}
    for name, url in urls.items():
        if re.search("feature", name):
            found["features"] = url
        elif re.search("reward", name):
            found["reward"] = url
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=300, help="samples per stream (4 streams per session)")
    parser.add_argument("--port", type=int, default=18100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tacit-bench-") as tmp:
        process, key, urls = _up(Path(tmp), args.port)
        try:
            ctx = mp.get_context("spawn")  # a separate process: the load does not share the stack's cores' GIL
            rows = []
            for kind in ("baseline", "gateway"):
                queue = ctx.Queue()
                load = ctx.Process(
                    target=_load_process, args=(kind, urls, key, args.samples, args.seconds, args.concurrency, queue)
                )
                load.start()
                rows.append(queue.get())
                load.join()
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=60)

    print(
        f"\nGateway ingest, {os.cpu_count()} CPUs, {args.concurrency} concurrent clients, {args.seconds:.0f} s per "
        f"path, pairwise sessions of 4 x {args.samples} samples; target >= 300 sessions/s with p99 < 50 ms"
    )
    header = f"{'path':<46} {'sessions/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} {'target':>7}"
    print("-" * len(header))
    print(header)
    print("-" * len(header))
    names = {"baseline": "baseline: feature_svc + reward_svc, no gateway", "gateway": "POST /v1/sessions (store+score)"}
    for row in rows:
        target = ("PASS" if row["rate"] >= 300 and row["p99"] < 50 else "FAIL") if row["path"] == "gateway" else ""
        print(
            f"{names[row['path']]:<46} {row['rate']:>10.1f} {row['p50']:>8.2f} {row['p95']:>8.2f} "
            f"{row['p99']:>8.2f} {row['errors']:>7} {target:>7}"
        )
        if row["error_kinds"]:
            print(f"    errors: {row['error_kinds']}")
    print("-" * len(header))


if __name__ == "__main__":
    main()
