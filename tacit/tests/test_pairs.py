"""Preference pairs: explicit sides (P6), confidence of the chosen side (P8), merging, split by prompt, JSONL."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tacit.pairs import (
    Observation,
    Verdict,
    format_prompt,
    pairs_from_sessions,
    pairs_from_verdicts,
    read_jsonl,
    split_by_prompt,
    write_jsonl,
)
from tacit.schemas import Feedback, Session
from tacit.schemas.align import PairSelection
from tacit.simulate import simulate_session

LEFT, RIGHT = "The left answer, short.", "The right answer, which is longer and reads differently."


def _session(
    n: int, prefer: str = "right", *, texts: tuple[str, str] = (LEFT, RIGHT), user: str = "u", turn: int = 0
) -> Session:
    s = simulate_session(seed=n, samples=50, prefer=prefer, texts=texts, user_id=user, session_id=f"s{n}")  # type: ignore[arg-type]
    return msgspec.structs.replace(s, turn=turn, query=f"question {n}")


def test_explicit_label_maps_to_the_stated_side() -> None:
    # The reference inverted this (label 1 = right preferred, yet chosen = left): P6.
    right = _session(1, "right")
    left = _session(2, "left")
    pairs, summary = pairs_from_sessions([Observation(right), Observation(left)], PairSelection(source="explicit"))
    by_session = {p.sessions[0]: p for p in pairs}
    assert by_session["s1"].chosen == f" {RIGHT}"
    assert by_session["s1"].rejected == f" {LEFT}"
    assert by_session["s2"].chosen == f" {LEFT}"
    assert by_session["s2"].rejected == f" {RIGHT}"
    assert all(p.confidence == 1.0 and p.source == "explicit" for p in pairs)
    assert summary.pairs == 2
    assert summary.sessions == 2


def test_implicit_confidence_is_that_of_the_chosen_side() -> None:
    # P(right) = 0.2 prefers left with confidence 0.8 (the reference passed 0.2 and so eps = 0.45 always: P8).
    obs = [Observation(_session(1), p_right=0.2, model_id="m"), Observation(_session(2), p_right=0.7, model_id="m")]
    pairs, _ = pairs_from_sessions(obs, PairSelection(), default_model_id="m")
    by_session = {p.sessions[0]: p for p in pairs}
    assert by_session["s1"].chosen == f" {LEFT}"
    assert by_session["s1"].confidence == pytest.approx(0.8)
    assert by_session["s2"].chosen == f" {RIGHT}"
    assert by_session["s2"].confidence == pytest.approx(0.7)
    assert {p.model_id for p in pairs} == {"m"}


def test_what_is_left_out_is_counted() -> None:
    obs = [
        Observation(_session(1), p_right=0.9, model_id="other"),
        Observation(_session(2), p_right=None),
        Observation(_session(3), p_right=0.9, model_id="m", demo_model=True),
        Observation(_session(4), p_right=0.55, model_id="m"),
        Observation(_session(5, texts=(LEFT, LEFT)), p_right=0.9, model_id="m"),
        Observation(_session(6), p_right=0.9, model_id="m"),
    ]
    pairs, summary = pairs_from_sessions(obs, PairSelection(model_id="m", min_confidence=0.6))
    assert [p.sessions for p in pairs] == [("s6",)]
    assert summary.dropped == {
        "below min_confidence": 1,
        "demo model": 1,
        "identical answers": 1,
        "not scored": 1,
        "scored by another model": 1,
    }


def test_duplicates_in_either_order_merge_by_averaging() -> None:
    same = _session(1, texts=(LEFT, RIGHT))
    swapped = msgspec.structs.replace(_session(2, texts=(RIGHT, LEFT)), query="question 1")
    obs = [Observation(same, p_right=0.9, model_id="m"), Observation(swapped, p_right=0.3, model_id="m")]
    [pair], _ = pairs_from_sessions(obs, PairSelection(), default_model_id="m")
    # P(RIGHT preferred) = mean(0.9, 1 - 0.3) = 0.8; both observations agree.
    assert pair.chosen == f" {RIGHT}"
    assert pair.confidence == pytest.approx(0.8)
    assert pair.sessions == ("s1", "s2")
    assert pair.agreement == 1.0


def test_history_prefixes_earlier_turns() -> None:
    first = msgspec.structs.replace(_session(1, turn=0), feedback=Feedback(preference="right"))
    second = _session(2, turn=1)
    earlier = {("u", second.task_id): [first, second]}
    pairs, _ = pairs_from_sessions(
        [Observation(second)], PairSelection(source="explicit", with_history=True), earlier=earlier
    )
    assert pairs[0].prompt == format_prompt("question 2", [("question 1", RIGHT)])


def test_split_is_by_prompt_and_stable() -> None:
    obs = [Observation(_session(n), p_right=0.9, model_id="m") for n in range(40)]
    pairs, summary = pairs_from_sessions(obs, PairSelection(test_fraction=0.25, seed=3), default_model_id="m")
    test_prompts = {p.prompt for p in pairs if p.split == "test"}
    assert not test_prompts & {p.prompt for p in pairs if p.split == "train"}
    assert 4 <= len(test_prompts) <= 18
    assert summary.test == len(test_prompts)
    # Adding data does not move an existing prompt across the split.
    again = split_by_prompt([*pairs, *pairs_from_sessions(obs[:1], PairSelection(), default_model_id="m")[0]], 0.25, 3)
    assert {p.prompt for p in again if p.split == "test"} >= test_prompts
    # Two prompts and a positive fraction: one is held out even if no hash falls below it.
    assert [p.split for p in split_by_prompt(pairs[:2], 1e-9, 0)].count("test") == 1


def test_verdicts_become_pairs_without_ties_or_inconsistent_ones() -> None:
    verdicts = [
        Verdict("q", "a1", "b1", "b", consistent=True),
        Verdict("q", "a2", "b2", "tie"),
        Verdict("q", "a3", "b3", "a", consistent=False),
        Verdict("q", "a4", "b4", None),
    ]
    [pair] = pairs_from_verdicts(verdicts)
    assert (pair.chosen, pair.rejected, pair.source) == (" b1", " a1", "judge")


def test_jsonl_round_trip_loads_in_datasets(tmp_path: Path) -> None:
    obs = [Observation(_session(n), p_right=0.8, model_id="m") for n in range(6)]
    pairs, _ = pairs_from_sessions(obs, PairSelection(), default_model_id="m")
    path = tmp_path / "pairs.jsonl"
    assert write_jsonl(pairs, path) == 6
    assert read_jsonl(path) == pairs
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected", "confidence"} <= set(loaded.column_names)
