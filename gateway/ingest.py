"""The ingest use case: store -> features -> score, with the pending path when a dependency is down.

A session is vectorised by feature_svc and scored by reward_svc over HTTP, then stored with its score in one
write (atomic, idempotent on its id) before the answer is sent. If either service is down it is stored alone
and answered `status: pending`; the rescoring loop (`Pipeline.rescore_pending`) scores it when they return.
No litestar here: the routes (gateway.sessions, gateway.collector) call it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import anyio.to_thread
import msgspec

from gateway.clients import DependencyDownError, DependencyError, FeatureClient, RewardClient
from gateway.metrics import MODES, Metrics
from gateway.population import population_request
from gateway.settings import GatewaySettings
from gateway.wire import record_score
from tacit.db import PayloadPurgedError, Store
from tacit.schemas import FeatureVector, Score, Session, SessionError, UserLabel
from tacit.schemas.gateway import (
    SessionScore,
)
from tacit.schemas.reward import PopulationPrior
from tacit.schemas.session import label_of

logger = logging.getLogger(__name__)
JSON = "application/json"
_ENCODER = msgspec.json.Encoder()


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
        #: Per mode: the active model's adaptation prior re-estimated on the people it scores, with the signature
        #: (count, newest) of the labels it came from (refresh_population; cleared by an erasure).
        self.population: dict[str, tuple[tuple[int, str], PopulationPrior]] = {}
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
        row = await anyio.to_thread.run_sync(
            self.store.sessions.find_turn, session.user_id, session.task_id, session.turn - 1
        )
        return None if row is None else self.store.sessions.load_payload(row)

    async def compute(self, session: Session, raw: bytes | None = None) -> tuple[FeatureVector, Score]:
        """Vector (feature_svc) and score (reward_svc) of a session; raises DependencyDownError / DependencyError.

        `raw`: the validated JSON the session was decoded from, passed to feature_svc without re-encoding.
        """
        feature_set = await self.feature_set(session.mode)
        vector = await self.features.vectorize(session, feature_set, await self.previous(session), raw=raw)
        # the user's earlier explicit labels adapt the score (reward_svc.model.adapt); never this session's own
        history = await anyio.to_thread.run_sync(
            lambda: self.store.scores.label_history(session.user_id, session.mode, exclude=session.session_id)
        )
        labels = [
            UserLabel(p_population=p, label=1 if label else 0, model_id=model, task_id=task)
            for p, label, model, task in history
        ]
        population = self.population.get(session.mode)
        [score] = await self.reward.score([vector], session.mode, labels, population[1] if population else None)
        return vector, score

    async def refresh_population(self) -> None:
        """Re-estimate each active model's adaptation prior on the people it scores, when their labels changed.

        Raises DependencyDownError / DependencyError when reward_svc does not answer (the loop tries again).
        """
        for mode in MODES:
            model_id = await self.reward.active_model_id(mode)
            if model_id is None:
                self.population.pop(mode, None)
                continue
            signature = await anyio.to_thread.run_sync(self.store.scores.population_signature, model_id, mode)
            cached = self.population.get(mode)
            if cached is not None and cached[1].model_id == model_id and cached[0] == signature:
                continue
            rows = await anyio.to_thread.run_sync(self.store.scores.population_labels, model_id, mode)
            prior = await self.reward.population_prior(model_id, population_request(rows))
            self.population[mode] = (signature, prior)
            if cached is None or cached[1].habit_weight != prior.habit_weight:
                logger.info(
                    "adaptation prior of %s: habit weight %.3f (training %.3f) from %d labels of %d users",
                    model_id,
                    prior.habit_weight,
                    prior.training_habit_weight,
                    prior.labels,
                    prior.users,
                )

    def _observe(self, session: Session, score: Score) -> None:
        self.metrics.scored.labels(session.mode, str(score.abstained).lower()).inc()
        self.metrics.scores.labels(session.mode).observe(score.p)
        if session.feedback is not None and session.feedback.preference is not None:
            agree = (score.p >= 0.5) == bool(label_of(session.feedback.preference))
            self.metrics.agreement.labels(session.mode, str(agree).lower()).inc()

    async def score(self, session: Session) -> SessionScore:
        """Score an already stored session (the rescoring path)."""
        vector, score = await self.compute(session)
        row = await anyio.to_thread.run_sync(self.store.scores.set_result, vector, score)
        self._observe(session, score)
        return record_score(row, created=False)

    async def ingest(
        self, session: Session, raw: bytes | None = None, *, demo: bool = False, source: str = "api"
    ) -> SessionScore:
        """Answer a session's score; it is stored before the answer is sent, whatever the services do.

        A new session is scored first and stored together with its score in one write; when a service is
        down it is stored alone, pending, and the rescoring loop scores it later. `raw`: the JSON the session
        was decoded and validated from (sent on to feature_svc as it is). `demo`: recorded with a demo token.
        `source`: how it came (`api` or `collector`), a label of the ingest counter.
        """
        refuse_nul_ids(session)
        status = await anyio.to_thread.run_sync(self.store.sessions.score_status, session.session_id)
        if status == "scored":
            row, _ = await anyio.to_thread.run_sync(
                lambda: self.store.sessions.put_session(session, demo=demo)  # raises on a conflict
            )
            return record_score(row, created=False)
        try:
            vector, score = await self.compute(session, raw)
        except (DependencyDownError, DependencyError) as err:
            row, created = await anyio.to_thread.run_sync(lambda: self.store.sessions.put_session(session, demo=demo))
            self._count(session, created, source)
            reason = err.service if isinstance(err, DependencyDownError) else f"{err.service}:{err.code}"
            self.metrics.pending.labels(reason).inc()
            # A service that is down, or no active model yet, is worth waiting for; a refusal is a failure.
            if isinstance(err, DependencyDownError):
                row = await anyio.to_thread.run_sync(self.store.scores.defer_score, session.session_id, str(err))
            elif err.status == 409:
                row = await anyio.to_thread.run_sync(self._defer_refused, session.session_id, str(err))
            else:
                row = await anyio.to_thread.run_sync(self.store.scores.mark_score_failed, session.session_id, str(err))
            return record_score(row, created=created)
        row, created = await anyio.to_thread.run_sync(
            lambda: self.store.sessions.put_session(session, result=(vector, score), demo=demo)
        )
        self._count(session, created, source)
        self._observe(session, score)
        return record_score(row, created=created)

    def _count(self, session: Session, created: bool, source: str) -> None:
        if created:
            self.metrics.ingested.labels(session.mode, str(session.consent.gaze).lower(), source).inc()

    def _defer_refused(self, session_id: str, reason: str) -> Any:
        retry_in = dt.timedelta(seconds=self.settings.rescore_defer_s)
        return self.store.scores.defer_score(session_id, reason, retry_in=retry_in)

    async def rescore_pending(self, limit: int = 50) -> int:
        """Score sessions left pending; the sessions scored or set aside (0: nothing more to do now).

        Stops at the first dependency that is down. A session the reward service refuses (409: e.g. no active
        model for its mode) is set aside for `rescore_defer_s` with the reason, and so is every other session
        of that mode in this pass (the refusals are per mode), so the others are still scored.
        """
        handled = 0
        refused: dict[str, str] = {}  # mode -> the reward service's refusal in this pass
        rows = await anyio.to_thread.run_sync(self.store.scores.pending, limit)
        for row in rows:
            if row.mode in refused:
                await anyio.to_thread.run_sync(self._defer_refused, row.session_id, refused[row.mode])
                handled += 1
                continue
            try:
                session = await anyio.to_thread.run_sync(self.store.sessions.load_payload, row)
            except PayloadPurgedError:  # retention removed the trajectories before a score came
                await anyio.to_thread.run_sync(self.store.scores.mark_score_failed, row.session_id, "payload purged")
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
                await anyio.to_thread.run_sync(self.store.scores.mark_score_failed, row.session_id, str(err))
            else:
                handled += 1
        return handled
