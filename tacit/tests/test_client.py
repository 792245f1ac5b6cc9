"""The gateway client against a hand-written test double of the gateway (`httpx.MockTransport`)."""

from __future__ import annotations

import datetime as dt
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tacit.client import TacitClient, TacitError
from tacit.schemas import Session, decode_session
from tacit.schemas.gateway import Erasure, JobInfo, SessionBatch, SessionRecord, SessionScore
from tacit.simulate import simulate_session

KEY = "tk_test_secret"


class FakeGateway:
    """Just enough of the gateway's routes: stores sessions in a dict, pages with an opaque cursor."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []

    @staticmethod
    def problem(status: int, code: str, field: str, detail: str, **headers: str) -> httpx.Response:
        return httpx.Response(status, json={"code": code, "field": field, "detail": detail}, headers=headers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if path == "/readyz":
            return httpx.Response(200, json={"ready": True, "checks": {"database": True}})
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return self.problem(401, "unauthorized", "Authorization", "missing or unknown API key")
        route: Callable[[httpx.Request], httpx.Response] | None = {
            ("POST", "/v1/sessions"): self.post_session,
            ("POST", "/v1/sessions:batch"): self.post_batch,
            ("GET", "/v1/sessions"): self.list_sessions,
            ("GET", "/v1/reward/models"): lambda r: httpx.Response(200, json=list(self.models.values())),
            ("POST", "/v1/reward/models"): self.train,
            ("POST", "/v1/imports/ifllm"): lambda r: httpx.Response(202, json=self.job("queued")),
            ("GET", "/v1/imports/j1"): lambda r: httpx.Response(200, json=self.job("succeeded")),
        }.get((method, path))
        if route is not None:
            return route(request)
        parts = request.url.raw_path.decode().split("?")[0].strip("/").split("/")
        if method == "GET" and parts[:2] == ["v1", "sessions"] and len(parts) == 3:
            sid = httpx.URL("/" + parts[2]).path.strip("/")
            if sid not in self.sessions:
                return self.problem(404, "not_found", "session_id", f"no session {sid}")
            return httpx.Response(200, json=self.sessions[sid])
        if method == "DELETE" and parts[:2] == ["v1", "users"]:
            user = httpx.URL("/" + parts[2]).path.strip("/")
            gone = [k for k, v in self.sessions.items() if v["user_id"] == user]
            for k in gone:
                del self.sessions[k]
            return httpx.Response(
                200, json={"user_id": user, "rows_deleted": {"sessions": len(gone)}, "models_affected": []}
            )
        if method == "POST" and parts[:3] == ["v1", "reward", "models"] and parts[-1] == "activate":
            model = self.models.get(parts[3])
            if model is None:
                return self.problem(404, "not_found", "model_id", f"no reward model {parts[3]}")
            model["active"] = True
            return httpx.Response(200, json=model)
        return self.problem(404, "not_found", "path", f"no route {method} {path}")

    def store(self, session: Session) -> dict[str, Any]:
        score = {"session_id": session.session_id, "status": "scored", "preferred": "left", "p_right": 0.3}
        self.sessions[session.session_id] = {
            "session_id": session.session_id,
            "user_id": session.user_id,
            "task_id": session.task_id,
            "query_id": None,
            "mode": session.mode,
            "turn": None,
            "received_at": "2026-01-02T03:04:05Z",
            "consent": {"mouse": True},
            "label": None,
            "samples": 10,
            "feature_set": "all",
            "feature_set_version": "1",
            "score": score,
        }
        return score

    def post_session(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=self.store(decode_session(request.content)))

    def post_batch(self, request: httpx.Request) -> httpx.Response:
        sessions = msgspec.json.decode(request.content, type=SessionBatch).sessions
        return httpx.Response(200, json={"results": [self.store(s) for s in sessions]})

    def list_sessions(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        limit = int(params.get("limit", 50))
        start = int(params.get("cursor", 0))
        items = [v for v in self.sessions.values() if params.get("user_id") in (None, v["user_id"])]
        page = items[start : start + limit]
        more = start + limit < len(items)
        return httpx.Response(200, json={"items": page, "next_cursor": str(start + limit) if more else None})

    @staticmethod
    def job(status: str) -> dict[str, Any]:
        at = "2026-01-02T03:04:05Z"
        return {
            "id": "j1",
            "kind": "import_ifllm",
            "status": status,
            "stage": "",
            "done": 0,
            "total": 0,
            "error": "",
            "result": None,
            "created_at": at,
            "updated_at": at,
        }

    def train(self, request: httpx.Request) -> httpx.Response:
        spec = json.loads(request.content)
        if "data" not in spec:
            return self.problem(422, "invalid", "data", "Object missing required field `data`")
        model = {
            "id": f"m{len(self.models) + 1}",
            "task": spec.get("task", "pairwise"),
            "model": "reference_rf",
            "feature_set": "all",
            "feature_set_version": "1",
            "feature_mode": "default",
            "status": "queued",
            "progress": {"stage": "queued", "done": 0, "total": 0},
            "error": "",
            "scores": {},
            "data_hash": "",
            "demo": False,
            "active": False,
            "created_at": "2026-01-02T03:04:05Z",
            "finished_at": None,
        }
        self.models[model["id"]] = model
        return httpx.Response(202, json=model)


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def client(gateway: FakeGateway) -> TacitClient:
    return TacitClient("http://tacit.test/", KEY, transport=httpx.MockTransport(gateway))


def test_post_session_sends_the_wire_body_with_the_key(client: TacitClient, gateway: FakeGateway) -> None:
    session = simulate_session(seed=3, samples=50)
    answer = client.post_session(session)
    assert isinstance(answer, SessionScore)
    assert (answer.session_id, answer.status, answer.preferred) == (session.session_id, "scored", "left")
    request = gateway.requests[-1]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert decode_session(request.content) == session


def test_post_session_accepts_a_ready_body(client: TacitClient) -> None:
    body = simulate_session(seed=4, samples=20)
    assert client.post_session(msgspec.json.encode(body)).session_id == body.session_id


def test_post_sessions_sends_batches_and_keeps_the_order(client: TacitClient, gateway: FakeGateway) -> None:
    sessions = [simulate_session(seed=i, samples=20, session_id=f"s{i}") for i in range(5)]
    answer = client.post_sessions(sessions, batch_size=2)
    assert [item.session_id for item in answer] == [f"s{i}" for i in range(5)]
    batches = [r for r in gateway.requests if r.url.path == "/v1/sessions:batch"]
    assert [len(msgspec.json.decode(r.content, type=SessionBatch).sessions) for r in batches] == [2, 2, 1]


def test_get_session_and_a_missing_one(client: TacitClient, gateway: FakeGateway) -> None:
    session = simulate_session(seed=5, samples=20, session_id="abc")
    client.post_session(session)
    record = client.get_session("abc")
    assert isinstance(record, SessionRecord)
    assert (record.session_id, record.score.status) == ("abc", "scored")
    assert "include" not in gateway.requests[-1].url.params
    assert client.get_session("abc", payload=True).session_id == "abc"
    assert gateway.requests[-1].url.params["include"] == "payload"
    client.get_session("abc", payload=True, scores=True)
    assert gateway.requests[-1].url.params["include"] == "payload,scores"
    with pytest.raises(TacitError) as info:
        client.get_session("nope")
    err = info.value
    assert (err.status, err.code, err.field) == (404, "not_found", "session_id")
    assert "no session nope" in err.detail


def test_ids_with_slashes_stay_one_path_segment(client: TacitClient, gateway: FakeGateway) -> None:
    with pytest.raises(TacitError):
        client.get_session("a/b?c")
    assert gateway.requests[-1].url.raw_path == b"/v1/sessions/a%2Fb%3Fc"


def test_list_sessions_follows_cursors_across_pages(client: TacitClient, gateway: FakeGateway) -> None:
    for i in range(7):
        client.post_session(simulate_session(seed=i, samples=10, session_id=f"s{i}", user_id="u1"))
    client.post_session(simulate_session(seed=9, samples=10, session_id="other", user_id="u2"))
    listed = [item.session_id for item in client.list_sessions(user_id="u1", limit=3)]
    assert listed == [f"s{i}" for i in range(7)]
    pages = [r for r in gateway.requests if r.method == "GET" and r.url.path == "/v1/sessions"]
    assert [r.url.params.get("cursor") for r in pages] == [None, "3", "6"]
    assert all(r.url.params["limit"] == "3" for r in pages)


def test_list_sessions_sends_since_as_iso_time(client: TacitClient, gateway: FakeGateway) -> None:
    since = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert list(client.list_sessions(since=since)) == []
    assert gateway.requests[-1].url.params["since"] == "2025-01-02T03:04:05+00:00"


def test_delete_user(client: TacitClient) -> None:
    client.post_session(simulate_session(seed=1, samples=10, session_id="x1", user_id="gone"))
    assert client.delete_user("gone") == Erasure(user_id="gone", rows_deleted={"sessions": 1}, models_affected=[])
    with pytest.raises(TacitError):
        client.get_session("x1")


def test_reward_models_train_and_activate(client: TacitClient, gateway: FakeGateway) -> None:
    model = client.train_reward_model(data="/data/ifllm", task="pairwise", activate=False)
    assert (model.status, model.active) == ("queued", False)
    assert json.loads(gateway.requests[-1].content) == {"data": "/data/ifllm", "task": "pairwise", "activate": False}
    assert client.activate_reward_model(model.id).active is True
    assert [m.id for m in client.reward_models()] == [model.id]


def test_a_422_names_the_field(client: TacitClient) -> None:
    with pytest.raises(TacitError) as info:
        client.train_reward_model(task="pairwise")
    assert (info.value.status, info.value.code, info.value.field) == (422, "invalid", "data")


def test_a_wrong_key_is_a_401(gateway: FakeGateway) -> None:
    client = TacitClient("http://tacit.test", "wrong", transport=httpx.MockTransport(gateway))
    with pytest.raises(TacitError) as info:
        client.reward_models()
    assert (info.value.status, info.value.code, info.value.field) == (401, "unauthorized", "Authorization")


def test_health_needs_no_key(gateway: FakeGateway) -> None:
    with TacitClient("http://tacit.test", transport=httpx.MockTransport(gateway)) as client:
        assert client.healthz().status == "ok"
        assert client.readyz().ready is True
    assert "Authorization" not in gateway.requests[-1].headers


def test_503_carries_retry_after_and_the_body() -> None:
    report = {"code": "unavailable", "field": "reward_svc", "detail": "reward_svc is down", "checks": {"redis": "ok"}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json=report, headers={"Retry-After": "5"})

    with pytest.raises(TacitError) as info:
        TacitClient("http://tacit.test", KEY, transport=httpx.MockTransport(handler)).readyz()
    assert info.value.retry_after == 5.0
    assert info.value.body == report
    assert info.value.field == "reward_svc"


def test_a_non_json_error_still_raises_tacit_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="Bad Gateway from a proxy")

    with pytest.raises(TacitError) as info:
        TacitClient("http://tacit.test", KEY, transport=httpx.MockTransport(handler)).healthz()
    assert (info.value.status, info.value.code, info.value.field) == (502, "http_error", "$")
    assert "Bad Gateway" in info.value.detail


def test_an_unreachable_gateway_is_status_0() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TacitError) as info:
        TacitClient("http://tacit.test", KEY, transport=httpx.MockTransport(handler)).healthz()
    assert (info.value.status, info.value.code) == (0, "unreachable")


def test_import_ifllm_starts_a_job_and_reads_it_back(client: TacitClient, gateway: FakeGateway) -> None:
    job = client.import_ifllm("/data/ifllm")
    assert isinstance(job, JobInfo)
    assert (job.id, job.status) == ("j1", "queued")
    assert json.loads(gateway.requests[-1].content) == {"data": "/data/ifllm"}
    assert client.import_job("j1").status == "succeeded"


def test_an_answer_of_the_wrong_shape_is_a_bad_response_naming_the_field() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"session_id": "s1", "status": "maybe"})

    with pytest.raises(TacitError) as info:
        TacitClient("http://tacit.test", KEY, transport=httpx.MockTransport(handler)).post_session(b"{}")
    assert (info.value.status, info.value.code, info.value.field) == (200, "bad_response", "$.status")


def test_judge_sends_a_judge_request_and_refuses_unknown_options_locally() -> None:
    sent: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(400, json={"code": "invalid", "field": "prompt", "detail": "too short"})

    client = TacitClient("http://tacit.test", KEY, transport=httpx.MockTransport(handler))
    with pytest.raises(TacitError) as info:
        client.judge("", "a", "b", both_orders=False)
    assert info.value.field == "prompt"
    assert json.loads(sent[0]) == {
        "prompt": "",
        "answer_a": "a",
        "answer_b": "b",
        "reference": None,
        "both_orders": False,
        "winner_rule": "from_scores",
        "rubric": [],
        "use_cache": True,
    }
    with pytest.raises(TypeError):
        client.judge("q", "a", "b", bogus=1)
    assert len(sent) == 1


def test_every_public_method_is_in_docs_client_md() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "client.md").read_text()
    methods = [name for name, _ in inspect.getmembers(TacitClient, inspect.isfunction) if not name.startswith("_")]
    assert len(methods) > 30
    undocumented = [name for name in methods if name != "close" and f"`{name}(" not in doc]
    assert undocumented == []
