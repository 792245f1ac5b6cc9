"""Training from stored sessions: the training set recorded with the model, out-of-fold scores, erasure."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from feature_svc.features import vectorize
from reward_svc.app import create_app
from reward_svc.registry import Registry, TrainingRowRow, TrainingSetRow
from reward_svc.service import Scorer, run_training
from reward_svc.settings import RewardSettings
from tacit.schemas.reward import SessionTrainingSet, StoredSessions, TrainingRow, TrainRewardModel
from tacit.simulate import simulate_session

USERS = 6
PER_USER = 5


class QueueDouble:
    """A Celery app that records what would be queued (or fails like a broker that is down)."""

    def __init__(self, down: bool = False) -> None:
        self.sent: list[tuple[str, list[Any]]] = []
        self.down = down

    def send_task(self, name: str, *, args: list[Any], **_: Any) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.sent.append((name, args))


def _training_set(prefix: str, users: int = USERS, per_user: int = PER_USER, **spec: Any) -> SessionTrainingSet:
    rows = []
    names: list[str] = []
    version = ""
    for u in range(users):
        for k in range(per_user):
            prefer: Literal["left", "right"] = "right" if (u + k) % 2 else "left"
            session = simulate_session(
                seed=100 * u + k,
                samples=300,
                prefer=prefer,
                user_id=f"{prefix}-u{u}",
                session_id=f"{prefix}-u{u}-s{k}",
            )
            vector = vectorize(session, "all")
            names, version = vector.names, vector.feature_set_version
            rows.append(
                TrainingRow(
                    session_id=session.session_id,
                    user_id=session.user_id,
                    task_id=session.task_id,
                    turn=0,
                    label=1 if prefer == "right" else 0,
                    samples=vector.samples,
                    content_hash=f"hash-{session.session_id}",
                    values=vector.values,
                )
            )
    options = {"source": StoredSessions(), "model": "swap_lr", "seeds": 1, **spec}
    return SessionTrainingSet(
        spec=TrainRewardModel(**options), feature_set="all", feature_set_version=version, names=names, rows=rows
    )


@pytest.fixture
def app_and_registry(tmp_path: Path) -> Iterator[tuple[TestClient[Any], Registry, QueueDouble]]:
    settings = RewardSettings(database_url=f"sqlite:///{tmp_path / 'reward.db'}", models_dir=str(tmp_path / "models"))
    queue = QueueDouble()
    with TestClient(create_app(settings, celery=queue)) as client:
        registry: Registry = client.app.state.registry
        yield client, registry, queue


def test_a_session_training_set_is_recorded_trained_and_scored_out_of_fold(
    app_and_registry: tuple[TestClient[Any], Registry, QueueDouble], tmp_path: Path
) -> None:
    client, registry, queue = app_and_registry
    body = _training_set("ts")
    answer = client.post("/v1/reward/models:sessions", content=msgspec.json.encode(body))
    assert answer.status_code == 202, answer.text
    model_id = answer.json()["id"]
    summary = answer.json()["training_set"]
    assert (summary["source"], summary["sessions"], summary["users"]) == ("sessions", USERS * PER_USER, USERS)
    assert summary["labels"] == {"0": 15, "1": 15}
    assert "user_ids" not in summary
    assert "ts-u0" not in answer.text
    [(_, args)] = queue.sent
    assert args[0] == model_id

    # what the cpu worker does with the queued job
    spec = msgspec.convert(args[1], TrainRewardModel)
    row = run_training(registry, model_id, spec, tmp_path / "models")
    assert row.status == "succeeded", row.error
    members = client.get(f"/v1/reward/models/{model_id}/training-set").json()["members"]
    assert len(members) == USERS * PER_USER
    assert all(0.0 <= m["p_out_of_fold"] <= 1.0 for m in members)

    # a training session is answered with its out-of-fold probability, never the model's in-sample one
    scorer = Scorer(registry)
    first = body.rows[0]
    vector = vectorize(
        simulate_session(seed=0, samples=300, prefer="left", user_id="ts-u0", session_id=first.session_id), "all"
    )
    fresh = msgspec.structs.replace(vector, session_id="ts-new")
    held_out, new = scorer.score([vector, fresh], "pairwise", model_id)
    oof = {m["session_id"]: m["p_out_of_fold"] for m in members}
    assert held_out.kind == "out_of_fold"
    assert held_out.p == pytest.approx(oof[first.session_id])
    assert held_out.p_population == pytest.approx(held_out.p)
    assert new.kind == "model"
    in_sample = float(scorer.model("pairwise", model_id)[1].estimator.predict_proba(np.array([vector.values]))[0, 1])
    assert in_sample == pytest.approx(new.p_population)
    assert held_out.p != pytest.approx(in_sample)

    listed = client.get("/v1/reward/models").json()
    assert [m["training_set"]["users"] for m in listed if m["id"] == model_id] == [USERS]

    # erasing a user drops their rows and names the model; the summary (what it learned from) stays
    erased = client.delete("/v1/reward/training-rows", params={"user_id": "ts-u0"}).json()
    assert erased == {"rows_deleted": PER_USER, "models_affected": [model_id]}
    assert len(client.get(f"/v1/reward/models/{model_id}/training-set").json()["members"]) == (USERS - 1) * PER_USER
    assert scorer.score([vector], "pairwise", model_id)[0].kind == "out_of_fold"  # this scorer's cache ...
    service_scorer: Scorer = client.app.state.scorer
    service_scorer.out_of_fold(model_id)
    client.delete("/v1/reward/training-rows", params={"user_id": "ts-u1"})
    assert "ts-u1-s0" not in service_scorer.out_of_fold(model_id)  # ... the service's is dropped by the erasure
    assert client.get(f"/v1/reward/models/{model_id}").json()["training_set"]["users"] == USERS


@pytest.mark.parametrize(
    ("users", "per_user", "detail"),
    [(3, 8, "of 3 users"), (6, 3, "18 labelled sessions")],
)
def test_too_few_sessions_or_users_is_422_and_registers_nothing(
    app_and_registry: tuple[TestClient[Any], Registry, QueueDouble], users: int, per_user: int, detail: str
) -> None:
    client, registry, queue = app_and_registry
    answer = client.post(
        "/v1/reward/models:sessions", content=msgspec.json.encode(_training_set("few", users, per_user))
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "rows"
    assert detail in answer.json()["detail"]
    assert "at least 20" in answer.json()["detail"]
    assert registry.list() == []
    assert registry.count_training_rows() == 0
    assert queue.sent == []


def test_one_label_only_is_422(app_and_registry: tuple[TestClient[Any], Registry, QueueDouble]) -> None:
    client, registry, _ = app_and_registry
    body = _training_set("one")
    rows = [msgspec.structs.replace(r, label=1) for r in body.rows]
    answer = client.post(
        "/v1/reward/models:sessions", content=msgspec.json.encode(msgspec.structs.replace(body, rows=rows))
    )
    assert answer.status_code == 422
    assert "'0': 0" in answer.json()["detail"]
    assert registry.list() == []


def test_a_queue_that_is_down_leaves_no_model_and_no_training_set(tmp_path: Path) -> None:
    settings = RewardSettings(database_url=f"sqlite:///{tmp_path / 'reward.db'}", models_dir=str(tmp_path / "models"))
    with TestClient(create_app(settings, celery=QueueDouble(down=True))) as client:
        answer = client.post("/v1/reward/models:sessions", content=msgspec.json.encode(_training_set("down")))
        assert answer.status_code == 503
        registry: Registry = client.app.state.registry
        assert registry.list() == []
        assert registry.count_training_rows() == 0


def test_the_public_route_takes_data_or_source_but_not_stored_sessions(
    app_and_registry: tuple[TestClient[Any], Registry, QueueDouble],
) -> None:
    client, _, queue = app_and_registry
    both = client.post("/v1/reward/models", json={"data": "x", "source": {"kind": "ifllm", "data": "x"}})
    assert (both.status_code, both.json()["field"]) == (422, "source")
    stored = client.post("/v1/reward/models", json={"source": {"kind": "sessions"}})
    assert (stored.status_code, stored.json()["field"]) == (422, "source")
    ifllm = client.post("/v1/reward/models", json={"source": {"kind": "ifllm", "data": "/somewhere"}, "seeds": 0})
    assert ifllm.status_code == 202
    assert queue.sent[0][1][1]["source"] == {"kind": "ifllm", "data": "/somewhere"}


def _cut(ifllm_dir: Path, out: Path, n_workers: int) -> Path:
    """An IFLLM folder of the dev subset's first `n_workers` workers (same layout)."""
    import csv
    import shutil

    workers = sorted(p.name for p in (ifllm_dir / "user_behavior").iterdir() if p.is_dir())[:n_workers]
    (out / "user_behavior").mkdir(parents=True)
    for worker in workers:
        shutil.copytree(ifllm_dir / "user_behavior" / worker, out / "user_behavior" / worker)
    for table in ("query_logs_table.csv", "task_table.csv"):
        with (ifllm_dir / table).open(newline="", encoding="utf-8") as src:
            reader = csv.DictReader(src)
            rows = [row for row in reader if row["user_id"].strip() in workers]
            with (out / table).open("w", newline="", encoding="utf-8") as dst:
                writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
                writer.writeheader()
                writer.writerows(rows)
    return out


@pytest.mark.data
def test_a_model_trained_on_an_ifllm_folder_records_its_questions_as_the_imported_sessions(
    ifllm_dir: Path, tmp_path: Path
) -> None:
    folder = _cut(ifllm_dir, tmp_path / "ifllm", 12)
    registry = Registry(f"sqlite:///{tmp_path / 'reward.db'}")
    try:
        spec = TrainRewardModel(data=str(folder), model="swap_lr", seeds=1)
        row = registry.create(task="pairwise", model_name="swap_lr", feature_set="", spec={})
        assert run_training(registry, row.id, spec, tmp_path / "models").status == "succeeded"
        summary = registry.training_set(row.id)
        members = registry.training_rows(row.id)
        assert summary is not None
        assert summary.source == "ifllm"
        assert summary.sessions == len(members) > 0
        # the imported session of each question (tacit.ifllm.sessions) has this id: erasure and scoring find it
        assert all(m.session_id.startswith("ifllm-") and m.content_hash == "" for m in members)
        assert all(m.p_oof is not None for m in members)
        user = members[0].user_id
        count, models = registry.erase_user(user)
        assert count == sum(m.user_id == user for m in members)
        assert models == [row.id]
    finally:
        registry.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_training_tables_on_both_databases(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    url = f"sqlite:///{tmp_path / 'reward.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    registry = Registry(url)
    try:
        user = f"db-{uuid.uuid4().hex[:8]}"
        rows = [
            TrainingRowRow(
                model_id="",
                session_id=f"{user}-{k}",
                user_id=user if k < 2 else f"{user}-other",
                task_id="t",
                label=k % 2,
                content_hash="h",
                values=[0.5, float(k)],
            )
            for k in range(4)
        ]
        summary = TrainingSetRow(model_id="", source="sessions", sessions=4, users=2, names_json='["a", "b"]')
        row = registry.create(
            task="pairwise", model_name="swap_lr", feature_set="all", spec={}, training_set=summary, training_rows=rows
        )
        assert [r.values for r in registry.training_rows(row.id)] == [[0.5, 0.0], [0.5, 1.0], [0.5, 2.0], [0.5, 3.0]]
        assert registry.set_out_of_fold(row.id, {f"{user}-0": 0.25, f"{user}-3": 0.75}) == 2
        assert registry.out_of_fold(row.id) == {f"{user}-0": 0.25, f"{user}-3": 0.75}
        assert registry.erase_user(user) == (2, [row.id])
        assert registry.out_of_fold(row.id) == {f"{user}-3": 0.75}
        registry.delete(row.id)
        assert registry.get(row.id) is None
        assert registry.training_set(row.id) is None
        assert registry.training_rows(row.id) == []
    finally:
        registry.close()
