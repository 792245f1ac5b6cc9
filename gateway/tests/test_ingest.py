"""The ingest use case (gateway.ingest.Pipeline) without litestar: a real SQLite store, named test doubles of
feature_svc and reward_svc behind httpx.MockTransport, and the paths a session can take: scored, pending while a
service is down, set aside when the reward service refuses (409), failed when it rejects the vector (422)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from gateway.clients import FeatureClient, RewardClient
from gateway.ingest import Pipeline
from gateway.metrics import Metrics
from gateway.settings import GatewaySettings
from tacit.db import Store
from tacit.schemas import FeatureVector, Score
from tacit.simulate import simulate_session

Handler = Callable[[httpx.Request], httpx.Response]
pytestmark = pytest.mark.anyio  # anyio's pytest plugin runs the coroutines (the gateway runs on anyio too)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def features_double(request: httpx.Request) -> httpx.Response:
    """feature_svc (a named test double): a fixed two-feature vector for any session."""
    body = msgspec.json.decode(request.content)
    vector = FeatureVector(
        session_id=body["session"]["session_id"],
        feature_set="all",
        feature_set_version="1",
        names=["a", "b"],
        values=[0.5, 0.25],
        samples=10,
    )
    return httpx.Response(200, content=msgspec.json.encode(vector))


def reward_double(status: int = 200) -> Handler:
    """reward_svc (a named test double): an active pairwise model `m1` scoring p = 0.7, or the refusal `status`."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/reward/models":
            return httpx.Response(200, json=[{"id": "m1", "active": True, "feature_set": "all"}])
        assert request.url.path == "/v1/score"
        if status != 200:
            code = "no_model" if status == 409 else "invalid"
            return httpx.Response(status, json={"code": code, "field": "vectors", "detail": f"refused ({status})"})
        body = msgspec.json.decode(request.content)
        scores = [
            Score(
                session_id=v["session_id"],
                p=0.7,
                preferred="right",
                confidence=0.7,
                abstained=False,
                quality=1.0,
                model_id="m1",
                demo=False,
                p_population=0.7,
            )
            for v in body["vectors"]
        ]
        return httpx.Response(200, content=msgspec.json.encode({"scores": scores}))

    return handle


def down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[[Handler, Handler], Pipeline]]:
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    store.migrate()
    clients: list[FeatureClient | RewardClient] = []
    settings = GatewaySettings(retries=0, timeout_s=1, rescore_defer_s=60)

    def build(features: Handler, reward: Handler) -> Pipeline:
        f = FeatureClient("http://features", timeout=1, retries=0, transport=httpx.MockTransport(features))
        r = RewardClient("http://reward", timeout=1, retries=0, transport=httpx.MockTransport(reward))
        clients.extend([f, r])
        return Pipeline(store, f, r, settings, Metrics())

    yield build
    for client in clients:
        await client.close()
    store.close()


async def test_a_session_is_scored_and_stored_with_its_score_in_one_write(make: Callable[..., Pipeline]) -> None:
    pipeline = make(features_double, reward_double())
    session = simulate_session(seed=1, samples=20, session_id="s-1")
    score = await pipeline.ingest(session)
    assert (score.status, score.p_right, score.model_version, score.created) == ("scored", 0.7, "m1", True)
    row = pipeline.store.sessions.get_session("s-1")
    assert row is not None
    assert (row.score_status, row.features, row.model_id) == ("scored", [0.5, 0.25], "m1")
    assert [s.model_id for s in pipeline.store.scores.scores_of("s-1")] == ["m1"]
    # the same session again: answered from the database, no service asked
    again = await make(down, down).ingest(session)
    assert (again.status, again.created) == ("scored", False)


async def test_a_service_that_is_down_leaves_the_session_stored_and_pending(make: Callable[..., Pipeline]) -> None:
    pipeline = make(down, reward_double())
    score = await pipeline.ingest(simulate_session(seed=2, samples=20, session_id="s-2"))
    assert (score.status, score.created) == ("pending", True)
    assert "feature_svc" in (score.pending_reason or "")
    # back up: the rescoring loop scores it
    healthy = make(features_double, reward_double())
    assert await healthy.rescore_pending() == 1
    row = healthy.store.sessions.get_session("s-2")
    assert row is not None
    assert (row.score_status, row.p) == ("scored", 0.7)


async def test_a_refusal_sets_the_session_aside_and_a_rejection_fails_it(make: Callable[..., Pipeline]) -> None:
    refused = await make(features_double, reward_double(409)).ingest(
        simulate_session(seed=3, samples=20, session_id="s-3")
    )
    assert refused.status == "pending"
    assert "refused (409)" in (refused.pending_reason or "")
    row = make(features_double, reward_double()).store.sessions.get_session("s-3")
    assert row is not None
    assert row.retry_at is not None  # waits rescore_defer_s, holding back no other session
    # a vector the reward service rejects (422) is the session's own failure: counted, and failed after the
    # store's max_score_attempts, never retried forever
    rejecting = make(features_double, reward_double(422))
    rejected = await rejecting.ingest(simulate_session(seed=4, samples=20, session_id="s-4"))
    assert rejected.status == "pending"
    row = rejecting.store.sessions.get_session("s-4")
    assert row is not None
    assert (row.score_attempts, "refused (422)" in row.score_error) == (1, True)
    for _ in range(rejecting.store.scores.max_score_attempts):  # the rescoring loop's passes
        await rejecting.rescore_pending()
    row = rejecting.store.sessions.get_session("s-4")
    assert row is not None
    assert (row.score_status, row.score_attempts) == ("failed", rejecting.store.scores.max_score_attempts)
    # nothing about them reached the per-model scores
    assert make(features_double, reward_double()).store.scores.scores_of("s-3") == []


async def test_the_ingest_counter_says_how_each_new_session_came(make: Callable[..., Pipeline]) -> None:
    pipeline = make(features_double, reward_double())

    def ingested(source: str) -> float:
        value = pipeline.metrics.registry.get_sample_value(
            "tacit_sessions_ingested_total", {"mode": "pairwise", "gaze_consent": "true", "source": source}
        )
        return float(value or 0.0)

    session = simulate_session(seed=5, samples=20, session_id="s-5", gaze=True)
    await pipeline.ingest(session)
    await pipeline.ingest(simulate_session(seed=6, samples=20, session_id="s-6", gaze=True), source="collector")
    await pipeline.ingest(session)  # stored already: not counted again
    assert (ingested("api"), ingested("collector"), ingested("import")) == (1.0, 1.0, 0.0)
    # The pending path counts too (stored before a score exists).
    pending = make(down, reward_double())
    await pending.ingest(simulate_session(seed=7, samples=20, session_id="s-7", gaze=True), source="collector")
    labels = {"mode": "pairwise", "gaze_consent": "true", "source": "collector"}
    assert pending.metrics.registry.get_sample_value("tacit_sessions_ingested_total", labels) == 1.0


async def test_the_population_prior_is_estimated_on_stored_labels_and_sent_with_scores(
    make: Callable[..., Pipeline],
) -> None:
    """refresh_population sends the active model's labelled sessions (users pseudonymised) to reward_svc when they
    changed, and later score requests carry the answer."""
    estimates: list[dict[str, object]] = []
    score_bodies: list[dict[str, object]] = []
    scoring = reward_double()

    def reward(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/reward/models":
            active = request.url.params.get("task") == "pairwise"
            return httpx.Response(200, json=[{"id": "m1", "active": active, "feature_set": "all"}])
        if request.url.path == "/v1/reward/models/m1/population-prior":
            body = msgspec.json.decode(request.content)
            estimates.append(body)
            users = {label["user"] for label in body["labels"]}
            prior = {
                "model_id": "m1",
                "habit_weight": 0.8,
                "training_habit_weight": 0.5,
                "estimated_weight": 0.8,
                "users": len(users),
                "labels": len(body["labels"]),
            }
            return httpx.Response(200, json=prior)
        score_bodies.append(msgspec.json.decode(request.content))
        return scoring(request)

    pipeline = make(features_double, reward)
    for i in range(3):
        await pipeline.ingest(simulate_session(seed=10 + i, samples=20, session_id=f"l-{i}", user_id="alice"))
    assert all("population" not in body for body in score_bodies)  # nothing estimated yet: the training prior

    await pipeline.refresh_population()
    assert len(estimates) == 1
    labels = estimates[0]["labels"]
    assert isinstance(labels, list)
    assert len(labels) == 3
    assert {label["user"] for label in labels} == {"u0"}  # a pseudonym: user ids stay in the gateway
    assert "alice" not in str(estimates[0])
    await pipeline.refresh_population()
    assert len(estimates) == 1  # the labels did not change: nothing asked

    await pipeline.ingest(simulate_session(seed=20, samples=20, session_id="l-3", user_id="bob"))
    population = score_bodies[-1]["population"]
    assert isinstance(population, dict)
    assert (population["model_id"], population["habit_weight"]) == ("m1", 0.8)
    await pipeline.refresh_population()  # bob's label arrived: estimated again, with both users
    assert len(estimates) == 2
    assert {label["user"] for label in estimates[1]["labels"]} == {"u0", "u1"}  # type: ignore[index,union-attr]
