"""feature_svc's HTTP edge: routes, answer schemas, error mapping, metrics, OpenAPI, and one real uvicorn server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from feature_svc.app import Problem, create_app
from feature_svc.features import FEATURE_SETS, vectorize
from feature_svc.settings import FeatureSettings
from tacit.schemas import FeatureRequest, FeatureSetInfo, FeatureVector, FeatureVectors, Session
from tacit.simulate import simulate_session

SAMPLES = 150
MAX_BODY = 256 * 1024
MAX_BATCH = 4
SETTINGS = FeatureSettings(max_body_bytes=MAX_BODY, max_batch=MAX_BATCH)


def _pointwise_turn(turn: int) -> Session:
    session = simulate_session(
        seed=100 + turn, mode="pointwise", samples=SAMPLES, user_id="u1", task_id="t1", session_id=f"turn-{turn}"
    )
    return msgspec.structs.replace(session, turn=turn)


@pytest.fixture(scope="module")
def pairwise() -> Session:
    return simulate_session(seed=11, mode="pairwise", samples=SAMPLES)


@pytest.fixture(scope="module")
def conversation() -> list[Session]:
    """Three consecutive pointwise questions of one conversation (turns 0, 1, 2)."""
    return [_pointwise_turn(turn) for turn in range(3)]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(SETTINGS)) as test_client:
        yield test_client


def _post(client: TestClient[Litestar], path: str, payload: Any) -> httpx.Response:
    return client.post(path, content=msgspec.json.encode(payload), headers={"content-type": "application/json"})


def _problem(response: httpx.Response, status: int) -> Problem:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return msgspec.json.decode(response.content, type=Problem)


def _raw(session: Session) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.to_builtins(session)
    return raw


# --- routes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature_set", ["all", "text", "paper_if", "paper_if_no_gaze", "paper_if_no_mouse"])
def test_features_answers_the_cores_vector(client: TestClient[Litestar], pairwise: Session, feature_set: str) -> None:
    response = _post(client, "/v1/features", {"session": pairwise, "feature_set": feature_set})

    assert response.status_code == 200, response.text
    vector = msgspec.json.decode(response.content, type=FeatureVector)
    assert vector == vectorize(pairwise, feature_set)
    assert vector.feature_set == feature_set
    assert vector.samples == 4 * SAMPLES


def test_feature_set_defaults_to_all(client: TestClient[Litestar], pairwise: Session) -> None:
    response = _post(client, "/v1/features", {"session": pairwise})

    assert msgspec.json.decode(response.content, type=FeatureVector).feature_set == "all"


def test_feature_sets_lists_every_set_once_per_mode(client: TestClient[Litestar], conversation: list[Session]) -> None:
    response = client.get("/v1/feature-sets")

    assert response.status_code == 200
    infos = msgspec.json.decode(response.content, type=list[FeatureSetInfo])
    assert sorted((i.id, i.mode) for i in infos) == sorted(
        (s, m) for s in FEATURE_SETS for m in ("pairwise", "pointwise")
    )
    by_key = {(i.id, i.mode): i for i in infos}
    # The listing must agree with what /v1/features serves, `all` (named by the extractor) included.
    examples = {
        "pairwise": (simulate_session(seed=5, samples=50), None),
        "pointwise": (conversation[1], conversation[0]),
    }
    for (set_id, mode), info in by_key.items():
        session, previous = examples[mode]
        vector = vectorize(session, set_id, previous=previous)
        assert (info.names, info.version) == (vector.names, vector.feature_set_version), (set_id, mode)
        assert info.description == FEATURE_SETS[set_id].description


def test_batch_answers_one_vector_per_session_in_order(client: TestClient[Litestar]) -> None:
    sessions = [simulate_session(seed=seed, samples=SAMPLES, session_id=f"s{seed}") for seed in (3, 1, 2)]

    response = _post(client, "/v1/features:batch", {"sessions": sessions, "feature_set": "paper_if"})

    assert response.status_code == 200, response.text
    batch = msgspec.json.decode(response.content, type=FeatureVectors)
    assert [v.session_id for v in batch.vectors] == ["s3", "s1", "s2"]
    assert batch.vectors == [vectorize(s, "paper_if") for s in sessions]
    assert (batch.feature_set, batch.names) == ("paper_if", batch.vectors[0].names)
    assert batch.feature_set_version == batch.vectors[0].feature_set_version


def test_pointwise_paper_if_of_a_single_session_needs_the_previous_turn(
    client: TestClient[Litestar], conversation: list[Session]
) -> None:
    response = _post(client, "/v1/features", {"session": conversation[1], "feature_set": "paper_if"})

    problem = _problem(response, 422)
    assert (problem.code, problem.field) == ("needs_previous", "previous")


def test_pointwise_paper_if_with_the_previous_turn_in_the_request(
    client: TestClient[Litestar], conversation: list[Session]
) -> None:
    payload = {"session": conversation[1], "previous": conversation[0], "feature_set": "paper_if"}
    response = _post(client, "/v1/features", payload)

    assert response.status_code == 200, response.text
    got = msgspec.json.decode(response.content, type=FeatureVector)
    assert got == vectorize(conversation[1], "paper_if", previous=conversation[0])


def test_first_turn_has_zero_prev_features(client: TestClient[Litestar], conversation: list[Session]) -> None:
    response = _post(client, "/v1/features", {"session": conversation[0], "feature_set": "paper_if"})

    assert response.status_code == 200, response.text
    got = msgspec.json.decode(response.content, type=FeatureVector)
    prev = [v for n, v in zip(got.names, got.values, strict=True) if n.startswith("prev_")]
    assert prev
    assert all(v == 0.0 for v in prev)


def test_batch_takes_prev_features_from_the_previous_turn_in_the_batch(
    client: TestClient[Litestar], conversation: list[Session]
) -> None:
    # Turn 2 comes first and is served from turn 1; turn 1's own previous turn is not in the batch.
    payload = {"sessions": [conversation[2], conversation[1]], "feature_set": "paper_if"}

    problem = _problem(_post(client, "/v1/features:batch", payload), 422)

    assert (problem.code, problem.field) == ("needs_previous", "sessions[1]")


def test_batch_of_consecutive_turns_fills_prev_features(
    client: TestClient[Litestar], conversation: list[Session]
) -> None:
    response = _post(client, "/v1/features:batch", {"sessions": conversation, "feature_set": "paper_if"})

    assert response.status_code == 200, response.text
    batch = msgspec.json.decode(response.content, type=FeatureVectors)
    for k in (1, 2):
        assert batch.vectors[k] == vectorize(conversation[k], "paper_if", previous=conversation[k - 1])


def test_healthz(client: TestClient[Litestar]) -> None:
    response = client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# --- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b'{"session": ', b"", b"\xff\xfe", b'{"feature_set": "al'])
def test_malformed_json_is_400(client: TestClient[Litestar], body: bytes) -> None:
    problem = _problem(client.post("/v1/features", content=body), 400)

    assert (problem.code, problem.field) == ("malformed", "$")


def test_wrong_type_names_the_field_path(client: TestClient[Litestar], pairwise: Session) -> None:
    session = _raw(pairwise)
    session["responses"][0]["mouse"]["x"][3] = "three"

    problem = _problem(_post(client, "/v1/features", {"session": session}), 422)

    assert (problem.code, problem.field) == ("invalid", "session.responses[0].mouse.x[3]")
    assert "float" in problem.detail


@pytest.mark.parametrize(
    ("where", "field"),
    [
        # the request body itself is service to service and ignores unknown fields (rolling upgrades, see
        # test_an_unknown_top_level_field_is_ignored); the Session inside is the public contract
        (("session",), "session.colour"),
        (("session", "responses", 1, "gaze"), "session.responses[1].gaze.colour"),
    ],
)
def test_unknown_field_is_refused(
    client: TestClient[Litestar], pairwise: Session, where: tuple[str | int, ...], field: str
) -> None:
    payload: Any = {"session": _raw(pairwise)}
    target = payload
    for key in where:
        target = target[key]
    target["colour"] = "blue"

    problem = _problem(_post(client, "/v1/features", payload), 422)

    assert (problem.code, problem.field) == ("invalid", field)


def test_an_unknown_top_level_field_is_ignored(client: TestClient[Litestar], pairwise: Session) -> None:
    response = _post(client, "/v1/features", {"session": _raw(pairwise), "sent_by_a_newer_gateway": 1})
    assert response.status_code == 200, response.text


def test_missing_field_is_named(client: TestClient[Litestar], pairwise: Session) -> None:
    session = _raw(pairwise)
    del session["mode"]

    problem = _problem(_post(client, "/v1/features", {"session": session}), 422)

    assert problem.field == "session.mode"


def test_unknown_feature_set_is_422(client: TestClient[Litestar], pairwise: Session) -> None:
    problem = _problem(_post(client, "/v1/features", {"session": pairwise, "feature_set": "nope"}), 422)

    assert problem.field == "feature_set"


def test_session_error_names_the_field_inside_the_body(client: TestClient[Litestar], pairwise: Session) -> None:
    session = _raw(pairwise)
    session["responses"][0]["mouse"]["y"].pop()

    single = _problem(_post(client, "/v1/features", {"session": session}), 422)
    batch = _problem(_post(client, "/v1/features:batch", {"sessions": [pairwise, session]}), 422)

    assert (single.code, single.field) == ("length_mismatch", "session.responses[0].mouse.y")
    assert (batch.code, batch.field) == ("length_mismatch", "sessions[1].responses[0].mouse.y")


def test_batch_of_mixed_modes_is_422(
    client: TestClient[Litestar], pairwise: Session, conversation: list[Session]
) -> None:
    payload = {"sessions": [pairwise, conversation[0]], "feature_set": "text"}

    problem = _problem(_post(client, "/v1/features:batch", payload), 422)

    assert (problem.code, problem.field) == ("mixed_modes", "sessions")


def test_batch_size_is_bounded(client: TestClient[Litestar]) -> None:
    small = simulate_session(seed=1, samples=5)

    empty = _problem(_post(client, "/v1/features:batch", {"sessions": []}), 422)
    too_many = _problem(_post(client, "/v1/features:batch", {"sessions": [small] * (MAX_BATCH + 1)}), 422)

    assert empty.field == "sessions"
    assert (too_many.code, too_many.field) == ("too_many", "sessions")


def test_body_over_the_limit_is_413(client: TestClient[Litestar]) -> None:
    announced = client.post("/v1/features", content=b" " * (MAX_BODY + 1))
    # Without a content-length the limit holds on the bytes actually streamed.
    chunked = client.post("/v1/features", content=iter([b" " * (MAX_BODY // 2)] * 3))

    for response in (announced, chunked):
        assert _problem(response, 413).code == "too_large"


def test_unknown_route_and_method_answer_json(client: TestClient[Litestar]) -> None:
    missing = _problem(client.get("/v1/nope"), 404)
    wrong_method = _problem(client.get("/v1/features"), 405)

    assert (missing.code, missing.field) == ("not_found", "path")
    assert (wrong_method.code, wrong_method.field) == ("method_not_allowed", "method")


@pytest.mark.parametrize(
    "body",
    [
        b"null",
        b"[]",
        b'"session"',
        b'{"session": null}',
        b'{"session": {"mode": "pairwise"}}',
        b'{"session": {"session_id": "", "user_id": "u", "task_id": "t", "mode": "pairwise", "query": "q", '
        b'"responses": [{"text": "a"}]}}',
        b'{"session": {"session_id": "s", "user_id": "u", "task_id": "t", "mode": "pairwise", "query": "q", '
        b'"responses": [{"text": "a"}, {"text": "b", "mouse": {"x": [1e999], "y": [1], "char_index": [0], '
        b'"window": [""], "t_page_ms": [0]}}]}}',
        b'{"session": {"session_id": "s", "user_id": "u", "task_id": "t", "mode": "pairwise", "query": "q", '
        b'"responses": [{"text": "a"}, {"text": "b", "mouse": {"x": [1], "y": [1], '
        b'"char_index": [99999999999999999999], "window": [""], "t_page_ms": [0]}}]}}',
        b"[" * 10_000,
    ],
)
def test_bad_input_is_never_a_500(client: TestClient[Litestar], body: bytes) -> None:
    response = client.post("/v1/features", content=body)

    assert 400 <= response.status_code < 500, response.text
    msgspec.json.decode(response.content, type=Problem)


# --- metrics and OpenAPI ------------------------------------------------------------------------------------


def test_metrics_of_each_app_count_its_own_requests(pairwise: Session) -> None:
    with TestClient(create_app(SETTINGS)) as first, TestClient(create_app(SETTINGS)) as second:
        assert _post(first, "/v1/features", {"session": pairwise}).status_code == 200
        text = first.get("/metrics").text
        other = second.get("/metrics").text

    assert (
        'tacit_http_requests_total{method="POST",route="/v1/features",service="feature_svc",status="200"} 1.0' in text
    )
    assert 'tacit_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/v1/features"' in text
    assert "tacit_features_samples_per_session_count 1.0" in text
    assert f"tacit_features_samples_per_session_sum {4 * SAMPLES}.0" in text
    assert 'tacit_feature_extraction_seconds_count{kind="single"} 1.0' in text
    assert 'route="/v1/features"' not in other


def test_openapi_documents_the_paths_and_the_contract(client: TestClient[Litestar]) -> None:
    schema = client.get("/schema/openapi.json").json()

    assert schema["info"]["title"] == "Tacit feature service"
    assert {"/v1/features", "/v1/features:batch", "/v1/feature-sets", "/healthz"} <= set(schema["paths"])
    single = schema["paths"]["/v1/features"]["post"]
    assert single["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FeatureRequest"
    }
    assert single["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FeatureVector"
    }
    assert {"400", "413", "422"} <= set(single["responses"])
    assert {"FeatureRequest", "FeatureBatchRequest", "Session", "Stream", "Problem"} <= set(
        schema["components"]["schemas"]
    )
    assert client.get("/schema").headers["content-type"].startswith("text/html")


# --- a real server ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served() -> Iterator[str]:
    """`serve()` in a child process, configured through its environment as in production."""
    port = _free_port()
    env = {**os.environ, "TACIT_FEATURES_PORT": str(port), "TACIT_FEATURES_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from feature_svc.app import serve; serve()"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"server exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not start within 30 s")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_served_over_real_http(served: str, pairwise: Session) -> None:
    with httpx.Client(base_url=served, timeout=10) as http:
        single = http.post("/v1/features", content=msgspec.json.encode(FeatureRequest(session=pairwise)))
        batch = http.post("/v1/features:batch", content=msgspec.json.encode({"sessions": [pairwise]}))
        missing = http.get("/nope")

    assert single.status_code == 200, single.text
    assert msgspec.json.decode(single.content, type=FeatureVector) == vectorize(pairwise)
    assert msgspec.json.decode(batch.content, type=FeatureVectors).vectors == [vectorize(pairwise)]
    assert msgspec.json.decode(missing.content, type=Problem).code == "not_found"
