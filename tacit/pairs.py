"""Preference pairs from scored sessions, explicit labels or judge verdicts (pure: no torch, no web, no database).

In the kernel because both sides build them: the gateway (job snapshots, previews) and the alignment worker's CLI.

Sides are explicit: `chosen` is the response the evidence prefers. The reference built pairs with the label
inverted (label 1 = right preferred, but chosen = left; pitfall P6) and passed P(right) as the confidence
whatever the chosen side (P8); here `confidence` is always P(chosen is preferred). Duplicates (same prompt,
same two answers, in either order) are merged by averaging P(each side preferred), and the split is by prompt,
so no prompt is in both the training and the held-out split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from tacit.schemas.align import DataSummary, PairSelection, PreferencePair
from tacit.schemas.session import Session, label_of

__all__ = [
    "Observation",
    "Verdict",
    "format_prompt",
    "pair_id",
    "pairs_from_sessions",
    "pairs_from_verdicts",
    "read_jsonl",
    "snapshot_hash",
    "split_by_prompt",
    "write_jsonl",
]


@dataclass(frozen=True)
class Observation:
    """One stored pairwise session and what is known of its preference."""

    session: Session
    p_right: float | None = None
    """The reward model's P(right preferred); None when unscored."""
    model_id: str | None = None
    abstained: bool = False
    demo_model: bool = False


@dataclass(frozen=True)
class Verdict:
    """A judge verdict on (prompt, a, b): winner "a", "b" or "tie"; `consistent` when both orders agreed."""

    prompt: str
    answer_a: str
    answer_b: str
    winner: str | None
    consistent: bool | None = None
    judgment_id: str = ""


@dataclass
class _Merged:
    prompt: str
    a: str
    b: str
    p_a: list[float] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)


def format_prompt(query: str, history: Sequence[tuple[str, str]] = ()) -> str:
    """The reference's prompt (spec 8.2), after the earlier (query, answer) turns when given."""
    turns = "".join(f"\n\nHuman: {q}\n\nAssistant: {a}" for q, a in history)
    return f"{turns}\n\nHuman: {query}\n\nAssistant:"


def _completion(text: str) -> str:
    # The prompt ends with "Assistant:"; a leading space keeps the tokeniser's word boundary where generation puts it.
    return text if text[:1].isspace() else f" {text}"


def pair_id(prompt: str, chosen: str, rejected: str) -> str:
    digest = hashlib.sha256()
    for part in (prompt, chosen, rejected):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:20]


def _history(session: Session, earlier: Mapping[tuple[str, str], Sequence[Session]]) -> list[tuple[str, str]]:
    """Earlier turns of the same user and task: each query with the answer the user kept (stated, else the first)."""
    if session.turn is None:
        return []
    turns = []
    for prior in sorted(earlier.get((session.user_id, session.task_id), ()), key=lambda s: s.turn or 0):
        if prior.turn is None or prior.turn >= session.turn:
            continue
        preference = prior.feedback.preference if prior.feedback else None
        index = 1 if preference in ("right", "current") and len(prior.responses) > 1 else 0
        turns.append((prior.query, prior.responses[index].text))
    return turns


def _explicit_p_right(session: Session) -> float | None:
    preference = session.feedback.preference if session.feedback else None
    label = label_of(preference) if preference in ("left", "right") else None
    return None if label is None else float(label)


def pairs_from_sessions(
    observations: Iterable[Observation],
    selection: PairSelection,
    *,
    earlier: Mapping[tuple[str, str], Sequence[Session]] | None = None,
    default_model_id: str | None = None,
) -> tuple[list[PreferencePair], DataSummary]:
    """Pairs (with their split) from pairwise sessions, and a summary of the snapshot and of what was left out.

    implicit: the side the reward model prefers is chosen, confidence = P(that side); sessions scored by another
    model than `selection.model_id or default_model_id`, by a demo model (unless allowed), or unscored are left
    out. explicit: the side the user stated is chosen, confidence 1.
    """
    wanted_model = selection.model_id or default_model_id
    dropped: dict[str, int] = defaultdict(int)
    merged: dict[tuple[str, str, str], _Merged] = {}
    considered = 0
    for obs in observations:
        considered += 1
        session = obs.session
        if session.mode != "pairwise" or len(session.responses) != 2:
            dropped["not pairwise"] += 1
            continue
        left, right = session.responses[0].text, session.responses[1].text
        if left.strip() == right.strip():
            dropped["identical answers"] += 1
            continue
        if selection.source == "explicit":
            p_right = _explicit_p_right(session)
            if p_right is None:
                dropped["no explicit preference"] += 1
                continue
        else:
            if obs.p_right is None:
                dropped["not scored"] += 1
                continue
            if wanted_model is not None and obs.model_id != wanted_model:
                dropped["scored by another model"] += 1
                continue
            if obs.demo_model and not selection.include_demo:
                dropped["demo model"] += 1
                continue
            if obs.abstained and not selection.include_abstained:
                dropped["abstained"] += 1
                continue
            p_right = obs.p_right
        history = _history(session, earlier or {}) if selection.with_history else []
        prompt = format_prompt(session.query, history)
        # Either order of the same two answers is the same comparison: key on the sorted pair.
        a, b, p_a = (left, right, 1.0 - p_right) if left <= right else (right, left, p_right)
        entry = merged.setdefault((prompt, a, b), _Merged(prompt, a, b))
        entry.p_a.append(p_a)
        entry.sessions.append(session.session_id)
        entry.users.append(session.user_id)

    source = selection.source
    pairs: list[PreferencePair] = []
    for entry in merged.values():
        p_a = sum(entry.p_a) / len(entry.p_a)
        if p_a == 0.5:
            dropped["no preferred side"] += len(entry.sessions)
            continue
        a_wins = p_a > 0.5
        chosen, rejected = (entry.a, entry.b) if a_wins else (entry.b, entry.a)
        confidence = p_a if a_wins else 1.0 - p_a
        if source == "implicit" and confidence < selection.min_confidence:
            dropped["below min_confidence"] += len(entry.sessions)
            continue
        agree = sum((p > 0.5) == a_wins for p in entry.p_a) / len(entry.p_a)
        chosen, rejected = _completion(chosen), _completion(rejected)
        pairs.append(
            PreferencePair(
                pair_id=pair_id(entry.prompt, chosen, rejected),
                prompt=entry.prompt,
                chosen=chosen,
                rejected=rejected,
                confidence=1.0 if source == "explicit" and agree == 1.0 else confidence,
                source=source,
                sessions=tuple(entry.sessions),
                users=tuple(dict.fromkeys(entry.users)),
                model_id=wanted_model if source == "implicit" else None,
                agreement=agree,
            )
        )
    pairs.sort(key=lambda p: p.pair_id)
    if selection.max_pairs is not None and len(pairs) > selection.max_pairs:
        dropped["above max_pairs"] += len(pairs) - selection.max_pairs
        pairs = sorted(pairs, key=lambda p: _unit(selection.seed, p.pair_id))[: selection.max_pairs]
        pairs.sort(key=lambda p: p.pair_id)
    pairs = split_by_prompt(pairs, selection.test_fraction, selection.seed)
    return pairs, summarise(pairs, source, wanted_model if source == "implicit" else None, considered, dropped)


def pairs_from_verdicts(verdicts: Iterable[Verdict], *, require_consistent: bool = True) -> list[PreferencePair]:
    """Pairs from judge verdicts: the winner is chosen; ties, failures (and, by default, order-inconsistent
    verdicts) are left out. Confidence 1: the judge's verdict is the label."""
    pairs = []
    for v in verdicts:
        if v.winner not in ("a", "b") or (require_consistent and v.consistent is False):
            continue
        chosen, rejected = (v.answer_a, v.answer_b) if v.winner == "a" else (v.answer_b, v.answer_a)
        prompt = format_prompt(v.prompt)
        chosen, rejected = _completion(chosen), _completion(rejected)
        pairs.append(
            PreferencePair(
                pair_id=pair_id(prompt, chosen, rejected),
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                confidence=1.0,
                source="judge",
                sessions=(v.judgment_id,) if v.judgment_id else (),
                agreement=1.0,
            )
        )
    return pairs


def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_prompt(pairs: Sequence[PreferencePair], test_fraction: float, seed: int) -> list[PreferencePair]:
    """Mark pairs `test` when their prompt hashes (with `seed`) below `test_fraction`: stable as data grows.

    With two or more prompts and a positive fraction, at least one prompt is held out.
    """
    prompts = sorted({p.prompt for p in pairs}, key=lambda q: _unit(seed, q))
    test = {q for q in prompts if _unit(seed, q) < test_fraction}
    if not test and test_fraction > 0 and len(prompts) >= 2:
        test = {prompts[0]}
    return [msgspec.structs.replace(p, split="test" if p.prompt in test else "train") for p in pairs]


def snapshot_hash(pairs: Iterable[PreferencePair]) -> str:
    digest = hashlib.sha256()
    for p in sorted(pairs, key=lambda p: p.pair_id):
        digest.update(f"{p.pair_id}\t{p.split}\t{p.confidence:.6f}\n".encode())
    return digest.hexdigest()


def summarise(
    pairs: Sequence[PreferencePair],
    source: str,
    model_id: str | None,
    considered: int,
    dropped: Mapping[str, int] | None = None,
) -> DataSummary:
    train = [p for p in pairs if p.split == "train"]
    test = [p for p in pairs if p.split == "test"]
    return DataSummary(
        source=source,
        model_id=model_id,
        sessions=considered,
        pairs=len(pairs),
        train=len(train),
        test=len(test),
        prompts_train=len({p.prompt for p in train}),
        prompts_test=len({p.prompt for p in test}),
        mean_confidence=sum(p.confidence for p in pairs) / len(pairs) if pairs else None,
        sha256=snapshot_hash(pairs),
        dropped=dict(sorted((dropped or {}).items())),
    )


_PAIR_DECODER = msgspec.json.Decoder(PreferencePair)


def write_jsonl(pairs: Iterable[PreferencePair], path: Path) -> int:
    """One pair per line: `prompt`, `chosen`, `rejected` (what trl's DPOTrainer loads), confidence, provenance."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    n = 0
    with path.open("wb") as f:
        for pair in pairs:
            f.write(encoder.encode(pair))
            f.write(b"\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[PreferencePair]:
    with path.open("rb") as f:
        return [_PAIR_DECODER.decode(line) for line in f if line.strip()]
