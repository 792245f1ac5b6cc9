"""A judge behind any OpenAI-compatible `/v1/chat/completions` (OpenAI, vLLM, Ollama, llama.cpp, TGI).

At most `concurrency` requests are in flight; 429 (honouring Retry-After), 5xx, timeouts and connection
errors are retried with exponential backoff and jitter; a reply the parser rejects is retried too, then
recorded as a failure. A connection that cannot be made (nothing listens at the endpoint, its name does not
resolve) fails at once, naming the endpoint and the cause: a server that is not there will not be within the
seconds a retry waits. Tokens are summed from `usage` over every attempt (they were all paid for).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from judge_svc.backends import BackendResult, Parser
from judge_svc.prompts import ParseError
from judge_svc.settings import redact_url
from tacit.schemas.judge import Sampling

__all__ = ["OpenAICompatBackend"]


def _chat_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date: rare from these servers, fall back to backoff
        return None


def _cause(err: Exception) -> str:
    """The exception's type and its innermost message (`ConnectError: [Errno 111] Connection refused`)."""
    inner: BaseException = err
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    message = str(inner) or str(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


class OpenAICompatBackend:
    """Judge through an OpenAI-compatible chat-completions endpoint."""

    name = "openai_compat"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        *,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        retries: int = 3,
        sampling: Sampling | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.model = model
        self.sampling = sampling or Sampling()
        self.url = _chat_url(base_url)
        self.endpoint = redact_url(self.url)
        """The URL said in errors (no credentials)."""
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout_s, headers=headers, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def probe(self, timeout_s: float = 2.0) -> str | None:
        """None when the endpoint answers HTTP at all (any status: it is there), else why it cannot be reached."""
        models = self.url.removesuffix("/chat/completions") + "/models"
        try:
            await self._client.get(models, timeout=timeout_s)
        except httpx.TimeoutException as err:
            return f"timeout: no answer from {self.endpoint} within {timeout_s:g} s ({type(err).__name__})"
        except httpx.TransportError as err:
            return f"unreachable: cannot connect to the judge LLM at {self.endpoint}: {_cause(err)}"
        return None

    def _backoff(self, attempt: int) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return delay * (0.5 + random.random() / 2)  # jitter spreads out clients retrying together

    async def judge(self, messages: Sequence[dict[str, str]], parse: Parser) -> BackendResult:
        """Ask the judge, retrying transient failures and malformed replies up to `retries` times."""
        body = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "max_tokens": self.sampling.max_tokens,
        }
        tokens_in = tokens_out = 0
        raw, error = "", "no attempt made"
        for attempt in range(self.retries + 1):
            delay: float | None = None
            try:
                async with self._semaphore:
                    response = await self._client.post(self.url, json=body)
            except httpx.ConnectError as err:
                error = f"unreachable: cannot connect to the judge LLM at {self.endpoint}: {_cause(err)}"
                return BackendResult(None, raw, attempt + 1, tokens_in, tokens_out, error)
            except httpx.TimeoutException as err:
                error = f"timeout: no answer from {self.endpoint} within {self.timeout_s:g} s ({type(err).__name__})"
            except httpx.TransportError as err:
                error = f"transport: {self.endpoint}: {_cause(err)}"
            else:
                if response.status_code == 429:
                    error, delay = "http_429", _retry_after(response)
                elif response.status_code >= 500:
                    error = f"http_{response.status_code}"
                elif response.status_code != 200:
                    # 4xx other than 429: the request itself is wrong, asking again will not help
                    return BackendResult(
                        None, response.text[:2000], attempt + 1, tokens_in, tokens_out, f"http_{response.status_code}"
                    )
                else:
                    try:
                        payload = response.json()
                        usage = payload.get("usage") or {}
                        tokens_in += int(usage.get("prompt_tokens") or 0)
                        tokens_out += int(usage.get("completion_tokens") or 0)
                        raw = payload["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        error, raw = "malformed response body", response.text[:2000]
                    else:
                        parsed = parse(raw)
                        if not isinstance(parsed, ParseError):
                            return BackendResult(parsed, raw, attempt + 1, tokens_in, tokens_out)
                        error = f"unparsable reply: {parsed.detail}"
            if attempt < self.retries:
                await self._sleep(min(self.max_backoff_s, delay) if delay is not None else self._backoff(attempt))
        return BackendResult(None, raw, self.retries + 1, tokens_in, tokens_out, error)
