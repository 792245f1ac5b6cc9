"""The gateway's docs UI renders in Chromium with every request outside loopback refused: the page, Swagger UI
and the schema all come from the gateway itself, nothing is blocked by its CSP (issue 18 item 2, issue 14 #19)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import Service, free_port

pytestmark = pytest.mark.browser

DOWN = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The gateway alone, as a process (the docs need none of the services behind it)."""
    tmp_path = tmp_path_factory.mktemp("docs-ui")
    port = free_port()
    env = {
        **os.environ,
        "TACIT_HOME": str(tmp_path / "home"),
        "TACIT_GATEWAY_PORT": str(port),
        "TACIT_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "TACIT_GATEWAY_FEATURE_URL": DOWN,
        "TACIT_GATEWAY_REWARD_URL": DOWN,
        "TACIT_GATEWAY_JUDGE_URL": DOWN,
        "TACIT_GATEWAY_REDIS_URL": "redis://127.0.0.1:9/0",
    }
    service = Service(
        "gateway", [sys.executable, "-m", "tacit_cli.cli", "serve", "gateway"], env, port, tmp_path / "gateway.log"
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()


def test_the_docs_ui_renders_offline(gateway: Service, browser: Any, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    refused: list[str] = []
    problems: list[str] = []

    def offline(route: Any) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).hostname in ("127.0.0.1", "localhost") or url.startswith("data:"):
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", offline)
    page = context.new_page()

    def on_console(message: Any) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    try:
        page.goto(f"{gateway.url}/schema", wait_until="load")
        page.wait_for_selector(".opblock", timeout=20_000)  # an operation of the rendered schema
        page.wait_for_load_state("networkidle")
        operations = page.locator(".opblock-summary-path").all_inner_texts()
        page.screenshot(path=str(artifacts / "docs-ui.png"), full_page=False)
        assert "/v1/sessions" in [text.replace("\u200b", "").strip() for text in operations]
        assert page.locator(".info .title").inner_text().startswith("Tacit")
        # expand one operation: its request body schema is drawn from the JSON schema the page fetched
        page.locator(".opblock-summary", has_text="/v1/sessions").first.click()
        page.wait_for_selector(".opblock-body", timeout=10_000)
    finally:
        context.close()
    assert not refused, f"the docs page reached outside the gateway: {refused}"
    assert not problems, problems  # CSP violations show here as console errors
    assert {urlsplit(url).path for url in requested} >= {
        "/schema",
        "/schema/ui/swagger-ui-bundle.js",
        "/schema/ui/swagger-ui.css",
        "/schema/ui/tacit-docs.js",
        "/schema/openapi.json",
    }
