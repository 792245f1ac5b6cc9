"""Tables 3/5 figures on hand-made verdicts, with hand-computed expectations."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from judge_svc.evaluation import (
    JudgedPair,
    evaluate,
    length_controlled_win_rate,
    mean_se,
    plot_evaluation,
    render_evaluation_png,
)
from tacit.schemas.judge import EvaluationSummary, Sampling, Verdict, Winner


def verdict(
    winner: Winner | None, score_a: float | None, score_b: float | None, consistent: bool | None = True
) -> Verdict:
    return Verdict(
        winner=winner,
        winner_rule="from_scores",
        consistent=None if winner is None else consistent,
        order_winners=(winner,),
        score_a=score_a,
        score_b=score_b,
        criteria_a={},
        criteria_b={},
        outcomes=(),
        backend="fake",
        model="m",
        template_hash="h",
        sampling=Sampling(),
        tokens_in=0,
        tokens_out=0,
        cached=False,
        error="boom" if winner is None else None,
    )


def words(n: int) -> str:
    return " ".join(["w"] * n)


# (sft words, aligned words, winner with SFT = A, score_a, score_b); mean lengths 1, 2, 4, 5, 7, 9.
ROWS = [
    (4, 6, "B", 5, 7),  # mean 5, win, diff +2
    (1, 1, "B", 4, 8),  # mean 1, win, diff +4
    (8, 10, "tie", 6, 6),  # mean 9, tie, diff 0
    (3, 5, "A", 7, 3),  # mean 4, loss, diff -4
    (2, 2, "tie", 5, 5),  # mean 2, tie, diff 0
    (6, 8, "B", 6, 9),  # mean 7, win, diff +3
]


def pairs() -> list[JudgedPair | tuple[str, str, str, Verdict]]:
    out: list[JudgedPair | tuple[str, str, str, Verdict]] = [
        ("q", words(s), words(a), verdict(w, sa, sb))  # type: ignore[arg-type]
        for s, a, w, sa, sb in ROWS
    ]
    out.append(("q", words(50), words(1), verdict(None, None, None)))  # a failure: counted, never scored
    return out


def test_overall_figures() -> None:
    summary = evaluate(pairs(), ridge=0.0)
    assert (summary.pairs, summary.failures) == (7, 1)
    o = summary.overall
    assert (o.n, o.wins, o.ties, o.losses) == (6, 3, 2, 1)
    assert (o.win_rate, o.tie_rate, o.loss_rate) == pytest.approx((1 / 2, 1 / 3, 1 / 6))
    # diffs 2, 4, 0, -4, 0, 3: mean 5/6; sum of squared deviations 45 - 6 * 25/36 = 245/6; var 49/6; se 7/6.
    assert o.score_diff.mean == pytest.approx(5 / 6)
    assert o.score_diff.se == pytest.approx(7 / 6)
    assert o.sft_length.mean == pytest.approx(4.0)
    assert o.aligned_length.mean == pytest.approx(16 / 3)
    assert o.mean_length_range is None


def test_terciles_split_by_mean_length() -> None:
    short, medium, long = evaluate(pairs()).terciles
    assert (short.name, medium.name, long.name) == ("short", "medium", "long")
    assert (short.wins, short.ties, short.losses, short.mean_length_range) == (1, 1, 0, (1.0, 2.0))
    assert (medium.wins, medium.ties, medium.losses, medium.mean_length_range) == (1, 0, 1, (4.0, 5.0))
    assert (long.wins, long.ties, long.losses, long.mean_length_range) == (1, 1, 0, (7.0, 9.0))
    assert (short.score_diff.mean, medium.score_diff.mean, long.score_diff.mean) == (2.0, -1.0, 1.5)
    # diffs 4 and 0: sd sqrt(8), se sqrt(8)/sqrt(2) = 2
    assert short.score_diff.se == pytest.approx(2.0)
    assert short.win_rate == pytest.approx(0.5)
    assert medium.aligned_length.mean == pytest.approx(5.5)


def test_length_controlled_win_rate_overall() -> None:
    # wins at length difference 0: 1 of 2, at 2: 2 of 4 -> saturated fit, intercept 0, slope 0
    summary = evaluate(pairs(), ridge=0.0)
    assert summary.lc_win_rate == pytest.approx(0.5, abs=1e-6)
    assert summary.lc_slope_per_100_words == pytest.approx(0.0, abs=1e-6)
    assert "sigmoid(intercept)" in summary.lc_method


def test_length_controlled_win_rate_removes_the_length_effect() -> None:
    # difference 0: 1 win in 4 (logit -ln 3); difference 2: 3 in 4 (logit ln 3): raw win rate 0.5, at zero 0.25
    wins = [1, 0, 0, 0, 1, 1, 1, 0]
    diffs = [0, 0, 0, 0, 2, 2, 2, 2]
    lc, slope = length_controlled_win_rate(wins, diffs, ridge=0.0)
    assert lc == pytest.approx(0.25, abs=1e-6)
    assert slope == pytest.approx(100 * math.log(3), rel=1e-6)
    ridged, _ = length_controlled_win_rate(wins, diffs)  # the default ridge barely moves it
    assert ridged == pytest.approx(0.25, abs=1e-3)


def test_length_controlled_degenerate_cases() -> None:
    assert length_controlled_win_rate([], []) == (None, None)
    lc, slope = length_controlled_win_rate([1, 0, 0], [0, 0, 0])
    assert lc == pytest.approx(1 / 3)
    assert slope is None
    assert length_controlled_win_rate([1, 1], [3, -1]) == (1.0, None)
    lc, slope = length_controlled_win_rate([0, 1], [-5, 5])  # perfectly separated: finite thanks to the ridge
    assert lc == pytest.approx(0.5, abs=1e-6)
    assert slope is not None
    assert slope > 0


def test_aligned_label_a_flips_the_sides() -> None:
    flipped = [JudgedPair("q", words(1), words(3), verdict("A", 9, 2), aligned_label="A")]
    o = evaluate(flipped).overall
    assert (o.wins, o.losses) == (1, 0)
    assert o.score_diff.mean == 7.0
    assert o.score_diff.se is None


def test_empty_input_and_json_round_trip(tmp_path: Path) -> None:
    empty = evaluate([])
    assert (empty.pairs, empty.overall.n, empty.overall.win_rate, empty.lc_win_rate) == (0, 0, None, None)
    assert [t.n for t in empty.terciles] == [0, 0, 0]
    summary = evaluate(pairs())
    assert msgspec.json.decode(msgspec.json.encode(summary), type=EvaluationSummary) == summary
    assert mean_se([1.0, 3.0]).se == pytest.approx(1.0)


def test_consistency_rate_overall_and_per_tercile() -> None:
    # Per ROWS index: both orders agreed (True), disagreed (False) or one order only (None).
    flags = [True, False, None, True, True, False]
    judged: list[JudgedPair | tuple[str, str, str, Verdict]] = [
        ("q", words(s), words(a), verdict(w, sa, sb, consistent=flag))  # type: ignore[arg-type]
        for (s, a, w, sa, sb), flag in zip(ROWS, flags, strict=True)
    ]
    judged.append(("q", words(50), words(1), verdict(None, None, None)))  # failures never count
    summary = evaluate(judged)
    o = summary.overall
    assert (o.judged_both_orders, o.consistent) == (5, 3)
    assert o.consistency_rate == pytest.approx(3 / 5)
    short, medium, long = summary.terciles
    # short = rows 1 (False), 4 (True); medium = rows 3 (True), 0 (True); long = rows 5 (False), 2 (None)
    assert (short.judged_both_orders, short.consistent, short.consistency_rate) == (2, 1, 0.5)
    assert (medium.judged_both_orders, medium.consistent, medium.consistency_rate) == (2, 2, 1.0)
    assert (long.judged_both_orders, long.consistent, long.consistency_rate) == (1, 0, 0.0)


def test_consistency_rate_is_none_without_two_order_verdicts() -> None:
    single = [("q", words(1), words(2), verdict("B", 3, 6, consistent=None))]
    o = evaluate(single).overall
    assert (o.n, o.judged_both_orders, o.consistent, o.consistency_rate) == (1, 0, 0, None)
    assert evaluate([]).overall.consistency_rate is None


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = plot_evaluation(evaluate(pairs()), tmp_path / "eval.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_evaluation(evaluate([]), tmp_path / "empty.png").stat().st_size > 0
    png = render_evaluation_png(evaluate(pairs()), title="DPO vs SFT")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[16:24] == (1000).to_bytes(4, "big") + (400).to_bytes(4, "big")  # IHDR: two panels, 10 x 4 in
