"""The gateway's Prometheus metrics: the ingest pipeline's counters, HTTP requests, and the stack read at scrape time.

At each scrape a collector reads the job table (jobs by kind and state), the length of each Celery queue in Redis
and whether the database and Redis answer. It blocks on both, so /metrics renders in a worker thread. A
dependency that does not answer reports `tacit_dependency_up 0` and leaves its own gauges out rather than
reporting zeros it did not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlmodel import col

from tacit.db import Store
from tacit.db.models import JOB_STATES, AlignmentJobRow, JobRow
from tacit.http_metrics import ServiceMetrics
from tacit.tasks import QUEUE_ALIGN, QUEUE_CPU

__all__ = ["JOB_KINDS", "MODES", "SOURCES", "Metrics", "StackCollector", "ingested_counter"]

MODES = ("pairwise", "pointwise")
#: How a session reached the database: the API (`POST /v1/sessions`), the browser collector (a browser token) or an
#: IFLLM import job (counted by the cpu worker that runs it, served on that worker's /metrics).
SOURCES = ("api", "collector", "import")
#: Job kinds exported (at zero) before any exists: IFLLM imports (`jobs` table) and alignment jobs (`alignment_jobs`).
JOB_KINDS = ("import_ifllm", "sft", "dpo", "rdpo")


def ingested_counter(registry: CollectorRegistry | None) -> Counter:
    """`tacit_sessions_ingested_total{mode, gaze_consent, source}`: sessions stored (the gateway counts `api` and
    `collector`, the import task `import`); one definition, so both sides export the same labels."""
    return Counter(
        "tacit_sessions_ingested",
        "Sessions stored, by how they came",
        ["mode", "gaze_consent", "source"],
        registry=registry,
    )


class Metrics(ServiceMetrics):
    """One registry per app (tests run many apps in one process); `render()` blocks on the database and Redis once
    `watch` is called: call it off the event loop."""

    def __init__(self) -> None:
        super().__init__("gateway")
        r = self.registry
        self.ingested = ingested_counter(r)
        self.scored = Counter("tacit_sessions_scored", "Sessions scored", ["mode", "abstained"], registry=r)
        self.pending = Counter(
            "tacit_sessions_pending", "Ingests answered with a pending score", ["reason"], registry=r
        )
        self.scores = Histogram(
            "tacit_sessions_preference_score",
            "Probabilities answered",
            ["mode"],
            registry=r,
            buckets=tuple(i / 10 for i in range(1, 11)),
        )
        self.agreement = Counter(
            "tacit_sessions_label_agreement",
            "Scored sessions with an explicit label, by agreement",
            ["mode", "agree"],
            registry=r,
        )
        self.latency = Histogram(
            "tacit_sessions_ingest_duration_seconds",
            "Ingest latency (store + features + score)",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        # Known label sets exist from start-up: a ratio of two of them is defined as soon as there is traffic.
        for mode in MODES:
            self.scores.labels(mode)
            for flag in ("true", "false"):
                for source in SOURCES[:2]:  # `import` is the cpu worker's to export
                    self.ingested.labels(mode, flag, source)
                self.scored.labels(mode, flag)
                self.agreement.labels(mode, flag)
        self._stack: StackCollector | None = None

    def watch(self, store: Store, redis_url: str) -> None:
        """Report jobs, queue depths and dependency health at each scrape (once per app; later calls re-point it)."""
        if self._stack is not None:
            self.registry.unregister(self._stack)
        self._stack = StackCollector(store, redis_url)
        self.registry.register(self._stack)


class StackCollector(Collector):
    """Jobs by kind and state (both job tables), Celery queue depths, database and Redis health; read at each scrape."""

    def __init__(
        self, store: Store, redis_url: str, *, queues: Iterable[str] = (QUEUE_CPU, QUEUE_ALIGN), timeout_s: float = 1.0
    ) -> None:
        self.store, self.redis_url, self.queues, self.timeout_s = store, redis_url, tuple(queues), timeout_s

    def describe(self) -> Iterable[Metric]:
        return []  # nothing read at registration time

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "tacit_dependency_up", "1 when the dependency answered this scrape, else 0", labels=["dependency"]
        )
        counts = self._job_counts()
        up.add_metric(["database"], 0.0 if counts is None else 1.0)
        if counts is not None:
            jobs = GaugeMetricFamily("tacit_jobs", "Jobs in the gateway's job table", labels=["kind", "state"])
            for (kind, state), n in counts.items():
                jobs.add_metric([kind, state], n)
            yield jobs
        depths = self._queue_depths()
        up.add_metric(["redis"], 0.0 if depths is None else 1.0)
        if depths is not None:
            depth = GaugeMetricFamily("tacit_queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
            for queue, n in depths.items():
                depth.add_metric([queue], n)
            yield depth
        yield up

    def _job_counts(self) -> dict[tuple[str, str], float] | None:
        counts = {(kind, state): 0.0 for kind in JOB_KINDS for state in JOB_STATES}
        try:
            with self.store.engine.connect() as conn:
                for table in (JobRow, AlignmentJobRow):
                    columns = (col(table.kind), col(table.status))
                    for kind, state, n in conn.execute(select(*columns, func.count()).group_by(*columns)):
                        counts[(kind, state)] = counts.get((kind, state), 0.0) + float(n)
        except Exception:  # any failure to read is "database down" for this scrape
            return None
        return counts

    def _queue_depths(self) -> dict[str, float] | None:
        import redis

        client = redis.Redis.from_url(
            self.redis_url, socket_connect_timeout=self.timeout_s, socket_timeout=self.timeout_s
        )
        try:
            pipe = client.pipeline(transaction=False)
            for queue in self.queues:
                pipe.llen(queue)  # kombu's Redis transport keeps a queue's messages in a list named after it
            lengths = pipe.execute()
        except redis.RedisError:
            return None
        finally:
            client.close()
        return {queue: float(n) for queue, n in zip(self.queues, lengths, strict=True)}
