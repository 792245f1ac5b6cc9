"""The people a model scores, as the labels that re-estimate its adaptation prior (reward_svc.model.adapt).

Empirical Bayes over the population actually scored: when many of its people turn out to have side habits, each
user's few labels count for more. The estimate is one number per model, derived from stored labels only, so the
gateway keeps it in memory and recomputes it whenever those labels change (a new label, a rescoring, an erasure).
User ids never leave the gateway: reward_svc sees a pseudonym per request.
"""

from __future__ import annotations

from collections.abc import Sequence

from tacit.schemas.reward import PopulationLabel, PopulationRequest

__all__ = ["population_request"]


def population_request(rows: Sequence[tuple[str, float, int]]) -> PopulationRequest:
    """The request body for (user id, population probability, label) rows, users replaced by request pseudonyms."""
    pseudonyms: dict[str, str] = {}
    labels = [
        PopulationLabel(
            user=pseudonyms.setdefault(user, f"u{len(pseudonyms)}"),
            p_population=min(max(p, 0.0), 1.0),
            label=1 if label else 0,
        )
        for user, p, label in rows
    ]
    return PopulationRequest(labels=labels)
