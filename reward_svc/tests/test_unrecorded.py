"""Questions without a behaviour recording still get a prediction row (reward_svc.model.data.with_unrecorded_questions):
they abstain, carry the population probability of a session without behaviour, and adapt to the user's labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reward_svc.model.artifact import train
from reward_svc.model.data import with_unrecorded_questions
from tacit.ifllm.testing import write_query_log


def _folder(tmp_path: Path, preferences: list[int | None]) -> Path:
    rows = [
        [9000 + i, "w-new", "7", "q", "left answer", "right answer", "a", "b", 3, 4, preference, "", ""]
        for i, preference in enumerate(preferences)
    ]
    root = write_query_log(tmp_path / "ifllm", rows)
    (root / "user_behavior").mkdir()
    return root


def test_every_question_gets_a_row_and_a_table_file_is_left_alone(frame: pd.DataFrame, tmp_path: Path) -> None:
    folder = _folder(tmp_path, [1, 1, 2, None])
    completed = with_unrecorded_questions(frame, folder)
    extra = completed[completed["user_id"] == "w-new"]
    assert len(completed) == len(frame) + 4
    assert extra["query_id"].tolist() == [9000, 9001, 9002, 9003]
    assert extra["label"].tolist()[:3] == [0.0, 0.0, 1.0]  # 1 = left, 2 = right in the query log
    assert pd.isna(extra["label"].tolist()[3])
    assert (extra["samples"] == 0).all()
    assert (extra["mode"] == "pairwise").all()
    assert with_unrecorded_questions(completed, folder).shape == completed.shape  # nothing twice
    table = tmp_path / "table.parquet"
    frame.to_parquet(table)
    assert with_unrecorded_questions(frame, table) is frame


def test_unrecorded_questions_abstain_and_still_adapt(frame: pd.DataFrame, tmp_path: Path) -> None:
    model = train(frame, "pairwise", model="swap_lr_sigmoid", features="all", seeds=0)
    completed = with_unrecorded_questions(frame, _folder(tmp_path, [1, 1, 1, 1, 1, 2]))
    preds = model.score(completed, adapt_first_k=4)
    mine = preds[preds["user_id"] == "w-new"].sort_values("query_id")
    assert len(mine) == 6
    assert mine["abstained"].all()  # no behaviour: not to be acted on
    assert mine["used_for_adaptation"].tolist() == [True] * 4 + [False] * 2
    rest = mine[~mine["used_for_adaptation"]]
    # four "left" answers: the user's habit moves their later questions away from the population's probability
    assert (rest["p_right"] < rest["p_right_population"] - 0.05).all()
    assert (rest["user_labels_used"] == 4).all()
