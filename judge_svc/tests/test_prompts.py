from __future__ import annotations

import re

import pytest

from judge_svc.prompts import TEMPLATE_HASH, Judgment, ParseError, build_messages, format_judgment, parse_judgment
from judge_svc.testing import judgment_text
from tacit.schemas.judge import CRITERIA


def test_well_formed_reply_parses() -> None:
    parsed = parse_judgment(judgment_text(9, 3))
    assert isinstance(parsed, Judgment)
    assert (parsed.score_a, parsed.score_b, parsed.winner) == (9, 3, "A")
    assert parsed.criteria_a == dict.fromkeys(CRITERIA, 9)
    assert parsed.criteria_b == dict.fromkeys(CRITERIA, 3)
    assert parsed.reasoning == "Scripted."


def test_parser_is_case_insensitive_and_tolerates_surrounding_text() -> None:
    text = "Here is my evaluation:\n\n" + judgment_text(4, 4, "TIE").lower() + "\n\nThanks."
    parsed = parse_judgment(text)
    assert isinstance(parsed, Judgment)
    assert parsed.winner == "tie"
    assert parsed.score_a == parsed.score_b == 4


def test_rubric_dimensions_are_required_lines() -> None:
    rubric = ("relevance", "overall")
    assert isinstance(parse_judgment(judgment_text(7, 5), rubric), ParseError)
    criteria = (*CRITERIA, "rubric_relevance", "rubric_overall")
    parsed = parse_judgment(judgment_text(7, 5, criteria=criteria), rubric)
    assert isinstance(parsed, Judgment)
    assert parsed.criteria_a["rubric_relevance"] == 7


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "missing"),
        ("The first answer is better.", "missing"),
        (judgment_text(9, 3).replace("WINNER: A", "WINNER: first"), "not A, B or tie"),
        (judgment_text(9, 3).replace("WINNER: A\n", ""), "missing WINNER"),
        (judgment_text(9, 3).replace("SCORE_A: 9", "SCORE_A: 11"), "outside 1-10"),
        (judgment_text(9, 3).replace("SCORE_B: 3", "SCORE_B: 0"), "outside 1-10"),
        (judgment_text(9, 3).replace("SCORE_A: 9", "SCORE_A: 8.5"), "not an integer"),
        (judgment_text(9, 3).replace("SCORE_A: 9", "SCORE_A: nine"), "not an integer"),
        (judgment_text(9, 3) + "\nSCORE_A: 2", "twice"),
        (judgment_text(9, 3).replace("CLARITY: A=9 B=3", "CLARITY: 9"), "CLARITY"),
        (judgment_text(9, 3).replace("CLARITY: A=9 B=3\n", ""), "missing CLARITY"),
    ],
)
def test_malformed_replies_are_parse_errors_not_guesses(text: str, reason: str) -> None:
    parsed = parse_judgment(text)
    assert isinstance(parsed, ParseError)
    assert reason in parsed.detail


def test_template_hash_and_messages() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", TEMPLATE_HASH)
    messages = build_messages("Q?", "first answer", "second answer", reference="ref answer", rubric=("relevance",))
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = messages[0]["content"], messages[1]["content"]
    for name in CRITERIA:
        assert name.upper() in system
    assert "RUBRIC_RELEVANCE: A=<1-10> B=<1-10>" in system
    assert "WINNER: <A|B|tie>" in system
    assert user.index("first answer") < user.index("second answer")
    assert "\n\nHuman: Q?" in user
    assert "ref answer" in user
    # the worked examples in the system text are themselves well-formed replies
    example = format_judgment(dict.fromkeys(CRITERIA, 9), dict.fromkeys(CRITERIA, 3), 9, 3, "A", "x")
    assert isinstance(parse_judgment(example), Judgment)
