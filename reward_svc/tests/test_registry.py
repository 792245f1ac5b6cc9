"""The model registry on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from reward_svc.registry import Registry


def test_create_update_get(registry: Registry) -> None:
    row = registry.create(task="pairwise", model_name="rf", feature_set="paper_if", spec={"seeds": 1})
    assert row.status == "queued"
    registry.update(row.id, status="running", stage="cross-validation", done=2, total=5)
    got = registry.get(row.id)
    assert got is not None
    assert (got.status, got.stage, got.done, got.total) == ("running", "cross-validation", 2, 5)
    assert registry.get("missing") is None
    with pytest.raises(KeyError):
        registry.update("missing", status="failed")


def test_one_active_model_per_task(registry: Registry) -> None:
    first = registry.create(task="pairwise", model_name="rf", feature_set="all", spec={})
    second = registry.create(task="pairwise", model_name="et", feature_set="all", spec={})
    pointwise = registry.create(task="pointwise", model_name="et", feature_set="all", spec={})
    for row in (first, second, pointwise):
        registry.update(row.id, status="succeeded")
    registry.activate(first.id)
    registry.activate(pointwise.id)
    registry.activate(second.id)
    active = registry.active("pairwise")
    assert active is not None
    assert active.id == second.id
    refreshed = registry.get(first.id)
    assert refreshed is not None
    assert not refreshed.active
    point = registry.active("pointwise")
    assert point is not None
    assert point.id == pointwise.id


def test_only_a_succeeded_model_can_be_activated(registry: Registry) -> None:
    row = registry.create(task="pairwise", model_name="rf", feature_set="all", spec={})
    with pytest.raises(ValueError, match="only a succeeded model"):
        registry.activate(row.id)
    with pytest.raises(KeyError):
        registry.activate("missing")
    assert registry.active("pairwise") is None


def test_list_filters_by_task_newest_first(registry: Registry) -> None:
    a = registry.create(task="pairwise", model_name="rf", feature_set="all", spec={})
    b = registry.create(task="pointwise", model_name="rf", feature_set="all", spec={})
    c = registry.create(task="pairwise", model_name="rf", feature_set="all", spec={})
    assert [r.id for r in registry.list("pairwise")] == [c.id, a.id]
    assert {r.id for r in registry.list()} == {a.id, b.id, c.id}
