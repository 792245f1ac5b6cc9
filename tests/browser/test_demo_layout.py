"""The /demo page's layout and its abstention message in Chromium against the real stack: from 1024 px up the two
answers sit side by side inside the first screen; a session the model abstains on says so, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def _start(stack: Stack, browser: Any, width: int, height: int) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{stack.gateway.url}/demo?sample=0")
    page.click("#start")
    page.wait_for_selector("body[data-recording='1']")
    return context, page, errors


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (1024, 768)])
def test_the_answers_sit_side_by_side_inside_the_first_screen(
    stack: Stack, browser: Any, artifacts: Path, width: int, height: int
) -> None:
    context, page, errors = _start(stack, browser, width, height)
    try:
        left = page.locator("#box-left").bounding_box()
        right = page.locator("#box-right").bounding_box()
        assert left is not None
        assert right is not None
        assert abs(left["y"] - right["y"]) < 1  # same top
        assert left["x"] + left["width"] <= right["x"]  # left one entirely left of the right one
        for box in (left, right):
            assert box["x"] >= 0
            assert box["y"] >= 0
            assert box["x"] + box["width"] <= width
            assert box["y"] + box["height"] <= height  # inside the first screen, no scrolling
            assert box["width"] >= 400  # still a readable column
        # Both answers' text is laid out in its box (the SDK maps points to characters of the <p>).
        for side in ("left", "right"):
            text_box = page.locator(f"#answer-{side}").bounding_box()
            assert text_box is not None
            assert text_box["width"] <= (left if side == "left" else right)["width"]
        page.screenshot(path=str(artifacts / f"demo-{width}x{height}.png"))
        assert errors == []
    finally:
        context.close()


def test_below_1024_px_the_answers_stack(stack: Stack, browser: Any) -> None:
    context, page, _ = _start(stack, browser, 900, 800)
    try:
        left = page.locator("#box-left").bounding_box()
        right = page.locator("#box-right").bounding_box()
        assert left is not None
        assert right is not None
        assert right["y"] >= left["y"] + left["height"]
    finally:
        context.close()


def _abstained_like_the_gated_demo_model(reason: str, quality: float | None) -> Any:
    """A route handler passing the gateway's real answer for the session through, with its score changed to what a
    model with an active quality gate answers (the stack's test model has no gate: it abstains only on sessions
    without samples, and the page always records some)."""

    def handle(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["record"]["score"].update(abstained=True, abstain_reason=reason, quality=quality)
        route.fulfill(response=response, json=body)

    return handle


@pytest.mark.parametrize(
    ("reason", "quality", "expected"),
    [
        ("quality_below_gate", 0.213, "data quality (0.21) is below the gate"),
        ("no_behaviour_samples", None, "no pointer or gaze samples were recorded"),
    ],
)
def test_an_abstained_score_says_so_and_why(
    stack: Stack, browser: Any, artifacts: Path, reason: str, quality: float | None, expected: str
) -> None:
    context, page, errors = _start(stack, browser, 1280, 800)
    try:
        page.route("**/v1/collector/sessions/*", _abstained_like_the_gated_demo_model(reason, quality))
        box = page.locator("#box-left").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 30, box["y"] + 30)
        page.mouse.move(box["x"] + 300, box["y"] + 30, steps=20)
        page.wait_for_timeout(500)
        page.click("#prefer-left")
        page.click("#submit")
        page.wait_for_selector("body[data-done='1']", timeout=30_000)

        assert page.evaluate("() => document.body.dataset.abstained") == "1"
        score = page.inner_text("#score")
        assert score == "No prediction: the model abstained on this session."
        assert "Predicted" not in score
        assert page.locator("#score.abstained").count() == 1
        why = page.inner_text("#abstain-why")
        assert why.startswith("Why:")
        assert expected in why
        explicit = page.inner_text("#explicit")
        assert "would have leaned to the" in explicit
        assert "do not read that as a prediction" in explicit
        page.screenshot(path=str(artifacts / f"demo-abstained-{reason}.png"), full_page=True)
        assert errors == []
    finally:
        context.close()


def test_a_confident_score_shows_the_prediction_and_no_abstention(stack: Stack, browser: Any) -> None:
    context, page, errors = _start(stack, browser, 1280, 800)
    try:
        box = page.locator("#box-left").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 30, box["y"] + 30)
        page.mouse.move(box["x"] + 300, box["y"] + 30, steps=20)
        page.wait_for_timeout(500)
        page.click("#prefer-right")
        page.click("#submit")
        page.wait_for_selector("body[data-done='1']", timeout=30_000)
        session_id = page.evaluate("() => document.body.dataset.sessionId")
        stored = httpx.get(
            f"{stack.gateway.url}/v1/sessions/{session_id}", headers=stack.headers("read"), timeout=10
        ).json()["score"]
        assert stored["abstained"] is False  # the stack's model has no gate
        assert page.evaluate("() => document.body.dataset.abstained") == "0"
        assert page.inner_text("#score").startswith("Predicted from your reading: ")
        assert page.locator("#abstain-why").is_hidden()
        assert "Confidence " in page.inner_text("#explicit")
        assert errors == []
    finally:
        context.close()
