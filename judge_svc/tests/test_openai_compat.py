"""The OpenAI-compatible backend against a real loopback server: retries, backoff, timeouts, tokens."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from judge_svc.backends import BackendResult
from judge_svc.backends.openai_compat import OpenAICompatBackend
from judge_svc.prompts import build_messages, parse_judgment
from judge_svc.testing import FakeOpenAIServer, Reply, judgment_text
from tacit.schemas.judge import Sampling

MESSAGES = build_messages("Q?", "one", "two")


def _judge(fake: FakeOpenAIServer, sleeps: list[float] | None = None, **kwargs: Any) -> BackendResult:
    async def record(delay: float) -> None:
        if sleeps is not None:
            sleeps.append(delay)

    async def run() -> BackendResult:
        options: dict[str, Any] = {"retries": 2, "timeout_s": 5.0, "backoff_s": 0.01, "sleep": record, **kwargs}
        backend = OpenAICompatBackend(fake.base_url, "judge-model", "secret", **options)
        try:
            return await backend.judge(MESSAGES, parse_judgment)
        finally:
            await backend.aclose()

    return asyncio.run(run())


def test_well_formed_reply_with_token_accounting(fake: FakeOpenAIServer) -> None:
    fake.push(Reply.ok(judgment_text(8, 2), usage=(321, 45)))
    result = _judge(fake, sampling=Sampling(temperature=0.5, max_tokens=100))
    assert result.error is None
    assert result.judgment is not None
    assert result.judgment.winner == "A"
    assert (result.attempts, result.tokens_in, result.tokens_out) == (1, 321, 45)
    sent = fake.requests[0]
    assert sent["model"] == "judge-model"
    assert sent["temperature"] == 0.5
    assert sent["max_tokens"] == 100
    assert sent["messages"] == MESSAGES


def test_429_honours_retry_after(fake: FakeOpenAIServer) -> None:
    fake.push(Reply.rate_limited(retry_after=3), Reply.ok(judgment_text(5, 6)))
    sleeps: list[float] = []
    result = _judge(fake, sleeps)
    assert result.judgment is not None
    assert result.attempts == 2
    assert sleeps == [3.0]


def test_5xx_and_429_without_header_back_off_exponentially(fake: FakeOpenAIServer) -> None:
    fake.push(Reply.server_error(503), Reply.rate_limited(retry_after=None), Reply.ok(judgment_text(5, 6)))
    sleeps: list[float] = []
    result = _judge(fake, sleeps, backoff_s=1.0)
    assert result.judgment is not None
    assert result.attempts == 3
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0  # jittered 1 s
    assert 1.0 <= sleeps[1] <= 2.0  # jittered 2 s


def test_timeout_is_retried(fake: FakeOpenAIServer) -> None:
    fake.push(Reply.slow(1.0, judgment_text(9, 1)), Reply.ok(judgment_text(2, 7)))
    start = time.perf_counter()
    result = _judge(fake, timeout_s=0.2)
    assert time.perf_counter() - start < 1.0
    assert result.judgment is not None
    assert result.judgment.winner == "B"
    assert result.attempts == 2


def test_malformed_reply_is_retried_then_accepted(fake: FakeOpenAIServer) -> None:
    fake.push(Reply.malformed(), Reply.ok(judgment_text(3, 3)))
    result = _judge(fake)
    assert result.judgment is not None
    assert result.judgment.winner == "tie"
    assert (result.attempts, result.tokens_in, result.tokens_out) == (2, 200, 40)  # both attempts were paid for


def test_persistently_malformed_reply_is_a_recorded_failure(fake: FakeOpenAIServer) -> None:
    fake.push(*[Reply.malformed("A is better")] * 3)
    result = _judge(fake)
    assert result.judgment is None
    assert result.attempts == 3
    assert result.error is not None
    assert result.error.startswith("unparsable reply")
    assert result.raw == "A is better"
    assert len(fake.requests) == 3


def test_exhausted_retries_on_server_errors(fake: FakeOpenAIServer) -> None:
    fake.push(*[Reply.server_error()] * 3)
    result = _judge(fake)
    assert (result.judgment, result.error, result.attempts) == (None, "http_500", 3)


def test_client_errors_are_not_retried(fake: FakeOpenAIServer) -> None:
    fake.push(Reply(status=400, body=b'{"error": {"message": "bad model"}}'))
    result = _judge(fake)
    assert (result.error, result.attempts, len(fake.requests)) == ("http_400", 1, 1)


def test_non_json_body_is_retried(fake: FakeOpenAIServer) -> None:
    fake.push(Reply(body=b"<html>gateway</html>"), Reply.ok(judgment_text(6, 2)))
    result = _judge(fake)
    assert result.judgment is not None
    assert result.attempts == 2


def test_concurrency_is_limited() -> None:
    lock = threading.Lock()
    in_flight = [0, 0]  # now, max

    def responder(_: dict[str, Any]) -> Reply:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return Reply.ok(judgment_text(7, 3))

    async def run(url: str) -> list[BackendResult]:
        backend = OpenAICompatBackend(url, "m", concurrency=2)
        try:
            return await asyncio.gather(*(backend.judge(MESSAGES, parse_judgment) for _ in range(6)))
        finally:
            await backend.aclose()

    with FakeOpenAIServer(responder) as server:
        results = asyncio.run(run(server.base_url))
    assert all(r.judgment is not None for r in results)
    assert in_flight[1] == 2
