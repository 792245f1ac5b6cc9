"""Which question was on screen when a sample was taken (spec 2).

IFLLM logs no question id with the samples; the only link is textual: the window of characters under the
point must occur near `centre_idx` in a response's text (spec 2.2). Three rules live here:

* `assign_reference_a` — Algorithm A (spec 2.3, per-row label with carry-forward), reproduced exactly,
  bugs included, for the `reference` feature mode and parity tests.
* `first_seen_reference_b` — Algorithm B (spec 2.4, first-seen segmentation per file), for `all_metrics`.
* `segment_boundaries` — the canonical rule Tacit uses by default (see docs/adr/0001): a question owns the
  contiguous run of sampler ticks from its first textual sighting on *any* stream of the page to the next
  question's sighting, measured in tick order (reload-proof), with sightings forced into question order.

All matching is done once per distinct (window, index) pair, not per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tacit.ifllm.rel import RelFile
from tacit.ifllm.tables import PLACEHOLDER

__all__ = [
    "CONTEXT",
    "assign_reference_a",
    "first_seen_reference_b",
    "match_matrix",
    "segment_boundaries",
    "tick_keys",
    "window_match",
]

#: Characters of context each side of centre_idx in the window test (spec 2.2).
CONTEXT = 15
_CLEAN = str.maketrans({"\n": " ", "\r": " "})


def window_match(text: str, window: str, idx: int, *, guarded: bool = True) -> bool:
    """Spec 2.2: `window` occurs in text[idx-15 : idx+15]. Guarded: an empty window or text never matches."""
    if guarded and (not window or not text):
        return False
    text = text.translate(_CLEAN)
    window = window.translate(_CLEAN)
    return window in text[max(0, idx - CONTEXT) : min(len(text), idx + CONTEXT)]


def _idx_range(rel: RelFile) -> tuple[int, int]:
    """Smallest index and the span of indices, to pack (window code, index) into one integer key."""
    low = min(int(rel.idx.min(initial=-1)), -1)
    return low, int(rel.idx.max(initial=0)) - low + 1


def _pairs(rel: RelFile, rows: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Distinct (window code, idx) keys among `rows` and, per selected row, its key number."""
    low, span = _idx_range(rel)
    keys = rel.window_codes[rows].astype(np.int64) * span + (rel.idx[rows] - low)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, inverse.reshape(-1)


def match_matrix(
    rel: RelFile, rows: npt.NDArray[np.bool_], texts: Sequence[str | None], *, guarded: bool
) -> npt.NDArray[np.bool_]:
    """Boolean (n_rows_selected, n_texts): does each selected row's window match each text."""
    n_sel = int(rows.sum())
    out = np.zeros((n_sel, len(texts)), dtype=np.bool_)
    if n_sel == 0 or not texts:
        return out
    unique, inverse = _pairs(rel, rows)
    low, span = _idx_range(rel)
    cleaned = [t.translate(_CLEAN) if t else "" for t in texts]
    windows = [w.translate(_CLEAN) for w in rel.windows]
    table = np.zeros((unique.size, len(texts)), dtype=np.bool_)
    for k, key in enumerate(unique.tolist()):
        window = windows[key // span]
        idx = key % span + low
        if guarded and not window:
            continue
        lo = max(0, idx - CONTEXT)
        for j, text in enumerate(cleaned):
            if text is None or (guarded and not text):
                continue
            if window in text[lo : min(len(text), idx + CONTEXT)]:
                table[k, j] = True
    return table[inverse]


def _first_true(matrix: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Column of the first True per row, -1 when none."""
    if matrix.shape[1] == 0:
        return np.full(matrix.shape[0], -1, dtype=np.int64)
    first: npt.NDArray[np.int64] = np.argmax(matrix, axis=1).astype(np.int64)
    first[~matrix.any(axis=1)] = -1
    return first


def assign_reference_a(
    rel: RelFile, candidates: Sequence[tuple[int, str]]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Algorithm A: per-row query id, is_experimental_text and is_not_looking, as the reference writes them.

    `candidates` = (query_id, side text) in the reference's timestamp order; empty texts are skipped.
    Labels: query id, -1 placeholder (incl. in-box rows with an empty window, pitfall P10), 0 no match,
    -2 not in box before any match. Not-in-box rows carry the last matched id forward.
    """
    n = len(rel)
    cands = [(q, t) for q, t in candidates if t]
    not_looking = ~rel.in_box
    in_box = ~not_looking
    labels = np.zeros(n, dtype=np.int64)
    texts: list[str | None] = [PLACEHOLDER, *(t for _, t in cands)]
    matrix = match_matrix(rel, in_box, texts, guarded=False)
    placeholder = np.zeros(n, dtype=np.bool_)
    placeholder[in_box] = matrix[:, 0]
    first = _first_true(matrix[:, 1:])
    ids = np.asarray([q for q, _ in cands] + [0], dtype=np.int64)
    in_box_labels = np.where(matrix[:, 0], -1, ids[np.where(first < 0, len(cands), first)])
    labels[in_box] = in_box_labels
    # Carry-forward: a not-in-box row takes the id of the last row that matched a real candidate.
    matched = np.zeros(n, dtype=np.bool_)
    matched[in_box] = (~matrix[:, 0]) & (first >= 0)
    last = np.where(matched, np.arange(n), -1)
    np.maximum.accumulate(last, out=last)
    carried = np.where(last >= 0, labels[np.maximum(last, 0)], -2)
    labels[not_looking] = carried[not_looking]
    return labels, placeholder, not_looking


def first_seen_reference_b(rel: RelFile, candidates: Sequence[tuple[int, str]]) -> dict[int, float]:
    """Algorithm B pass 1: per query id, the smallest rel_ts of an in-box row whose first match it is."""
    cands = [(q, t) for q, t in candidates if t]
    in_box = rel.in_box
    first = _first_true(match_matrix(rel, in_box, [t for _, t in cands], guarded=True))
    times = rel.t[in_box]
    seen: dict[int, float] = {}
    for j, (query_id, _) in enumerate(cands):
        hit = first == j
        if hit.any():
            seen[query_id] = min(seen.get(query_id, np.inf), float(times[hit].min()))
    return seen


def assign_reference_b(rel: RelFile, first_seen: dict[int, float]) -> npt.NDArray[np.int64]:
    """Algorithm B pass 2: each row goes to the query with the largest first_seen <= rel_ts; -1 = discarded."""
    if not first_seen:
        return np.full(len(rel), -1, dtype=np.int64)
    items = sorted(first_seen.items(), key=lambda kv: kv[1])
    starts = np.asarray([t for _, t in items], dtype=np.float64)
    ids = np.asarray([q for q, _ in items], dtype=np.int64)
    pos = np.searchsorted(starts, rel.t, side="right") - 1
    return np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)


def tick_keys(rel: RelFile) -> npt.NDArray[np.float64]:
    """A monotone clock shared by all rel files of a page: (page load number, page time) folded into one float.

    Every file gets one row per sampler tick with the same page time, and the page timer restarts at a
    reload, so counting restarts gives the load number. Unlike row positions, these keys survive a
    malformed row that one file lost and the others kept.
    """
    if len(rel) == 0:
        return np.zeros(0, dtype=np.float64)
    loads = np.concatenate(([0], np.cumsum(np.diff(rel.t) < 0)))
    return loads * 1e12 + rel.t


def segment_boundaries(
    files: Sequence[RelFile], texts_per_file: Sequence[Sequence[str | None]]
) -> tuple[npt.NDArray[np.float64], list[npt.NDArray[np.bool_]]]:
    """Canonical rule: the tick key (see `tick_keys`) at which each question's segment starts (NaN = never seen).

    `texts_per_file[f][k]` is the text question k showed in file f's box (questions in asking order).
    Sightings from all files of the page are pooled on the shared tick clock; a question starts at its
    first sighting after the previous question's start, so a stray early match of a later answer's
    text cannot reorder the conversation. Also returns, per file, the in-box rows that show the
    placeholder text (guarded test), for the lookback features.
    """
    n_questions = len(texts_per_file[0]) if texts_per_file else 0
    sightings: list[list[npt.NDArray[np.float64]]] = [[] for _ in range(n_questions)]
    placeholders: list[npt.NDArray[np.bool_]] = []
    for rel, texts in zip(files, texts_per_file, strict=True):
        in_box = rel.in_box
        matrix = match_matrix(rel, in_box, [PLACEHOLDER, *texts], guarded=True)
        ph = np.zeros(len(rel), dtype=np.bool_)
        ph[in_box] = matrix[:, 0]
        placeholders.append(ph)
        keys = tick_keys(rel)[in_box]
        # A window that fits several answers counts for the earliest (as in spec 2.4): generic snippets
        # such as "- **" must not announce a later answer while an earlier one is on screen.
        first = _first_true(matrix[:, 1:])
        for k in range(n_questions):
            sightings[k].append(keys[first == k])
    starts = np.full(n_questions, np.nan, dtype=np.float64)
    floor = -np.inf
    for k in range(n_questions):
        hits = np.concatenate(sightings[k]) if sightings[k] else np.zeros(0, dtype=np.float64)
        hits = hits[hits > floor]
        if hits.size:
            starts[k] = floor = float(hits.min())
    return starts, placeholders
