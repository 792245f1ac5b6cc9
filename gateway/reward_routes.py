"""Reward-model routes: reward_svc holds the registry; the gateway is the one public API (it checks scopes, trains
from stored sessions, and applies a newly active model's out-of-fold scores and starts its backfill)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery

from gateway import examples
from gateway.access import scoped
from gateway.clients import DependencyDownError, DependencyError, RewardClient
from gateway.data_roots import allowed_path
from gateway.ingest import Pipeline
from gateway.model_scores import start_rescore
from gateway.population import population_request
from gateway.settings import GatewaySettings
from gateway.state import GatewayState
from gateway.training import training_set
from tacit.db import OutOfFold, Store
from tacit.schemas.gateway import (
    RescoreRequest,
)
from tacit.schemas.reward import (
    PopulationPrior,
    RewardModelInfo,
    StoredSessions,
    TrainingMembers,
    TrainRewardModel,
    decode_train,
)

logger = logging.getLogger(__name__)
JSON = "application/json"
_ENCODER = msgspec.json.Encoder()


def _segment(value: str) -> str:
    """A path parameter as one percent-encoded segment of a proxied URL (httpx refuses control characters)."""
    return quote(value, safe="")


async def _proxy(
    state: GatewayState, method: str, path: str, body: bytes | None = None, params: dict[str, Any] | None = None
) -> Response[bytes]:
    response = await state.reward.request(method, path, content=body, params=params, retry=method == "GET")
    return Response(response.content, status_code=response.status_code, media_type=JSON)


@get("/v1/reward/models", summary="Reward models", **scoped("read", list[RewardModelInfo]))
async def list_models(state: GatewayState, task: FromQuery[str | None] = None) -> Response[bytes]:
    return await _proxy(state, "GET", "/v1/reward/models", params={"task": task} if task else None)


@get("/v1/reward/models/{model_id:str}", summary="One reward model", **scoped("read", RewardModelInfo))
async def get_model(state: GatewayState, model_id: FromPath[str]) -> Response[bytes]:
    return await _proxy(state, "GET", f"/v1/reward/models/{_segment(model_id)}")


@get(
    "/v1/reward/models/{model_id:str}/adaptation",
    summary="How a reward model adapts to the people it scores",
    **scoped("read", PopulationPrior),
)
async def model_adaptation(state: GatewayState, model_id: FromPath[str]) -> Response[bytes]:
    """The model's per-user adaptation prior re-estimated now on the labelled sessions it scored.

    `habit_weight` above `training_habit_weight` means many of the people scored label one side whatever the
    answers say, so each user's own labels count for more than the training users suggested. Scores use the
    active model's estimate, refreshed by the gateway whenever those labels change.
    """
    response = await state.reward.request("GET", f"/v1/reward/models/{_segment(model_id)}")
    task = str(msgspec.json.decode(response.content)["task"])
    rows = await anyio.to_thread.run_sync(state.store.scores.population_labels, model_id, task)
    prior = await state.reward.population_prior(_segment(model_id), population_request(rows))
    return Response(_ENCODER.encode(prior), media_type=JSON)


@post(
    "/v1/reward/models",
    status_code=202,
    summary="Train a reward model (background job)",
    **scoped("train", RewardModelInfo, (202,), body=TrainRewardModel, example=examples.train_reward_model),
)
async def train_model(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    body = await request.body()
    spec = decode_train(body)
    if not isinstance(spec.source, StoredSessions):
        settings: GatewaySettings = state.settings
        allowed_path(spec.folder or "", settings.data_roots, "data" if spec.data is not None else "source.data")
        return await _proxy(state, "POST", "/v1/reward/models", body)
    pipeline: Pipeline = state.pipeline
    training, users = await training_set(state.store, state.features, spec, pipeline.previous)
    response = await state.reward.request(
        "POST", "/v1/reward/models:sessions", content=msgspec.json.encode(training), retry=False
    )
    model_id = str(msgspec.json.decode(response.content)["id"])
    # the users go on record with the model (erasure names it); only once reward_svc has accepted the job
    await anyio.to_thread.run_sync(state.store.users.record_training_set, model_id, users)
    return Response(response.content, status_code=202, media_type=JSON)


@post(
    "/v1/reward/models/{model_id:str}/activate",
    status_code=200,
    summary="Activate a reward model",
    **scoped("train", RewardModelInfo),
)
async def activate_model(state: GatewayState, model_id: FromPath[str]) -> Response[bytes]:
    response = await _proxy(state, "POST", f"/v1/reward/models/{_segment(model_id)}/activate")
    state.pipeline._sets.clear()  # the feature set follows the active model
    if (response.status_code or 500) < 300:
        pipeline: Pipeline = state.pipeline
        if await _score_training_set(pipeline.reward, pipeline.store, model_id):
            pipeline.out_of_fold_applied.add(model_id)
        # sessions set aside for want of a model are due now
        await anyio.to_thread.run_sync(state.store.scores.retry_deferred)
        # every stored session of the model's mode gets its score, in batches on the cpu workers (a backfill)
        mode = str(msgspec.json.decode(response.content).get("task") or "")
        if mode in ("pairwise", "pointwise"):
            await start_rescore(state, model_id, mode, RescoreRequest(), reason="activated")
    return response


async def _score_training_set(reward: RewardClient, store: Store, model_id: str) -> bool:
    """The model's own training sessions get their out-of-fold scores (never in-sample ones); whether it was done.

    A failure is logged, not raised: the model is active whatever happens here (and scoring these sessions later
    through reward_svc gives their out-of-fold probabilities too).
    """
    try:
        response = await reward.request("GET", f"/v1/reward/models/{_segment(model_id)}/training-set")
        members = msgspec.json.decode(response.content, type=TrainingMembers)
        held_out = [
            OutOfFold(m.session_id, m.content_hash, m.p_out_of_fold)
            for m in members.members
            if m.p_out_of_fold is not None
        ]
        if held_out:
            await anyio.to_thread.run_sync(store.scores.apply_out_of_fold, members.model_id, members.demo, held_out)
    except Exception as err:
        logger.warning("model %s: training-set scores not applied: %s: %s", model_id, type(err).__name__, err)
        return False
    return True


async def _apply_active_training_sets(pipeline: Pipeline) -> None:
    """A model made active elsewhere (a training job with `activate`, another gateway) gets its training sessions'
    out-of-fold scores too, once per model and gateway process."""
    for mode in ("pairwise", "pointwise"):
        try:
            model_id = await pipeline.reward.active_model_id(mode)
        except (DependencyDownError, DependencyError):
            return
        if model_id is None or model_id in pipeline.out_of_fold_applied:
            continue
        if await _score_training_set(pipeline.reward, pipeline.store, model_id):
            pipeline.out_of_fold_applied.add(model_id)


# Judgments: judge_svc does the work; the gateway is the one public API (judging is not idempotent: no retry).


@post(
    "/v1/reward/models/{model_id:str}/cancel",
    status_code=200,
    summary="Cancel a queued or running reward-model training (a running one stops at its next progress step)",
    **scoped("train", RewardModelInfo),
)
async def cancel_model(state: GatewayState, model_id: FromPath[str]) -> Response[bytes]:
    # not retried (only GETs are); reward_svc's own 404/409 pass on as they are
    return await _proxy(state, "POST", f"/v1/reward/models/{_segment(model_id)}/cancel")


@delete(
    "/v1/reward/models/{model_id:str}",
    status_code=200,
    summary="Delete a reward model that is neither active nor queued or running (its registry entry and artifact)",
    **scoped("train", RewardModelInfo),
)
async def delete_model(state: GatewayState, model_id: FromPath[str]) -> Response[bytes]:
    return await _proxy(state, "DELETE", f"/v1/reward/models/{_segment(model_id)}")


def reward_routes() -> list[Any]:
    return [list_models, get_model, model_adaptation, train_model, activate_model, cancel_model, delete_model]
