"""The text-only baseline learns content from words, is exactly swap-symmetric, and joins the warm-start table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reward_svc.model.data import task_data
from reward_svc.model.text_baseline import TextOnly, TextPairs, text_pairs
from reward_svc.model.transfer import nested_runs, warm_start_table

_GOOD = ["clear sourced answer with examples", "precise answer cites sources", "clear examples and steps"]
_BAD = ["vague rambling reply", "off topic rambling", "vague reply without detail"]


def _pairs(n: int, seed: int) -> tuple[TextPairs, np.ndarray]:
    """The better answer (words from _GOOD) on a random side; label 1 = the right answer preferred."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = [f"{_GOOD[i % 3]} topic{i}" for i in range(n)]
    bad = [f"{_BAD[i % 3]} topic{i}" for i in range(n)]
    left = [b if label else g for g, b, label in zip(good, bad, y, strict=True)]
    right = [g if label else b for g, b, label in zip(good, bad, y, strict=True)]
    return TextPairs(left, right), y


def test_learns_which_words_people_prefer() -> None:
    train, y_train = _pairs(200, seed=0)
    test, y_test = _pairs(100, seed=1)
    p = TextOnly().fit(train, y_train).predict_proba(test)[:, 1]
    assert ((p > 0.5) == y_test).mean() > 0.95


def test_swapping_the_answers_mirrors_the_probability() -> None:
    train, y_train = _pairs(120, seed=2)
    model = TextOnly().fit(train, y_train)
    test, _ = _pairs(40, seed=3)
    swapped = TextPairs(test.right, test.left)
    assert np.allclose(model.predict_proba(test)[:, 1], 1.0 - model.predict_proba(swapped)[:, 1])
    same = TextPairs(test.left, test.left)  # identical answers: no content difference, no side to lean to
    assert np.allclose(model.predict_proba(same)[:, 1], 0.5)


def test_text_pairs_reads_the_answers_in_row_order(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {
            "query_ID": [7, 3],
            "user_id": ["u", "u"],
            "task_id": [1, 1],
            "user_query": ["q7", "q3"],
            "llm_response_1": ["left 7", "left 3"],
            "llm_response_2": ["right 7", "NULL"],
        }
    )
    log.to_csv(tmp_path / "query_logs_table.csv", index=False)
    texts = text_pairs(tmp_path, [3, 7])
    assert texts.left == ["left 3", "left 7"]
    assert texts.right == ["", "right 7"]
    with pytest.raises(ValueError, match="not in"):
        text_pairs(tmp_path, [99])


def test_warm_start_table_reports_text_only_on_the_same_rows(frame: pd.DataFrame) -> None:
    data = task_data(frame, "pairwise", "all")
    texts = TextPairs([f"answer {i} left" for i in range(data.n)], [f"answer {i} right" for i in range(data.n)])
    runs = nested_runs(data, "swap_lr_sigmoid", seeds=1, texts=texts)
    assert all("p_text" in f for f in runs.folds)
    rows = warm_start_table(runs, ks=(0, 3))
    for k in (0, 3):
        group = {r["method"]: r for r in rows if r["k"] == k}
        assert "text only" in group
        assert group["text only"]["rows"] == group["adapted"]["rows"]
        assert 0.0 <= group["text only"]["ece"] <= 1.0
