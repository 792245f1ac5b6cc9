"""Reward-model core: estimators, evaluation protocols, session quality, compiled trees and artifacts (no web)."""

from reward_svc.model.artifact import ArtifactError, RewardModel, load_artifact, train
from reward_svc.model.compiled import CompiledModel, compile_model
from reward_svc.model.data import TaskData, load_frame, task_data
from reward_svc.model.estimators import (
    BEST,
    MODELS,
    ExtraForest,
    GradientBoosting,
    ReferenceForest,
    SwapAugmented,
    SymmetricCalibrated,
    make_model,
)
from reward_svc.model.evaluate import (
    Protocol,
    compare,
    cross_validate,
    expected_calibration_error,
    grouped_protocol,
    paper_protocol,
    summarize,
)
from reward_svc.model.quality import SessionQuality
from reward_svc.model.swap import swap_plan

__all__ = [
    "BEST",
    "MODELS",
    "ArtifactError",
    "CompiledModel",
    "ExtraForest",
    "GradientBoosting",
    "Protocol",
    "ReferenceForest",
    "RewardModel",
    "SessionQuality",
    "SwapAugmented",
    "SymmetricCalibrated",
    "TaskData",
    "compare",
    "compile_model",
    "cross_validate",
    "expected_calibration_error",
    "grouped_protocol",
    "load_artifact",
    "load_frame",
    "make_model",
    "paper_protocol",
    "summarize",
    "swap_plan",
    "task_data",
    "train",
]
