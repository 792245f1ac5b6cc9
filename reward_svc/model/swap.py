"""Left/right symmetry of pairwise features: which column each feature becomes when the two responses swap.

A pairwise row describes response 1 (left, `response_A_*`, `*_left`) and response 2 (right, `response_B_*`,
`*_right`). Swapping the responses moves every sided feature to its partner column; `comparison` differences and
`which_side` flags change sign and `comparison` ratios invert (spec 3.3); everything else (the question, the
webcam, composing time, agreement of the two modalities) stays. The label flips.
"""

# ruff: noqa: N803  (scikit-learn's convention: X is the feature matrix)

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SwapPlan", "partner", "swap_plan", "symmetric_closure"]

# Above this an inverted ratio means "the denominator was 0"; it maps back to 0 so swapping twice is exact.
RATIO_INF = 1e6

_SIDE_TOKENS = (
    (re.compile(r"^response_A_"), "response_B_"),
    (re.compile(r"^response_B_"), "response_A_"),
    (re.compile(r"_left(?=_|$)"), "_right"),
    (re.compile(r"_right(?=_|$)"), "_left"),
)


def partner(name: str) -> str | None:
    """The column `name` becomes when the sides swap, or None when it is not sided."""
    for pattern, repl in _SIDE_TOKENS:
        if pattern.search(name):
            return pattern.sub(repl, name, count=1)
    return None


def _kind(name: str) -> str:
    if "_comparison_" in name:
        if "which_side" in name or name.endswith("_diff"):
            return "negate"
        if name.endswith("_ratio"):
            return "invert"
    return "keep"


@dataclass(frozen=True)
class SwapPlan:
    """Column permutation plus sign flips and inversions that mirror a feature matrix."""

    source: npt.NDArray[np.intp]
    negate: npt.NDArray[np.bool_]
    invert: npt.NDArray[np.bool_]

    def apply(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """X with the responses swapped (NaN stays NaN)."""
        out = np.array(X, dtype=np.float64)[:, self.source]
        if self.negate.any():
            out[:, self.negate] *= -1.0
        if self.invert.any():
            r = out[:, self.invert]
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = np.where(r >= RATIO_INF, 0.0, np.where(r <= 0, RATIO_INF, 1.0 / r))
            out[:, self.invert] = np.where(np.isnan(r), np.nan, inv)
        return out


def swap_plan(names: list[str]) -> SwapPlan:
    """The plan for these columns; raises ValueError naming sided features whose partner is absent."""
    index = {n: i for i, n in enumerate(names)}
    source = np.arange(len(names), dtype=np.intp)
    missing = []
    for i, name in enumerate(names):
        other = partner(name)
        if other is None:
            continue
        if other not in index:
            missing.append(name)
            continue
        source[i] = index[other]
    if missing:
        raise ValueError(f"no partner column for {len(missing)} sided features, e.g. {', '.join(missing[:4])}")
    kinds = [_kind(n) for n in names]
    return SwapPlan(
        source=source,
        negate=np.array([k == "negate" for k in kinds], dtype=np.bool_),
        invert=np.array([k == "invert" for k in kinds], dtype=np.bool_),
    )


def symmetric_closure(names: list[str], available: list[str]) -> list[str]:
    """`names` plus the partner of every sided one (from `available`), order kept, partners appended."""
    out = list(dict.fromkeys(names))
    seen = set(out)
    for name in list(out):
        other = partner(name)
        if other is not None and other not in seen and other in available:
            out.append(other)
            seen.add(other)
    return out
