"""Pairwise judging with position debiasing and a Redis cache of per-order outcomes.

A pair is judged in both orders by default (A/B, then B/A with the labels mapped back); when the two
orders name different winners the verdict is a tie and is marked inconsistent. A failed order makes the
whole verdict a failure (winner None): it is recorded, never guessed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from judge_svc.backends import Backend
from judge_svc.prompts import TEMPLATE_HASH, Judgment, build_messages, parse_judgment
from tacit.schemas.judge import JudgeRequest, OrderOutcome, Verdict, Winner

__all__ = ["Judge", "VerdictCache", "order_winner", "pair_hash"]

logger = logging.getLogger(__name__)
Order = Literal["ab", "ba"]
_SWAP: dict[Winner, Winner] = {"A": "B", "B": "A", "tie": "tie"}
_OUTCOME = msgspec.json.Decoder(OrderOutcome)
_ENCODER = msgspec.json.Encoder()


def pair_hash(request: JudgeRequest, sampling: Any) -> str:
    """sha256 of what the judge sees of a pair (prompt, answers, reference, rubric) and the sampling used."""
    fields = [request.prompt, request.answer_a, request.answer_b, request.reference, list(request.rubric), sampling]
    return hashlib.sha256(_ENCODER.encode(fields)).hexdigest()


class VerdictCache:
    """Per-order outcomes in Redis, keyed by (model, template hash, pair hash, order)."""

    def __init__(self, client: Any, *, ttl_s: int | None = 30 * 24 * 3600, prefix: str = "tacit:judge:v1") -> None:
        self.client, self.ttl_s, self.prefix = client, ttl_s, prefix

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> VerdictCache:
        import redis.asyncio as redis

        return cls(redis.Redis.from_url(url), **kwargs)

    def key(self, model: str, template_hash: str, pair: str, order: Order) -> str:
        return f"{self.prefix}:{model}:{template_hash}:{pair}:{order}"

    async def get(self, key: str) -> OrderOutcome | None:
        value = await self.client.get(key)
        if value is None:
            return None
        try:
            return _OUTCOME.decode(value)
        except msgspec.DecodeError:  # written by an incompatible version: treat as a miss
            logger.warning("undecodable cached judgment %s", key)
            return None

    async def put(self, key: str, outcome: OrderOutcome) -> None:
        await self.client.set(key, _ENCODER.encode(outcome), ex=self.ttl_s)

    async def aclose(self) -> None:
        await self.client.aclose()


def order_winner(outcome: OrderOutcome, rule: str) -> Winner | None:
    """The winner of one order under `rule`, in the request's labels; None for a failed order."""
    if outcome.error is not None:
        return None
    if rule == "from_winner_line":
        return outcome.winner_line
    if outcome.score_a is None or outcome.score_b is None:
        return None
    if outcome.score_a == outcome.score_b:
        return "tie"
    return "A" if outcome.score_a > outcome.score_b else "B"


def _outcome(order: Order, judgment: Judgment | None, **kwargs: Any) -> OrderOutcome:
    if judgment is None:
        return OrderOutcome(order=order, **kwargs)
    swap = order == "ba"
    return OrderOutcome(
        order=order,
        winner_line=_SWAP[judgment.winner] if swap else judgment.winner,
        score_a=judgment.score_b if swap else judgment.score_a,
        score_b=judgment.score_a if swap else judgment.score_b,
        criteria_a=judgment.criteria_b if swap else judgment.criteria_a,
        criteria_b=judgment.criteria_a if swap else judgment.criteria_b,
        reasoning=judgment.reasoning,
        **kwargs,
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


class Judge:
    """Judge pairs with `backend`, caching per-order outcomes in `cache` (optional)."""

    def __init__(self, backend: Backend, cache: VerdictCache | None = None) -> None:
        self.backend, self.cache = backend, cache

    async def _one(self, request: JudgeRequest, order: Order, pair: str) -> OrderOutcome:
        key = self.cache.key(self.backend.model, TEMPLATE_HASH, pair, order) if self.cache else ""
        if self.cache is not None and request.use_cache:
            hit = await self.cache.get(key)
            if hit is not None:
                return msgspec.structs.replace(hit, cached=True)
        first, second = (request.answer_a, request.answer_b) if order == "ab" else (request.answer_b, request.answer_a)
        messages = build_messages(request.prompt, first, second, reference=request.reference, rubric=request.rubric)
        result = await self.backend.judge(messages, lambda text: parse_judgment(text, request.rubric))
        outcome = _outcome(
            order,
            result.judgment,
            raw=result.raw,
            attempts=result.attempts,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            error=result.error,
        )
        if self.cache is not None and outcome.error is None:
            await self.cache.put(key, outcome)
        return outcome

    async def judge(self, request: JudgeRequest) -> Verdict:
        """One verdict for one pair (both orders concurrently unless `both_orders` is off)."""
        orders: tuple[Order, ...] = ("ab", "ba") if request.both_orders else ("ab",)
        pair = pair_hash(request, self.backend.sampling)
        outcomes = tuple(await asyncio.gather(*(self._one(request, order, pair) for order in orders)))
        winners = tuple(order_winner(outcome, request.winner_rule) for outcome in outcomes)
        errors = [f"{o.order}: {o.error}" for o in outcomes if o.error is not None]
        ok = not errors
        winner: Winner | None = None
        consistent: bool | None = None
        if ok:
            consistent = len(set(winners)) == 1 if len(winners) > 1 else None
            winner = winners[0] if len(set(winners)) == 1 else "tie"
        good = [o for o in outcomes if o.error is None]
        names = list(good[0].criteria_a) if ok else []
        fresh = [o for o in outcomes if not o.cached]
        return Verdict(
            winner=winner,
            winner_rule=request.winner_rule,
            consistent=consistent,
            order_winners=winners,
            score_a=_mean([o.score_a for o in good if o.score_a is not None]) if ok else None,
            score_b=_mean([o.score_b for o in good if o.score_b is not None]) if ok else None,
            criteria_a={name: _mean([o.criteria_a[name] for o in good]) for name in names},
            criteria_b={name: _mean([o.criteria_b[name] for o in good]) for name in names},
            outcomes=outcomes,
            backend=self.backend.name,
            model=self.backend.model,
            template_hash=TEMPLATE_HASH,
            sampling=self.backend.sampling,
            tokens_in=sum(o.tokens_in for o in fresh),
            tokens_out=sum(o.tokens_out for o in fresh),
            cached=all(o.cached for o in outcomes),
            error="; ".join(errors) or None,
        )
