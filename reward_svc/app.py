"""HTTP edge of the reward service: scoring, and the model registry with training as Celery jobs.

`POST /v1/score` scores feature vectors with the active (or a named) model; `/v1/reward/models` lists,
trains (a job on the `cpu` queue), shows, activates, cancels and deletes models. A training whose worker died or
hung (no progress step for `stale_after_s`) is failed by the reaper, at start-up and every `reap_interval_s`.
Bodies are decoded from bytes by msgspec; errors are values (RequestError) the edge kit (tacit.edge) answers as
every service does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery
from prometheus_client import Counter, Gauge, Histogram, Info

from reward_svc.model.estimators import MODELS
from reward_svc.registry import ModelRow, Registry, TrainingRowRow, TrainingSetRow
from reward_svc.service import Scorer, delete_model, model_info
from reward_svc.settings import RewardSettings
from tacit.edge import json_response, service_app
from tacit.http_metrics import ServiceMetrics
from tacit.schemas import ScoreRequest, ScoreResponse, TrainRewardModel
from tacit.schemas.problem import Problem, RequestError, decode_body
from tacit.schemas.reward import (
    MIN_TRAINING_SESSIONS,
    MIN_TRAINING_USERS,
    PopulationRequest,
    SessionTrainingSet,
    StoredSessions,
    TrainingMember,
    TrainingMembers,
    UserErasure,
    decode_train,
)
from tacit.serving import serve as run_server
from tacit.settings import load_settings
from tacit.tasks import QUEUE_CPU, TASK_TRAIN_REWARD

__all__ = ["Problem", "create_app", "serve"]

logger = logging.getLogger(__name__)

_SCORE = msgspec.json.Decoder(ScoreRequest)
_POPULATION = msgspec.json.Decoder(PopulationRequest)
_SESSIONS = msgspec.json.Decoder(SessionTrainingSet)


class Metrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("reward_svc")
        self.latency = Histogram(
            "tacit_reward_score_seconds",
            "Scoring latency",
            ["batch"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
        )
        self.scores = Histogram(
            "tacit_preference_score",
            "Preference probabilities served",
            ["mode"],
            registry=self.registry,
            buckets=tuple(i / 10 for i in range(1, 11)),
        )
        self.abstained = Counter("tacit_abstentions", "Scores abstained on", ["mode"], registry=self.registry)
        self.active = Gauge(
            "tacit_active_reward_model", "1 for the active model", ["mode", "model_id"], registry=self.registry
        )
        self.model = Info(
            "tacit_reward_model",
            "The active reward model of each mode and its version",
            ["mode"],
            registry=self.registry,
        )
        self.reaped = Counter(
            "tacit_reward_trainings_reaped",
            "Trainings failed because their worker sent no heartbeat for the stale limit",
            registry=self.registry,
        )
        for mode in ("pairwise", "pointwise"):  # exported from start-up: abstention rates exist with the first score
            self.scores.labels(mode)
            self.abstained.labels(mode)

    def activated(self, row: ModelRow) -> None:
        """Record `row` as its mode's active model."""
        self.active.labels(row.task, row.id).set(1)
        self.model.labels(row.task).info(
            {
                "model_id": row.id,
                "model": row.model_name,
                "feature_set": row.feature_set,
                "feature_set_version": row.feature_set_version,
                "data_hash": row.data_hash,
                "demo": str(row.demo).lower(),
            }
        )


class RewardState(State):
    """The app's state, typed: handlers are given it as `state`; the lifespan builds all of it at start-up."""

    settings: RewardSettings
    registry: Registry
    scorer: Scorer
    metrics: Metrics
    celery: Any
    """The Celery app training jobs are sent through (by task name: no task code)."""
    reaper: asyncio.Task[None]


@post("/v1/score", status_code=200, summary="Score feature vectors")
async def score(request: Request[Any, Any, Any], state: RewardState) -> Response[bytes]:
    body: ScoreRequest = decode_body(_SCORE, await request.body())
    start = time.perf_counter()
    scores = state.scorer.score(body.vectors, body.mode, body.model_id, body.user_history, body.population)
    metrics = state.metrics
    metrics.latency.labels(str(len(scores) > 1)).observe(time.perf_counter() - start)
    for item in scores:
        metrics.scores.labels(body.mode).observe(item.p)
        if item.abstained:
            metrics.abstained.labels(body.mode).inc()
    return json_response(ScoreResponse(scores=scores))


@post(
    "/v1/reward/models/{model_id:str}/population-prior",
    status_code=200,
    summary="Re-estimate a model's adaptation prior on the labels of the people it scores",
)
async def population_prior(
    request: Request[Any, Any, Any], state: RewardState, model_id: FromPath[str]
) -> Response[bytes]:
    """Empirical Bayes over the people scored: the answer goes with later score requests (`population`).

    Nothing is stored here: the labels belong to the gateway's users, and it sends them again when they change.
    """
    body: PopulationRequest = decode_body(_POPULATION, await request.body())
    prior = await anyio.to_thread.run_sync(state.scorer.population_prior, model_id, body.labels)
    return json_response(prior)


@get("/v1/reward/models", summary="List reward models")
async def list_models(state: RewardState, task: FromQuery[str | None] = None) -> Response[bytes]:
    registry = state.registry
    rows = registry.list(task)
    sets = registry.training_sets(row.id for row in rows)
    return json_response([model_info(row, sets.get(row.id)) for row in rows])


@get("/v1/reward/models/{model_id:str}", summary="One reward model")
async def get_model(state: RewardState, model_id: FromPath[str]) -> Response[bytes]:
    row = state.registry.get(model_id)
    if row is None:
        raise RequestError(404, "not_found", "model_id", f"no reward model {model_id}")
    return json_response(model_info(row, state.registry.training_set(model_id)))


@get(
    "/v1/reward/models/{model_id:str}/training-set",
    summary="A model's stored-session training set: ids, users, content hashes, out-of-fold probabilities "
    "(internal: the gateway reads it; never proxied to the public API)",
)
async def get_training_set(state: RewardState, model_id: FromPath[str]) -> Response[bytes]:
    registry = state.registry
    row = registry.get(model_id)
    if row is None:
        raise RequestError(404, "not_found", "model_id", f"no reward model {model_id}")
    members = [
        TrainingMember(
            session_id=r.session_id,
            user_id=r.user_id,
            content_hash=r.content_hash,
            label=r.label,
            p_out_of_fold=r.p_oof,
        )
        for r in registry.training_rows(model_id)
    ]
    return json_response(TrainingMembers(model_id=row.id, task=row.task, demo=row.demo, members=members))


def _check_model(spec: TrainRewardModel) -> None:
    if spec.model is not None and spec.model not in MODELS:
        raise RequestError(422, "unknown_model", "model", f"unknown model {spec.model!r}; known: {', '.join(MODELS)}")


def _enqueue(
    state: RewardState,
    spec: TrainRewardModel,
    training_set: TrainingSetRow | None = None,
    rows: list[TrainingRowRow] | None = None,
) -> Response[bytes]:
    """Register the model (with its training set, in one transaction) and queue its training; 503 and nothing
    registered when the queue is down."""
    registry = state.registry
    row = registry.create(
        task=spec.task,
        model_name=spec.model or "",
        feature_set=spec.feature_set or "",
        spec=msgspec.to_builtins(spec),
        demo=spec.demo,
        training_set=training_set,
        training_rows=rows or (),
    )
    try:
        state.celery.send_task(
            TASK_TRAIN_REWARD, args=[row.id, msgspec.to_builtins(spec)], queue=QUEUE_CPU, task_id=f"reward-{row.id}"
        )
    except Exception as err:  # broker down: nothing is queued, so nothing stays registered
        registry.delete(row.id)
        raise RequestError(
            503, "queue_unavailable", "$", f"job queue unavailable: {type(err).__name__}", {"Retry-After": "5"}
        ) from None
    return json_response(model_info(row, training_set), 202)


@post("/v1/reward/models", status_code=202, summary="Train a reward model (a job on the cpu queue)")
async def train_model(request: Request[Any, Any, Any], state: RewardState) -> Response[bytes]:
    spec = decode_train(await request.body())
    if isinstance(spec.source, StoredSessions):
        raise RequestError(
            422, "invalid", "source", "stored sessions are selected by the gateway: POST /v1/reward/models there"
        )
    _check_model(spec)
    return _enqueue(state, spec)


@post(
    "/v1/reward/models:sessions",
    status_code=202,
    summary="Train a reward model from stored sessions the gateway selected and vectorised (internal)",
)
async def train_from_sessions(request: Request[Any, Any, Any], state: RewardState) -> Response[bytes]:
    body: SessionTrainingSet = decode_body(_SESSIONS, await request.body())
    spec = body.spec
    if not isinstance(spec.source, StoredSessions):
        raise RequestError(422, "invalid", "spec.source", "a training set needs a stored-sessions source")
    _check_model(spec)
    users = {r.user_id for r in body.rows}
    labels = {str(k): sum(r.label == k for r in body.rows) for k in (0, 1)}
    if len(body.rows) < MIN_TRAINING_SESSIONS or len(users) < MIN_TRAINING_USERS or min(labels.values()) == 0:
        raise RequestError(
            422,
            "too_few_sessions",
            "rows",
            f"{len(body.rows)} labelled sessions of {len(users)} users (labels {labels}); at least "
            f"{MIN_TRAINING_SESSIONS} sessions of {MIN_TRAINING_USERS} users with both labels are needed",
        )
    if len({r.session_id for r in body.rows}) != len(body.rows):
        raise RequestError(422, "invalid", "rows", "a session is in the training set twice")
    for i, r in enumerate(body.rows):
        if len(r.values) != len(body.names):
            raise RequestError(
                422, "invalid", f"rows[{i}].values", f"{len(r.values)} values for {len(body.names)} names"
            )
    digest = hashlib.sha256()
    for r in sorted(body.rows, key=lambda r: r.session_id):
        digest.update(f"{r.session_id}\x00{r.content_hash}\n".encode())
    summary = TrainingSetRow(
        model_id="",
        source="sessions",
        sessions=len(body.rows),
        users=len(users),
        labels_json=json.dumps(labels),
        digest=digest.hexdigest(),
        feature_set=body.feature_set,
        feature_set_version=body.feature_set_version,
        names_json=json.dumps(body.names),
    )
    rows = [
        TrainingRowRow(
            model_id="",
            session_id=r.session_id,
            user_id=r.user_id,
            task_id=r.task_id,
            turn=r.turn,
            label=r.label,
            samples=r.samples,
            content_hash=r.content_hash,
            values=list(r.values),
        )
        for r in body.rows
    ]
    return _enqueue(state, spec, summary, rows)


@delete(
    "/v1/reward/training-rows",
    status_code=200,
    summary="Erase a user from every training set (internal: the gateway's user erasure); the models affected",
)
async def erase_user(state: RewardState, user_id: FromQuery[str]) -> Response[bytes]:
    registry = state.registry
    count, models = registry.erase_user(user_id)
    state.scorer.forget_training_sets()
    return json_response(UserErasure(rows_deleted=count, models_affected=models))


@post("/v1/reward/models/{model_id:str}/activate", status_code=200, summary="Make a model the active one")
async def activate_model(state: RewardState, model_id: FromPath[str]) -> Response[bytes]:
    try:
        row = state.registry.activate(model_id)
    except KeyError:
        raise RequestError(404, "not_found", "model_id", f"no reward model {model_id}") from None
    except ValueError as err:
        raise RequestError(409, "not_ready", "model_id", str(err)) from None
    state.scorer.invalidate()
    metrics = state.metrics
    metrics.active.clear()
    metrics.activated(row)
    return json_response(model_info(row, state.registry.training_set(model_id)))


def _revoke(celery: Any, model_id: str) -> None:
    """Tell the workers to drop the model's queued task (the task itself also returns at once for a cancelled
    model, so a revoke that is lost, or a broker that is down, changes nothing)."""
    try:
        celery.control.revoke(f"reward-{model_id}")
    except Exception as err:
        logger.info("revoking the training task of %s: %s", model_id, type(err).__name__)


@post(
    "/v1/reward/models/{model_id:str}/cancel",
    status_code=200,
    summary="Cancel a queued or running training (a running one stops at its next progress step)",
)
async def cancel_model(state: RewardState, model_id: FromPath[str]) -> Response[bytes]:
    registry = state.registry
    try:
        row = await anyio.to_thread.run_sync(registry.cancel, model_id)
    except KeyError:
        raise RequestError(404, "not_found", "model_id", f"no reward model {model_id}") from None
    await anyio.to_thread.run_sync(_revoke, state.celery, model_id)
    return json_response(model_info(row, registry.training_set(model_id)))


@delete(
    "/v1/reward/models/{model_id:str}",
    status_code=200,
    summary="Delete a model that is not active and not queued or running: its registry rows and artifact files",
)
async def delete_model_route(state: RewardState, model_id: FromPath[str]) -> Response[bytes]:
    registry = state.registry
    settings = state.settings
    training_set = registry.training_set(model_id)
    try:
        row = await anyio.to_thread.run_sync(delete_model, registry, model_id, settings.artifacts())
    except KeyError:
        raise RequestError(404, "not_found", "model_id", f"no reward model {model_id}") from None
    state.scorer.forget(model_id)
    return json_response(model_info(row, training_set))


def _reap(registry: Registry, settings: RewardSettings, metrics: Metrics) -> None:
    try:
        metrics.reaped.inc(len(registry.reap(settings.stale_after_s)))
    except Exception:  # the database is down for a moment: the next round will do
        logger.warning("looking for lost trainings failed", exc_info=True)


async def _reap_loop(registry: Registry, settings: RewardSettings, metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(settings.reap_interval_s)
        await anyio.to_thread.run_sync(_reap, registry, settings, metrics)


def create_app(settings: RewardSettings | None = None, *, celery: Any = None) -> Litestar:
    """The reward service. `celery`: the app used to enqueue training (default: align_worker's)."""
    settings = settings or load_settings(RewardSettings, "TACIT_REWARD_")
    registry = Registry(settings.registry_url())
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = RewardState(app.state)  # a typed view of app.state
        state.settings, state.registry, state.scorer, state.metrics = settings, registry, Scorer(registry), metrics
        if celery is None:
            from tacit.tasks import producer

            state.celery = producer(settings.redis_url)
        else:
            state.celery = celery
        for task in ("pairwise", "pointwise"):
            active = registry.active(task)
            if active is not None:
                metrics.activated(active)
        _reap(registry, settings, metrics)  # runs left by workers that died while this service was down
        state.reaper = asyncio.get_running_loop().create_task(_reap_loop(registry, settings, metrics))
        try:
            yield
        finally:
            state.reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.reaper
            registry.close()

    return service_app(
        "Tacit reward service",
        [
            score,
            population_prior,
            list_models,
            get_model,
            get_training_set,
            train_model,
            train_from_sessions,
            erase_user,
            activate_model,
            cancel_model,
            delete_model_route,
        ],
        metrics=metrics,
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
    )


def serve(settings: RewardSettings | None = None) -> None:
    settings = settings or load_settings(RewardSettings, "TACIT_REWARD_")
    run_server(create_app(settings), settings.host, settings.port)
