"""Per-user adaptation: neutral when a user's labels look like the population's, decisive when they do not."""

from __future__ import annotations

import numpy as np
import pytest

from reward_svc.model.adapt import (
    MIN_HABIT_WEIGHT,
    UserPrior,
    estimate_task_correlation,
    fit_prior,
    task_weights,
    user_log_likelihood,
)


def test_no_labels_means_the_population_probability() -> None:
    p = np.array([0.2, 0.5, 0.9])
    assert np.array_equal(UserPrior().predict(p, None), p)


def test_one_sided_labels_are_decisive_and_balanced_ones_are_not() -> None:
    prior = UserPrior()
    p = np.array([0.3, 0.5, 0.7, 0.9])
    one_sided = prior.predict(p, user_log_likelihood(np.full(5, 0.6), [0, 0, 0, 0, 0]))
    balanced = prior.predict(p, user_log_likelihood(np.full(5, 0.6), [1, 0, 1, 0, 1]))
    # five of five on one side: even a confident population score for the other side is overruled
    assert (one_sided < 0.5).all()
    # a split the population would produce leaves the population model in charge (same side as p everywhere)
    assert ((balanced > 0.5) == (p > 0.5)).all() or balanced[1] == pytest.approx(0.5, abs=0.05)
    assert np.all(np.abs(balanced - p) < np.abs(one_sided - p))


def test_predictions_are_symmetric_in_the_two_sides() -> None:
    prior = UserPrior(habit_weight=0.6)
    p = np.array([0.1, 0.35, 0.8])
    left = prior.predict(p, user_log_likelihood(np.full(4, 0.5), [0, 0, 0, 1]))
    right = prior.predict(1 - p, user_log_likelihood(np.full(4, 0.5), [1, 1, 1, 0]))
    assert np.allclose(left, 1 - right)


def test_prior_follows_biased_training_users_but_never_drops_below_the_floor() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(60), 12)
    p = rng.uniform(0.3, 0.7, users.size)
    unbiased = (rng.random(users.size) < p).astype(int)
    fitted = fit_prior(p, unbiased, users)
    assert fitted.habit_weight == MIN_HABIT_WEIGHT  # an unbiased population cannot switch adaptation off
    assert fitted.estimated_weight is not None
    assert fitted.estimated_weight < MIN_HABIT_WEIGHT
    sides = rng.integers(0, 2, 60)[users]
    habit = np.where(rng.random(users.size) < 0.9, sides, unbiased)
    biased = fit_prior(p, habit, users)
    assert biased.habit_weight > 0.8  # nearly every user has a habit: the data raise the weight


def test_posterior_describes_the_habit_and_round_trips() -> None:
    prior = fit_prior(np.full(20, 0.5), np.r_[np.zeros(10), np.ones(10)], np.repeat([1, 2], 10))
    habit = prior.habit(user_log_likelihood(np.full(6, 0.5), np.ones(6)))
    assert habit["p_habit"] > 0.8
    assert habit["p_towards_class1"] > 0.99
    assert UserPrior.from_dict(prior.to_dict()) == prior
    with pytest.raises(ValueError, match="habit_weight"):
        UserPrior(habit_weight=1.0)


def test_new_users_labels_raise_the_habit_weight_but_never_lower_it() -> None:
    rng = np.random.default_rng(1)
    trained = UserPrior(habit_weight=0.6)
    users = np.repeat(np.arange(20), 5)
    p = rng.uniform(0.3, 0.7, users.size)
    one_sided = np.repeat(rng.integers(0, 2, 20), 5)  # every new user always picks their own side
    raised = trained.updated_with(p, one_sided, users)
    assert raised.habit_weight > 0.9
    content_driven = (rng.random(users.size) < p).astype(int)
    assert trained.updated_with(p, content_driven, users).habit_weight == trained.habit_weight
    assert trained.updated_with(np.zeros(0), np.zeros(0), np.zeros(0)) is trained


def test_labels_of_one_task_count_as_correlated_evidence() -> None:
    """Five "left" labels from one task are weaker evidence of a side habit than five from five tasks."""
    assert task_weights(["a", "a", "a", "b", None], 5, 0.5).tolist() == [0.5, 0.5, 0.5, 1.0, 1.0]
    assert task_weights(["a", "a"], 2, 0.0).tolist() == [1.0, 1.0]
    prior = UserPrior(habit_weight=0.5, task_correlation=0.5)
    p, y = np.full(5, 0.5), np.zeros(5)
    one_task = prior.predict(np.array([0.6]), prior.log_likelihood(p, y, ["t"] * 5))[0]
    five_tasks = prior.predict(np.array([0.6]), prior.log_likelihood(p, y, ["t1", "t2", "t3", "t4", "t5"]))[0]
    unknown = prior.predict(np.array([0.6]), prior.log_likelihood(p, y))[0]
    assert five_tasks == pytest.approx(unknown)  # without tasks every label counts fully
    assert five_tasks < one_task < 0.6  # both lean left, the spread-out evidence more
    assert UserPrior.from_dict(prior.to_dict()).task_correlation == 0.5
    assert UserPrior.from_dict({"habit_weight": 0.5}).task_correlation == 0.0  # artifacts written before it


def test_task_correlation_is_the_within_task_agreement_beyond_the_across_task_one() -> None:
    rng = np.random.default_rng(3)
    users, tasks, labels = [], [], []
    for u in range(60):
        for t in range(6):
            side = rng.integers(2)  # the task's own lean: its labels agree, other tasks' do not
            for _ in range(3):
                users.append(f"u{u}")
                tasks.append(f"u{u}-t{t}")
                labels.append(side if rng.random() < 0.8 else 1 - side)
    rho = estimate_task_correlation(np.array(labels), np.array(users), np.array(tasks))
    assert rho == pytest.approx(2 * (0.8**2 + 0.2**2 - 0.5), abs=0.06)  # agreement within 0.68, across 0.5
    independent = rng.integers(0, 2, len(labels))
    assert estimate_task_correlation(independent, np.array(users), np.array(tasks)) < 0.06
    fitted = fit_prior(np.full(len(labels), 0.5), np.array(labels), np.array(users), np.array(tasks))
    assert fitted.task_correlation == pytest.approx(rho)
    assert fit_prior(np.full(len(labels), 0.5), np.array(labels), np.array(users)).task_correlation == 0.0
