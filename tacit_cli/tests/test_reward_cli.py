"""`tacit reward evaluate | train | predict` end to end on a small synthetic table (a written parquet file)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from reward_svc.tests.conftest import synthetic_frame
from tacit_cli.cli import main


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "table.parquet"
    synthetic_frame().to_parquet(path)
    return path


def test_evaluate_json_names_the_protocol(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["reward", "evaluate", "--data", str(table), "--features", "all", "--model", "swap_et"]
    assert main([*args, "--protocol", "grouped", "--seeds", "2", "--json", "--quiet", "--n-jobs", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"]["name"] == "grouped"
    assert report["protocol"]["seeds"] == [0, 1]
    assert report["protocol"]["groups"] == "user_id (worker)"
    assert report["feature_mode"] == "default"
    assert report["n_rows"] == report["settings"][0]["n"]
    setting = report["settings"][0]
    assert {"accuracy", "f1_1", "f1_0", "auc", "ece", "brier", "abstain"} <= set(setting)


def test_evaluate_table_and_plots(table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plots = tmp_path / "plots"
    argv = ["reward", "evaluate", "--data", str(table), "--protocol", "paper", "--quiet", "--plots", str(plots)]
    assert main([*argv, "--n-jobs", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("RF + text only", "RF + all features", "RF + IF", "ours: swap_lr_sigmoid"):
        assert label in out
    assert "KFold(n_splits=5, shuffle=True)" in out
    assert sorted(p.name for p in plots.glob("*.png")) == [
        "pairwise_paper_default_importance.png",
        "pairwise_paper_default_length_terciles.png",
        "pairwise_paper_default_reliability.png",
    ]


def test_train_then_predict(table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    assert main(["reward", "train", "--data", str(table), "--out", str(out), "--seeds", "1", "--quiet"]) == 0
    assert (out / "metadata.json").is_file()
    preds = tmp_path / "preds.csv"
    assert main(["reward", "predict", "--model", str(out), "--data", str(table), "--out", str(preds), "--quiet"]) == 0
    frame = pd.read_csv(preds)
    assert list(frame.columns) == [
        "query_id",
        "user_id",
        "mode",
        "p_right",
        "p_right_population",
        "label",
        "used_for_adaptation",
        "user_labels_used",
        "abstained",
        "quality",
    ]
    assert frame["p_right"].between(0, 1).all()
    # no adaptation asked for: the answered probability is the population one and no row was used
    assert (frame["p_right"] == frame["p_right_population"]).all()
    assert not frame["used_for_adaptation"].any()
    capsys.readouterr()
    meta = json.loads((out / "metadata.json").read_text())
    meta["feature_set_version"] = "1.pairwise.ffffffffff"
    (out / "metadata.json").write_text(json.dumps(meta))
    assert main(["reward", "predict", "--model", str(out), "--data", str(table), "--out", str(preds), "--quiet"]) == 2
    assert "feature set version" in capsys.readouterr().err


def test_predict_adapts_to_each_users_first_k_labels(
    table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    assert main(["reward", "train", "--data", str(table), "--out", str(out), "--seeds", "1", "--quiet"]) == 0
    capsys.readouterr()
    preds = tmp_path / "preds.csv"
    argv = ["reward", "predict", "--model", str(out), "--data", str(table), "--out", str(preds), "--json"]
    assert main([*argv, "--adapt-first-k", "3", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    frame = pd.read_csv(preds).sort_values("query_id", kind="stable")
    for _, rows in frame.groupby("user_id"):
        used = rows[rows["used_for_adaptation"]]
        # the first three labelled questions in question order, and only labelled ones
        assert list(used["query_id"]) == list(rows[rows["label"].notna()]["query_id"][:3])
        rest = rows[~rows["used_for_adaptation"]]
        assert (rest["user_labels_used"] == 3).all()
    # adaptation rows are out of the accuracy; both baselines are on the same rows
    assert summary["used_for_adaptation"] == int(frame["used_for_adaptation"].sum())
    assert summary["scored_labelled"] == int((frame["label"].notna() & ~frame["used_for_adaptation"]).sum())
    for key in ("accuracy", "accuracy_population_same_rows", "accuracy_per_user_prior_only_same_rows", "ece"):
        assert 0.0 <= summary[key] <= 1.0
    assert main([*argv, "--adapt-first-k", "-1", "--quiet"]) == 2
    capsys.readouterr()
    plots = tmp_path / "plots"
    assert main([*argv, "--adapt-first-k", "3", "--plots", str(plots), "--quiet"]) == 0
    written = json.loads(capsys.readouterr().out)["plots"]
    assert sorted(Path(p).name for p in written) == ["predict_per_worker.png", "predict_reliability.png"]
    for path in written:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_transfer_prints_the_protocol_tables(
    table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["reward", "evaluate", "--data", str(table), "--protocol", "transfer", "--seeds", "2", "--quiet"]
    assert main([*argv, "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "**Choice by the rule:**" in out
    assert "per-user prior only" in out
    assert (tmp_path / "reward_transfer_accuracy_vs_k.png").is_file()
    assert main([*argv, "--task", "pointwise"]) == 2  # a pairwise table: no pointwise rows, said so
    assert "no pointwise rows" in capsys.readouterr().err
