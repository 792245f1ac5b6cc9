"""The /demo page end to end in Chromium against the real stack: read the left answer, scroll it, submit;
the stored session's features show the reading and the page shows a score; screenshots of demo and replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def _read_lines(page: Any, box: dict[str, float], seconds: float) -> None:
    """Sweep the pointer along the text lines of the visible part of a box, like a reader following it."""
    line_height = 35.2  # the answer text's 16 px font at line-height 2.2 (collector.css)
    x0, x1 = box["x"] + 24, box["x"] + box["width"] - 60
    y = box["y"] + 14 + line_height / 2
    spent = 0.0
    while spent < seconds:
        page.mouse.move(x0, y)
        page.mouse.move(x1, y, steps=12)  # ~12 positions across the line
        page.wait_for_timeout(150)
        spent += 0.15 + 12 * 0.016
        y += line_height
        if y > box["y"] + box["height"] - 20:
            y = box["y"] + 14 + line_height / 2


def _feature(features: dict[str, Any], name: str) -> float:
    return float(features["values"][features["names"].index(name)])


def test_demo_records_reading_and_shows_the_predicted_preference(stack: Stack, browser: Any, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        page.goto(f"{stack.gateway.url}/demo?sample=0")
        page.click("#start")
        page.wait_for_selector("body[data-recording='1']")
        box = page.locator("#box-left").bounding_box()
        assert box is not None

        _read_lines(page, box, seconds=3.5)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, 260)  # scroll the left answer to read its second half
        page.wait_for_timeout(300)
        assert page.eval_on_selector("#box-left", "el => el.scrollTop") > 100
        _read_lines(page, box, seconds=3.0)

        page.click("#prefer-left")
        page.click("#submit")
        page.wait_for_selector("body[data-done='1']", timeout=30_000)
        score = page.inner_text("#score")
        assert "Predicted from your reading" in score
        assert "P(right) = " in score
        assert page.locator("#heatmaps .heat").count() > 0  # the reading heatmap is drawn
        page.screenshot(path=str(artifacts / "demo.png"), full_page=True)
        session_id = page.evaluate("() => document.body.dataset.sessionId")

        # The stored session, read back through the gateway with an operator's read key.
        record = httpx.get(
            f"{stack.gateway.url}/v1/collector/sessions/{session_id}", headers=stack.headers("read"), timeout=10
        ).json()
        assert record["record"]["score"]["status"] == "scored"
        assert 0 <= record["record"]["score"]["p_right"] <= 1
        assert record["record"]["session"]["feedback"]["preference"] == "left"
        features = record["features"]
        left_time = _feature(features, "response_A_mouse_focused_engagement_time")
        assert left_time > 4000  # about 6 s of reading, in ms
        assert left_time > _feature(features, "response_B_mouse_focused_engagement_time")
        assert _feature(features, "mouse_onscreen_points_left") > _feature(features, "mouse_onscreen_points_right")
        assert _feature(features, "response_A_mouse_reading_completion_ratio") > _feature(
            features, "response_B_mouse_reading_completion_ratio"
        )
        # Box coordinates include the scroll: the pointer reached text below the box's first screenful.
        left = record["record"]["session"]["responses"][0]["mouse"]
        assert max(left["y"]) > box["height"]

        page.click("#replay-link")
        page.wait_for_selector("body[data-done='1']", timeout=15_000)
        assert page.url.split("#")[0].endswith(f"/sessions/{session_id}/replay")
        assert page.locator("#answers .side").nth(0).locator("polyline.path-mouse").count() > 0
        assert "Predicted" in page.inner_text("#score")
        page.screenshot(path=str(artifacts / "replay.png"), full_page=True)
        assert errors == []
    finally:
        context.close()
    print(f"screenshots: {artifacts / 'demo.png'} {artifacts / 'replay.png'}")
