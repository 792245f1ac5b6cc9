"""Routes for scores per model: rescoring jobs (backfills), their progress and cancel, and model comparisons.

The work itself runs in Celery workers (gateway.rescoring); the gateway checks the request, creates the job and its
batches in one transaction, and sends one task per batch. Activating a model starts such a job for every stored
session of its mode the model has not scored (see `start_rescore`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath

from gateway import examples
from gateway.access import json_response, scoped
from gateway.alignment import celery_producer
from gateway.clients import DependencyError
from gateway.rescoring import send_batches
from gateway.state import GatewayState
from gateway.wire import job_info
from tacit.db import JobRow, Store
from tacit.schemas.gateway import JobInfo, ModelComparison, ModelScore, RescoreRequest
from tacit.schemas.problem import RequestError, decode_body

__all__ = ["BATCH_SIZE", "model_score_routes", "model_scores", "start_rescore"]

logger = logging.getLogger(__name__)
#: Sessions per batch (one Celery task, one transaction, one feature_svc request, a few reward_svc requests).
BATCH_SIZE = 500
_RESCORE = msgspec.json.Decoder(RescoreRequest)


def model_scores(store: Store, session_id: str) -> list[ModelScore]:
    return [
        ModelScore(
            model_id=s.model_id,
            p=s.p,
            p_population=s.p_population,
            preferred=s.preferred,
            confidence=s.confidence,
            quality=s.quality,
            abstained=s.abstained,
            user_labels_used=s.user_labels_used,
            score_kind=s.score_kind,  # type: ignore[arg-type]
            demo_model=s.model_demo,
            scored_at=s.scored_at,
        )
        for s in store.scores.scores_of(session_id)
    ]


async def _model(state: GatewayState, model_id: str) -> dict[str, Any]:
    """The reward model's registry entry; 404 naming `model_id` when reward_svc does not know it."""
    try:
        response = await state.reward.request("GET", f"/v1/reward/models/{quote(model_id, safe='')}")
    except DependencyError as err:
        if err.status == 404:
            raise RequestError(404, "not_found", "model_id", f"no reward model {model_id}") from None
        raise
    return dict(msgspec.json.decode(response.content))


async def start_rescore(
    state: GatewayState, model_id: str, mode: str, request: RescoreRequest, *, reason: str
) -> tuple[JobRow, list[int]]:
    """Create a rescoring job for `model_id` and send its batches; a broker that cannot be reached fails the job
    (with the reason) instead of leaving it queued forever."""
    store: Store = state.store
    spec = {
        "model_id": model_id,
        "mode": mode,
        "reason": reason,
        "user_ids": list(request.user_ids),
        "include_demo": request.include_demo_sessions,
    }
    job, batches = await anyio.to_thread.run_sync(
        lambda: store.rescoring.create_rescore_job(
            spec,
            batch_size=BATCH_SIZE,
            user_ids=request.user_ids or None,
            since=request.since,
            until=request.until,
            include_demo=request.include_demo_sessions,
        )
    )
    if batches:
        try:
            await anyio.to_thread.run_sync(lambda: send_batches(celery_producer(state), job.id, batches))
        except Exception as err:  # the broker: kombu raises its own and OSError subclasses
            logger.warning("rescore job %s not sent: %s: %s", job.id, type(err).__name__, err)
            error = f"the task queue did not answer: {type(err).__name__}: {err}"
            job = await anyio.to_thread.run_sync(lambda: store.jobs.update_job(job.id, status="failed", error=error))
    return job, batches


@post(
    "/v1/reward/models/{model_id:str}/rescore",
    status_code=202,
    summary="Score stored sessions with a reward model (a background job in batches)",
    **scoped("train", JobInfo, (202,), body=RescoreRequest, example=examples.rescore),
)
async def rescore_model(
    request: Request[Any, Any, Any], state: GatewayState, model_id: FromPath[str]
) -> Response[bytes]:
    body = await request.body()
    spec: RescoreRequest = decode_body(_RESCORE, body) if body.strip() else RescoreRequest()
    # a time without a zone is UTC (as in a training selection)
    utc = {n: v.replace(tzinfo=dt.UTC) for n in ("since", "until") if (v := getattr(spec, n)) and v.tzinfo is None}
    spec = msgspec.structs.replace(spec, **utc) if utc else spec
    if spec.since is not None and spec.until is not None and spec.since >= spec.until:
        raise RequestError(422, "invalid", "until", "until must be after since")
    model = await _model(state, model_id)
    if model.get("status") != "succeeded":
        raise RequestError(409, "not_ready", "model_id", f"model {model_id} is {model.get('status')}, not trained")
    if spec.user_ids:
        store: Store = state.store
        known = await anyio.to_thread.run_sync(store.sessions.users_with_sessions, spec.user_ids)
        unknown = sorted(set(spec.user_ids) - known)
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise RequestError(422, "unknown", "user_ids", f"{len(unknown)} users have no stored sessions: {shown}")
    job, _ = await start_rescore(state, model_id, str(model["task"]), spec, reason="asked")
    return json_response(job_info(job), 202)


@get("/v1/reward/rescores/{job_id:str}", summary="A rescoring job and its progress", **scoped("read", JobInfo))
async def get_rescore(state: GatewayState, job_id: FromPath[str]) -> Response[bytes]:
    row = await anyio.to_thread.run_sync(state.store.jobs.get_job, job_id)
    if row is None or row.kind != "rescore":
        raise RequestError(404, "not_found", "job_id", f"no rescoring job {job_id}")
    return json_response(job_info(row))


@get("/v1/reward/rescores", summary="Rescoring jobs, newest first (the last 100)", **scoped("read", list[JobInfo]))
async def list_rescores(state: GatewayState) -> Response[bytes]:
    rows = await anyio.to_thread.run_sync(lambda: state.store.jobs.list_jobs("rescore", limit=100))
    return json_response([job_info(row) for row in rows])


@post(
    "/v1/reward/rescores/{job_id:str}/cancel",
    status_code=200,
    summary="Cancel a rescoring job (batches already scored stay)",
    **scoped("train", JobInfo),
)
async def cancel_rescore(state: GatewayState, job_id: FromPath[str]) -> Response[bytes]:
    row = await anyio.to_thread.run_sync(state.store.jobs.get_job, job_id)
    if row is None or row.kind != "rescore":
        raise RequestError(404, "not_found", "job_id", f"no rescoring job {job_id}")
    cancelled = await anyio.to_thread.run_sync(state.store.jobs.cancel_job, job_id)
    assert cancelled is not None
    return json_response(job_info(cancelled))


@get(
    "/v1/reward/models/{model_id:str}/compare/{other_id:str}",
    summary="Two reward models on the stored sessions both scored",
    **scoped("read", ModelComparison),
)
async def compare_models(state: GatewayState, model_id: FromPath[str], other_id: FromPath[str]) -> Response[bytes]:
    summary = await anyio.to_thread.run_sync(lambda: state.store.scores.compare_models(model_id, other_id))
    return json_response(ModelComparison(model_a=model_id, model_b=other_id, **summary))


def model_score_routes() -> list[Any]:
    return [rescore_model, get_rescore, list_rescores, cancel_rescore, compare_models]
