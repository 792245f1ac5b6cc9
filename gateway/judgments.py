"""Judgment routes: judge_svc does the work; the gateway is the one public API (judging is not idempotent: no retry)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery

from gateway import examples
from gateway.access import scoped
from gateway.state import GatewayState
from tacit.schemas.judge import (
    BatchAccepted,
    BatchJob,
    BatchJobList,
    BatchRequest,
    JudgeReloaded,
    JudgeRequest,
    Verdict,
)
from tacit.schemas.problem import RequestError

logger = logging.getLogger(__name__)
JSON = "application/json"


def _passed_on(response: httpx.Response, media_type: str = JSON) -> Response[bytes]:
    """judge_svc's answer as the gateway's: judge_svc speaks the same Problem bodies, so nothing is re-encoded."""
    return Response(response.content, status_code=response.status_code, media_type=media_type)


@post(
    "/v1/judgments",
    status_code=200,
    summary="Judge one pair of answers (synchronous)",
    **scoped("train", Verdict, body=JudgeRequest, example=examples.judge_request),
)
async def post_judgment(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    response = await state.judge.request("POST", "/v1/judgments", content=await request.body(), retry=False)
    return _passed_on(response)


@post(
    "/v1/judgments:batch",
    status_code=202,
    summary="Judge many pairs (a job with progress)",
    **scoped("train", BatchAccepted, (202,), body=BatchRequest, example=examples.judge_batch),
)
async def post_judgments(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    response = await state.judge.request("POST", "/v1/judgments:batch", content=await request.body(), retry=False)
    return _passed_on(response)


@get(
    ["/v1/judgments/{job_id:str}", "/v1/judgments/jobs/{job_id:str}"],
    summary="A judgment job: progress, verdicts, evaluation",
    **scoped("read", BatchJob),
)
async def get_judgments(state: GatewayState, job_id: FromPath[str]) -> Response[bytes]:
    response = await state.judge.request("GET", f"/v1/judgments/jobs/{quote(job_id, safe='')}")
    return _passed_on(response)


@get(
    "/v1/judgments/jobs", summary="Judgment batch jobs, newest first, without verdicts", **scoped("read", BatchJobList)
)
async def list_judgments(
    state: GatewayState, alignment_job_id: FromQuery[str | None] = None, limit: FromQuery[int] = 50
) -> Response[bytes]:
    """`alignment_job_id` keeps the evaluation batches of one alignment job; `limit` 1 to 500."""
    if not 1 <= limit <= 500:
        raise RequestError(422, "invalid", "limit", "limit must be between 1 and 500")
    params: dict[str, Any] = {"limit": limit}
    if alignment_job_id:
        params["alignment_job_id"] = alignment_job_id
    response = await state.judge.request("GET", "/v1/judgments/jobs", params=params)
    return _passed_on(response)


@get(
    "/v1/judgments/jobs/{job_id:str}/plot.png",
    summary="An evaluation batch's plot (win / tie / loss and score difference)",
    **scoped("read", bytes, media_type="image/png"),
)
async def judgment_plot(state: GatewayState, job_id: FromPath[str]) -> Response[bytes]:
    response = await state.judge.request("GET", f"/v1/judgments/jobs/{quote(job_id, safe='')}/plot.png")
    media = "image/png" if response.status_code == 200 else JSON
    return _passed_on(response, media)


@post(
    "/v1/admin/judge/reload",
    status_code=200,
    summary="judge_svc re-reads its settings (TACIT_JUDGE_SETTINGS_FILE): a new LLM endpoint without a restart",
    **scoped("admin", JudgeReloaded),
)
async def reload_judge(state: GatewayState) -> Response[bytes]:
    response = await state.judge.request("POST", "/admin/reload", retry=False)
    return _passed_on(response)


def judgment_routes() -> list[Any]:
    return [post_judgment, post_judgments, list_judgments, get_judgments, judgment_plot, reload_judge]
