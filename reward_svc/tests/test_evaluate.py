"""Protocols: splitters, what an estimator may see, metrics on hand numbers."""

# ruff: noqa: N803  (scikit-learn's convention: X is the feature matrix)

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from reward_svc.model.data import task_data
from reward_svc.model.evaluate import (
    CVResult,
    balanced_subset,
    cross_validate,
    expected_calibration_error,
    grouped_protocol,
    paper_protocol,
    reliability,
    summarize,
)


def test_grouped_folds_never_share_a_worker(frame: pd.DataFrame) -> None:
    data = task_data(frame, "pairwise", "all")
    protocol = grouped_protocol(3)
    for seed in protocol.seeds:
        tested = []
        for train, test in protocol.splits(data.n, data.groups, seed):
            assert not set(data.groups[train]) & set(data.groups[test])
            tested.extend(test)
        assert sorted(tested) == list(range(data.n))
    first = [tuple(t) for _, t in protocol.splits(data.n, data.groups, 0)]
    second = [tuple(t) for _, t in protocol.splits(data.n, data.groups, 1)]
    assert first != second  # the worker-to-fold assignment is reshuffled per seed


def test_paper_protocol_is_the_reference_kfold() -> None:
    from sklearn.model_selection import KFold

    protocol = paper_protocol("pairwise")
    assert protocol.seeds == (49,)
    assert not protocol.grouped
    assert paper_protocol("pointwise").seeds == (42,)
    ours = [t.tolist() for _, t in protocol.splits(30, np.zeros(30), 49)]
    ref = [t.tolist() for _, t in KFold(5, shuffle=True, random_state=49).split(np.zeros(30))]
    assert ours == ref
    assert protocol.describe()["splitter"].startswith("KFold")
    assert grouped_protocol(2).describe()["groups"] == "user_id (worker)"


class Spy(ClassifierMixin, BaseEstimator):
    """Column 0 carries the row id; the spy records which rows it was fitted on and checks what it predicts."""

    log: list[dict[str, set[int]]] = []  # noqa: RUF012  (shared on purpose: clones append to the same log)

    def fit(self, X, y, groups=None):  # type: ignore[no-untyped-def]
        self.train_ids_ = {int(i) for i in X[:, 0]}
        self.classes_ = np.array([0, 1])
        self.groups_ = set() if groups is None else set(groups)
        return self

    def predict_proba(self, X):  # type: ignore[no-untyped-def]
        self.log.append({"train": self.train_ids_, "test": {int(i) for i in X[:, 0]}, "groups": self.groups_})
        return np.full((len(X), 2), 0.5)

    _accepts_groups = True


def test_estimator_only_sees_training_rows(frame: pd.DataFrame) -> None:
    data = task_data(frame, "pairwise", "all")
    tagged = data.X.copy()
    tagged[:, 0] = np.arange(data.n)  # tag rows
    data = dataclasses.replace(data, X=tagged)
    Spy.log = []
    cross_validate(Spy(), data, grouped_protocol(2))
    assert len(Spy.log) == 10
    for entry in Spy.log:
        assert not entry["train"] & entry["test"]
        assert len(entry["train"]) + len(entry["test"]) == data.n
        test_workers = set(data.groups[sorted(entry["test"])])
        assert entry["groups"]
        assert not entry["groups"] & test_workers


def test_ece_on_hand_numbers() -> None:
    # bin [0.2, 0.2667): p = 0.2, 0.2 with outcomes 0, 1 -> |0.2 - 0.5| = 0.3, weight 2/4
    # bin [0.8667, 0.9333): p = 0.9, 0.9 with outcomes 1, 1 -> |0.9 - 1.0| = 0.1, weight 2/4
    assert expected_calibration_error([0.2, 0.2, 0.9, 0.9], [0, 1, 1, 1]) == pytest.approx(0.2)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0)  # p = 1 falls into the last bin
    assert expected_calibration_error([0.5] * 10, [1] * 5 + [0] * 5) == pytest.approx(0.0)
    # one bin per distinct value: 0.3 and 0.35 share the bin [0.2667, 0.3333)? no: 0.35 is in [0.3333, 0.4)
    assert expected_calibration_error([0.3, 0.35], [0, 0]) == pytest.approx(0.5 * 0.3 + 0.5 * 0.35)
    rel = reliability([0.1, 0.12, 0.95], [0, 1, 1])
    assert rel["count"] == [2.0, 1.0]
    assert rel["observed"] == [0.5, 1.0]


def test_summary_conventions() -> None:
    y = np.array([0, 1] * 10)
    oof = np.array([np.where(y == 1, 0.7, 0.3)])
    protocol = paper_protocol("pairwise")
    scores = [0.5, 0.6, 0.7, 0.8, 0.9]
    folds = [{"seed": 49, "fold": k, "n": 4, "accuracy": a, "f1_1": a, "f1_0": a} for k, a in enumerate(scores)]
    result = CVResult(protocol=protocol, y=y, oof=oof, keep=np.ones((1, 20), dtype=bool), folds=folds)
    s = summarize(result)
    assert s["accuracy"]["mean"] == pytest.approx(0.7)
    assert s["accuracy"]["std"] == pytest.approx(np.std(scores, ddof=1))
    assert s["accuracy"]["se"] == pytest.approx(np.std(scores, ddof=0) / np.sqrt(5))  # the reference's "±"
    assert s["auc"]["mean"] == pytest.approx(1.0)
    assert s["brier"]["mean"] == pytest.approx(0.09)
    assert s["ece"]["mean"] == pytest.approx(0.3)
    assert s["abstain"]["coverage"] == 1.0


def test_balanced_subset(frame: pd.DataFrame) -> None:
    data = task_data(frame, "pairwise", "all")
    balanced = balanced_subset(data, seed=42)
    assert balanced.y is not None
    assert np.sum(balanced.y == 0) == np.sum(balanced.y == 1) == min(np.sum(data.y == 0), np.sum(data.y == 1))
