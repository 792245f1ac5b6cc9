"""Alignment wire types: preference pairs, job specs (a tagged union), progress, results and events.

A job spec is what `POST /v1/alignment/jobs` takes and what the gateway stores and hands to the Celery
worker (by job id; the worker reads the spec and the pair snapshot from the database). Defaults are the
paper's (spec 8.3 and 8.5); every one can be overridden per job.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from tacit.schemas.jobs import JobStatus

__all__ = [
    "JOB_KINDS",
    "AlignmentEvent",
    "AlignmentJobInfo",
    "AlignmentJobPage",
    "AlignmentJobSpec",
    "AlignmentProgress",
    "AlignmentResult",
    "Artifact",
    "DataSummary",
    "DpoJob",
    "DpoParams",
    "EvalParams",
    "EvaluationLink",
    "PairSelection",
    "PairsPreview",
    "PreferencePair",
    "RobustDpoJob",
    "Runtime",
    "SftJob",
    "SftParams",
    "TrainSummary",
]

Source = Literal["implicit", "explicit", "judge"]
Split = Literal["train", "test"]
JOB_KINDS = ("sft", "dpo", "rdpo")
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
LearningRate = Annotated[float, msgspec.Meta(gt=0, le=1)]


class PreferencePair(msgspec.Struct, frozen=True, kw_only=True):
    """One preference pair in the shape trl loads (`prompt`, `chosen`, `rejected`) plus confidence and provenance."""

    pair_id: str
    """Hash of (prompt, chosen, rejected): stable across exports."""
    prompt: str
    chosen: str
    rejected: str
    confidence: float
    """P(the chosen side is the preferred one); robust DPO's flip rate is clamp(1 - confidence, 0, 0.45)."""
    source: Source
    split: Split = "train"
    sessions: tuple[str, ...] = ()
    """Sessions the pair was built from (several when duplicates were merged)."""
    users: tuple[str, ...] = ()
    model_id: str | None = None
    """Reward model whose scores chose the sides (implicit pairs)."""
    agreement: float | None = None
    """Share of merged observations that agreed with the kept side (1.0 for a single observation)."""


class PairSelection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which stored sessions become pairs, and how they are split (by prompt, so no prompt is in both splits)."""

    source: Literal["implicit", "explicit"] = "implicit"
    """implicit: sides chosen by a reward model's scores; explicit: by the user's own stated preference."""
    model_id: str | None = None
    """implicit: sessions scored by this reward model (default: the active pairwise model)."""
    include_demo: bool = False
    """Also use scores of a demo model trained on simulated readers (refused otherwise)."""
    min_confidence: Annotated[float, msgspec.Meta(ge=0.5, le=1.0)] = 0.5
    """Drop implicit pairs whose confidence in the chosen side is below this."""
    include_abstained: bool = True
    """Keep sessions the reward model abstained on (their low confidence already weighs them down in rDPO)."""
    include_demo_sessions: bool = False
    """Also use sessions recorded with demo browser tokens (anyone may mint one: left out unless asked for)."""
    with_history: bool = False
    """Prefix the prompt with the conversation's earlier turns of the same task (their queries and answers)."""
    test_fraction: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.2
    seed: int = 42
    max_pairs: PositiveInt | None = None


class _Optimisation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What both stages share: the reference's RMSprop, lr 5e-7, 150 warm-up steps then constant, clip 10."""

    epochs: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    max_steps: PositiveInt | None = None
    learning_rate: LearningRate = 5e-7
    batch_size: PositiveInt = 2
    grad_accumulation: PositiveInt = 1
    warmup_steps: Annotated[int, msgspec.Meta(ge=0)] = 150
    max_grad_norm: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    max_length: PositiveInt = 512
    optimizer: Literal["rmsprop", "adamw_torch"] = "rmsprop"


class SftParams(_Optimisation, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The SFT stage (spec 8.3: both responses of every training prompt are targets, 3 epochs, batch 8)."""

    targets: Literal["both", "chosen"] = "both"
    epochs: Annotated[float, msgspec.Meta(gt=0)] = 3.0
    batch_size: PositiveInt = 8


class DpoParams(_Optimisation, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The preference stage (spec 8.5); the NLL term is the chosen response's mean token NLL (not the sum, P9)."""

    beta: Annotated[float, msgspec.Meta(gt=0)] = 0.1
    nll_weight: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    max_prompt_length: PositiveInt = 256


class EvalParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """After training: answer held-out prompts with the SFT and the aligned model and ask the judge (spec 8.6)."""

    prompts: PositiveInt = 300
    """Held-out (test-split) prompts to answer, at most."""
    temperature: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.95
    max_new_tokens: PositiveInt = 512
    seed: int = 42
    judge: bool = True
    """Request the judge's comparison (judge_svc); False keeps only the generated answers."""


class Runtime(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how the job runs."""

    checkpoint_every: PositiveInt = 50
    """Optimisation steps between checkpoints; a redelivered job resumes from the last one."""
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 on a GPU that supports it, fp32 otherwise."""
    gradient_checkpointing: bool = False
    log_every: PositiveInt = 1
    """Optimisation steps between progress updates."""


class _JobBase(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    base_model: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    """A Hugging Face causal LM: a local path on the worker, or a hub id the worker has cached (offline)."""
    data: PairSelection = PairSelection()
    runtime: Runtime = Runtime()
    evaluation: EvalParams | None = EvalParams()


class SftJob(_JobBase, frozen=True, kw_only=True, tag="sft"):
    """SFT only."""

    sft: SftParams = SftParams()


class DpoJob(_JobBase, frozen=True, kw_only=True, tag="dpo"):
    """SFT, then sigmoid DPO + NLL against the SFT model (for explicit labels)."""

    data: PairSelection = PairSelection(source="explicit")
    sft: SftParams | None = SftParams()
    """None: `base_model` is already the SFT model (it is then also the reference)."""
    dpo: DpoParams = DpoParams()


class RobustDpoJob(_JobBase, frozen=True, kw_only=True, tag="rdpo"):
    """SFT, then robust DPO (per-pair flip rate from the confidence) + NLL against the SFT model (P7)."""

    sft: SftParams | None = SftParams()
    dpo: DpoParams = DpoParams()


AlignmentJobSpec = SftJob | DpoJob | RobustDpoJob


class DataSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The pair snapshot a job trains on (taken when the job was created)."""

    source: str
    model_id: str | None
    sessions: int
    """Sessions considered."""
    pairs: int
    train: int
    test: int
    prompts_train: int
    prompts_test: int
    mean_confidence: float | None
    sha256: str
    """Hash of the snapshot's pairs (ids, sides, confidences, splits)."""
    dropped: dict[str, int] = {}
    """Sessions left out, by reason."""


class PairsPreview(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/alignment/pairs:preview answer: the pairs a job with this data selection would train on."""

    summary: DataSummary
    pairs: list[PreferencePair]


class AlignmentProgress(msgspec.Struct, frozen=True, kw_only=True):
    """Where a running job is; the last logged training figures of its current stage."""

    stage: str = ""
    step: int = 0
    total: int = 0
    epoch: float | None = None
    loss: float | None = None
    margin: float | None = None
    """Mean beta-scaled chosen-minus-rejected reward margin of the last logged batch."""
    logps_chosen: float | None = None
    logps_rejected: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None


class Artifact(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    path: str
    """On the worker host that ran the job."""
    bytes: int


class TrainSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A stage's training curve in brief: first and last logged loss and margin, and how far the weights moved."""

    stage: str
    steps: int
    loss_first: float | None
    loss_last: float | None
    margin_first: float | None = None
    margin_last: float | None = None
    train_margin_before: float | None = None
    """Mean margin (policy vs reference) over the training pairs before the stage: 0 when policy = reference."""
    train_margin_after: float | None = None
    weight_change: float = 0.0
    """Relative L2 norm of the weight change over the stage."""
    tokens_per_s: float | None = None
    seconds: float = 0.0


class EvaluationLink(msgspec.Struct, frozen=True, kw_only=True):
    """The judge's comparison of the SFT and the aligned answers on held-out prompts."""

    prompts: int
    answers_path: str
    judge_job_id: str | None = None
    status_url: str | None = None
    error: str | None = None
    """Why the evaluation failed or was skipped (the hand-off, the judge job, or the judge on every pair)."""
    status: Literal["skipped", "running", "succeeded", "failed", "unknown"] | None = None
    """The evaluation's own outcome (the job may have succeeded while its evaluation failed): `running` while the
    judge job runs, `failed` when the hand-off or the judge job failed or the judge failed on every pair,
    `unknown` when judge_svc could not be asked. Read from judge_svc when one job is fetched."""
    failures: int | None = None
    """Pairs the judge failed on (left out of the figures), once the judge job ended."""


class AlignmentResult(msgspec.Struct, frozen=True, kw_only=True):
    sft_model: str | None
    """Directory of the SFT model (the DPO reference)."""
    aligned_model: str | None
    artifacts: list[Artifact]
    stages: list[TrainSummary]
    evaluation: EvaluationLink | None = None
    device: str = "cpu"


class AlignmentJobInfo(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/alignment/jobs/{id}."""

    id: str
    kind: Literal["sft", "dpo", "rdpo"]
    status: JobStatus
    spec: AlignmentJobSpec
    data: DataSummary
    progress: AlignmentProgress
    attempts: int
    """Times a worker started the job (above 1 after a redelivery: it resumed from its checkpoint)."""
    cancel_requested: bool
    error: str
    result: AlignmentResult | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    events_url: str


class AlignmentJobPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AlignmentJobInfo]


class AlignmentEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a job's event log (streamed by GET /v1/alignment/jobs/{id}/events)."""

    seq: int
    at: dt.datetime
    kind: str
    """queued, started, resumed, stage, stage_done, progress, checkpoint, evaluation, cancel_requested, and the final
    states succeeded, failed, cancelled."""
    data: dict[str, Any] = {}
