"""The robust DPO + NLL objective as training runs it: trl's DPOTrainer with a per-example flip rate, and the loss
terms with their weights.

Training uses trl's own losses: `loss_type=["robust"]` (or `["sigmoid"]` for plain DPO), plus trl's `"sft"` term
(the chosen response's mean token NLL) weighted by `nll_weight`. trl's robust loss reads one global
`label_smoothing`; `RobustDPOTrainer` puts a (batch,) tensor of per-example flip rates eps_i = clamp(1 -
confidence_i, 0, 0.45) in its place, which gives spec 8.4 per example. `losses.py` writes the same objective out
by hand: it is the test oracle this is checked against (align_worker/tests/test_trainers.py), never called here.
"""

from __future__ import annotations

from typing import Any

from align_worker.training.losses import flip_rate

__all__ = ["dpo_classes", "loss_terms"]  # and RobustDPOTrainer, built on first use (module __getattr__)


def loss_terms(*, robust: bool, nll_weight: float) -> tuple[list[str], list[float]]:
    """trl's `loss_type` and `loss_weights`: the preference loss (robust or sigmoid), then the NLL term if weighted."""
    losses, weights = ["robust" if robust else "sigmoid"], [1.0]
    if nll_weight > 0:
        losses.append("sft")  # trl's "sft" term: the chosen response's mean token NLL
        weights.append(nll_weight)
    return losses, weights


def dpo_classes() -> tuple[type, type]:
    """RobustDPOTrainer and its collator, built on first use so importing this module does not import trl."""
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer

    class ConfidenceCollator(DataCollatorForPreference):
        """trl's preference collator, also carrying each pair's `confidence` as a float tensor."""

        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch: dict[str, Any] = super().torch_call(examples)
            if examples and "confidence" in examples[0]:
                batch["confidence"] = torch.tensor([float(e["confidence"]) for e in examples], dtype=torch.float32)
            return batch

    class _RobustDPOTrainer(DPOTrainer):
        """DPOTrainer whose `robust` loss uses a per-example flip rate eps_i = clamp(1 - confidence_i, 0, 0.45).

        trl's robust loss reads one global `label_smoothing`; its formula broadcasts, so a (batch,) tensor in its
        place gives exactly spec 8.4 per example. It is swapped in for the duration of one loss computation.
        """

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None and "confidence" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "confidence"]

        def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
            confidence = inputs.pop("confidence", None)
            if confidence is None or "robust" not in self.loss_types:
                return super()._compute_loss(model, inputs, return_outputs)
            shared = self.label_smoothing
            # A (batch,) tensor where trl declares a float: its robust formula broadcasts it per example.
            self.label_smoothing = flip_rate(confidence.to(self.accelerator.device, torch.float32))  # type: ignore[assignment]
            try:
                return super()._compute_loss(model, inputs, return_outputs)
            finally:
                self.label_smoothing = shared

    return _RobustDPOTrainer, ConfidenceCollator


def __getattr__(name: str) -> Any:
    # `from align_worker.training.rdpo import RobustDPOTrainer` works without importing trl at module import.
    if name == "RobustDPOTrainer":
        return dpo_classes()[0]
    raise AttributeError(name)
