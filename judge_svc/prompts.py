"""The pairwise judge prompt (the reference's protocol, spec 8.6) and its strict parser.

The judge scores both answers 1-10 on the paper's five criteria (plus any rubric dimensions), gives an
overall score per answer, a WINNER line and one sentence of reasoning. The parser accepts only that
format: anything else is a `ParseError` value, never a guess.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tacit.schemas.judge import CRITERIA, Winner

__all__ = [
    "TEMPLATE_HASH",
    "Judgment",
    "ParseError",
    "build_messages",
    "criteria_for",
    "format_judgment",
    "parse_judgment",
]

_CRITERIA_TEXT = {
    "instruction_following": "how well the answer follows the prompt's instructions",
    "informativeness": "informative and useful without being verbose",
    "factuality": "factually correct (for creative prompts: internally consistent)",
    "clarity": "clear and coherent",
    "helpfulness": "overall helpfulness",
    "rubric_factuality": "free of factual errors",
    "rubric_informativeness": "how much useful information it gives",
    "rubric_relevance": "how relevant it is to the prompt",
    "rubric_overall": "overall quality",
}

SYSTEM = """You are an expert evaluator comparing two assistant answers to the same conversation prompt.
Judge them on these criteria, scoring each answer from 1 (worst) to 10 (best):
{criteria}
Then give each answer an overall score from 1 to 10 and name the better answer (or tie).
Reply in exactly this format, one item per line, and nothing else:
{format}

Example 1
Prompt: What is the capital of France?
Response A: The capital of France is Paris.
Response B: France is a country in Europe.
{example_1}

Example 2
Prompt: Write a two-line poem about autumn.
Response A: Golden leaves drift on the cooling breeze, / autumn hums softly through the trees.
Response B: Autumn is a season.
{example_2}

Example 3
Prompt: How do I reverse a list in Python?
Response A: Use my_list.reverse() to reverse in place, or my_list[::-1] for a reversed copy.
Response B: You can loop over the list backwards and append each item to a new list.
{example_3}"""

USER = """{prompt}
{reference}
[Response A]
{first}

[Response B]
{second}

Compare the two responses and reply in the format given."""

_EXAMPLES = (
    (9, 3, "A is correct and direct; B does not answer."),
    (9, 2, "A is a vivid poem; B is not a poem."),
    (8, 5, "A is idiomatic and complete; B works but is roundabout."),
)

TEMPLATE_VERSION = "pairwise-v1"
TEMPLATE_HASH = hashlib.sha256(
    "\x00".join((TEMPLATE_VERSION, SYSTEM, USER, repr(_CRITERIA_TEXT), repr(_EXAMPLES))).encode()
).hexdigest()
"""Changes whenever the template text, its criteria or examples change (part of every verdict's version)."""


def criteria_for(rubric: Sequence[str] = ()) -> tuple[str, ...]:
    """The five criteria followed by `rubric_<dim>` for each requested rubric dimension."""
    extra = tuple(dict.fromkeys(f"rubric_{dim}" for dim in rubric))
    return CRITERIA + extra


def format_judgment(
    criteria_a: dict[str, int],
    criteria_b: dict[str, int],
    score_a: int,
    score_b: int,
    winner: str,
    reasoning: str = "",
) -> str:
    """A reply in the exact format the template asks for (examples, test doubles, the local backend)."""
    lines = [f"{name.upper()}: A={criteria_a[name]} B={criteria_b[name]}" for name in criteria_a]
    lines += [f"SCORE_A: {score_a}", f"SCORE_B: {score_b}", f"WINNER: {winner}", f"REASONING: {reasoning}"]
    return "\n".join(lines)


def _format_spec(criteria: Sequence[str]) -> str:
    lines = [f"{name.upper()}: A=<1-10> B=<1-10>" for name in criteria]
    return "\n".join([*lines, "SCORE_A: <1-10>", "SCORE_B: <1-10>", "WINNER: <A|B|tie>", "REASONING: <one sentence>"])


def _example(criteria: Sequence[str], a: int, b: int, why: str) -> str:
    return format_judgment(dict.fromkeys(criteria, a), dict.fromkeys(criteria, b), a, b, "A", why)


def build_messages(
    prompt: str, first: str, second: str, *, reference: str | None = None, rubric: Sequence[str] = ()
) -> list[dict[str, str]]:
    """Chat messages asking the judge to compare `first` (shown as A) with `second` (shown as B)."""
    criteria = criteria_for(rubric)
    system = SYSTEM.format(
        criteria="\n".join(f"- {name.upper()}: {_CRITERIA_TEXT[name]}" for name in criteria),
        format=_format_spec(criteria),
        **{f"example_{i}": _example(criteria, *ex) for i, ex in enumerate(_EXAMPLES, 1)},
    )
    ref = f"\n[Reference answer]\n{reference}\n" if reference is not None else ""
    user = USER.format(prompt=f"\n\nHuman: {prompt}", reference=ref, first=first, second=second)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Judgment:
    """A parsed reply, in the labels as presented (A = shown first)."""

    criteria_a: dict[str, int]
    criteria_b: dict[str, int]
    score_a: int
    score_b: int
    winner: Winner
    reasoning: str = ""


@dataclass(frozen=True)
class ParseError:
    """A reply that does not follow the format; `detail` says what is wrong."""

    detail: str
    raw: str = field(default="", repr=False)


_LINE = re.compile(r"^\s*([A-Za-z_]+)\s*:\s*(.*?)\s*$")
_PAIR = re.compile(r"^A\s*=\s*(\d+)\s*,?\s*B\s*=\s*(\d+)$", re.IGNORECASE)
_INT = re.compile(r"^\d+$")
_WINNERS: dict[str, Winner] = {"a": "A", "b": "B", "tie": "tie"}


def _score(text: str, what: str) -> int | str:
    if not _INT.match(text):
        return f"{what}: {text!r} is not an integer"
    value = int(text)
    return value if 1 <= value <= 10 else f"{what}: {value} is outside 1-10"


def parse_judgment(text: str, rubric: Sequence[str] = ()) -> Judgment | ParseError:
    """Parse a reply strictly: every expected line exactly once, scores integers in 1-10, WINNER in A|B|tie."""
    criteria = criteria_for(rubric)
    expected = {*(name.upper() for name in criteria), "SCORE_A", "SCORE_B", "WINNER", "REASONING"}
    seen: dict[str, str] = {}
    for line in text.strip().splitlines():
        match = _LINE.match(line)
        if match is None:
            continue  # free text around the lines is tolerated; the lines themselves are not guessed
        key, value = match.group(1).upper(), match.group(2)
        if key not in expected:
            continue
        if key in seen:
            return ParseError(f"{key} appears twice", text)
        seen[key] = value
    missing = [key for key in ("SCORE_A", "SCORE_B", "WINNER") if key not in seen]
    missing += [name.upper() for name in criteria if name.upper() not in seen]
    if missing:
        return ParseError(f"missing {', '.join(missing)}", text)
    criteria_a: dict[str, int] = {}
    criteria_b: dict[str, int] = {}
    for name in criteria:
        pair = _PAIR.match(seen[name.upper()])
        if pair is None:
            return ParseError(f"{name.upper()}: expected 'A=<1-10> B=<1-10>', got {seen[name.upper()]!r}", text)
        for target, raw in ((criteria_a, pair.group(1)), (criteria_b, pair.group(2))):
            value = _score(raw, name.upper())
            if isinstance(value, str):
                return ParseError(value, text)
            target[name] = value
    overall = [_score(seen[key], key) for key in ("SCORE_A", "SCORE_B")]
    for value in overall:
        if isinstance(value, str):
            return ParseError(value, text)
    winner = _WINNERS.get(seen["WINNER"].strip().strip("*").lower())
    if winner is None:
        return ParseError(f"WINNER: {seen['WINNER']!r} is not A, B or tie", text)
    score_a, score_b = (int(v) for v in overall)
    return Judgment(criteria_a, criteria_b, score_a, score_b, winner, seen.get("REASONING", ""))
