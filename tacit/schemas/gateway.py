"""Gateway wire types: what POST /v1/sessions answers and what the session listing returns."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from tacit.schemas.jobs import JobStatus
from tacit.schemas.problem import Problem
from tacit.schemas.session import Session

__all__ = [
    "Erasure",
    "ImportIfllm",
    "JobInfo",
    "Problem",
    "SessionBatch",
    "SessionPage",
    "SessionRecord",
    "SessionScore",
]


class SessionScore(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to an ingested session. `status` is `pending` while a dependency is down (stored, scored later)."""

    session_id: str
    status: Literal["scored", "pending", "failed"]
    preferred: Literal["left", "right", "current", "previous"] | None = None
    """The side the probability favours (`right` when `p_right` >= 0.5, `current` when `p_current` >= 0.5). When
    `abstained` is true it is only the model's lean, not a prediction to act on. None until scored."""
    p_right: float | None = None
    """Pairwise: P(right preferred)."""
    p_current: float | None = None
    """Pointwise: P(current answer better than the previous one)."""
    p_right_population: float | None = None
    """Pairwise: P(right preferred) for an average user, before adaptation to this user."""
    p_current_population: float | None = None
    """Pointwise: the same for P(current better)."""
    user_labels_used: int | None = None
    """How many of this user's earlier explicit labels (scored by the same model) adapted `p_right`/`p_current`:
    0 means the answer is the population probability."""
    confidence: float | None = None
    """max(p, 1 - p) of the answered probability: 0.5 is a coin flip, 1.0 certain. It is the model's calibrated
    confidence, not the session's data quality (`quality`)."""
    model_version: str | None = None
    """Reward model id that produced the score."""
    demo_model: bool = False
    """The score comes from a demo model trained on simulated readers."""
    quality: float | None = None
    """The session's data quality in [0, 1]: the mean percentile, among the model's training sessions, of the gaze
    samples' share inside the answer boxes, head-in-box share, reading coverage and samples per answer
    (reward_svc/model/quality.py). Low quality makes the model abstain only when its gate passed its grouped check."""
    abstained: bool | None = None
    """True: do not act on this score. `preferred` and the probabilities are still given (what the model would
    say), and `abstain_reason` says why the model abstains."""
    abstain_reason: Literal["no_behaviour_samples", "quality_below_gate"] | None = None
    """`no_behaviour_samples`: the session has no mouse or gaze samples, so nothing was measured;
    `quality_below_gate`: its data quality is below the model's gate (only for models whose gate passed its
    grouped check). None when the model does not abstain."""
    created: bool = True
    """Whether this request stored the session: False when its id was already stored (an idempotent re-post).
    Meaningful in the answer to a POST only; scores read back later (GET, `include=scores`) carry False."""
    pending_reason: str | None = None
    """Why the score is still pending (a service down, or the reward service's refusal, e.g. no active model for
    the session's mode); None once scored."""
    score_kind: Literal["model", "out_of_fold"] | None = None
    """`out_of_fold`: the session is in the scoring model's own training set, so the score comes from the grouped
    cross-validation models that never saw its user (never in-sample; not adapted); `model`: the model itself;
    None when not scored (or scored before this was recorded)."""


class SessionBatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/sessions:batch body."""

    sessions: Annotated[list[Session], msgspec.Meta(min_length=1, max_length=500)]


class ModelScore(msgspec.Struct, frozen=True, kw_only=True):
    """One model's score of a session (every model that scored it keeps one; `GET /v1/sessions/{id}?include=scores`)."""

    model_id: str
    p: float
    """Pairwise: P(right preferred); pointwise: P(current better). Adapted to the user when `user_labels_used` > 0."""
    p_population: float
    preferred: str
    confidence: float
    quality: float | None
    abstained: bool
    user_labels_used: int
    score_kind: Literal["model", "out_of_fold"]
    """`out_of_fold`: the session is in this model's training set and was scored by models that never saw its user."""
    demo_model: bool
    scored_at: dt.datetime


class SessionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored session: identity, consent, score and (on request) the trajectories."""

    session_id: str
    user_id: str
    task_id: str
    query_id: str | None
    mode: str
    turn: int | None
    received_at: dt.datetime
    consent: dict[str, bool]
    label: int | None
    samples: int
    feature_set: str | None
    feature_set_version: str | None
    score: SessionScore
    session: Session | None = None
    demo: bool = False
    """Recorded with a demo browser token: left out of training pairs unless asked for."""
    scores: list[ModelScore] | None = None
    """Every model's score of this session, oldest first (only with `include=scores`)."""


class SessionPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[SessionRecord]
    next_cursor: str | None


class Erasure(msgspec.Struct, frozen=True, kw_only=True):
    """What DELETE /v1/users/{user_id} removed, and which reward models had been trained on that user."""

    user_id: str
    rows_deleted: dict[str, int]
    models_affected: list[str]
    """Every reward model whose training set included the user (they still carry what they learned)."""
    not_erased: list[str] = []
    """Parts that could not be erased now (a service was down): repeat the erasure to finish it."""


class ImportIfllm(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/imports/ifllm: import an IFLLM release folder readable by the server."""

    data: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class JobInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A background job of the gateway, with its progress."""

    id: str
    kind: str
    status: JobStatus
    stage: str
    done: int
    total: int
    error: str
    result: dict[str, int] | None
    created_at: dt.datetime
    updated_at: dt.datetime


class RescoreRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/reward/models/{model_id}/rescore: which stored sessions of the model's mode to score with it.

    Sessions the model has scored already are skipped (a rescoring is idempotent per session and model).
    """

    user_ids: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=128)]], msgspec.Meta(max_length=1000)
    ] = []
    """Only these users' sessions (empty: every user); each must have stored sessions."""
    since: dt.datetime | None = None
    """Only sessions received at or after this time (UTC when it has no zone)."""
    until: dt.datetime | None = None
    """Only sessions received before this time (UTC when it has no zone)."""
    include_demo_sessions: bool = False
    """Also sessions recorded with demo browser tokens."""


class ModelComparison(msgspec.Struct, frozen=True, kw_only=True):
    """Two reward models on the stored sessions both have scored (`GET /v1/reward/models/{a}/compare/{b}`)."""

    model_a: str
    model_b: str
    scored_a: int
    """Sessions model a has scored (all of them, not only the shared ones)."""
    scored_b: int
    sessions_both: int
    """Sessions both have scored: every figure below is over these."""
    agreeing: int
    agreement: float | None
    """Share of the shared sessions where both prefer the same side (None when there are none)."""
    mean_abs_p_difference: float | None
    labelled: int
    """Shared sessions with explicit feedback."""
    correct_a: int
    correct_b: int
    accuracy_a: float | None
    """Share of the labelled shared sessions where model a's side is the one the user chose."""
    accuracy_b: float | None
    out_of_fold_a: int
    """Shared sessions in model a's training set (scored out of fold, never in-sample)."""
    out_of_fold_b: int
    neither_abstained: int
