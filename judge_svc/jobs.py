"""Batch judging jobs: run as asyncio tasks in this process, their state kept in a record store.

`JobStore` runs a `BatchRequest` (at most `concurrency` pairs at once), counts progress, failures and order
consistency on a `BatchJob`, and at the end attaches the verdicts and, for an evaluation batch, the
`judge_svc.evaluation` summary. Where the job's state lives is the `JobRecords` given to it:

* `MemoryRecords`: this process's memory, the newest `max_jobs` kept; lost on restart.
* `RedisRecords`: one JSON `BatchJob` per job in Redis, expiring `ttl_s` after its last write, indexed by
  creation time and by `alignment_job_id`. A restarted (or another) judge_svc instance on the same Redis
  sees every job. While a job runs here its record is rewritten every `save_every_s` together with a lease
  key that expires after `lease_s`; a record still `running` whose lease has expired belonged to a process
  that died without finishing it, and is reported (and stored) as `failed` with an error saying so. Such a
  job is not resumed: resubmitting the batch is cheap because every order judged before the crash comes from
  the verdict cache. On a clean shutdown running jobs are stored as `cancelled`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import msgspec

from judge_svc.protocol import Judge
from tacit.schemas.judge import BatchJob, BatchRequest, JudgeRequest, Verdict
from tacit.schemas.problem import RequestError

__all__ = [
    "ORPHANED",
    "SHUT_DOWN",
    "JobRecords",
    "JobStore",
    "JobStoreError",
    "MemoryRecords",
    "RedisRecords",
    "decode_job",
    "utc",
]

logger = logging.getLogger(__name__)

ORPHANED = (
    "the judge_svc process running this job stopped (crashed or was killed) before finishing it; "
    "resubmit the batch: pairs already judged come from the verdict cache"
)
SHUT_DOWN = "judge_svc shut down while the job was running; resubmit the batch"

#: Not strict: records written before times became ISO 8601 hold epoch seconds, which read as UTC datetimes.
_JOB = msgspec.json.Decoder(BatchJob, strict=False)
#: A finished job as the versions before the shared job vocabulary wrote it to Redis (`done`, now `succeeded`).
_LEGACY_DONE = (b'"status":"done"', b'"status":"succeeded"')


def decode_job(value: bytes) -> BatchJob:
    """A job record from Redis, also one written before `done` became `succeeded` or times became ISO 8601."""
    return _JOB.decode(value.replace(*_LEGACY_DONE, 1))


def utc(seconds: float) -> dt.datetime:
    """Epoch seconds as an aware UTC datetime (encoded as ISO 8601 with `Z`)."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


_ENCODER = msgspec.json.Encoder()


class JobStoreError(RequestError):
    """The job store could not be read or written (Redis down): 503 `unavailable`."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, "unavailable", "$", detail)


class JobRecords(Protocol):
    """Where batch jobs' state lives (see the module docstring)."""

    durable: bool
    """Records outlive the process (and must then be rewritten to show progress)."""

    async def save(self, job: BatchJob) -> None: ...

    async def get(self, job_id: str) -> BatchJob | None: ...

    async def list(self, *, alignment_job_id: str | None, limit: int) -> list[BatchJob]: ...

    async def aclose(self) -> None: ...


class MemoryRecords:
    """Jobs in this process's memory: the newest `max_jobs`, running ones always kept."""

    durable = False

    def __init__(self, max_jobs: int = 100) -> None:
        self.max_jobs = max_jobs
        self.jobs: OrderedDict[str, BatchJob] = OrderedDict()

    async def save(self, job: BatchJob) -> None:
        self.jobs[job.job_id] = job
        for job_id in [j for j, old in self.jobs.items() if old.status != "running"]:
            if len(self.jobs) <= self.max_jobs:
                break
            del self.jobs[job_id]

    async def get(self, job_id: str) -> BatchJob | None:
        return self.jobs.get(job_id)

    async def list(self, *, alignment_job_id: str | None, limit: int) -> list[BatchJob]:
        jobs = [j for j in reversed(self.jobs.values()) if alignment_job_id in (None, j.alignment_job_id)]
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)[:limit]

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def _redis_errors(what: str) -> AsyncIterator[None]:
    from redis.exceptions import RedisError

    try:
        yield
    except RedisError as err:
        raise JobStoreError(f"job store unavailable ({what}): {type(err).__name__}: {err}") from err


class RedisRecords:
    """Jobs in Redis (see the module docstring for the keys, the TTL and the lease)."""

    durable = True

    def __init__(
        self,
        client: Any,
        *,
        ttl_s: int = 7 * 24 * 3600,
        lease_s: float = 30.0,
        prefix: str = "tacit:judge:jobs:v1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.ttl_s, self.lease_s, self.prefix, self._clock = client, ttl_s, lease_s, prefix, clock

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRecords:
        import redis.asyncio as redis

        return cls(redis.Redis.from_url(url), **kwargs)

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _lease(self, job_id: str) -> str:
        return f"{self.prefix}:lease:{job_id}"

    def _index(self, alignment_job_id: str | None) -> str:
        return f"{self.prefix}:index" if alignment_job_id is None else f"{self.prefix}:alignment:{alignment_job_id}"

    async def save(self, job: BatchJob) -> None:
        """Write the job (TTL restarts); a running job's lease is renewed, a finished one's dropped."""
        lease_ms = max(1, round(self.lease_s * 1000))
        async with _redis_errors("save"):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._job(job.job_id), _ENCODER.encode(job), ex=self.ttl_s)
            if job.status == "running":
                pipe.set(self._lease(job.job_id), b"1", px=lease_ms)
            else:
                pipe.delete(self._lease(job.job_id))
            indexes = [self._index(None)] + ([self._index(job.alignment_job_id)] if job.alignment_job_id else [])
            for index in indexes:
                pipe.zadd(index, {job.job_id: job.created_at.timestamp()})
                pipe.zremrangebyscore(index, "-inf", self._clock() - self.ttl_s)
                pipe.expire(index, self.ttl_s)
            await pipe.execute()

    async def _orphan_check(self, jobs: Sequence[BatchJob]) -> list[BatchJob]:
        """Jobs as read, except that a running one whose lease expired is stored and returned as failed."""
        running = [job for job in jobs if job.status == "running"]
        if not running:
            return list(jobs)
        pipe = self.client.pipeline(transaction=False)
        for job in running:
            pipe.exists(self._lease(job.job_id))
        alive = {job.job_id for job, found in zip(running, await pipe.execute(), strict=True) if found}
        out = []
        for job in jobs:
            if job.status == "running" and job.job_id not in alive:
                logger.warning("batch job %s lost its owner: marked failed", job.job_id)
                job = msgspec.structs.replace(job, status="failed", error=ORPHANED, finished_at=utc(self._clock()))
                await self.save(job)
            out.append(job)
        return out

    async def get(self, job_id: str) -> BatchJob | None:
        async with _redis_errors("get"):
            value = await self.client.get(self._job(job_id))
            if value is None:
                return None
            return (await self._orphan_check([decode_job(value)]))[0]

    async def list(self, *, alignment_job_id: str | None, limit: int) -> list[BatchJob]:
        """Newest first; index entries whose record expired are pruned on the way."""
        index = self._index(alignment_job_id)
        async with _redis_errors("list"):
            ids = [i.decode() for i in await self.client.zrevrange(index, 0, limit - 1)]
            if not ids:
                return []
            values = await self.client.mget([self._job(i) for i in ids])
            gone = [i for i, value in zip(ids, values, strict=True) if value is None]
            if gone:
                await self.client.zrem(index, *gone)
            return await self._orphan_check([decode_job(value) for value in values if value is not None])

    async def aclose(self) -> None:
        await self.client.aclose()


class JobStore:
    """Runs batch jobs in this process and keeps their state in `records`."""

    def __init__(self, records: JobRecords, *, concurrency: int = 16, save_every_s: float = 1.0) -> None:
        self.records, self.concurrency, self.save_every_s = records, concurrency, save_every_s
        self.live: dict[str, BatchJob] = {}
        """Jobs running in this process (fresher than their records)."""
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._saver: asyncio.Task[None] | None = None
        # One write at a time, each encoding the job as it is then: a progress write can never land after
        # (and undo) a job's final one.
        self._write = asyncio.Lock()

    async def _save(self, job: BatchJob) -> None:
        async with self._write:
            await self.records.save(job)

    async def start(self, batch: BatchRequest, judge: Judge, on_verdict: Callable[[Verdict, float], None]) -> BatchJob:
        """Record a new running job and start it; `on_verdict(verdict, seconds)` is called per judged pair."""
        job = BatchJob(
            job_id=uuid.uuid4().hex,
            status="running",
            done=0,
            total=len(batch.items),
            created_at=utc(time.time()),
            evaluation_requested=batch.evaluation,
            alignment_job_id=batch.alignment_job_id,
            label=batch.label,
        )
        await self._save(job)
        self.live[job.job_id] = job
        task = asyncio.create_task(self._run(job, batch, judge, on_verdict), name=f"judge-batch-{job.job_id}")
        self.tasks[job.job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job.job_id, None))
        if self.records.durable and (self._saver is None or self._saver.done()):
            self._saver = asyncio.create_task(self._save_progress(), name="judge-batch-progress")
        return job

    async def get(self, job_id: str) -> BatchJob | None:
        return self.live.get(job_id) or await self.records.get(job_id)

    async def list(self, *, alignment_job_id: str | None = None, limit: int = 50) -> list[BatchJob]:
        """Jobs newest first, without their verdicts."""
        jobs = await self.records.list(alignment_job_id=alignment_job_id, limit=limit)
        return [msgspec.structs.replace(self.live.get(j.job_id, j), verdicts=None) for j in jobs]

    async def _save_progress(self) -> None:
        """Rewrite running jobs' records (progress, lease) until none is left."""
        while self.live:
            await asyncio.sleep(self.save_every_s)
            for job in list(self.live.values()):
                try:
                    await self._save(job)
                except JobStoreError as err:  # the lease may lapse: the job then reads as failed elsewhere
                    logger.warning("could not save progress of batch job %s: %s", job.job_id, err)

    async def _run(
        self, job: BatchJob, batch: BatchRequest, judge: Judge, on_verdict: Callable[[Verdict, float], None]
    ) -> None:
        limit = asyncio.Semaphore(self.concurrency)
        verdicts: list[Verdict | None] = [None] * job.total

        async def one(i: int, item: JudgeRequest) -> None:
            async with limit:
                start = time.perf_counter()
                verdict = await judge.judge(item)
                on_verdict(verdict, time.perf_counter() - start)
            verdicts[i] = verdict
            job.done += 1
            job.failures += verdict.winner is None
            if verdict.consistent is not None:
                job.judged_both_orders += 1
                job.consistent += verdict.consistent
                job.consistency_rate = job.consistent / job.judged_both_orders

        try:
            await asyncio.gather(*(one(i, item) for i, item in enumerate(batch.items)))
            done = [v for v in verdicts if v is not None]
            if batch.evaluation:
                from judge_svc.evaluation import evaluate

                job.evaluation = evaluate(
                    (r.prompt, r.answer_a, r.answer_b, v) for r, v in zip(batch.items, done, strict=True)
                )
            job.verdicts, job.status = done, "succeeded"
        except asyncio.CancelledError:
            job.status, job.error = "cancelled", SHUT_DOWN
            raise
        except Exception as err:
            logger.exception("batch job %s failed", job.job_id)
            job.status, job.error = "failed", f"{type(err).__name__}: {err}"
        finally:
            job.finished_at = utc(time.time())
            try:
                await self._save(job)
            except JobStoreError as err:
                logger.error("could not save the end of batch job %s: %s", job.job_id, err)
            self.live.pop(job.job_id, None)

    async def aclose(self) -> None:
        """Cancel running jobs (stored as cancelled), then close the records."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._saver is not None:
            self._saver.cancel()
            await asyncio.gather(self._saver, return_exceptions=True)
        await self.records.aclose()
