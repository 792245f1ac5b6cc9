"""The OpenAPI schema the gateway serves documents what to send and what comes back (issue 18 item 1).

Read as served (`/schema/openapi.json`), not from the Python object: every POST that reads a body has a
`requestBody` whose schema resolves, every 2xx answer a non-empty schema, every example is valid against its
schema and decodes with the route's own msgspec type, and the Struct and field docstrings reach the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import msgspec
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.openapi import complete_openapi
from gateway.settings import GatewaySettings
from tacit.schemas.session import Session
from tacit.schemas.validate import decode_session

DOWN = "http://127.0.0.1:9"
METHODS = ("get", "post", "put", "patch", "delete")
#: POST routes that act on the resource their path names and read no body.
BODYLESS = ("/cancel", "/activate", "/reload")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    database = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'gateway.db'}"
    settings = GatewaySettings(
        database_url=database, feature_url=DOWN, reward_url=DOWN, judge_url=DOWN, retries=0, rescore_interval_s=3600
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def doc(client: TestClient[Litestar]) -> dict[str, Any]:
    answer = client.get("/schema/openapi.json")
    assert answer.status_code == 200
    served: dict[str, Any] = answer.json()
    return served


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def _writes(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for m, p, op in _operations(doc) if m in ("post", "put", "patch")]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    # the components travel with the schema, so its `#/components/schemas/...` references resolve
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


def _body_types(app: Litestar) -> dict[tuple[str, str], Any]:
    """(method, OpenAPI path) -> the msgspec type the route decodes its body with."""
    types = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if "body" in handler.opt:
                    for method in handler.http_methods:
                        types[(method.lower(), route.path_format)] = handler.opt["body"]
    return types


def test_the_gateway_has_the_writes_this_test_expects(doc: dict[str, Any]) -> None:
    paths = {(m, p) for m, p, _ in _writes(doc)}
    for expected in [
        ("post", "/v1/sessions"),
        ("post", "/v1/sessions:batch"),
        ("post", "/v1/reward/models"),
        ("post", "/v1/reward/models/{model_id}/rescore"),
        ("post", "/v1/imports/ifllm"),
        ("post", "/v1/judgments"),
        ("post", "/v1/judgments:batch"),
        ("post", "/v1/alignment/jobs"),
        ("post", "/v1/alignment/pairs:preview"),
        ("post", "/v1/collector/tokens"),
        ("post", "/v1/collector/sessions"),
    ]:
        assert expected in paths


def test_every_write_that_reads_a_body_documents_it(doc: dict[str, Any]) -> None:
    missing = []
    for method, path, op in _writes(doc):
        if path.endswith(BODYLESS):
            assert "requestBody" not in op, (method, path)
            continue
        body = op.get("requestBody")
        if not body or not body.get("required") or not body["content"]["application/json"].get("schema"):
            missing.append(f"{method.upper()} {path}")
    assert not missing, missing


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    refs = set(_refs(doc["paths"])) | set(_refs(schemas))
    assert refs
    prefix = "#/components/schemas/"
    assert all(ref.startswith(prefix) for ref in refs), refs
    assert not {ref for ref in refs if ref.removeprefix(prefix) not in schemas}


def test_the_bodies_the_issue_names_are_components(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for name in ["Session", "SessionBatch", "TrainRewardModel", "RescoreRequest", "ImportIfllm", "JudgeRequest"]:
        assert name in schemas, name
    for name in ["BatchRequest", "PairSelection", "SftJob", "DpoJob", "RobustDpoJob", "TokenRequest"]:
        assert name in schemas, name


def test_every_success_answer_has_a_schema(doc: dict[str, Any]) -> None:
    empty = []
    for method, path, op in _operations(doc):
        for status, response in op["responses"].items():
            if not status.startswith("2"):
                continue
            content = response.get("content") or {}
            if not content or any(not media.get("schema") for media in content.values()):
                empty.append(f"{method.upper()} {path} {status}")
    assert not empty, empty


def test_every_example_is_valid_against_its_schema_and_decodes(app: Litestar, doc: dict[str, Any]) -> None:
    types = _body_types(app)
    checked = 0
    for method, path, op in _writes(doc):
        if "requestBody" not in op:
            continue
        media = op["requestBody"]["content"]["application/json"]
        assert "example" in media, (method, path)
        validator = _validator(doc, media["schema"])
        errors = [error.message for error in validator.iter_errors(media["example"])]
        assert not errors, (method, path, errors[:3])
        # and the route's own decoder takes it (for a session, the ingest's checks too)
        raw = msgspec.json.encode(media["example"])
        if types[(method, path)] is Session:
            decode_session(raw)
        else:
            msgspec.json.decode(raw, type=types[(method, path)])
        checked += 1
    assert checked >= 11


def test_the_schema_check_is_not_vacuous(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/v1/sessions"]["post"]
    validator = _validator(doc, op["requestBody"]["content"]["application/json"]["schema"])
    example = op["requestBody"]["content"]["application/json"]["example"]
    assert not validator.is_valid({})
    assert not validator.is_valid({**example, "mode": "sideways"})
    assert not validator.is_valid({**example, "unknown_field": 1})  # public bodies forbid unknown fields
    judge = doc["paths"]["/v1/alignment/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert not _validator(doc, judge["schema"]).is_valid({**judge["example"], "kind": "ppo"})


def test_struct_and_field_docstrings_reach_the_schema(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    session = schemas["Session"]
    assert session["description"].startswith("One question, the one (pointwise) or two (pairwise) answers")
    assert session["properties"]["session_id"]["description"] == "Client-chosen id; ingest is idempotent on it."
    judge = schemas["JudgeRequest"]["properties"]
    assert judge["both_orders"]["description"].startswith("Judge A/B and then B/A (position debiasing)")
    # a field docstring spanning lines is one cleaned-up string
    assert "\n    " not in judge["winner_rule"]["description"]
    # inherited fields keep their base class's docstrings
    assert schemas["RobustDpoJob"]["properties"]["base_model"]["description"].startswith("A Hugging Face causal LM")
    score = schemas["SessionScore"]["properties"]
    assert all("description" in score[name] for name in ("abstained", "abstain_reason", "score_kind")), score


def test_the_schema_is_completed_on_first_read_not_at_start_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    database = f"sqlite:///{tmp_path_factory.mktemp('lazy') / 'gateway.db'}"
    app = create_app(GatewaySettings(database_url=database, feature_url=DOWN, reward_url=DOWN, judge_url=DOWN))
    with TestClient(app) as client:
        # the YAML rendering is the first read here: it gets the completed schema as the JSON one does
        yaml = client.get("/schema/openapi.yaml")
        assert yaml.status_code == 200
        assert "requestBody" in yaml.text
        assert "Client-chosen id; ingest is idempotent on it." in yaml.text
        served = client.get("/schema/openapi.json").json()
    assert "requestBody" in served["paths"]["/v1/judgments"]["post"]
    assert app.openapi_schema.paths is not None
    # in Python, after the completion
    judgments = app.openapi_schema.paths["/v1/judgments"].post
    assert judgments is not None
    assert judgments.request_body is not None


def test_completing_twice_changes_nothing(app: Litestar, doc: dict[str, Any]) -> None:
    complete_openapi(app)
    again = msgspec.json.decode(msgspec.json.encode(app.openapi_schema.to_schema()))  # tuples become lists
    assert again["paths"] == doc["paths"]
    assert again["components"] == doc["components"]
