"""Pooled HTTP clients for feature_svc and reward_svc: timeouts, retries with backoff, clear failures.

Only idempotent calls are retried (vectorising and scoring are pure functions of the body; GETs). When a
dependency stays unreachable the call raises `DependencyDownError`, which the gateway turns into "stored, score
pending" for ingestion and into 503 + Retry-After where nothing can be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec

from tacit.schemas import FeatureVector, FeatureVectors, Score, ScoreResponse, Session, UserLabel
from tacit.schemas.gateway import Problem
from tacit.schemas.problem import RequestError
from tacit.schemas.reward import PopulationPrior, PopulationRequest

__all__ = ["DependencyDownError", "DependencyError", "FeatureClient", "JudgeClient", "RewardClient"]


class DependencyDownError(RequestError):
    """A service did not answer (connection refused, timeout, 5xx) after the retries: 503 with Retry-After."""

    def __init__(self, service: str, detail: str, retry_after: int = 5) -> None:
        message = f"{service} unavailable: {detail}"
        super().__init__(503, "unavailable", "$", message, {"Retry-After": str(retry_after)})
        self.service, self.reason, self.retry_after = service, detail, retry_after


class DependencyError(RequestError):
    """A service refused the request (4xx): its status and problem are passed on to the caller."""

    def __init__(self, service: str, status: int, problem: Problem) -> None:
        message = f"{service}: {problem.code} {problem.field}: {problem.detail}"
        super().__init__(status, problem.code, problem.field, problem.detail, message=message)
        self.service = service


_PROBLEM = msgspec.json.Decoder(Problem)


class _Service:
    name = "service"

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            transport=transport,
        )
        self.retries = retries
        self.down_until = 0.0

    async def close(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """Send, retrying idempotent calls with jittered exponential backoff; raise on failure."""
        if time.monotonic() < self.down_until:  # circuit open: fail fast instead of piling up timeouts
            raise DependencyDownError(self.name, "recently unreachable", retry_after=2)
        attempts = self.retries + 1 if retry else 1
        last = ""
        for attempt in range(attempts):
            try:
                response = await self.client.request(
                    method, path, content=content, params=params, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as err:
                last = type(err).__name__
            else:
                if response.status_code < 500:
                    if response.status_code >= 400:
                        try:
                            problem = _PROBLEM.decode(response.content)
                        except msgspec.DecodeError:
                            problem = Problem(code="error", field="$", detail=response.text[:200])
                        raise DependencyError(self.name, response.status_code, problem)
                    return response
                last = f"HTTP {response.status_code}"
                with contextlib.suppress(msgspec.DecodeError):  # the service said why: pass its words on
                    last = _PROBLEM.decode(response.content).detail
            if attempt + 1 < attempts:
                await asyncio.sleep(0.05 * 2**attempt * (1 + random.random()))
        self.down_until = time.monotonic() + 1.0
        raise DependencyDownError(self.name, last)


class FeatureClient(_Service):
    name = "feature_svc"
    _VECTOR = msgspec.json.Decoder(FeatureVector)

    async def vectorize(
        self, session: Session, feature_set: str, previous: Session | None = None, *, raw: bytes | None = None
    ) -> FeatureVector:
        """The session's vector. `raw`: the JSON the session was decoded (and validated) from, sent as it is.

        Wrapping the client's bytes saves re-encoding the session; they must decode to `session`.
        """
        if raw is None:
            body: dict[str, Any] = {"session": session, "feature_set": feature_set}
            if previous is not None:
                body["previous"] = previous
            content = msgspec.json.encode(body)
        else:
            parts = [b'{"session":', raw, b',"feature_set":', msgspec.json.encode(feature_set)]
            if previous is not None:
                parts += [b',"previous":', msgspec.json.encode(previous)]
            parts.append(b"}")
            content = b"".join(parts)
        response = await self.request("POST", "/v1/features", content=content)
        return self._VECTOR.decode(response.content)

    _VECTORS = msgspec.json.Decoder(FeatureVectors)

    async def vectorize_batch(self, sessions: Sequence[Session], feature_set: str) -> FeatureVectors:
        """Vectors of many sessions of one mode, in order (pointwise `prev_*` from the batch's previous turns)."""
        body = msgspec.json.encode({"sessions": list(sessions), "feature_set": feature_set})
        response = await self.request("POST", "/v1/features:batch", content=body)
        return self._VECTORS.decode(response.content)

    async def healthy(self) -> bool:
        try:
            return (await self.client.get("/healthz", timeout=1.0)).status_code == 200
        except httpx.HTTPError:
            return False


class RewardClient(_Service):
    name = "reward_svc"
    _SCORES = msgspec.json.Decoder(ScoreResponse)
    _POPULATION = msgspec.json.Decoder(PopulationPrior)

    async def score(
        self,
        vectors: list[FeatureVector],
        mode: str,
        user_history: Sequence[UserLabel] = (),
        population: PopulationPrior | None = None,
    ) -> list[Score]:
        """Scores of `vectors` (one user's when `user_history` is given: their earlier labels adapt the scores).

        `population`: the active model's prior re-estimated on the people it scores (`population_prior`).
        """
        request: dict[str, Any] = {"vectors": vectors, "mode": mode}
        if user_history:
            request["user_history"] = list(user_history)
        if population is not None:
            request["population"] = population
        body = msgspec.json.encode(request)
        response = await self.request("POST", "/v1/score", content=body)
        return self._SCORES.decode(response.content).scores

    async def population_prior(self, model_id: str, labels: PopulationRequest) -> PopulationPrior:
        """The model's adaptation prior re-estimated on these labels (reward_svc computes; nothing is stored)."""
        response = await self.request(
            "POST", f"/v1/reward/models/{model_id}/population-prior", content=msgspec.json.encode(labels)
        )
        return self._POPULATION.decode(response.content)

    async def _active(self, mode: str) -> dict[str, Any] | None:
        response = await self.request("GET", "/v1/reward/models", params={"task": mode})
        for model in msgspec.json.decode(response.content):
            if model.get("active"):
                return dict(model)
        return None

    async def active_feature_set(self, mode: str) -> str | None:
        """Feature set of the active model of `mode` (None when there is none)."""
        model = await self._active(mode)
        return None if model is None else str(model["feature_set"])

    async def active_model_id(self, mode: str) -> str | None:
        """Id of the active model of `mode` (None when there is none)."""
        model = await self._active(mode)
        return None if model is None else str(model["id"])

    async def healthy(self) -> bool:
        try:
            return (await self.client.get("/healthz", timeout=1.0)).status_code == 200
        except httpx.HTTPError:
            return False


class JudgeClient(_Service):
    name = "judge_svc"

    async def readiness(self) -> dict[str, Any]:
        """judge_svc's `/readyz` (its LLM: `ok`, `not_configured` or `unreachable`), or `down` when it does not
        answer at all."""
        try:
            response = await self.client.get("/readyz", timeout=3.0)
            body = msgspec.json.decode(response.content)
        except (httpx.HTTPError, msgspec.DecodeError) as err:
            return {"status": "down", "detail": f"judge_svc does not answer at {self.client.base_url}: {err!r}"}
        llm = body.get("llm") if isinstance(body, dict) else None
        if response.status_code not in (200, 503) or not isinstance(llm, dict):
            return {"status": "down", "detail": f"judge_svc /readyz answered HTTP {response.status_code}"}
        return dict(llm)

    async def healthy(self) -> bool:
        try:
            return (await self.client.get("/healthz", timeout=1.0)).status_code == 200
        except httpx.HTTPError:
            return False
