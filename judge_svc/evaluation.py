"""Aligned-vs-SFT evaluation from judge verdicts: the figures of the paper's Tables 3 and 5 (spec 8.6).

Input: judged pairs `(prompt, sft_answer, aligned_answer, verdict)` (or `JudgedPair`, which also says which
verdict label the aligned answer had; by default B, i.e. the request sent the SFT answer as `answer_a`).

Definitions (all pure numpy, no I/O except `plot_evaluation`):

* **Failures** (verdict winner None) are counted in `failures` and left out of every other figure.
* **Rates**: wins, ties and losses of the aligned answer over the judged pairs; ties count in the denominator
  (as in the reference code), so win + tie + loss = 1.
* **Score difference**: the judge's overall score of the aligned answer minus the SFT answer's (each averaged
  over the presentation orders by the judge), mean ± standard error `sd(ddof=1) / sqrt(n)`.
* **Consistency rate**: among the judged pairs whose verdict came from both presentation orders
  (`verdict.consistent` not None), the share whose two orders named the same winner; None when there is none.
  A low rate means the judge follows the position more than the answers (its disagreements are the ties).
* **Lengths**: whitespace word counts (`len(text.split())`, the paper's "Length"), mean ± SE.
* **Terciles** (Table 5): judged pairs sorted by the mean of both answers' lengths (stable: equal lengths keep
  input order) and split into three consecutive slices with `numpy.array_split` (sizes differ by at most one,
  the larger ones first): short, medium, long. The paper sorts by the DPO answer's length per model; here the
  mean of both answers is used so that a slice holds pairs of comparable length on both sides.
* **Length-controlled win rate**: a logistic regression `P(win) = sigmoid(a + b * d / s)` fitted by penalised
  Newton-Raphson, where `win` is 1 when the aligned answer wins (ties and losses are 0, consistent with the
  win rate), `d` = aligned minus SFT length in words and `s` = root-mean-square of `d` (a scale that keeps
  `d = 0` at zero). The slope carries a small ridge penalty (`ridge / 2 * b**2`, default 1e-3) so that a
  perfectly length-separated sample still has a finite fit; the intercept is unpenalised. The reported figure
  is `sigmoid(a)`: the predicted win rate of an aligned answer as long as the SFT one. When every `d` is zero,
  or every pair has the same outcome, the fit degenerates and the plain win rate is reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from tacit.schemas.judge import EvaluationSlice, EvaluationSummary, MeanSE, Verdict

__all__ = [
    "LC_METHOD",
    "JudgedPair",
    "evaluate",
    "length_controlled_win_rate",
    "mean_se",
    "plot_evaluation",
    "render_evaluation_png",
    "word_count",
]

TERCILES = ("short", "medium", "long")
LC_METHOD = (
    "logistic regression of aligned win (ties and losses = 0) on (aligned - SFT) word-count difference scaled by "
    "its RMS, Newton-Raphson with ridge {ridge:g} on the slope only; reported: sigmoid(intercept), the win rate "
    "at zero length difference"
)
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class JudgedPair:
    """One judged prompt: the SFT and aligned answers and the judge's verdict on them."""

    prompt: str
    sft_answer: str
    aligned_answer: str
    verdict: Verdict
    aligned_label: Literal["A", "B"] = "B"
    """The verdict's label of the aligned answer (B: the request's `answer_b`)."""


def word_count(text: str) -> int:
    """Whitespace word count (the paper's length unit)."""
    return len(text.split())


def mean_se(values: Sequence[float] | Floats) -> MeanSE:
    """Mean ± standard error (sd with ddof=1 over sqrt(n)); None where undefined."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return MeanSE(mean=None, se=None, n=0)
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    return MeanSE(mean=float(x.mean()), se=se, n=n)


def _sigmoid(z: Floats) -> Floats:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def length_controlled_win_rate(
    wins: Sequence[float] | Floats, length_diff: Sequence[float] | Floats, *, ridge: float = 1e-3
) -> tuple[float | None, float | None]:
    """(win rate at zero length difference, slope in log-odds per 100 words); see the module docstring."""
    y = np.asarray(wins, dtype=np.float64)
    d = np.asarray(length_diff, dtype=np.float64)
    if y.size == 0:
        return None, None
    scale = float(np.sqrt(np.mean(d**2)))
    if scale == 0.0 or np.all(y == y[0]):
        return float(y.mean()), None
    x = np.column_stack([np.ones_like(d), d / scale])
    penalty = np.array([0.0, ridge])
    beta = np.zeros(2)

    def objective(b: Floats) -> float:
        eta = x @ b
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * np.sum(penalty * b**2))

    current = objective(beta)
    for _ in range(200):
        p = _sigmoid(x @ beta)
        grad = x.T @ (p - y) + penalty * beta
        hess = (x.T * (p * (1 - p))) @ x + np.diag(penalty) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-10:
            candidate = beta - t * step
            value = objective(candidate)
            if value <= current:
                break
            t /= 2
        beta, previous, current = candidate, current, value
        if previous - current < 1e-12 and float(np.max(np.abs(t * step))) < 1e-9:
            break
    return float(_sigmoid(np.array([beta[0]]))[0]), float(beta[1] * 100.0 / scale)


def _slice(
    name: str,
    outcome: Floats,
    diff: Floats,
    sft_len: Floats,
    aligned_len: Floats,
    mean_len: Floats | None,
    consistent: Floats,
) -> EvaluationSlice:
    n = int(outcome.size)
    wins, ties, losses = int(np.sum(outcome == 1)), int(np.sum(outcome == 0)), int(np.sum(outcome == -1))
    both = int(np.sum(~np.isnan(consistent)))
    agreed = int(np.sum(consistent == 1))
    return EvaluationSlice(
        name=name,
        n=n,
        wins=wins,
        ties=ties,
        losses=losses,
        win_rate=wins / n if n else None,
        tie_rate=ties / n if n else None,
        loss_rate=losses / n if n else None,
        score_diff=mean_se(diff),
        sft_length=mean_se(sft_len),
        aligned_length=mean_se(aligned_len),
        mean_length_range=(float(mean_len.min()), float(mean_len.max())) if mean_len is not None and n else None,
        judged_both_orders=both,
        consistent=agreed,
        consistency_rate=agreed / both if both else None,
    )


def evaluate(pairs: Iterable[JudgedPair | tuple[str, str, str, Verdict]], *, ridge: float = 1e-3) -> EvaluationSummary:
    """Tables 3/5 figures for judged (prompt, SFT answer, aligned answer, verdict) pairs."""
    items = [p if isinstance(p, JudgedPair) else JudgedPair(*p) for p in pairs]
    judged = [p for p in items if p.verdict.winner is not None]
    outcome = np.array(
        [0 if p.verdict.winner == "tie" else (1 if p.verdict.winner == p.aligned_label else -1) for p in judged],
        dtype=np.float64,
    )
    sign = {"A": -1.0, "B": 1.0}
    # Aligned minus SFT overall score per judged pair (NaN where a verdict carries no scores).
    full_diff = np.array(
        [
            sign[p.aligned_label] * (p.verdict.score_b - p.verdict.score_a)
            if p.verdict.score_a is not None and p.verdict.score_b is not None
            else np.nan
            for p in judged
        ],
        dtype=np.float64,
    )
    diff = full_diff[~np.isnan(full_diff)]
    sft_len = np.array([word_count(p.sft_answer) for p in judged], dtype=np.float64)
    aligned_len = np.array([word_count(p.aligned_answer) for p in judged], dtype=np.float64)
    mean_len = (sft_len + aligned_len) / 2
    # 1 = both orders agreed, 0 = they disagreed, NaN = judged in one order only.
    consistent = np.array(
        [np.nan if p.verdict.consistent is None else float(p.verdict.consistent) for p in judged], dtype=np.float64
    )
    overall = _slice("all", outcome, diff, sft_len, aligned_len, None, consistent)
    order = np.argsort(mean_len, kind="stable")
    terciles = []
    for name, idx in zip(TERCILES, np.array_split(order, 3), strict=True):
        part = full_diff[idx]
        terciles.append(
            _slice(
                name,
                outcome[idx],
                part[~np.isnan(part)],
                sft_len[idx],
                aligned_len[idx],
                mean_len[idx],
                consistent[idx],
            )
        )
    lc, slope = length_controlled_win_rate((outcome == 1).astype(np.float64), aligned_len - sft_len, ridge=ridge)
    return EvaluationSummary(
        pairs=len(items),
        failures=len(items) - len(judged),
        overall=overall,
        terciles=tuple(terciles),
        lc_win_rate=lc,
        lc_slope_per_100_words=slope,
        lc_method=LC_METHOD.format(ridge=ridge),
    )


def render_evaluation_png(summary: EvaluationSummary, *, title: str = "Aligned vs SFT") -> bytes:
    """The evaluation plot as PNG bytes (Agg, no display): win/tie/loss per slice, score difference ± SE per slice."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    slices = [summary.overall, *summary.terciles]
    labels = [f"{s.name}\n(n={s.n})" for s in slices]
    rates = {
        "win": [s.win_rate or 0.0 for s in slices],
        "tie": [s.tie_rate or 0.0 for s in slices],
        "loss": [s.loss_rate or 0.0 for s in slices],
    }
    colors = {"win": "#2a9d8f", "tie": "#bdbdbd", "loss": "#e76f51"}
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    bars, diffs = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    bottom = np.zeros(len(slices))
    for key, values in rates.items():
        bars.bar(labels, values, bottom=bottom, label=key, color=colors[key])
        bottom += np.asarray(values)
    if summary.lc_win_rate is not None:
        bars.axhline(summary.lc_win_rate, color="black", linestyle="--", linewidth=1, label="LC win rate")
    bars.set_ylim(0, 1)
    bars.set_ylabel("share of judged pairs (aligned vs SFT)")
    bars.legend(loc="upper right", fontsize="small")
    # Score difference: slices without a mean are left empty rather than drawn at zero.
    x = np.arange(len(slices))
    means = np.array([np.nan if s.score_diff.mean is None else s.score_diff.mean for s in slices])
    errors = np.array([0.0 if s.score_diff.se is None else s.score_diff.se for s in slices])
    diffs.errorbar(x, means, yerr=errors, fmt="o", color="#264653", capsize=4)
    diffs.axhline(0.0, color="grey", linewidth=0.8)
    diffs.set_xticks(x, labels)
    diffs.set_xlim(-0.5, len(slices) - 0.5)
    diffs.set_ylabel("score difference (aligned - SFT) ± SE")
    consistency = summary.overall.consistency_rate
    extra = f", order consistency: {consistency:.0%}" if consistency is not None else ""
    fig.suptitle(f"{title} (judged: {summary.overall.n}, failures: {summary.failures}{extra})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_evaluation(summary: EvaluationSummary, path: Path | str, *, title: str = "Aligned vs SFT") -> Path:
    """Write `render_evaluation_png` to `path`."""
    path = Path(path)
    path.write_bytes(render_evaluation_png(summary, title=title))
    return path
