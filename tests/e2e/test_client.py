"""`tacit.client.TacitClient` against the real stack (gateway, feature_svc, reward_svc with a demo model, judge_svc
in front of the conftest's named fake LLM server): every answer comes back as its wire type, errors as TacitError."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tacit.client import Health, PairsPreview, Readiness, TacitClient, TacitError
from tacit.schemas import Session
from tacit.schemas.align import DataSummary
from tacit.schemas.gateway import Erasure, ModelComparison, ModelScore, SessionRecord, SessionScore
from tacit.schemas.judge import BatchAccepted, BatchJob, JudgeRequest, Verdict
from tacit.schemas.reward import RewardModelInfo
from tacit.simulate import simulate_session
from tests.e2e.conftest import Stack, free_port

pytestmark = pytest.mark.e2e

SHORT = "Paris."
LONG = "The capital of France is Paris, on the Seine, and it has been the capital for centuries."


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite only: the client is the same over either database (test_gateway covers PostgreSQL)."""
    return f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'gateway.db'}"


@pytest.fixture
def client(stack: Stack) -> Iterator[TacitClient]:
    with TacitClient(stack.gateway.url, stack.keys["admin"], timeout=60) as tacit:
        yield tacit


def test_health_and_readiness_are_typed(stack: Stack) -> None:
    with TacitClient(stack.gateway.url) as anonymous:  # no key needed
        assert anonymous.healthz() == Health(status="ok")
        ready = anonymous.readyz()
    assert isinstance(ready, Readiness)
    assert ready.ready is True
    assert {"database", "redis", "feature_svc", "reward_svc"} <= set(ready.checks)


def test_sessions_round_trip_as_wire_types(client: TacitClient) -> None:
    one = simulate_session(seed=1, samples=400, session_id="cl-one", user_id="cl-user")
    score = client.post_session(one)
    assert isinstance(score, SessionScore)
    assert (score.session_id, score.status, score.created, score.demo_model) == ("cl-one", "scored", True, True)
    assert score.preferred in ("left", "right")
    assert score.p_right is not None
    assert 0 <= score.p_right <= 1
    assert client.post_session(one).created is False  # idempotent re-post

    batch = [simulate_session(seed=i, samples=200, session_id=f"cl-b{i}", user_id="cl-user") for i in range(2, 7)]
    scores = client.post_sessions(batch, batch_size=2)  # three requests
    assert [s.session_id for s in scores] == [s.session_id for s in batch]
    assert all(isinstance(s, SessionScore) and s.status == "scored" for s in scores)

    record = client.get_session("cl-one", payload=True, scores=True)
    assert isinstance(record, SessionRecord)
    assert isinstance(record.session, Session)
    assert record.session == one
    assert record.scores is not None
    assert len(record.scores) == 1
    assert isinstance(record.scores[0], ModelScore)
    assert record.scores[0].model_id == score.model_version
    plain = client.get_session("cl-one")
    assert (plain.session, plain.scores) == (None, None)

    listed = list(client.list_sessions(user_id="cl-user", limit=2))  # follows the cursor over three pages
    assert [r.session_id for r in listed] == ["cl-one", *(s.session_id for s in batch)]
    assert all(isinstance(r, SessionRecord) for r in listed)
    assert list(client.list_sessions(user_id="cl-nobody")) == []

    erased = client.delete_user("cl-user")
    assert isinstance(erased, Erasure)
    assert erased.rows_deleted["sessions"] == 6
    with pytest.raises(TacitError) as info:
        client.get_session("cl-one")
    assert (info.value.status, info.value.code, info.value.field) == (404, "not_found", "session_id")


def test_reward_models_and_their_comparison(client: TacitClient) -> None:
    models = client.reward_models(task="pairwise")
    assert models
    assert all(isinstance(m, RewardModelInfo) for m in models)
    active = next(m for m in models if m.active)
    assert (active.status, active.demo) == ("succeeded", True)
    assert client.reward_model(active.id) == active
    client.post_session(simulate_session(seed=9, samples=300, session_id="cl-cmp", user_id="cl-cmp"))
    same = client.compare_reward_models(active.id, active.id)
    assert isinstance(same, ModelComparison)
    assert same.sessions_both >= 1
    assert same.agreement == 1.0
    with pytest.raises(TacitError) as info:
        client.train_reward_model(task="pairwise")  # neither data nor source
    assert (info.value.status, info.value.field) == (422, "source")
    with pytest.raises(TacitError) as info:
        client.reward_model("no-such-model")
    assert info.value.status == 404


def test_a_judgment_through_the_gateway(client: TacitClient) -> None:
    verdict = client.judge("What is the capital of France?", SHORT, LONG, use_cache=False)
    assert isinstance(verdict, Verdict)
    assert verdict.winner == "B"  # the fake judge prefers the longer answer, in both orders
    assert verdict.consistent is True
    assert [o.order for o in verdict.outcomes] == ["ab", "ba"]
    assert verdict.model == "fake-judge"
    assert verdict.score_b is not None
    assert verdict.score_a is not None
    assert verdict.score_b > verdict.score_a
    with pytest.raises(TacitError) as info:
        client.judge("", SHORT, LONG)
    assert (info.value.status, info.value.field) == (422, "prompt")


def test_a_judgment_batch_is_a_job_with_an_evaluation(client: TacitClient) -> None:
    items = [
        JudgeRequest(prompt=f"q{i}", answer_a=SHORT, answer_b=LONG if i % 2 else SHORT + " Yes.", both_orders=False)
        for i in range(4)
    ]
    accepted = client.judge_batch(items, evaluation=True, label="client test")
    assert isinstance(accepted, BatchAccepted)
    assert accepted.total == 4
    job = client.wait_for_judgment_job(accepted.job_id, timeout=60)
    assert isinstance(job, BatchJob)
    assert (job.status, job.done, job.failures, job.label) == ("succeeded", 4, 0, "client test")
    assert job.verdicts is not None
    assert [v.winner for v in job.verdicts] == ["B", "B", "B", "B"]
    assert job.evaluation is not None
    assert job.evaluation.pairs == 4
    assert job.evaluation.overall.wins == 4  # answer_b (the "aligned" one) is longer every time
    assert client.judgment_job(accepted.job_id).job_id == accepted.job_id
    with pytest.raises(TacitError) as info:
        client.judgment_job("no-such-job")
    assert (info.value.status, info.value.code) == (404, "not_found")


def test_alignment_pairs_preview_is_typed(client: TacitClient) -> None:
    for i in range(3):
        client.post_session(simulate_session(seed=20 + i, samples=300, session_id=f"cl-al{i}", user_id="cl-al"))
    preview = client.alignment_pairs(include_demo=True, test_fraction=0.0)
    assert isinstance(preview, PairsPreview)
    assert isinstance(preview.summary, DataSummary)
    assert preview.summary.pairs == len(preview.pairs)


def test_errors_name_the_status_code_and_field(stack: Stack, client: TacitClient) -> None:
    with TacitClient(stack.gateway.url, "tk_not_a_key") as stranger, pytest.raises(TacitError) as info:
        stranger.reward_models()
    assert (info.value.status, info.value.field) == (401, "authorization")
    with TacitClient(stack.gateway.url, stack.keys["read"]) as reader, pytest.raises(TacitError) as info:
        reader.judge("q", SHORT, LONG)
    assert info.value.status == 403
    with pytest.raises(TacitError) as info:
        client.import_ifllm(str(Path("/nonexistent/ifllm")))
    assert 400 <= info.value.status < 500
    assert info.value.field == "data"
    with TacitClient(f"http://127.0.0.1:{free_port()}", "k") as nowhere, pytest.raises(TacitError) as info:
        nowhere.healthz()
    assert (info.value.status, info.value.code) == (0, "unreachable")
