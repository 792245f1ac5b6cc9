"""The edge kit every service shares: one exception-to-Problem mapper, so the same bad input gets the same error body
from the gateway, feature_svc, reward_svc and judge_svc.

Every request error is a `RequestError` (status, code, field, detail, headers): the kernel's own (`SessionError`,
the body decoders') and each service's (FeatureError, ScoreError, DependencyError, ...) subclass it, so they need
no mapping. A service registers only the foreign exceptions it turns into request errors (a database driver's,
say): `problem_handler(*mappers)`, where a mapper returns a `RequestError` or None. Mapped here once: litestar's
parameter validation and HTTP exceptions (one code table, the body limit named on 413), JSON nested too deeply,
and anything else as a logged 500 that says nothing about the request.

`service_app` builds every service's Litestar app the same way: that handler, the shared HTTP metrics middleware,
`/healthz` and `/metrics`, the body limit, one lifespan (the only lifecycle hook: it builds the typed state, a
`litestar.datastructures.State` subclass handlers annotate `state` with), and no logging configuration of its own.
It also refuses unknown query parameters on every route of the OpenAPI document: 422 `invalid` naming the first
unknown one and listing the route's own (a handler that reads its query string itself is marked `own_query`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.routes import HTTPRoute
from litestar.types import ControllerRouterHandler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST

from tacit.http_metrics import ServiceMetrics
from tacit.schemas.problem import NESTED_TOO_DEEPLY, RequestError, choices

__all__ = [
    "HTTP_CODES",
    "ErrorMapper",
    "Lifespan",
    "healthz",
    "json_response",
    "metrics_route",
    "own_query",
    "problem_handler",
    "service_app",
    "to_request_error",
]

logger = logging.getLogger("tacit.edge")
_ENCODER = msgspec.json.Encoder()
JSON = "application/json"

#: The one code per HTTP status litestar raises by itself.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}

ErrorMapper = Callable[[Exception], RequestError | None]


def _body_limit(request: Request[Any, Any, Any]) -> int | None:
    try:
        limit = request.route_handler.resolve_request_max_body_size()
    except Exception:  # no route (an unknown path)
        return None
    return None if limit is None else int(limit)


#: msgspec's words for a path or query parameter of the wrong type, and what such a parameter must look like.
_PARAMETER_FORMATS = {
    "Invalid RFC3339 encoded datetime": "an ISO 8601 date-time such as 2025-01-31T09:00:00Z",
    "Invalid RFC3339 encoded date": "an ISO 8601 date such as 2025-01-31",
    "Expected `int`, got `str`": "an integer",
    "Expected `float`, got `str`": "a number",
    "Expected `bool`, got `str`": "true or false",
}


def _parameter_detail(request: Request[Any, Any, Any], key: str, message: str) -> str:
    """What parameter `key` must be (the value given is not echoed: it may be anything a client or a scanner sent)."""
    if message in _PARAMETER_FORMATS:
        return f"{key} must be {_PARAMETER_FORMATS[message]}"
    if message.startswith("Invalid enum value") and (allowed := _declared_choices(request, key)):
        return f"{key} must be one of: {', '.join(map(str, allowed))}"
    return message[:200]


def _declared_choices(request: Request[Any, Any, Any], key: str) -> tuple[Any, ...]:
    """The values a Literal or Enum parameter `key` of the request's handler allows (empty when not one)."""
    try:
        field = request.route_handler.parsed_fn_signature.parameters.get(key)
    except Exception:  # no route
        return ()
    return () if field is None else choices(field.annotation)


def to_request_error(exc: Exception, request: Request[Any, Any, Any]) -> RequestError | None:
    """The errors every service meets, as a RequestError; None for any other exception."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        # A path or query parameter of the wrong type: name it and say what it takes, without the request line.
        first = exc.extra[0] if isinstance(exc.extra[0], dict) else {}
        key = str(first.get("key", "$"))
        return RequestError(400, "invalid", key, _parameter_detail(request, key, str(first.get("message", ""))))
    if isinstance(exc, RecursionError):
        return RequestError(400, "malformed", "$", NESTED_TOO_DEEPLY)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        detail = str(exc.detail)
        if status == 413 and (limit := _body_limit(request)) is not None:  # name the limit (litestar's detail does not)
            detail = f"the request body is over this route's limit of {limit} bytes"
        field = {404: "path", 405: "method"}.get(status, "$")
        return RequestError(status, HTTP_CODES.get(status, "http_error"), field, detail, dict(exc.headers or {}))
    return None


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    """`value` encoded by msgspec as a JSON answer (handlers encode their wire structs themselves)."""
    return Response(_ENCODER.encode(value), status_code=status, media_type=JSON, headers=headers)


def problem_handler(*mappers: ErrorMapper) -> Callable[[Request[Any, Any, Any], Exception], Response[bytes]]:
    """The exception handler of a service: its own `mappers` first, then the shared ones, else a logged 500."""

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        error = next((e for m in mappers if (e := m(exc)) is not None), None) or to_request_error(exc, request)
        if error is None:
            logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
            error = RequestError(500, "internal", "$", "internal error")
        return json_response(error.problem(), error.status, error.headers)

    return handle


@get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process answers (readiness, which checks dependencies, is each service's own `/readyz`)."""
    return {"status": "ok"}


def metrics_route(metrics: ServiceMetrics) -> HTTPRouteHandler:
    """`GET /metrics`: the Prometheus exposition of `metrics` (left out of the OpenAPI document)."""

    @get("/metrics", summary="Prometheus metrics", include_in_schema=False, sync_to_thread=False)
    def metrics_endpoint() -> Response[bytes]:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return metrics_endpoint


def own_query(handler: HTTPRouteHandler) -> HTTPRouteHandler:
    """Mark a handler that reads and checks its query string itself (the edge kit then leaves it alone)."""
    handler.opt["own_query"] = True
    return handler


class _QueryCheck:
    """`before_request`: 422 naming the first query parameter the route's handler does not declare.

    The declared names are litestar's own reading of each handler's signature (its kwargs model: the query
    parameters, aliases included, of the handler and its dependencies), collected once the app is built. Routes left
    out of the OpenAPI document (pages, assets, `/schema`, `/metrics`) and handlers marked `own_query` are not
    checked."""

    def __init__(self) -> None:
        self.accepted: dict[int, tuple[str, ...]] = {}

    def learn(self, app: Litestar) -> None:
        for route in app.routes:
            if not isinstance(route, HTTPRoute):
                continue
            for handler, model in route.route_handler_map.values():
                if handler.opt.get("own_query") or not handler.resolve_include_in_schema():
                    continue
                self.accepted[id(handler)] = tuple(sorted(p.field_alias for p in model.expected_query_params))

    def __call__(self, request: Request[Any, Any, Any]) -> None:
        accepted = self.accepted.get(id(request.route_handler))
        if accepted is None or not request.query_params:
            return
        unknown = sorted(set(request.query_params) - set(accepted))
        if unknown:
            takes = f"this route takes {', '.join(accepted)}" if accepted else "this route takes no query parameters"
            raise RequestError(422, "invalid", unknown[0], f"unknown query parameter {unknown[0]!r}; {takes}")


#: A service's one lifecycle hook: builds its state (and background tasks) on entry, releases them on exit.
Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


def service_app(
    title: str,
    route_handlers: Sequence[ControllerRouterHandler],
    *,
    metrics: ServiceMetrics,
    lifespan: Lifespan,
    max_body_bytes: int | None,
    errors: Sequence[ErrorMapper] = (),
    health: HTTPRouteHandler = healthz,
    metrics_endpoint: HTTPRouteHandler | None = None,
    middleware: Sequence[Middleware] = (),
    openapi_config: OpenAPIConfig | None = None,
    **options: Any,
) -> Litestar:
    """A service's app: `route_handlers` plus `health` and `metrics_endpoint` (default: `metrics_route(metrics)`),
    its own `errors` mapped before the shared ones, `middleware` then the HTTP metrics, and `options` (any other
    Litestar argument: CORS, hooks; a `before_request` runs after the unknown-query-parameter check)."""
    check = _QueryCheck()
    own_hook = options.pop("before_request", None)

    async def before_request(request: Request[Any, Any, Any]) -> Any:
        check(request)
        if own_hook is None:
            return None
        answer = own_hook(request)
        return await answer if inspect.isawaitable(answer) else answer

    app = Litestar(
        route_handlers=[*route_handlers, health, metrics_endpoint or metrics_route(metrics)],
        lifespan=[lifespan],
        middleware=[*middleware, metrics.http.middleware],
        exception_handlers={Exception: problem_handler(*errors)},
        openapi_config=openapi_config or OpenAPIConfig(title=title, version="1"),
        request_max_body_size=max_body_bytes,
        # Logging is the server's business (uvicorn in `serve`): an app must not reconfigure the root logger.
        logging_config=None,
        before_request=before_request,
        **options,
    )
    check.learn(app)
    return app
