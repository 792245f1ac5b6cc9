"""Preference losses of spec 8.4, per example, on summed response log-probabilities (torch, imported lazily).

The test oracle: training never calls these. It runs trl's losses as configured in `rdpo.py`, and
align_worker/tests/test_trainers.py checks them against the formulas written out here.

`h = [lp_pi(y_w) - lp_ref(y_w)] - [lp_pi(y_l) - lp_ref(y_l)]` with `lp` the sum of the response's token
log-probabilities given the prompt. Robust DPO (Chowdhury et al.) takes a *per-example* flip rate
`eps_i = clamp(1 - confidence_i, 0, 0.45)`, where `confidence_i` is the probability that the **chosen** side is
the preferred one (the reference passed P(right) whatever the chosen side was: pitfall P8). The NLL term is the
chosen response's negative log-likelihood; `nll_mean_tokens` divides it by its token count (the reference sums,
pitfall P9, which lets it dwarf the preference term).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["EPS_MAX", "dpo_loss", "flip_rate", "robust_dpo_loss"]

#: Upper clamp of the per-example flip rate (the reference's 0.45; 0.5 would divide by zero).
EPS_MAX = 0.45


def flip_rate(confidence: torch.Tensor) -> torch.Tensor:
    """eps_i = clamp(1 - confidence_i, 0, 0.45): how likely the pair's label is flipped."""
    return (1.0 - confidence).clamp(0.0, EPS_MAX)


def _margin(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
) -> torch.Tensor:
    return (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-example sigmoid DPO: -(1 - ls) log sigmoid(beta h) - ls log sigmoid(-beta h)."""
    import torch.nn.functional as F  # noqa: N812

    h = _margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def robust_dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    confidence: torch.Tensor,
    *,
    beta: float = 0.1,
) -> torch.Tensor:
    """Per-example robust DPO: [(1 - eps) l(h) - eps l(-h)] / (1 - 2 eps) with l(h) = -log sigmoid(beta h)."""
    import torch.nn.functional as F  # noqa: N812

    h = _margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    eps = flip_rate(confidence)
    forward = -F.logsigmoid(beta * h)
    backward = -F.logsigmoid(-beta * h)
    return ((1 - eps) * forward - eps * backward) / (1 - 2 * eps)
