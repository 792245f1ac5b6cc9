"""The extraction pool inside a Celery worker: it must never wait forever for children that ignore SIGTERM.

Celery's warm-shutdown SIGTERM handler only sets a flag when it runs outside the worker's MainProcess; pool
children forked from a worker used to inherit it, so `Pool.__exit__` (terminate, then join) hung forever once
a task ended before every child had finished (reward training stuck at "features 0/1").
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: Extraction is stopped from the progress callback after the first task, while the other children still work.
_SCRIPT = """
import sys, types
from celery.apps.worker import install_worker_term_handler

install_worker_term_handler(types.SimpleNamespace(hostname="test@tacit"))  # what `celery worker` installs

from feature_svc.extract import extract_table


class Stop(Exception):
    pass


def progress(done, total):
    raise Stop


try:
    extract_table(sys.argv[1], workers=2, progress=progress)
except Stop:
    print("stopped cleanly", flush=True)
"""


@pytest.mark.data
def test_extraction_stopped_early_under_celerys_sigterm_handler_ends(ifllm_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), str(ifllm_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped cleanly" in proc.stdout
