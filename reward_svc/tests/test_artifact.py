"""Artifacts: round trip, provenance, refusal of version and feature-set mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reward_svc.model.artifact import ArtifactError, load_artifact, train
from reward_svc.model.data import data_hash, task_data


@pytest.fixture
def artifact(frame: pd.DataFrame, tmp_path: Path) -> Path:
    return train(frame, "pairwise", model="swap_et", features="all", seeds=1).save(tmp_path / "model")


def test_round_trip_and_metadata(frame: pd.DataFrame, artifact: Path) -> None:
    meta = json.loads((artifact / "metadata.json").read_text())
    for key in ("libraries", "feature_set", "feature_set_version", "feature_names", "data_hash", "git_revision"):
        assert meta[key]
    assert {"sklearn", "numpy", "tacit"} <= set(meta["libraries"])
    assert meta["protocol"]["name"] == "grouped"
    assert 0.0 <= meta["scores"]["accuracy"]["mean"] <= 1.0
    data = task_data(frame, "pairwise", "all")
    assert meta["data_hash"] == data_hash(data.meta["query_id"].to_numpy(), data.X)
    model = load_artifact(artifact)
    preds = model.score(frame)
    assert list(preds.columns[:6]) == ["query_id", "user_id", "mode", "p_right", "p_right_population", "label"]
    assert {"used_for_adaptation", "user_labels_used", "abstained", "quality"} <= set(preds.columns)
    # the adaptation prior is fitted and recorded with the model, with its floor stated
    assert meta["adaptation"]["habit_weight"] >= meta["adaptation"]["description"]["min_habit_weight"]
    assert isinstance(meta["quality_gate"]["check"]["passes"], bool)
    assert len(preds) == int((frame["mode"] == "pairwise").sum())  # unlabelled rows are scored too
    assert preds["label"].isna().sum() == frame["label"].isna().sum()
    fresh = train(frame, "pairwise", model="swap_et", features="all", seeds=0)
    np.testing.assert_allclose(preds["p_right"], fresh.estimator.predict_proba(model.features_of(frame).X)[:, 1])
    np.testing.assert_allclose(model.compiled.predict_proba(model.features_of(frame).X)[:, 1], preds["p_right"])


def test_data_hash_ignores_row_order(frame: pd.DataFrame) -> None:
    data = task_data(frame, "pairwise", "all")
    ids = data.meta["query_id"].to_numpy()
    order = np.random.default_rng(0).permutation(data.n)
    assert data_hash(ids[order], data.X[order]) == data_hash(ids, data.X)
    changed = data.X.copy()
    changed[0, 0] += 1
    assert data_hash(ids, changed) != data_hash(ids, data.X)


def _edit(artifact: Path, **changes: object) -> None:
    path = artifact / "metadata.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        meta[key] = value
    path.write_text(json.dumps(meta))


def test_refuses_other_feature_set_or_version(frame: pd.DataFrame, artifact: Path) -> None:
    _edit(artifact, feature_set_version="1.pairwise.0000000000")
    with pytest.raises(ArtifactError, match="feature set version"):
        load_artifact(artifact).score(frame)
    _edit(artifact, feature_set="text")
    with pytest.raises(ArtifactError, match="mismatch"):
        load_artifact(artifact).score(frame)


def test_refuses_a_table_missing_columns(frame: pd.DataFrame, artifact: Path) -> None:
    with pytest.raises(ArtifactError, match="feature set version"):  # `all` of that table is another column list
        load_artifact(artifact).score(frame.drop(columns=["gaze_max_idx_left"]))


def test_refuses_feature_mode_mismatch(frame: pd.DataFrame, artifact: Path) -> None:
    frame.attrs["feature_mode"] = "reference"  # as load_frame records it
    with pytest.raises(ArtifactError, match="feature mode"):
        load_artifact(artifact).score(frame)


@pytest.mark.parametrize("lib", ["sklearn", "tacit"])
def test_refuses_major_version_mismatch(artifact: Path, lib: str) -> None:
    meta = json.loads((artifact / "metadata.json").read_text())
    libraries = dict(meta["libraries"])
    libraries[lib] = "99.0.0"
    _edit(artifact, libraries=libraries)
    with pytest.raises(ArtifactError, match="major versions differ"):
        load_artifact(artifact)


def test_refuses_a_folder_that_is_no_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a reward-model artifact"):
        load_artifact(tmp_path)
