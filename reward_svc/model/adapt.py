"""Per-user adaptation: a user's own explicit labels move the population model's probability, by as much as they say.

Model (a "side habit" mixture). On each question, user u either judges the content, and then chooses like the
population model says (P(class 1) = p, the calibrated population probability), or, with probability h_u, picks
their habitual side s_u whatever the content (left/right for pairwise, current/previous for pointwise):

    P(y = 1 | p) = (1 - h_u) p + h_u [s_u = 1]

This is the strongest per-user effect seen in IFLLM (one held-out worker chose the left answer in 35 of 38
questions) and it is also exactly what a "relabel a share of a user's questions towards one side" robustness check
injects. An offset on the log-odds cannot express it: a confident population probability would still override a
user who never looks at the content.

Prior. h = 0 (no habit) with probability 1 - w; otherwise h ~ Beta(1/2, 1/2) (Jeffreys) on a grid in (0, 1) and s
either side. The
weight w is estimated by maximum marginal likelihood from training users (on out-of-fold population probabilities,
never in-sample ones, which would explain each user's labels already) but never below `MIN_HABIT_WEIGHT` = 0.5: the
prior never claims better than even odds that a new user has no side habit, so a training population without such
users cannot switch adaptation off. The posterior follows the evidence: 5 of 5 labels on one side make a habit far
more likely than content-driven choices that happen to agree; a 3/2 split leaves the population model in charge.

The state kept per user is the log-likelihood on the state grid (2 x HABITS + 1 floats), updated by adding one
term per labelled question: cheap to store beside the user's data and to erase with them.

Labels of one task are not independent evidence of a habit. Within an IFLLM task the same two LLMs keep their sides,
and a user's labels within a task agree more often than their labels across tasks: 0.60 against 0.49 in the dev
subset, where a user's preferred LLM does not carry over to other tasks either. A streak inside one task is mostly
about that task. Each label's log-likelihood term is therefore weighted by the design effect of its task,
1 / (1 + (n - 1) rho), where n is how many of the user's labels come from that task. rho
(`task_correlation`) is the within-task label correlation beyond the across-task one, estimated on the training
users (`estimate_task_correlation`). A habit that holds across tasks still adds up, one task at a time. Labels
without a task count alone, as rho = 0 would count them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "HABITS",
    "MIN_HABIT_WEIGHT",
    "UserPrior",
    "estimate_task_correlation",
    "fit_prior",
    "task_weights",
    "user_log_likelihood",
]

#: Habit strengths h of the biased states (the unbiased state h = 0 is separate): a uniform grid on (0, 1).
HABITS: npt.NDArray[np.float64] = (np.arange(40) + 0.5) / 40
#: The prior weight of "this user has a side habit" never falls below this (see the module docstring).
MIN_HABIT_WEIGHT = 0.5
_EPS = 1e-9


def _states() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(h, s) of every state: index 0 is h = 0; then every habit towards class 0, then towards class 1."""
    h = np.concatenate([[0.0], HABITS, HABITS])
    s = np.concatenate([[0.0], np.zeros(HABITS.size), np.ones(HABITS.size)])
    return h, s


_H, _S = _states()
N_STATES = _H.size
# Habit strength, when there is one: Jeffreys' Beta(1/2, 1/2) (the reference prior for a proportion), which leaves
# room for near-total habits like 35 of 38; either side with probability 1/2. Log weights of the biased states.
_JEFFREYS = 1.0 / np.sqrt(HABITS * (1.0 - HABITS))
_LOG_HABIT_SHAPE = np.log(np.concatenate([_JEFFREYS, _JEFFREYS]) / (2.0 * _JEFFREYS.sum()))


def _p_class1(p_population: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """P(class 1) of each question (rows) under each state (columns)."""
    p = np.clip(np.asarray(p_population, dtype=np.float64), _EPS, 1 - _EPS)[:, None]
    return np.asarray((1.0 - _H) * p + _H * _S)


def task_weights(tasks: Sequence[Any] | None, n: int, task_correlation: float) -> npt.NDArray[np.float64]:
    """Each of one user's n labels weighted by its task's design effect, 1 / (1 + (n_task - 1) rho).

    A task of None (unknown) counts alone."""
    if tasks is None or task_correlation <= 0.0:
        return np.ones(n)
    keys = [f"\x00{i}" if task is None else str(task) for i, task in enumerate(tasks)]
    _, inverse, counts = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True, return_counts=True)
    return np.asarray(1.0 / (1.0 + (counts[inverse] - 1) * task_correlation), dtype=np.float64)


def user_log_likelihood(
    p_population: npt.ArrayLike,
    labels: npt.ArrayLike,
    tasks: Sequence[Any] | None = None,
    task_correlation: float = 0.0,
) -> npt.NDArray[np.float64]:
    """log P(labels | state) for one user's labelled questions (population P(class 1) of each question).

    With `tasks` and `task_correlation` > 0, each label's term is weighted by its task's design effect
    (`task_weights`); without them every label counts fully."""
    p = np.atleast_1d(np.asarray(p_population, dtype=np.float64))
    y = np.atleast_1d(np.asarray(labels, dtype=np.float64))[:, None]
    w = task_weights(tasks, y.shape[0], task_correlation)[:, None]
    q = np.clip(_p_class1(p), _EPS, 1 - _EPS)
    return np.asarray(np.sum(w * (y * np.log(q) + (1.0 - y) * np.log1p(-q)), axis=0))


def estimate_task_correlation(labels: npt.ArrayLike, users: npt.ArrayLike, tasks: npt.ArrayLike) -> float:
    """The within-task label correlation beyond the across-task one, pooled over users, in [0, 1].

    Over all pairs of one user's labels: agreement within a task minus agreement across tasks, times 2 (for
    labels near 50/50, agreement a means correlation 2a - 1). 0 when there are no pairs of both kinds.
    """
    y = np.asarray(labels, dtype=np.int64)
    u = np.asarray(users).astype(str)
    t = np.asarray(tasks).astype(str)
    same = [0, 0]  # agreeing pairs, pairs
    across = [0, 0]
    for user in np.unique(u):
        mine = u == user
        yu, tu = y[mine], t[mine]
        if yu.size < 2:
            continue
        agree = yu[:, None] == yu[None, :]
        in_task = tu[:, None] == tu[None, :]
        upper = np.triu(np.ones_like(agree, dtype=np.bool_), k=1)
        same[0] += int((agree & in_task & upper).sum())
        same[1] += int((in_task & upper).sum())
        across[0] += int((agree & ~in_task & upper).sum())
        across[1] += int((~in_task & upper).sum())
    if not same[1] or not across[1]:
        return 0.0
    return float(min(max(2.0 * (same[0] / same[1] - across[0] / across[1]), 0.0), 1.0))


@dataclass(frozen=True)
class UserPrior:
    """The population prior over side habits, and what it was fitted on."""

    habit_weight: float = MIN_HABIT_WEIGHT
    n_users: int = 0
    n_labels: int = 0
    estimated_weight: float | None = None  # the maximum-likelihood weight before the floor (None: not fitted)
    task_correlation: float = 0.0  # rho of the task design effect (module docstring); 0: every label counts fully
    log_prior: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.habit_weight < 1.0:
            raise ValueError(f"habit_weight must be in (0, 1), got {self.habit_weight}")
        prior = np.concatenate([[np.log1p(-self.habit_weight)], np.log(self.habit_weight) + _LOG_HABIT_SHAPE])
        object.__setattr__(self, "log_prior", prior)

    def log_likelihood(
        self, p_population: npt.ArrayLike, labels: npt.ArrayLike, tasks: Sequence[Any] | None = None
    ) -> npt.NDArray[np.float64]:
        """One user's accumulated log-likelihood under this prior's task design effect (`user_log_likelihood`)."""
        return user_log_likelihood(p_population, labels, tasks, self.task_correlation)

    def posterior(self, log_likelihood: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Normalised posterior weights of the states given a user's accumulated log-likelihood."""
        log_post = self.log_prior + log_likelihood
        return np.asarray(np.exp(log_post - np.logaddexp.reduce(log_post)))

    def predict(self, p_population: npt.ArrayLike, log_likelihood: npt.NDArray[np.float64] | None) -> Any:
        """Posterior-predictive P(class 1) of questions the population model scores `p_population`.

        No labels (`log_likelihood` None): the population probability itself. The prior is symmetric in the two
        sides, so its predictive would only pull every probability towards 0.5.
        """
        p = np.asarray(p_population, dtype=np.float64)
        if log_likelihood is None:
            return p
        return np.asarray(_p_class1(np.atleast_1d(p)) @ self.posterior(log_likelihood)).reshape(p.shape)

    def habit(self, log_likelihood: npt.NDArray[np.float64]) -> dict[str, float]:
        """Posterior P(habit), its expected strength and P(the habit is towards class 1): what the labels say."""
        post = self.posterior(log_likelihood)
        biased = float(1.0 - post[0])
        return {
            "p_habit": biased,
            "strength": float(post @ _H),
            "p_towards_class1": float(post[_S == 1].sum() / biased) if biased > 0 else 0.5,
        }

    def updated_with(
        self,
        p_population: npt.ArrayLike,
        labels: npt.ArrayLike,
        users: npt.ArrayLike,
        tasks: npt.ArrayLike | None = None,
    ) -> UserPrior:
        """This prior with its habit weight re-estimated on the labels new users gave, never below its own weight.

        Empirical Bayes across the people being scored: when many of them turn out to have side habits (populations
        differ: the dev workers chose right 52% of the time, a held-out group 35%), the prior says so and each
        user's few labels count for more; when they look like the training users, nothing changes.
        """
        fitted = fit_prior(
            p_population,
            labels,
            users,
            tasks,
            min_habit_weight=self.habit_weight,
            task_correlation=self.task_correlation,
        )
        if fitted.n_users == 0:
            return self
        return UserPrior(
            habit_weight=fitted.habit_weight,
            n_users=self.n_users + fitted.n_users,
            n_labels=self.n_labels + fitted.n_labels,
            estimated_weight=fitted.estimated_weight,
            task_correlation=self.task_correlation,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model": "P(y=1) = (1-h) p_population + h [habit side = 1]; "
            "h = 0 w.p. 1-w, else Beta(1/2, 1/2); side 50/50",
            "habit_weight": round(self.habit_weight, 4),
            "estimated_weight": None if self.estimated_weight is None else round(self.estimated_weight, 4),
            "min_habit_weight": MIN_HABIT_WEIGHT,
            "fitted_on_users": self.n_users,
            "fitted_on_labels": self.n_labels,
            "task_correlation": round(self.task_correlation, 4),
            "label_weight": "1 / (1 + (labels of the user in the same task - 1) * task_correlation)",
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "habit_weight": self.habit_weight,
            "n_users": self.n_users,
            "n_labels": self.n_labels,
            "estimated_weight": self.estimated_weight,
            "task_correlation": self.task_correlation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserPrior:
        return cls(
            habit_weight=float(data["habit_weight"]),
            n_users=int(data.get("n_users", 0)),
            n_labels=int(data.get("n_labels", 0)),
            estimated_weight=data.get("estimated_weight"),
            task_correlation=float(data.get("task_correlation", 0.0)),  # artifacts before it: every label counts
        )


def fit_prior(
    p_population: npt.ArrayLike,
    labels: npt.ArrayLike,
    users: npt.ArrayLike,
    tasks: npt.ArrayLike | None = None,
    *,
    min_habit_weight: float = MIN_HABIT_WEIGHT,
    task_correlation: float | None = None,
) -> UserPrior:
    """Maximum marginal likelihood habit weight over the training users (on a grid), floored at `min_habit_weight`.

    `tasks` (the task of each label) weight labels by their task's design effect. `task_correlation` gives rho;
    None estimates it from these labels (`estimate_task_correlation`), which the training users' fit does.
    """
    p = np.asarray(p_population, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    u = np.asarray(users)
    t = None if tasks is None else np.asarray(tasks).astype(str)
    if task_correlation is None:
        task_correlation = 0.0 if t is None or y.size == 0 else estimate_task_correlation(y, u, t)
    if y.size == 0:
        return UserPrior(habit_weight=max(min_habit_weight, MIN_HABIT_WEIGHT), task_correlation=task_correlation)
    stacked = np.vstack(
        [
            user_log_likelihood(p[u == user], y[u == user], None if t is None else t[u == user], task_correlation)
            for user in np.unique(u)
        ]
    )
    unbiased = stacked[:, 0]
    biased = np.logaddexp.reduce(stacked[:, 1:] + _LOG_HABIT_SHAPE, axis=1)
    grid = np.linspace(0.01, 0.99, 99)
    marginal = [float(np.sum(np.logaddexp(np.log1p(-w) + unbiased, np.log(w) + biased))) for w in grid]
    estimated = float(grid[int(np.argmax(marginal))])
    return UserPrior(
        habit_weight=max(estimated, min_habit_weight),
        n_users=int(stacked.shape[0]),
        n_labels=int(y.size),
        estimated_weight=estimated,
        task_correlation=task_correlation,
    )
