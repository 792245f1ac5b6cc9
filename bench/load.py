"""Gateway load test: open-loop mixed traffic from a separate process on loopback, at the highest rate that holds.

    .venv/bin/python bench/load.py [--duration 300] [--rate R] [--step-seconds 15] [--out DIR]

Starts the whole stack with `tacit up` in a temporary home (SQLite, a private Redis, a demo reward model), then a
load process (spawned: its own interpreter, so it shares no GIL with the stack) sends requests at a constant
arrival rate, whatever the answers do (open loop: a slow answer does not slow the sender, so queueing shows in the
latency instead of hiding in a lower rate). The mix: 80% POST /v1/sessions (a new pairwise session each time:
store + features + score), 10% GET /v1/sessions/{id} (a session stored earlier in the run), 10%
GET /v1/sessions?user_id= (a user's first page). Latency is measured from the moment a request was due, not the
moment it left, so a late sender counts against the stack (no coordinated omission).

Without `--rate`, a step-up search runs first (`--step-seconds` per step, each rate x1.3 the last) and keeps the
highest rate whose p99 is under 100 ms with no errors; the long run (`--duration`) then runs at that rate. If the
long run misses the target it is repeated once at 75% of the rate, and both runs are reported. RSS of the gateway,
feature_svc and reward_svc is read right before and right after the long run. Prints a table and writes
`load.json` to `--out` (default: $TACIT_RELIABILITY_OUT, else nowhere).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty
from typing import Any

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _tables import print_table  # noqa: E402  (the bench folder is scripts, not a package)

#: Target of the issue: the highest rate with p99 under this.
P99_TARGET_MS = 100.0
MIX = {"ingest": 0.8, "get": 0.1, "list": 0.1}
USERS = 50
WARMUP_S = 3.0
#: A sender this far behind its schedule stops (what it did not send counts as errors).
MAX_SENDER_LAG_S = 30.0


def _bench_gateway() -> Any:
    """bench/gateway.py (the stack launcher and session bodies are shared with the throughput benchmark)."""
    spec = importlib.util.spec_from_file_location("bench_gateway", ROOT / "bench" / "gateway.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the load process ----------------------------------------------------------------------------------------


def _summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"n": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    lat = np.asarray(latencies) * 1000
    return {
        "n": len(latencies),
        "p50": float(np.percentile(lat, 50)),
        "p90": float(np.percentile(lat, 90)),
        "p99": float(np.percentile(lat, 99)),
        "max": float(lat.max()),
    }


async def _drive(
    gateway: str, key: str, bodies: list[bytes], rate: float, seconds: float, seed: int, tag: str
) -> dict[str, Any]:
    import httpx

    rng = random.Random(seed)
    latencies: dict[str, list[float]] = {kind: [] for kind in MIX}
    lags: list[float] = []
    errors: dict[str, int] = {}
    warmup_errors: dict[str, int] = {}
    timeline: list[tuple[float, float]] = []
    statuses: dict[str, int] = {}
    stored: list[str] = []
    headers = {"authorization": f"Bearer {key}"}
    post_headers = {**headers, "content-type": "application/json"}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds

    async with httpx.AsyncClient(base_url=gateway, limits=limits, timeout=10) as client:

        async def one(i: int, due: float, measured: bool) -> None:
            kind = rng.choices(list(MIX), weights=list(MIX.values()))[0] if stored else "ingest"
            if measured:
                lags.append(clock() - due)
            try:
                if kind == "ingest":
                    session_id = f"{tag}-{i}"
                    body = bodies[i % len(bodies)].replace(
                        b'"session_id":"load"', f'"session_id":"{session_id}"'.encode(), 1
                    )
                    body = body.replace(b'"user_id":"load"', f'"user_id":"load-user-{i % USERS}"'.encode(), 1)
                    response = await client.post("/v1/sessions", content=body, headers=post_headers)
                    ok = response.status_code == 200
                    if ok:
                        stored.append(session_id)
                elif kind == "get":
                    response = await client.get(f"/v1/sessions/{rng.choice(stored)}", headers=headers)
                    ok = response.status_code == 200
                else:
                    params = {"user_id": f"load-user-{rng.randrange(USERS)}", "limit": "20"}
                    response = await client.get("/v1/sessions", params=params, headers=headers)
                    ok = response.status_code == 200
                if measured:
                    statuses[f"{kind} {response.status_code}"] = statuses.get(f"{kind} {response.status_code}", 0) + 1
                if not ok:
                    raise RuntimeError(f"{kind} HTTP {response.status_code}")
            except Exception as err:  # counted, not raised: the report carries them
                name = str(err)[:60] or type(err).__name__
                book = errors if measured else warmup_errors
                book[name] = book.get(name, 0) + 1
                return
            if measured:
                latencies[kind].append(clock() - due)
                timeline.append((due, clock() - due))

        # WARMUP_S at the same rate first (connection pools, caches, the first SQLite pages): not measured.
        warmup = int(rate * WARMUP_S)
        total = int(rate * seconds)
        pending: set[asyncio.Task[None]] = set()
        origin = clock() + 0.2
        not_sent = 0
        for i in range(warmup + total):
            due = origin + i / rate
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > MAX_SENDER_LAG_S:
                # The sender itself is starved (a machine busy with other work): stop, and count what was never
                # sent as errors, instead of running on for minutes past the duration.
                not_sent = warmup + total - i
                break
            task = asyncio.create_task(one(i, due, i >= warmup))
            pending.add(task)
            task.add_done_callback(pending.discard)
        start = origin + warmup / rate
        sent_for = clock() - start
        if pending:
            await asyncio.wait(pending, timeout=15)
        elapsed = clock() - start
        # Whatever has not answered 15 s after the last send is counted below as unanswered; cancel it here so that
        # closing the client never waits on it.
        for task in list(pending):
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    everything = [x for kind in MIX for x in latencies[kind]]
    ok = len(everything)
    if not_sent:
        errors[f"not sent: the sender fell {MAX_SENDER_LAG_S:.0f} s behind"] = min(not_sent, total)
    unfinished = total - ok - sum(errors.values())
    if unfinished:
        errors["no answer 15 s after the last request was sent"] = unfinished
    return {
        "target_rate": rate,
        "seconds": seconds,
        "sent": total,
        "ok": ok,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "warmup_s": WARMUP_S,
        "warmup_errors": warmup_errors,
        "statuses": statuses,
        "offered_rate": total / sent_for if sent_for > 0 else 0.0,
        "achieved_rate": ok / elapsed if elapsed > 0 else 0.0,
        "sender_lag_p99_ms": float(np.percentile(np.asarray(lags) * 1000, 99)) if lags else 0.0,
        **_summary(everything),
        "by_kind": {kind: _summary(latencies[kind]) for kind in MIX},
        "windows_10s": _windows(timeline, start, 10.0),
    }


def _windows(timeline: list[tuple[float, float]], start: float, width: float) -> list[dict[str, float]]:
    """Latency per `width`-second window of due times: shows whether a tail is spread out or comes in bursts."""
    buckets: dict[int, list[float]] = {}
    for due, latency in timeline:
        buckets.setdefault(int((due - start) // width), []).append(latency)
    return [{"t": k * width, **_summary(v)} for k, v in sorted(buckets.items())]


def _bodies(n: int, samples: int, seed: int) -> list[bytes]:
    from tacit.simulate import simulate_session

    bodies = []
    for i in range(n):
        session = simulate_session(seed=seed + i, samples=samples, user_id="load", task_id=f"load-task-{i % 10}")
        encoded = msgspec.to_builtins(session)
        encoded["session_id"] = "load"
        bodies.append(msgspec.json.encode(encoded))
    return bodies


def _load_process(
    gateway: str, key: str, samples: int, rate: float, seconds: float, seed: int, tag: str, out: Any
) -> None:
    bodies = _bodies(64, samples, seed)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.put(asyncio.run(_drive(gateway, key, bodies, rate, seconds, seed, tag)))


def _no_result(rate: float, seconds: float, why: str) -> dict[str, Any]:
    """A run that produced no measurements: failed, with the reason as its one error."""
    return {
        "target_rate": rate,
        "seconds": seconds,
        "sent": int(rate * seconds),
        "ok": 0,
        "errors": 1,
        "error_kinds": {why: 1},
        "warmup_s": WARMUP_S,
        "warmup_errors": {},
        "statuses": {},
        "offered_rate": 0.0,
        "achieved_rate": 0.0,
        "sender_lag_p99_ms": 0.0,
        **_summary([]),
        "by_kind": {kind: _summary([]) for kind in MIX},
        "windows_10s": [],
    }


def run_load(gateway: str, key: str, samples: int, rate: float, seconds: float, seed: int, tag: str) -> dict[str, Any]:
    """One open-loop run at `rate` requests/s from a fresh spawned process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_load_process, args=(gateway, key, samples, rate, seconds, seed, tag, queue))
    load_before = os.getloadavg()[0]
    process.start()
    # Poll instead of one long get: a load process that dies (killed for memory, an exception) or never reports is
    # a failed run with the reason (so the long run's retry still happens), not a bare queue.Empty much later.
    limit = seconds + WARMUP_S + MAX_SENDER_LAG_S + 150
    deadline = time.monotonic() + limit
    result: dict[str, Any] | None = None
    while result is None:
        try:
            result = queue.get(timeout=1.0)
        except Empty:
            if not process.is_alive():
                result = _no_result(rate, seconds, f"the load process exited with code {process.exitcode}")
            elif time.monotonic() > deadline:
                process.kill()
                result = _no_result(rate, seconds, f"the load process gave no result {limit:.0f} s after it started")
    process.join(timeout=30)
    # Other work on the machine shows here (the stack and this load process alone keep it near the CPU count).
    result["loadavg_1m"] = {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)}
    return result


# -- measurement around it -----------------------------------------------------------------------------------


def _rss_mb(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    sizes = {}
    for name, pid in pids.items():
        try:
            process = psutil.Process(pid)
            total = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
        except psutil.Error:
            continue
        sizes[name] = round(total / 2**20, 1)
    return sizes


def _sample_rss(pids: dict[str, int], into: list[dict[str, float]], stop: threading.Event, every: float) -> None:
    """RSS every `every` seconds until `stop`: a plateau (caches filling) reads differently from a steady climb."""
    began = time.monotonic()
    while not stop.wait(every):
        into.append({"t": round(time.monotonic() - began), **_rss_mb(pids)})


def _passes(row: dict[str, Any]) -> bool:
    return row["p99"] < P99_TARGET_MS and row["errors"] == 0 and row["achieved_rate"] >= 0.95 * row["target_rate"]


def _row(label: str, r: dict[str, Any]) -> list[str]:
    return [
        label,
        f"{r['target_rate']:.0f}",
        f"{r['achieved_rate']:.1f}",
        f"{r['seconds']:.0f}",
        str(r["ok"]),
        f"{r['p50']:.1f}",
        f"{r['p90']:.1f}",
        f"{r['p99']:.1f}",
        f"{r['max']:.1f}",
        str(r["errors"]),
        "PASS" if _passes(r) else "FAIL",
    ]


HEADER = ["run", "rate/s", "done/s", "s", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "p99<100"]


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of the long run (default 300)")
    parser.add_argument("--rate", type=float, default=None, help="skip the search and run at this rate")
    parser.add_argument("--start-rate", type=float, default=20.0, help="first rate of the step-up search")
    parser.add_argument("--step-seconds", type=float, default=15.0, help="seconds per search step")
    parser.add_argument("--samples", type=int, default=300, help="samples per stream (4 streams per session)")
    parser.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    parser.add_argument("--out", type=Path, default=None, help="folder for load.json (default $TACIT_RELIABILITY_OUT)")
    args = parser.parse_args()
    out_dir = args.out or (
        Path(os.environ["TACIT_RELIABILITY_OUT"]) if os.environ.get("TACIT_RELIABILITY_OUT") else None
    )

    bench = _bench_gateway()
    if not args.port:
        from tacit_cli.up import free_port

        args.port = free_port()
    started_at = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="tacit-load-") as tmp:
        process, key, _ = bench._up(Path(tmp), args.port)
        gateway = f"http://127.0.0.1:{args.port}"
        state = json.loads((Path(tmp) / "up.json").read_text())
        pids = {name: state["services"][name]["pid"] for name in ("gateway", "feature_svc", "reward_svc")}
        try:
            search: list[dict[str, Any]] = []
            rate = args.rate
            if rate is None:
                step = args.start_rate
                while True:
                    row = run_load(gateway, key, args.samples, step, args.step_seconds, len(search), f"s{len(search)}")
                    search.append(row)
                    print_table("step-up search", HEADER, [_row(f"step {i + 1}", r) for i, r in enumerate(search)])
                    if not _passes(row) or len(search) >= 12:
                        break
                    step = round(step * 1.3)
                passing = [r["target_rate"] for r in search if _passes(r)]
                if not passing:
                    raise SystemExit(f"no rate from {args.start_rate}/s up held p99 < {P99_TARGET_MS:.0f} ms")
                rate = max(passing)
            runs = []
            memory = []
            for attempt in range(2):
                before = _rss_mb(pids)
                samples: list[dict[str, float]] = []
                sampling = threading.Event()
                sampler = threading.Thread(target=_sample_rss, args=(pids, samples, sampling, 30.0), daemon=True)
                sampler.start()
                row = run_load(gateway, key, args.samples, rate, args.duration, 100 + attempt, f"long{attempt}")
                sampling.set()
                sampler.join()
                after = _rss_mb(pids)
                row["memory_samples_mb"] = samples
                row["memory_mb"] = {
                    name: {
                        "start": before[name],
                        "end": after.get(name, 0.0),
                        "growth": round(after.get(name, 0.0) - before[name], 1),
                    }
                    for name in before
                }
                runs.append(row)
                memory.append(row["memory_mb"])
                if _passes(row) or args.rate is not None:
                    break
                rate = round(rate * 0.75)
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=60)

    final = runs[-1]
    title = (
        f"Gateway under mixed load, {os.cpu_count()} CPUs: 80% POST /v1/sessions (store+features+score, "
        f"4 x {args.samples} samples), 10% GET one session, 10% GET a user's sessions; open loop, constant rate"
    )
    rows = [_row(f"search {i + 1}", r) for i, r in enumerate(search)]
    rows += [_row(f"long run {i + 1}", r) for i, r in enumerate(runs)]
    print_table(title, HEADER, rows)
    print_table(
        f"latency by request kind (long run {len(runs)})",
        ["kind", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [
            [kind, str(s["n"]), f"{s['p50']:.1f}", f"{s['p90']:.1f}", f"{s['p99']:.1f}", f"{s['max']:.1f}"]
            for kind, s in final["by_kind"].items()
        ],
    )
    print_table(
        f"RSS around long run {len(runs)} (process and its children)",
        ["service", "start MB", "end MB", "growth MB"],
        [[n, f"{m['start']:.1f}", f"{m['end']:.1f}", f"{m['growth']:+.1f}"] for n, m in final["memory_mb"].items()],
    )
    if final["error_kinds"]:
        print(f"errors: {final['error_kinds']}")
    for i, run in enumerate(runs, 1):
        print(f"long run {i}: {_window_line(run)}")

    fragment = {
        "kind": "load",
        "date": started_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "protocol": {
            "stack": "tacit up in a temporary home: SQLite gateway database, private Redis, demo reward model",
            "generator": "one spawned process on loopback, httpx AsyncClient on uvloop, open loop (constant arrivals)",
            "latency_from": "the time each request was due (no coordinated omission)",
            "warmup_s": WARMUP_S,
            "mix": MIX,
            "samples_per_stream": args.samples,
            "users": USERS,
            "search": f"step-up from {args.start_rate:.0f}/s, x1.3 per step, {args.step_seconds:.0f} s per step; "
            f"keep the highest rate with p99 < {P99_TARGET_MS:.0f} ms, no errors and >= 95% of the rate done"
            if args.rate is None
            else f"none (rate given: {args.rate:.0f}/s)",
            "duration_s": args.duration,
            "long_run_retry": "once, at 75% of the rate, when the first long run misses the target",
            "p99_target_ms": P99_TARGET_MS,
        },
        "search": search,
        "runs": runs,
        "result": {**final, "passed": _passes(final)},
    }
    print("\nJSON fragment:")
    print(json.dumps({k: fragment[k] for k in ("date", "machine")} | {"result": _brief(final)}, indent=2))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "load.json").write_text(json.dumps(fragment, indent=2))
        print(f"wrote {out_dir / 'load.json'}")
    if not _passes(final):
        raise SystemExit(1)


def _window_line(run: dict[str, Any]) -> str:
    windows = run.get("windows_10s") or []
    slow = [w for w in windows if w["p99"] >= P99_TARGET_MS]
    worst = max(windows, key=lambda w: w["p99"], default=None)
    text = f"{len(slow)} of {len(windows)} 10-s windows with p99 >= {P99_TARGET_MS:.0f} ms"
    if worst is not None:
        text += f"; worst at {worst['t']:.0f} s: p99 {worst['p99']:.0f} ms, max {worst['max']:.0f} ms"
    return text


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("target_rate", "achieved_rate", "seconds", "ok", "errors", "p50", "p90", "p99", "max", "memory_mb")
    keys += ("loadavg_1m",)
    return {k: r[k] for k in keys if k in r}


if __name__ == "__main__":
    main()
