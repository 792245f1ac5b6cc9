"""A client generated from the schema a running gateway serves talks to that gateway (issue 18 item 1).

datamodel-code-generator (offline, from the served `/schema/openapi.json`) writes pydantic models of every body
and answer, forbidding fields the schema does not name; the test sends a session built with the generated
`Session` model and reads the answers of `POST /v1/sessions` and `GET /v1/sessions` with the generated
`SessionScore` and `SessionPage`. A body the schema misdescribes, or an answer field it leaves out, fails here.

openapi-python-client (which also writes the HTTP calls) is not used: every release caps httpx and typer below
the versions in requirements.lock.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from gateway.keys import create_key
from tacit.db import Store
from tests.e2e.conftest import Service, free_port

pytestmark = pytest.mark.e2e

DOWN = "http://127.0.0.1:9"  # feature_svc and reward_svc down: a session is stored and answered 202 pending


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A gateway process alone (its dependencies down) and a key with the ingest and read scopes."""
    tmp_path = tmp_path_factory.mktemp("generated-client")
    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    store = Store(database)
    store.migrate()
    key = create_key(store, ["ingest", "read"], "generated-client")[0]
    store.close()
    port = free_port()
    env = {
        **os.environ,
        "TACIT_HOME": str(tmp_path / "home"),
        "TACIT_GATEWAY_PORT": str(port),
        "TACIT_GATEWAY_DATABASE_URL": database,
        "TACIT_GATEWAY_FEATURE_URL": DOWN,
        "TACIT_GATEWAY_REWARD_URL": DOWN,
        "TACIT_GATEWAY_JUDGE_URL": DOWN,
        "TACIT_GATEWAY_RETRIES": "0",
        "TACIT_GATEWAY_TIMEOUT_S": "2",
        "TACIT_GATEWAY_RESCORE_INTERVAL_S": "3600",
    }
    service = Service(
        "gateway", [sys.executable, "-m", "tacit_cli.cli", "serve", "gateway"], env, port, tmp_path / "gateway.log"
    )
    service.start()
    try:
        yield service.url, key
    finally:
        service.stop()


def _generate(schema: bytes, folder: Path) -> ModuleType:
    """The models datamodel-code-generator writes from `schema`, imported as a module."""
    source = folder / "openapi.json"
    source.write_bytes(schema)
    target = folder / "tacit_api_models.py"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "datamodel_code_generator",
            "--input",
            str(source),
            "--input-file-type",
            "openapi",
            "--output",
            str(target),
            "--output-model-type",
            "pydantic_v2.BaseModel",
            "--extra-fields",
            "forbid",  # an answer field the schema does not name is an error
            "--use-annotated",
            "--field-constraints",
            "--formatters",
            "builtin",
            "--disable-timestamp",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    spec = importlib.util.spec_from_file_location("tacit_api_models", target)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' forward references through it
    spec.loader.exec_module(module)
    return module


def test_a_generated_client_ingests_a_session_and_lists_it(gateway: tuple[str, str], tmp_path: Path) -> None:
    url, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        schema = http.get("/schema/openapi.json")
        assert schema.status_code == 200
        models = _generate(schema.content, tmp_path)
        operation: dict[str, Any] = schema.json()["paths"]["/v1/sessions"]["post"]
        example = operation["requestBody"]["content"]["application/json"]["example"]

        # the body goes through the generated model (which refuses what the schema does not allow)
        session = models.Session.model_validate({**example, "session_id": "generated-1", "user_id": "gen-user"})
        with pytest.raises(ValueError, match="extra"):
            models.Session.model_validate({**example, "not_a_field": 1})
        body = session.model_dump_json(exclude_unset=True, by_alias=True)
        answer = http.post("/v1/sessions", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 202, answer.text
        score = models.SessionScore.model_validate_json(answer.content)
        assert (score.session_id, _value(score.status)) == ("generated-1", "pending")

        listing = http.get("/v1/sessions", params={"user_id": "gen-user"})
        assert listing.status_code == 200, listing.text
        page = models.SessionPage.model_validate_json(listing.content)
        assert [item.session_id for item in page.items] == ["generated-1"]


def _value(member: Any) -> Any:
    # the generator writes a string Literal or an Enum depending on the schema; the wire value either way
    return getattr(member, "value", member)
