"""The public API: ingest reading sessions and answer preference scores; sessions, users and reward models.

A session is vectorised by feature_svc and scored by reward_svc over HTTP, then stored with its score in one
write (atomic, idempotent on its id) before the answer is sent. If either service is down it is stored alone
and answered `status: pending`; a background loop scores it when they return: a session is never lost.
Errors are values mapped to HTTP status in `_problem`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import msgspec
from litestar import Litestar, Request, Response, delete, get, post
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath, FromQuery
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import OperationalError

from gateway.access import AuthFailures, bearer, json_response, scoped
from gateway.alignment import alignment_routes
from gateway.clients import DependencyDownError, DependencyError, FeatureClient, JudgeClient, RewardClient
from gateway.collector import Collector, collector_routes
from gateway.data_roots import allowed_path
from gateway.db import OutOfFold, PayloadPurgedError, SessionConflict, Store
from gateway.edge import EdgeMiddleware, secure_headers
from gateway.imports import import_routes
from gateway.limits import RateLimiter
from gateway.metrics import Metrics
from gateway.model_scores import model_score_routes, model_scores, start_rescore
from gateway.openapi import documented, openapi_config
from gateway.training import training_routes, training_set
from tacit.edge import problem_handler
from tacit.schemas import FeatureVector, Score, Session, SessionError, UserLabel, validate_session
from tacit.schemas.gateway import (
    Erasure,
    RescoreRequest,
    SessionBatch,
    SessionPage,
    SessionRecord,
    SessionScore,
)
from tacit.schemas.problem import RequestError, decode_body
from tacit.schemas.reward import StoredSessions, TrainingMembers, UserErasure, decode_train
from tacit.schemas.validate import decode_session
from tacit.serving import fast_server_options
from tacit.settings import GatewaySettings, load_settings

__all__ = ["create_app", "serve"]

logger = logging.getLogger(__name__)
JSON = "application/json"
_ENCODER = msgspec.json.Encoder()
_BATCH = msgspec.json.Decoder(SessionBatch)


def _own_errors(exc: Exception) -> RequestError | None:
    """The gateway's own errors as Problems (the shared ones are mapped by tacit.edge)."""
    if isinstance(exc, SessionConflict):
        return RequestError(409, "conflict", "session_id", str(exc))
    if isinstance(exc, DependencyError):
        return RequestError(exc.status, exc.problem.code, exc.problem.field, exc.problem.detail)
    if isinstance(exc, DependencyDownError):
        return RequestError(503, "unavailable", "$", str(exc), {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, OperationalError):
        # The database is unreachable (restarting, failing over): nothing can be stored, so 503 + Retry-After.
        # Logged by type only: the message carries the statement's parameters (session text and trajectories).
        logger.warning("database unavailable: %s", type(exc.orig).__name__)
        return RequestError(503, "unavailable", "$", "the database is unreachable; try again", {"Retry-After": "5"})
    return None


_problem = problem_handler(_own_errors)


async def _refuse_nul(request: Request[Any, Any, Any]) -> None:
    """400 for a NUL character in a path or query parameter: PostgreSQL cannot even compare text holding one;
    400 for a `Last-Event-ID` that is not an event id (the event streams resume from it)."""
    for name, value in [*request.path_params.items(), *request.query_params.items()]:
        if "\x00" in str(value):
            raise RequestError(400, "invalid", name, "must not contain the NUL character (U+0000)")
    last = request.headers.get("last-event-id")
    if last is not None and last.isdigit() and len(last) > 18:
        raise RequestError(400, "invalid", "Last-Event-ID", "an event id has at most 18 digits")


# --- the ingest pipeline ------------------------------------------------------------------------------------


_LABEL = {"left": 0, "right": 1, "previous": 0, "current": 1}


def refuse_nul_ids(session: Session) -> None:
    """SessionError for an id holding NUL: PostgreSQL text cannot (refused on SQLite too, so both behave alike)."""
    for name in ("session_id", "user_id", "task_id", "query_id"):
        if "\x00" in (getattr(session, name) or ""):
            raise SessionError(name, "must not contain the NUL character (U+0000)")


class Pipeline:
    """Store -> features -> score, with the pending path when a dependency is down."""

    def __init__(
        self, store: Store, features: FeatureClient, reward: RewardClient, settings: GatewaySettings, metrics: Metrics
    ) -> None:
        self.store, self.features, self.reward = store, features, reward
        self.settings, self.metrics = settings, metrics
        self._sets: dict[str, tuple[float, str]] = {}
        #: Models whose training sessions this process gave their out-of-fold scores (gateway._score_training_set).
        self.out_of_fold_applied: set[str] = set()

    async def feature_set(self, mode: str) -> str:
        cached = self._sets.get(mode)
        if cached is not None and time.monotonic() - cached[0] < 5:
            return cached[1]
        chosen = await self.reward.active_feature_set(mode) or self.settings.feature_set
        self._sets[mode] = (time.monotonic(), chosen)
        return chosen

    async def previous(self, session: Session) -> Session | None:
        if session.mode != "pointwise" or not session.turn:
            return None
        row = await anyio.to_thread.run_sync(self.store.find_turn, session.user_id, session.task_id, session.turn - 1)
        return None if row is None else self.store.load_payload(row)

    async def compute(self, session: Session, raw: bytes | None = None) -> tuple[FeatureVector, Score]:
        """Vector (feature_svc) and score (reward_svc) of a session; raises DependencyDownError / DependencyError.

        `raw`: the validated JSON the session was decoded from, passed to feature_svc without re-encoding.
        """
        feature_set = await self.feature_set(session.mode)
        vector = await self.features.vectorize(session, feature_set, await self.previous(session), raw=raw)
        # the user's earlier explicit labels adapt the score (reward_svc.model.adapt); never this session's own
        history = await anyio.to_thread.run_sync(
            lambda: self.store.label_history(session.user_id, session.mode, exclude=session.session_id)
        )
        labels = [UserLabel(p_population=p, label=1 if label else 0, model_id=model) for p, label, model in history]
        [score] = await self.reward.score([vector], session.mode, labels)
        return vector, score

    def _observe(self, session: Session, score: Score) -> None:
        self.metrics.scored.labels(session.mode, str(score.abstained).lower()).inc()
        self.metrics.scores.labels(session.mode).observe(score.p)
        if session.feedback is not None and session.feedback.preference is not None:
            agree = (score.p >= 0.5) == bool(_LABEL[session.feedback.preference])
            self.metrics.agreement.labels(session.mode, str(agree).lower()).inc()

    async def score(self, session: Session) -> SessionScore:
        """Score an already stored session (the rescoring path)."""
        vector, score = await self.compute(session)
        row = await anyio.to_thread.run_sync(self.store.set_result, vector, score)
        self._observe(session, score)
        return _record_score(row, created=False)

    async def ingest(self, session: Session, raw: bytes | None = None, *, demo: bool = False) -> SessionScore:
        """Answer a session's score; it is stored before the answer is sent, whatever the services do.

        A new session is scored first and stored together with its score in one write; when a service is
        down it is stored alone, pending, and the rescoring loop scores it later. `raw`: the JSON the session
        was decoded and validated from (sent on to feature_svc as it is). `demo`: recorded with a demo token.
        """
        refuse_nul_ids(session)
        status = await anyio.to_thread.run_sync(self.store.score_status, session.session_id)
        if status == "scored":
            row, _ = await anyio.to_thread.run_sync(
                lambda: self.store.put_session(session, demo=demo)  # raises on a conflict
            )
            return _record_score(row, created=False)
        try:
            vector, score = await self.compute(session, raw)
        except (DependencyDownError, DependencyError) as err:
            row, created = await anyio.to_thread.run_sync(lambda: self.store.put_session(session, demo=demo))
            self._count(session, created)
            reason = err.service if isinstance(err, DependencyDownError) else f"{err.service}:{err.problem.code}"
            self.metrics.pending.labels(reason).inc()
            # A service that is down, or no active model yet, is worth waiting for; a refusal is a failure.
            if isinstance(err, DependencyDownError):
                row = await anyio.to_thread.run_sync(self.store.defer_score, session.session_id, str(err))
            elif err.status == 409:
                row = await anyio.to_thread.run_sync(self._defer_refused, session.session_id, str(err))
            else:
                row = await anyio.to_thread.run_sync(self.store.mark_score_failed, session.session_id, str(err))
            return _record_score(row, created=created)
        row, created = await anyio.to_thread.run_sync(
            lambda: self.store.put_session(session, result=(vector, score), demo=demo)
        )
        self._count(session, created)
        self._observe(session, score)
        return _record_score(row, created=created)

    def _count(self, session: Session, created: bool) -> None:
        if created:
            self.metrics.ingested.labels(session.mode, str(session.consent.gaze).lower()).inc()

    def _defer_refused(self, session_id: str, reason: str) -> Any:
        retry_in = dt.timedelta(seconds=self.settings.rescore_defer_s)
        return self.store.defer_score(session_id, reason, retry_in=retry_in)

    async def rescore_pending(self, limit: int = 50) -> int:
        """Score sessions left pending; the sessions scored or set aside (0: nothing more to do now).

        Stops at the first dependency that is down. A session the reward service refuses (409: e.g. no active
        model for its mode) is set aside for `rescore_defer_s` with the reason, and so is every other session
        of that mode in this pass (the refusals are per mode), so the others are still scored.
        """
        handled = 0
        refused: dict[str, str] = {}  # mode -> the reward service's refusal in this pass
        rows = await anyio.to_thread.run_sync(self.store.pending, limit)
        for row in rows:
            if row.mode in refused:
                await anyio.to_thread.run_sync(self._defer_refused, row.session_id, refused[row.mode])
                handled += 1
                continue
            try:
                session = await anyio.to_thread.run_sync(self.store.load_payload, row)
            except PayloadPurgedError:  # retention removed the trajectories before a score came
                await anyio.to_thread.run_sync(self.store.mark_score_failed, row.session_id, "payload purged")
                continue
            try:
                await self.score(session)
            except DependencyDownError:
                break
            except DependencyError as err:
                if err.status == 409:
                    refused[row.mode] = str(err)
                    await anyio.to_thread.run_sync(self._defer_refused, row.session_id, str(err))
                    handled += 1
                    continue
                await anyio.to_thread.run_sync(self.store.mark_score_failed, row.session_id, str(err))
            else:
                handled += 1
        return handled


def _score_of(
    mode: str,
    session_id: str,
    status: str,
    p: float | None,
    preferred: str | None,
    confidence: float | None,
    model_id: str | None,
    demo: bool,
    quality: float | None,
    abstained: bool | None,
    created: bool = True,
    pending_reason: str | None = None,
    p_population: float | None = None,
    user_labels_used: int | None = None,
    abstain_reason: str | None = None,
    score_kind: str | None = None,
) -> SessionScore:
    return SessionScore(
        abstain_reason=abstain_reason,  # type: ignore[arg-type]
        score_kind=score_kind if status == "scored" else None,  # type: ignore[arg-type]
        p_right_population=p_population if mode == "pairwise" else None,
        p_current_population=p_population if mode == "pointwise" else None,
        user_labels_used=user_labels_used,
        session_id=session_id,
        status=status,  # type: ignore[arg-type]
        preferred=preferred,  # type: ignore[arg-type]
        p_right=p if mode == "pairwise" else None,
        p_current=p if mode == "pointwise" else None,
        confidence=confidence,
        model_version=model_id,
        demo_model=demo,
        quality=quality,
        abstained=abstained,
        created=created,
        pending_reason=pending_reason,
    )


def _record_score(row: Any, created: bool = True) -> SessionScore:
    return _score_of(
        row.mode,
        row.session_id,
        row.score_status,
        row.p,
        row.preferred,
        row.confidence,
        row.model_id,
        bool(row.model_demo),
        row.quality,
        row.abstained,
        created,
        (row.score_error or None) if row.score_status == "pending" else None,
        row.p_population if row.p_population is not None else row.p,
        row.user_labels_used if row.p is not None else None,
        _abstain_reason(row),
        row.score_kind,
    )


def _abstain_reason(row: Any) -> str | None:
    # derived from what the row stores: the reward service abstains on sessions without samples, or below its gate
    if not row.abstained:
        return None
    return "no_behaviour_samples" if not row.samples else "quality_below_gate"


def _record(store: Store, row: Any, include_payload: bool) -> SessionRecord:
    return SessionRecord(
        session_id=row.session_id,
        user_id=row.user_id,
        task_id=row.task_id,
        query_id=row.query_id,
        mode=row.mode,
        turn=row.turn,
        received_at=row.received_at,
        consent={"mouse": row.consent_mouse, "gaze": row.consent_gaze, "camera": row.consent_camera},
        label=row.label,
        samples=row.samples or 0,
        feature_set=row.feature_set,
        feature_set_version=row.feature_set_version,
        score=_record_score(row, created=False),
        session=store.load_payload(row) if include_payload and row.payload else None,
        demo=bool(row.demo),
    )


# --- routes -------------------------------------------------------------------------------------------------


@post(
    "/v1/sessions",
    status_code=200,
    summary="Ingest one session and answer its preference score (202: stored, score pending)",
    **scoped("ingest", SessionScore, (200, 202)),
)
async def post_session(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
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
    **scoped("ingest", dict[str, list[SessionScore]]),
)
async def post_sessions(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    body = await request.body()
    # decoding a large batch takes CPU: off the event loop, two at a time, so health checks and other requests
    # are answered meanwhile
    batch = await anyio.to_thread.run_sync(_decode_batch, body, limiter=_BATCH_DECODERS)
    del body
    # All or nothing: a conflict with what is stored (or within the batch) is found before anything is written.
    conflict = await anyio.to_thread.run_sync(state.store.first_conflict, batch.sessions)
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
    state: State, session_id: FromPath[str], include: FromQuery[str | None] = None
) -> Response[bytes]:
    parts = {part.strip() for part in (include or "").split(",") if part.strip()}
    if parts - {"payload", "scores"}:
        raise RequestError(422, "invalid", "include", "include takes payload, scores or both (comma-separated)")
    row = await anyio.to_thread.run_sync(state.store.get_session, session_id)
    if row is None:
        raise RequestError(404, "not_found", "session_id", f"no session {session_id}")
    record = _record(state.store, row, "payload" in parts)
    if "scores" in parts:
        scores = await anyio.to_thread.run_sync(model_scores, state.store, session_id)
        record = msgspec.structs.replace(record, scores=scores)
    return json_response(record)


@get("/v1/sessions", summary="Stored sessions, newest last, paginated", **scoped("read", SessionPage))
async def list_sessions(
    state: State,
    user_id: FromQuery[str | None] = None,
    since: FromQuery[dt.datetime | None] = None,
    limit: FromQuery[int] = 50,
    cursor: FromQuery[str | None] = None,
) -> Response[bytes]:
    if not 1 <= limit <= 500:
        raise RequestError(422, "invalid", "limit", "limit must be between 1 and 500")
    try:
        rows, next_cursor = await anyio.to_thread.run_sync(
            lambda: state.store.list_sessions(
                user_id=user_id, since=since, limit=limit, cursor=cursor, include_demo_sessions=True
            )
        )
    except ValueError as err:
        raise RequestError(422, "invalid", "cursor", str(err)) from None
    return json_response(SessionPage(items=[_record(state.store, r, False) for r in rows], next_cursor=next_cursor))


@delete(
    "/v1/users/{user_id:str}",
    status_code=200,
    summary="Erase everything stored for a user",
    **scoped("admin", Erasure),
)
async def delete_user(state: State, user_id: FromPath[str]) -> Response[bytes]:
    return await _erase(state, user_id)


@delete(
    "/v1/users",
    status_code=200,
    summary="Erase everything stored for a user named in the query (ids stored before the id alphabet, e.g. with '/')",
    **scoped("admin", Erasure),
)
async def delete_user_by_query(state: State, user_id: FromQuery[str]) -> Response[bytes]:
    return await _erase(state, user_id)


async def _erase(state: State, user_id: str) -> Response[bytes]:
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
        lambda: state.store.erase_user(user_id, also_models=also, extra_counts=counts)
    )
    return json_response(
        Erasure(
            user_id=user_id,
            rows_deleted=dict(erasure.rows_deleted),
            models_affected=list(erasure.models_affected),
            not_erased=not_erased,
        )
    )


# Reward models: the gateway is the one public API; reward_svc holds the registry.


def _segment(value: str) -> str:
    """A path parameter as one percent-encoded segment of a proxied URL (httpx refuses control characters)."""
    return quote(value, safe="")


async def _proxy(
    state: State, method: str, path: str, body: bytes | None = None, params: dict[str, Any] | None = None
) -> Response[bytes]:
    response = await state.reward.request(method, path, content=body, params=params, retry=method == "GET")
    return Response(response.content, status_code=response.status_code, media_type=JSON)


@get("/v1/reward/models", summary="Reward models", **scoped("read"))
async def list_models(state: State, task: FromQuery[str | None] = None) -> Response[bytes]:
    return await _proxy(state, "GET", "/v1/reward/models", params={"task": task} if task else None)


@get("/v1/reward/models/{model_id:str}", summary="One reward model", **scoped("read"))
async def get_model(state: State, model_id: FromPath[str]) -> Response[bytes]:
    return await _proxy(state, "GET", f"/v1/reward/models/{_segment(model_id)}")


@post(
    "/v1/reward/models",
    status_code=202,
    summary="Train a reward model (background job)",
    **scoped("train", success=(202,)),
)
async def train_model(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
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
    await anyio.to_thread.run_sync(state.store.record_training_set, model_id, users)
    return Response(response.content, status_code=202, media_type=JSON)


@post(
    "/v1/reward/models/{model_id:str}/activate", status_code=200, summary="Activate a reward model", **scoped("train")
)
async def activate_model(state: State, model_id: FromPath[str]) -> Response[bytes]:
    response = await _proxy(state, "POST", f"/v1/reward/models/{_segment(model_id)}/activate")
    state.pipeline._sets.clear()  # the feature set follows the active model
    if (response.status_code or 500) < 300:
        pipeline: Pipeline = state.pipeline
        if await _score_training_set(pipeline.reward, pipeline.store, model_id):
            pipeline.out_of_fold_applied.add(model_id)
        # sessions set aside for want of a model are due now
        await anyio.to_thread.run_sync(state.store.retry_deferred)
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
            await anyio.to_thread.run_sync(store.apply_out_of_fold, members.model_id, members.demo, held_out)
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


@post("/v1/judgments", status_code=200, summary="Judge one pair of answers (synchronous)", **scoped("train"))
async def post_judgment(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    response = await state.judge.request("POST", "/v1/judgments", content=await request.body(), retry=False)
    return Response(response.content, status_code=response.status_code, media_type=JSON)


@post(
    "/v1/judgments:batch",
    status_code=202,
    summary="Judge many pairs (a job with progress)",
    **scoped("train", success=(202,)),
)
async def post_judgments(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    response = await state.judge.request("POST", "/v1/judgments:batch", content=await request.body(), retry=False)
    return Response(response.content, status_code=response.status_code, media_type=JSON)


@get(
    ["/v1/judgments/{job_id:str}", "/v1/judgments/jobs/{job_id:str}"],
    summary="A judgment job: progress, verdicts, evaluation",
    **scoped("read"),
)
async def get_judgments(state: State, job_id: FromPath[str]) -> Response[bytes]:
    response = await state.judge.request("GET", f"/v1/judgments/jobs/{_segment(job_id)}")
    return Response(response.content, status_code=response.status_code, media_type=JSON)


@get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    summary="Readiness: database, Redis and each service (503 when one is down)",
    responses=documented(dict[str, Any], 200, 503),
)
async def readyz(state: State) -> Response[bytes]:
    checks = {
        "database": await anyio.to_thread.run_sync(state.store.ping),
        "redis": await anyio.to_thread.run_sync(_redis_ok, state.settings.redis_url),
        "feature_svc": await state.features.healthy(),
        "reward_svc": await state.reward.healthy(),
    }
    ready = all(checks.values())
    return Response(
        _ENCODER.encode({"ready": ready, "checks": checks}),
        status_code=200 if ready else 503,
        media_type=JSON,
        headers={} if ready else {"Retry-After": "5"},
    )


def _redis_ok(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    wanted: str = state.settings.metrics_key
    if wanted and not hmac.compare_digest(bearer(request, "metrics key").encode(), wanted.encode()):
        raise RequestError(401, "unauthorized", "authorization", "wrong metrics key (TACIT_GATEWAY_METRICS_KEY)")
    # Rendering reads the job table and Redis (gateway.metrics): off the event loop.
    return Response(await anyio.to_thread.run_sync(state.metrics.render), media_type=CONTENT_TYPE_LATEST)


# --- the app ------------------------------------------------------------------------------------------------


def create_app(
    settings: GatewaySettings | None = None,
    *,
    store: Store | None = None,
    feature_transport: Any = None,
    reward_transport: Any = None,
) -> Litestar:
    """The gateway. Transports are for tests that put a named double in place of a service."""
    settings = settings or load_settings(GatewaySettings, "TACIT_GATEWAY_")
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own_store = store is None
        app.state.store = db = store or Store(settings.db_url())
        await anyio.to_thread.run_sync(db.migrate)
        app.state.settings = settings
        app.state.metrics = metrics
        metrics.watch(db, settings.redis_url)
        app.state.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_burst)
        app.state.auth_failures = AuthFailures(settings.auth_failures_per_s, settings.auth_failure_burst)
        app.state.collector = Collector()
        app.state.features = FeatureClient(
            settings.feature_url, timeout=settings.timeout_s, retries=settings.retries, transport=feature_transport
        )
        app.state.reward = RewardClient(
            settings.reward_url, timeout=settings.timeout_s, retries=settings.retries, transport=reward_transport
        )
        # A judgment can take a minute (an LLM answering twice): its own, longer timeout.
        app.state.judge = JudgeClient(settings.judge_url, timeout=max(settings.timeout_s, 180.0), retries=0)
        app.state.pipeline = pipeline = Pipeline(db, app.state.features, app.state.reward, settings, metrics)
        loops = [asyncio.create_task(_rescore_loop(pipeline, settings.rescore_interval_s))]
        if settings.retention_days > 0:
            loops.append(asyncio.create_task(_retention_loop(db, settings)))
        try:
            yield
        finally:
            for task in loops:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.features.close()
            await app.state.reward.close()
            await app.state.judge.close()
            if own_store:
                db.close()

    return Litestar(
        route_handlers=[
            post_session,
            post_sessions,
            get_session,
            list_sessions,
            delete_user,
            delete_user_by_query,
            list_models,
            get_model,
            train_model,
            activate_model,
            post_judgment,
            post_judgments,
            get_judgments,
            healthz,
            readyz,
            metrics_endpoint,
            *collector_routes(),
            *alignment_routes(),
            *import_routes(),
            *training_routes(),
            *model_score_routes(),
        ],
        lifespan=[lifespan],
        before_request=_refuse_nul,
        before_send=[secure_headers],
        middleware=[
            DefineMiddleware(EdgeMiddleware, max_header_bytes=settings.max_header_bytes),
            metrics.http.middleware,
        ],
        exception_handlers={Exception: _problem},
        openapi_config=openapi_config(),
        # Only the configured origins (the pages that embed the collector); none by default.
        cors_config=(
            CORSConfig(
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
            )
            if settings.cors_origins
            else None
        ),
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
    )


#: How often (in rescoring intervals, at least a second) the rescoring loop looks for a newly active model whose
#: training sessions need their out-of-fold scores.
_ACTIVE_CHECK_INTERVALS = 5


async def _rescore_loop(pipeline: Pipeline, interval: float) -> None:
    """Score sessions stored while a dependency was down, once it is back."""
    checked = 0.0
    while True:
        await asyncio.sleep(interval)
        try:
            if time.monotonic() - checked >= max(interval * _ACTIVE_CHECK_INTERVALS, 1.0):
                checked = time.monotonic()
                await _apply_active_training_sets(pipeline)
            while await pipeline.rescore_pending() > 0:  # drain a backlog (e.g. after an import) before sleeping
                pass
        except Exception:  # keep the loop alive whatever one pass hits
            logger.exception("rescoring pass failed")


async def _retention_loop(store: Store, settings: GatewaySettings) -> None:
    """Drop raw trajectories older than `retention_days` (features and scores stay): at start-up, then periodically."""
    older_than = dt.timedelta(days=settings.retention_days)
    while True:
        try:
            purged = await anyio.to_thread.run_sync(store.purge_payloads, older_than)
            if purged:
                logger.info("retention: purged the raw data of %d sessions", purged)
        except Exception:  # keep the loop alive whatever one pass hits
            logger.exception("retention pass failed")
        await asyncio.sleep(settings.retention_interval_s)


def serve(settings: GatewaySettings | None = None) -> None:
    import uvicorn

    settings = settings or load_settings(GatewaySettings, "TACIT_GATEWAY_")
    app = create_app(settings)
    # The modules and app built at start-up live as long as the process: keep the collector from rescanning them.
    gc.freeze()
    # No access log (a line per request on the hot path); httptools and uvloop when installed. X-Forwarded-For is
    # believed from the configured proxies only (uvicorn would otherwise trust it from 127.0.0.1).
    options = {
        **fast_server_options(),
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies) or "",
    }
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", **options)
