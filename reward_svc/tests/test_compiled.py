"""Compiled trees give predict_proba's numbers (within 1e-9) for every model kind used here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from reward_svc.model.compiled import compile_model
from reward_svc.model.data import task_data
from reward_svc.model.estimators import MODELS, make_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_compiled_equals_predict_proba(frame: pd.DataFrame, name: str) -> None:
    data = task_data(frame, "pairwise", "all")
    train, test = np.arange(data.n) % 4 != 0, np.arange(data.n) % 4 == 0
    model = make_model(name, "pairwise", data.names)
    kwargs = {"groups": data.groups[train]} if hasattr(model, "_accepts_groups") else {}
    model.fit(data.X[train], data.y[train], **kwargs)
    compiled = compile_model(model)
    X = data.X[test].copy()
    X[0, 3] = np.nan  # forests fill NaN with 0 on both paths
    expected = model.predict_proba(X)
    np.testing.assert_allclose(compiled.predict_proba(X), expected, rtol=0, atol=1e-9)
    one = [compiled.predict_one(x) for x in X]
    np.testing.assert_allclose(one, expected[:, 1], rtol=0, atol=1e-9)


def test_compiled_boosting_routes_missing_values_like_sklearn() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 5))
    X[rng.uniform(size=X.shape) < 0.2] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(0, 0.5, 300) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    np.testing.assert_allclose(compile_model(model).predict_proba(X), model.predict_proba(X), rtol=0, atol=1e-9)


def test_compiled_plain_forest_and_input_checks() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 6)).astype(np.float64) * 1e3
    y = (X[:, 1] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=25, random_state=0).fit(X, y)
    compiled = compile_model(forest)
    np.testing.assert_allclose(compiled.predict_proba(X), forest.predict_proba(X), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="expected 6 features"):
        compiled.predict_one(X[0, :5])
    with pytest.raises(TypeError, match="cannot compile"):
        compile_model(object())
