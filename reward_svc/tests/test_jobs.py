"""Managing training runs: claim and heartbeat, cancellation at a progress step, the reaper of lost workers and the
take-over of their runs, deletion, the routes, and the columns an older registry database gets at start-up."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from litestar.testing import TestClient

from reward_svc import service
from reward_svc.app import create_app
from reward_svc.demo import write_demo_table
from reward_svc.registry import WORKER_LOST, ModelBusyError, ModelRow, ModelStateError, Registry
from reward_svc.service import delete_model, run_training
from reward_svc.settings import RewardSettings
from tacit.schemas import TrainRewardModel
from tacit.settings import SettingsError


class ControlDouble:
    def __init__(self) -> None:
        self.revoked: list[str] = []

    def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)


class QueueDouble:
    """A Celery app that records what is queued and revoked."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []
        self.control = ControlDouble()

    def send_task(self, name: str, *, args: list[Any], **_: Any) -> None:
        self.sent.append((name, args))


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_table(tmp_path_factory.mktemp("demo") / "demo.parquet", n=120)


def _spec(table: Path, **options: Any) -> TrainRewardModel:
    return TrainRewardModel(**{"data": str(table), "model": "swap_lr", "feature_set": "all", "seeds": 1, **options})


def _queued(registry: Registry) -> ModelRow:
    return registry.create(task="pairwise", model_name="swap_lr", feature_set="all", spec={})


def _silence(registry: Registry, model_id: str, seconds: float) -> None:
    """Make the run's last heartbeat `seconds` old."""
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    registry.update(model_id, heartbeat_at=then)


# -- the registry: claim, heartbeat, reap, cancel, remove -------------------------------------------------------------


def test_a_claimed_run_is_the_workers_until_cancelled(registry: Registry) -> None:
    row = _queued(registry)
    claim = registry.claim(row.id, "host:1/a", stale_after_s=600)
    assert claim is not None
    assert (claim.row.status, claim.row.worker, claim.took_over) == ("running", "host:1/a", "")
    assert claim.row.heartbeat_at is not None
    assert registry.beat(row.id, "host:1/a", stage="cross-validation", done=1, total=5)
    assert not registry.beat(row.id, "host:2/b", stage="cross-validation", done=2, total=5)  # not its run
    with pytest.raises(ModelBusyError, match="host:1/a"):  # a redelivery while its worker is heard from
        registry.claim(row.id, "host:2/b", stale_after_s=600)

    cancelled = registry.cancel(row.id)
    assert (cancelled.status, cancelled.error) == ("cancelled", "cancelled by request")
    assert cancelled.finished_at is not None
    assert not registry.beat(row.id, "host:1/a", stage="cross-validation", done=3, total=5)
    assert registry.finish(row.id, "host:1/a", status="succeeded") is None  # nothing written
    assert registry.cancel(row.id).status == "cancelled"  # again: answered as it is
    assert registry.claim(row.id, "host:3/c", stale_after_s=600) is None  # a redelivery returns at once
    with pytest.raises(KeyError):
        registry.cancel("missing")


def test_only_a_queued_or_running_model_can_be_cancelled(registry: Registry) -> None:
    row = _queued(registry)
    registry.update(row.id, status="succeeded")
    with pytest.raises(ModelStateError, match="is succeeded") as err:
        registry.cancel(row.id)
    assert err.value.field == "status"
    assert registry.get(row.id).status == "succeeded"  # type: ignore[union-attr]


def test_the_reaper_fails_a_silent_run_and_a_redelivery_takes_it_over(registry: Registry) -> None:
    lost, alive, queued = _queued(registry), _queued(registry), _queued(registry)
    registry.claim(lost.id, "host:1/lost")
    registry.claim(alive.id, "host:1/alive")
    _silence(registry, lost.id, 700)
    _silence(registry, alive.id, 30)

    reaped = registry.reap(600)
    assert [r.id for r in reaped] == [lost.id]
    failed = registry.get(lost.id)
    assert failed is not None
    assert failed.status == "failed"
    assert failed.error.startswith(f"{WORKER_LOST}: no heartbeat for 70")  # ~700 s
    assert failed.error.endswith(" s")
    assert registry.get(alive.id).status == "running"  # type: ignore[union-attr]
    assert registry.get(queued.id).status == "queued"  # type: ignore[union-attr]
    assert registry.reap(600) == ()  # idempotent

    # the lost worker, were it only hung, can no longer write: its run is over
    assert not registry.beat(lost.id, "host:1/lost", stage="x", done=1, total=1)
    # a redelivered task takes the reaped run over
    claim = registry.claim(lost.id, "host:2/new", stale_after_s=600)
    assert claim is not None
    assert claim.took_over == failed.error
    assert (claim.row.status, claim.row.error, claim.row.finished_at) == ("running", "", None)


def test_a_redelivery_takes_over_a_running_but_stale_run(registry: Registry) -> None:
    row = _queued(registry)
    registry.claim(row.id, "host:1/old")
    _silence(registry, row.id, 120)
    with pytest.raises(ModelBusyError):
        registry.claim(row.id, "host:2/new", stale_after_s=600)
    claim = registry.claim(row.id, "host:2/new", stale_after_s=60)
    assert claim is not None
    assert claim.took_over.startswith(f"{WORKER_LOST}: no heartbeat for 1")
    assert claim.row.worker == "host:2/new"
    assert not registry.beat(row.id, "host:1/old", stage="x", done=1, total=1)


def test_a_run_that_failed_for_its_own_reason_is_not_retrained(registry: Registry) -> None:
    row = _queued(registry)
    registry.update(row.id, status="failed", error="ValueError: no labelled rows")
    assert registry.claim(row.id, "host:1/a", stale_after_s=600) is None


def test_remove_refuses_the_active_and_unfinished_models(registry: Registry) -> None:
    active, running, done = _queued(registry), _queued(registry), _queued(registry)
    registry.update(active.id, status="succeeded")
    registry.activate(active.id)
    registry.claim(running.id, "host:1/a")
    registry.update(done.id, status="failed", error="x")
    with pytest.raises(ModelStateError, match="active pairwise model") as err:
        registry.remove(active.id)
    assert err.value.field == "active"
    with pytest.raises(ModelStateError, match="cancel it first") as err:
        registry.remove(running.id)
    assert err.value.field == "status"
    assert registry.remove(done.id).id == done.id
    assert registry.get(done.id) is None
    with pytest.raises(KeyError):
        registry.remove(done.id)
    registry.cancel(running.id)
    registry.remove(running.id)
    assert [r.id for r in registry.list()] == [active.id]


# -- training: cancellation, take-over, deletion ----------------------------------------------------------------------


def test_a_run_cancelled_at_a_progress_step_stops_and_leaves_no_artifact(
    registry: Registry, table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "PROGRESS_EVERY_S", 0.0)
    row = _queued(registry)
    seen: list[tuple[str, int]] = []

    def progress(stage: str, done: int, total: int) -> None:
        seen.append((stage, done))
        if stage == "cross-validation" and done == 2:
            registry.cancel(row.id)

    models = tmp_path / "models"
    ended = run_training(registry, row.id, _spec(table, activate=True), models, on_progress=progress, worker="w:1/a")
    assert (ended.status, ended.active, ended.artifact) == ("cancelled", False, "")
    assert seen[-1] == ("cross-validation", 2)  # no step after the cancellation
    assert not (models / row.id).exists()
    assert registry.active("pairwise") is None


def test_a_run_cancelled_while_saving_removes_what_it_wrote(
    registry: Registry, table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = _queued(registry)
    real_save = service.RewardModel.save

    def save_then_cancel(model: Any, out: Path | str) -> Path:
        path = real_save(model, out)
        registry.cancel(row.id)  # between the artifact and the row: the run is no longer this worker's
        return path

    monkeypatch.setattr(service.RewardModel, "save", save_then_cancel)
    models = tmp_path / "models"
    ended = run_training(registry, row.id, _spec(table, activate=True), models, worker="w:1/a")
    assert (ended.status, ended.active) == ("cancelled", False)
    assert not (models / row.id).exists()


def test_a_reaped_run_is_trained_again_by_its_redelivery_and_can_then_be_deleted(
    registry: Registry, table: Path, tmp_path: Path
) -> None:
    row = _queued(registry)
    registry.claim(row.id, "dead:1/a")
    _silence(registry, row.id, 900)
    assert registry.reap(600)[0].status == "failed"
    models = tmp_path / "models"
    trained = run_training(registry, row.id, _spec(table), models, worker="w:2/b", stale_after_s=600)
    assert trained.status == "succeeded", trained.error
    assert (trained.error, trained.worker) == ("", "w:2/b")
    assert (models / row.id).is_dir()
    # a redelivery of a succeeded (or cancelled) run returns at once
    again = run_training(registry, row.id, _spec(table), models, worker="w:3/c", stale_after_s=600)
    assert (again.status, again.worker, again.finished_at) == ("succeeded", "w:2/b", trained.finished_at)

    deleted = delete_model(registry, row.id, models)
    assert deleted.id == row.id
    assert registry.get(row.id) is None
    assert registry.training_set(row.id) is None
    assert not (models / row.id).exists()
    with pytest.raises(KeyError):  # what the task does for a model deleted before it ran
        run_training(registry, row.id, _spec(table), models)


def test_a_run_whose_worker_is_alive_is_not_trained_twice(registry: Registry, table: Path, tmp_path: Path) -> None:
    row = _queued(registry)
    registry.claim(row.id, "other:1/a")
    with pytest.raises(ModelBusyError):
        run_training(registry, row.id, _spec(table), tmp_path / "models", worker="w:2/b", stale_after_s=600)
    assert registry.get(row.id).worker == "other:1/a"  # type: ignore[union-attr]


# -- the routes and the reaper of the service ------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient[Any], Registry, QueueDouble]]:
    settings = RewardSettings(database_url=f"sqlite:///{tmp_path / 'reward.db'}", models_dir=str(tmp_path / "models"))
    queue = QueueDouble()
    with TestClient(create_app(settings, celery=queue)) as client:
        yield client, client.app.state.registry, queue


def test_cancel_route_cancels_and_revokes_the_queued_task(app: tuple[TestClient[Any], Registry, QueueDouble]) -> None:
    client, registry, queue = app
    queued = client.post("/v1/reward/models", json={"data": "/somewhere", "seeds": 0}).json()
    answer = client.post(f"/v1/reward/models/{queued['id']}/cancel")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["error"]) == ("cancelled", "cancelled by request")
    assert queue.control.revoked == [f"reward-{queued['id']}"]
    assert client.post(f"/v1/reward/models/{queued['id']}/cancel").status_code == 200

    missing = client.post("/v1/reward/models/nope/cancel")
    assert (missing.status_code, missing.json()["field"]) == (404, "model_id")
    done = _queued(registry)
    registry.update(done.id, status="succeeded")
    refused = client.post(f"/v1/reward/models/{done.id}/cancel")
    assert (refused.status_code, refused.json()["code"], refused.json()["field"]) == (409, "conflict", "status")


def test_delete_route(app: tuple[TestClient[Any], Registry, QueueDouble], tmp_path: Path) -> None:
    client, registry, _ = app
    active, running, old = _queued(registry), _queued(registry), _queued(registry)
    registry.update(active.id, status="succeeded")
    registry.activate(active.id)
    registry.claim(running.id, "w:1/a")
    artifact = tmp_path / "models" / old.id
    artifact.mkdir(parents=True)
    (artifact / "model.joblib").write_bytes(b"x")
    registry.update(old.id, status="succeeded", artifact=str(artifact))

    refused = client.delete(f"/v1/reward/models/{active.id}")
    assert (refused.status_code, refused.json()["field"]) == (409, "active")
    busy = client.delete(f"/v1/reward/models/{running.id}")
    assert (busy.status_code, busy.json()["field"]) == (409, "status")
    assert "cancel it first" in busy.json()["detail"]

    deleted = client.delete(f"/v1/reward/models/{old.id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["id"] == old.id
    assert not artifact.exists()
    assert client.get(f"/v1/reward/models/{old.id}").status_code == 404
    assert client.delete(f"/v1/reward/models/{old.id}").status_code == 404
    assert {m["id"] for m in client.get("/v1/reward/models").json()} == {active.id, running.id}


def test_the_service_reaps_lost_runs_at_start_up_and_then_periodically(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reward.db'}"
    registry = Registry(url)
    before = _queued(registry)
    registry.claim(before.id, "dead:1/a")
    _silence(registry, before.id, 3600)
    registry.close()

    settings = RewardSettings(
        database_url=url, models_dir=str(tmp_path / "models"), stale_after_s=1, reap_interval_s=0.1
    )
    with TestClient(create_app(settings, celery=QueueDouble())) as client:
        reaped = client.get(f"/v1/reward/models/{before.id}").json()
        assert reaped["status"] == "failed"
        assert reaped["error"].startswith("worker lost: no heartbeat for 360")  # 3600 s and the start-up's

        registry = client.app.state.registry
        later = _queued(registry)
        registry.claim(later.id, "hung:1/a")  # heard from now, then silent
        deadline = time.monotonic() + 10
        while client.get(f"/v1/reward/models/{later.id}").json()["status"] == "running":
            assert time.monotonic() < deadline, "the periodic reaper did not fail the silent run"
            time.sleep(0.1)
        assert client.get(f"/v1/reward/models/{later.id}").json()["error"].startswith(f"{WORKER_LOST}: no heartbeat")
        assert "tacit_reward_trainings_reaped_total 2.0" in client.get("/metrics").text


def test_stale_limits_must_be_positive() -> None:
    with pytest.raises(SettingsError):
        RewardSettings(stale_after_s=0)
    with pytest.raises(SettingsError):
        RewardSettings(reap_interval_s=-1)


# -- a registry made by the previous code gets the new columns -------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_registry_made_before_heartbeats_gets_its_columns_and_its_runs_reaped(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("module_postgres_url")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DROP TABLE IF EXISTS reward_models"))
    legacy = sqlalchemy.MetaData()
    old_columns = [c for c in ModelRow.__table__.columns if c.name not in ("worker", "heartbeat_at")]  # type: ignore[attr-defined]
    sqlalchemy.Table("reward_models", legacy, *[c._copy() for c in old_columns])
    legacy.create_all(engine)
    created = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO reward_models (id, task, model_name, feature_set, feature_set_version, feature_mode, "
                "status, stage, done, total, error, artifact, metrics_json, spec_json, data_hash, demo, active, "
                "created_at) VALUES ('legacy1', 'pairwise', 'rf', 'all', '', 'default', 'running', 'cross-validation', "
                "1, 5, '', '', '{}', '{}', '', false, false, :created)"
            ),
            {"created": created},
        )
    engine.dispose()

    for _ in range(2):  # idempotent: a second start-up adds nothing
        registry = Registry(url)
        try:
            row = registry.get("legacy1")
            assert row is not None
            assert (row.worker, row.heartbeat_at, row.status) == ("", None, "running")
        finally:
            registry.close()
    engine = sqlalchemy.create_engine(url)
    columns = {c["name"] for c in sqlalchemy.inspect(engine).get_columns("reward_models")}
    engine.dispose()
    assert {"worker", "heartbeat_at"} <= columns

    registry = Registry(url)
    try:
        [reaped] = registry.reap(600)  # silent since it was created, 2 hours ago
        assert reaped.error.startswith("worker lost: no heartbeat for 720")
        again = registry.create(task="pairwise", model_name="rf", feature_set="all", spec={})
        assert registry.claim(again.id, "w:1/a") is not None
    finally:
        with registry.engine.begin() as conn:  # the other tests of this module recreate it as it is now
            conn.execute(sqlalchemy.text("DROP TABLE reward_models"))
        registry.close()
