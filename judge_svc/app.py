"""HTTP edge of the judge service: one pairwise judgment per request, health and Prometheus metrics.

`POST /v1/judgments` decodes a `JudgeRequest` from bytes with msgspec, judges it (both orders by default)
and answers a `Verdict`. A judge failure is still a 200 with `winner: null` and the error recorded (naming the
endpoint when it could not be reached): the request was served, the judge did not give a usable answer. With no
LLM endpoint configured (`TACIT_JUDGE_BASE_URL` empty) judging answers 503 `not_configured` at once, and
`GET /readyz` says whether an endpoint is configured and answers. `POST /admin/reload` re-reads the settings
(environment and `TACIT_JUDGE_SETTINGS_FILE`) and swaps the backend: the endpoint changes without a restart.
Errors are values (RequestError) the edge kit (tacit.edge) answers as every service does.

`POST /v1/judgments:batch` takes up to 1000 pairs and answers 202 with a job id at once; the job runs as an
asyncio task inside this process and `GET /v1/judgments/jobs/{id}` reports its progress (done/total, failures,
order consistency) and, once done, the verdicts in request order and (with `evaluation: true`, answer_a = SFT,
answer_b = aligned) the `judge_svc.evaluation` summary; `GET /v1/judgments/jobs/{id}/plot.png` draws that
summary. `GET /v1/judgments/jobs?alignment_job_id=...` lists jobs (newest first, without verdicts), so that an
alignment job's evaluation can be found by the alignment job's id. With a `redis_url` the jobs are kept in Redis
and survive a restart (`judge_svc.jobs.RedisRecords`); without one they live in this process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from prometheus_client import Counter, Histogram

from judge_svc.backends import Backend
from judge_svc.jobs import JobRecords, JobStore, MemoryRecords, RedisRecords
from judge_svc.protocol import Judge, VerdictCache
from judge_svc.settings import BASE_URL_SETTING, JudgeSettings, load_judge_settings
from tacit.edge import json_response, own_query, service_app
from tacit.http_metrics import ServiceMetrics
from tacit.schemas.judge import (
    BatchAccepted,
    BatchJob,
    BatchJobList,
    BatchRequest,
    JudgeLlmStatus,
    JudgeReloaded,
    JudgeRequest,
    Sampling,
    Verdict,
)
from tacit.schemas.problem import RequestError, decode_body
from tacit.serving import serve as run_server
from tacit.settings import SettingsError

__all__ = ["create_app", "make_backend", "serve"]

logger = logging.getLogger(__name__)

_REQUEST = msgspec.json.Decoder(JudgeRequest)
_BATCH = msgspec.json.Decoder(BatchRequest)


class Metrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("judge_svc")
        self.calls = Counter("tacit_judge_calls", "Judgments served", ["outcome"], registry=self.registry)
        self.latency = Histogram(
            "tacit_judge_seconds",
            "Judgment latency",
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
        )
        self.tokens = Counter("tacit_judge_tokens", "Judge tokens spent", ["direction"], registry=self.registry)
        self.cache_hits = Counter("tacit_judge_cache_hits", "Per-order outcomes from the cache", registry=self.registry)
        self.failures = Counter(
            "tacit_judge_failures", "Orders the judge failed on", ["reason"], registry=self.registry
        )
        self.inconsistent = Counter(
            "tacit_judge_inconsistent", "Verdicts whose two orders disagreed", registry=self.registry
        )
        self.order_checks = Counter(
            "tacit_judge_order_checks",
            "Verdicts judged in both orders, by whether the two orders agreed",
            ["consistent"],
            registry=self.registry,
        )
        # Known label sets exist from start-up, so failure and consistency rates are defined with the first call.
        for outcome in ("ok", "failed"):
            self.calls.labels(outcome)
        for direction in ("in", "out"):
            self.tokens.labels(direction)
        for flag in ("true", "false"):
            self.order_checks.labels(flag)

    def record(self, verdict: Verdict, seconds: float) -> None:
        self.calls.labels("failed" if verdict.winner is None else "ok").inc()
        self.latency.observe(seconds)
        self.tokens.labels("in").inc(verdict.tokens_in)
        self.tokens.labels("out").inc(verdict.tokens_out)
        for outcome in verdict.outcomes:
            if outcome.cached:
                self.cache_hits.inc()
            if outcome.error is not None:
                self.failures.labels(outcome.error.split(":")[0].split(" ")[0]).inc()
        if verdict.consistent is False:
            self.inconsistent.inc()
        if verdict.consistent is not None:
            self.order_checks.labels(str(verdict.consistent).lower()).inc()


class JudgeState(State):
    """The app's state, typed: handlers are given it as `state`; the lifespan builds all of it at start-up."""

    settings: JudgeSettings
    judge: Judge
    metrics: Metrics
    jobs: JobStore
    reload: Callable[[], JudgeSettings]
    """Reads the settings again (`POST /admin/reload`)."""
    retired: list[Backend]
    """Backends replaced by a reload: running batch jobs may still use them; closed at shutdown."""


#: Settings a reload cannot change in a running process (the listening socket, the stores).
RESTART_ONLY = ("host", "port", "redis_url", "cache_ttl_s", "job_ttl_s", "job_lease_s", "max_jobs", "max_body_bytes")


class NotConfiguredError(RequestError):
    """No LLM endpoint to ask: 503 `not_configured`, naming the setting that sets one."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "not_configured",
            "$",
            f"judge_svc has no LLM endpoint configured: set {BASE_URL_SETTING} (an OpenAI-compatible server's URL, "
            "e.g. http://127.0.0.1:8000/v1) with TACIT_JUDGE_MODEL and TACIT_JUDGE_API_KEY, then restart judge_svc "
            "or POST /admin/reload (see docs/judge.md)",
        )


def _configured(state: JudgeState) -> Judge:
    if not state.settings.configured:
        raise NotConfiguredError
    return state.judge


@post("/v1/judgments", status_code=200, summary="Judge one pair of answers")
async def judgments(request: Request[Any, Any, Any], state: JudgeState) -> Response[bytes]:
    body = decode_body(_REQUEST, await request.body())
    judge = _configured(state)
    start = time.perf_counter()
    verdict = await judge.judge(body)
    state.metrics.record(verdict, time.perf_counter() - start)
    return json_response(verdict, 200)


@post("/v1/judgments:batch", status_code=202, summary="Judge up to 1000 pairs in a background job")
async def judgments_batch(request: Request[Any, Any, Any], state: JudgeState) -> Response[bytes]:
    batch: BatchRequest = decode_body(_BATCH, await request.body())
    judge = _configured(state)
    job = await state.jobs.start(batch, judge, state.metrics.record)
    accepted = BatchAccepted(job_id=job.job_id, total=job.total, status_url=f"/v1/judgments/jobs/{job.job_id}")
    return json_response(accepted, 202)


async def _job(state: JudgeState, job_id: str) -> BatchJob:
    job: BatchJob | None = await state.jobs.get(job_id)
    if job is None:
        kept = "expired or never created" if state.jobs.records.durable else "jobs are kept in memory only"
        raise RequestError(404, "not_found", "job_id", f"no job {job_id} ({kept})")
    return job


@get("/v1/judgments/jobs", summary="Batch jobs, newest first, without verdicts (filter by alignment_job_id)")
async def judgment_jobs(request: Request[Any, Any, Any], state: JudgeState) -> Response[bytes]:
    params = request.query_params
    unknown = sorted(set(params) - {"alignment_job_id", "limit"})
    if unknown:
        raise RequestError(422, "invalid", unknown[0], f"unknown query parameter {unknown[0]!r}")
    alignment_job_id = params.get("alignment_job_id") or None
    raw_limit = params.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
        raise RequestError(422, "invalid", "limit", f"limit must be an integer from 1 to 500, got {raw_limit!r}")
    jobs = await state.jobs.list(alignment_job_id=alignment_job_id, limit=int(raw_limit))
    return json_response(BatchJobList(jobs=jobs), 200)


@get("/v1/judgments/jobs/{job_id:str}", summary="A batch job's progress and, when done, its verdicts")
async def judgment_job(job_id: FromPath[str], state: JudgeState) -> Response[bytes]:
    return json_response(await _job(state, job_id), 200)


@get("/v1/judgments/jobs/{job_id:str}/plot.png", summary="An evaluation job's plot (win/tie/loss, score difference)")
async def judgment_job_plot(job_id: FromPath[str], state: JudgeState) -> Response[bytes]:
    job = await _job(state, job_id)
    if not job.evaluation_requested:
        raise RequestError(409, "not_an_evaluation", "job_id", f"job {job_id} was not an evaluation batch")
    if job.evaluation is None:
        why = "is still running" if job.status == "running" else f"ended {job.status}: {job.error}"
        raise RequestError(409, "not_ready", "job_id", f"job {job_id} has no evaluation: it {why}")
    from judge_svc.evaluation import render_evaluation_png

    title = job.label or (f"alignment job {job.alignment_job_id}" if job.alignment_job_id else "Aligned vs SFT")
    png = await asyncio.to_thread(render_evaluation_png, job.evaluation, title=title)
    return Response(png, status_code=200, media_type="image/png")


@get("/healthz", summary="Liveness")
async def healthz(state: JudgeState) -> dict[str, str]:
    return {"status": "ok", "backend": state.judge.backend.name, "model": state.judge.backend.model}


async def llm_status(state: JudgeState) -> dict[str, Any]:
    """The judge LLM as `/readyz` reports it: `ok`, `not_configured` or `unreachable`, with the endpoint."""
    settings = state.settings
    info: dict[str, Any] = {"configured": settings.configured, "backend": settings.backend, "model": settings.model}
    info["endpoint"] = settings.endpoint or None
    if not settings.configured:
        return {"status": "not_configured", **info, "detail": NotConfiguredError().detail}
    probe = getattr(state.judge.backend, "probe", None)  # the local backend is loaded at start-up: nothing to probe
    error = await probe() if probe is not None else None
    return {"status": "unreachable", **info, "detail": error} if error else {"status": "ok", **info}


@get("/readyz", summary="Readiness: whether an LLM endpoint is configured and answers (503 when unreachable)")
async def readyz(state: JudgeState) -> Response[bytes]:
    """200 `ok`; 200 `not_configured` (the service runs, judging answers 503 naming the setting); 503 unreachable."""
    llm = await llm_status(state)
    ready = llm["status"] != "unreachable"
    return json_response(
        {"ready": ready, "status": llm["status"], "llm": llm},
        200 if ready else 503,
        None if ready else {"Retry-After": "5"},
    )


@post("/admin/reload", status_code=200, summary="Re-read the settings and swap the judge backend (no restart)")
async def admin_reload(state: JudgeState) -> Response[bytes]:
    try:
        settings = state.reload()
    except SettingsError as err:
        raise RequestError(422, "invalid", "settings", f"settings not reloaded: {err}") from None
    restart = [name for name in RESTART_ONLY if getattr(settings, name) != getattr(state.settings, name)]
    old = state.judge
    state.judge = Judge(make_backend(settings), old.cache)
    state.settings = msgspec.structs.replace(settings, **{name: getattr(state.settings, name) for name in RESTART_ONLY})
    state.retired.append(old.backend)
    logger.info("judge settings reloaded: %s %s at %s", settings.backend, settings.model, settings.endpoint or "-")
    return json_response(
        JudgeReloaded(
            reloaded=True, llm=msgspec.convert(await llm_status(state), JudgeLlmStatus), needs_restart=restart
        )
    )


def make_backend(settings: JudgeSettings) -> Backend:
    """The backend the settings name (the local one imports torch, lazily)."""
    sampling = Sampling(temperature=settings.temperature, max_tokens=settings.max_tokens)
    if settings.backend == "local":
        from judge_svc.backends.local import LocalBackend

        return LocalBackend(settings.model, sampling=sampling)
    from judge_svc.backends.openai_compat import OpenAICompatBackend

    return OpenAICompatBackend(
        settings.base_url,
        settings.model,
        settings.api_key,
        concurrency=settings.concurrency,
        timeout_s=settings.timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        sampling=sampling,
    )


def create_app(
    settings: JudgeSettings | None = None, *, reload: Callable[[], JudgeSettings] = load_judge_settings
) -> Litestar:
    """The judge service; `reload` reads the settings again for `POST /admin/reload`."""
    settings = settings or load_judge_settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        cache = VerdictCache.from_url(settings.redis_url, ttl_s=settings.cache_ttl_s) if settings.redis_url else None
        state = JudgeState(app.state)  # a typed view of app.state
        state.settings, state.judge, state.metrics = settings, Judge(make_backend(settings), cache), metrics
        state.reload, state.retired = reload, []
        records: JobRecords = (
            RedisRecords.from_url(settings.redis_url, ttl_s=settings.job_ttl_s, lease_s=settings.job_lease_s)
            if settings.redis_url
            else MemoryRecords(settings.max_jobs)
        )
        # Progress is rewritten (and the lease renewed) several times per lease period.
        save_every_s = min(1.0, settings.job_lease_s / 4)
        state.jobs = JobStore(records, concurrency=4 * settings.concurrency, save_every_s=save_every_s)
        try:
            yield
        finally:
            await state.jobs.aclose()
            for backend in [*state.retired, state.judge.backend]:
                await backend.aclose()
            if state.judge.cache is not None:
                await state.judge.cache.aclose()

    return service_app(
        "Tacit judge service",
        # the job listing checks its own query string (and names the unknown parameter as the edge kit would)
        [judgments, judgments_batch, own_query(judgment_jobs), judgment_job, judgment_job_plot, readyz, admin_reload],
        metrics=metrics,
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        health=healthz,
    )


def serve(settings: JudgeSettings | None = None) -> None:
    settings = settings or load_judge_settings()
    run_server(create_app(settings), settings.host, settings.port)
