"""The bad-input table: every malformed or contradictory session gets a 4xx naming the field, and nothing is stored.

The gateway app runs in-process (its feature and reward services are down, so an accepted session is stored
and answered `pending`) on SQLite and on PostgreSQL; rows of every table are counted before and after each
request. Text that is odd but well-formed (markup, SQL, unusual Unicode, a NUL character) is *accepted*: it is
what a reader saw, it is stored exactly as sent, returned only inside JSON (`application/json`, never rendered
by the gateway) and never reaches SQL as code (every query binds its values). Those cases check that.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import MetaData, create_engine, func, select

from gateway.app import create_app
from gateway.keys import create_key
from gateway.settings import GatewaySettings
from tacit.db import Store
from tacit.db.testing import postgres_schema
from tacit.simulate import simulate_session
from tests.reliability.out import write_fragment

Body = dict[str, Any]


def _base(user: str) -> Body:
    session = simulate_session(seed=5, samples=300, user_id=user, session_id=f"{user}-1")
    return msgspec.to_builtins(session)


def _edit(change: Callable[[Body], Any]) -> Callable[[Body], bytes]:
    def make(body: Body) -> bytes:
        out = change(body)
        return out if isinstance(out, bytes) else msgspec.json.encode(body)

    return make


def _mouse(body: Body, i: int = 0) -> Body:
    return dict(body["responses"][i]["mouse"])


def _set_stream(column: str, index: int, value: Any, modality: str = "mouse") -> Callable[[Body], bytes]:
    def change(body: Body) -> None:
        body["responses"][0][modality][column][index] = value

    return _edit(change)


def _raw_number(column: str, literal: bytes) -> Callable[[Body], bytes]:
    """The body with the first value of a mouse column replaced by a raw JSON token (NaN, 1e999...)."""

    def make(body: Body) -> bytes:
        body["responses"][0]["mouse"][column][0] = 123456.789
        return msgspec.json.encode(body).replace(b"123456.789", literal, 1)

    return make


def _drop(name: str) -> Callable[[Body], bytes]:
    return _edit(lambda body: body.pop(name))


def _put(name: str, value: Any) -> Callable[[Body], bytes]:
    return _edit(lambda body: body.__setitem__(name, value))


def _lone_surrogate(body: Body) -> bytes:
    body["query"] = "SURROGATE"
    return msgspec.json.encode(body).replace(b"SURROGATE", b"\\ud800", 1)


def _huge_query(body: Body) -> None:
    body["query"] = "q" * (10 * 1024 * 1024)


def _million_samples(body: Body) -> None:
    mouse = body["responses"][0]["mouse"]
    n = 1_000_000
    mouse.update(x=[1.0] * n, y=[1.0] * n, char_index=[-1] * n, window=[""] * n, t_page_ms=[float(i) for i in range(n)])
    for name in ("t_epoch_ms", "head_in_box"):
        mouse[name] = None


def _pointwise_with_two(body: Body) -> None:
    body["mode"] = "pointwise"
    body["feedback"] = None


def _unequal(body: Body) -> None:
    body["responses"][0]["mouse"]["y"].pop()


def _three(body: Body) -> None:
    body["responses"].append(body["responses"][0])


def _stream_field(name: str, value: Any) -> Callable[[Body], bytes]:
    return _edit(lambda body: body["responses"][0]["mouse"].__setitem__(name, value))


SQL = "'); DROP TABLE sessions; -- \" OR 1=1; SELECT * FROM api_keys"

# (name, body maker, status, field)
REFUSED: list[tuple[str, Callable[[Body], bytes], int, str]] = [
    ("truncated JSON", lambda body: msgspec.json.encode(body)[:-40], 400, "$"),
    ("not JSON", lambda body: b"session please", 400, "$"),
    ("empty body", lambda body: b"", 400, "$"),
    ("invalid UTF-8", lambda body: msgspec.json.encode(body).replace(b'"query":"', b'"query":"\xff\xfe', 1), 400, "$"),
    ("trailing garbage", lambda body: msgspec.json.encode(body) + b"}{", 400, "$"),
    ("array instead of object", lambda body: b"[]", 400, "$"),
    ("NaN literal", _raw_number("x", b"NaN"), 400, "$"),
    ("Infinity literal", _raw_number("x", b"Infinity"), 400, "$"),
    ("number overflowing to infinity", _raw_number("x", b"1e999"), 422, "responses[0].mouse.x[0]"),
    ("lone UTF-16 surrogate escape", _lone_surrogate, 400, "$"),
    ("missing session_id", _drop("session_id"), 422, "session_id"),
    ("missing responses", _drop("responses"), 422, "responses"),
    ("missing mode", _drop("mode"), 422, "mode"),
    ("unknown top-level field", _put("colour", "blue"), 422, "colour"),
    ("unknown stream field", _stream_field("pressure", [1.0]), 422, "responses[0].mouse.pressure"),
    ("session_id is a number", _put("session_id", 42), 422, "session_id"),
    ("session_id is null", _put("session_id", None), 422, "session_id"),
    ("responses is an object", _put("responses", {"text": "x"}), 422, "responses"),
    ("consent.gaze is a string", _put("consent", {"mouse": True, "gaze": "yes", "camera": True}), 422, "consent.gaze"),
    ("x holds a string", _set_stream("x", 0, "left"), 422, "responses[0].mouse.x[0]"),
    ("negative time", _set_stream("t_page_ms", 0, -5.0), 422, "responses[0].mouse.t_page_ms[0]"),
    ("unsorted times", _set_stream("t_page_ms", 5, 0.0), 422, "responses[0].mouse.t_page_ms[5]"),
    ("character index past the text", _set_stream("char_index", 0, 10**6), 422, "responses[0].mouse.char_index[0]"),
    ("character index below -1", _set_stream("char_index", 0, -7), 422, "responses[0].mouse.char_index[0]"),
    ("character index beyond int64", _set_stream("char_index", 0, 2**64 - 1), 422, "responses[0].mouse.char_index[0]"),
    ("head flag 7", _set_stream("head_in_box", 0, 7, "gaze"), 422, "responses[0].gaze.head_in_box[0]"),
    ("columns of unequal length", _edit(_unequal), 422, "responses[0].mouse.y"),
    ("reload marker past the end", _stream_field("reload_at", [10**5]), 422, "responses[0].mouse.reload_at"),
    ("window longer than 64", _set_stream("window", 0, "w" * 65), 422, "responses[0].mouse.window[0]"),
    ("a 10 MB body (10 MiB query)", _edit(_huge_query), 422, "query"),
    ("a million samples", _edit(_million_samples), 422, "responses[0].mouse.x"),
    ("mode contradicts the responses", _edit(_pointwise_with_two), 422, "responses"),
    ("pairwise with a previous response", _put("previous_response", "before"), 422, "previous_response"),
    ("three responses", _edit(_three), 422, "responses"),
    ("unknown mode", _put("mode", "triple"), 422, "mode"),
    (
        "gaze without gaze consent",
        _put("consent", {"mouse": True, "gaze": False, "camera": True}),
        422,
        "responses[0].gaze",
    ),
    (
        "mouse without mouse consent",
        _put("consent", {"mouse": False, "gaze": True, "camera": True}),
        422,
        "responses[0].mouse",
    ),
    (
        "head position without camera consent",
        _put("consent", {"mouse": True, "gaze": True, "camera": False}),
        422,
        "responses[0].mouse.head_in_box",
    ),
    (
        "pointwise preference on a pairwise session",
        _put("feedback", {"preference": "current"}),
        422,
        "feedback.preference",
    ),
    ("likert 9", _put("feedback", {"likert": [9]}), 422, "feedback.likert[0]"),
    ("more likert entries than responses", _put("feedback", {"likert": [1, 2, 3]}), 422, "feedback.likert"),
    ("calibration 150 %", _put("calibration_accuracy", 150), 422, "calibration_accuracy"),
    ("turn -1", _put("turn", -1), 422, "turn"),
    ("empty session id", _put("session_id", ""), 422, "session_id"),
    ("user id of 500 characters", _put("user_id", "u" * 500), 422, "user_id"),
    ("NUL character in the user id", _put("user_id", "a\x00b"), 422, "user_id"),
    ("SQL as the user id", _put("user_id", SQL[:128]), 422, "user_id"),
    ("a path as the user id", _put("user_id", "../../x"), 422, "user_id"),
    ("'..' as the user id", _put("user_id", ".."), 422, "user_id"),
    ("a slash in the session id", _put("session_id", "a/b"), 422, "session_id"),
]

MARKUP = '<script>alert("x")</script><img src=x onerror=alert(1)> &amp; </textarea>'
UNICODE = "\u202eevil\u202c \u200d👩🏽‍🔬 e\u0301 ｆｕｌｌ \U0001f600 \ufeff 𝔘𝔫𝔦 \u0000 end"


def _text(value: str, where: str) -> Callable[[Body], bytes]:
    def change(body: Body) -> None:
        if where == "query":
            body["query"] = value
        elif where == "user_id":
            body["user_id"] = value[:128]
        else:  # the displayed text: character indices stay inside it
            text = body["responses"][0]["text"]
            body["responses"][0]["text"] = value + text

    return _edit(change)


# (name, body maker, decision)
ACCEPTED: list[tuple[str, Callable[[Body], bytes], str]] = [
    ("markup in a response", _text(MARKUP, "response"), "stored verbatim; answered only as JSON, never rendered"),
    ("markup in the query", _text(MARKUP, "query"), "stored verbatim; answered only as JSON, never rendered"),
    ("SQL in the query", _text(SQL, "query"), "stored verbatim; bound as a value, never run"),
    ("odd Unicode in a response", _text(UNICODE, "response"), "stored exactly (bidi controls, ZWJ, NUL, astral)"),
]


class RowCounter:
    """Rows of every table of a database, the tables reflected once."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.meta = MetaData()
        self.meta.reflect(self.engine)

    def __call__(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in self.meta.sorted_tables
            }

    def tables(self) -> set[str]:
        """The tables that exist now (reflected afresh)."""
        meta = MetaData()
        meta.reflect(self.engine)
        return set(meta.tables)


@pytest.fixture(params=["sqlite", "postgres"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, RowCounter, TestClient[Any]]]:
    """(flavour, database URL, client with an ingest+read key) of a gateway whose scoring services are down."""
    with contextlib.ExitStack() as cleanup:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'gateway.db'}"
        else:
            url = cleanup.enter_context(postgres_schema(request.getfixturevalue("postgres_url")))
        store = Store(url)
        store.migrate()
        token = create_key(store, ["ingest", "read"], "bad-input")[0]
        store.close()
        settings = GatewaySettings(
            database_url=url,
            feature_url="http://127.0.0.1:9",
            reward_url="http://127.0.0.1:9",
            retries=0,
            timeout_s=1,
            rescore_interval_s=3600,
        )
        counter = RowCounter(url)
        cleanup.callback(counter.engine.dispose)
        with TestClient(create_app(settings)) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            yield request.param, counter, client


def test_bad_input_is_refused_with_its_field_and_nothing_is_stored(
    gateway: tuple[str, RowCounter, TestClient[Any]],
) -> None:
    flavour, counts, client = gateway
    started = time.perf_counter()
    assert len(REFUSED) >= 30
    rows, wrong = [], []
    for name, make, status, field in REFUSED:
        user = f"bad-{uuid.uuid4().hex[:8]}"
        before = counts()
        response = client.post("/v1/sessions", content=make(_base(user)), headers={"content-type": "application/json"})
        after = counts()
        added = sum(after.values()) - sum(before.values())
        problem = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        rows.append(
            {
                "name": name,
                "status": response.status_code,
                "code": problem.get("code"),
                "field": problem.get("field"),
                "detail": str(problem.get("detail", ""))[:200],
                "stored_after": added,
            }
        )
        if (response.status_code, problem.get("field")) != (status, field) or not problem.get("detail") or added:
            wrong.append((name, response.status_code, problem, added, (status, field)))
    seconds = round(time.perf_counter() - started, 1)
    write_fragment("bad_input", {"module": __name__, f"cases_{flavour}": rows, f"seconds_{flavour}": seconds})
    assert not wrong, "\n".join(map(str, wrong))


def test_odd_but_valid_text_is_stored_exactly_and_never_executed(
    gateway: tuple[str, RowCounter, TestClient[Any]],
) -> None:
    flavour, counts, client = gateway
    tables = counts.tables()
    rows, wrong = [], []
    for name, make, decision in ACCEPTED:
        user = f"odd-{uuid.uuid4().hex[:8]}"
        sent = msgspec.json.decode(make(_base(user)))
        before = counts()
        response = client.post("/v1/sessions", content=msgspec.json.encode(sent))
        after = counts()
        stored = client.get(f"/v1/sessions/{sent['session_id']}", params={"include": "payload"})
        back = stored.json().get("session") or {}
        verbatim = (
            back.get("query") == sent["query"]
            and back.get("user_id") == sent["user_id"]
            and [r["text"] for r in back.get("responses", [])] == [r["text"] for r in sent["responses"]]
        )
        rows.append({"name": name, "status": response.status_code, "stored_verbatim": verbatim, "decision": decision})
        ok = (
            response.status_code in (200, 202)
            and stored.status_code == 200
            and stored.headers["content-type"].startswith("application/json")
            and verbatim
            and counts.tables() == tables  # nothing dropped or created
            and after["sessions"] == before["sessions"] + 1
            and after["api_keys"] == before["api_keys"]
        )
        if not ok:
            wrong.append((name, response.status_code, response.text[:300], stored.status_code, verbatim))
    write_fragment("bad_input", {f"accepted_{flavour}": rows})
    assert not wrong, "\n".join(map(str, wrong))
