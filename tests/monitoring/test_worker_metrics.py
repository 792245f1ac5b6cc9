"""Worker metrics in prometheus-client's multiprocess mode: values set in a forked child reach the worker's /metrics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

_WORKER = """
import multiprocessing, sys, time
from align_worker import metrics

metrics._on_worker_init()  # what Celery's worker_init signal runs in the main process


def child() -> None:  # a prefork pool process running an alignment job
    metrics.job_started("dpo")
    metrics.training_step("dpo", "dpo", 0.5, 1.25, 900.0)
    metrics.job_finished("dpo", "succeeded", 120.0)
    # An IFLLM import on the cpu queue counts what it stores with the gateway's ingest counter (another registry).
    from gateway.imports import _INGESTED

    _INGESTED.labels("pairwise", "true", "import").inc(3)
    metrics._on_process_shutdown(pid=None)


process = multiprocessing.get_context("fork").Process(target=child)
process.start()
process.join()
print("ready", flush=True)
time.sleep(60)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _value(text: str, sample: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(sample + " "))
    return float(line.rsplit(" ", 1)[1])


def test_values_of_a_forked_job_are_served_by_the_main_process(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "counter_1.db").write_bytes(b"")  # left by an earlier run: removed at start-up
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        "TACIT_WORKER_METRICS_PORT": str(port),
        "TACIT_WORKER_METRICS_ADDR": "127.0.0.1",
    }
    worker = subprocess.Popen([sys.executable, "-c", _WORKER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()

    assert _value(text, 'tacit_align_jobs_total{kind="dpo",state="succeeded"}') == 1
    assert _value(text, 'tacit_align_job_seconds_count{kind="dpo"}') == 1
    assert _value(text, 'tacit_align_loss{kind="dpo",stage="dpo"}') == 0.5
    assert _value(text, 'tacit_align_margin{kind="dpo",stage="dpo"}') == 1.25
    assert _value(text, 'tacit_align_tokens_per_second{kind="dpo",stage="dpo"}') == 900
    assert _value(text, 'tacit_align_jobs_running{kind="dpo"}') == 0  # the child's share left with it
    # Known label sets are there before any job: zero counts, NaN loss (nothing trained yet).
    assert _value(text, 'tacit_align_jobs_total{kind="sft",state="failed"}') == 0
    assert str(_value(text, 'tacit_align_loss{kind="rdpo",stage="rdpo"}')) == "nan"
    assert not (tmp_path / "prom" / "counter_1.db").exists()
    assert _value(text, 'tacit_sessions_ingested_total{gaze_consent="true",mode="pairwise",source="import"}') == 3
