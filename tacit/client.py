"""A typed Python client for the Tacit gateway (used by the CLI and the end-to-end tests).

    with TacitClient("http://127.0.0.1:8100", api_key) as tacit:
        score = tacit.post_session(session)
        for stored in tacit.list_sessions(user_id="u1"):
            ...

Every non-2xx answer raises `TacitError` carrying the problem body's `code`, `field` and `detail`; a gateway
that cannot be reached raises `TacitError` with status 0 and code `unreachable`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from tacit.schemas.problem import RequestError
from tacit.schemas.session import Session

__all__ = ["DEFAULT_TIMEOUT", "MAX_BATCH", "TacitClient", "TacitError"]

#: Seconds to connect, and to wait for an answer (scoring a long session can take a moment).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

#: Most sessions the gateway takes in one batch request.
MAX_BATCH = 500

_ENCODER = msgspec.json.Encoder()
_JSON = {"Content-Type": "application/json"}


class TacitError(RequestError):
    """A gateway error answer: HTTP status and the problem body's stable `code`, offending `field` and `detail`
    (the services' own error base, as a client meets it)."""

    def __init__(
        self,
        status: int,
        code: str,
        field: str,
        detail: str,
        *,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, field, detail, message=f"{status} {code} at {field}: {detail}")
        self.body = body
        """The decoded answer body (e.g. `/readyz`'s per-dependency report), when it was JSON."""
        self.retry_after = retry_after
        """Seconds the gateway asked to wait (`Retry-After`), when it said."""

    @classmethod
    def from_response(cls, response: httpx.Response) -> TacitError:
        try:
            body = response.json()
        except ValueError:
            body = None
        retry_after: float | None
        try:
            retry_after = float(response.headers["Retry-After"])
        except (KeyError, ValueError):
            retry_after = None
        if isinstance(body, Mapping) and "code" in body:
            return cls(
                response.status_code,
                str(body.get("code")),
                str(body.get("field") or "$"),
                str(body.get("detail") or ""),
                body=body,
                retry_after=retry_after,
            )
        detail = response.text.strip()[:500] or response.reason_phrase
        return cls(response.status_code, "http_error", "$", detail, body=body, retry_after=retry_after)


def _body(value: Session | Mapping[str, Any] | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    return _ENCODER.encode(value)


def _seg(value: str) -> str:
    """One path segment: ids are free text, so '/', '?' and '#' must not change the route."""
    return quote(value, safe="")


#: The event kinds that end an alignment job.
_JOB_ENDS = ("succeeded", "failed", "cancelled")


def _when(value: dt.datetime | str) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else value


class TacitClient:
    """Synchronous gateway client; pass `transport` (e.g. `httpx.MockTransport`) to talk to a test double."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> TacitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as err:
            raise TacitError(0, "unreachable", "$", f"{type(err).__name__}: {err}") from err
        if response.is_error:
            raise TacitError.from_response(response)
        if response.status_code == 204 or not response.content:
            return {}
        return response.json()

    # Sessions

    def post_session(self, session: Session | Mapping[str, Any] | bytes) -> dict[str, Any]:
        """Ingest one session (idempotent on its `session_id`); answers its score."""
        result: dict[str, Any] = self._request("POST", "/v1/sessions", content=_body(session), headers=_JSON)
        return result

    def post_sessions(
        self, sessions: Iterable[Session | Mapping[str, Any]], *, batch_size: int = MAX_BATCH
    ) -> dict[str, Any]:
        """Ingest many sessions, `batch_size` per request; answers `{"results": [...]}` in the order given."""
        items = list(sessions)
        results: list[Any] = []
        for start in range(0, len(items), batch_size):
            body = _ENCODER.encode({"sessions": items[start : start + batch_size]})
            page = self._request("POST", "/v1/sessions:batch", content=body, headers=_JSON)
            results.extend(page.get("results", []))
        return {"results": results}

    def get_session(self, session_id: str, *, payload: bool = False) -> dict[str, Any]:
        """A stored session's record; `payload=True` includes the trajectories as stored."""
        params = {"include": "payload"} if payload else None
        result: dict[str, Any] = self._request("GET", f"/v1/sessions/{_seg(session_id)}", params=params)
        return result

    def list_sessions(
        self, user_id: str | None = None, since: dt.datetime | str | None = None, limit: int = 50
    ) -> Iterator[dict[str, Any]]:
        """Every matching session, fetched `limit` per page by following `next_cursor`."""
        params: dict[str, str | int] = {"limit": limit}
        if user_id is not None:
            params["user_id"] = user_id
        if since is not None:
            params["since"] = _when(since)
        while True:
            page = self._request("GET", "/v1/sessions", params=params)
            yield from page.get("items", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor

    def delete_user(self, user_id: str) -> dict[str, Any]:
        """Erase everything stored for `user_id`; answers what was erased."""
        result: dict[str, Any] = self._request("DELETE", f"/v1/users/{_seg(user_id)}")
        return result

    # Reward models

    def reward_models(self, task: str | None = None) -> list[dict[str, Any]]:
        params = {"task": task} if task else None
        result: list[dict[str, Any]] = self._request("GET", "/v1/reward/models", params=params)
        return result

    def reward_model(self, model_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/reward/models/{_seg(model_id)}")
        return result

    def train_reward_model(self, **spec: Any) -> dict[str, Any]:
        """Queue training (fields of `tacit.schemas.TrainRewardModel`: data, task, model, activate, ...)."""
        result: dict[str, Any] = self._request(
            "POST", "/v1/reward/models", content=_ENCODER.encode(spec), headers=_JSON
        )
        return result

    def activate_reward_model(self, model_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/v1/reward/models/{_seg(model_id)}/activate")
        return result

    # Imports

    def import_ifllm(self, data: str) -> dict[str, Any]:
        """Start importing an IFLLM folder readable by the server (a background job); answers the job."""
        result: dict[str, Any] = self._request(
            "POST", "/v1/imports/ifllm", content=_ENCODER.encode({"data": data}), headers=_JSON
        )
        return result

    def import_job(self, job_id: str) -> dict[str, Any]:
        """An import job and its progress (`status`, `stage`, `done`/`total`, `result`)."""
        result: dict[str, Any] = self._request("GET", f"/v1/imports/{_seg(job_id)}")
        return result

    # Alignment jobs

    def create_alignment_job(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Enqueue a job (a `tacit.schemas.align` spec with its `kind`: sft, dpo or rdpo); answers the job."""
        result: dict[str, Any] = self._request(
            "POST", "/v1/alignment/jobs", content=_ENCODER.encode(spec), headers=_JSON
        )
        return result

    def alignment_job(self, job_id: str) -> dict[str, Any]:
        """A job's state, progress (stage, step, loss, margin, tokens/s, ETA) and, when done, its result."""
        result: dict[str, Any] = self._request("GET", f"/v1/alignment/jobs/{_seg(job_id)}")
        return result

    def alignment_jobs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        page: dict[str, Any] = self._request("GET", "/v1/alignment/jobs", params=params)
        return list(page["items"])

    def cancel_alignment_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/v1/alignment/jobs/{_seg(job_id)}/cancel")
        return result

    def alignment_pairs(self, **selection: Any) -> dict[str, Any]:
        """The pairs (and their summary) a job with this data selection would train on."""
        result: dict[str, Any] = self._request(
            "POST", "/v1/alignment/pairs:preview", content=_ENCODER.encode(selection), headers=_JSON
        )
        return result

    def alignment_events(self, job_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """The job's event log as it happens (server-sent events); ends when the job does.

        The gateway ends a quiet stream after a while: it is resumed from the last event seen. A stream the gateway
        ends because the job's worker is gone ends this iterator too (the job stays as it is; see its status).
        """
        seen = after
        while True:
            idle = False
            with self._http.stream(
                "GET", f"/v1/alignment/jobs/{_seg(job_id)}/events", params={"after": seen}, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise TacitError.from_response(response)
                for line in response.iter_lines():
                    if line.startswith("id:") and line[3:].strip().isdigit():
                        seen = int(line[3:].strip())
                    elif line.startswith("data:"):
                        event = json.loads(line[5:].strip())
                        yield event
                        if event.get("kind") in _JOB_ENDS:
                            return
                    elif line.startswith(": no event for"):
                        idle = True
            if not idle:
                return

    # Health

    def healthz(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/healthz")
        return result

    def readyz(self) -> dict[str, Any]:
        """Readiness of the gateway and its dependencies; a 503 raises TacitError whose `body` has the report."""
        result: dict[str, Any] = self._request("GET", "/readyz")
        return result
