"""One edge kit (tacit.edge): the same bad input gets the same error body from every service."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from litestar.params import FromQuery, QueryParameter
from litestar.testing import TestClient

#: Broken at its first byte after the brace, so no decoder has looked at any field yet.
MALFORMED = b"{not json"


@pytest.fixture
def services(tmp_path: Path, redis_url: str) -> Iterator[dict[str, tuple[TestClient[Any], str, dict[str, str]]]]:
    """Each service's app with the POST route a client sends JSON to (and the key the gateway needs)."""
    from feature_svc.app import create_app as features
    from feature_svc.settings import FeatureSettings
    from gateway.app import create_app as gateway
    from gateway.keys import create_key
    from gateway.settings import GatewaySettings
    from judge_svc.app import create_app as judge
    from judge_svc.settings import JudgeSettings
    from reward_svc.app import create_app as reward
    from reward_svc.settings import RewardSettings
    from tacit.db import Store

    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    store = Store(database)
    store.migrate()
    key = create_key(store, ["ingest"])[0]
    store.close()
    apps = {
        "gateway": (
            gateway(GatewaySettings(database_url=database)),
            "/v1/sessions",
            {"authorization": f"Bearer {key}"},
        ),
        "feature_svc": (features(FeatureSettings()), "/v1/features", {}),
        "reward_svc": (
            reward(RewardSettings(database_url=f"sqlite:///{tmp_path / 'reward.db'}", models_dir=str(tmp_path))),
            "/v1/score",
            {},
        ),
        "judge_svc": (judge(JudgeSettings(redis_url=redis_url)), "/v1/judgments", {}),
    }
    with ExitStack() as stack:
        yield {name: (stack.enter_context(TestClient(app)), path, h) for name, (app, path, h) in apps.items()}


def test_one_malformed_body_gets_the_same_problem_from_every_service(
    services: dict[str, tuple[TestClient[Any], str, dict[str, str]]],
) -> None:
    answers = {}
    for name, (client, path, headers) in services.items():
        response = client.post(path, content=MALFORMED, headers={**headers, "content-type": "application/json"})
        answers[name] = (response.status_code, response.json())
    assert len({str(answer) for answer in answers.values()}) == 1, answers
    status, body = answers["gateway"]
    assert (status, body["code"], body["field"]) == (400, "malformed", "$")
    assert body["detail"].startswith("malformed JSON: ")


def test_an_unknown_route_gets_the_same_problem_from_every_service(
    services: dict[str, tuple[TestClient[Any], str, dict[str, str]]],
) -> None:
    answers = {name: client.get("/v1/no-such-route", headers=h) for name, (client, _, h) in services.items()}
    bodies = {name: (r.status_code, r.json()) for name, r in answers.items()}
    assert len({str(b) for b in bodies.values()}) == 1, bodies
    assert bodies["reward_svc"][0] == 404
    assert (bodies["reward_svc"][1]["code"], bodies["reward_svc"][1]["field"]) == ("not_found", "path")


def test_one_body_of_the_wrong_kind_gets_the_same_problem_from_every_service(
    services: dict[str, tuple[TestClient[Any], str, dict[str, str]]],
) -> None:
    # Valid JSON, but an array where every route reads an object: one msgspec-error parser
    # (tacit.schemas.problem.decode_error) words it for all four services.
    answers = {}
    for name, (client, path, headers) in services.items():
        response = client.post(path, content=b"[]", headers={**headers, "content-type": "application/json"})
        answers[name] = (response.status_code, response.json())
    assert len({str(answer) for answer in answers.values()}) == 1, answers
    assert answers["feature_svc"] == (
        400,
        {"code": "malformed", "field": "$", "detail": "malformed JSON: Expected `object`, got `array`"},
    )


def test_an_empty_body_is_said_to_be_empty_by_every_service(
    services: dict[str, tuple[TestClient[Any], str, dict[str, str]]],
) -> None:
    answers = {}
    for name, (client, path, headers) in services.items():
        response = client.post(path, content=b"", headers={**headers, "content-type": "application/json"})
        answers[name] = (response.status_code, response.json())
    assert len({str(answer) for answer in answers.values()}) == 1, answers
    status, body = answers["judge_svc"]
    assert (status, body["code"], body["field"]) == (400, "malformed", "$")
    assert "the body is empty" in body["detail"]  # not msgspec's "Input data was truncated"


def test_a_field_of_the_wrong_type_is_named_alike_by_every_service(
    services: dict[str, tuple[TestClient[Any], str, dict[str, str]]],
) -> None:
    # Each route's first field, as a number: 422 `invalid` naming it, in msgspec's words.
    fields = {"gateway": "session_id", "feature_svc": "session", "reward_svc": "vectors", "judge_svc": "prompt"}
    for name, (client, path, headers) in services.items():
        body = f'{{"{fields[name]}": 1}}'.encode()
        response = client.post(path, content=body, headers={**headers, "content-type": "application/json"})
        problem = response.json()
        assert (response.status_code, problem["code"], problem["field"]) == (422, "invalid", fields[name]), problem
        assert re.fullmatch(r"Expected `\w+`, got `int`", problem["detail"]), problem


def test_an_unknown_query_parameter_is_refused_alike_by_every_service(
    services: dict[str, tuple[TestClient[Any], str, dict[str, str]]],
) -> None:
    # The POST route of each service takes no query parameter; a stray one is named, not silently ignored.
    answers = {}
    for name, (client, path, headers) in services.items():
        response = client.post(f"{path}?payload=true", content=MALFORMED, headers=headers)
        answers[name] = (response.status_code, response.json())
    assert len({str(answer) for answer in answers.values()}) == 1, answers
    status, problem = answers["gateway"]
    assert (status, problem["code"], problem["field"]) == (422, "invalid", "payload")
    assert problem["detail"] == "unknown query parameter 'payload'; this route takes no query parameters"


def test_unknown_query_parameters_list_what_the_route_takes_and_pages_are_left_alone() -> None:
    from litestar import Litestar, get

    from tacit.edge import own_query, service_app
    from tacit.http_metrics import ServiceMetrics

    @get("/items")
    async def items(
        limit: FromQuery[int] = 10, since: Annotated[str | None, QueryParameter(name="from")] = None
    ) -> dict[str, int]:
        return {"limit": limit}

    @get("/own")
    async def own() -> dict[str, str]:
        return {"ok": "yes"}

    @get("/page", include_in_schema=False)
    async def page() -> dict[str, str]:
        return {"ok": "yes"}

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        yield

    app = service_app(
        "t", [items, own_query(own), page], metrics=ServiceMetrics("edge_test"), lifespan=lifespan, max_body_bytes=None
    )
    with TestClient(app) as client:
        assert client.get("/items?limit=2&from=x").json() == {"limit": 2}
        refused = client.get("/items?limt=2")
        assert refused.status_code == 422
        assert refused.json() == {
            "code": "invalid",
            "field": "limt",
            "detail": "unknown query parameter 'limt'; this route takes from, limit",
        }
        assert client.get("/own?anything=1").status_code == 200
        assert client.get("/page?v=3").status_code == 200
        assert client.get("/schema/openapi.json?x=1").status_code == 200


def test_parameters_of_the_wrong_format_say_what_they_take() -> None:
    from litestar import Litestar, get

    from tacit.edge import service_app
    from tacit.http_metrics import ServiceMetrics

    @get("/jobs")
    async def jobs(
        since: FromQuery[dt.datetime | None] = None,
        status: FromQuery[Literal["queued", "running"] | None] = None,
        limit: FromQuery[int] = 1,
    ) -> dict[str, str]:
        return {}

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        yield

    app = service_app("t", [jobs], metrics=ServiceMetrics("edge_test2"), lifespan=lifespan, max_body_bytes=None)
    with TestClient(app) as client:
        for query, field, detail in [
            (
                "since=yesterday",
                "since",
                "since must be an ISO 8601 date-time such as 2025-01-31T09:00:00Z",
            ),
            ("status=done", "status", "status must be one of: queued, running"),
            ("limit=many", "limit", "limit must be an integer"),
        ]:
            response = client.get(f"/jobs?{query}")
            assert (response.status_code, response.json()) == (
                400,
                {"code": "invalid", "field": field, "detail": detail},
            )


def test_an_enum_error_lists_the_allowed_values_at_any_depth() -> None:
    import msgspec

    from tacit.schemas.judge import BatchRequest, JudgeRequest
    from tacit.schemas.problem import RequestError, choices, decode_body

    item = {"prompt": "q", "answer_a": "a", "answer_b": "b"}
    cases = [
        (JudgeRequest, {**item, "winner_rule": "x"}, "winner_rule", "from_scores, from_winner_line"),
        (BatchRequest, {"items": [{**item, "rubric": ["overall", "nope"]}]}, "items[0].rubric[1]", "factuality, "),
    ]
    for target, body, field, allowed in cases:
        with pytest.raises(RequestError) as caught:
            decode_body(msgspec.json.Decoder(target), msgspec.json.encode(body))
        assert (caught.value.status, caught.value.field) == (422, field)
        assert caught.value.detail.startswith("Invalid enum value ")
        assert f"expected one of: {allowed}" in caught.value.detail
    assert choices(Literal["a", "b"] | None) == ("a", "b")
    assert choices(int) == ()
