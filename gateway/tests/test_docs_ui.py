"""The docs UI (`/schema`) loads only the gateway's own files: the page names no other origin, each file it names
is served here with its type, the page's CSP allows this origin's scripts only, and the schema is unchanged.

Issue 14 finding 19 and issue 18 item 2; tests/browser/test_docs_ui.py renders the page with the network cut off.
"""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.openapi import DOCS_CSP
from gateway.settings import GatewaySettings

DOWN = "http://127.0.0.1:9"
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _Refs(HTMLParser):
    """Every URL a page loads: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def _refs(page: str) -> list[str]:
    parser = _Refs()
    parser.feed(page)
    return parser.urls


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    database = f"sqlite:///{tmp_path_factory.mktemp('docs') / 'gateway.db'}"
    settings = GatewaySettings(
        database_url=database, feature_url=DOWN, reward_url=DOWN, judge_url=DOWN, retries=0, rescore_interval_s=3600
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
def test_the_docs_page_names_only_this_origin(client: TestClient[Litestar], path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "://" not in answer.text, answer.text
    refs = _refs(answer.text)
    assert not [ref for ref in refs if ref.startswith("//")], refs
    assert {"/schema/ui/swagger-ui-bundle.js", "/schema/ui/swagger-ui.css"} <= set(refs)
    assert all(ref.startswith("/schema/ui/") for ref in refs), refs
    assert "<script>" not in answer.text  # no inline script: the CSP below allows none
    assert answer.headers["content-security-policy"] == DOCS_CSP
    policy = dict(part.strip().split(" ", 1) for part in DOCS_CSP.split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"


def test_every_file_the_page_loads_is_served_here_with_its_type(client: TestClient[Litestar]) -> None:
    refs = _refs(client.get("/schema").text)
    assert len(refs) == 4  # favicon, stylesheet, Swagger UI's bundle, the script that starts it
    for ref in refs:
        answer = client.get(ref)
        assert answer.status_code == 200, ref
        assert answer.headers["content-type"].startswith(TYPES[Path(ref).suffix]), (ref, answer.headers)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")  # files keep deny-all
        assert "max-age" in answer.headers["cache-control"]
        assert answer.content


def test_the_files_are_the_packaged_swagger_ui(client: TestClient[Litestar]) -> None:
    import swagger_ui  # the package the lock pins (swagger-ui-py); the gateway itself only finds its folder

    static = Path(swagger_ui.__file__).parent / "static"
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert client.get(f"/schema/ui/{name}").content == (static / name).read_bytes(), name
    assert "SwaggerUIBundle" in client.get("/schema/ui/tacit-docs.js").text


@pytest.mark.parametrize(
    "name", ["index.html", "swagger-initializer.js", "swagger-editor-bundle.js", "..%2Fcore.py", "%2e%2e"]
)
def test_only_the_listed_files_are_served(client: TestClient[Litestar], name: str) -> None:
    answer = client.get(f"/schema/ui/{name}")
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"


def test_the_schema_is_still_at_openapi_json(client: TestClient[Litestar]) -> None:
    answer = client.get("/schema/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    schema = answer.json()
    assert schema["info"]["title"] == "Tacit"
    assert schema["openapi"].startswith("3.1")  # what Swagger UI 5 renders (4.x cannot)
    assert "/v1/sessions" in schema["paths"]
    assert not [path for path in schema["paths"] if path.startswith("/schema")]  # the docs routes stay out
