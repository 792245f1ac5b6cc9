"""Feature service benchmarks: HTTP-path latency and IFLLM extraction throughput, each against a baseline.

    .venv/bin/python bench/features.py [--quick] [--data DIR_OR_TARBALL] [--no-extract]

(a) POST /v1/features for one simulated pairwise session (4 streams of 2,000 samples), in-process through the
    ASGI app, beside the pure core and a naive litestar handler (`data: FeatureRequest`, litestar's own decoding
    and encoding). The app's median is marked PASS/FAIL against the 5 ms target.
(b) `feature_svc.extract.extract_table` over the IFLLM dev subset with 2 workers, beside 1 worker and the
    reference pipeline's published figure. Each configuration runs in a fresh process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from _tables import print_table

from tacit.ifllm.archive import find_release, unpack_release

REPO = Path(__file__).resolve().parents[1]
TARBALL = REPO.parent / "shared" / "ifllm" / "ifllm-dev.tar.xz"
CACHE = Path.home() / ".cache" / "tacit" / "ifllm-dev"
TARGET_MS = 5.0
#: The reference pipeline's published extraction speed (spec): about 10 questions/s, 200 s for 5.9M samples.
REFERENCE_ROWS_PER_S = 10.0
REFERENCE_SECONDS = 200.0
REFERENCE_SAMPLES = 5_900_000


# --- (a) latency --------------------------------------------------------------------------------------------


class AsgiClient:
    """Drives an ASGI app in the running event loop: lifespan start-up, then bare HTTP requests (no sockets)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsgiClient:
        async def receive() -> dict[str, Any]:
            return await self._events.get()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                self._started.set()
            elif message["type"] == "lifespan.startup.failed":
                raise RuntimeError(message.get("message", "start-up failed"))

        self._task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
        await self._events.put({"type": "lifespan.startup"})
        await self._started.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._events.put({"type": "lifespan.shutdown"})
        if self._task is not None:
            await self._task

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def naive_app() -> Any:
    """Baseline: the same route written the default litestar way (litestar decodes `data`, encodes the answer)."""
    from litestar import Litestar, post

    from feature_svc.features import vectorize
    from tacit.schemas import FeatureRequest, FeatureVector, validate_session

    @post("/v1/features", status_code=200)
    async def features(data: FeatureRequest) -> FeatureVector:
        validate_session(data.session)
        return vectorize(data.session, data.feature_set)

    # Annotations are strings here (future import); tell litestar what they name.
    namespace = {"FeatureRequest": FeatureRequest, "FeatureVector": FeatureVector}
    return Litestar([features], logging_config=None, openapi_config=None, signature_namespace=namespace)


Timed = Callable[[], object]


async def _interleaved(paths: dict[str, Timed], n: int, warmup: int) -> dict[str, np.ndarray]:
    """Milliseconds per call of each path, taking turns in a shuffled order each round so that every path sees
    the same background load (this matters on a shared machine)."""
    rng = np.random.default_rng(0)
    labels = list(paths)
    out = {label: np.empty(n) for label in labels}
    for i in range(-warmup, n):
        for k in rng.permutation(len(labels)):
            label = labels[k]
            start = time.perf_counter()
            result = paths[label]()
            if isinstance(result, Awaitable):
                await result
            if i >= 0:
                out[label][i] = (time.perf_counter() - start) * 1000.0
    return out


async def _latencies(n: int, samples: int) -> tuple[dict[str, np.ndarray], Any, bytes]:
    from litestar.testing import TestClient

    from feature_svc.app import create_app
    from feature_svc.features import vectorize
    from feature_svc.settings import FeatureSettings
    from tacit.schemas import FeatureRequest, validate_session
    from tacit.simulate import simulate_session

    session = simulate_session(seed=7, mode="pairwise", samples=samples)
    body = msgspec.json.encode(FeatureRequest(session=session, feature_set="all"))
    decoder = msgspec.json.Decoder(FeatureRequest)

    def core_path() -> object:
        request = decoder.decode(body)
        validate_session(request.session)
        return vectorize(request.session, request.feature_set)

    def builtins_path() -> object:
        request = msgspec.convert(json.loads(body), FeatureRequest, strict=False)
        validate_session(request.session)
        return vectorize(request.session, request.feature_set)

    async with AsgiClient(create_app(FeatureSettings())) as app, AsgiClient(naive_app()) as naive:
        for label, client in (("app", app), ("naive", naive)):
            status, answer = await client.post("/v1/features", body)
            if status != 200:
                raise RuntimeError(f"{label}: POST /v1/features answered {status}: {answer[:300]!r}")
        with TestClient(create_app(FeatureSettings())) as test_client:
            paths: dict[str, Timed] = {
                "vectorize() only (session already decoded)": lambda: vectorize(session, "all"),
                "decode + validate_session + vectorize": core_path,
                "baseline: json.loads + msgspec.convert + same": builtins_path,
                "POST /v1/features, ASGI call (this app)": lambda: app.post("/v1/features", body),
                "baseline: POST, litestar default decoding": lambda: naive.post("/v1/features", body),
                "POST /v1/features via litestar TestClient": lambda: test_client.post("/v1/features", content=body),
            }
            return await _interleaved(paths, n, warmup=max(5, n // 20)), session, body


def bench_latency(n: int, samples: int) -> None:
    rows, session, body = asyncio.run(_latencies(n, samples))
    app_median = float(np.median(rows["POST /v1/features, ASGI call (this app)"]))
    table = []
    for label, ms in rows.items():
        median = float(np.median(ms))
        verdict = ("PASS" if median < TARGET_MS else "FAIL") if label.startswith("POST") else ""
        table.append(
            [
                label,
                f"{median:.2f}",
                f"{np.percentile(ms, 95):.2f}",
                f"{np.percentile(ms, 99):.2f}",
                f"{median / app_median:.2f}x",
                verdict,
            ]
        )
    streams = sum(s is not None for r in session.responses for s in (r.mouse, r.gaze))
    print_table(
        f"(a) latency, ms: pairwise session, {streams} streams x {samples} samples, {len(body) / 1e6:.2f} MB JSON, "
        f"{n} rounds (paths interleaved); target median < {TARGET_MS:g} ms",
        ["path", "median", "p95", "p99", "vs app", f"<{TARGET_MS:g}ms"],
        table,
    )


# --- (b) extraction throughput --------------------------------------------------------------------------


def resolve_data(arg: str | None) -> Path | None:
    """The unpacked IFLLM folder to use, or None (with a message) when there is none."""
    if arg is not None and not arg.endswith((".tar.xz", ".txz")):
        found = find_release(Path(arg).expanduser())
        if found is None:
            raise SystemExit(f"--data {arg}: no query_logs_table.csv in it or one level down")
        return found
    tarball = Path(arg).expanduser() if arg is not None else TARBALL
    if not tarball.is_file():
        print(f"\n(b) skipped: no --data folder and no tarball at {tarball}")
        return None
    print(f"unpacking {tarball} into {CACHE} (once) ...", flush=True)
    return unpack_release(tarball, CACHE)


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux; for children it is the largest single child, not a sum.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024.0


def extract_once(data: Path, workers: int) -> dict[str, float]:
    """One extraction in this process; run it in a fresh process (see `--one`) to measure its own peak RSS."""
    from feature_svc.extract import extract_table

    start = time.perf_counter()
    result = extract_table(data, mode="default", workers=workers)
    wall = time.perf_counter() - start
    return {
        "rows": result.rows,
        "samples": result.samples,
        "seconds": result.seconds,
        "wall": wall,
        "rss_mb": _peak_rss_mb(),
    }


def bench_extraction(data: Path, workers: int) -> None:
    runs = {}
    for n in sorted({workers, 1}, reverse=True):
        print(f"extracting {data} with {n} worker(s) ...", flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--data", str(data)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        if proc.returncode != 0:
            print(f"\n(b) extraction with {n} worker(s) failed:\n{proc.stderr[-3000:]}")
            return
        runs[n] = json.loads(proc.stdout.strip().splitlines()[-1])

    base = runs[1]["rows"] / runs[1]["seconds"]
    table = []
    for n, run in runs.items():
        rows_per_s = run["rows"] / run["seconds"]
        table.append(
            [
                f"extract_table, workers={n}",
                f"{run['rows']:,}",
                f"{run['samples']:,}",
                f"{rows_per_s:,.1f}",
                f"{run['samples'] / run['seconds']:,.0f}",
                f"{run['seconds']:.2f}",
                f"{run['wall']:.2f}",
                f"{run['rss_mb']:,.0f}",
                f"{rows_per_s / base:.2f}x",
                f"{rows_per_s / REFERENCE_ROWS_PER_S:.0f}x",
            ]
        )
    table.append(
        [
            "reference pipeline (published)",
            "",
            f"{REFERENCE_SAMPLES:,}",
            f"{REFERENCE_ROWS_PER_S:,.1f}",
            f"{REFERENCE_SAMPLES / REFERENCE_SECONDS:,.0f}",
            f"{REFERENCE_SECONDS:.0f}",
            "",
            "",
            f"{REFERENCE_ROWS_PER_S / base:.2f}x",
            "1x",
        ]
    )
    print_table(
        f"(b) extraction throughput: {data}, mode=default; peak RSS = own + largest child, MB",
        ["run", "rows", "samples", "rows/s", "samples/s", "seconds", "wall s", "peak RSS", "vs 1 worker", "vs ref"],
        table,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (60 requests instead of 300)")
    parser.add_argument("--requests", type=int, default=None, help="requests per latency row (default 300)")
    parser.add_argument("--samples", type=int, default=2000, help="samples per stream of the simulated session")
    parser.add_argument(
        "--data",
        default=None,
        help=f"unpacked IFLLM folder or a .tar.xz (default: unpack {TARBALL} into {CACHE} once)",
    )
    parser.add_argument("--workers", type=int, default=2, help="workers for the extraction run (default 2)")
    parser.add_argument("--no-extract", action="store_true", help="skip part (b)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:  # child process of part (b): one extraction, one JSON line on stdout
        print(json.dumps(extract_once(Path(args.data), args.one)))
        return 0

    n = args.requests or (60 if args.quick else 300)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, msgspec {msgspec.__version__}")
    print(f"{os.cpu_count()} CPUs, load average {load} (other work on the machine widens the tails)")
    bench_latency(n, args.samples)
    if not args.no_extract:
        data = resolve_data(args.data)
        if data is not None:
            try:
                import feature_svc.extract  # noqa: F401
            except ImportError as err:
                print(f"\n(b) skipped: feature_svc.extract is not available ({err})")
            else:
                bench_extraction(data, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
