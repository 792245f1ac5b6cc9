"""Seeded simulator of IFLLM-like reading sessions, for tests, demos and load generation.

It produces valid :class:`~tacit.schemas.session.Session` objects whose streams look like what the IFLLM
website records (≈13.5 Hz ticks, (-1, -1) outside a box, character index and same-line window under the
point, page timer and epoch ms, head-in-box flag), with readers that read further, dwell longer and come
back more on the answer they prefer. The behaviour model is a plausible toy, not a fitted one: simulated
sessions must never stand in for IFLLM data in an accuracy claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from tacit.schemas.session import Consent, Feedback, Response, Session, Stream

__all__ = ["ReaderProfile", "TextLayout", "layout_text", "simulate_session", "simulate_sessions"]

#: Rendered font metrics of the IFLLM task page: 20 px Consolas (advance ≈ 0.55 em), line-height 3.5.
CHAR_WIDTH_PX = 11.0
LINE_HEIGHT_PX = 70.0
#: Box widths in CSS px: pairwise boxes are 48vw, the pointwise box 96.5vw of a ≈1460 px wide window.
BOX_WIDTH_PX = {"pairwise": 700.0, "pointwise": 1400.0}
_BOX_TOP_PX = 260.0
_BOX_LEFT_PX = (20.0, 740.0)
#: Wall clock of the first simulated page load (2025-01-06T09:00:00Z), so epochs are deterministic.
START_EPOCH_MS = 1_736_154_000_000.0
_MODELS = ("gpt-4o-mini", "claude-sonnet-4-5", "Llama-3.3-70B-Instruct-Turbo", "DeepSeek-V3.1")
_WINDOW_HALF = 10


@dataclass(frozen=True)
class ReaderProfile:
    """How one simulated reader moves eyes and mouse; "preferred" refers to the answer the reader likes."""

    read_speed_chars_per_s: float = 18.0
    """Reading speed while reading normally (≈ 220 words per minute)."""
    skim_probability: float = 0.1
    """Probability that a visit to a box is skimmed instead of read."""
    skim_speedup: float = 4.0
    """Speed multiplier while skimming."""
    dwell_bias: float = 1.8
    """How much more often (and, by its square root, how much longer) the preferred box is visited."""
    depth_preferred: float = 0.95
    """Fraction of the preferred answer read before the reader only comes back to re-read."""
    depth_other: float = 0.6
    """Fraction of the other answer read before the reader only comes back to re-read."""
    return_preferred: float = 0.45
    """Probability that a new visit to the preferred box jumps back to re-read an earlier part."""
    return_other: float = 0.15
    """Same for the other box."""
    p_outside: float = 0.15
    """Probability that a visit goes outside the answer boxes (question, rating controls, elsewhere)."""
    visit_ticks: float = 45.0
    """Mean visit length in sampler ticks (≈ 3.3 s)."""
    gaze_noise_px: float = 45.0
    """Per-sample gaze error (standard deviation, px); WebGazer is far noisier than the mouse."""
    gaze_offset_px: float = 25.0
    """Standard deviation of the per-session calibration offset of the gaze."""
    gaze_dropout: float = 0.01
    """Probability that WebGazer returns no prediction for a sample."""
    mouse_noise_px: float = 4.0
    """Per-sample jitter of the mouse around the point being read."""
    mouse_follow: float = 0.7
    """Probability that the mouse follows the reading point during a visit (else it stays parked)."""
    mouse_lag_ticks: int = 3
    """How many ticks the mouse trails the eyes."""
    caret_failure: float = 0.012
    """Probability that the browser finds no caret under a point inside the box (IFLLM: ≈1.2 % of rows)."""
    p_reload: float = 0.1
    """Probability that the page is reloaded once during the session."""
    p_head_out: float = 0.03
    """Probability per tick that the head leaves the webcam's suggested box."""

    @classmethod
    def sample(cls, rng: np.random.Generator) -> ReaderProfile:
        """Draw a reader: most read carefully, about one in five skims with a weaker preference signal."""
        skimmer = bool(rng.random() < 0.2)
        return cls(
            read_speed_chars_per_s=float(rng.uniform(13.0, 24.0)),
            skim_probability=float(rng.uniform(0.5, 0.8) if skimmer else rng.uniform(0.0, 0.15)),
            skim_speedup=float(rng.uniform(3.0, 6.0)),
            dwell_bias=float(rng.uniform(1.1, 1.5) if skimmer else rng.uniform(1.4, 2.4)),
            depth_preferred=float(rng.uniform(0.6, 0.9) if skimmer else rng.uniform(0.85, 1.0)),
            depth_other=float(rng.uniform(0.4, 0.8) if skimmer else rng.uniform(0.35, 0.75)),
            return_preferred=float(rng.uniform(0.3, 0.6)),
            return_other=float(rng.uniform(0.05, 0.3)),
            p_outside=float(rng.uniform(0.08, 0.25)),
            visit_ticks=float(rng.uniform(25.0, 70.0)),
            gaze_noise_px=float(rng.uniform(30.0, 70.0)),
            gaze_offset_px=float(rng.uniform(10.0, 40.0)),
            mouse_follow=float(rng.uniform(0.3, 0.95)),
            mouse_lag_ticks=int(rng.integers(1, 6)),
        )


@dataclass(frozen=True)
class TextLayout:
    """A monospace, pre-wrap, word-wrapped layout of a text: line i shows text[starts[i] : starts[i] + visible[i]]."""

    text: str
    cols: int
    starts: np.ndarray
    """First character index of each rendered line."""
    content: np.ndarray
    """Characters of each line excluding its newline (a hanging wrap space included)."""
    visible: np.ndarray
    """Characters of each line that can be hit by a point (content clipped to the box width)."""
    line_of: np.ndarray
    """Rendered line of every character."""
    col_of: np.ndarray
    """Column of every character within its line."""

    @property
    def height_px(self) -> float:
        return float(len(self.starts) * LINE_HEIGHT_PX)

    def window(self, i: int) -> str:
        """IFLLM's window: up to 10 characters each side of character i on its rendered line, trimmed."""
        line = int(self.line_of[i])
        lo = max(int(self.starts[line]), i - _WINDOW_HALF)
        hi = min(int(self.starts[line] + self.content[line]), i + _WINDOW_HALF + 1)
        return self.text[lo:hi].strip()


def layout_text(text: str, width_px: float) -> TextLayout:
    """Lay a text out like `white-space: pre-wrap` in a monospace box of the given width."""
    cols = max(1, int(width_px // CHAR_WIDTH_PX))
    starts: list[int] = []
    content: list[int] = []
    pos = 0
    for paragraph in text.split("\n"):
        end = pos + len(paragraph)
        while end - pos > cols:
            brk = text.rfind(" ", pos, pos + cols + 1)
            # Wrap after the last space that fits (it hangs at the line end); hard-break words longer than a line.
            cut = brk + 1 if brk > pos else pos + cols
            starts.append(pos)
            content.append(cut - pos)
            pos = cut
        starts.append(pos)
        content.append(end - pos)
        pos = end + 1
    starts_arr = np.asarray(starts, dtype=np.int64)
    content_arr = np.asarray(content, dtype=np.int64)
    # Every line but the last owns its trailing newline; the segments tile the whole text.
    owned = content_arr.copy()
    owned[:-1] += (starts_arr[1:] - starts_arr[:-1]) - content_arr[:-1]
    line_of = np.repeat(np.arange(len(starts_arr)), owned)
    col_of = np.arange(len(text)) - starts_arr[line_of]
    return TextLayout(
        text=text,
        cols=cols,
        starts=starts_arr,
        content=content_arr,
        visible=np.minimum(content_arr, cols),
        line_of=line_of,
        col_of=col_of,
    )


# --- built-in answer texts -----------------------------------------------------------------------------------

_TOPICS = (
    ("photosynthesis", "plants", "light energy", "chlorophyll", "glucose"),
    ("compound interest", "savings", "interest rates", "the principal", "long time horizons"),
    ("the French Revolution", "France", "the monarchy", "the Estates-General", "political change"),
    ("machine learning", "models", "training data", "generalisation", "evaluation"),
    ("sleep hygiene", "adults", "circadian rhythm", "caffeine", "a regular schedule"),
    ("plate tectonics", "the Earth", "the lithosphere", "earthquakes", "mountain ranges"),
    ("vaccines", "the immune system", "antibodies", "clinical trials", "public health"),
    ("the water cycle", "the atmosphere", "evaporation", "precipitation", "groundwater"),
    ("remote work", "teams", "communication", "productivity", "clear expectations"),
    ("inflation", "prices", "central banks", "wages", "purchasing power"),
    ("black holes", "gravity", "the event horizon", "general relativity", "massive stars"),
    ("learning a language", "beginners", "vocabulary", "pronunciation", "daily practice"),
)
_QUESTIONS = (
    "Can you explain {0} in simple terms?",
    "What should I know about {0}?",
    "How does {0} work, and why does it matter?",
    "Give me a short overview of {0}.",
)
_OPENERS = (
    "{0} is best understood as a process that connects {1} with {2}.",
    "In short, {0} describes how {1} depend on {2}.",
    "At its core, {0} is about {2} and what it means for {1}.",
    "Here is a clear overview of {0}.",
)
_SENTENCES = (
    "The key idea is that {2} shapes how {1} behave over time.",
    "A common misconception is that {3} alone explains everything, but {2} matters just as much.",
    "Researchers usually describe {3} as the central mechanism.",
    "For example, small changes in {2} can have surprisingly large effects on {1}.",
    "It helps to think of {4} as the long-term outcome of these steps.",
    "In practice, the role of {3} is easiest to see when conditions change quickly.",
    "Most introductions start with {2}, then move on to {3}.",
    "This is why experts often emphasise {4} when they talk about {0}.",
    "The details vary, yet the overall pattern stays remarkably stable.",
    "Historically, our understanding of {0} developed step by step rather than all at once.",
    "One useful way to remember it: {2} comes first, {4} comes last.",
    "If you want to go deeper, look at how {3} interacts with {2}.",
)
_BULLETS = (
    "**{2}**: the starting point for {1}.",
    "**{3}**: often the deciding factor.",
    "**{4}**: where the effects become visible.",
    "**Common pitfall**: ignoring how {2} and {3} interact.",
    "**Tip**: compare a few concrete examples of {0}.",
    "**Why it matters**: {1} are affected in everyday situations.",
)
_CLOSERS = (
    "Overall, {0} is less mysterious once you see how {2} and {3} fit together.",
    "In summary, focus on {2} first; the rest of {0} follows from it.",
    "Let me know if you would like a more detailed explanation of any part.",
)


def _capitalised(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _answer(rng: np.random.Generator, topic: tuple[str, ...], bullets: bool) -> str:
    """A plausible 400-1500 character answer (trimmed, no blank lines, like the IFLLM page shows it)."""
    target = int(rng.integers(400, 1501))
    lines = [_capitalised(_OPENERS[int(rng.integers(len(_OPENERS)))].format(*topic))]
    order = rng.permutation(len(_SENTENCES))
    bullet_order = rng.permutation(len(_BULLETS))
    k = b = 0
    while sum(len(line) + 1 for line in lines) < target - 120 and k < len(order):
        if bullets and b < len(bullet_order) and rng.random() < 0.5:
            lines.extend("- " + _BULLETS[int(j)].format(*topic) for j in bullet_order[b : b + 3])
            b += 3
        else:
            n = int(rng.integers(2, 4))
            lines.append(" ".join(_capitalised(_SENTENCES[int(j)].format(*topic)) for j in order[k : k + n]))
            k += n
    lines.append(_CLOSERS[int(rng.integers(len(_CLOSERS)))].format(*topic))
    text = "\n".join(lines)
    while len(text) > 1500 and len(lines) > 2:
        del lines[-2]
        text = "\n".join(lines)
    while len(text) < 400:
        text += " " + _capitalised(_SENTENCES[int(rng.integers(len(_SENTENCES)))].format(*topic))
    return text


def _question_and_answers(rng: np.random.Generator, n: int) -> tuple[str, tuple[str, ...]]:
    topic = _TOPICS[int(rng.integers(len(_TOPICS)))]
    query = _QUESTIONS[int(rng.integers(len(_QUESTIONS)))].format(*topic)
    bullets = bool(rng.random() < 0.5)
    if bullets:
        query += " respond using bullet points"
    return query, tuple(_answer(rng, topic, bullets) for _ in range(n))


# --- behaviour ---------------------------------------------------------------------------------------------


def _timeline(
    rng: np.random.Generator, n: int, profile: ReaderProfile
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Tick intervals (s), page timer and epoch ms of each tick, and the reload index (if any)."""
    # Shifted log-normal: median ≈ 74 ms, p5 ≈ 47 ms, p95 ≈ 142 ms (IFLLM: 74 / 49 / 155).
    dt_ms = 30.0 + 44.0 * np.exp(0.57 * rng.standard_normal(n))
    elapsed = float(rng.uniform(2_000.0, 8_000.0)) + np.cumsum(dt_ms) - (dt_ms[0] if n else 0.0)
    t_page = elapsed.copy()
    epoch = START_EPOCH_MS + elapsed
    reload_at: list[int] = []
    if n >= 8 and rng.random() < profile.p_reload:
        r = int(rng.integers(n // 4, 3 * n // 4))
        t_page[r:] = elapsed[r:] - elapsed[r] + float(rng.uniform(300.0, 1_500.0))
        epoch[r:] += float(rng.uniform(1_000.0, 4_000.0))
        reload_at.append(r)
    return dt_ms / 1000.0, np.round(t_page, 1), np.round(epoch), reload_at


def _attention(
    rng: np.random.Generator,
    dt_s: np.ndarray,
    layouts: list[TextLayout],
    origins: list[tuple[float, float]],
    preferred: int | None,
    profile: ReaderProfile,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Viewport point read at each tick and whether the mouse follows it, visit by visit."""
    n = len(dt_s)
    boxes = len(layouts)
    px = np.empty(n)
    py = np.empty(n)
    follow = np.empty(n, dtype=bool)
    likes = [k == preferred for k in range(boxes)]
    weights = np.array([profile.dwell_bias if like else 1.0 for like in likes])
    weights /= weights.sum()
    p_out = profile.p_outside
    if boxes == 1:  # pointwise: the rest of the page competes with the single answer
        p_out = min(0.9, p_out * (1.0 if likes[0] else profile.dwell_bias))
    lengths = [len(layout.text) for layout in layouts]
    caps = [
        max(0.0, min(1.0, (profile.depth_preferred if like else profile.depth_other) + rng.normal(0.0, 0.05))) * length
        for like, length in zip(likes, lengths, strict=True)
    ]
    pos = [0.0] * boxes
    visited = [False] * boxes
    i = 0
    while i < n:
        outside = rng.random() < p_out
        k = -1 if outside else int(rng.choice(boxes, p=weights))
        scale = np.sqrt(profile.dwell_bias) if k >= 0 and likes[k] else 1.0
        span = min(n - i, 1 + int(rng.geometric(1.0 / max(1.0, profile.visit_ticks * scale))))
        follow[i : i + span] = rng.random() < profile.mouse_follow
        if k < 0 or caps[k] < 1.0:
            # Looking at the question, the rating controls or elsewhere (or at an empty answer).
            x0 = float(rng.uniform(0.0, 1_440.0))
            y0 = float(rng.uniform(20.0, _BOX_TOP_PX - 20.0)) if k < 0 else origins[k][1] + 5.0
            px[i : i + span] = x0 + np.cumsum(rng.normal(0.0, 6.0, span))
            py[i : i + span] = y0 + np.cumsum(rng.normal(0.0, 3.0, span))
            i += span
            continue
        ret = profile.return_preferred if likes[k] else profile.return_other
        start = pos[k]
        if start >= caps[k] or (visited[k] and rng.random() < ret):
            start = float(rng.uniform(0.0, min(caps[k], max(pos[k], 1.0))))
        visited[k] = True
        speed = profile.read_speed_chars_per_s
        if rng.random() < profile.skim_probability:
            speed *= profile.skim_speedup
        steps = speed * dt_s[i : i + span] * rng.lognormal(0.0, 0.35, span)
        chars = start + np.cumsum(steps) - steps[0]
        # The visit ends when the reader reaches how far they want to read this answer.
        stop = max(1, int(np.searchsorted(chars, caps[k])))
        span = min(span, stop)
        chars = chars[:span]
        pos[k] = float(chars[-1] + steps[span - 1])
        layout = layouts[k]
        c = np.minimum(chars.astype(np.int64), lengths[k] - 1)
        x = (layout.col_of[c] + (chars - np.floor(chars))) * CHAR_WIDTH_PX
        y = (layout.line_of[c] + 0.5) * LINE_HEIGHT_PX
        px[i : i + span] = origins[k][0] + x
        py[i : i + span] = origins[k][1] + y
        i += span
    return px, py, follow


def _in_box(
    vx: np.ndarray,
    vy: np.ndarray,
    origin: tuple[float, float],
    layout: TextLayout,
    width: float,
    rng: np.random.Generator,
    caret_failure: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IFLLM's relative frame: box-relative x/y (or -1, -1) and the character index under the point."""
    rx = vx - origin[0]
    ry = vy - origin[1]
    inside = (rx >= 0.0) & (rx < width) & (ry >= 0.0) & (ry < layout.height_px)
    rx = np.where(inside, np.round(rx, 2), -1.0)
    ry = np.where(inside, np.round(ry, 2), -1.0)
    idx = np.full(len(vx), -1, dtype=np.int64)
    if len(layout.starts):
        line = np.clip((ry // LINE_HEIGHT_PX).astype(np.int64), 0, len(layout.starts) - 1)
        col = np.maximum(rx // CHAR_WIDTH_PX, 0).astype(np.int64)
        hit = inside & (col < layout.visible[line]) & (rng.random(len(vx)) >= caret_failure)
        idx = np.where(hit, layout.starts[line] + col, -1)
    return rx, ry, idx


def _windows(layout: TextLayout, idx: np.ndarray) -> list[str]:
    uniq, inverse = np.unique(idx, return_inverse=True)
    table = np.array([layout.window(int(i)) if i >= 0 else "" for i in uniq], dtype=object)
    windows: list[str] = table[inverse].tolist()
    return windows


def _stream(
    vx: np.ndarray,
    vy: np.ndarray,
    k: int,
    origins: list[tuple[float, float]],
    layouts: list[TextLayout],
    width: float,
    clock: tuple[np.ndarray, np.ndarray, np.ndarray | None, list[int]],
    rng: np.random.Generator,
    profile: ReaderProfile,
) -> Stream:
    t_page, t_epoch, head, reload_at = clock
    x, y, idx = _in_box(vx, vy, origins[k], layouts[k], width, rng, profile.caret_failure)
    return Stream(
        x=x.tolist(),
        y=y.tolist(),
        char_index=idx.tolist(),
        window=_windows(layouts[k], idx),
        t_page_ms=t_page.tolist(),
        t_epoch_ms=t_epoch.tolist(),
        head_in_box=None if head is None else head.tolist(),
        reload_at=list(reload_at),
    )


def simulate_session(
    *,
    seed: int,
    mode: Literal["pairwise", "pointwise"] = "pairwise",
    samples: int = 2000,
    prefer: Literal["left", "right", "current", "previous"] | None = None,
    mouse: bool = True,
    gaze: bool = True,
    camera: bool = True,
    session_id: str | None = None,
    user_id: str = "sim-user",
    task_id: str = "sim-task",
    texts: tuple[str, ...] | None = None,
    profile: ReaderProfile | None = None,
    feedback: bool = True,
) -> Session:
    """One valid, deterministic session for `seed`; never a substitute for IFLLM data in an accuracy claim.

    `texts` are (left, right) for pairwise and (current,) or (current, previous) for pointwise; in pointwise
    mode `prefer` "left"/"right" mean "current"/"previous". `prefer` and `profile` are drawn from the seed
    when not given. `mouse`/`gaze`/`camera` are the consent flags; streams are only made for consented signals.
    """
    if samples < 0:
        raise ValueError("samples must be >= 0")
    rng = np.random.default_rng(seed)
    pairwise = mode == "pairwise"
    if mode not in ("pairwise", "pointwise"):
        raise ValueError(f"unknown mode {mode!r}")
    side: Literal["left", "right"]
    if prefer is None:
        side = "left" if rng.integers(2) == 0 else "right"
    elif prefer in ("left", "right"):
        side = prefer
    elif not pairwise:
        side = "left" if prefer == "current" else "right"
    else:
        raise ValueError(f"preference {prefer!r} is not valid for mode {mode!r}")
    profile = profile if profile is not None else ReaderProfile.sample(rng)
    query, generated = _question_and_answers(rng, 2)
    if texts is None:
        texts = generated
    elif len(texts) not in ((2,) if pairwise else (1, 2)):
        raise ValueError("texts must be (left, right) for pairwise or (current[, previous]) for pointwise")
    shown = list(texts[:2] if pairwise else texts[:1])
    previous = None if pairwise else (texts[1] if len(texts) > 1 else generated[1])
    width = BOX_WIDTH_PX[mode]
    layouts = [layout_text(text, width) for text in shown]
    origins = [(_BOX_LEFT_PX[k], _BOX_TOP_PX) for k in range(len(shown))]
    # Pointwise: "left" = the current (only shown) answer is preferred; "right" = the previous one was better.
    preferred = (0 if side == "left" else 1) if pairwise else (0 if side == "left" else None)

    dt_s, t_page, t_epoch, reload_at = _timeline(rng, samples, profile)
    head = (rng.random(samples) >= profile.p_head_out).astype(np.int64) if camera else None
    clock = (t_page, t_epoch, head, reload_at)
    px, py, follow = _attention(rng, dt_s, layouts, origins, preferred, profile)

    gaze_x = px + rng.normal(0.0, profile.gaze_offset_px) + rng.normal(0.0, profile.gaze_noise_px, samples)
    gaze_y = py + rng.normal(0.0, profile.gaze_offset_px) + rng.normal(0.0, profile.gaze_noise_px, samples)
    lost = rng.random(samples) < profile.gaze_dropout
    gaze_x[lost] = -1.0
    gaze_y[lost] = -1.0
    # The mouse trails the eyes, sits a little below the line being read, and stays put between moves.
    lag = min(profile.mouse_lag_ticks, samples)
    src = np.maximum(np.arange(samples) - lag, 0)
    last_move = np.maximum.accumulate(np.where(follow, np.arange(samples), -1)) if samples else np.empty(0, int)
    moved = last_move >= 0
    at = src[np.maximum(last_move, 0)]
    mouse_x = np.where(moved, px[at] + rng.normal(0.0, profile.mouse_noise_px, samples), -1.0)
    mouse_y = np.where(moved, py[at] + 12.0 + rng.normal(0.0, profile.mouse_noise_px, samples), -1.0)

    models = rng.permutation(len(_MODELS))
    responses = []
    for k, text in enumerate(shown):
        responses.append(
            Response(
                text=text,
                model=_MODELS[int(models[k])],
                mouse=_stream(mouse_x, mouse_y, k, origins, layouts, width, clock, rng, profile) if mouse else None,
                gaze=_stream(gaze_x, gaze_y, k, origins, layouts, width, clock, rng, profile) if gaze else None,
            )
        )
    explicit = None
    if feedback:
        good, bad = sorted(rng.integers(1, 6, 2).tolist(), reverse=True)
        likert: list[int | None] = [good, bad] if side == "left" else [bad, good]
        if pairwise:
            explicit = Feedback(preference=side, likert=likert)
        else:
            explicit = Feedback(preference="current" if side == "left" else "previous", likert=likert[:1])
    return Session(
        session_id=session_id if session_id is not None else f"sim-{seed}",
        user_id=user_id,
        task_id=task_id,
        query_id=f"sim-q-{seed}",
        mode=mode,
        query=query,
        responses=responses,
        previous_response=previous,
        turn=None if pairwise else int(rng.integers(1, 6)),
        consent=Consent(mouse=mouse, gaze=gaze, camera=camera),
        feedback=explicit,
        calibration_accuracy=round(float(rng.uniform(70.5, 96.0)), 2) if gaze else None,
    )


def simulate_sessions(n: int, *, seed: int, **kw: object) -> list[Session]:
    """`n` independent sessions with balanced preferences (half left, half right, shuffled)."""
    rng = np.random.default_rng(seed)
    sides = np.array(["left", "right"] * ((n + 1) // 2))[:n]
    rng.shuffle(sides)
    seeds = np.random.SeedSequence(seed).generate_state(max(n, 1), dtype=np.uint32)[:n]
    sessions = []
    for i in range(n):
        options = {"session_id": f"sim-{seed}-{i:06d}", **kw}
        options.setdefault("prefer", str(sides[i]))
        sessions.append(simulate_session(seed=int(seeds[i]), **options))  # type: ignore[arg-type]
    return sessions
