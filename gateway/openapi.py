"""What the OpenAPI schema says a route answers, and the docs UI that shows it.

Handlers return pre-encoded bytes (`Response[bytes]`), from which litestar would document a JSON string; these
specs document the real bodies instead, so clients and the schemathesis fuzz tests can check answers against
the schema.

The docs UI (`/schema`, `/schema/swagger`) is Swagger UI from the files the `swagger-ui-py` package ships,
served by the gateway itself under `/schema/ui/`: it works offline and loads nothing from another origin.
The page has no inline script, so its Content-Security-Policy allows this origin's scripts only.
"""

from __future__ import annotations

import functools
import html
import importlib.util
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.enums import MediaType
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.params import FromPath
from litestar.response import File

from tacit.schemas.problem import Problem, RequestError

__all__ = ["DOCS_CSP", "ERROR_STATUSES", "LocalSwaggerUI", "documented", "openapi_config"]

#: Statuses an API route may answer besides success, always with a Problem body.
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 415, 422, 429, 431, 502, 503)

#: The docs pages' policy: scripts, styles, images and requests from this origin only (Swagger UI's icons are
#: data: URIs in its stylesheet; the styles it sets on elements go through the DOM, which the policy allows).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_JS = "text/javascript"  # litestar adds the charset to text/* types
#: The files of swagger-ui-dist the page loads, by name: a fixed list, so no request path is ever joined.
_UI_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": _JS,
    "favicon-32x32.png": "image/png",
}
# Starts Swagger UI on the schema the page names; a file rather than an inline script, for the CSP.
_INIT_JS = b"""\
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis],
    validatorUrl: null,  // no badge fetched from the public validator
  });
});
"""
_INIT = "tacit-docs.js"


def documented(ok: Any, *success: int, media_type: str = "application/json") -> dict[int, ResponseSpec]:
    """`responses=` for a route: `ok` for each success status (200 when none given), a Problem for each error."""
    specs = {
        status: ResponseSpec(data_container=Problem, generate_examples=False, description="A Problem")
        for status in ERROR_STATUSES
    }
    for status in success or (200,):
        specs[status] = ResponseSpec(
            data_container=ok, generate_examples=False, media_type=media_type, description="Success"
        )
    return specs


def openapi_config(title: str = "Tacit", version: str = "1", path: str = "/schema") -> OpenAPIConfig:
    """The schema at `{path}/openapi.json` (and `.yaml`), the docs UI at `{path}` and `{path}/swagger`."""
    return OpenAPIConfig(
        title=title,
        version=version,
        path=path,
        render_plugins=[LocalSwaggerUI(f"{path}/ui"), JsonRenderPlugin(), YamlRenderPlugin()],
        openapi_router=Router(
            path, route_handlers=[], include_in_schema=False, dto=None, return_dto=None, after_request=_page_csp
        ),
    )


class LocalSwaggerUI(SwaggerRenderPlugin):
    """Swagger UI from the gateway's own copy of its files (`assets` is their URL prefix); no inline script."""

    def __init__(self, assets: str) -> None:
        self.assets = assets.rstrip("/")
        super().__init__(
            js_url=f"{self.assets}/swagger-ui-bundle.js",
            css_url=f"{self.assets}/swagger-ui.css",
            favicon=f'<link rel="icon" type="image/png" href="{self.assets}/favicon-32x32.png">',
            path=["/", "/swagger"],
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page: Swagger UI's stylesheet and bundle, then the script that points it at the JSON schema."""
        title = html.escape(str(openapi_schema["info"]["title"]))
        spec_url = html.escape(self.get_openapi_json_route(request))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{self.favicon}
<link rel="stylesheet" href="{self.css_url}">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec_url}"></div>
<script src="{self.js_url}"></script>
<script src="{self.assets}/{_INIT}"></script>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        """Adds the route for the UI's files (the OAuth2 redirect page of the parent class is not served)."""
        prefix = self.assets.removeprefix(router.path)
        router.register(get(f"{prefix}/{{name:str}}", sync_to_thread=False, name="docs-ui-asset")(_asset))


def _asset(name: FromPath[str]) -> Response[bytes] | File:
    # Cached for an hour: the files change only when the lock moves swagger-ui-py.
    headers = {"Cache-Control": "public, max-age=3600"}
    if name == _INIT:
        return Response(_INIT_JS, media_type=_JS, headers=headers)
    if name not in _UI_FILES:
        raise RequestError(404, "not_found", "path", f"no docs UI file {name[:100]!r}")
    return File(
        _ui_dir() / name, media_type=_UI_FILES[name], content_disposition_type="inline", filename=name, headers=headers
    )


@functools.cache
def _ui_dir() -> Path:
    # Found, not imported: swagger_ui's own modules (jinja2 handlers for other frameworks) are never needed.
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing (it is in requirements.lock)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _page_csp(response: Response[Any]) -> Response[Any]:
    # Only the HTML pages: the JSON schema and the files keep the edge's deny-all policy (gateway.edge).
    media = getattr(response.media_type, "value", response.media_type)  # a MediaType member or a string
    if str(media).startswith(MediaType.HTML.value):
        response.headers.setdefault("Content-Security-Policy", DOCS_CSP)
    return response
