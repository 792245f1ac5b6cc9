"""The console's read routes on real SQLite and PostgreSQL: session filters and keyset pages, one model's histogram
and reliability bins, strict query parameters, the import listing, and the page served with its CSP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.keys import create_key
from gateway.settings import GatewaySettings
from tacit.db import Store
from tacit.simulate import simulate_session

T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
#: (session, user, hours after T0, label side or None, p of model A, A abstained, p of model B or None)
ROWS: list[tuple[str, str, int, str | None, float, bool, float | None]] = [
    ("s00", "ann", 0, "right", 0.91, False, 0.80),  # A agrees (label 1)
    ("s01", "ann", 1, "left", 0.85, False, 0.30),  # A disagrees (label 0)
    ("s02", "ann", 2, "left", 0.12, False, 0.20),  # A agrees
    ("s03", "ann", 3, None, 0.55, True, 0.60),  # no label, A abstained
    ("s04", "bob", 24, "right", 0.45, True, None),  # A disagrees, abstained; B never scored it
    ("s05", "bob", 25, "right", 0.75, False, 0.70),  # A agrees
    ("s06", "bob", 26, None, 0.05, False, 0.10),  # no label
    ("s07", "bob", 48, "left", 0.99, False, 0.40),  # A disagrees; p = 0.99 in the last bin
]


def _fill(st: Store) -> None:
    for sid, user, hours, side, p_a, abstained_a, p_b in ROWS:
        session = simulate_session(
            seed=int(sid[1:]),
            samples=20,
            session_id=sid,
            user_id=user,
            prefer=side or "right",  # type: ignore[arg-type]
            feedback=side is not None,
        )
        st.sessions.put_session(session, received_at=T0 + dt.timedelta(hours=hours))
        if p_b is not None:  # B first, so the session's current score is A's
            st.scores.set_score(
                sid,
                p=p_b,
                preferred="right" if p_b >= 0.5 else "left",
                confidence=max(p_b, 1 - p_b),
                quality=None,
                abstained=False,
                model_id="model-b",
                model_demo=False,
            )
        st.scores.set_score(
            sid,
            p=p_a,
            preferred="right" if p_a >= 0.5 else "left",
            confidence=max(p_a, 1 - p_a),
            quality=None,
            abstained=abstained_a,
            model_id="model-a",
            model_demo=False,
        )
    # one session never scored (pending)
    st.sessions.put_session(
        simulate_session(seed=99, samples=20, session_id="s08", user_id="cat", prefer="left"),
        received_at=T0 + dt.timedelta(hours=49),
    )


@pytest.fixture
def client(store: Store) -> Iterator[tuple[TestClient[Any], dict[str, str]]]:
    _fill(store)
    keys = {scope: create_key(store, [scope])[0] for scope in ("read", "ingest", "admin")}
    settings = GatewaySettings(database_url=store.url, retries=0, timeout_s=1, rescore_interval_s=3600)
    refuse = httpx.MockTransport(lambda request: httpx.Response(503))
    app = create_app(settings, store=store, feature_transport=refuse, reward_transport=refuse)
    with TestClient(app) as test_client:
        yield test_client, keys


def _get(client: tuple[TestClient[Any], dict[str, str]], path: str, scope: str = "read", **params: Any) -> Any:
    http, keys = client
    return http.get(path, params=params, headers={"Authorization": f"Bearer {keys[scope]}"})


def _ids(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [item["session_id"] for item in answer.json()["items"]]


def test_sessions_newest_first_with_the_current_score(client: Any) -> None:
    answer = _get(client, "/v1/console/sessions")
    assert _ids(answer) == ["s08", "s07", "s06", "s05", "s04", "s03", "s02", "s01", "s00"]
    items = {item["session_id"]: item for item in answer.json()["items"]}
    assert items["s08"]["score_status"] == "pending"
    assert items["s08"]["p"] is None
    assert items["s08"]["agreement"] is None
    assert items["s00"]["model_id"] == "model-a"  # the current score is the last one set
    assert items["s00"]["label"] == 1
    assert items["s00"]["received_at"] == "2026-11-01T08:00:00Z"  # ISO 8601 in UTC, as the rest of the API
    assert items["s01"]["label"] == 0
    assert items["s03"]["agreement"] == "no_label"
    assert items["s04"]["abstained"] is True
    assert answer.json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"user_id": "ann"}, ["s03", "s02", "s01", "s00"]),
        ({"model_id": "model-b"}, ["s07", "s06", "s05", "s03", "s02", "s01", "s00"]),
        ({"abstained": "true"}, ["s04", "s03"]),
        ({"abstained": "false", "user_id": "bob"}, ["s07", "s06", "s05"]),
        ({"agreement": "agree"}, ["s05", "s02", "s00"]),
        ({"agreement": "disagree"}, ["s07", "s04", "s01"]),
        ({"agreement": "no_label"}, ["s06", "s03"]),  # s08 has a label but no score
        # model B's own scores: s01 (p 0.30 vs label 0) agrees under B, s07 (0.40 vs 0) too
        ({"model_id": "model-b", "agreement": "agree"}, ["s07", "s05", "s02", "s01", "s00"]),
        ({"model_id": "model-b", "agreement": "disagree"}, []),
        ({"since": "2026-11-02"}, ["s08", "s07", "s06", "s05", "s04"]),
        ({"until": "2026-11-01"}, ["s03", "s02", "s01", "s00"]),  # a bare date covers its whole day
        ({"since": "2026-11-02T01:00:00Z", "until": "2026-11-03T00:00:00+00:00"}, ["s06", "s05", "s04"]),
        ({"since": "2026-11-01T09:00:00"}, ["s08", "s07", "s06", "s05", "s04", "s03", "s02", "s01"]),  # naive: UTC
        ({"mode": "pointwise"}, []),
        ({"user_id": ""}, ["s08", "s07", "s06", "s05", "s04", "s03", "s02", "s01", "s00"]),  # empty: not given
    ],
)
def test_each_filter_keeps_the_matching_sessions(client: Any, params: dict[str, str], expected: list[str]) -> None:
    assert _ids(_get(client, "/v1/console/sessions", **params)) == expected


def test_a_model_filter_shows_that_models_score(client: Any) -> None:
    items = _get(client, "/v1/console/sessions", model_id="model-b").json()["items"]
    s01 = next(item for item in items if item["session_id"] == "s01")
    assert (s01["model_id"], s01["p"], s01["preferred"], s01["agreement"]) == ("model-b", 0.30, "left", "agree")
    assert s01["score_status"] == "scored"


def test_keyset_pages_cover_every_session_once(client: Any) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = _get(client, "/v1/console/sessions", **params).json()
        seen += [item["session_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert seen == ["s08", "s07", "s06", "s05", "s04", "s03", "s02", "s01", "s00"]
    # a filter keeps applying across pages
    first = _get(client, "/v1/console/sessions", user_id="bob", limit="2").json()
    rest = _get(client, "/v1/console/sessions", user_id="bob", limit="2", cursor=first["next_cursor"]).json()
    assert [i["session_id"] for i in first["items"] + rest["items"]] == ["s07", "s06", "s05", "s04"]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"payload": "true"}, "payload", "unknown query parameter 'payload'"),
        ({"abstained": "yes"}, "abstained", "true, false"),
        ({"agreement": "maybe"}, "agreement", "agree, disagree, no_label"),
        ({"mode": "listwise"}, "mode", "pairwise, pointwise"),
        ({"since": "yesterday"}, "since", "ISO 8601"),
        ({"until": "2026-13-01"}, "until", "ISO 8601"),
        ({"since": "2026-11-03", "until": "2026-11-02"}, "until", "after since"),
        ({"limit": "0"}, "limit", "from 1 to 200"),
        ({"limit": "abc"}, "limit", "from 1 to 200"),
        ({"cursor": "not-a-cursor"}, "cursor", "not a cursor"),
        ({"user_id": "x" * 129}, "user_id", "at most 128"),
        ({"limit": "²"}, "limit", "from 1 to 200"),
        ({"since": "0001-01-01T00:00:00+14:00"}, "since", "ISO 8601"),
    ],
)
def test_bad_parameters_are_refused_naming_them(client: Any, params: dict[str, str], field: str, says: str) -> None:
    answer = _get(client, "/v1/console/sessions", **params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert says in answer.json()["detail"]


def test_a_repeated_parameter_is_refused(client: Any) -> None:
    http, keys = client
    answer = http.get(
        "/v1/console/sessions?user_id=ann&user_id=bob", headers={"Authorization": f"Bearer {keys['read']}"}
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "user_id"


def test_the_routes_need_a_read_key(client: Any) -> None:
    http, _ = client
    assert http.get("/v1/console/sessions").status_code == 401
    assert _get(client, "/v1/console/sessions", scope="ingest").status_code == 403
    assert _get(client, "/v1/console/sessions", scope="admin").status_code == 200
    assert _get(client, "/v1/console/models/model-a/distribution", scope="ingest").status_code == 403
    assert _get(client, "/v1/console/imports", scope="ingest").status_code == 403


def test_distribution_counts_histogram_and_reliability(client: Any) -> None:
    answer = _get(client, "/v1/console/models/model-a/distribution", bins="4")
    assert answer.status_code == 200, answer.text
    d = answer.json()
    assert (d["scored"], d["abstained"], d["labelled"], d["no_label"]) == (8, 2, 6, 2)
    assert (d["agree"], d["disagree"]) == (3, 3)
    assert d["accuracy"] == pytest.approx(0.5)
    # not abstained and labelled: s00 (agree), s01 (disagree), s02 (agree), s05 (agree), s07 (disagree)
    assert d["accuracy_kept"] == pytest.approx(3 / 5)
    labels = {"s00": 1, "s01": 0, "s02": 0, "s04": 1, "s05": 1, "s07": 0}
    p_a = {r[0]: r[4] for r in ROWS}
    assert d["brier"] == pytest.approx(sum((p_a[s] - y) ** 2 for s, y in labels.items()) / 6)
    # p: 0.05 0.12 | 0.45 | 0.55 | 0.75 0.85 0.91 0.99 (the last bin includes 1)
    assert [b["count"] for b in d["histogram"]] == [2, 1, 1, 4]
    assert [(b["lo"], b["hi"]) for b in d["histogram"]] == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    rel = d["reliability"]
    assert [b["labelled"] for b in rel] == [1, 1, 0, 4]  # s02 | s04 | - | s00 s01 s05 s07
    assert rel[2]["mean_p"] is None
    assert rel[2]["observed"] is None
    assert rel[0]["mean_p"] == pytest.approx(0.12)
    assert rel[0]["observed"] == pytest.approx(0.0)
    assert rel[3]["mean_p"] == pytest.approx((0.91 + 0.85 + 0.75 + 0.99) / 4)
    assert rel[3]["observed"] == pytest.approx(0.5)  # labels 1, 0, 1, 0


def test_distribution_on_the_sessions_both_models_scored(client: Any) -> None:
    d = _get(client, "/v1/console/models/model-a/distribution", common_with="model-b").json()
    assert d["common_with"] == "model-b"
    assert d["scored"] == 7  # s04 was not scored by B; s08 by neither
    assert sum(b["count"] for b in d["histogram"]) == 7
    assert len(d["histogram"]) == 10
    unknown = _get(client, "/v1/console/models/nobody/distribution").json()
    assert (unknown["scored"], unknown["accuracy"], unknown["brier"]) == (0, None, None)
    assert all(b["count"] == 0 for b in unknown["histogram"])


def test_distribution_parameters_are_checked(client: Any) -> None:
    answer = _get(client, "/v1/console/models/model-a/distribution", bins="1")
    assert (answer.status_code, answer.json()["field"]) == (422, "bins")
    answer = _get(client, "/v1/console/models/model-a/distribution", other="model-b")
    assert (answer.status_code, answer.json()["field"]) == (422, "other")


def test_import_jobs_are_listed_newest_first(client: Any, store: Store) -> None:
    first = store.jobs.create_job("import_ifllm", {"data": "/a"})
    store.jobs.create_job("rescore", {"model_id": "model-a"})
    second = store.jobs.create_job("import_ifllm", {"data": "/b"})
    store.jobs.update_job(second.id, status="running", done=3, total=10, stage="task 3")
    answer = _get(client, "/v1/console/imports")
    assert answer.status_code == 200, answer.text
    jobs = answer.json()
    assert [j["id"] for j in jobs] == [second.id, first.id]
    assert (jobs[0]["status"], jobs[0]["done"], jobs[0]["total"]) == ("running", 3, 10)
    assert _get(client, "/v1/console/imports", limit="1").json()[0]["id"] == second.id
    assert _get(client, "/v1/console/imports", kind="rescore").status_code == 422


def test_the_page_and_its_assets_are_served_locally_with_a_strict_csp(client: Any) -> None:
    http, _ = client
    page = http.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "<script>" not in page.text  # no inline script: only <script src=...>
    assert "http://" not in page.text
    assert "https://" not in page.text
    for name, media in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = http.get(f"/console/static/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(media)
        assert "https://" not in asset.text
    assert http.get("/console/static/..%2Fapp.py").status_code == 404
    assert http.get("/console/static/replay.js").status_code == 404


def test_the_schema_documents_the_query_parameters(client: Any) -> None:
    http, _ = client
    paths = http.get("/schema/openapi.json").json()["paths"]
    listed = {p["name"]: p for p in paths["/v1/console/sessions"]["get"]["parameters"] if p["in"] == "query"}
    assert set(listed) == {"user_id", "model_id", "mode", "abstained", "agreement", "since", "until", "cursor", "limit"}
    assert "no_label" in listed["agreement"]["description"]
    assert not any(p["required"] for p in listed.values())
    distribution = paths["/v1/console/models/{model_id}/distribution"]["get"]
    assert {p["name"] for p in distribution["parameters"]} == {"model_id", "bins", "common_with"}
    answer = distribution["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer  # a real schema (ScoreDistribution), not a JSON string
    assert "/console" not in paths  # the page is not an API operation
