"""The scikit-learn contract for every reward-model estimator."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from sklearn.base import clone

from reward_svc.model.estimators import (
    MODELS,
    ExtraForest,
    GradientBoosting,
    ReferenceForest,
    SwapAugmented,
    SymmetricCalibrated,
    _fit_platt,
    make_model,
)

NAMES = ["gaze_max_idx_left", "gaze_max_idx_right", "user_query_length", "gaze_comparison_reviewing_time_diff"]


def _data(n: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 100, size=(n, 4))
    X[:, 3] = X[:, 0] - X[:, 1]
    y = (X[:, 1] > X[:, 0]).astype(np.int64)
    groups = np.repeat(np.arange(n // 8), 8)
    return X, y, groups


def _estimators() -> list[object]:
    return [
        ReferenceForest(n_estimators=10),
        ExtraForest(n_estimators=10),
        GradientBoosting(max_iter=10),
        SwapAugmented(ExtraForest(n_estimators=10), NAMES),
        SymmetricCalibrated(SwapAugmented(ExtraForest(n_estimators=10), NAMES), method="sigmoid", cv=3),
        SymmetricCalibrated(SwapAugmented(ExtraForest(n_estimators=10), NAMES), method="isotonic", cv=3),
    ]


@pytest.mark.parametrize("estimator", _estimators(), ids=lambda e: type(e).__name__)
def test_contract(estimator: object) -> None:
    X, y, groups = _data()
    params = estimator.get_params(deep=False)  # type: ignore[attr-defined]
    init_args = set(inspect.signature(type(estimator).__init__).parameters) - {"self"}
    assert set(params) == init_args
    assert set(vars(estimator)) == init_args  # __init__ only stores its parameters
    before = set(vars(estimator))
    kwargs = {"groups": groups} if hasattr(estimator, "_accepts_groups") else {}
    assert estimator.fit(X, y, **kwargs) is estimator  # type: ignore[attr-defined]
    learned = set(vars(estimator)) - before
    assert learned
    assert all(name.endswith("_") and not name.startswith("_") for name in learned), learned
    proba = estimator.predict_proba(X)  # type: ignore[attr-defined]
    assert proba.shape == (len(y), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(estimator.classes_) == [0, 1]  # type: ignore[attr-defined]
    assert estimator.n_features_in_ == 4  # type: ignore[attr-defined]
    copy = clone(estimator)
    assert copy.get_params(deep=False).keys() == params.keys()
    assert not any(name.endswith("_") for name in vars(copy))
    assert np.mean(estimator.predict(X) == y) > 0.8  # type: ignore[attr-defined]


def test_reference_forest_hyperparameters_and_nan() -> None:
    forest = ReferenceForest()
    assert (forest.n_estimators, forest.max_depth, forest.min_samples_split, forest.min_samples_leaf) == (100, 5, 5, 2)
    assert (forest.max_features, forest.random_state) == ("sqrt", 49)
    X, y, _ = _data()
    with_nan = X.copy()
    with_nan[::3, 2] = np.nan
    zeros = X.copy()
    zeros[::3, 2] = 0.0
    a = ReferenceForest(n_estimators=10).fit(with_nan, y).predict_proba(with_nan)
    b = ReferenceForest(n_estimators=10).fit(zeros, y).predict_proba(zeros)
    np.testing.assert_array_equal(a, b)


def test_calibration_is_symmetric() -> None:
    X, y, groups = _data()
    for method in ("sigmoid", "isotonic"):
        model = SymmetricCalibrated(SwapAugmented(ExtraForest(n_estimators=10), NAMES), method=method, cv=3)
        model.fit(X, y, groups=groups)
        p = np.linspace(0.01, 0.99, 21)
        np.testing.assert_allclose(model.calibrate(p) + model.calibrate(1 - p), 1.0, atol=1e-9)


def test_platt_scaling_with_an_intercept_follows_the_base_rate() -> None:
    """symmetric=False (pointwise): p' = sigmoid(a logit(p) + b), fitted on the inner grouped scores as they are."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 1.5, 4000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(0.7 * z + 0.8)))).astype(np.float64)
    a, b = _fit_platt(z, y)
    assert a == pytest.approx(0.7, abs=0.08)
    assert b == pytest.approx(0.8, abs=0.1)
    X, labels, groups = _data()
    model = SymmetricCalibrated(ExtraForest(n_estimators=10), cv=3, symmetric=False).fit(X, labels, groups=groups)
    p = np.linspace(0.01, 0.99, 21)
    expected = 1 / (1 + np.exp(-(model.slope_ * np.log(p / (1 - p)) + model.intercept_)))
    np.testing.assert_allclose(model.calibrate(p), expected, atol=1e-6)
    assert model.oof_.mean() == pytest.approx(labels.mean(), abs=0.05)  # the intercept matches the base rate


def test_registry_builds_every_model() -> None:
    for name, spec in MODELS.items():
        for task in spec.tasks:
            assert make_model(name, task, NAMES) is not None
    with pytest.raises(KeyError, match="unknown model"):
        make_model("nope", "pairwise", NAMES)
    with pytest.raises(ValueError, match="pairwise"):
        make_model("swap_et", "pointwise", NAMES)
