"""Train/serve skew guard: a feature table and a served vector name the same features, in the same order."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_svc.extract import META_COLUMNS, extract_table
from feature_svc.features import FEATURE_SETS, vectorize
from tacit.simulate import simulate_session

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def table(ifllm_dir: Path):  # type: ignore[no-untyped-def]
    return extract_table(ifllm_dir, workers=2).table.to_pandas()


@pytest.mark.parametrize("mode", ["pairwise", "pointwise"])
@pytest.mark.parametrize("feature_set", sorted(FEATURE_SETS))
def test_table_and_served_vector_agree_on_names_and_version(table, mode: str, feature_set: str) -> None:  # type: ignore[no-untyped-def]
    rows = table[table["mode"] == mode]
    available = [c for c in rows.columns if c not in META_COLUMNS and rows[c].notna().any()]
    if mode == "pairwise":
        available = [c for c in available if not c.startswith("prev_")]
    fs = FEATURE_SETS[feature_set]
    names = fs.names(mode, available)
    previous = simulate_session(seed=2, mode=mode, samples=100) if mode == "pointwise" else None
    vector = vectorize(simulate_session(seed=1, mode=mode, samples=300), feature_set, previous=previous)
    assert vector.names == names
    assert vector.feature_set_version == fs.version(mode, names)
