"""Alignment jobs through the gateway: create (snapshot pairs, enqueue), list, read, cancel, stream events.

`POST /v1/alignment/jobs` builds the job's preference pairs from the stored sessions now (so the job trains on
a fixed, hashed snapshot whatever arrives later), stores job and pairs in one transaction and enqueues the job
id on the Celery `align` queue by name (no worker code is imported here). The worker moves the job through its
states in the same database; `GET .../events` streams the job's event log as server-sent events.

A stream ends with the job, after `STREAM_IDLE_S` without an event (the client resumes with `Last-Event-ID`), or
when the job's worker has been silent for `ORPHAN_AFTER_S`; a key holds at most `STREAMS_PER_KEY` streams at once
(429 beyond) and the gateway `MAX_STREAMS`. Cancelling a running job whose worker is that silent ends it at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator
from functools import partial
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from gateway import examples
from gateway.access import JSON, bearer, json_response, scoped
from gateway.clients import DependencyDownError
from gateway.state import GatewayState
from tacit.db import Store
from tacit.db.alignment import TERMINAL, AlignmentJobs, InvalidTransitionError
from tacit.db.models import AlignmentJobRow, utcnow
from tacit.pairs import Observation, pairs_from_sessions
from tacit.schemas.align import (
    AlignmentEvent,
    AlignmentJobInfo,
    AlignmentJobPage,
    AlignmentJobSpec,
    AlignmentProgress,
    AlignmentResult,
    DataSummary,
    EvaluationLink,
    PairSelection,
    PairsPreview,
    PreferencePair,
)
from tacit.schemas.jobs import JobStatus
from tacit.schemas.judge import BatchJob
from tacit.schemas.problem import RequestError, decode_body
from tacit.schemas.session import Session
from tacit.tasks import QUEUE_ALIGN, TASK_ALIGN

__all__ = ["EventStreams", "alignment_routes", "celery_producer", "evaluation_outcome", "load_observations"]

logger = logging.getLogger(__name__)
_ENCODER = msgspec.json.Encoder()
_SPEC = msgspec.json.Decoder(AlignmentJobSpec)
_JUDGE_JOB = msgspec.json.Decoder(BatchJob, strict=False)
#: How often the event stream looks for new events (doubling up to `MAX_POLL_S` while nothing happens).
POLL_S = 0.5
MAX_POLL_S = 4.0
#: A stream with no new event for this long ends (EventSource clients reconnect with Last-Event-ID).
STREAM_IDLE_S = 120.0
#: A running job whose worker has not written (progress or heartbeat, every 15 s) for this long is orphaned.
ORPHAN_AFTER_S = 120.0
#: Event streams open at once, per key and for the whole gateway process.
STREAMS_PER_KEY = 4
MAX_STREAMS = 64


# -- pairs from the store ----------------------------------------------------------------------------------


def load_observations(
    store: Store, *, page: int = 500, include_demo_sessions: bool = False
) -> tuple[list[Observation], dict[tuple[str, str], list[Session]], int]:
    """Every stored pairwise session with its score; all sessions by (user, task) for history; payloads purged."""
    observations: list[Observation] = []
    earlier: dict[tuple[str, str], list[Session]] = defaultdict(list)
    purged = 0
    cursor: str | None = None
    while True:
        rows, cursor = store.sessions.list_sessions(
            limit=page, cursor=cursor, include_demo_sessions=include_demo_sessions
        )
        # texts only, one query per page: pairs need the question, the answers and the feedback, never the
        # trajectories (decoding those made each preview cost seconds of CPU and gigabytes with a few clients)
        texts = store.sessions.load_texts(rows)
        for row in rows:
            session = texts.get(row.session_id)
            if session is None:
                purged += 1
                continue
            earlier[(row.user_id, row.task_id)].append(session)
            if row.mode == "pairwise":
                scored = row.score_status == "scored"
                observations.append(
                    Observation(
                        session=session,
                        p_right=row.p if scored else None,
                        model_id=row.model_id if scored else None,
                        abstained=bool(row.abstained),
                        demo_model=bool(row.model_demo),
                    )
                )
        if cursor is None:
            return observations, earlier, purged


def build_pairs(
    store: Store, selection: PairSelection, default_model_id: str | None
) -> tuple[list[PreferencePair], DataSummary]:
    observations, earlier, purged = load_observations(store, include_demo_sessions=selection.include_demo_sessions)
    pairs, summary = pairs_from_sessions(observations, selection, earlier=earlier, default_model_id=default_model_id)
    if purged:
        summary = msgspec.structs.replace(summary, dropped={**summary.dropped, "payload purged": purged})
    return pairs, summary


async def _default_model(state: GatewayState, selection: PairSelection) -> str | None:
    if selection.source != "implicit" or selection.model_id is not None:
        return selection.model_id
    try:
        model_id: str | None = await state.reward.active_model_id("pairwise")
    except DependencyDownError as err:
        raise RequestError(
            503, "dependency_down", "data.model_id", f"reward_svc is down ({err}); name the model in data.model_id"
        ) from None
    if model_id is None:
        raise RequestError(422, "no_model", "data.model_id", "there is no active pairwise reward model: name one")
    return model_id


# -- rendering -----------------------------------------------------------------------------------------------


def job_info(row: AlignmentJobRow) -> AlignmentJobInfo:
    return AlignmentJobInfo(
        id=row.id,
        kind=row.kind,  # type: ignore[arg-type]
        status=row.status,  # type: ignore[arg-type]
        spec=msgspec.convert(row.spec, AlignmentJobSpec),
        data=msgspec.convert(row.data, DataSummary),
        progress=msgspec.convert(row.progress or {}, AlignmentProgress),
        attempts=row.attempts,
        cancel_requested=row.cancel_requested,
        error=row.error,
        result=None if row.result is None else msgspec.convert(row.result, AlignmentResult),
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        events_url=f"/v1/alignment/jobs/{row.id}/events",
    )


def _jobs(state: GatewayState) -> AlignmentJobs:
    return state.alignment_jobs


def celery_producer(state: GatewayState) -> Any:
    """The gateway's Celery app for sending tasks by name (queue declarations only, no task code)."""
    return state.celery


def _enqueue(state: GatewayState, job_id: str) -> None:
    celery_producer(state).send_task(TASK_ALIGN, args=[job_id], task_id=job_id, queue=QUEUE_ALIGN)


async def _get(state: GatewayState, job_id: str) -> AlignmentJobRow:
    row = await anyio.to_thread.run_sync(_jobs(state).get, job_id)
    if row is None:
        raise RequestError(404, "not_found", "job_id", f"no alignment job {job_id!r}")
    return row


# -- routes ----------------------------------------------------------------------------------------------


@post(
    "/v1/alignment/jobs",
    status_code=202,
    summary="Enqueue an alignment job (SFT, DPO or robust DPO)",
    **scoped("train", AlignmentJobInfo, (202,), body=AlignmentJobSpec, example=examples.alignment_job),
)
async def create_job(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    spec = decode_body(_SPEC, await request.body())
    model_id = await _default_model(state, spec.data)
    pairs, summary = await anyio.to_thread.run_sync(build_pairs, state.store, spec.data, model_id)
    if summary.train == 0:
        reasons = ", ".join(f"{n} {why}" for why, n in summary.dropped.items()) or "no pairwise sessions are stored"
        raise RequestError(422, "no_pairs", "data", f"no training pairs from {summary.sessions} sessions ({reasons})")
    kind = type(spec).__struct_config__.tag
    jobs = _jobs(state)
    row = await anyio.to_thread.run_sync(lambda: jobs.create(str(kind), msgspec.to_builtins(spec), summary, pairs))
    try:
        await anyio.to_thread.run_sync(_enqueue, state, row.id)
    except Exception as err:  # the broker is down: take the job back so that nothing half-made remains
        await anyio.to_thread.run_sync(jobs.delete, row.id)
        logger.warning("could not enqueue alignment job: %s", err)
        raise RequestError(
            503, "dependency_down", "redis", "the job queue (Redis) is unreachable; try again", {"Retry-After": "5"}
        ) from None
    return json_response(job_info(row), 202)


@get("/v1/alignment/jobs", summary="Alignment jobs, newest first", **scoped("read", AlignmentJobPage))
async def list_jobs(
    state: GatewayState, status: FromQuery[JobStatus | None] = None, limit: FromQuery[int] = 50
) -> Response[bytes]:
    if not 1 <= limit <= 500:
        raise RequestError(400, "invalid", "limit", "limit must be between 1 and 500")
    rows = await anyio.to_thread.run_sync(lambda: _jobs(state).list_jobs(status=status, limit=limit))
    return json_response(AlignmentJobPage(items=[job_info(r) for r in rows]))


@get(
    "/v1/alignment/jobs/{job_id:str}",
    summary="One alignment job: state, progress, result",
    **scoped("read", AlignmentJobInfo),
)
async def get_job(state: GatewayState, job_id: FromPath[str]) -> Response[bytes]:
    return json_response(await with_evaluation_status(state, job_info(await _get(state, job_id))))


def evaluation_outcome(link: EvaluationLink, judge_job: BatchJob) -> EvaluationLink:
    """The evaluation as its judge job ended: `failed` also when the judge failed on every pair."""
    replace = msgspec.structs.replace
    if judge_job.status in ("queued", "running"):
        return replace(link, status="running", failures=judge_job.failures)
    if judge_job.status != "succeeded":
        error = f"judge job {judge_job.job_id} {judge_job.status}: {judge_job.error}"
        return replace(link, status="failed", failures=judge_job.failures, error=error)
    if judge_job.total and judge_job.failures >= judge_job.total:
        why = next((v.error for v in judge_job.verdicts or () if v.error), None) or "no verdict"
        error = f"the judge failed on all {judge_job.total} pairs: {why}"
        return replace(link, status="failed", failures=judge_job.failures, error=error)
    return replace(link, status="succeeded", failures=judge_job.failures)


async def with_evaluation_status(state: GatewayState, info: AlignmentJobInfo) -> AlignmentJobInfo:
    """`info` with its evaluation's outcome: the worker hands the judging to judge_svc and finishes the job, so
    whether the evaluation succeeded is read from judge_svc (the job's own status covers training only)."""
    result = info.result
    link = result.evaluation if result is not None else None
    if result is None or link is None or link.status in ("succeeded", "failed", "skipped"):
        return info
    if link.judge_job_id is None:  # recorded before `status` existed: an error means the hand-off failed
        status = "failed" if link.error else None
        return msgspec.structs.replace(
            info, result=msgspec.structs.replace(result, evaluation=msgspec.structs.replace(link, status=status))
        )
    try:
        response = await state.judge.request("GET", f"/v1/judgments/jobs/{quote(link.judge_job_id, safe='')}")
        link = evaluation_outcome(link, _JUDGE_JOB.decode(response.content))
    except RequestError as err:
        detail = f"judge_svc could not say how judge job {link.judge_job_id} went: {err.detail}"
        link = msgspec.structs.replace(link, status="unknown", error=detail)
    except msgspec.DecodeError as err:
        link = msgspec.structs.replace(link, status="unknown", error=f"judge_svc answered an unreadable job: {err}")
    return msgspec.structs.replace(info, result=msgspec.structs.replace(result, evaluation=link))


@post(
    "/v1/alignment/jobs/{job_id:str}/cancel",
    status_code=202,
    summary="Cancel a job (a running one stops after its current optimisation step)",
    **scoped("train", AlignmentJobInfo, (202,)),
)
async def cancel_job(state: GatewayState, job_id: FromPath[str]) -> Response[bytes]:
    silent = _silent_s(await _get(state, job_id))  # before the cancel request itself touches the row
    try:
        row = await anyio.to_thread.run_sync(_jobs(state).request_cancel, job_id)
    except KeyError:
        raise RequestError(404, "not_found", "job_id", f"no alignment job {job_id!r}") from None
    except InvalidTransitionError as err:
        raise RequestError(409, "conflict", "job_id", str(err)) from None
    if row.status == "running" and silent >= ORPHAN_AFTER_S:
        # Nobody will see the flag: the worker is gone (it writes a heartbeat every 15 s). End the job here.
        reason = f"cancelled; its worker ({row.worker or 'unknown'}) had not been heard of for {silent:.0f} s"
        ended = await anyio.to_thread.run_sync(lambda: _jobs(state).finish(job_id, "cancelled", error=reason))
        row = ended or await _get(state, job_id)
    return json_response(job_info(row), 202)


@get(
    "/v1/alignment/jobs/{job_id:str}/pairs",
    summary="The job's pair snapshot as JSON lines",
    **scoped("read", str, media_type="application/x-ndjson"),
)
async def job_pairs(state: GatewayState, job_id: FromPath[str], split: FromQuery[str | None] = None) -> Response[bytes]:
    await _get(state, job_id)
    if split not in (None, "train", "test"):
        raise RequestError(400, "invalid", "split", "split must be train or test")
    pairs = await anyio.to_thread.run_sync(_jobs(state).pairs, job_id)
    lines = b"".join(_ENCODER.encode(p) + b"\n" for p in pairs if split is None or p.split == split)
    return Response(lines, media_type="application/x-ndjson")


@post(
    "/v1/alignment/pairs:preview",
    status_code=200,
    summary="The pairs a job with this data selection would train on",
    **scoped("read", PairsPreview, body=PairSelection, example=examples.pair_selection),
)
async def preview_pairs(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    selection = decode_body(msgspec.json.Decoder(PairSelection), await request.body() or b"{}")
    model_id = await _default_model(state, selection)
    return Response(await _PREVIEWS.get(state.store, selection, model_id), media_type="application/json")


class _PreviewCache:
    """One preview build at a time per gateway, and its answer reused while no session changed.

    A preview reads every stored session; without this, a few clients with a read key could keep every core busy
    and hold a copy of the store each. The key is the selection, the model and `store.sessions.sessions_version()`, so
    an answer is never stale; at most `size` answers are kept (their JSON bytes).
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.answers: dict[tuple[int, bytes, str | None, tuple[int, int, str, str]], bytes] = {}
        self.lock = anyio.Lock()

    async def get(self, store: Any, selection: PairSelection, model_id: str | None) -> bytes:
        async with self.lock:
            version = await anyio.to_thread.run_sync(store.sessions.sessions_version)
            key = (id(store), _ENCODER.encode(selection), model_id, version)  # a process may serve several stores
            cached = self.answers.get(key)
            if cached is None:
                pairs, summary = await anyio.to_thread.run_sync(build_pairs, store, selection, model_id)
                cached = _ENCODER.encode(PairsPreview(summary=summary, pairs=pairs))
                if len(self.answers) >= self.size:
                    self.answers.pop(next(iter(self.answers)))
                self.answers[key] = cached
            return cached


_PREVIEWS = _PreviewCache()


def _silent_s(row: AlignmentJobRow) -> float:
    """Seconds since the job's worker last wrote to it."""
    return (utcnow() - row.updated_at).total_seconds() if row.updated_at else 0.0


class EventStreams:
    """Open event streams per key (a stream's generator is held weakly: one never started frees its slot too)."""

    def __init__(self) -> None:
        self.open: dict[str, weakref.WeakSet[Any]] = defaultdict(weakref.WeakSet)

    def total(self) -> int:
        return sum(len(s) for s in self.open.values())

    def claim(self, who: str, stream: Any) -> None:
        """Count `stream` for `who`, or refuse it (429 over the key's share, 503 over the gateway's); no await
        between the check and the count, so concurrent requests cannot all pass the check."""
        if len(self.open[who]) >= STREAMS_PER_KEY:
            raise RequestError(
                429,
                "too_many_streams",
                "authorization",
                f"this key already holds {STREAMS_PER_KEY} event streams; close one first",
                {"Retry-After": "5"},
            )
        if self.total() >= MAX_STREAMS:
            raise RequestError(
                503,
                "too_many_streams",
                "job_id",
                f"{MAX_STREAMS} event streams are open; try again",
                {"Retry-After": "5"},
            )
        self.open[who].add(stream)

    def discard(self, who: str, stream: Any) -> None:
        self.open[who].discard(stream)
        if not self.open[who]:
            del self.open[who]


def _streams(state: GatewayState) -> EventStreams:
    return state.alignment_streams


def _event_message(event: Any) -> ServerSentEventMessage:
    body = AlignmentEvent(seq=event.id, at=event.at, kind=event.kind, data=event.data)
    return ServerSentEventMessage(data=_ENCODER.encode(body).decode(), event=event.kind, id=event.id)


@get(
    "/v1/alignment/jobs/{job_id:str}/events",
    summary="The job's event log as server-sent events (resumable with Last-Event-ID); ends when the job does",
    **scoped("read", str, media_type="text/event-stream"),
)
async def job_events(
    request: Request[Any, Any, Any], state: GatewayState, job_id: FromPath[str], after: FromQuery[int] = 0
) -> ServerSentEvent:
    last = request.headers.get("last-event-id", "")
    start = int(last) if last.isdigit() and len(last) <= 18 else after
    if not 0 <= start < 2**62:
        raise RequestError(400, "invalid", "after", "after (or Last-Event-ID) must be an event id >= 0")
    who = hashlib.sha256(bearer(request).encode()).hexdigest()[:16]
    streams = _streams(state)
    jobs = _jobs(state)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        seen, poll, last_event = start, POLL_S, time.monotonic()
        try:
            while True:
                events = await anyio.to_thread.run_sync(partial(jobs.events, job_id, after=seen))
                for event in events:
                    seen = event.id or seen
                    yield _event_message(event)
                if any(e.kind in TERMINAL for e in events):
                    return
                if events:
                    poll, last_event = POLL_S, time.monotonic()
                else:
                    row = await anyio.to_thread.run_sync(jobs.get, job_id)
                    if row is None or (row.status in TERMINAL and not jobs.events(job_id, after=seen)):
                        return
                    if row.status == "running" and (silent := _silent_s(row)) >= ORPHAN_AFTER_S:
                        yield ServerSentEventMessage(
                            data=None, comment=f"the job's worker has been silent for {silent:.0f} s"
                        )
                        return
                    if time.monotonic() - last_event >= STREAM_IDLE_S:
                        yield ServerSentEventMessage(
                            data=None, comment=f"no event for {STREAM_IDLE_S:g} s: reconnect to resume"
                        )
                        return
                    poll = min(MAX_POLL_S, poll * 2)
                await asyncio.sleep(poll)
        finally:
            streams.discard(who, body)

    body = stream()
    streams.claim(who, body)
    try:
        await _get(state, job_id)
    except BaseException:
        streams.discard(who, body)
        raise
    return ServerSentEvent(body)


@get(
    "/v1/alignment/jobs/{job_id:str}/evaluation",
    summary="The judge's comparison of the SFT and the aligned answers (from judge_svc)",
    **scoped("read", BatchJob),
)
async def job_evaluation(state: GatewayState, job_id: FromPath[str]) -> Response[bytes]:
    row = await _get(state, job_id)
    link = (row.result or {}).get("evaluation") or {}
    judge_job = link.get("judge_job_id")
    if not judge_job:
        detail = link.get("error") or f"job {job_id} has no judge evaluation (status {row.status})"
        raise RequestError(409, "not_ready", "job_id", detail)
    response = await state.judge.request("GET", f"/v1/judgments/jobs/{judge_job}")
    return Response(response.content, status_code=response.status_code, media_type=JSON)


def alignment_routes() -> list[Any]:
    return [create_job, list_jobs, get_job, cancel_job, job_pairs, preview_pairs, job_events, job_evaluation]
