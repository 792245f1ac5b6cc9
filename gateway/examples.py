"""Realistic request bodies for the OpenAPI schema's examples, built from the real wire types.

Each is a zero-argument function, called once when the schema is completed (`gateway.openapi.complete_openapi`),
so the simulator is imported only then. The OpenAPI tests check every example against its schema.
"""

from __future__ import annotations

import datetime as dt

from tacit.schemas.align import DpoJob, EvalParams, PairSelection, RobustDpoJob
from tacit.schemas.gateway import ImportIfllm, RescoreRequest, SessionBatch
from tacit.schemas.judge import BatchRequest, JudgeRequest
from tacit.schemas.reward import StoredSessions, TrainRewardModel
from tacit.schemas.session import Session

__all__ = [
    "alignment_job",
    "import_ifllm",
    "judge_batch",
    "judge_request",
    "pair_selection",
    "rescore",
    "session",
    "session_batch",
    "token_request",
    "train_reward_model",
]

# A short recording keeps the example readable; the simulator makes it valid (the ingest checks pass).
_SAMPLES = 12


def session(seed: int = 7) -> Session:
    """A pairwise session a simulated reader recorded (mouse and gaze), with explicit feedback."""
    from tacit.simulate import simulate_session

    return simulate_session(seed=seed, samples=_SAMPLES, session_id=f"s-{seed:04d}", user_id="u-17", task_id="t-3")


def session_batch() -> SessionBatch:
    return SessionBatch(sessions=[session(7), session(8)])


def train_reward_model() -> TrainRewardModel:
    """Train on the labelled sessions stored since a date, and make the model active."""
    since = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    return TrainRewardModel(source=StoredSessions(labelled=True, since=since), task="pairwise", activate=True)


def rescore() -> RescoreRequest:
    return RescoreRequest(user_ids=["u-17"], since=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))


def import_ifllm() -> ImportIfllm:
    return ImportIfllm(data="/data/ifllm")


def judge_request() -> JudgeRequest:
    return JudgeRequest(
        prompt="How do I keep basil fresh?",
        answer_a="Trim the stems and keep it in a glass of water on the counter, loosely covered.",
        answer_b="Put it in the fridge.",
    )


def judge_batch() -> BatchRequest:
    return BatchRequest(items=[judge_request()], label="basil answers")


def pair_selection() -> PairSelection:
    return PairSelection(source="implicit", min_confidence=0.6, max_pairs=2000)


def alignment_job() -> DpoJob | RobustDpoJob:
    """Robust DPO on the pairs the active reward model chose, judged on 100 held-out prompts."""
    return RobustDpoJob(
        base_model="Qwen/Qwen2.5-0.5B-Instruct", data=pair_selection(), evaluation=EvalParams(prompts=100)
    )


def token_request() -> dict[str, object]:
    # gateway.collector's TokenRequest; a mapping here so this module imports no route module
    return {"user_id": "u-17", "ttl_s": 900}
