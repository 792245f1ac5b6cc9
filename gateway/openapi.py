"""What the OpenAPI schema says a route answers, and the docs UI that shows it.

Handlers return pre-encoded bytes (`Response[bytes]`), from which litestar would document a JSON string; these
specs document the real bodies instead, so clients and the schemathesis fuzz tests can check answers against
the schema.

Request bodies: handlers read raw bytes and decode them with msgspec (`tacit.schemas.problem.decode_body`), so
litestar infers none. A route names its body type (`request_body(...)` in its `opt`, or `scoped(..., body=...)`);
`complete_openapi` then documents it once, before the schema is first served, with msgspec's own JSON schema of
every Struct the API reads or answers (the Struct docstrings as descriptions, the field docstrings as property
descriptions) and an example built from a real object.

The docs UI (`/schema`, `/schema/swagger`) is Swagger UI from the files the `swagger-ui-py` package ships,
served by the gateway itself under `/schema/ui/`: it works offline and loads nothing from another origin.
The page has no inline script, so its Content-Security-Policy allows this origin's scripts only.
"""

from __future__ import annotations

import ast
import functools
import html
import importlib.util
import inspect
import itertools
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.enums import MediaType
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import OpenAPIMediaType, RequestBody, Schema
from litestar.params import FromPath
from litestar.response import File
from litestar.routes import HTTPRoute

from tacit.schemas.problem import Problem, RequestError

__all__ = [
    "DOCS_CSP",
    "ERROR_STATUSES",
    "REF_TEMPLATE",
    "LocalSwaggerUI",
    "complete_openapi",
    "documented",
    "openapi_config",
    "request_body",
]

#: Where msgspec's schemas point their references: the OpenAPI document's components.
REF_TEMPLATE = "#/components/schemas/{name}"

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


def request_body(body: Any, example: Callable[[], Any], media_type: str = "application/json") -> dict[str, Any]:
    """The `opt` entries naming a route's request body type and a function that builds an example of it."""
    return {"body": body, "body_example": example, "body_media_type": media_type}


class _Completion:
    """The schema routes' first request completes the schema before litestar renders (and caches) it: the cost
    (about half a second: litestar's schema, msgspec's, the examples) falls on the first reader, not on start-up."""

    def __init__(self) -> None:
        self.done = False

    def __call__(self, request: Request[Any, Any, Any]) -> None:
        if not self.done:  # no await in between: one completion per app even under concurrent first requests
            complete_openapi(request.app)
            self.done = True


def complete_openapi(app: Litestar) -> None:
    """Documents each route's request body (from its `opt`) and replaces litestar's schemas of the Structs with
    msgspec's, which carry the docstrings. Run by the schema routes before their first answer; a caller reading
    `app.openapi_schema` in Python runs it first."""
    openapi = app.openapi_schema
    bodies: list[tuple[Any, dict[str, Any]]] = []  # (operation, opt)
    types: list[Any] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in (openapi.paths or {}):
            continue
        path_item = (openapi.paths or {})[route.path_format]
        for handler in route.route_handlers:
            types.extend(s.data_container for s in (handler.responses or {}).values() if s.data_container is not Any)
            if "body" not in handler.opt:
                continue
            types.append(handler.opt["body"])
            for method in handler.http_methods:
                operation = getattr(path_item, method.lower(), None)
                if operation is not None:
                    bodies.append((operation, handler.opt))
    schemas, components = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    for struct in _structs(types):
        properties = components.get(struct.__name__, {}).get("properties", {})
        for name, doc in _field_docs(struct).items():
            if name in properties:
                properties[name].setdefault("description", doc)
    if openapi.components.schemas is None:
        openapi.components.schemas = {}
    # litestar writes a dict it is given as it is (`BaseSchemaObject.to_schema`); msgspec's schemas are JSON schema
    openapi.components.schemas.update({name: cast(Schema, schema) for name, schema in components.items()})
    by_type = dict(zip(map(_key, types), schemas, strict=True))
    for operation, opt in bodies:
        example = msgspec.to_builtins(opt["body_example"]())
        media = OpenAPIMediaType(schema=cast(Schema, by_type[_key(opt["body"])]), example=example)
        operation.request_body = RequestBody(content={opt["body_media_type"]: media}, required=True)


def _key(kind: Any) -> str:
    # generic aliases and unions are not always hashable alike; their repr names them exactly
    return repr(kind)


def _structs(types: Iterable[Any]) -> list[type[msgspec.Struct]]:
    """Every Struct class the types reach (fields, items, union members), each once."""
    found: dict[type[msgspec.Struct], None] = {}

    def walk(info: msgspec.inspect.Type) -> None:
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls in found:
                return
            found[info.cls] = None
            for field in info.fields:
                walk(field.type)
        for attr in ("item_type", "key_type", "value_type", "type"):
            child = getattr(info, attr, None)
            if isinstance(child, msgspec.inspect.Type):
                walk(child)
        for child in getattr(info, "types", None) or getattr(info, "item_types", None) or ():
            walk(child)

    for info in msgspec.inspect.multi_type_info(list(types)):
        walk(info)
    return list(found)


def _field_docs(struct: type) -> dict[str, str]:
    """A Struct's field docstrings (the string literal under a field, as STYLE.md asks), its bases' first."""
    docs: dict[str, str] = {}
    for cls in reversed(struct.__mro__):
        if issubclass(cls, msgspec.Struct) and cls is not msgspec.Struct:
            docs.update(_own_field_docs(cls))
    return docs


@functools.cache
def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen build): the schema keeps the Struct docstrings only
        return {}
    body = cast(ast.ClassDef, ast.parse(source).body[0]).body
    docs: dict[str, str] = {}
    for field, after in itertools.pairwise(body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = inspect.cleandoc(after.value.value)
    return docs


def openapi_config(title: str = "Tacit", version: str = "1", path: str = "/schema") -> OpenAPIConfig:
    """The schema at `{path}/openapi.json` (and `.yaml`), the docs UI at `{path}` and `{path}/swagger`."""
    return OpenAPIConfig(
        title=title,
        version=version,
        path=path,
        render_plugins=[LocalSwaggerUI(f"{path}/ui"), JsonRenderPlugin(), YamlRenderPlugin()],
        openapi_router=Router(
            path,
            route_handlers=[],
            include_in_schema=False,
            dto=None,
            return_dto=None,
            before_request=_Completion(),
            after_request=_page_csp,
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
