"""Reward-model wire types: training requests, registry entries and scores."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from tacit.schemas.features import FeatureVector

__all__ = [
    "ModelProgress",
    "RewardModelInfo",
    "Score",
    "ScoreRequest",
    "ScoreResponse",
    "TrainRewardModel",
    "UserLabel",
]


class TrainRewardModel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/reward/models: train a reward model as a background job on the `cpu` queue."""

    data: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    """An IFLLM folder or a feature table (.parquet/.csv) readable by the worker."""
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


class ModelProgress(msgspec.Struct, frozen=True, kw_only=True):
    stage: str
    done: int
    total: int


class RewardModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A registry entry."""

    id: str
    task: str
    model: str
    feature_set: str
    feature_set_version: str
    feature_mode: str
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: ModelProgress
    error: str
    scores: dict[str, Any]
    """The stored evaluation (grouped protocol) of this model."""
    data_hash: str
    demo: bool
    active: bool
    created_at: dt.datetime
    finished_at: dt.datetime | None


class UserLabel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One explicit label a user gave earlier, with the population probability the model gave that session."""

    p_population: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    """The model's population P(class 1) for that session (never an adapted one: no label counts twice)."""
    label: Literal[0, 1]
    """Pairwise: 1 = right preferred; pointwise: 1 = current better."""
    model_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    """The model that gave `p_population`: labels scored by another model are not used (adaptation is versioned
    with the model)."""


class ScoreRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/score: one or many feature vectors; the active model of their mode unless `model_id`."""

    vectors: Annotated[list[FeatureVector], msgspec.Meta(min_length=1, max_length=10_000)]
    mode: Literal["pairwise", "pointwise"] = "pairwise"
    model_id: str | None = None
    user_history: Annotated[list[UserLabel], msgspec.Meta(max_length=1000)] = []
    """Earlier explicit labels of the one user every vector belongs to: the score is adapted to them
    (reward_svc.model.adapt) and the population probability is answered beside it."""


class Score(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    p: float
    """Pairwise: P(right preferred); pointwise: P(current better than previous). Adapted to the user when
    `user_labels_used` > 0, else the population probability."""
    preferred: Literal["left", "right", "current", "previous"]
    confidence: float
    """Probability of the preferred side: max(p, 1 - p)."""
    abstained: bool
    """The session's data quality is below the model's gate: do not act on this score."""
    quality: float | None
    model_id: str
    demo: bool
    p_population: float | None = None
    """The model's probability for an average user (no per-user adaptation)."""
    user_labels_used: int = 0
    """How many of the user's earlier explicit labels (scored by this model) adapted `p`."""


class ScoreResponse(msgspec.Struct, frozen=True, kw_only=True):
    scores: list[Score]
