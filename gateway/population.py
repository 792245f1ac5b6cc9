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


def population_request(rows: Sequence[tuple[str, float, int, str]]) -> PopulationRequest:
    """The request body for (user id, population probability, label, task id) rows, users and tasks replaced by
    request pseudonyms."""
    users: dict[str, str] = {}
    tasks: dict[tuple[str, str], str] = {}
    labels = [
        PopulationLabel(
            user=users.setdefault(user, f"u{len(users)}"),
            p_population=min(max(p, 0.0), 1.0),
            label=1 if label else 0,
            task=tasks.setdefault((user, task), f"t{len(tasks)}"),
        )
        for user, p, label, task in rows
    ]
    return PopulationRequest(labels=labels)
