"""Agreement of the LLM judge with human pairwise preferences (the paper's zero-shot judge baseline, spec 9).

For every IFLLM pairwise question with a human preference the judge compares response 1 (left, sent as A)
with response 2 (right, sent as B), in both orders by default. Its verdict is mapped to a prediction
(A -> left = 0, B -> right = 1, the human label's coding: 1 = right preferred); a tie (the orders disagree, or
equal scores) is no prediction, and a judge failure is counted separately.

* `accuracy` = agreements / judged pairs (ties count as disagreements, so it is comparable to a forced choice
  scored at chance);
* `accuracy_decisive` = agreements / non-tie pairs.

The paper's judges resolve order disagreement by confidence instead (no ties) and reach 0.53-0.55. Optionally a
reward model's predictions (`tacit reward predict` CSV: query_id, p_right) are scored on the same questions,
`p_right >= 0.5` meaning right preferred, and compared with the judge.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from judge_svc.protocol import Judge
from tacit.ifllm.tables import Query
from tacit.schemas.judge import JudgeRequest, Verdict

__all__ = ["AgreementItem", "AgreementReport", "judge_agreement", "labelled_pairwise", "read_predictions"]

_PREDICTION = {"A": 0, "B": 1}


@dataclass(frozen=True)
class AgreementItem:
    query_id: int
    label: int
    """Human: 1 = right preferred."""
    judge: int | None
    """Judge: 1 = right, 0 = left, None = tie or failure."""
    winner: str | None
    """The verdict's winner (A = left, B = right, tie; None = failure)."""
    reward: int | None = None
    """The reward model's prediction (p_right >= 0.5), when a predictions file covers the question."""
    error: str | None = None


@dataclass(frozen=True)
class AgreementReport:
    n: int
    """Questions judged or attempted (labelled pairwise, after --limit)."""
    judged: int
    ties: int
    failures: int
    agree: int
    accuracy: float | None
    accuracy_decisive: float | None
    right_rate_judge: float | None
    """Share of decisive judge verdicts preferring the right answer (position/slot bias check)."""
    right_rate_human: float | None
    reward_n: int = 0
    reward_accuracy: float | None = None
    """Reward model vs human, on the questions that have a reward prediction."""
    judge_reward_agreement: float | None = None
    """Judge vs reward model, on the questions where both made a prediction."""
    tokens_in: int = 0
    tokens_out: int = 0
    items: list[AgreementItem] = field(default_factory=list)

    def to_dict(self, *, items: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not items:
            data.pop("items")
        return data


def labelled_pairwise(queries: Sequence[Query], limit: int | None = None) -> list[Query]:
    """Pairwise questions with two answers and a human preference, in query-id order (first `limit`)."""
    chosen = sorted(
        (q for q in queries if q.mode == "pairwise" and q.label is not None and q.response_1 and q.response_2),
        key=lambda q: q.query_id,
    )
    return chosen[:limit] if limit is not None else chosen


def read_predictions(path: Path | str) -> dict[int, float]:
    """query_id -> p_right from a `tacit reward predict` CSV (rows without p_right are skipped)."""
    out: dict[int, float] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"query_id", "p_right"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns query_id and p_right, got {reader.fieldnames}")
        for row in reader:
            if (row.get("p_right") or "").strip():
                out[int(float(row["query_id"]))] = float(row["p_right"])
    return out


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


async def judge_agreement(
    queries: Sequence[Query],
    judge: Judge,
    *,
    predictions: dict[int, float] | None = None,
    winner_rule: str = "from_scores",
    concurrency: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> AgreementReport:
    """Judge each labelled pairwise question (both orders) and score the verdicts against the human labels."""
    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def one(q: Query) -> Verdict:
        nonlocal done
        request = JudgeRequest(
            prompt=q.query or "(empty prompt)",
            answer_a=q.response_1,
            answer_b=q.response_2 or "",
            both_orders=True,
            winner_rule=winner_rule,  # type: ignore[arg-type]
        )
        async with limit:
            verdict = await judge.judge(request)
        done += 1
        if progress is not None:
            progress(done, len(queries))
        return verdict

    verdicts = await asyncio.gather(*(one(q) for q in queries))
    predictions = predictions or {}
    items = []
    for q, v in zip(queries, verdicts, strict=True):
        assert q.label is not None
        p_right = predictions.get(q.query_id)
        items.append(
            AgreementItem(
                query_id=q.query_id,
                label=q.label,
                judge=_PREDICTION.get(v.winner) if v.winner is not None else None,
                winner=v.winner,
                reward=None if p_right is None else int(p_right >= 0.5),
                error=v.error,
            )
        )
    judged = [i for i in items if i.winner is not None]
    decisive = [i for i in judged if i.judge is not None]
    agree = sum(i.judge == i.label for i in decisive)
    rewarded = [i for i in items if i.reward is not None]
    both = [i for i in decisive if i.reward is not None]
    return AgreementReport(
        n=len(items),
        judged=len(judged),
        ties=len(judged) - len(decisive),
        failures=len(items) - len(judged),
        agree=agree,
        accuracy=_rate(agree, len(judged)),
        accuracy_decisive=_rate(agree, len(decisive)),
        right_rate_judge=_rate(sum(i.judge == 1 for i in decisive), len(decisive)),
        right_rate_human=_rate(sum(i.label == 1 for i in items), len(items)),
        reward_n=len(rewarded),
        reward_accuracy=_rate(sum(i.reward == i.label for i in rewarded), len(rewarded)),
        judge_reward_agreement=_rate(sum(i.reward == i.judge for i in both), len(both)),
        tokens_in=sum(v.tokens_in for v in verdicts),
        tokens_out=sum(v.tokens_out for v in verdicts),
        items=items,
    )
