"""The adaptation prior re-estimated on the people a model scores (reward_svc.service.Scorer.population_prior), and
scoring with it: the API's side of the empirical Bayes step `tacit reward predict --adapt-first-k` takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reward_svc.model.adapt import MIN_HABIT_WEIGHT, UserPrior
from reward_svc.model.artifact import train
from reward_svc.registry import Registry
from reward_svc.service import ScoreError, Scorer
from tacit.schemas import FeatureVector, UserLabel
from tacit.schemas.reward import PopulationLabel, PopulationPrior


@pytest.fixture
def scored(frame: pd.DataFrame, tmp_path: Path) -> tuple[Scorer, str, FeatureVector]:
    model = train(frame, "pairwise", model="swap_lr_sigmoid", features="all", seeds=0)
    # a training population without side habits: its prior sits on the floor, so a population can raise it
    model.metadata["adaptation"] = UserPrior(habit_weight=MIN_HABIT_WEIGHT).to_dict()
    artifact = model.save(tmp_path / "model")
    registry = Registry(f"sqlite:///{tmp_path / 'reward.db'}")
    row = registry.create(task="pairwise", model_name="swap_lr_sigmoid", feature_set="all", spec={})
    meta = model.metadata
    registry.update(
        row.id,
        status="succeeded",
        artifact=str(artifact),
        feature_set_version=meta["feature_set_version"],
    )
    names = list(meta["feature_names"])
    values = np.nan_to_num(frame[names].to_numpy(dtype=np.float64)[0]).tolist()
    vector = FeatureVector(
        session_id="s1",
        feature_set=meta["feature_set"],
        feature_set_version=meta["feature_set_version"],
        names=names,
        values=values,
    )
    return Scorer(registry), row.id, vector


def _labels(users: int, per_user: int, *, one_sided: bool) -> list[PopulationLabel]:
    return [
        PopulationLabel(user=f"u{u}", p_population=0.5, label=0 if one_sided else i % 2)
        for u in range(users)
        for i in range(per_user)
    ]


def test_one_sided_people_raise_the_habit_weight_and_balanced_ones_keep_the_floor(
    scored: tuple[Scorer, str, FeatureVector],
) -> None:
    scorer, model_id, _ = scored
    raised = scorer.population_prior(model_id, _labels(20, 6, one_sided=True))
    assert (raised.model_id, raised.users, raised.labels) == (model_id, 20, 120)
    assert raised.training_habit_weight == MIN_HABIT_WEIGHT
    assert raised.habit_weight > MIN_HABIT_WEIGHT + 0.3
    kept = scorer.population_prior(model_id, _labels(20, 6, one_sided=False))
    assert kept.estimated_weight is not None
    assert kept.estimated_weight < MIN_HABIT_WEIGHT
    assert kept.habit_weight == MIN_HABIT_WEIGHT  # never below the training users' weight
    empty = scorer.population_prior(model_id, [])
    assert (empty.habit_weight, empty.estimated_weight, empty.users) == (MIN_HABIT_WEIGHT, None, 0)
    with pytest.raises(ScoreError, match="no reward model"):
        scorer.population_prior("nope", [])


def test_scores_use_the_population_prior_of_their_own_model_only(scored: tuple[Scorer, str, FeatureVector]) -> None:
    scorer, model_id, vector = scored
    history = [UserLabel(p_population=0.6, label=0, model_id=model_id)] * 3
    raised = scorer.population_prior(model_id, _labels(20, 6, one_sided=True))

    def p_of(population: PopulationPrior | None) -> float:
        [score] = scorer.score([vector], "pairwise", model_id, history, population)
        return score.p

    training = p_of(None)
    # three "left" labels count for more once many people scored turn out to have side habits
    assert p_of(raised) < training - 0.05
    other = PopulationPrior(
        model_id="another-model",
        habit_weight=raised.habit_weight,
        training_habit_weight=raised.training_habit_weight,
        estimated_weight=raised.estimated_weight,
        users=raised.users,
        labels=raised.labels,
    )
    assert p_of(other) == pytest.approx(training)
    [cold] = scorer.score([vector], "pairwise", model_id, (), raised)
    assert cold.p == pytest.approx(cold.p_population)  # no labels of the user: nothing to adapt
