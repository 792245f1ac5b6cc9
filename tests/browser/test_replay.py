"""The replay page in Chromium against the real stack: trajectories drawn over the answer text, a time slider and
play/pause that show them up to the chosen time with a fading tail, pointer and gaze shown or hidden apart, and the
per-character dwell heatmap; on a simulated session and on a real IFLLM one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tacit.ifllm.reader import Dataset
from tacit.ifllm.sessions import task_sessions
from tacit.schemas import Session
from tacit.simulate import simulate_session
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# Every drawn point (line vertices and the "now" dots) inside the text it is drawn over, per answer.
OUTSIDE_TEXT = """() => {
  let outside = 0, points = 0;
  for (const wrap of document.querySelectorAll('#answers .answer-wrap')) {
    const text = wrap.querySelector('p');
    const w = text.offsetWidth + 1, h = text.offsetHeight + 1;
    const xy = [];
    for (const line of wrap.querySelectorAll('svg polyline')) {
      for (const pair of line.getAttribute('points').split(' ')) xy.push(pair.split(',').map(Number));
    }
    for (const dot of wrap.querySelectorAll('svg circle')) xy.push([+dot.getAttribute('cx'), +dot.getAttribute('cy')]);
    for (const [x, y] of xy) { points++; if (!(x >= 0 && x <= w && y >= 0 && y <= h)) outside++; }
  }
  return {outside, points};
}"""


def _post(stack: Stack, session: Session) -> None:
    response = httpx.post(
        f"{stack.gateway.url}/v1/sessions",
        content=msgspec.json.encode(session),
        headers=stack.headers("ingest"),
        timeout=30,
    )
    assert response.status_code in (200, 202), response.text


def _open(stack: Stack, browser: Any, session_id: str) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{stack.gateway.url}/sessions/{session_id}/replay#token={stack.keys['read']}")
    page.wait_for_selector("body[data-done='1']", timeout=15_000)
    return context, page, errors


def _state(page: Any) -> dict[str, int]:
    data = page.evaluate("() => ({...document.body.dataset})")
    return {
        "time": int(data["time"]),
        "mouse": int(data["drawnMouse"]),
        "gaze": int(data["drawnGaze"]),
        "mouse_elements": page.locator("#answers svg .trail-mouse > *").count(),
        "gaze_elements": page.locator("#answers svg .trail-gaze > *").count(),
    }


def _scrub(page: Any, ms: int) -> None:
    page.eval_on_selector(
        "#scrub", "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', {bubbles: true})); }", ms
    )


def test_scrubbing_and_toggles_change_what_is_drawn(stack: Stack, browser: Any, artifacts: Path) -> None:
    session = simulate_session(seed=41, samples=1200, session_id="replay-sim", user_id="replay-user")
    _post(stack, session)
    context, page, errors = _open(stack, browser, "replay-sim")
    try:
        end = int(page.get_attribute("#scrub", "max") or 0)
        assert end > 10_000  # the simulated reading lasts well over ten seconds
        full = _state(page)
        assert full["time"] == end  # it opens on the whole session
        assert full["mouse"] > 100
        assert full["gaze"] > 100
        assert page.evaluate(OUTSIDE_TEXT)["outside"] == 0  # drawn over the text, nowhere else
        assert page.locator("#answers p.answer-text .heat").count() > 0  # the dwell heatmap is kept

        page.focus("#scrub")
        page.keyboard.press("Home")  # a person dragging the slider to the start
        start = _state(page)
        assert start["time"] == 0
        assert start["mouse"] <= 2  # at most the first sample of each answer (a dot, no line yet)
        assert start["gaze"] <= 2
        assert page.locator("#answers svg polyline").count() == 0

        _scrub(page, end // 2)
        middle = _state(page)
        assert abs(middle["time"] - end // 2) <= 100  # the slider moves in 0.1 s steps
        assert 0 < middle["mouse"] < full["mouse"]
        assert 0 < middle["gaze"] < full["gaze"]
        assert page.locator("#answers p.answer-text .heat").count() > 0  # dwell so far

        page.uncheck("#show-history")  # only the fading tail and the dot are left
        tail = page.eval_on_selector_all(
            "#answers svg .trail-mouse polyline.tail", "lines => lines.map(l => +l.getAttribute('stroke-opacity'))"
        )
        assert tail
        assert min(tail) < 0.5 < max(tail)  # it fades with age
        assert page.locator("#answers svg polyline.history").count() == 0
        assert page.locator("#answers svg circle.head-mouse").count() >= 1
        page.screenshot(path=str(artifacts / "replay-scrubbed.png"), full_page=True)

        before = _state(page)
        page.uncheck("#show-gaze")
        without_gaze = _state(page)
        assert (without_gaze["gaze"], without_gaze["gaze_elements"]) == (0, 0)
        assert (without_gaze["mouse"], without_gaze["mouse_elements"]) == (before["mouse"], before["mouse_elements"])
        assert set(page.eval_on_selector_all("#answers p.answer-text", "ps => ps.map(p => p.dataset.heat)")) == {
            "mouse"
        }  # the heatmap follows the toggles too
        page.uncheck("#show-mouse")
        assert page.locator("#answers svg polyline").count() == 0
        page.check("#show-gaze")
        assert _state(page)["gaze"] == before["gaze"]
        page.check("#show-mouse")

        page.keyboard.press("Home")
        page.click("#play")
        page.wait_for_function("() => Number(document.body.dataset.time) > 1000", timeout=5_000)
        page.click("#play")  # pause
        paused = _state(page)["time"]
        page.wait_for_timeout(400)
        assert _state(page)["time"] == paused
        assert page.evaluate("() => document.body.dataset.playing") == "0"
        assert errors == []
    finally:
        context.close()


def test_a_real_ifllm_session_is_drawn_on_its_text(
    stack: Stack, browser: Any, artifacts: Path, ifllm_dir: Path
) -> None:
    dataset = Dataset(ifllm_dir)

    def sampled(s: Session) -> bool:
        streams = [r.mouse for r in s.responses] + [r.gaze for r in s.responses]
        return all(st is not None and len(st.t_page_ms) > 200 for st in streams)

    session = next(
        s
        for key, folder in dataset.task_dirs()
        for s in task_sessions(dataset, key, folder)
        if s.mode == "pairwise" and sampled(s)
    )
    _post(stack, session)
    context, page, errors = _open(stack, browser, session.session_id)
    try:
        full = _state(page)
        assert full["mouse"] > 0
        assert full["gaze"] > 0
        drawn = page.evaluate(OUTSIDE_TEXT)
        assert drawn["points"] > 0
        assert drawn["outside"] == 0  # IFLLM's own box pixels would not be: its layout was another page's
        page.screenshot(path=str(artifacts / "replay-ifllm-whole.png"), full_page=True)
        end = int(page.get_attribute("#scrub", "max") or 0)
        page.uncheck("#show-history")
        _scrub(page, end // 3)
        third = _state(page)
        assert 0 < third["mouse"] + third["gaze"] < full["mouse"] + full["gaze"]
        page.screenshot(path=str(artifacts / "replay-ifllm-scrubbed.png"), full_page=True)
        assert errors == []
    finally:
        context.close()


def test_the_replay_says_when_the_score_abstained(stack: Stack, browser: Any) -> None:
    _post(stack, simulate_session(seed=43, samples=300, session_id="replay-abstained", user_id="replay-user"))
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()

    def as_gated_model_answers(route: Any) -> None:  # the stack's test model has no gate (see test_demo_layout)
        response = route.fetch()
        body = response.json()
        body["record"]["score"].update(abstained=True, abstain_reason="quality_below_gate", quality=0.18)
        route.fulfill(response=response, json=body)

    try:
        page.route("**/v1/collector/sessions/*", as_gated_model_answers)
        page.goto(f"{stack.gateway.url}/sessions/replay-abstained/replay#token={stack.keys['read']}")
        page.wait_for_selector("body[data-done='1']", timeout=15_000)
        assert page.inner_text("#score") == "No prediction: the model abstained on this session."
        why = page.inner_text("#abstain-why")
        assert "data quality (0.18) is below the gate" in why
        assert "It would have leaned to" in why
    finally:
        context.close()
