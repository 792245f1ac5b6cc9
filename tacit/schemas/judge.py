"""Judge-service wire types: a pairwise judgment request and the versioned verdict it produces."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from tacit.schemas.jobs import JobStatus

__all__ = [
    "CRITERIA",
    "RUBRIC_DIMS",
    "BatchAccepted",
    "BatchJob",
    "BatchJobList",
    "BatchRequest",
    "EvaluationSlice",
    "EvaluationSummary",
    "JudgeLlmStatus",
    "JudgeReloaded",
    "JudgeRequest",
    "MeanSE",
    "OrderOutcome",
    "Sampling",
    "Verdict",
    "Winner",
]

CRITERIA = ("instruction_following", "informativeness", "factuality", "clarity", "helpfulness")
"""The paper's five criteria, each scored 1 to 10 per answer (spec 8.6)."""
RUBRIC_DIMS = ("factuality", "informativeness", "relevance", "overall")
"""Optional extra rubric dimensions (the human check's scales, here scored 1 to 10 by the judge)."""

Winner = Literal["A", "B", "tie"]
RubricDim = Literal["factuality", "informativeness", "relevance", "overall"]
Text = Annotated[str, msgspec.Meta(max_length=200_000)]


class JudgeLlmStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The judge's LLM as judge_svc's `/readyz` reports it (and the gateway's `/readyz` under `judge`)."""

    status: Literal["ok", "not_configured", "unreachable"]
    configured: bool
    backend: str
    model: str
    endpoint: str | None = None
    """The endpoint URL without user, password or query string; None when none is configured."""
    detail: str | None = None
    """Why it is not usable (which settings to set, or the connection error)."""


class JudgeReloaded(msgspec.Struct, frozen=True, kw_only=True):
    """POST /admin/reload (judge_svc) and POST /v1/admin/judge/reload (gateway): the settings were read again."""

    reloaded: bool
    llm: JudgeLlmStatus
    """The LLM after the reload."""
    needs_restart: list[str] = []
    """Settings that changed but take effect only after a restart of judge_svc (they kept their old values)."""


class JudgeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/judgments: judge answer A against answer B for one prompt."""

    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=200_000)]
    """The user's query (the conversation prompt both answers reply to)."""
    answer_a: Text
    answer_b: Text
    reference: Text | None = None
    """An optional reference answer shown to the judge."""
    both_orders: bool = True
    """Judge A/B and then B/A (position debiasing); disagreement between the orders is a tie."""
    winner_rule: Literal["from_scores", "from_winner_line"] = "from_scores"
    """`from_scores`: the higher overall score wins (equal = tie); `from_winner_line`: the judge's WINNER line
    (what the reference code does)."""
    rubric: tuple[RubricDim, ...] = ()
    """Extra rubric dimensions scored beside the five criteria, reported as `rubric_<dim>`."""
    use_cache: bool = True
    """Read cached per-order outcomes; new outcomes are cached either way."""


class Sampling(msgspec.Struct, frozen=True, kw_only=True):
    """Sampling parameters the judge was called with (part of a verdict's version)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512


class OrderOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """The judge's answer for one presentation order, mapped back to the request's A/B labels.

    Also the value cached in Redis, so it carries nothing that depends on the winner rule.
    """

    order: Literal["ab", "ba"]
    """`ab`: answer A shown first; `ba`: answers swapped."""
    winner_line: Winner | None = None
    """The WINNER line, mapped back to the request's labels."""
    score_a: int | None = None
    """Overall score (SCORE line) of the request's answer A."""
    score_b: int | None = None
    criteria_a: dict[str, int] = {}
    """Per-criterion scores of answer A (the five criteria and any `rubric_<dim>`)."""
    criteria_b: dict[str, int] = {}
    reasoning: str = ""
    raw: str = ""
    """The judge's last reply, verbatim."""
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached: bool = False
    error: str | None = None
    """Why no judgment was obtained (after retries); None on success."""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a judgment request, with everything needed to reproduce it."""

    winner: Winner | None
    """None when the judge failed (never guessed)."""
    winner_rule: Literal["from_scores", "from_winner_line"]
    consistent: bool | None
    """Both orders named the same winner; None with a single order or on failure."""
    order_winners: tuple[Winner | None, ...]
    """Winner of each order under `winner_rule`, in the request's labels (same order as `outcomes`)."""
    score_a: float | None
    """Overall score of A, averaged over the orders."""
    score_b: float | None
    criteria_a: dict[str, float]
    """Per-criterion scores of A, averaged over the orders."""
    criteria_b: dict[str, float]
    outcomes: tuple[OrderOutcome, ...]
    backend: str
    model: str
    template_hash: str
    """sha256 of the prompt template (system text, user layout, examples)."""
    sampling: Sampling
    tokens_in: int
    """Tokens spent on this request (cached outcomes cost nothing)."""
    tokens_out: int
    cached: bool
    """Every outcome came from the cache."""
    error: str | None = None


class MeanSE(msgspec.Struct, frozen=True, kw_only=True):
    """A mean with its standard error (`sd(ddof=1) / sqrt(n)`); None where undefined (n = 0, or n = 1 for se)."""

    mean: float | None
    se: float | None
    n: int


class EvaluationSlice(msgspec.Struct, frozen=True, kw_only=True):
    """Aligned-vs-SFT figures over a set of judged pairs (paper Tables 3 and 5)."""

    name: str
    """`all`, or a length tercile: `short`, `medium`, `long`."""
    n: int
    """Judged pairs (failures excluded); ties count in the denominator of every rate."""
    wins: int
    ties: int
    losses: int
    win_rate: float | None
    tie_rate: float | None
    loss_rate: float | None
    score_diff: MeanSE
    """Judge's overall score of the aligned answer minus the SFT answer's."""
    sft_length: MeanSE
    """Whitespace word count of the SFT answers."""
    aligned_length: MeanSE
    mean_length_range: tuple[float, float] | None = None
    """Terciles only: the smallest and largest mean-of-both-answers length in the slice."""
    judged_both_orders: int = 0
    """Judged pairs whose verdict came from both presentation orders (the denominator of `consistency_rate`)."""
    consistent: int = 0
    """Of those, the pairs whose two orders named the same winner."""
    consistency_rate: float | None = None
    """`consistent / judged_both_orders`: how often the judge ignored the position; None when no pair was judged
    in both orders."""


class EvaluationSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The evaluation of aligned vs SFT answers by the judge (see `judge_svc.evaluation`)."""

    pairs: int
    """Pairs given, failures included."""
    failures: int
    """Pairs the judge failed on (winner None): counted here, left out of every figure."""
    overall: EvaluationSlice
    terciles: tuple[EvaluationSlice, ...]
    lc_win_rate: float | None
    """Length-controlled win rate: the logistic fit of win on length difference, at zero difference."""
    lc_slope_per_100_words: float | None
    """The fit's log-odds change per 100 words of (aligned - SFT) length difference."""
    lc_method: str


class BatchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/judgments:batch: judge many pairs in a background job."""

    items: Annotated[list[JudgeRequest], msgspec.Meta(min_length=1, max_length=1000)]
    evaluation: bool = False
    """Also summarise the verdicts, reading answer_a as the SFT answer and answer_b as the aligned one."""
    alignment_job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    """The alignment job whose SFT and aligned answers these are; echoed in the job and searchable with
    `GET /v1/judgments/jobs?alignment_job_id=...`."""
    label: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    """A free-form name for the job (shown in its status and as the plot's title)."""


class BatchAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """202 answer to a batch: where to poll."""

    job_id: str
    total: int
    status_url: str


class BatchJob(msgspec.Struct, kw_only=True):
    """GET /v1/judgments/jobs/{id}: a batch job's state; verdicts (request order) once it is done."""

    job_id: str
    status: JobStatus
    """`failed` also covers a job whose judge_svc process died while it ran (see `error`)."""
    done: int
    total: int
    failures: int = 0
    """Verdicts so far with winner None."""
    judged_both_orders: int = 0
    """Verdicts so far judged in both orders (failures excluded)."""
    consistent: int = 0
    """Of those, the verdicts whose two orders named the same winner."""
    consistency_rate: float | None = None
    """`consistent / judged_both_orders`; None until a pair was judged in both orders."""
    created_at: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    """When the job was accepted (ISO 8601, UTC, as every Tacit time; records stored as epoch seconds still read)."""
    finished_at: dt.datetime | None = None
    verdicts: list[Verdict] | None = None
    """The verdicts in request order once the job is done; always None in a job listing."""
    evaluation: EvaluationSummary | None = None
    error: str | None = None
    evaluation_requested: bool = False
    """The batch asked for an evaluation (`evaluation: true`): the job has a plot once done."""
    alignment_job_id: str | None = None
    """Echoed from the batch request."""
    label: str | None = None
    """Echoed from the batch request."""


class BatchJobList(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/judgments/jobs: batch jobs, newest first, without their verdicts (GET a job for those)."""

    jobs: list[BatchJob]
