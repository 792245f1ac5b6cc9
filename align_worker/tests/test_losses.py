"""Spec 8.4 losses against their closed forms on hand numbers."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from align_worker.training.losses import dpo_loss, flip_rate, robust_dpo_loss  # noqa: E402


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_flip_rate_is_one_minus_confidence_clamped() -> None:
    got = flip_rate(torch.tensor([1.0, 0.9, 0.6, 0.55, 0.5, 0.1]))
    assert torch.allclose(got, torch.tensor([0.0, 0.1, 0.4, 0.45, 0.45, 0.45]))


def test_dpo_on_hand_numbers() -> None:
    # h = (-10 - -12) - (-15 - -14) = 2 - (-1) = 3; beta = 0.1 -> -log sigmoid(0.3)
    loss = dpo_loss(torch.tensor([-10.0]), torch.tensor([-15.0]), torch.tensor([-12.0]), torch.tensor([-14.0]))
    assert loss.item() == pytest.approx(-_log_sigmoid(0.3), rel=1e-6)


def test_robust_dpo_uses_each_examples_own_flip_rate() -> None:
    pc, pr = torch.tensor([-10.0, -10.0]), torch.tensor([-15.0, -15.0])
    rc, rr = torch.tensor([-12.0, -12.0]), torch.tensor([-14.0, -14.0])
    confidence = torch.tensor([0.9, 0.55])  # eps 0.1 and 0.45
    loss = robust_dpo_loss(pc, pr, rc, rr, confidence, beta=0.1)
    forward, backward = -_log_sigmoid(0.3), -_log_sigmoid(-0.3)
    expected = [((1 - e) * forward - e * backward) / (1 - 2 * e) for e in (0.1, 0.45)]
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)
    # eps = 0.45: 5.5 l(h) - 4.5 l(-h), as the spec spells it out
    assert loss[1].item() == pytest.approx(5.5 * forward - 4.5 * backward, rel=1e-6)


def test_robust_dpo_with_full_confidence_is_dpo() -> None:
    args = (torch.tensor([-3.0]), torch.tensor([-4.0]), torch.tensor([-3.5]), torch.tensor([-3.9]))
    assert robust_dpo_loss(*args, torch.tensor([1.0])).item() == pytest.approx(dpo_loss(*args).item(), rel=1e-7)


def test_robust_dpo_gradient_matches_the_closed_form() -> None:
    pc = torch.tensor([-10.0], requires_grad=True)
    eps, beta = 0.2, 0.1
    loss = robust_dpo_loss(
        pc, torch.tensor([-15.0]), torch.tensor([-12.0]), torch.tensor([-14.0]), torch.tensor([1 - eps]), beta=beta
    )
    loss.sum().backward()
    h = 3.0
    sig = 1 / (1 + math.exp(-beta * h))
    # d/dh of [(1-e)(-log s(bh)) - e(-log s(-bh))]/(1-2e) = beta [-(1-e)(1-s) - e s]/(1-2e)
    expected = beta * (-(1 - eps) * (1 - sig) - eps * sig) / (1 - 2 * eps)
    assert pc.grad is not None
    assert pc.grad.item() == pytest.approx(expected, rel=1e-6)
