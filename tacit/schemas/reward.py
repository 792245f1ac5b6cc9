"""Reward-model wire types: training requests, registry entries and scores."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from tacit.schemas.features import FeatureVector
from tacit.schemas.jobs import JobStatus, Progress
from tacit.schemas.problem import RequestError, decode_body

__all__ = [
    "MIN_TRAINING_SESSIONS",
    "MIN_TRAINING_USERS",
    "POPULATION_LABELS",
    "IfllmSource",
    "PopulationLabel",
    "PopulationPrior",
    "PopulationRequest",
    "RewardModelInfo",
    "Score",
    "ScoreKind",
    "ScoreRequest",
    "ScoreResponse",
    "SessionTrainingSet",
    "StoredSessions",
    "TrainRewardModel",
    "TrainingMember",
    "TrainingMembers",
    "TrainingRow",
    "TrainingSetSummary",
    "TrainingSource",
    "UserErasure",
    "UserLabel",
    "decode_train",
]

#: Fewest labelled sessions a model is trained from (stored-session source).
MIN_TRAINING_SESSIONS = 20
#: Fewest users: the grouped protocol's 5 folds each hold out at least one user.
MIN_TRAINING_USERS = 5

#: How a stored score was made: by the model itself, or (a session of the model's own training set) by the
#: grouped cross-validation models that never saw that session's user.
ScoreKind = Literal["model", "out_of_fold"]
_ID = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class IfllmSource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="ifllm", tag_field="kind"):
    """Train from an IFLLM folder or a feature table readable by the worker (what `data` says)."""

    data: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class StoredSessions(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="sessions", tag_field="kind"
):
    """Train from sessions stored by the gateway, selected by these filters (all must hold); labels are their
    explicit feedback. Sessions of the model's `task` only."""

    mode: Literal["pairwise", "pointwise"] | None = None
    """The sessions' mode: the model's `task` (given, it must equal it)."""
    user_ids: Annotated[list[_ID], msgspec.Meta(min_length=1, max_length=10_000)] | None = None
    """Only these users' sessions (every one must have stored sessions); None: every user."""
    since: dt.datetime | None = None
    """Only sessions received at or after this time."""
    until: dt.datetime | None = None
    """Only sessions received before this time."""
    labelled: bool | None = None
    """True: only sessions with explicit feedback; False: only without (nothing to learn from); None: any (the
    labelled ones are trained on)."""
    include_demo: bool = False
    """Also sessions recorded with demo browser tokens (anyone may mint one)."""


TrainingSource = IfllmSource | StoredSessions


class TrainRewardModel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/reward/models: train a reward model as a background job on the `cpu` queue."""

    data: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    """An IFLLM folder or a feature table (.parquet/.csv) readable by the worker (or give `source`)."""
    source: TrainingSource | None = None
    """What to train from: `{"kind": "sessions", ...filters}` (sessions stored by the gateway) or
    `{"kind": "ifllm", "data": ...}` (the same as `data`). Exactly one of `data` and `source`."""
    task: Literal["pairwise", "pointwise"] = "pairwise"
    model: str | None = None
    """Estimator name (`tacit reward evaluate` lists them); default: the best by the grouped protocol."""
    feature_set: Literal["text", "all", "paper_if", "paper_if_no_gaze", "paper_if_no_mouse"] | None = None
    feature_mode: Literal["default", "reference"] = "default"
    seeds: Annotated[int, msgspec.Meta(ge=0, le=20)] = 5
    """Grouped cross-validation repeats whose scores are stored with the model (0 = skip)."""
    activate: bool = False
    """Make it the active model of its task when training succeeds."""
    demo: bool = False
    """The data is simulated: the model is marked as a demo everywhere it shows."""

    def __post_init__(self) -> None:
        if (self.data is None) == (self.source is None):
            raise ValueError("give exactly one of `data` and `source`")

    @property
    def folder(self) -> str | None:
        """The IFLLM folder or feature table to train from (None for stored sessions)."""
        return self.source.data if isinstance(self.source, IfllmSource) else self.data


_TRAIN = msgspec.json.Decoder(TrainRewardModel)


def decode_train(body: bytes) -> TrainRewardModel:
    """A POST /v1/reward/models body; RequestError (400/422 naming the field) when it is not one."""
    try:
        spec: TrainRewardModel = decode_body(_TRAIN, body)
    except RequestError as err:
        if err.field == "$" and "exactly one of" in err.detail:
            raise RequestError(422, err.code, "source", err.detail) from None
        raise
    if isinstance(spec.source, StoredSessions) and spec.source.mode not in (None, spec.task):
        raise RequestError(422, "invalid", "source.mode", f"the sessions' mode must be the model's task ({spec.task})")
    if isinstance(spec.source, StoredSessions) and spec.feature_mode != "default":
        raise RequestError(422, "invalid", "feature_mode", "stored sessions have the served (default) features only")
    if isinstance(spec.source, StoredSessions) and spec.seeds < 1:
        raise RequestError(
            422, "invalid", "seeds", "training from stored sessions needs seeds >= 1 (their out-of-fold scores)"
        )
    return spec


class TrainingRow(msgspec.Struct, frozen=True, kw_only=True):
    """One stored session of a training set, as the gateway's feature extraction (the serving one) saw it."""

    session_id: str
    user_id: str
    task_id: str
    turn: int
    label: Literal[0, 1]
    samples: int
    content_hash: str
    """sha256 of the stored session (the gateway's `payload_sha256`)."""
    values: list[float]


class SessionTrainingSet(msgspec.Struct, frozen=True, kw_only=True):
    """gateway -> reward_svc: train `spec` (a stored-sessions source) on these rows, in the named feature set."""

    spec: TrainRewardModel
    feature_set: str
    feature_set_version: str
    names: list[str]
    rows: list[TrainingRow]


class TrainingSetSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a model was trained on, in counts (never ids: listings are public)."""

    source: Literal["sessions", "ifllm"]
    sessions: int
    users: int
    labels: dict[str, int]
    """Sessions per label ("0", "1")."""
    digest: str
    """sha256 over the sorted (session id, content hash) pairs: two models with one digest saw the same sessions."""


class TrainingMember(msgspec.Struct, frozen=True, kw_only=True):
    """One session of a model's training set, with its out-of-fold probability (internal listing)."""

    session_id: str
    user_id: str
    content_hash: str
    label: int
    p_out_of_fold: float | None
    """P(class 1) from the grouped cross-validation models that did not see this user (mean over seeds)."""


class TrainingMembers(msgspec.Struct, frozen=True, kw_only=True):
    model_id: str
    task: str
    demo: bool
    members: list[TrainingMember]


class UserErasure(msgspec.Struct, frozen=True, kw_only=True):
    """reward_svc's part of erasing a user: the training-set rows dropped and the models they belonged to."""

    rows_deleted: int
    models_affected: list[str]


class RewardModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A registry entry."""

    id: str
    task: str
    model: str
    feature_set: str
    feature_set_version: str
    feature_mode: str
    status: JobStatus
    progress: Progress
    error: str
    scores: dict[str, Any]
    """The stored evaluation (grouped protocol) of this model."""
    data_hash: str
    demo: bool
    active: bool
    created_at: dt.datetime
    finished_at: dt.datetime | None
    training_set: TrainingSetSummary | None = None
    """How many sessions and users it was trained on (None for models trained before this was recorded)."""


class UserLabel(msgspec.Struct, frozen=True, kw_only=True):
    """One explicit label a user gave earlier, with the population probability the model gave that session.

    Service to service (gateway -> reward_svc): unknown fields are ignored, so a newer sender may add one while
    older services still run (rolling upgrades)."""

    p_population: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    """The model's population P(class 1) for that session (never an adapted one: no label counts twice)."""
    label: Literal[0, 1]
    """Pairwise: 1 = right preferred; pointwise: 1 = current better."""
    model_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    """The model that gave `p_population`: labels scored by another model are not used (adaptation is versioned
    with the model)."""
    task_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    """The task the session belongs to: labels of one task count as correlated evidence (reward_svc.model.adapt).
    None: the label counts alone."""


#: At most this many labels estimate a population's adaptation prior (the newest ones; the estimate is one number).
POPULATION_LABELS = 20_000


class PopulationLabel(msgspec.Struct, frozen=True, kw_only=True):
    """One explicit label of the people a model scores, with the model's population probability of that session."""

    user: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    """Who gave it, as a pseudonym that only has to be the same for one person within the request."""
    p_population: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    label: Literal[0, 1]
    task: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    """The session's task, as a pseudonym that only has to be the same for one task within the request (labels
    of one task count as correlated evidence). None: the label counts alone."""


class PopulationRequest(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/reward/models/{id}/population-prior: the labels of the people the model scores.

    Service to service (gateway -> reward_svc): unknown fields are ignored, for rolling upgrades."""

    labels: Annotated[list[PopulationLabel], msgspec.Meta(max_length=POPULATION_LABELS)]


class PopulationPrior(msgspec.Struct, frozen=True, kw_only=True):
    """A model's per-user adaptation prior re-estimated on the people it scores (empirical Bayes over them).

    The same step `tacit reward predict --adapt-first-k` takes over the users of its data: when many of the people
    scored turn out to have side habits, each user's few labels count for more (reward_svc.model.adapt)."""

    model_id: str
    habit_weight: float
    """The prior probability that a user has a side habit, as scoring uses it: never below the training one."""
    training_habit_weight: float
    """The model's own prior weight, from its training users (the floor)."""
    estimated_weight: float | None
    """The maximum-likelihood weight on these labels before the floor (None: no labels)."""
    users: int
    labels: int


class ScoreRequest(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/score: one or many feature vectors; the active model of their mode unless `model_id`.

    Service to service (the gateway and the rescoring workers -> reward_svc): unknown fields are ignored, for
    rolling upgrades; the public bodies of the gateway keep refusing them."""

    vectors: Annotated[list[FeatureVector], msgspec.Meta(min_length=1, max_length=10_000)]
    mode: Literal["pairwise", "pointwise"] = "pairwise"
    model_id: str | None = None
    user_history: Annotated[list[UserLabel], msgspec.Meta(max_length=1000)] = []
    """Earlier explicit labels of the one user every vector belongs to: the score is adapted to them
    (reward_svc.model.adapt) and the population probability is answered beside it."""
    population: PopulationPrior | None = None
    """The scoring model's prior re-estimated on the people it scores (POST .../population-prior); used only by
    the model it names, and never below that model's own weight. None: the model's training prior."""


class Score(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    p: float
    """Pairwise: P(right preferred); pointwise: P(current better than previous). Adapted to the user when
    `user_labels_used` > 0, else the population probability."""
    preferred: Literal["left", "right", "current", "previous"]
    confidence: float
    """Probability of the preferred side: max(p, 1 - p)."""
    abstained: bool
    """Do not act on this score (the reason is in `abstain_reason`)."""
    abstain_reason: Literal["no_behaviour_samples", "quality_below_gate"] | None = None
    """Why the model abstains; None when it does not."""
    quality: float | None
    model_id: str
    demo: bool
    p_population: float | None = None
    """The model's probability for an average user (no per-user adaptation)."""
    user_labels_used: int = 0
    """How many of the user's earlier explicit labels (scored by this model) adapted `p`."""
    kind: ScoreKind = "model"
    """`out_of_fold`: the session is in this model's training set, so `p` comes from the grouped cross-validation
    models that never saw its user (never in-sample; not adapted)."""


class ScoreResponse(msgspec.Struct, frozen=True, kw_only=True):
    scores: list[Score]
