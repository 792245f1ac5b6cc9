"""Session and user routes: ingest one or a batch, read, list, and erase a user."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery

from gateway import examples
from gateway.access import json_response, scoped
from gateway.clients import DependencyDownError, DependencyError
from gateway.ingest import refuse_nul_ids
from gateway.model_scores import model_scores
from gateway.state import GatewayState
from gateway.wire import session_record
from tacit.db import SessionConflict
from tacit.schemas import Session, SessionError, validate_session
from tacit.schemas.gateway import (
    Erasure,
    SessionBatch,
    SessionPage,
    SessionRecord,
    SessionScore,
)
from tacit.schemas.problem import RequestError, decode_body
from tacit.schemas.reward import UserErasure
from tacit.schemas.validate import decode_session

logger = logging.getLogger(__name__)
JSON = "application/json"
_ENCODER = msgspec.json.Encoder()

_BATCH = msgspec.json.Decoder(SessionBatch)


@post(
    "/v1/sessions",
    status_code=200,
    summary="Ingest one session and answer its preference score (202: stored, score pending)",
    **scoped("ingest", SessionScore, (200, 202), body=Session, example=examples.session),
)
async def post_session(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    start = time.perf_counter()
    body = await request.body()
    session = decode_session(body)
    result = await state.pipeline.ingest(session, body)
    state.metrics.latency.observe(time.perf_counter() - start)
    return json_response(result, 200 if result.status == "scored" else 202)


#: A batch body is at most this large (and at most 500 sessions, the schema's limit): a decoded session takes
#: about 15 times its JSON in memory, so this bounds one batch to a few hundred MB.
MAX_BATCH_BYTES = 16 * 1024 * 1024
#: Batches decoded at once per gateway process; the others wait (their bodies are already bounded above).
_BATCH_DECODERS = anyio.CapacityLimiter(2)


def _decode_batch(body: bytes) -> SessionBatch:
    """Decode and validate every session of a batch before any is stored (runs in a worker thread)."""
    batch: SessionBatch = decode_body(_BATCH, body)
    for i, session in enumerate(batch.sessions):
        try:
            validate_session(session)
            refuse_nul_ids(session)
        except SessionError as err:
            raise SessionError(f"sessions[{i}].{err.field}", err.detail, err.code) from None
    return batch


@post(
    "/v1/sessions:batch",
    status_code=200,
    summary=f"Ingest many sessions (at most 500 and {MAX_BATCH_BYTES // (1024 * 1024)} MiB per batch)",
    request_max_body_size=MAX_BATCH_BYTES,
    **scoped("ingest", dict[str, list[SessionScore]], body=SessionBatch, example=examples.session_batch),
)
async def post_sessions(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    body = await request.body()
    # decoding a large batch takes CPU: off the event loop, two at a time, so health checks and other requests
    # are answered meanwhile
    batch = await anyio.to_thread.run_sync(_decode_batch, body, limiter=_BATCH_DECODERS)
    del body
    # All or nothing: a conflict with what is stored (or within the batch) is found before anything is written.
    conflict = await anyio.to_thread.run_sync(state.store.sessions.first_conflict, batch.sessions)
    if conflict is not None:
        raise _batch_conflict(batch.sessions, conflict, stored_before=0)
    results: list[SessionScore] = []
    for session in sorted(batch.sessions, key=lambda s: s.turn or 0):
        try:
            results.append(await state.pipeline.ingest(session))
        except SessionConflict:  # a concurrent writer took the id since the check above
            index = next(i for i, s in enumerate(batch.sessions) if s.session_id == session.session_id)
            raise _batch_conflict(batch.sessions, index, stored_before=len(results)) from None
    by_id = {r.session_id: r for r in results}
    return json_response({"results": [by_id[s.session_id] for s in batch.sessions]})


def _batch_conflict(sessions: list[Session], index: int, *, stored_before: int) -> RequestError:
    stored = "nothing was stored" if not stored_before else f"{stored_before} other sessions were stored before it"
    return RequestError(
        409,
        "conflict",
        f"sessions[{index}].session_id",
        f"session {sessions[index].session_id!r} is stored (or earlier in this batch) with other content; {stored}",
    )


@get("/v1/sessions/{session_id:str}", summary="One stored session", **scoped("read", SessionRecord))
async def get_session(
    state: GatewayState, session_id: FromPath[str], include: FromQuery[str | None] = None
) -> Response[bytes]:
    parts = {part.strip() for part in (include or "").split(",") if part.strip()}
    if parts - {"payload", "scores"}:
        raise RequestError(422, "invalid", "include", "include takes payload, scores or both (comma-separated)")
    row = await anyio.to_thread.run_sync(state.store.sessions.get_session, session_id)
    if row is None:
        raise RequestError(404, "not_found", "session_id", f"no session {session_id}")
    record = session_record(state.store, row, "payload" in parts)
    if "scores" in parts:
        scores = await anyio.to_thread.run_sync(model_scores, state.store, session_id)
        record = msgspec.structs.replace(record, scores=scores)
    return json_response(record)


@get("/v1/sessions", summary="Stored sessions, newest last, paginated", **scoped("read", SessionPage))
async def list_sessions(
    state: GatewayState,
    user_id: FromQuery[str | None] = None,
    since: FromQuery[dt.datetime | None] = None,
    limit: FromQuery[int] = 50,
    cursor: FromQuery[str | None] = None,
) -> Response[bytes]:
    if not 1 <= limit <= 500:
        raise RequestError(422, "invalid", "limit", "limit must be between 1 and 500")
    try:
        rows, next_cursor = await anyio.to_thread.run_sync(
            lambda: state.store.sessions.list_sessions(
                user_id=user_id, since=since, limit=limit, cursor=cursor, include_demo_sessions=True
            )
        )
    except ValueError as err:
        raise RequestError(422, "invalid", "cursor", str(err)) from None
    return json_response(
        SessionPage(items=[session_record(state.store, r, False) for r in rows], next_cursor=next_cursor)
    )


@delete(
    "/v1/users/{user_id:str}",
    status_code=200,
    summary="Erase everything stored for a user",
    **scoped("admin", Erasure),
)
async def delete_user(state: GatewayState, user_id: FromPath[str]) -> Response[bytes]:
    return await _erase(state, user_id)


@delete(
    "/v1/users",
    status_code=200,
    summary="Erase everything stored for a user named in the query (ids stored before the id alphabet, e.g. with '/')",
    **scoped("admin", Erasure),
)
async def delete_user_by_query(state: GatewayState, user_id: FromQuery[str]) -> Response[bytes]:
    return await _erase(state, user_id)


async def _erase(state: GatewayState, user_id: str) -> Response[bytes]:
    # reward_svc's training-set rows first (it names the models trained on the user); the gateway's own rows are
    # erased even when it is down, and the answer says what is left (repeating the erasure finishes it)
    also: list[str] = []
    counts: dict[str, int] = {}
    not_erased: list[str] = []
    try:
        response = await state.reward.request("DELETE", "/v1/reward/training-rows", params={"user_id": user_id})
        answer = msgspec.json.decode(response.content, type=UserErasure)
        also, counts = answer.models_affected, {"reward_training_rows": answer.rows_deleted}
    except (DependencyDownError, DependencyError) as err:
        logger.warning("erasure: reward_svc's training sets not erased: %s", type(err).__name__)
        not_erased.append("reward_svc training-set rows (the service did not answer): repeat the erasure")
    erasure = await anyio.to_thread.run_sync(
        lambda: state.store.users.erase_user(user_id, also_models=also, extra_counts=counts)
    )
    # the adaptation priors were estimated with the user's labels: drop them (the loop re-estimates without them)
    state.pipeline.population.clear()
    return json_response(
        Erasure(
            user_id=user_id,
            rows_deleted=dict(erasure.rows_deleted),
            models_affected=list(erasure.models_affected),
            not_erased=not_erased,
        )
    )


# Reward models: the gateway is the one public API; reward_svc holds the registry.


def session_routes() -> list[Any]:
    return [post_session, post_sessions, get_session, list_sessions, delete_user, delete_user_by_query]
