"""The `reference` feature mode: the released IFLLM pipeline's feature tables, reproduced bug for bug.

Use it to compare with the paper (its numbers were computed this way) and for parity tests against
`spec/reference-features/`. It is not what Tacit serves: see docs/features.md for every difference.

* per-question features (spec 3.2) over the rows Algorithm A labels with the question (carry-forward);
* pairwise phase features (spec 3.3) over the *whole* task file, identical for every question (P1);
* pointwise phase features (spec 3.4) with the stage detector of spec 2.5 over the whole file;
* counts (spec 3.5) over Algorithm B segments, per file;
* empty-window in-box samples count as placeholder text (P10) in the lookback features.
"""

from __future__ import annotations

import numpy as np

from feature_svc.features.formulas import (
    Track,
    counts,
    pairwise_cross,
    pairwise_phases,
    per_query,
    pointwise_cross,
    pointwise_phases,
)
from tacit.ifllm.matching import assign_reference_a, assign_reference_b, first_seen_reference_b
from tacit.ifllm.reader import Recording
from tacit.ifllm.rel import RelFile

__all__ = ["reference_rows"]

_SIDE_PREFIX = {"left": "response_A_", "right": "response_B_"}


def _track(rel: RelFile, rows: np.ndarray | slice, placeholder: np.ndarray) -> Track:
    return Track(
        x=rel.x[rows],
        y=rel.y[rows],
        idx=rel.idx[rows],
        t=rel.t[rows],
        placeholder=placeholder[rows],
        head=rel.head[rows],
    )


def _stage_phases(
    t: np.ndarray, labels: np.ndarray, idx: np.ndarray
) -> dict[int, tuple[tuple[float, float], tuple[float, float]]]:
    """Spec 2.5 on a time-sorted file: per query id, (reviewing [a, b], composing [a, b))."""
    queries: list[int] = []
    seen: set[int] = set()
    for q in labels[labels > 0].tolist():
        if q not in seen:
            seen.add(q)
            queries.append(q)
    valid = idx != -1
    reading = [q for q in queries if np.any((labels == q) & valid)]
    phases = {}
    file_start, file_end = float(t.min()), float(t.max())
    for k, q in enumerate(reading):
        mine = t[(labels == q) & valid]
        first_read, last_read = float(mine.min()), float(mine.max())
        if k == 0:
            composing_start = file_start
        else:
            prev = t[(labels == reading[k - 1]) & valid]
            earlier = prev[prev < first_read]
            composing_start = float(earlier.max()) if earlier.size else first_read
        reviewing_end = file_end if k == len(reading) - 1 else last_read
        phases[q] = ((first_read, reviewing_end), (composing_start, first_read))
    return phases


def reference_rows(rec: Recording) -> list[dict[str, float | int | str]]:
    """One row per question of the recording (reference candidate order), reference column names."""
    order = rec.reference_order()
    sides = ["left", "right"] if rec.mode == "pairwise" else ["left"]
    labels: dict[tuple[str, str], np.ndarray] = {}
    experimental: dict[tuple[str, str], np.ndarray] = {}
    seen_b: dict[tuple[str, str], dict[int, float]] = {}
    assigned_b: dict[tuple[str, str], np.ndarray] = {}
    for (side, modality), rel in rec.files.items():
        candidates = [(q.query_id, rec.side_text(q, side) or "") for q in order]
        labels[(side, modality)], experimental[(side, modality)], _ = assign_reference_a(rel, candidates)
        seen_b[(side, modality)] = first_seen_reference_b(rel, candidates)
        assigned_b[(side, modality)] = assign_reference_b(rel, seen_b[(side, modality)])

    # Whole-file phase features (P1): computed once, copied to every question of a pairwise task.
    session_phase: dict[str, float] = {}
    if rec.mode == "pairwise":
        per_modality = {}
        for modality in ("gaze", "mouse"):
            left = _track(rec.files[("left", modality)], slice(None), experimental[("left", modality)])
            right = _track(rec.files[("right", modality)], slice(None), experimental[("right", modality)])
            # The stage detector (spec 2.5) needs a row labelled with a real question and a character.
            reading = any(
                bool(np.any((labels[(s, modality)] > 0) & (rec.files[(s, modality)].idx != -1)))
                for s in ("left", "right")
            )
            per_modality[modality] = pairwise_phases(
                left, right, modality, lookback=(left.placeholder, right.placeholder), reading=reading
            )
            session_phase |= per_modality[modality]
        session_phase |= pairwise_cross(per_modality["gaze"], per_modality["mouse"])
    stage: dict[str, dict[int, tuple[tuple[float, float], tuple[float, float]]]] = {}
    sorted_tracks: dict[str, Track] = {}
    if rec.mode == "pointwise":
        for modality in ("gaze", "mouse"):
            rel = rec.files[("left", modality)]
            order_t = np.argsort(rel.t, kind="stable")
            sorted_tracks[modality] = _track(rel, order_t, experimental[("left", modality)])
            if len(rel):
                stage[modality] = _stage_phases(rel.t[order_t], labels[("left", modality)][order_t], rel.idx[order_t])
            else:
                stage[modality] = {}

    rows = []
    # Every question of the task gets a row; those the matcher never saw (bad timestamp) stay at zero.
    for q in rec.queries:
        row: dict[str, float | int | str] = {
            "comparison_type": rec.mode,
            "query_id": q.query_id,
            "user_id": rec.user_id,
            "task_id": rec.task_id,
            "user_query_length": float(len(q.query)),
        }
        for side in sides:
            length = len(rec.side_text(q, side) or "")
            for modality in ("gaze", "mouse"):
                key = (side, modality)
                rel = rec.files[key]
                mine = labels[key] == q.query_id
                track = _track(rel, mine, experimental[key]).sorted()
                row |= per_query(track, length, f"{_SIDE_PREFIX[side]}{modality}_")
                # all_metrics (Algorithm B, per file)
                seg = _track(rel, assigned_b[key] == q.query_id, experimental[key])
                row |= counts(seg, length, modality, side)
            row[f"{_SIDE_PREFIX[side]}response_length"] = float(length)
            matched = any(q.query_id in seen_b[(side, m)] for m in ("gaze", "mouse"))
            row[f"response_length_{side}"] = float(length) if matched else -1.0
            if not matched:
                for modality in ("gaze", "mouse"):
                    row[f"{modality}_max_idx_ratio_{side}"] = 0.0
        if rec.mode == "pairwise":
            row |= session_phase
        else:
            # all_metrics writes the absent right box of pointwise tasks as empty / -1.
            for modality in ("gaze", "mouse"):
                row |= {
                    f"{modality}_total_entries_right": 0.0,
                    f"{modality}_onscreen_points_right": 0.0,
                    f"{modality}_max_idx_right": -1.0,
                    f"{modality}_max_idx_ratio_right": 0.0,
                }
            row["response_length_right"] = -1.0
            per_modality = {}
            for modality in ("gaze", "mouse"):
                phases = stage[modality].get(q.query_id)
                per_modality[modality] = pointwise_phases(
                    sorted_tracks[modality], modality, *(phases if phases else (None, None))
                )
                row |= per_modality[modality]
            row |= pointwise_cross(per_modality["gaze"], per_modality["mouse"])
        # camera_green: gaze rows of both boxes whose flag is 1 or that have no flag column (6 columns).
        green = 0
        gaze_total = 0
        for side in sides:
            rel = rec.files[(side, "gaze")]
            mine = assigned_b[(side, "gaze")] == q.query_id
            green += int(((rel.head == 1) | ~rel.seven)[mine].sum())
            gaze_total += int(mine.sum())
        row["camera_green"] = float(green)
        row["camera_green_ratio"] = green / gaze_total if gaze_total else 0.0
        row["label"] = -1 if q.label is None else q.label
        rows.append(row)
    return rows
