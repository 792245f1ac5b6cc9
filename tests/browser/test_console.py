"""The console in Chromium against the real stack (gateway, feature_svc, reward_svc, judge_svc, a cpu worker):
sessions scored at ingest by the active demo model and by a second model trained from them and run over them by a
rescoring job. Log in with a read key, filter the sessions, open one (its scores per model and its replay), compare
the two models, follow the jobs; screenshots of each page in the artifacts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tacit.simulate import simulate_session
from tests.e2e.conftest import CpuWorker, Stack, cpu_worker  # noqa: F401 (the cpu worker fixture)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

USERS, PER_USER = 6, 6


def _wait(client: httpx.Client, path: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(path).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, f"{path} still {body['status']} after {timeout} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def scored(stack: Stack, cpu_worker: CpuWorker) -> dict[str, Any]:  # noqa: F811
    """36 labelled sessions of 6 users and 4 without a label, scored by the demo model and by a trained one."""
    prefix = f"con-{uuid.uuid4().hex[:6]}"
    users = [f"{prefix}-u{u}" for u in range(USERS)]
    sessions = [
        simulate_session(
            seed=500 + 10 * u + k,
            samples=150,
            user_id=user,
            session_id=f"{user}-s{k}",
            task_id=f"{user}-t{k // 2}",
            prefer="right" if (u + k) % 2 else "left",
        )
        for u, user in enumerate(users)
        for k in range(PER_USER)
    ]
    sessions += [
        simulate_session(seed=900 + k, samples=150, user_id=users[0], session_id=f"{users[0]}-x{k}", feedback=False)
        for k in range(4)
    ]
    with stack.client("admin") as client:
        answer = client.post("/v1/sessions:batch", content=msgspec.json.encode({"sessions": sessions}))
        assert answer.status_code == 200, answer.text
        assert {r["status"] for r in answer.json()["results"]} == {"scored"}
        demo_model = answer.json()["results"][0]["model_version"]
        trained = client.post(
            "/v1/reward/models",
            json={"source": {"kind": "sessions", "user_ids": users}, "seeds": 1, "model": "swap_lr"},
        )
        assert trained.status_code == 202, trained.text
        model = _wait(client, f"/v1/reward/models/{trained.json()['id']}")
        assert model["status"] == "succeeded", model["error"]
        rescore = client.post(f"/v1/reward/models/{model['id']}/rescore", json={"user_ids": users})
        assert rescore.status_code == 202, rescore.text
        job = _wait(client, f"/v1/reward/rescores/{rescore.json()['id']}")
        assert (job["status"], job["done"]) == ("succeeded", len(sessions)), job
        pair = {
            "prompt": "What is a tide?",
            "answer_a": "The sea rises.",
            "answer_b": "It rises and falls twice a day.",
        }
        judged = client.post("/v1/judgments:batch", json={"items": [pair, pair, pair]})
        assert judged.status_code == 202, judged.text
        judgment = _wait(client, f"/v1/judgments/{judged.json()['job_id']}", timeout=60)
        assert judgment["status"] == "succeeded", judgment
    return {
        "users": users,
        "demo_model": demo_model,
        "trained": model["id"],
        "rescore": job["id"],
        "judgment": judgment["job_id"],
    }


def _rows(page: Any) -> list[dict[str, str]]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#sessions tbody tr')).map(tr => {
          const c = Array.from(tr.cells).map(td => td.textContent.trim());
          return {id: c[1].replace(/ demo$/, ''), user: c[2], label: c[4], model: c[5], p: c[6], abstained: c[8],
                  agreement: c[9]};
        })"""
    )


def _loads(page: Any) -> int:
    return int(page.evaluate("() => document.body.dataset.loads || '0'"))


def _after(page: Any, action: Any) -> None:
    """Run `action` (a click, a navigation) and wait until the page has finished the load it starts."""
    before = _loads(page)
    action()
    page.wait_for_function(
        "n => +(document.body.dataset.loads || 0) > n && document.body.dataset.loading === '0'",
        arg=before,
        timeout=20_000,
    )


def test_console_login_filter_open_compare_and_jobs(
    stack: Stack, browser: Any, artifacts: Path, scored: dict[str, Any]
) -> None:
    users, trained, demo_model = scored["users"], scored["trained"], scored["demo_model"]
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(stack.gateway.url) else outside.append(r.url))
    try:
        # --- log in: a key without the read scope is refused with the reason, a read key opens the sessions
        page.goto(f"{stack.gateway.url}/console")
        page.wait_for_selector("#page-login:not([hidden])")
        page.fill("#login-key", stack.keys["ingest"])
        page.click("#login-submit")
        page.wait_for_selector("#error:not([hidden])")
        assert "lacks the read scope" in page.inner_text("#error")
        page.fill("#login-key", stack.keys["read"])
        _after(page, lambda: page.click("#login-submit"))
        assert page.is_visible("#page-sessions")
        assert page.evaluate("() => sessionStorage.getItem('tacit.console.key')") == stack.keys["read"]
        assert len(_rows(page)) > 0

        # --- filter: one user's sessions, then those the trained model got wrong against the explicit label
        page.fill("#filters input[name=user_id]", users[0])
        _after(page, lambda: page.click("#apply"))
        assert "user_id=" in page.evaluate("() => location.hash")
        rows = _rows(page)
        assert len(rows) == PER_USER + 4
        assert {r["user"] for r in rows} == {users[0]}
        assert sum(r["label"] == "none" for r in rows) == 4
        page.select_option("#filters select[name=model_id]", trained)
        page.select_option("#filters select[name=agreement]", "disagree")
        page.fill("#filters input[name=user_id]", "")
        _after(page, lambda: page.click("#apply"))
        wrong = [r for r in _rows(page) if r["user"] in users]
        api = httpx.get(
            f"{stack.gateway.url}/v1/console/sessions",
            params={"model_id": trained, "agreement": "disagree", "limit": 200},
            headers=stack.headers("read"),
        ).json()["items"]
        assert {r["id"] for r in wrong} == {i["session_id"] for i in api if i["user_id"] in users}
        assert all(r["model"] == trained and r["agreement"] == "disagrees" for r in _rows(page))
        # with the label filter cleared, the same model's agreeing and disagreeing sessions add up to the labelled
        page.select_option("#filters select[name=agreement]", "agree")
        _after(page, lambda: page.click("#apply"))
        assert "agreement=agree" in page.evaluate("() => location.hash")
        right = [r for r in _rows(page) if r["user"] in users]
        assert len(right) + len(wrong) == USERS * PER_USER
        page.screenshot(path=str(artifacts / "console-sessions.png"), full_page=True)

        # --- paging: 4 a page; next, next, previous walk the keyset pages of one user's 10 sessions
        _after(
            page, lambda: page.evaluate("u => { location.hash = '#/sessions?user_id=' + u + '&limit=4'; }", users[0])
        )
        seen = [r["id"] for r in _rows(page)]
        assert page.inner_text("#page-no") == "page 1"
        assert page.is_disabled("#prev-page")
        _after(page, lambda: page.click("#next-page"))
        assert page.inner_text("#page-no") == "page 2"
        second = [r["id"] for r in _rows(page)]
        seen += second
        _after(page, lambda: page.click("#next-page"))
        assert page.inner_text("#page-no") == "page 3"
        seen += [r["id"] for r in _rows(page)]
        assert page.is_disabled("#next-page")
        assert len(seen) == len(set(seen)) == PER_USER + 4
        _after(page, lambda: page.click("#prev-page"))
        assert page.inner_text("#page-no") == "page 2"
        assert [r["id"] for r in _rows(page)] == second
        _after(page, lambda: page.evaluate("u => { location.hash = '#/sessions?user_id=' + u; }", users[1]))
        assert {r["user"] for r in _rows(page)} == {users[1]}

        # --- open one session: metadata, the score of each model, and its replay
        target = f"{users[1]}-s3"
        _after(page, lambda: page.click(f"#sessions a[href='#/session/{target}']"))
        assert page.is_visible("#page-session")
        assert target in page.inner_text("#session-title")
        meta = page.inner_text("#session-meta")
        assert users[1] in meta
        assert "Explicit label" in meta
        models = page.eval_on_selector_all("#session-scores tbody tr", "trs => trs.map(tr => tr.dataset.modelId)")
        assert set(models) == {demo_model, trained}
        page.screenshot(path=str(artifacts / "console-session.png"), full_page=True)
        page.click("#replay-link")
        page.wait_for_selector("body[data-done='1']", timeout=15_000)  # the replay page read the tab's key
        assert f"/sessions/{target}/replay" in page.url
        page.go_back()
        page.wait_for_selector("#page-session:not([hidden])")
        page.wait_for_function("() => document.body.dataset.loading === '0'")

        # --- compare the demo model with the trained one
        _after(page, lambda: page.click("#nav a[data-page=compare]"))
        assert page.is_visible("#page-compare")
        page.select_option("#model-a", demo_model)
        page.select_option("#model-b", trained)
        _after(page, lambda: page.click("#compare"))
        assert page.is_visible("#comparison")
        distribution = httpx.get(
            f"{stack.gateway.url}/v1/console/models/{trained}/distribution",
            params={"common_with": demo_model},
            headers=stack.headers("read"),
        ).json()
        agree_cells = page.eval_on_selector(
            "#agreement tr[data-row=agree]", "tr => [tr.cells[1].textContent, tr.cells[2].textContent]"
        )
        assert int(agree_cells[1]) == distribution["agree"]
        assert distribution["scored"] >= USERS * PER_USER + 4
        bars = page.locator("#histogram rect.bar-a, #histogram rect.bar-b").count()
        assert bars == 2 * 10
        heights = page.eval_on_selector_all("#histogram rect.bar-b", "rs => rs.map(r => +r.getAttribute('height'))")
        assert sum(h > 0 for h in heights) == sum(b["count"] > 0 for b in distribution["histogram"])
        dots = page.locator("#reliability circle.dot-b").count()
        assert dots == sum(b["labelled"] > 0 for b in distribution["reliability"])
        assert page.locator("#reliability circle.dot-a").count() > 0
        assert page.locator("#reliability line.diagonal").count() == 1
        assert "scored by both" in page.inner_text("#agreement")
        page.screenshot(path=str(artifacts / "console-compare.png"), full_page=True)

        # --- jobs: the training and the rescoring, finished, with their progress
        _after(page, lambda: page.click("#nav a[data-page=jobs]"))
        assert page.is_visible("#jobs div[data-kind=judgments]")
        training = page.inner_text("#jobs div[data-kind=training]")
        assert trained in training
        assert "succeeded" in training
        rescoring = page.inner_text("#jobs div[data-kind=rescoring]")
        assert scored["rescore"] in rescoring
        assert f"{USERS * PER_USER + 4} / {USERS * PER_USER + 4}" in rescoring
        judgments = page.inner_text("#jobs div[data-kind=judgments]")
        assert scored["judgment"] in judgments
        assert "3 / 3" in judgments
        for kind in ("imports", "alignment", "judgments"):
            assert "Could not be read" not in page.inner_text(f"#jobs div[data-kind={kind}]"), kind
        page.screenshot(path=str(artifacts / "console-jobs.png"), full_page=True)

        # --- a key revoked (or mistyped) while the console is open: back to the login form, saying why
        page.evaluate("() => sessionStorage.setItem('tacit.console.key', 'tacit_notakey0000')")
        _after(page, lambda: page.click("#nav a[data-page=sessions]"))
        assert page.is_visible("#page-login")
        assert "log in again" in page.inner_text("#error")
        assert page.evaluate("() => sessionStorage.getItem('tacit.console.key')") is None

        # --- a link with the key in its fragment logs in, and the key leaves the address bar
        page.goto(f"{stack.gateway.url}/console#key={stack.keys['admin']}")
        page.wait_for_function("() => document.body.dataset.loads && document.body.dataset.loading === '0'")
        assert page.is_visible("#page-sessions")
        assert "key=" not in page.url
        assert len(_rows(page)) > 0

        # --- log out: the key leaves the tab
        page.click("#logout")
        page.wait_for_selector("#page-login:not([hidden])")
        assert page.evaluate("() => sessionStorage.getItem('tacit.console.key')") is None
        assert errors == []
        assert outside == []  # nothing loaded from anywhere but the gateway
    finally:
        context.close()
