"""Wire contracts: everything that crosses a process boundary."""

from tacit.schemas.features import FeatureBatchRequest, FeatureRequest, FeatureSetInfo, FeatureVector, FeatureVectors
from tacit.schemas.jobs import JobStatus, Progress
from tacit.schemas.problem import Problem
from tacit.schemas.reward import (
    RewardModelInfo,
    Score,
    ScoreRequest,
    ScoreResponse,
    TrainRewardModel,
    UserLabel,
)
from tacit.schemas.session import (
    MAX_SAMPLES,
    Consent,
    Feedback,
    Response,
    Session,
    Stream,
    ViewportStream,
)
from tacit.schemas.validate import SessionError, decode_session, decode_sessions, validate_session

__all__ = [
    "MAX_SAMPLES",
    "Consent",
    "FeatureBatchRequest",
    "FeatureRequest",
    "FeatureSetInfo",
    "FeatureVector",
    "FeatureVectors",
    "Feedback",
    "JobStatus",
    "Problem",
    "Progress",
    "Response",
    "RewardModelInfo",
    "Score",
    "ScoreRequest",
    "ScoreResponse",
    "Session",
    "SessionError",
    "Stream",
    "TrainRewardModel",
    "UserLabel",
    "ViewportStream",
    "decode_session",
    "decode_sessions",
    "validate_session",
]
