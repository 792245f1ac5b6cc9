"""Judge backends: anything that turns chat messages into a parsed judgment (or a recorded failure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from judge_svc.prompts import Judgment, ParseError
from tacit.schemas.judge import Sampling

__all__ = ["Backend", "BackendResult", "Parser"]

Parser = Callable[[str], "Judgment | ParseError"]


@dataclass(frozen=True)
class BackendResult:
    """One judged order: the parsed judgment, or None with the reason, and what it cost."""

    judgment: Judgment | None
    raw: str
    attempts: int
    tokens_in: int = 0
    tokens_out: int = 0
    error: str | None = None


class Backend(Protocol):
    """What the protocol needs from a judge: a name, a model id, its sampling and one call."""

    name: str
    model: str
    sampling: Sampling

    async def judge(self, messages: Sequence[dict[str, str]], parse: Parser) -> BackendResult: ...

    async def aclose(self) -> None: ...
