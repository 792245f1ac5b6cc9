"""The browser collector: the JavaScript SDK, short-lived browser tokens, the /demo page and session replay.

A page records reading with `/sdk/tacit.js` and posts whole Sessions to `POST /v1/collector/sessions` with a
*browser token*: an HMAC-signed, expiring, ingest-only credential bound to one pseudonymous user and to a
session-id prefix, so a token copied out of a page can add sessions for that user only and read back only
those sessions. It is never an API key: `require_scope` refuses it, and it cannot be turned into one.
A host backend mints tokens with its ingest key (`POST /v1/collector/tokens`); the demo mints its own
(`POST /demo/token`, rate-limited; off unless `TACIT_COLLECTOR_DEMO=true`). Anyone may mint a demo token, so
sessions recorded with one are marked `demo` and kept out of training pairs, and browser-token ingest and the
demo's LLM relay are rate-limited per token user and per client address.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
import httpx
import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath

from gateway import examples
from gateway.access import bearer, client_address, json_response, require_scope
from gateway.openapi import documented, request_body
from gateway.settings import CollectorSettings
from gateway.state import GatewayState
from tacit.encoding import b64url, unb64url
from tacit.schemas import FeatureVector
from tacit.schemas.gateway import SessionRecord, SessionScore
from tacit.schemas.problem import RequestError, decode_body
from tacit.schemas.session import ID_PATTERN, Session
from tacit.schemas.validate import decode_session

__all__ = [
    "BROWSER_PREFIX",
    "BrowserToken",
    "CollectedSession",
    "Collector",
    "CollectorSettings",
    "TokenClaims",
    "TokenError",
    "collector_routes",
    "mint_token",
    "verify_token",
]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: Browser tokens start with this; API keys start with `tacit_`, so neither can pass for the other.
BROWSER_PREFIX = "tacitb_"
#: A browser posts one question's samples (two boxes, two modalities, ~13.5 Hz): 8 MiB is about an hour.
MAX_BROWSER_BODY = 8 * 1024 * 1024
#: A demo question is at most 2,000 characters: its JSON body is far below this.
MAX_QUESTION_BODY = 16 * 1024
_ENCODER = msgspec.json.Encoder()
_JSON = "application/json"


# --- browser tokens -----------------------------------------------------------------------------------------


class TokenClaims(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What a browser token grants: ingest (and read back) sessions of `sub` whose ids start with `sid`."""

    v: Literal[1] = 1
    scope: Literal["ingest"] = "ingest"
    sub: str
    """The pseudonymous user id sessions must carry."""
    sid: str
    """Session-id prefix the token may write and read."""
    iat: int
    exp: int
    """Expiry, Unix seconds."""
    demo: bool = False
    """Minted by /demo/token for anyone: its sessions are marked demo."""


class TokenError(RequestError, ValueError):
    """A browser token that is malformed, forged or expired: 401 naming `authorization`; `str()` is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(401, "unauthorized", "authorization", f"browser token refused: {reason}", message=reason)


def _sign(secret: bytes, body: str) -> str:
    # Domain-separated so the key signs nothing but browser tokens.
    return b64url(hmac.new(secret, b"tacit-browser-token\x00" + body.encode(), hashlib.sha256).digest())


def mint_token(
    secret: bytes, *, user_id: str, session_prefix: str, ttl_s: int, now: float, demo: bool = False
) -> tuple[str, TokenClaims]:
    """A signed browser token and its claims."""
    claims = TokenClaims(sub=user_id, sid=session_prefix, iat=int(now), exp=int(now) + ttl_s, demo=demo)
    body = BROWSER_PREFIX + b64url(_ENCODER.encode(claims))
    return f"{body}.{_sign(secret, body)}", claims


_CLAIMS = msgspec.json.Decoder(TokenClaims)


def verify_token(secret: bytes, token: str, *, now: float) -> TokenClaims:
    """The claims of a genuine, unexpired browser token; raises TokenError."""
    if not token.startswith(BROWSER_PREFIX) or len(token) > 1024 or token.count(".") != 1:
        raise TokenError("not a browser token")
    body, signature = token.split(".")
    if not hmac.compare_digest(_sign(secret, body), signature):
        raise TokenError("bad signature")
    try:
        claims = _CLAIMS.decode(unb64url(body[len(BROWSER_PREFIX) :]))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as err:
        raise TokenError(f"malformed claims: {err}") from None
    if now >= claims.exp:
        raise TokenError("expired")
    return claims


# --- wire types (candidates for tacit/schemas once the SDK's contract settles) ------------------------------


class TokenRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/collector/tokens body."""

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=ID_PATTERN)] | None = None
    """Pseudonymous user the browser records for; a fresh one when omitted."""
    ttl_s: Annotated[int, msgspec.Meta(ge=1)] | None = None


class BrowserToken(msgspec.Struct, frozen=True, kw_only=True):
    """A minted browser token: send it as `Authorization: Bearer`; session ids must start with the prefix."""

    token: str
    user_id: str
    session_prefix: str
    expires_at: int
    """Unix seconds."""
    scopes: list[str]


class CollectedSession(msgspec.Struct, frozen=True, kw_only=True):
    """A stored session as the demo and the replay page read it: the record (with payload) and its features."""

    record: SessionRecord
    features: FeatureVector | None


class DemoQuestion(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /demo/answers body."""

    question: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


_TOKEN_REQUEST = msgspec.json.Decoder(TokenRequest)
_DEMO_QUESTION = msgspec.json.Decoder(DemoQuestion)


# --- state --------------------------------------------------------------------------------------------------

_ASSETS = {
    "tacit.js": "text/javascript",
    "view.js": "text/javascript",
    "demo.js": "text/javascript",
    "replay.js": "text/javascript",
    "collector.css": "text/css",
    "demo.html": "text/html",
    "replay.html": "text/html",
    "demo_samples.json": _JSON,
}
# The pages load nothing from elsewhere and never build markup from data (an origin serving WebGazer would have
# to be added to script-src for the demo to use it).
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "media-src 'self' blob: mediastream:; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _RateLimit:
    """At most `per_minute` events per key in any sliding minute (in-process; enough to slow a script down)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._events: dict[str, collections.deque[float]] = {}

    def retry_after(self, key: str, now: float) -> float:
        """0 and the event is counted, or the seconds to wait."""
        events = self._events.setdefault(key, collections.deque())
        while events and now - events[0] >= 60:
            events.popleft()
        if len(events) >= self.per_minute:
            return 60 - (now - events[0])
        events.append(now)
        if len(self._events) > 10_000:  # forget idle clients rather than grow without bound
            self._events = {k: v for k, v in self._events.items() if v and now - v[-1] < 60}
        return 0.0


class Collector:
    """The collector's share of the app state: settings, token key, static files, the demo's answers."""

    def __init__(self, settings: CollectorSettings, clock: Any = time.time) -> None:
        self.settings = settings
        if not self.settings.secret:
            logger.info("no TACIT_COLLECTOR_SECRET: browser tokens are signed with a per-process key")
        self.secret = self.settings.secret.encode() or secrets.token_bytes(32)
        self.clock = clock
        # Read once at start-up: a missing asset fails the start, not a visitor's request.
        self.assets = {name: (STATIC / name).read_bytes() for name in _ASSETS}
        self.samples = msgspec.json.decode(self.assets["demo_samples.json"])
        self.demo_limit = _RateLimit(self.settings.demo_tokens_per_minute)
        self.session_limit = _RateLimit(self.settings.sessions_per_minute)
        self.demo_session_limit = _RateLimit(self.settings.demo_sessions_per_minute)
        self.answers_limit = _RateLimit(self.settings.demo_answers_per_minute)

    def mint(self, user_id: str | None = None, ttl_s: int | None = None, *, demo: bool = False) -> BrowserToken:
        ttl = min(ttl_s or self.settings.token_ttl_s, self.settings.max_token_ttl_s)
        user = user_id or f"b-{secrets.token_hex(8)}"
        # Random per token: another token of the same user can neither overwrite nor read these sessions.
        prefix = f"{user[:40]}.{secrets.token_hex(6)}."
        token, claims = mint_token(
            self.secret, user_id=user, session_prefix=prefix, ttl_s=ttl, now=self.clock(), demo=demo
        )
        return BrowserToken(
            token=token, user_id=user, session_prefix=prefix, expires_at=claims.exp, scopes=[claims.scope]
        )

    @staticmethod
    def limit(limit: _RateLimit, key: str, what: str) -> None:
        """429 with Retry-After when `key` is over `limit`; else the event is counted."""
        wait = limit.retry_after(key, time.monotonic())
        if wait > 0:
            raise RequestError(
                429,
                "rate_limited",
                "authorization",
                f"over the limit of {limit.per_minute} {what} a minute",
                {"Retry-After": str(int(wait) + 1)},
            )

    def verify(self, token: str) -> TokenClaims:
        """The token's claims; TokenError (401) when it is refused."""
        return verify_token(self.secret, token, now=self.clock())


# --- guards -------------------------------------------------------------------------------------------------


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return bearer(connection, "token")


async def require_browser_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: a valid browser token; its claims are left in `request.state.browser`."""
    connection.state.browser = connection.app.state.collector.verify(_bearer(connection))


async def require_browser_token_or_key(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard: a browser token (its own sessions only, checked by the handler) or an API key with the route's scope."""
    connection.state.browser = None
    if _bearer(connection).startswith(BROWSER_PREFIX):
        await require_browser_token(connection, handler)
    else:
        await require_scope(connection, handler)


def _own(claims: TokenClaims | None, session_id: str, user_id: str | None = None) -> None:
    if claims is None:
        return
    if not session_id.startswith(claims.sid):
        raise RequestError(
            403, "forbidden", "session_id", f"this browser token only covers session ids starting {claims.sid!r}"
        )
    if user_id is not None and user_id != claims.sub:
        raise RequestError(403, "forbidden", "user_id", f"this browser token records for user {claims.sub!r}")


# --- routes -------------------------------------------------------------------------------------------------


def _asset(state: GatewayState, name: str, *, page: bool = False, max_age: int = 300) -> Response[bytes]:
    headers = {"Cache-Control": f"public, max-age={max_age}", "X-Content-Type-Options": "nosniff"}
    if page:
        headers = {**_PAGE_HEADERS, "Cache-Control": "no-cache"}
    return Response(state.collector.assets[name], media_type=_ASSETS[name], headers=headers)


@get("/sdk/tacit.js", summary="The browser collector SDK", include_in_schema=False)
async def sdk(state: GatewayState) -> Response[bytes]:
    return _asset(state, "tacit.js")


@get("/collector/static/{name:str}", summary="Assets of the demo and replay pages", include_in_schema=False)
async def asset(state: GatewayState, name: FromPath[str]) -> Response[bytes]:
    if name not in ("view.js", "demo.js", "replay.js", "collector.css"):  # a fixed list: no path is ever joined
        raise RequestError(404, "not_found", "path", f"no asset {name}")
    return _asset(state, name)


def _demo_on(state: GatewayState) -> None:
    if not state.collector.settings.demo:
        raise RequestError(404, "not_found", "path", "the demo is off (TACIT_COLLECTOR_DEMO=true serves it)")


@get("/demo", summary="Live demo: read two answers, see the predicted preference", include_in_schema=False)
async def demo_page(state: GatewayState) -> Response[bytes]:
    _demo_on(state)
    return _asset(state, "demo.html", page=True)


@get("/demo/samples", summary="The demo's questions and answers", include_in_schema=False)
async def demo_samples(state: GatewayState) -> Response[bytes]:
    _demo_on(state)
    return json_response({"samples": state.collector.samples, "llm": bool(state.collector.settings.llm_base_url)})


@post("/demo/token", status_code=201, summary="A browser token for a throwaway demo user", include_in_schema=False)
async def demo_token(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    _demo_on(state)
    collector: Collector = state.collector
    collector.limit(collector.demo_limit, client_address(request), "demo tokens from one address")
    token = collector.mint(user_id=f"demo-{secrets.token_hex(6)}", demo=True)
    return json_response(token, 201, {"Cache-Control": "no-store"})


@post(
    "/v1/collector/tokens",
    status_code=201,
    summary="Mint a short-lived, ingest-only browser token (for a page the caller serves)",
    guards=[require_scope],
    opt={"scope": "ingest"} | request_body(TokenRequest, examples.token_request),
    responses=documented(BrowserToken, 201),
)
async def create_token(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    body = await request.body()
    spec: TokenRequest = decode_body(_TOKEN_REQUEST, body or b"{}")
    collector: Collector = state.collector
    if spec.ttl_s is not None and spec.ttl_s > collector.settings.max_token_ttl_s:
        raise RequestError(422, "invalid", "ttl_s", f"at most {collector.settings.max_token_ttl_s} seconds")
    return json_response(collector.mint(spec.user_id, spec.ttl_s), 201, {"Cache-Control": "no-store"})


@post(
    "/v1/collector/sessions",
    status_code=200,
    summary="Ingest one session recorded in a browser (browser token) and answer its score",
    guards=[require_browser_token],
    request_max_body_size=MAX_BROWSER_BODY,
    opt=request_body(Session, examples.session),
    responses=documented(SessionScore, 200, 202),
)
async def post_collected(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    claims: TokenClaims = request.state.browser
    collector: Collector = state.collector
    collector.limit(collector.session_limit, claims.sub, "sessions per browser-token user")
    if claims.demo:
        collector.limit(collector.demo_session_limit, client_address(request), "demo sessions from one address")
    body = await request.body()
    session = decode_session(body)
    _own(claims, session.session_id, session.user_id)
    result = await state.pipeline.ingest(session, body, demo=claims.demo, source="collector")
    return json_response(result, 200 if result.status == "scored" else 202)


@get(
    "/v1/collector/sessions/{session_id:str}",
    summary="A stored session with its payload and features (browser token: its own sessions; or a read key)",
    guards=[require_browser_token_or_key],
    opt={"scope": "read"},
    responses=documented(CollectedSession, 200),
)
async def get_collected(
    request: Request[Any, Any, Any], state: GatewayState, session_id: FromPath[str]
) -> Response[bytes]:
    claims: TokenClaims | None = request.state.browser
    _own(claims, session_id)
    row = await anyio.to_thread.run_sync(state.store.sessions.get_session, session_id)
    if row is None or (claims is not None and row.user_id != claims.sub):
        raise RequestError(404, "not_found", "session_id", f"no session {session_id}")
    from gateway.wire import session_record  # the one SessionRecord builder

    def load() -> CollectedSession:
        # A payload removed by retention comes back as `session: null`: the page then shows the score only.
        record = session_record(state.store, row, include_payload=True)
        return CollectedSession(record=record, features=state.store.scores.features_of(row))

    return json_response(await anyio.to_thread.run_sync(load), headers={"Cache-Control": "no-store"})


@get("/sessions/{session_id:str}/replay", summary="Replay of a stored session", include_in_schema=False)
async def replay_page(state: GatewayState, session_id: FromPath[str]) -> Response[bytes]:
    # The page holds no data: its script fetches the session with the token it is given (URL fragment or form).
    return _asset(state, "replay.html", page=True)


def _tidy(text: str) -> str:
    # As the reference site shows an answer: trimmed, runs of blank lines collapsed to one.
    return re.sub(r"\n\s*\n+", "\n\n", text.strip())


@post(
    "/demo/answers",
    status_code=200,
    summary="Two answers to the demo question from the configured OpenAI-compatible endpoint",
    guards=[require_browser_token],
    include_in_schema=False,
    request_max_body_size=MAX_QUESTION_BODY,
)
async def demo_answers(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    _demo_on(state)
    collector: Collector = state.collector
    settings: CollectorSettings = collector.settings
    if not settings.llm_base_url:
        raise RequestError(404, "not_found", "path", "no LLM endpoint configured: the demo uses its sample answers")
    raw = await request.body()  # over MAX_QUESTION_BODY: 413 before anything is counted
    collector.limit(collector.answers_limit, f"address:{client_address(request)}", "demo questions from one address")
    collector.limit(collector.answers_limit, f"user:{request.state.browser.sub}", "demo questions per demo user")
    spec: DemoQuestion = decode_body(_DEMO_QUESTION, raw)
    models = settings.llm_models * 2 if len(settings.llm_models) == 1 else settings.llm_models
    base = settings.llm_base_url.rstrip("/")
    url = f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
    answers = []
    async with httpx.AsyncClient(timeout=settings.llm_timeout_s, headers=headers) as client:
        for model in models:
            # As the reference study: no system prompt, at most 500 tokens.
            body = {"model": model, "messages": [{"role": "user", "content": spec.question}], "max_tokens": 500}
            try:
                reply = await client.post(url, json=body)
                reply.raise_for_status()
                answers.append(_tidy(reply.json()["choices"][0]["message"]["content"]))
            except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as err:
                raise RequestError(502, "upstream", "$", f"the LLM endpoint failed: {type(err).__name__}") from None
    return json_response({"question": spec.question, "answers": answers, "models": models})


def collector_routes() -> list[Any]:
    """The collector's route handlers, for the gateway's route list."""
    return [
        sdk,
        asset,
        demo_page,
        demo_samples,
        demo_token,
        demo_answers,
        create_token,
        post_collected,
        get_collected,
        replay_page,
    ]
