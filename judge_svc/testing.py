"""`FakeOpenAIServer`: a loopback HTTP server speaking OpenAI's chat-completions protocol, for tests.

It is a real server (`http.server` in a thread), so clients are exercised end to end: status codes,
headers, JSON bodies, `usage`, slow replies that trip timeouts. Replies are scripted with `push`
(first in, first out); when the script is empty `responder(request_body)` answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from judge_svc.prompts import format_judgment
from tacit.schemas.judge import CRITERIA

__all__ = ["FakeOpenAIServer", "Reply", "judgment_text", "prefer_longer", "shown_answers"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status, a message content (or a raw body), headers and a delay."""

    status: int = 200
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes | None = None
    """Sent verbatim instead of a chat-completion body."""
    usage: tuple[int, int] = (100, 20)

    @classmethod
    def ok(cls, content: str, **kwargs: Any) -> Reply:
        return cls(content=content, **kwargs)

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1) -> Reply:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        return cls(status=429, body=b'{"error": {"message": "rate limited"}}', headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(status=status, body=b'{"error": {"message": "boom"}}')

    @classmethod
    def slow(cls, delay_s: float, content: str = "") -> Reply:
        return cls(content=content, delay_s=delay_s)

    @classmethod
    def malformed(cls, content: str = "I think the first one is better.") -> Reply:
        return cls(content=content)


def judgment_text(score_a: int, score_b: int, winner: str | None = None, criteria: tuple[str, ...] = CRITERIA) -> str:
    """A well-formed reply: every criterion scored like the overall score; winner from the scores by default."""
    if winner is None:
        winner = "tie" if score_a == score_b else ("A" if score_a > score_b else "B")
    return format_judgment(
        dict.fromkeys(criteria, score_a), dict.fromkeys(criteria, score_b), score_a, score_b, winner, "Scripted."
    )


def shown_answers(body: dict[str, Any]) -> tuple[str, str]:
    """The two answers a chat-completions request shows the judge, as (first = A, second = B)."""
    user = body["messages"][-1]["content"]
    first = user.split("[Response A]\n", 1)[1].split("\n\n[Response B]\n", 1)
    return first[0], first[1].rsplit("\n\nCompare the two responses", 1)[0]


def prefer_longer(body: dict[str, Any]) -> Reply:
    """A responder that scores the answer with more words 8 and the other 4 (equal lengths: a 6/6 tie)."""
    a, b = (len(text.split()) for text in shown_answers(body))
    return Reply.ok(judgment_text(6, 6) if a == b else (judgment_text(8, 4) if a > b else judgment_text(4, 8)))


def _default(_: dict[str, Any]) -> Reply:
    return Reply.ok(judgment_text(8, 4))


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1; use as a context manager."""

    def __init__(self, responder: Callable[[dict[str, Any]], Reply] = _default) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            if self._script:
                return self._script.popleft()
        return self.responder(body)

    def start(self) -> FakeOpenAIServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}', {})
                    return
                reply = fake._next(body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = reply.body
                if payload is None:
                    payload = json.dumps(
                        {
                            "id": f"chatcmpl-{len(fake.requests)}",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": body.get("model", "fake"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": reply.content},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {
                                "prompt_tokens": reply.usage[0],
                                "completion_tokens": reply.usage[1],
                                "total_tokens": sum(reply.usage),
                            },
                        }
                    ).encode()
                self._send(reply.status, payload, reply.headers)

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-reply is expected here, not an error

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
