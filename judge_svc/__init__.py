"""LLM-as-judge service: pairwise judgments in both orders, versioned verdicts, a Redis cache.

`prompts` holds the template and its strict parser, `backends` the judges (OpenAI-compatible HTTP, local
transformers), `protocol` the order swapping and caching, `evaluation` the aligned-vs-SFT figures, `jobs`
the batch jobs (in memory or durable in Redis), `app` the HTTP edge, `testing` a loopback OpenAI-compatible
server for tests. See docs/judge.md.
"""

from judge_svc.jobs import JobStore, MemoryRecords, RedisRecords
from judge_svc.prompts import TEMPLATE_HASH, Judgment, ParseError, build_messages, parse_judgment
from judge_svc.protocol import Judge, VerdictCache

__all__ = [
    "TEMPLATE_HASH",
    "JobStore",
    "Judge",
    "Judgment",
    "MemoryRecords",
    "ParseError",
    "RedisRecords",
    "VerdictCache",
    "build_messages",
    "parse_judgment",
]
