"""Feature-vector wire types shared by feature_svc, reward_svc and the gateway."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from tacit.schemas.session import Session

__all__ = ["FeatureBatchRequest", "FeatureRequest", "FeatureSetInfo", "FeatureVector", "FeatureVectors"]

FeatureSetId = Literal["text", "all", "paper_if", "paper_if_no_gaze", "paper_if_no_mouse"]


class FeatureVector(msgspec.Struct, frozen=True, kw_only=True):
    """Features of one session, tagged with the feature set (and its version) that made them."""

    session_id: str
    feature_set: str
    feature_set_version: str
    names: list[str]
    values: list[float]
    """Same order as `names`; always finite."""
    samples: int = 0
    """Samples the features were computed from (all streams)."""


class FeatureVectors(msgspec.Struct, frozen=True, kw_only=True):
    """Batch answer: one vector per session, in request order."""

    feature_set: str
    feature_set_version: str
    names: list[str]
    vectors: list[FeatureVector]


class FeatureRequest(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/features body (service to service: unknown fields are ignored, for rolling upgrades; the Session
    inside is the public contract and keeps refusing them)."""

    session: Session
    feature_set: FeatureSetId = "all"
    previous: Session | None = None
    """Pointwise: the conversation's preceding question, needed by sets with `prev_*` features."""


class FeatureBatchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/features:batch body (service to service: unknown fields are ignored, for rolling upgrades)."""

    sessions: Annotated[list[Session], msgspec.Meta(min_length=1, max_length=1000)]
    feature_set: FeatureSetId = "all"


class FeatureSetInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A named, versioned feature set."""

    id: str
    version: str
    mode: Literal["pairwise", "pointwise", "any"]
    description: str
    names: list[str]
