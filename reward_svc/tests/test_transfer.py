"""The transfer protocol's pieces: the one-SE rule, preference injection, the gate check and warm-start rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reward_svc.model.data import task_data
from reward_svc.model.transfer import (
    choose,
    gate_check,
    inject_mixed_preference,
    inject_preference,
    nested_runs,
    warm_start_table,
    warm_variants,
)


def _row(model: str, macro: float, se: float) -> dict[str, float | str]:
    return {"model": model, "macro": macro, "se": se}


def test_one_se_rule_prefers_the_simplest_candidate_within_noise() -> None:
    rows = [_row("simple", 0.60, 0.03), _row("middle", 0.62, 0.02), _row("complex", 0.63, 0.02)]
    assert choose(rows)["chosen"] == "middle"  # simple is 0.03 below the best, more than its SE of 0.02
    rows[0]["macro"] = 0.615
    assert choose(rows)["chosen"] == "simple"
    assert choose(rows)["best"] == "complex"


def test_injection_pushes_each_worker_towards_one_side_and_is_stable() -> None:
    users = np.repeat(np.array(["a", "b", "c", "d"]), 50)
    y = np.tile(np.array([0, 1]), 100)
    injected = inject_preference(y, users, 0.8, seed=3)
    assert np.array_equal(injected, inject_preference(y, users, 0.8, seed=3))
    for user in "abcd":
        share = injected[users == user].mean()
        assert share > 0.8 or share < 0.2  # about 90 % on the drawn side
    assert np.array_equal(inject_preference(y, users, 0.0, seed=3), y)


def test_mixed_injection_gives_some_workers_a_habit_and_leaves_the_others_alone() -> None:
    users = np.repeat(np.array([f"w{i}" for i in range(40)]), 30)
    y = np.tile(np.array([0, 1]), 600)
    injected = inject_mixed_preference(y, users, seed=1)
    assert np.array_equal(injected, inject_mixed_preference(y, users, seed=1))
    untouched = [u for u in np.unique(users) if np.array_equal(injected[users == u], y[users == u])]
    shares = [abs(injected[users == u].mean() - 0.5) for u in np.unique(users) if u not in untouched]
    assert 8 <= len(untouched) <= 32  # about half: a fair coin per worker
    assert min(shares) > 0.05  # a habit relabels at least half of a worker's questions towards one side
    assert not np.array_equal(inject_mixed_preference(y, users, seed=2), injected)


def test_warm_start_rows_carry_their_spread_over_seeds(frame: pd.DataFrame) -> None:
    data = task_data(frame, "pairwise", "all")
    runs = nested_runs(data, "swap_lr_sigmoid", seeds=2)
    variants = warm_variants()
    assert next(iter(variants)) == "dev folds"
    assert variants["dev folds"] is None
    rows = warm_start_table(runs, ks=(0,), relabel=variants["injected preference, mixed habits"])
    population = next(r for r in rows if r["method"] == "population")
    assert len(population["micro_by_seed"]) == 2
    assert population["micro"] == pytest.approx(np.mean(population["micro_by_seed"]))
    assert population["micro_seed_std"] == pytest.approx(np.std(population["micro_by_seed"], ddof=1))
    assert population["macro_seed_std"] == pytest.approx(np.std(population["macro_by_seed"], ddof=1))
    assert population["rows"] == data.n  # two seeds, every row scored once per seed
    share = warm_start_table(runs, ks=(0,), inject_share=0.8)
    same = warm_start_table(runs, ks=(0,), relabel=variants["injected preference, share 0.8"])
    assert pd.DataFrame(share).equals(pd.DataFrame(same))  # NaN ECE of the label-only methods compares equal here


def test_nested_runs_give_warm_start_rows_on_the_same_rows(frame: pd.DataFrame) -> None:
    data = task_data(frame, "pairwise", "all")
    runs = nested_runs(data, "swap_lr_sigmoid", seeds=1)
    assert len(runs.folds) == 5
    rows = warm_start_table(runs, ks=(0, 3))
    by_k = {k: [r for r in rows if r["k"] == k] for k in (0, 3)}
    for k, group in by_k.items():
        assert len({r["rows"] for r in group}) == 1, f"methods at k={k} scored different rows"
        methods = {r["method"] for r in group}
        assert {"adapted", "population", "per-user prior only", "majority class"} <= methods
    zero = {r["method"]: r for r in by_k[0]}
    assert zero["adapted"]["micro"] == zero["population"]["micro"]  # no labels, no adaptation
    assert by_k[3][0]["rows"] < by_k[0][0]["rows"]
    check = gate_check(runs)
    assert check["folds_judged"] <= 5
    assert isinstance(check["passes"], bool)


def test_transfer_section_writes_its_tables_and_plots(frame: pd.DataFrame, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from reward_svc.model.transfer_report import transfer_section

    text = transfer_section(frame, tmp_path, seeds=2, nested_seeds=1)
    for heading in ("### Candidates", "**Choice by the rule:**", "### Calibration", "quality gate", "### Warm start"):
        assert heading in text
    assert "injected preference, share 0.8" in text
    assert "injected preference, mixed habits" in text
    assert "**Against the majority class**" in text
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "reward_transfer_reliability_per_fold.png",
        "reward_transfer_accuracy_vs_k.png",
        "reward_transfer_per_worker.png",
    }
