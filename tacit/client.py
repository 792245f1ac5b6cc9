"""A typed Python client for the Tacit gateway (used by the CLI and the end-to-end tests; see docs/client.md).

    with TacitClient("http://127.0.0.1:8100", api_key) as tacit:
        score = tacit.post_session(session)          # a SessionScore
        for stored in tacit.list_sessions(user_id="u1"):
            print(stored.session_id, stored.score.preferred)

Answers are decoded into the wire types of `tacit.schemas` (`SessionScore`, `SessionRecord`, `RewardModelInfo`,
`JobInfo`, `AlignmentJobInfo`, `Verdict`, `BatchJob`, ...) or, for the few answers that have no wire type, into the
small Structs defined here (`Health`, `Readiness`). Every non-2xx answer raises `TacitError`
carrying the problem body's `code`, `field` and `detail`; a gateway that cannot be reached raises `TacitError` with
status 0 and code `unreachable`; an answer that is not the documented shape raises it with code `bad_response`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from tacit.schemas.align import AlignmentEvent, AlignmentJobInfo, AlignmentJobPage, PairsPreview
from tacit.schemas.gateway import (
    Erasure,
    JobInfo,
    ModelComparison,
    SessionPage,
    SessionRecord,
    SessionScore,
)
from tacit.schemas.jobs import FINISHED
from tacit.schemas.judge import BatchAccepted, BatchJob, JudgeRequest, Verdict
from tacit.schemas.problem import RequestError
from tacit.schemas.reward import RewardModelInfo, TrainRewardModel
from tacit.schemas.session import Session

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BATCH",
    "Health",
    "PairsPreview",
    "Readiness",
    "TacitClient",
    "TacitError",
]

#: Seconds to connect, and to wait for an answer (scoring a long session can take a moment).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

#: Most sessions the gateway takes in one batch request.
MAX_BATCH = 500

_ENCODER = msgspec.json.Encoder()
_JSON = {"Content-Type": "application/json"}
T = TypeVar("T")


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /healthz`: the gateway process answers."""

    status: str


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /readyz` when every dependency answers (a 503 raises `TacitError` whose `body` is the same report)."""

    ready: bool
    checks: dict[str, Any]
    """Each dependency (database, redis, feature_svc, reward_svc, ...) and whether it answered."""


class _Results(msgspec.Struct, frozen=True, kw_only=True):
    results: list[SessionScore]


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


def _body(value: msgspec.Struct | Mapping[str, Any] | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    return _ENCODER.encode(value)


def _seg(value: str) -> str:
    """One path segment: ids are free text, so '/', '?' and '#' must not change the route."""
    return quote(value, safe="")


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

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as err:
            raise TacitError(0, "unreachable", "$", f"{type(err).__name__}: {err}") from err
        if response.is_error:
            raise TacitError.from_response(response)
        return response

    def _call(self, type_: type[T], method: str, path: str, body: Any = None, **kw: Any) -> T:
        """One request, its answer decoded as `type_` (a wrong shape is `bad_response`, naming where)."""
        if body is not None:
            kw.update(content=_body(body), headers=_JSON)
        response = self._send(method, path, **kw)
        return _decode(response, type_)

    # Sessions

    def post_session(self, session: Session | Mapping[str, Any] | bytes) -> SessionScore:
        """Ingest one session (idempotent on its `session_id`); answers its score (`status` pending while a
        service is down: it is stored and scored later)."""
        return self._call(SessionScore, "POST", "/v1/sessions", session)

    def post_sessions(
        self, sessions: Iterable[Session | Mapping[str, Any]], *, batch_size: int = MAX_BATCH
    ) -> list[SessionScore]:
        """Ingest many sessions, `batch_size` per request (at most 500); answers their scores in the order given."""
        items = list(sessions)
        results: list[SessionScore] = []
        for start in range(0, len(items), batch_size):
            page = self._call(_Results, "POST", "/v1/sessions:batch", {"sessions": items[start : start + batch_size]})
            results.extend(page.results)
        return results

    def get_session(self, session_id: str, *, payload: bool = False, scores: bool = False) -> SessionRecord:
        """A stored session's record; `payload=True` adds the trajectories as stored (`session`), `scores=True`
        every model's score of it (`scores`)."""
        include = ",".join(name for name, wanted in (("payload", payload), ("scores", scores)) if wanted)
        params = {"include": include} if include else None
        return self._call(SessionRecord, "GET", f"/v1/sessions/{_seg(session_id)}", params=params)

    def list_sessions(
        self, user_id: str | None = None, since: dt.datetime | str | None = None, limit: int = 50
    ) -> Iterator[SessionRecord]:
        """Every matching session, oldest first, fetched `limit` per page by following `next_cursor`."""
        params: dict[str, str | int] = {"limit": limit}
        if user_id is not None:
            params["user_id"] = user_id
        if since is not None:
            params["since"] = _when(since)
        while True:
            page = self._call(SessionPage, "GET", "/v1/sessions", params=params)
            yield from page.items
            if not page.next_cursor:
                return
            params["cursor"] = page.next_cursor

    def delete_user(self, user_id: str) -> Erasure:
        """Erase everything stored for `user_id` (admin key); answers what was erased and what is left."""
        return self._call(Erasure, "DELETE", f"/v1/users/{_seg(user_id)}")

    # Reward models

    def reward_models(self, task: str | None = None) -> list[RewardModelInfo]:
        """The registry, optionally only the models of one task (`pairwise` or `pointwise`)."""
        params = {"task": task} if task else None
        return self._call(list[RewardModelInfo], "GET", "/v1/reward/models", params=params)

    def reward_model(self, model_id: str) -> RewardModelInfo:
        """One model: status, training progress, stored evaluation, training-set summary."""
        return self._call(RewardModelInfo, "GET", f"/v1/reward/models/{_seg(model_id)}")

    def train_reward_model(self, spec: TrainRewardModel | None = None, /, **fields: Any) -> RewardModelInfo:
        """Queue training: a `TrainRewardModel`, or its fields as keywords (data or source, task, model, activate,
        ...); answers the queued registry entry (poll `reward_model` for its progress)."""
        body: Any = spec if spec is not None else fields
        return self._call(RewardModelInfo, "POST", "/v1/reward/models", body)

    def activate_reward_model(self, model_id: str) -> RewardModelInfo:
        """Make a trained model the active one of its task (its stored sessions are rescored in the background)."""
        return self._call(RewardModelInfo, "POST", f"/v1/reward/models/{_seg(model_id)}/activate")

    def cancel_reward_model(self, model_id: str) -> RewardModelInfo:
        """Cancel a queued or running training."""
        return self._call(RewardModelInfo, "POST", f"/v1/reward/models/{_seg(model_id)}/cancel")

    def delete_reward_model(self, model_id: str) -> RewardModelInfo:
        """Delete a model that is neither active nor training; answers the entry as it was."""
        return self._call(RewardModelInfo, "DELETE", f"/v1/reward/models/{_seg(model_id)}")

    def compare_reward_models(self, model_a: str, model_b: str) -> ModelComparison:
        """Two models on the stored sessions both have scored: agreement, and accuracy against explicit labels."""
        return self._call(ModelComparison, "GET", f"/v1/reward/models/{_seg(model_a)}/compare/{_seg(model_b)}")

    def rescore(self, model_id: str, **selection: Any) -> JobInfo:
        """Score stored sessions with a model as a background job (`user_ids`, `since`, `until`,
        `include_demo_sessions`: `tacit.schemas.gateway.RescoreRequest`); answers the job."""
        body = {k: _when(v) if isinstance(v, dt.datetime) else v for k, v in selection.items()}
        return self._call(JobInfo, "POST", f"/v1/reward/models/{_seg(model_id)}/rescore", body)

    def rescore_job(self, job_id: str) -> JobInfo:
        return self._call(JobInfo, "GET", f"/v1/reward/rescores/{_seg(job_id)}")

    def rescore_jobs(self) -> list[JobInfo]:
        """The last 100 rescoring jobs, newest first."""
        return self._call(list[JobInfo], "GET", "/v1/reward/rescores")

    def cancel_rescore(self, job_id: str) -> JobInfo:
        return self._call(JobInfo, "POST", f"/v1/reward/rescores/{_seg(job_id)}/cancel")

    # Imports

    def import_ifllm(self, data: str) -> JobInfo:
        """Start importing an IFLLM folder readable by the server (a background job); answers the job."""
        return self._call(JobInfo, "POST", "/v1/imports/ifllm", {"data": data})

    def import_job(self, job_id: str) -> JobInfo:
        """An import job and its progress (`status`, `stage`, `done`/`total`, `result`)."""
        return self._call(JobInfo, "GET", f"/v1/imports/{_seg(job_id)}")

    def cancel_import(self, job_id: str) -> JobInfo:
        """Cancel an import (a running one stops after its current task folder; admin key)."""
        return self._call(JobInfo, "POST", f"/v1/imports/{_seg(job_id)}/cancel")

    # Alignment jobs

    def create_alignment_job(self, spec: msgspec.Struct | Mapping[str, Any]) -> AlignmentJobInfo:
        """Enqueue a job (a `tacit.schemas.align` spec, `SftJob | DpoJob | RobustDpoJob`, or its JSON with its
        `kind`: sft, dpo or rdpo); answers the job with its pair snapshot's summary."""
        return self._call(AlignmentJobInfo, "POST", "/v1/alignment/jobs", spec)

    def alignment_job(self, job_id: str) -> AlignmentJobInfo:
        """A job's state, progress (stage, step, loss, margin, tokens/s, ETA) and, when done, its result."""
        return self._call(AlignmentJobInfo, "GET", f"/v1/alignment/jobs/{_seg(job_id)}")

    def alignment_jobs(self, status: str | None = None, limit: int = 50) -> list[AlignmentJobInfo]:
        """Jobs, newest first, optionally in one status."""
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        return self._call(AlignmentJobPage, "GET", "/v1/alignment/jobs", params=params).items

    def cancel_alignment_job(self, job_id: str) -> AlignmentJobInfo:
        """Ask a job to stop (a running one stops after its current optimisation step)."""
        return self._call(AlignmentJobInfo, "POST", f"/v1/alignment/jobs/{_seg(job_id)}/cancel")

    def alignment_pairs(self, **selection: Any) -> PairsPreview:
        """The pairs (and their summary) a job with this data selection (`tacit.schemas.align.PairSelection`'s
        fields) would train on."""
        return self._call(PairsPreview, "POST", "/v1/alignment/pairs:preview", selection)

    def alignment_evaluation(self, job_id: str) -> BatchJob:
        """The judge's comparison of a finished job's SFT and aligned answers (a judgment job)."""
        return self._call(BatchJob, "GET", f"/v1/alignment/jobs/{_seg(job_id)}/evaluation")

    def alignment_events(self, job_id: str, after: int = 0) -> Iterator[AlignmentEvent]:
        """The job's event log as it happens (server-sent events); ends when the job does.

        The gateway ends a quiet stream after a while: it is resumed from the last event seen. A stream the gateway
        ends because the job's worker is gone ends this iterator too (the job stays as it is; see its status).
        """
        seen = after
        while True:
            idle = False
            try:
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
                            event = _decode_bytes(line[5:].strip().encode(), AlignmentEvent)
                            yield event
                            if event.kind in FINISHED:
                                return
                        elif line.startswith(": no event for"):
                            idle = True
            except httpx.TransportError as err:
                raise TacitError(0, "unreachable", "$", f"{type(err).__name__}: {err}") from err
            if not idle:
                return

    # Judgments

    def judge(self, prompt: str, answer_a: str, answer_b: str, **options: Any) -> Verdict:
        """Judge answer A against answer B for one prompt (synchronous; both orders by default). `options` are
        `JudgeRequest`'s other fields (reference, both_orders, winner_rule, rubric, use_cache). A judge that failed
        still answers a `Verdict`, with `winner` None and `error` saying why."""
        request = JudgeRequest(prompt=prompt, answer_a=answer_a, answer_b=answer_b, **options)
        return self._call(Verdict, "POST", "/v1/judgments", request)

    def judge_batch(
        self,
        items: Iterable[JudgeRequest | Mapping[str, Any]],
        *,
        evaluation: bool = False,
        alignment_job_id: str | None = None,
        label: str | None = None,
    ) -> BatchAccepted:
        """Judge up to 1000 pairs in a background job; answers its id (poll `judgment_job`, or
        `wait_for_judgment_job`). `evaluation=True` also summarises them, reading A as SFT and B as aligned."""
        body: dict[str, Any] = {"items": list(items), "evaluation": evaluation}
        if alignment_job_id is not None:
            body["alignment_job_id"] = alignment_job_id
        if label is not None:
            body["label"] = label
        return self._call(BatchAccepted, "POST", "/v1/judgments:batch", body)

    def judgment_job(self, job_id: str) -> BatchJob:
        """A judgment job: progress (done/total, failures, order consistency), and once done its verdicts and
        evaluation."""
        return self._call(BatchJob, "GET", f"/v1/judgments/jobs/{_seg(job_id)}")

    def wait_for_judgment_job(self, job_id: str, *, timeout: float = 600.0, poll_s: float = 0.5) -> BatchJob:
        """Poll a judgment job until it ends (succeeded, failed or cancelled); TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.judgment_job(job_id)
            if job.status in FINISHED:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"judgment job {job_id} is still {job.status} ({job.done}/{job.total})")
            time.sleep(poll_s)

    # Health

    def healthz(self) -> Health:
        """Liveness (no key needed)."""
        return self._call(Health, "GET", "/healthz")

    def readyz(self) -> Readiness:
        """Readiness of the gateway and its dependencies; a 503 raises TacitError whose `body` has the report."""
        return self._call(Readiness, "GET", "/readyz")


def _decode(response: httpx.Response, type_: type[T]) -> T:
    return _decode_bytes(response.content, type_, status=response.status_code)


def _decode_bytes(content: bytes, type_: type[T], *, status: int = 200) -> T:
    try:
        return msgspec.json.decode(content, type=type_)
    except msgspec.ValidationError as err:
        # msgspec says "... - at `$.items[0].id`": the path is the field
        message = str(err)
        field = message.rsplit("at `", 1)[1].rstrip("`") if "at `" in message else "$"
        raise TacitError(status, "bad_response", field, f"the answer is not the documented shape: {message}") from err
    except msgspec.DecodeError as err:
        raise TacitError(status, "bad_response", "$", f"the answer is not JSON: {err}") from err
