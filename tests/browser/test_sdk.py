"""The collector SDK in Chromium: a scripted pointer (and gaze) path over known text gives the expected
character indices, same-line windows, box coordinates and -1 sentinels; consent and hidden-tab time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

SDK = Path(__file__).resolve().parents[2] / "gateway" / "static" / "tacit.js"
# Two explicit lines, one line that wraps at the box edge (no spaces: every row holds exactly 20 characters),
# and a last line; the text is laid out in a monospace box 20 characters wide.
TEXT = "The quick brown fox\njumps over the lazy\nabcdefghijklmnopqrstuvwxyz0123456789\nend."
COLUMNS = 20
PAGE = f"""<!doctype html><html><head><style>
  body {{ margin: 0; }}
  .answer {{ position: absolute; left: 40px; margin: 0; padding: 0; width: {COLUMNS}.5ch;
            font: 20px/40px "DejaVu Sans Mono", monospace; white-space: pre-wrap; word-break: break-all; }}
  #left {{ top: 30px; }}
  #right {{ top: 480px; }}
  #face {{ position: absolute; left: 600px; top: 10px; width: 40px; height: 40px; border: 3px solid rgb(0, 128, 0); }}
</style></head><body>
  <p class="answer" id="left" data-tacit-answer="left"></p>
  <p class="answer" id="right" data-tacit-answer="right">Right answer text.</p>
</body></html>"""
TOKEN = {"token": "unused", "user_id": "u1", "session_prefix": "u1.t.", "expires_at": 4102444800}


def rendered_lines(text: str, columns: int) -> list[tuple[int, int]]:
    """[start, end) of each rendered line: explicit newlines, then rows of `columns` characters."""
    lines = []
    start = 0
    for paragraph in text.split("\n"):
        end = start + len(paragraph)
        row = start
        while end - row > columns:
            lines.append((row, row + columns))
            row += columns
        lines.append((row, end))
        start = end + 1
    return lines


def expected_window(text: str, lines: list[tuple[int, int]], line: int, index: int) -> str:
    """Up to 10 characters each side of `index` on its rendered line (at a line's end: those before it)."""
    start, end = lines[line]
    return text[max(start, index - 10) : min(end, index + 11)].strip()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 900, "height": 600})
    page = context.new_page()
    page.set_content(PAGE)
    page.eval_on_selector("#left", "(el, text) => { el.textContent = text; }", TEXT)
    page.add_script_tag(path=str(SDK))
    yield page
    context.close()


def _geometry(page: Any) -> dict[str, float]:
    return dict(
        page.evaluate(
            """() => {
              const el = document.getElementById('left');
              const r = document.createRange();
              r.setStart(el.firstChild, 0); r.setEnd(el.firstChild, 1);
              const ch = r.getBoundingClientRect();
              const box = el.getBoundingClientRect();
              return { left: box.left, top: box.top, cw: ch.width, lh: 40 };
            }"""
        )
    )


def _point(geo: dict[str, float], line: int, column: float) -> tuple[int, int]:
    # A third into the character: the caret lands before it (its index), clear of both neighbours. Whole
    # pixels, as mouse events report them.
    return round(geo["left"] + (column + 0.3) * geo["cw"]), round(geo["top"] + (line + 0.5) * geo["lh"])


def _runs(stream: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    """Consecutive equal samples collapsed: one entry per position the path held."""
    out: list[tuple[Any, ...]] = []
    for sample in zip(stream["x"], stream["y"], stream["char_index"], stream["window"], strict=True):
        if not out or out[-1] != sample:
            out.append(sample)
    return out


def _path() -> list[tuple[int, float, int | None]]:
    """(rendered line, column, expected char index or None outside the box) for the scripted path."""
    lines = rendered_lines(TEXT, COLUMNS)
    return [
        (0, 0, 0),  # first character
        (0, 6, 6),  # mid-line: 10 to the left clipped at the line start
        (0, 19.4, 19),  # past the last character of a short line: the caret sits on its newline
        (1, 12, lines[1][0] + 12),
        (2, 18, lines[2][0] + 18),  # the right side stops at the soft wrap
        (3, 2, lines[3][0] + 2),  # the left side stops at the soft wrap
        (4, 1, lines[4][0] + 1),
        (7, 3, None),  # below the text: outside the box
    ]


def test_pointer_path_gives_expected_indices_and_windows(page: Any) -> None:
    page.evaluate(
        "t => { window.rec = Tacit.collector({ token: t }); return window.rec.start({ query: 'q' }); }", TOKEN
    )
    geo = _geometry(page)
    assert geo["cw"] > 5
    lines = rendered_lines(TEXT, COLUMNS)
    expected = []
    for line, column, index in _path():
        x, y = _point(geo, line, column)
        page.mouse.move(x, y)
        page.wait_for_timeout(260)  # several sampler ticks at ~13.5 Hz
        if index is None:
            expected.append((-1, -1, -1, ""))
        else:
            rel = (round(x - geo["left"], 2), round(y - geo["top"], 2))
            expected.append((*rel, index, expected_window(TEXT, lines, line, index)))
    session = page.evaluate("() => window.rec.snapshot({ preference: 'left' })")

    left, right = (r["mouse"] for r in session["responses"])
    runs = [run for run in _runs(left) if run != (-1, -1, -1, "")] + [(-1, -1, -1, "")]
    assert runs == expected
    # The pointer never entered the right box: every sample there says "outside".
    assert set(_runs(right)) == {(-1, -1, -1, "")}
    assert session["responses"][0]["text"] == TEXT
    assert session["session_id"].startswith("u1.t.")
    assert session["mode"] == "pairwise"
    assert session["consent"] == {"mouse": True, "gaze": False, "camera": False}
    assert "gaze" not in session["responses"][0]
    n = len(left["x"])
    assert all(len(left[k]) == n for k in ("y", "char_index", "window", "t_page_ms", "t_epoch_ms"))
    # 10-15 Hz over the recording, on both clocks.
    span_s = (left["t_epoch_ms"][-1] - left["t_epoch_ms"][0]) / 1000
    assert 10 <= (n - 1) / span_s <= 15.5
    assert left["t_page_ms"] == sorted(left["t_page_ms"])
    assert len(session["viewport_mouse"]["x"]) == n


def test_gaze_needs_consent_and_a_provider(page: Any) -> None:
    # A WebGazer-compatible provider: the page calls its listener with predictions in client pixels.
    page.evaluate(
        "() => { window.webgazer = { setGazeListener(cb) { window.gazeListener = cb; return this; } };"
        " const face = document.createElement('div'); face.id = 'webgazerFaceFeedbackBox';"
        " face.style.cssText = 'border: 3px solid rgb(0, 128, 0); width: 10px; height: 10px';"
        " document.body.appendChild(face); }"
    )
    page.evaluate(
        "t => { window.rec = Tacit.collector({ token: t }); return window.rec.start({ query: 'q' }); }", TOKEN
    )
    page.wait_for_timeout(200)
    without = page.evaluate("() => window.rec.snapshot(null)")
    assert "gaze" not in without["responses"][0]  # a provider alone records nothing: gaze needs the opt-in
    assert without["consent"]["gaze"] is False
    assert "head_in_box" not in without["responses"][0]["mouse"]

    page.evaluate(
        "t => { window.rec = Tacit.collector({ token: t, consent: { gaze: true, camera: true } });"
        " return window.rec.start({ query: 'q' }); }",
        TOKEN,
    )
    geo = _geometry(page)
    lines = rendered_lines(TEXT, COLUMNS)
    x, y = _point(geo, 1, 4)
    page.evaluate("([x, y]) => window.gazeListener({ x, y })", [x, y])
    page.wait_for_timeout(260)
    page.evaluate("() => window.gazeListener(null)")  # no prediction: -1 everywhere
    page.wait_for_timeout(260)
    session = page.evaluate("() => window.rec.snapshot(null)")
    gaze = session["responses"][0]["gaze"]
    index = lines[1][0] + 4
    assert [r for r in _runs(gaze) if r != (-1, -1, -1, "")] == [
        (round(x - geo["left"], 2), round(y - geo["top"], 2), index, expected_window(TEXT, lines, 1, index))
    ]
    assert _runs(gaze)[-1] == (-1, -1, -1, "")
    assert set(gaze["head_in_box"]) == {1}  # the face box border is WebGazer's green
    assert session["consent"] == {"mouse": True, "gaze": True, "camera": True}
    assert -1 in session["viewport_gaze"]["x"]


def test_hidden_tab_time_is_removed_from_page_time(page: Any) -> None:
    page.evaluate(
        "t => { window.rec = Tacit.collector({ token: t }); return window.rec.start({ query: 'q' }); }", TOKEN
    )
    page.wait_for_timeout(400)
    # Headless Chromium never hides a tab: the visibility state the SDK reads is switched by hand.
    page.evaluate(
        "() => { window.visibility = 'hidden';"
        " Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => window.visibility });"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    page.wait_for_timeout(1500)
    page.evaluate("() => { window.visibility = 'visible'; document.dispatchEvent(new Event('visibilitychange')); }")
    page.wait_for_timeout(400)
    stream = page.evaluate("() => window.rec.snapshot(null)")["responses"][0]["mouse"]
    t_page, t_epoch = stream["t_page_ms"], stream["t_epoch_ms"]
    gaps = [(t_epoch[i + 1] - t_epoch[i], t_page[i + 1] - t_page[i]) for i in range(len(t_page) - 1)]
    wall, page_gap = max(gaps)
    assert wall >= 1400  # no samples while hidden
    assert page_gap < 250  # and the hidden time does not count as page time
