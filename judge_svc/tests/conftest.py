"""Fixtures: a loopback OpenAI-compatible server, closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from judge_svc.testing import FakeOpenAIServer


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server
