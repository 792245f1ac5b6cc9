"""Rescoring jobs (backfills): a model scores stored sessions in batches, on the `cpu` queue, in Celery workers.

A job is created by the gateway (`store.rescoring.create_rescore_job`: the selection cut into batches of consecutive
session ids) and each batch is one Celery task, so several workers share a job and a batch whose worker dies is
delivered again (acks late). A batch is idempotent per (session, model): it scores only the sessions of its range the
model has not scored yet, and records everything in one transaction (the (session, model) rows, the sessions' current
scores when the model is the active one, the batch's status and the job's progress).

Per batch: the model's description and whether it is active (reward_svc), the sessions still missing, their feature
vectors (the stored ones when the model uses the feature set they were computed with, else feature_svc's batch
route, one request per batch; pointwise sessions whose set needs the preceding turn one at a time), then one
`/v1/score` request per user (the user's earlier labels that this model scored adapt their scores; never a
session's own label, since a session still missing a score is not in that history). A vector the reward service
refuses is retried alone so that one bad session fails alone; a service that is down makes the task retry later.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from typing import Any

import httpx
import msgspec
from celery import shared_task

from gateway.population import population_request
from tacit.db import PayloadPurgedError, SessionRow, Store
from tacit.schemas.features import FeatureVector, FeatureVectors
from tacit.schemas.reward import PopulationPrior, Score, ScoreResponse, UserLabel
from tacit.schemas.session import Session
from tacit.settings import WorkerSettings, load_settings
from tacit.tasks import QUEUE_CPU, TASK_RESCORE

__all__ = ["BatchOutcome", "ServiceDownError", "rescore_batch", "run_batch", "send_batches"]

logger = logging.getLogger(__name__)
#: The user's newest labels that adapt a score (the same bound as on ingest).
HISTORY = 100
#: Retries of a batch while a service is down (backoff up to 60 s: about an hour), then the batch and its job fail.
MAX_RETRIES = 60


class ServiceDownError(RuntimeError):
    """feature_svc or reward_svc did not answer: the batch is retried later, nothing is recorded."""


class BatchOutcome(msgspec.Struct, frozen=True):
    status: str  # "scored", "skipped" (nothing to do), "failed"
    scored: int = 0
    failed: int = 0
    finished_job: bool = False


def send_batches(celery: Any, job_id: str, batches: Sequence[int]) -> None:
    """One task per batch on the cpu queue (task ids derived from the batch: a resend replaces nothing)."""
    for batch in batches:
        celery.send_task(TASK_RESCORE, args=[job_id, batch], task_id=f"{job_id}-{batch}", queue=QUEUE_CPU)


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)
    except httpx.HTTPError as err:
        raise ServiceDownError(f"{client.base_url}: {type(err).__name__}: {err}") from err


def _problem(response: httpx.Response) -> str:
    try:
        body = msgspec.json.decode(response.content)
        return str(body.get("detail") or body.get("title") or response.status_code)[:300]
    except (msgspec.DecodeError, AttributeError):
        return f"HTTP {response.status_code}"


def _model(reward: httpx.Client, model_id: str) -> dict[str, Any]:
    response = _call(reward, "GET", f"/v1/reward/models/{model_id}")
    if response.status_code >= 500:
        raise ServiceDownError(f"reward_svc: HTTP {response.status_code}")
    if response.status_code != 200:
        raise LookupError(f"reward model {model_id}: {_problem(response)}")
    return dict(msgspec.json.decode(response.content))


#: The last estimate per (database, model, mode) with the signature of the labels it came from: the batches of one
#: job share it, and the labels are read and sent again only when they changed (as the gateway's loop does).
_POPULATIONS: dict[tuple[str, str, str], tuple[tuple[int, str], PopulationPrior]] = {}


def _population(store: Store, reward: httpx.Client, model_id: str, mode: str) -> PopulationPrior | None:
    """The model's adaptation prior re-estimated on the people it has scored (None: reward_svc refused; the batch
    then scores with the model's training prior, as a gateway that has not estimated it yet does)."""
    key = (store.url, model_id, mode)
    signature = store.scores.population_signature(model_id, mode)
    cached = _POPULATIONS.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    body = msgspec.json.encode(population_request(store.scores.population_labels(model_id, mode)))
    response = _call(reward, "POST", f"/v1/reward/models/{model_id}/population-prior", content=body)
    if response.status_code >= 500:
        raise ServiceDownError(f"reward_svc: HTTP {response.status_code}")
    if response.status_code != 200:
        logger.warning("population prior of %s: %s", model_id, _problem(response))
        return None
    prior = msgspec.json.decode(response.content, type=PopulationPrior)
    _POPULATIONS[key] = (signature, prior)
    return prior


def _vectors(
    store: Store, features: httpx.Client, rows: Sequence[SessionRow], feature_set: str, version: str
) -> tuple[dict[str, FeatureVector], list[FeatureVector], dict[str, str]]:
    """(vector per session id, the newly extracted ones, failures): stored vectors when they are of the model's set."""
    vectors: dict[str, FeatureVector] = {}
    failed: dict[str, str] = {}
    extract: list[SessionRow] = []
    for row in rows:
        stored = store.scores.features_of(row) if row.features is not None else None
        if stored is not None and stored.feature_set == feature_set and stored.feature_set_version == version:
            vectors[row.session_id] = stored
        else:
            extract.append(row)
    fresh: list[FeatureVector] = []
    batchable: list[Session] = []
    one_by_one: list[Session] = []
    for row in extract:
        try:
            session = store.sessions.load_payload(row)
        except PayloadPurgedError:
            failed[row.session_id] = "payload purged by retention: no features to score"
            continue
        (one_by_one if session.mode == "pointwise" and session.turn else batchable).append(session)
    for start in range(0, len(batchable), 500):
        chunk = batchable[start : start + 500]
        body = msgspec.json.encode({"sessions": chunk, "feature_set": feature_set})
        response = _call(features, "POST", "/v1/features:batch", content=body)
        if response.status_code >= 500:
            raise ServiceDownError(f"feature_svc: HTTP {response.status_code}")
        if response.status_code != 200:
            for session in chunk:
                failed[session.session_id] = f"feature_svc: {_problem(response)}"
            continue
        fresh.extend(msgspec.json.decode(response.content, type=FeatureVectors).vectors)
    for session in one_by_one:
        assert session.turn is not None
        previous_row = store.sessions.find_turn(session.user_id, session.task_id, session.turn - 1)
        previous = None
        if previous_row is not None:
            try:
                previous = store.sessions.load_payload(previous_row)
            except PayloadPurgedError:
                previous = None
        body = msgspec.json.encode({"session": session, "feature_set": feature_set, "previous": previous})
        response = _call(features, "POST", "/v1/features", content=body)
        if response.status_code >= 500:
            raise ServiceDownError(f"feature_svc: HTTP {response.status_code}")
        if response.status_code != 200:
            failed[session.session_id] = f"feature_svc: {_problem(response)}"
            continue
        fresh.append(msgspec.json.decode(response.content, type=FeatureVector))
    vectors.update((v.session_id, v) for v in fresh)
    return vectors, fresh, failed


def _score(
    reward: httpx.Client,
    vectors: Sequence[FeatureVector],
    mode: str,
    model_id: str,
    history: list[UserLabel],
    population: PopulationPrior | None = None,
) -> tuple[list[Score], dict[str, str]]:
    """Scores of one user's vectors; a refused request is split so that only the refused vectors fail."""
    request: dict[str, Any] = {"vectors": vectors, "mode": mode, "model_id": model_id, "user_history": history}
    if population is not None:
        request["population"] = population
    body = msgspec.json.encode(request)
    response = _call(reward, "POST", "/v1/score", content=body)
    if response.status_code >= 500 or response.status_code == 503:
        raise ServiceDownError(f"reward_svc: HTTP {response.status_code}")
    if response.status_code == 200:
        return msgspec.json.decode(response.content, type=ScoreResponse).scores, {}
    if len(vectors) == 1:
        return [], {vectors[0].session_id: f"reward_svc: {_problem(response)}"}
    half = len(vectors) // 2
    left, left_failed = _score(reward, vectors[:half], mode, model_id, history, population)
    right, right_failed = _score(reward, vectors[half:], mode, model_id, history, population)
    return left + right, left_failed | right_failed


def run_batch(store: Store, reward: httpx.Client, features: httpx.Client, job_id: str, batch: int) -> BatchOutcome:
    """Score one batch of a rescoring job (see the module docstring). Raises ServiceDownError to be retried."""
    started = store.rescoring.start_rescore_batch(job_id, batch)
    if started is None:
        return BatchOutcome("skipped")
    job, part = started
    model_id, mode = str(job.spec["model_id"]), str(job.spec["mode"])
    try:
        model = _model(reward, model_id)
    except LookupError as err:
        store.rescoring.fail_rescore_batch(job_id, batch, str(err))
        return BatchOutcome("failed")
    rows = store.rescoring.missing_scores(job, part)
    vectors, fresh, failed = _vectors(
        store, features, rows, str(model["feature_set"]), str(model["feature_set_version"])
    )
    by_user: dict[str, list[FeatureVector]] = defaultdict(list)
    user_of = {row.session_id: row.user_id for row in rows}
    for row in rows:
        if row.session_id in vectors:
            by_user[user_of[row.session_id]].append(vectors[row.session_id])
    scores: list[Score] = []
    population = _population(store, reward, model_id, mode) if by_user else None
    for user, user_vectors in by_user.items():
        history = [
            UserLabel(p_population=p, label=1 if label else 0, model_id=model_id, task_id=task)
            for p, label, task in store.scores.model_label_history(user, mode, model_id, HISTORY)
        ]
        got, refused = _score(reward, user_vectors, mode, model_id, history, population)
        scores.extend(got)
        failed.update(refused)
    # the sessions' current score follows the active model only (checked now: another may have been activated since)
    current = bool(model.get("active"))
    finished = store.rescoring.record_rescore_batch(
        job_id, batch, scores, current=current, failed=failed, vectors=fresh
    )
    return BatchOutcome("scored", scored=len(scores), failed=len(failed), finished_job=finished)


@cache
def _store(url: str) -> Store:
    store = Store(url)
    store.migrate()
    return store


@shared_task(  # type: ignore[untyped-decorator]
    name=TASK_RESCORE, bind=True, max_retries=None
)  # bounded by MAX_RETRIES below, then the batch fails
def rescore_batch(self: Any, job_id: str, batch: int) -> dict[str, Any]:
    """Celery entry point: a batch of rescoring job `job_id`; retried with backoff while a service is down."""
    settings = load_settings(WorkerSettings, "TACIT_WORKER_")
    store = _store(settings.db_url())
    with (
        httpx.Client(base_url=settings.reward_url, timeout=60) as reward,
        httpx.Client(base_url=settings.feature_url, timeout=120) as features,
    ):
        try:
            outcome = run_batch(store, reward, features, job_id, batch)
        except ServiceDownError as err:
            if self.request.retries >= MAX_RETRIES:
                store.rescoring.fail_rescore_batch(job_id, batch, f"gave up after {MAX_RETRIES} retries: {err}")
                return {"status": "failed", "error": str(err)}
            delay = min(60, 2 ** min(self.request.retries, 6))
            logger.warning("rescore %s batch %d: %s; retrying in %d s", job_id, batch, err, delay)
            raise self.retry(countdown=delay) from err
    return msgspec.structs.asdict(outcome)
