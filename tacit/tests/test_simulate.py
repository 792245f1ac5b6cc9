"""The session simulator: deterministic, always valid, IFLLM-like, and the preference shows in the reading."""

from __future__ import annotations

import functools
import time

import msgspec
import numpy as np
import pytest

from tacit.schemas import Session, Stream, decode_session, decode_sessions, validate_session
from tacit.simulate import (
    CHAR_WIDTH_PX,
    LINE_HEIGHT_PX,
    ReaderProfile,
    layout_text,
    simulate_session,
    simulate_sessions,
)

NO_RELOAD = ReaderProfile(p_reload=0.0)
ALWAYS_RELOAD = ReaderProfile(p_reload=1.0)


def _streams(session: Session) -> list[tuple[str, Stream]]:
    return [
        (f"responses[{i}].{name}", stream)
        for i, response in enumerate(session.responses)
        for name, stream in (("mouse", response.mouse), ("gaze", response.gaze))
        if stream is not None
    ]


def test_same_seed_gives_the_same_session() -> None:
    a = msgspec.json.encode(simulate_session(seed=42))
    b = msgspec.json.encode(simulate_session(seed=42))
    c = msgspec.json.encode(simulate_session(seed=43))
    assert a == b
    assert a != c


@pytest.mark.parametrize("mode", ["pairwise", "pointwise"])
@pytest.mark.parametrize("samples", [0, 1, 2, 9, 300, 2000])
@pytest.mark.parametrize("seed", [0, 1, 7, 2024])
def test_sessions_are_valid_and_round_trip(mode: str, samples: int, seed: int) -> None:
    session = simulate_session(seed=seed, mode=mode, samples=samples)  # type: ignore[arg-type]
    validate_session(session)
    assert decode_session(msgspec.json.encode(session)) == session
    assert len(session.responses) == (2 if mode == "pairwise" else 1)
    for _, stream in _streams(session):
        assert len(stream.x) == samples


def test_a_100k_sample_session_decodes() -> None:
    session = simulate_session(seed=3, samples=100_000)
    body = msgspec.json.encode(session)
    assert decode_session(body) == session
    assert len(session.responses[1].gaze.t_page_ms) == 100_000  # type: ignore[union-attr]


def test_batches_decode() -> None:
    sessions = simulate_sessions(5, seed=9, samples=100)
    assert decode_sessions(msgspec.json.encode(sessions)) == sessions


@pytest.mark.parametrize("mode", ["pairwise", "pointwise"])
def test_streams_look_like_ifllm_rows(mode: str) -> None:
    session = simulate_session(seed=5, mode=mode, samples=3000, profile=NO_RELOAD)  # type: ignore[arg-type]
    streams = _streams(session)
    assert len(streams) == 2 * len(session.responses)
    first = streams[0][1]
    t = np.asarray(first.t_page_ms)
    dt = np.diff(t)
    assert 1_000 < t[0] < 10_000, "the page timer starts a few seconds in"
    assert np.all(dt > 0)
    assert 60 < np.median(dt) < 90, "≈13.5 Hz sampling"
    assert np.percentile(dt, 95) > 1.5 * np.median(dt), "with jitter"
    epoch_minus_page = np.asarray(first.t_epoch_ms) - t
    assert np.ptp(epoch_minus_page) <= 1.0, "without reload the epoch is a fixed start plus the page timer"
    for path, stream in streams:
        text = session.responses[1 if path.startswith("responses[1]") else 0].text
        assert stream.t_page_ms == first.t_page_ms, "all streams share the sampler ticks"
        assert stream.head_in_box == first.head_in_box
        assert stream.head_in_box is not None
        assert set(stream.head_in_box) <= {0, 1}
        assert np.mean(stream.head_in_box) > 0.9
        x, y = np.asarray(stream.x), np.asarray(stream.y)
        idx = np.asarray(stream.char_index)
        outside = (x == -1) & (y == -1)
        assert np.all((x >= 0) == (y >= 0)), "x and y are -1 together"
        assert 0.05 < outside.mean() < 0.95
        assert np.all(idx[outside] == -1)
        assert np.all((idx >= 0) | (idx == -1))
        assert idx.max() < len(text)
        lines = layout_text(text, 700.0 if mode == "pairwise" else 1400.0)
        for i in np.flatnonzero(idx >= 0)[:: max(1, len(idx) // 300)]:
            c = int(idx[i])
            assert int(x[i] // CHAR_WIDTH_PX) == lines.col_of[c], "the index is the character under the point"
            assert int(y[i] // LINE_HEIGHT_PX) == lines.line_of[c]
            window = stream.window[i]
            assert window == window.strip()
            assert 0 < len(window) <= 21
            assert window in text[max(0, c - 10) : c + 11]
            assert "\n" not in window
        assert all(w == "" for w, c in zip(stream.window, stream.char_index, strict=True) if c == -1)


def test_gaze_is_noisier_than_mouse() -> None:
    session = simulate_session(seed=8, samples=4000, profile=NO_RELOAD)
    response = session.responses[0]
    assert response.mouse is not None
    assert response.gaze is not None

    def roughness(stream: Stream) -> float:
        x, y = np.asarray(stream.x), np.asarray(stream.y)
        both = (x[1:] >= 0) & (x[:-1] >= 0)
        return float(np.median(np.hypot(np.diff(x), np.diff(y))[both]))

    assert roughness(response.gaze) > 2 * roughness(response.mouse)


def _reading(session: Session, k: int, modality: str) -> tuple[float, float, int]:
    stream = getattr(session.responses[k], modality)
    idx = np.asarray(stream.char_index)
    return float(idx.max()), float(idx.max() / len(session.responses[k].text)), int(np.sum(np.asarray(stream.x) >= 0))


@functools.cache
def _pairwise_batch() -> list[Session]:
    return simulate_sessions(200, seed=11, samples=800)


@pytest.mark.parametrize("modality", ["mouse", "gaze"])
def test_preferred_answer_is_read_further_and_longer(modality: str) -> None:
    sessions = _pairwise_batch()
    preferred, other = [], []
    for session in sessions:
        assert session.feedback is not None
        p = 0 if session.feedback.preference == "left" else 1
        preferred.append(_reading(session, p, modality))
        other.append(_reading(session, 1 - p, modality))
    pref_mean, other_mean = np.mean(preferred, axis=0), np.mean(other, axis=0)
    assert pref_mean[0] > other_mean[0], "max char index"
    assert pref_mean[1] > other_mean[1], "fraction of the answer reached"
    assert pref_mean[2] > other_mean[2], "samples inside the box"


def test_pointwise_current_preferred_is_read_more() -> None:
    sessions = simulate_sessions(200, seed=12, samples=800, mode="pointwise")
    by_pref: dict[str, list[tuple[float, float, int]]] = {"current": [], "previous": []}
    for session in sessions:
        assert session.feedback is not None
        assert session.feedback.preference in by_pref
        assert session.previous_response
        by_pref[session.feedback.preference].append(_reading(session, 0, "mouse"))
    assert len(by_pref["current"]) == len(by_pref["previous"]) == 100
    current, previous = np.mean(by_pref["current"], axis=0), np.mean(by_pref["previous"], axis=0)
    assert current[1] > previous[1]
    assert current[2] > previous[2]


def test_reloads_are_marked() -> None:
    session = simulate_session(seed=21, samples=1000, profile=ALWAYS_RELOAD)
    validate_session(session)
    streams = _streams(session)
    reload_at = streams[0][1].reload_at
    assert len(reload_at) == 1
    r = reload_at[0]
    assert 0 < r < 1000
    for _, stream in streams:
        assert stream.reload_at == reload_at
        t = np.asarray(stream.t_page_ms)
        assert t[r] < t[r - 1], "the page timer restarts"
        assert np.all(np.delete(np.diff(t), r - 1) > 0)
        assert np.all(np.diff(np.asarray(stream.t_epoch_ms)) > 0), "the wall clock does not"
    # Without its marker the same session is refused.
    mouse = session.responses[0].mouse
    assert mouse is not None
    unmarked = msgspec.structs.replace(mouse, reload_at=[])
    broken = msgspec.structs.replace(
        session, responses=[msgspec.structs.replace(session.responses[0], mouse=unmarked), session.responses[1]]
    )
    with pytest.raises(ValueError, match="reload"):
        validate_session(broken)


def test_some_sessions_reload_by_default() -> None:
    sessions = simulate_sessions(100, seed=4, samples=200)
    reloaded = sum(bool(s.responses[0].mouse.reload_at) for s in sessions)  # type: ignore[union-attr]
    assert 0 < reloaded < 40


@pytest.mark.parametrize(("mouse", "gaze", "camera"), [(True, False, False), (False, True, True), (True, True, False)])
def test_consent_decides_which_streams_exist(mouse: bool, gaze: bool, camera: bool) -> None:
    session = simulate_session(seed=2, samples=50, mouse=mouse, gaze=gaze, camera=camera)
    validate_session(session)
    assert session.consent.mouse is mouse
    assert session.consent.gaze is gaze
    assert session.consent.camera is camera
    for response in session.responses:
        assert (response.mouse is not None) is mouse
        assert (response.gaze is not None) is gaze
    for _, stream in _streams(session):
        assert (stream.head_in_box is not None) is camera
    assert (session.calibration_accuracy is not None) is gaze


def test_feedback_follows_the_preference() -> None:
    left = simulate_session(seed=1, prefer="left")
    right = simulate_session(seed=1, prefer="right")
    current = simulate_session(seed=1, mode="pointwise", prefer="current")
    previous = simulate_session(seed=1, mode="pointwise", prefer="right")
    assert left.feedback is not None
    assert right.feedback is not None
    assert current.feedback is not None
    assert previous.feedback is not None
    assert left.feedback.preference == "left"
    assert right.feedback.preference == "right"
    assert current.feedback.preference == "current"
    assert previous.feedback.preference == "previous"
    assert left.feedback.likert[0] >= left.feedback.likert[1]  # type: ignore[operator]
    assert right.feedback.likert[1] >= right.feedback.likert[0]  # type: ignore[operator]
    assert len(current.feedback.likert) == 1
    assert current.previous_response is not None
    assert current.turn is not None
    assert current.turn >= 1
    assert simulate_session(seed=1, feedback=False).feedback is None


def test_given_texts_are_shown() -> None:
    texts = ("First answer.\nIt has two lines and some words.", "Second — with odd unicode: ü, 漢字, 🙂.")
    session = simulate_session(seed=6, texts=texts, samples=500)
    validate_session(session)
    assert tuple(r.text for r in session.responses) == texts
    pointwise = simulate_session(seed=6, mode="pointwise", texts=texts, samples=100)
    assert pointwise.responses[0].text == texts[0]
    assert pointwise.previous_response == texts[1]
    empty = simulate_session(seed=6, texts=("", "x"), samples=100)
    validate_session(empty)
    assert set(empty.responses[0].mouse.char_index) == {-1}  # type: ignore[union-attr]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="texts"):
        simulate_session(seed=0, texts=("only one",))
    with pytest.raises(ValueError, match="preference"):
        simulate_session(seed=0, prefer="current")
    with pytest.raises(ValueError, match="samples"):
        simulate_session(seed=0, samples=-1)


def test_built_in_texts_are_plausible() -> None:
    for seed in range(40):
        session = simulate_session(seed=seed, samples=0)
        for text in [r.text for r in session.responses]:
            assert 400 <= len(text) <= 1500
            assert text == text.strip()
            assert "\n\n" not in text
        assert session.query.endswith("?") or session.query.endswith("points") or session.query.endswith(".")


def test_simulate_sessions_is_balanced_and_deterministic() -> None:
    sessions = simulate_sessions(30, seed=5, samples=20)
    assert [s.feedback.preference for s in sessions].count("left") == 15  # type: ignore[union-attr]
    assert len({s.session_id for s in sessions}) == 30
    assert msgspec.json.encode(sessions) == msgspec.json.encode(simulate_sessions(30, seed=5, samples=20))
    odd = simulate_sessions(7, seed=5, samples=20, mode="pointwise", user_id="u-1")
    assert {s.user_id for s in odd} == {"u-1"}
    prefs = [s.feedback.preference for s in odd]  # type: ignore[union-attr]
    assert abs(prefs.count("current") - prefs.count("previous")) == 1


def test_reader_profiles_are_drawn_from_the_seed() -> None:
    draws = [ReaderProfile.sample(np.random.default_rng(s)) for s in range(200)]
    assert draws[0] == ReaderProfile.sample(np.random.default_rng(0))
    skimmers = sum(p.skim_probability >= 0.5 for p in draws)
    assert 10 < skimmers < 80


def test_layout_wraps_words_and_keeps_newlines() -> None:
    text = "aaa bbb ccc\n\nddddddddddddd e"
    layout = layout_text(text, 8 * CHAR_WIDTH_PX)
    lines = [text[s : s + n] for s, n in zip(layout.starts, layout.content, strict=True)]
    assert lines == ["aaa bbb ", "ccc", "", "dddddddd", "ddddd e"]
    assert len(layout.line_of) == len(text)
    assert layout.line_of[text.index("ccc")] == 1
    assert layout.col_of[text.index("ccc")] == 0
    assert layout.window(text.index("ccc") + 1) == "ccc"
    assert layout.height_px == 5 * LINE_HEIGHT_PX
    assert layout_text("", 700.0).line_of.size == 0


def test_docstring_disclaims_accuracy_claims() -> None:
    assert simulate_session.__doc__ is not None
    assert "never" in simulate_session.__doc__
    assert "accuracy claim" in simulate_session.__doc__


def test_a_pairwise_session_is_fast() -> None:
    simulate_session(seed=0)  # warm-up
    best = float("inf")
    for seed in range(5):
        start = time.perf_counter()
        simulate_session(seed=seed, samples=2000)
        best = min(best, time.perf_counter() - start)
    assert best < 0.05, f"4 x 2000 samples took {best * 1000:.1f} ms"
