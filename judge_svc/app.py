"""HTTP edge of the judge service: one pairwise judgment per request, health and Prometheus metrics.

`POST /v1/judgments` decodes a `JudgeRequest` from bytes with msgspec, judges it (both orders by default)
and answers a `Verdict`. A judge failure is still a 200 with `winner: null` and the error recorded: the
request was served, the judge did not give a usable answer. Errors are mapped to status in `_problem`.

`POST /v1/judgments:batch` takes up to 1000 pairs and answers 202 with a job id at once; the job runs as an
asyncio task inside this process and `GET /v1/judgments/jobs/{id}` reports its progress (done/total) and, once
done, the verdicts in request order and (with `evaluation: true`, answer_a = SFT, answer_b = aligned) the
`judge_svc.evaluation` summary. Jobs live in memory only (`JobStore`): they are lost on restart, are not shared
between replicas, and only the newest `max_jobs` are kept; running jobs are cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from judge_svc.backends import Backend
from judge_svc.protocol import Judge, VerdictCache
from judge_svc.settings import JudgeSettings, load_judge_settings
from tacit.schemas.judge import BatchAccepted, BatchJob, BatchRequest, JudgeRequest, Sampling, Verdict
from tacit.schemas.problem import Problem, RequestError, decode_body
from tacit.serving import fast_server_options

__all__ = ["create_app", "make_backend", "serve"]

logger = logging.getLogger(__name__)
JSON = "application/json"

_REQUEST = msgspec.json.Decoder(JudgeRequest)
_BATCH = msgspec.json.Decoder(BatchRequest)
_ENCODER = msgspec.json.Encoder()


def _problem(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, RequestError):
        status, problem = exc.status, Problem(code=exc.code, field=exc.field, detail=exc.detail)
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        problem = Problem(
            code={404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(status, "http_error"),
            field="path" if status in (404, 405) else "$",
            detail=exc.detail,
        )
    else:
        logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        status, problem = 500, Problem(code="internal", field="$", detail="internal error")
    return Response(_ENCODER.encode(problem), status_code=status, media_type=JSON)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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


@post("/v1/judgments", status_code=200, summary="Judge one pair of answers")
async def judgments(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    body = decode_body(_REQUEST, await request.body())
    start = time.perf_counter()
    verdict = await state.judge.judge(body)
    state.metrics.record(verdict, time.perf_counter() - start)
    return Response(_ENCODER.encode(verdict), status_code=200, media_type=JSON)


class JobStore:
    """Batch jobs in this process's memory (see the module docstring): the newest `max_jobs`, running ones kept."""

    def __init__(self, max_jobs: int = 100, concurrency: int = 16) -> None:
        self.max_jobs, self.concurrency = max_jobs, concurrency
        self.jobs: OrderedDict[str, BatchJob] = OrderedDict()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, batch: BatchRequest, judge: Judge, metrics: Metrics) -> BatchJob:
        job = BatchJob(
            job_id=uuid.uuid4().hex, status="running", done=0, total=len(batch.items), created_at=time.time()
        )
        self.jobs[job.job_id] = job
        self._evict()
        task = asyncio.create_task(self._run(job, batch, judge, metrics), name=f"judge-batch-{job.job_id}")
        self.tasks[job.job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job.job_id, None))
        return job

    def _evict(self) -> None:
        for job_id in [j for j, job in self.jobs.items() if job.status != "running"]:
            if len(self.jobs) <= self.max_jobs:
                break
            del self.jobs[job_id]

    async def _run(self, job: BatchJob, batch: BatchRequest, judge: Judge, metrics: Metrics) -> None:
        limit = asyncio.Semaphore(self.concurrency)
        verdicts: list[Verdict | None] = [None] * job.total

        async def one(i: int, item: JudgeRequest) -> None:
            async with limit:
                start = time.perf_counter()
                verdict = await judge.judge(item)
                metrics.record(verdict, time.perf_counter() - start)
            verdicts[i] = verdict
            job.done += 1
            job.failures += verdict.winner is None

        try:
            await asyncio.gather(*(one(i, item) for i, item in enumerate(batch.items)))
            done = [v for v in verdicts if v is not None]
            if batch.evaluation:
                from judge_svc.evaluation import evaluate

                job.evaluation = evaluate(
                    (r.prompt, r.answer_a, r.answer_b, v) for r, v in zip(batch.items, done, strict=True)
                )
            job.verdicts, job.status = done, "done"
        except asyncio.CancelledError:
            job.status, job.error = "cancelled", "service shut down"
            raise
        except Exception as err:
            logger.exception("batch job %s failed", job.job_id)
            job.status, job.error = "failed", f"{type(err).__name__}: {err}"
        finally:
            job.finished_at = time.time()

    async def aclose(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@post("/v1/judgments:batch", status_code=202, summary="Judge up to 1000 pairs in a background job")
async def judgments_batch(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    batch: BatchRequest = decode_body(_BATCH, await request.body())
    job = state.jobs.start(batch, state.judge, state.metrics)
    accepted = BatchAccepted(job_id=job.job_id, total=job.total, status_url=f"/v1/judgments/jobs/{job.job_id}")
    return Response(_ENCODER.encode(accepted), status_code=202, media_type=JSON)


@get("/v1/judgments/jobs/{job_id:str}", summary="A batch job's progress and, when done, its verdicts")
async def judgment_job(job_id: FromPath[str], state: State) -> Response[bytes]:
    job = state.jobs.jobs.get(job_id)
    if job is None:
        raise RequestError(404, "not_found", "job_id", f"no job {job_id} (jobs are kept in memory only)")
    return Response(_ENCODER.encode(job), status_code=200, media_type=JSON)


@get("/healthz", summary="Liveness")
async def healthz(state: State) -> dict[str, str]:
    return {"status": "ok", "backend": state.judge.backend.name, "model": state.judge.backend.model}


@get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics_endpoint(state: State) -> Response[bytes]:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


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


def create_app(settings: JudgeSettings | None = None) -> Litestar:
    """The judge service."""
    settings = settings or load_judge_settings()

    async def startup(app: Litestar) -> None:
        cache = VerdictCache.from_url(settings.redis_url, ttl_s=settings.cache_ttl_s) if settings.redis_url else None
        app.state.settings = settings
        app.state.judge = Judge(make_backend(settings), cache)
        app.state.metrics = Metrics()
        app.state.jobs = JobStore(concurrency=4 * settings.concurrency)

    async def shutdown(app: Litestar) -> None:
        await app.state.jobs.aclose()
        judge: Judge = app.state.judge
        await judge.backend.aclose()
        if judge.cache is not None:
            await judge.cache.aclose()

    return Litestar(
        route_handlers=[judgments, judgments_batch, judgment_job, healthz, metrics_endpoint],
        on_startup=[startup],
        on_shutdown=[shutdown],
        exception_handlers={Exception: _problem},
        openapi_config=OpenAPIConfig(title="Tacit judge service", version="1"),
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
    )


def serve(settings: JudgeSettings | None = None) -> None:
    import uvicorn

    settings = settings or load_judge_settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", **fast_server_options())
