"""A tiny causal LM built offline once per test session (random weights, locally trained tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from align_worker.training.demo_model import build_demo_model
    from align_worker.training.trainers import quiet_hub

    quiet_hub()
    out = tmp_path_factory.mktemp("demo-lm")
    build_demo_model(out)
    return out
