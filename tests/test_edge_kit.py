"""One edge kit (tacit.edge): the same bad input gets the same error body from every service."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
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
