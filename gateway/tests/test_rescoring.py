"""Scores per (session, model) and rescoring jobs, on real SQLite and PostgreSQL, with named test doubles of
feature_svc and reward_svc (the e2e test runs the real services and Celery workers)."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest
from sqlalchemy import MetaData, Table, func, select

from gateway.rescoring import run_batch
from tacit.db import Store
from tacit.db.payload import prepare
from tacit.db.sessions import session_row
from tacit.schemas import FeatureVector, Score
from tacit.schemas.session import Feedback
from tacit.simulate import simulate_session

NAMES = ["a", "b"]


def sim(seed: int, user: str = "u1", label: str | None = None) -> object:
    session = simulate_session(seed=seed, samples=30, user_id=user)
    if label is not None:
        session = msgspec.structs.replace(session, feedback=Feedback(preference=label))  # type: ignore[arg-type]
    return msgspec.structs.replace(session, session_id=f"s-{seed:03d}")


def vector(session_id: str, feature_set: str = "all", value: float = 0.5) -> FeatureVector:
    return FeatureVector(
        session_id=session_id, feature_set=feature_set, feature_set_version="1", names=NAMES, values=[value, 0.25]
    )


def score(session_id: str, model_id: str, p: float, kind: str = "model") -> Score:
    return Score(
        session_id=session_id,
        p=p,
        preferred="right" if p >= 0.5 else "left",
        confidence=max(p, 1 - p),
        abstained=False,
        quality=1.0,
        model_id=model_id,
        demo=False,
        p_population=p,
        kind=kind,  # type: ignore[arg-type]
    )


class FeatureDouble:
    """feature_svc (a named test double): the batch route gives every session a vector of the asked feature set."""

    def __init__(self) -> None:
        self.batches = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/features:batch", request.url.path
        self.batches += 1
        body = msgspec.json.decode(request.content)
        vectors = [vector(s["session_id"], body["feature_set"], 0.9) for s in body["sessions"]]
        return httpx.Response(
            200,
            json=msgspec.to_builtins(
                {"feature_set": body["feature_set"], "feature_set_version": "1", "names": NAMES, "vectors": vectors}
            ),
        )


class RewardDouble:
    """reward_svc (a named test double): model `m2` (feature set `text`, active or not); p = 0.8 for every session
    but `refused`, which it answers 422 for (a vector it cannot score)."""

    def __init__(self, active: bool = True, refused: str = "") -> None:
        self.active, self.refused = active, refused
        self.requests: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/reward/models/m2":
            info = {
                "id": "m2",
                "task": "pairwise",
                "status": "succeeded",
                "feature_set": "text",
                "feature_set_version": "1",
            }
            return httpx.Response(200, json={**info, "active": self.active})
        if request.url.path.startswith("/v1/reward/models/"):
            return httpx.Response(404, json={"title": "not found", "detail": "no such model"})
        assert request.url.path == "/v1/score"
        body = msgspec.json.decode(request.content)
        self.requests.append(body)
        ids = [v["session_id"] for v in body["vectors"]]
        if self.refused in ids:
            return httpx.Response(422, json={"title": "invalid", "detail": "feature names differ"})
        scores = [score(i, body["model_id"], 0.8) for i in ids]
        return httpx.Response(200, content=msgspec.json.encode({"scores": scores}))


def clients(reward: RewardDouble, features: FeatureDouble) -> tuple[httpx.Client, httpx.Client]:
    return (
        httpx.Client(base_url="http://reward", transport=httpx.MockTransport(reward)),
        httpx.Client(base_url="http://features", transport=httpx.MockTransport(features)),
    )


def test_every_score_is_kept_per_model_and_two_models_compare(store: Store) -> None:
    for seed, label in ((1, "right"), (2, "left"), (3, None)):
        s = sim(seed, label=label)
        store.sessions.put_session(s, result=(vector(s.session_id), score(s.session_id, "m1", 0.7)))  # type: ignore[attr-defined]
    store.scores.set_scores([score("s-001", "m2", 0.9), score("s-002", "m2", 0.2, "out_of_fold")])
    [one, two] = store.scores.scores_of("s-001")
    assert {(one.model_id, one.p), (two.model_id, two.p)} == {("m1", 0.7), ("m2", 0.9)}
    assert store.sessions.get_session("s-001").model_id == "m2"  # type: ignore[union-attr]  (the current score)
    summary = store.scores.compare_models("m1", "m2")
    assert summary["sessions_both"] == 2
    assert (summary["agreeing"], summary["agreement"]) == (1, 0.5)  # s-001 both right; s-002 right vs left
    assert (summary["labelled"], summary["correct_a"], summary["correct_b"]) == (2, 1, 2)
    assert (summary["scored_a"], summary["scored_b"], summary["out_of_fold_b"]) == (3, 2, 1)
    assert summary["mean_abs_p_difference"] == pytest.approx((0.2 + 0.5) / 2)
    assert store.scores.compare_models("m1", "nobody")["sessions_both"] == 0


def test_migration_7_keeps_every_score_recorded_before(tmp_path: Path) -> None:
    st = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        st.migrate(target=6)
        sessions = Table("sessions", MetaData(), autoload_with=st.engine)
        row = session_row(prepare(sim(5)), None)  # type: ignore[arg-type]
        values = {c.name: getattr(row, c.name) for c in sessions.columns}
        values.update(score_status="scored", p=0.3, preferred="left", confidence=0.7, model_id="old", abstained=False)
        with st.engine.begin() as conn:
            conn.execute(sessions.insert().values(values))
        assert st.migrate() == [7]
        [kept] = st.scores.scores_of("s-005")
        assert (kept.model_id, kept.p, kept.p_population, kept.score_kind) == ("old", 0.3, 0.3, "model")
    finally:
        st.close()


def _stored(store: Store, n: int, users: int = 2) -> None:
    for i in range(n):
        s = sim(i, user=f"u{i % users}", label="right" if i % 3 else "left")
        store.sessions.put_session(s, result=(vector(s.session_id), score(s.session_id, "m1", 0.4)))  # type: ignore[attr-defined]


def test_a_rescoring_job_scores_every_batch_once_and_moves_the_current_score(store: Store) -> None:
    _stored(store, 9)
    store.sessions.put_session(msgspec.structs.replace(sim(50), mode="pointwise", session_id="p-1"))  # type: ignore[arg-type]
    job, batches = store.rescoring.create_rescore_job({"model_id": "m2", "mode": "pairwise"}, batch_size=4)
    assert (job.status, job.total, batches) == ("queued", 9, [0, 1, 2])
    reward, features = RewardDouble(active=True), FeatureDouble()
    with clients(reward, features)[0] as r, clients(reward, features)[1] as f:
        outcomes = [run_batch(store, r, f, job.id, b) for b in batches]
        assert [o.scored for o in outcomes] == [4, 4, 1]
        assert [o.finished_job for o in outcomes] == [False, False, True]
        # a redelivered batch (its worker died after the commit) does nothing
        assert run_batch(store, r, f, job.id, 1).status == "skipped"
    done = store.jobs.get_job(job.id)
    assert done is not None
    assert (done.status, done.done, done.total, done.result) == (
        "succeeded",
        9,
        9,
        {"batches": 3, "scored": 9, "failed": 0},
    )
    assert features.batches == 3  # the stored vectors are of another feature set: extracted once per batch
    row = store.sessions.get_session("s-004")
    assert row is not None
    # the model is active: the session's current score and its features are the new model's
    assert (row.model_id, row.p, row.feature_set) == ("m2", 0.8, "text")
    assert {s.model_id for s in store.scores.scores_of("s-004")} == {"m1", "m2"}
    # one request per user and batch, adapted with the user's labels this model had already scored
    assert all(len({v["session_id"].split("-")[0] for v in q["vectors"]}) == 1 for q in reward.requests)
    assert any(q["user_history"] for q in reward.requests)
    # nothing left to score: a second job is empty and done at once
    again, none = store.rescoring.create_rescore_job({"model_id": "m2", "mode": "pairwise"}, batch_size=4)
    assert (again.status, again.total, none) == ("succeeded", 0, [])


def test_an_inactive_model_keeps_its_scores_aside_and_one_refused_session_fails_alone(store: Store) -> None:
    _stored(store, 6, users=1)
    job, batches = store.rescoring.create_rescore_job({"model_id": "m2", "mode": "pairwise"}, batch_size=10)
    reward, features = RewardDouble(active=False, refused="s-003"), FeatureDouble()
    with clients(reward, features)[0] as r, clients(reward, features)[1] as f:
        [outcome] = [run_batch(store, r, f, job.id, b) for b in batches]
    assert (outcome.scored, outcome.failed, outcome.finished_job) == (5, 1, True)
    row = store.sessions.get_session("s-001")
    assert row is not None
    assert (row.model_id, row.p) == ("m1", 0.4)  # not the active model: the current score stays
    assert [s.model_id for s in store.scores.scores_of("s-001")] == ["m1", "m2"]
    job_row = store.jobs.get_job(job.id)
    assert job_row is not None
    assert (job_row.status, job_row.result) == ("succeeded", {"batches": 1, "scored": 5, "failed": 1})
    [part] = store.rescoring.rescore_batches(job.id)
    assert "s-003" in part.error


def test_cancel_skips_the_remaining_batches_and_an_unknown_model_fails_the_job(store: Store) -> None:
    _stored(store, 6)
    job, batches = store.rescoring.create_rescore_job({"model_id": "m2", "mode": "pairwise"}, batch_size=2)
    reward, features = RewardDouble(), FeatureDouble()
    with clients(reward, features)[0] as r, clients(reward, features)[1] as f:
        assert run_batch(store, r, f, job.id, 0).scored == 2
        cancelled = store.jobs.cancel_job(job.id)
        assert cancelled is not None
        assert cancelled.status == "cancelled"
        assert [run_batch(store, r, f, job.id, b).status for b in batches[1:]] == ["skipped", "skipped"]
        assert [p.status for p in store.rescoring.rescore_batches(job.id)] == ["succeeded", "cancelled", "cancelled"]
        gone, parts = store.rescoring.create_rescore_job({"model_id": "m-gone", "mode": "pairwise"}, batch_size=10)
        assert run_batch(store, r, f, gone.id, parts[0]).status == "failed"
    failed = store.jobs.get_job(gone.id)
    assert failed is not None
    assert failed.status == "failed"
    assert "no such model" in failed.error
    with store.engine.connect() as conn:  # nothing half-written for the failed job
        table = Table("session_scores", MetaData(), autoload_with=store.engine)
        assert conn.execute(select(func.count()).select_from(table).where(table.c.model_id == "m-gone")).scalar() == 0


# -- the routes -------------------------------------------------------------------------------------------


def test_the_routes_check_what_they_are_sent_and_answer_scores_per_model(tmp_path: Path) -> None:
    from litestar.testing import TestClient

    from gateway.app import create_app
    from gateway.keys import create_key
    from gateway.settings import GatewaySettings

    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    st = Store(database)
    st.migrate()
    try:
        train = {"Authorization": f"Bearer {create_key(st, ['train'])[0]}"}
        read = {"Authorization": f"Bearer {create_key(st, ['read'])[0]}"}
        _stored(st, 3)
        st.scores.set_scores([score("s-001", "m2", 0.9)])
    finally:
        st.close()
    settings = GatewaySettings(database_url=database, retries=0, timeout_s=1)
    app = create_app(settings, reward_transport=httpx.MockTransport(RewardDouble()))
    with TestClient(app) as client:
        record = client.get("/v1/sessions/s-001?include=scores,payload", headers=read).json()
        assert [s["model_id"] for s in record["scores"]] == ["m1", "m2"]
        assert record["session"]["session_id"] == "s-001"
        assert "scores" not in client.get("/v1/sessions/s-001", headers=read).json() or (
            client.get("/v1/sessions/s-001", headers=read).json()["scores"] is None
        )
        bad = client.get("/v1/sessions/s-001?include=everything", headers=read)
        assert (bad.status_code, bad.json()["field"]) == (422, "include")

        compared = client.get("/v1/reward/models/m1/compare/m2", headers=read).json()
        assert (compared["sessions_both"], compared["scored_a"], compared["scored_b"]) == (1, 3, 1)

        cases = [
            ("m-gone", {}, 404, "model_id"),
            ("m2", {"user_ids": ["u0", "stranger"]}, 422, "user_ids"),
            ("m2", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 422, "until"),
            ("m2", {"user_id": ["u0"]}, 422, "user_id"),
            ("m2", {"user_ids": "u0"}, 422, "user_ids"),
        ]
        for model, body, status, field in cases:
            answer = client.post(f"/v1/reward/models/{model}/rescore", json=body, headers=train)
            assert (answer.status_code, answer.json()["field"]) == (status, field), (body, answer.json())
            assert "stranger" not in str(answer.json()) or field == "user_ids"
        assert client.post("/v1/reward/models/m2/rescore", json={}, headers=read).status_code == 403
        assert client.get("/v1/reward/rescores/nope", headers=read).status_code == 404
        assert client.post("/v1/reward/rescores/nope/cancel", headers=train).status_code == 404
        assert client.get("/v1/reward/rescores", headers=read).json() == []  # nothing half-written


def test_the_batches_of_a_job_share_one_population_estimate_until_the_labels_change(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import rescoring

    monkeypatch.setattr(rescoring, "_POPULATIONS", {})
    sent: list[dict[str, object]] = []

    def reward(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/reward/models/m1/population-prior"
        body = msgspec.json.decode(request.content)
        sent.append(body)
        labels = body["labels"]
        prior = {
            "model_id": "m1",
            "habit_weight": 0.6,
            "training_habit_weight": 0.5,
            "estimated_weight": 0.6,
            "users": len({label["user"] for label in labels}),
            "labels": len(labels),
        }
        return httpx.Response(200, json=prior)

    _stored(store, 6)
    client = httpx.Client(base_url="http://reward", transport=httpx.MockTransport(reward))
    first = rescoring._population(store, client, "m1", "pairwise")
    again = rescoring._population(store, client, "m1", "pairwise")
    assert first is not None
    assert again == first
    assert len(sent) == 1  # the second batch asked nothing: the labels had not changed
    labels = sent[0]["labels"]
    assert isinstance(labels, list)
    assert len(labels) == 6
    assert {label["task"] for label in labels} <= {f"t{i}" for i in range(6)}  # tasks go as pseudonyms too
    s = sim(40, user="u9", label="left")
    store.sessions.put_session(s, result=(vector(s.session_id), score(s.session_id, "m1", 0.4)))  # type: ignore[attr-defined]
    later = rescoring._population(store, client, "m1", "pairwise")
    assert later is not None
    assert (len(sent), later.labels, later.users) == (2, 7, 3)
