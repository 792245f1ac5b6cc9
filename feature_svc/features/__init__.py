"""Pure feature core: no web imports. Sessions or IFLLM segments in, named feature vectors out."""

from feature_svc.features.compute import Observation, compute, from_segment, from_session, select
from feature_svc.features.sets import FEATURE_SETS, FeatureSet, feature_group, get_feature_set
from feature_svc.features.vectors import FeatureError, vectorize, vectorize_batch

__all__ = [
    "FEATURE_SETS",
    "FeatureError",
    "FeatureSet",
    "Observation",
    "compute",
    "feature_group",
    "from_segment",
    "from_session",
    "get_feature_set",
    "select",
    "vectorize",
    "vectorize_batch",
]
