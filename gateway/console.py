"""The console: a page under /console to browse sessions and scores, compare reward models and follow jobs.

The page (`static/console.html`, `.js`, `.css`) is served from the gateway only (no CDN, no inline script) and holds
no data: it asks the read-only routes below with the API key the user typed (kept in the tab's sessionStorage,
sent as `Authorization: Bearer`). Those routes need the `read` scope (admin implies it); the page also uses the
existing ones (`/v1/sessions/{id}?include=scores`, `/v1/reward/models`, `.../compare/...`, `/v1/reward/rescores`,
`/v1/alignment/jobs`) and links each session to its `/sessions/{id}/replay` page.

Query parameters are checked strictly: an unknown one, a repeated one or a bad value is a 422 naming it (enums
list their allowed values).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from litestar import Request, Response, get
from litestar.params import FromPath, Parameter

from gateway.access import json_response, scoped
from gateway.console_queries import (
    ABSTAINED,
    AGREEMENTS,
    ConsoleSessionPage,
    ScoreDistribution,
    SessionFilter,
    distribution,
    read_session,
    sessions_page,
)
from gateway.imports import KIND as IMPORT_KIND
from gateway.state import GatewayState
from gateway.wire import job_info
from tacit.db.sessions import InvalidCursorError
from tacit.edge import own_query
from tacit.schemas.gateway import JobInfo
from tacit.schemas.problem import RequestError

__all__ = ["console_routes"]

STATIC = Path(__file__).parent / "static"
_ASSETS = {
    "console.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
}
# As the collector's pages: nothing from elsewhere, no inline script or style, never framed.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MODES = ("pairwise", "pointwise")
MAX_LIMIT = 200
_SESSION_PARAMS = ("user_id", "model_id", "mode", "abstained", "agreement", "since", "until", "cursor", "limit")


@functools.cache
def _asset_bytes(name: str) -> bytes:
    return (STATIC / name).read_bytes()


# --- query parameters ----------------------------------------------------------------------------------------


def _strict(request: Request[Any, Any, Any], allowed: Sequence[str]) -> None:
    """422 naming an unknown or a repeated query parameter (litestar would ignore the one, pick from the other)."""
    params = request.query_params
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise RequestError(
            422,
            "invalid",
            unknown[0],
            f"unknown query parameter {unknown[0]!r}; this route takes {', '.join(allowed)}",
        )
    for name in params:
        if len(params.getall(name)) > 1:
            raise RequestError(422, "invalid", name, f"{name} may be given once")


def _given(raw: str | None) -> str | None:
    return raw or None  # an empty value (an empty form field) means "not given"


def _text(name: str, raw: str | None, max_length: int = 128) -> str | None:
    value = _given(raw)
    if value is not None and len(value) > max_length:
        raise RequestError(422, "invalid", name, f"{name} is at most {max_length} characters")
    return value


def _choice(name: str, raw: str | None, allowed: Sequence[str]) -> str | None:
    value = _given(raw)
    if value is not None and value not in allowed:
        raise RequestError(422, "invalid", name, f"{name} must be one of {', '.join(allowed)}, not {value[:40]!r}")
    return value


def _integer(name: str, raw: str | None, default: int, lo: int, hi: int) -> int:
    value = _given(raw)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and lo <= int(value) <= hi):
        raise RequestError(422, "invalid", name, f"{name} must be an integer from {lo} to {hi}, not {value[:40]!r}")
    return int(value)


def _moment(name: str, raw: str | None, *, end_of_day: bool = False) -> dt.datetime | None:
    """An ISO 8601 date or date-time (no zone: UTC); a bare date as an upper bound covers that whole day."""
    value = _given(raw)
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return start + dt.timedelta(days=1) if end_of_day else start
        moment = dt.datetime.fromisoformat(value)
        return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise RequestError(
            422,
            "invalid",
            name,
            f"{name} must be an ISO 8601 date or date-time (2026-12-05 or 2026-12-05T10:00:00Z), not {value[:40]!r}",
        ) from None


def _doc(text: str) -> Any:
    return Parameter(description=text, required=False)


# --- the page ------------------------------------------------------------------------------------------------


@get("/console", summary="The console: sessions, scores, model comparison and jobs", include_in_schema=False)
async def console_page() -> Response[bytes]:
    return Response(_asset_bytes("console.html"), media_type=_ASSETS["console.html"], headers=_PAGE_HEADERS)


@get("/console/static/{name:str}", summary="The console's script and style", include_in_schema=False)
async def console_asset(name: FromPath[str]) -> Response[bytes]:
    if name not in ("console.js", "console.css"):  # a fixed list: no path is ever joined
        raise RequestError(404, "not_found", "path", f"no asset {name}")
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return Response(_asset_bytes(name), media_type=_ASSETS[name], headers=headers)


# --- read routes ---------------------------------------------------------------------------------------------


@get(
    "/v1/console/sessions",
    summary="Sessions newest first, filtered by user, model, mode, abstention, agreement with the label and date",
    description=(
        "`model_id`: only sessions that model scored, each shown with that model's score (else the current score). "
        "`abstained`: true or false. `agreement`: agree, disagree (the model's choice against the explicit label) "
        "or no_label. `since` (inclusive) and `until` (exclusive; a bare date covers its whole day): ISO 8601, UTC "
        "when no zone is given. `cursor`: the previous page's `next_cursor`. `limit`: 1 to 200 (50)."
    ),
    **scoped("read", ConsoleSessionPage),
)
async def console_sessions(
    request: Request[Any, Any, Any],
    state: GatewayState,
    user_id: Annotated[str | None, _doc("Only this user's sessions")] = None,
    model_id: Annotated[str | None, _doc("Only sessions this reward model scored, with its score")] = None,
    mode: Annotated[str | None, _doc("pairwise or pointwise")] = None,
    abstained: Annotated[str | None, _doc("true or false (of the score shown)")] = None,
    agreement: Annotated[str | None, _doc("agree, disagree or no_label: the score's choice against the label")] = None,
    since: Annotated[str | None, _doc("Received at or after: ISO 8601 date or date-time (UTC without a zone)")] = None,
    until: Annotated[str | None, _doc("Received before: ISO 8601; a bare date covers its whole day")] = None,
    cursor: Annotated[str | None, _doc("The previous page's next_cursor")] = None,
    limit: Annotated[str | None, _doc("Sessions per page, 1 to 200 (default 50)")] = None,
) -> Response[bytes]:
    _strict(request, _SESSION_PARAMS)
    flag = _choice("abstained", abstained, ABSTAINED)
    where = SessionFilter(
        user_id=_text("user_id", user_id),
        model_id=_text("model_id", model_id),
        mode=_choice("mode", mode, MODES),
        abstained=None if flag is None else flag == "true",
        agreement=_choice("agreement", agreement, AGREEMENTS),
        since=_moment("since", since),
        until=_moment("until", until, end_of_day=True),
    )
    if where.since is not None and where.until is not None and where.since >= where.until:
        raise RequestError(422, "invalid", "until", "until must be after since")
    size = _integer("limit", limit, 50, 1, MAX_LIMIT)
    after = _text("cursor", cursor, 512)

    def read() -> ConsoleSessionPage:
        with read_session(state.store) as s:
            return sessions_page(s, where, limit=size, cursor=after)

    try:
        page = await anyio.to_thread.run_sync(read)
    except InvalidCursorError as err:
        raise RequestError(422, "invalid", "cursor", str(err)) from None
    return json_response(page)


@get(
    "/v1/console/models/{model_id:str}/distribution",
    summary="One reward model's score histogram, agreement with explicit labels and reliability bins",
    description=(
        "`bins`: 2 to 50 (10). `common_with`: another model's id, to count only the sessions both scored. The "
        "reliability bins set the mean predicted P(label = 1) against the observed share of label 1."
    ),
    **scoped("read", ScoreDistribution),
)
async def model_distribution(
    request: Request[Any, Any, Any],
    state: GatewayState,
    model_id: FromPath[str],
    bins: Annotated[str | None, _doc("Equal bins over [0, 1], 2 to 50 (default 10)")] = None,
    common_with: Annotated[str | None, _doc("Another model: only the sessions both scored")] = None,
) -> Response[bytes]:
    _strict(request, ("bins", "common_with"))
    count = _integer("bins", bins, 10, 2, 50)
    other = _text("common_with", common_with)

    def read() -> ScoreDistribution:
        with read_session(state.store) as s:
            return distribution(s, model_id, bins=count, common_with=other)

    return json_response(await anyio.to_thread.run_sync(read))


@get("/v1/console/imports", summary="IFLLM import jobs, newest first", **scoped("read", list[JobInfo]))
async def list_imports(
    request: Request[Any, Any, Any],
    state: GatewayState,
    limit: Annotated[str | None, _doc("Jobs, 1 to 500 (default 50)")] = None,
) -> Response[bytes]:
    _strict(request, ("limit",))
    size = _integer("limit", limit, 50, 1, 500)
    rows = await anyio.to_thread.run_sync(lambda: state.store.jobs.list_jobs(IMPORT_KIND, limit=size))
    return json_response([job_info(row) for row in rows])


def console_routes() -> list[Any]:
    """The console's page and read routes, for the gateway's route list."""
    # Each read route checks its own query string (`_strict`): the edge kit's check leaves them alone.
    routes = [console_page, console_asset, console_sessions, model_distribution, list_imports]
    return [own_query(route) for route in routes]
