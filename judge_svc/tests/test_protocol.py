"""Order swapping, tie rules, consistency, winner rules and the Redis cache."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from judge_svc.backends.openai_compat import OpenAICompatBackend
from judge_svc.prompts import TEMPLATE_HASH
from judge_svc.protocol import Judge, VerdictCache
from judge_svc.testing import FakeOpenAIServer, Reply, judgment_text
from tacit.schemas.judge import JudgeRequest, Verdict


def _shown(body: dict[str, Any]) -> tuple[str, str]:
    user = body["messages"][1]["content"]
    first = user.split("[Response A]\n", 1)[1].split("\n\n[Response B]\n", 1)[0]
    second = user.split("\n\n[Response B]\n", 1)[1].split("\n\nCompare the two", 1)[0]
    return first, second


def fair(body: dict[str, Any]) -> Reply:
    """Prefers whichever answer says GOOD, wherever it is shown."""
    first, second = _shown(body)
    score_first, score_second = (9 if "GOOD" in first else 4), (9 if "GOOD" in second else 4)
    return Reply.ok(judgment_text(score_first, score_second))


def position_biased(_: dict[str, Any]) -> Reply:
    """Always prefers the answer shown first."""
    return Reply.ok(judgment_text(8, 5))


def _verdict(server: FakeOpenAIServer, request: JudgeRequest, cache: VerdictCache | None = None) -> Verdict:
    async def run() -> Verdict:
        backend = OpenAICompatBackend(server.base_url, "judge-model", retries=1, backoff_s=0.001)
        try:
            return await Judge(backend, cache).judge(request)
        finally:
            await backend.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize(("a", "b", "winner"), [("GOOD a", "meh b", "A"), ("meh a", "GOOD b", "B")])
def test_both_orders_map_back_to_the_request_labels(a: str, b: str, winner: str) -> None:
    with FakeOpenAIServer(fair) as server:
        verdict = _verdict(server, JudgeRequest(prompt="Q?", answer_a=a, answer_b=b))
        shown = [_shown(body) for body in server.requests]
    assert sorted(shown) == sorted([(a, b), (b, a)])
    assert verdict.winner == winner
    assert verdict.consistent is True
    assert verdict.order_winners == (winner, winner)
    assert {o.order for o in verdict.outcomes} == {"ab", "ba"}
    high, low = (9.0, 4.0) if winner == "A" else (4.0, 9.0)
    assert (verdict.score_a, verdict.score_b) == (high, low)
    assert verdict.criteria_a["factuality"] == high
    assert (verdict.tokens_in, verdict.tokens_out) == (200, 40)
    assert (verdict.backend, verdict.model, verdict.template_hash) == ("openai_compat", "judge-model", TEMPLATE_HASH)


def test_disagreeing_orders_are_a_tie_and_inconsistent() -> None:
    with FakeOpenAIServer(position_biased) as server:
        verdict = _verdict(server, JudgeRequest(prompt="Q?", answer_a="x", answer_b="y"))
    assert verdict.winner == "tie"
    assert verdict.consistent is False
    assert verdict.order_winners == ("A", "B")
    assert verdict.score_a == verdict.score_b == 6.5


def test_single_order_keeps_the_judges_position() -> None:
    with FakeOpenAIServer(position_biased) as server:
        verdict = _verdict(server, JudgeRequest(prompt="Q?", answer_a="x", answer_b="y", both_orders=False))
        assert len(server.requests) == 1
    assert (verdict.winner, verdict.consistent, len(verdict.outcomes)) == ("A", None, 1)


def test_winner_rules_differ_when_the_winner_line_contradicts_the_scores() -> None:
    def contradictory(_: dict[str, Any]) -> Reply:
        return Reply.ok(judgment_text(7, 7, winner="A"))  # equal scores, yet A named

    request = JudgeRequest(prompt="Q?", answer_a="x", answer_b="y", both_orders=False)
    with FakeOpenAIServer(contradictory) as server:
        by_scores = _verdict(server, request)
        by_line = _verdict(server, JudgeRequest(**{**_fields(request), "winner_rule": "from_winner_line"}))
    assert (by_scores.winner, by_scores.winner_rule) == ("tie", "from_scores")
    assert (by_line.winner, by_line.winner_rule) == ("A", "from_winner_line")


def test_winner_line_is_mapped_back_in_the_swapped_order() -> None:
    with FakeOpenAIServer(position_biased) as server:
        verdict = _verdict(
            server, JudgeRequest(prompt="Q?", answer_a="x", answer_b="y", winner_rule="from_winner_line")
        )
    lines = {o.order: o.winner_line for o in verdict.outcomes}
    assert lines == {"ab": "A", "ba": "B"}
    assert verdict.winner == "tie"


def test_a_failed_order_fails_the_verdict_without_guessing() -> None:
    def half_broken(body: dict[str, Any]) -> Reply:
        first, _ = _shown(body)
        return Reply.ok(judgment_text(9, 2)) if first == "x" else Reply.malformed()

    with FakeOpenAIServer(half_broken) as server:
        verdict = _verdict(server, JudgeRequest(prompt="Q?", answer_a="x", answer_b="y"))
    assert verdict.winner is None
    assert verdict.consistent is None
    assert verdict.score_a is None
    assert verdict.error is not None
    assert verdict.error.startswith("ba: unparsable reply")
    failed = next(o for o in verdict.outcomes if o.order == "ba")
    assert (failed.attempts, failed.winner_line) == (2, None)


def _fields(request: JudgeRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__struct_fields__}


def test_cache_second_call_is_a_hit_without_http(redis_url: str) -> None:
    request = JudgeRequest(prompt=f"Q {uuid.uuid4()}", answer_a="GOOD a", answer_b="b")

    async def run(server: FakeOpenAIServer) -> tuple[Verdict, Verdict, Verdict, list[bytes]]:
        cache = VerdictCache.from_url(redis_url, ttl_s=60, prefix=f"test:{uuid.uuid4().hex}")
        backend = OpenAICompatBackend(server.base_url, "judge-model", retries=0)
        try:
            judge = Judge(backend, cache)
            first = await judge.judge(request)
            second = await judge.judge(request)
            bypass = await judge.judge(JudgeRequest(**{**_fields(request), "use_cache": False}))
            keys = sorted(await cache.client.keys(f"{cache.prefix}:*"))
            return first, second, bypass, keys
        finally:
            await backend.aclose()
            await cache.aclose()

    with FakeOpenAIServer(fair) as server:
        first, second, bypass, keys = asyncio.run(run(server))
        assert len(server.requests) == 4  # first call (2 orders) + the bypass (2); the second made none
    assert (first.cached, second.cached, bypass.cached) == (False, True, False)
    assert all(o.cached for o in second.outcomes)
    assert second.winner == first.winner == "A"
    assert (second.tokens_in, second.tokens_out) == (0, 0)
    assert second.outcomes[0].tokens_in == 100  # the cached outcome keeps what it cost
    assert len(keys) == 2
    assert all(b":judge-model:" + TEMPLATE_HASH.encode() in key for key in keys)
    assert {key.rsplit(b":", 1)[1] for key in keys} == {b"ab", b"ba"}


def test_failures_are_not_cached(redis_url: str) -> None:
    request = JudgeRequest(prompt=f"Q {uuid.uuid4()}", answer_a="a", answer_b="b", both_orders=False)

    async def run(server: FakeOpenAIServer) -> tuple[Verdict, Verdict]:
        cache = VerdictCache.from_url(redis_url, prefix=f"test:{uuid.uuid4().hex}")
        backend = OpenAICompatBackend(server.base_url, "judge-model", retries=0)
        try:
            judge = Judge(backend, cache)
            return await judge.judge(request), await judge.judge(request)
        finally:
            await backend.aclose()
            await cache.aclose()

    with FakeOpenAIServer() as server:
        server.push(Reply.server_error())
        failed, retried = asyncio.run(run(server))
    assert (failed.winner, failed.error) == (None, "ab: http_500")
    assert (retried.winner, retried.cached) == ("A", False)
