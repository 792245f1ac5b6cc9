"""IFLLM imports as a cpu-queue task: the task's job-row state machine (run, resume, cancel, redelivery, failure),
the routes that send, read and cancel it, and one builder for a question's session (import and CLI alike)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.imports import KIND, run_ifllm_import
from gateway.keys import create_key
from gateway.settings import GatewaySettings
from tacit.db import Store
from tacit.schemas import Session
from tacit.simulate import simulate_session
from tacit.tasks import QUEUE_CPU, TASK_IMPORT_IFLLM

DOWN = "http://127.0.0.1:9"


class FakeFolders:
    """A stand-in for an IFLLM folder: `folders` task folders of `per_folder` sessions each, recording which folders
    were built (the import reads a folder through `tacit.ifllm.sessions.task_sessions`)."""

    def __init__(self, folders: int = 3, per_folder: int = 2) -> None:
        self.prefix = f"imp-{uuid.uuid4().hex[:8]}"
        self.keys = [(f"{self.prefix}-w", str(t)) for t in range(folders)]
        self.per_folder = per_folder
        self.built: list[tuple[str, str]] = []
        self.on_build: Any = None

    def sessions(self, key: tuple[str, str]) -> list[Session]:
        task = int(key[1])
        return [
            simulate_session(
                seed=10 * task + k, samples=20, user_id=key[0], session_id=f"{self.prefix}-{task}-{k}", task_id=key[1]
            )
            for k in range(self.per_folder)
        ]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import tacit.ifllm.reader
        import tacit.ifllm.sessions

        fake = self

        class Dataset:
            def __init__(self, root: str) -> None:
                self.root = root

            def task_dirs(self) -> list[tuple[tuple[str, str], Path]]:
                return [(key, Path(self.root) / key[0] / key[1]) for key in fake.keys]

        def task_sessions(dataset: Any, key: tuple[str, str], folder: Path | None = None, **_: Any) -> list[Session]:
            fake.built.append(key)
            if fake.on_build is not None:
                fake.on_build(key)
            return fake.sessions(key)

        monkeypatch.setattr(tacit.ifllm.reader, "Dataset", Dataset)
        monkeypatch.setattr(tacit.ifllm.sessions, "task_sessions", task_sessions)


@pytest.fixture
def folders(monkeypatch: pytest.MonkeyPatch) -> FakeFolders:
    fake = FakeFolders()
    fake.install(monkeypatch)
    return fake


def test_an_import_stores_every_folder_and_a_redelivery_exits_at_once(store: Store, folders: FakeFolders) -> None:
    job = store.jobs.create_job(KIND, {"data": "/srv/ifllm"})
    assert run_ifllm_import(store, job.id) == "succeeded"
    row = store.jobs.get_job(job.id)
    assert row is not None
    assert (row.status, row.stage, row.done, row.total) == ("succeeded", "done", 3, 3)
    assert row.result == {"stored": 6, "already_stored": 0, "conflicts": 0, "invalid_ids": 0}
    assert all(store.sessions.get_session(f"{folders.prefix}-{t}-{k}") for t in range(3) for k in range(2))
    # A redelivered message of a finished job: nothing is read again, nothing changes.
    folders.built.clear()
    assert run_ifllm_import(store, job.id) == "skipped"
    assert folders.built == []
    again = store.jobs.get_job(job.id)
    assert again is not None
    assert (again.status, again.result, again.updated_at) == (row.status, row.result, row.updated_at)
    assert run_ifllm_import(store, "no-such-job") == "skipped"


def test_an_interrupted_import_resumes_after_the_folders_it_did(store: Store, folders: FakeFolders) -> None:
    # A worker stored the first two folders, recorded them, and died: the redelivered job starts at the third.
    job = store.jobs.create_job(KIND, {"data": "/srv/ifllm"})
    for key in folders.keys[:2]:
        store.sessions.put_sessions(folders.sessions(key))
    counts = {"stored": 4, "already_stored": 0, "conflicts": 0, "invalid_ids": 0}
    store.jobs.update_job(job.id, status="running", stage="sessions", done=2, total=3, result=counts)
    assert run_ifllm_import(store, job.id) == "succeeded"
    assert folders.built == [folders.keys[2]]
    row = store.jobs.get_job(job.id)
    assert row is not None
    assert (row.status, row.done, row.total) == ("succeeded", 3, 3)
    assert row.result == {"stored": 6, "already_stored": 0, "conflicts": 0, "invalid_ids": 0}


def test_a_folder_stored_twice_counts_as_already_stored(store: Store, folders: FakeFolders) -> None:
    # The worker died after storing a folder but before recording it: the redelivery stores it again, harmlessly.
    job = store.jobs.create_job(KIND, {"data": "/srv/ifllm"})
    store.sessions.put_sessions(folders.sessions(folders.keys[0]))
    store.jobs.update_job(job.id, status="running", done=0, total=3)
    assert run_ifllm_import(store, job.id) == "succeeded"
    row = store.jobs.get_job(job.id)
    assert row is not None
    assert row.result == {"stored": 4, "already_stored": 2, "conflicts": 0, "invalid_ids": 0}


def test_a_cancelled_import_stops_after_its_current_folder(store: Store, folders: FakeFolders) -> None:
    job = store.jobs.create_job(KIND, {"data": "/srv/ifllm"})

    def cancel_during_the_second(key: tuple[str, str]) -> None:
        if key == folders.keys[1]:  # what POST /v1/imports/{id}/cancel does while the worker reads this folder
            assert store.jobs.update_job_if(job.id, ("queued", "running"), status="cancelled", stage="cancelled")

    folders.on_build = cancel_during_the_second
    assert run_ifllm_import(store, job.id) == "cancelled"
    assert folders.built == folders.keys[:2]
    row = store.jobs.get_job(job.id)
    assert row is not None
    assert (row.status, row.stage, row.done, row.total) == ("cancelled", "cancelled", 2, 3)
    assert row.result == {"stored": 4, "already_stored": 0, "conflicts": 0, "invalid_ids": 0}
    assert store.sessions.get_session(f"{folders.prefix}-2-0") is None
    # its redelivery does nothing
    assert run_ifllm_import(store, job.id) == "skipped"
    assert folders.built == folders.keys[:2]


def test_an_import_cancelled_while_queued_never_starts(store: Store, folders: FakeFolders) -> None:
    job = store.jobs.create_job(KIND, {"data": "/srv/ifllm"})
    assert store.jobs.update_job_if(job.id, ("queued", "running"), status="cancelled", stage="cancelled")
    assert run_ifllm_import(store, job.id) == "skipped"
    assert folders.built == []
    row = store.jobs.get_job(job.id)
    assert row is not None
    assert (row.status, row.done) == ("cancelled", 0)


def test_an_import_that_cannot_read_its_folder_fails_with_the_reason(store: Store, folders: FakeFolders) -> None:
    def unreadable(key: tuple[str, str]) -> None:
        if key == folders.keys[1]:
            raise OSError("rel_mouse_left.csv: permission denied")

    folders.on_build = unreadable
    job = store.jobs.create_job(KIND, {"data": "/srv/ifllm"})
    assert run_ifllm_import(store, job.id) == "failed"
    row = store.jobs.get_job(job.id)
    assert row is not None
    assert (row.status, row.done) == ("failed", 1)
    assert row.error == "OSError: rel_mouse_left.csv: permission denied"


def test_update_job_if_changes_a_job_only_in_the_given_states(store: Store) -> None:
    job = store.jobs.create_job(KIND, {"data": "x"})
    assert store.jobs.update_job_if(job.id, ("running",), status="succeeded") is None
    running = store.jobs.update_job_if(job.id, ("queued",), status="running", done=1)
    assert running is not None
    assert (running.status, running.done) == ("running", 1)
    assert store.jobs.update_job_if("no-such-job", ("running",), done=2) is None
    with pytest.raises(ValueError, match="job status"):
        store.jobs.update_job_if(job.id, ("running",), status="paused")
    with pytest.raises(TypeError, match="not job fields"):
        store.jobs.update_job_if(job.id, ("running",), kind="other")


# -- routes --------------------------------------------------------------------------------------------------


class FakeCelery:
    """The producer side of Celery: what the gateway sent, or a broker that is down."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.sent: list[tuple[str, list[Any], str, str]] = []

    def send_task(self, name: str, *, args: list[Any], task_id: str, queue: str) -> None:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append((name, args, task_id, queue))


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    store = Store(url)
    store.migrate()
    store.close()
    return url


@pytest.fixture
def ifllm_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "ifllm"
    root.mkdir(parents=True)
    (root / "query_logs_table.csv").write_text("query_ID\n")
    return root


@pytest.fixture
def gateway(database: str, tmp_path: Path) -> Iterator[tuple[TestClient[Litestar], FakeCelery, dict[str, str]]]:
    store = Store(database)
    try:
        keys = {scope: create_key(store, [scope])[0] for scope in ("admin", "read")}
    finally:
        store.close()
    settings = GatewaySettings(
        database_url=database,
        feature_url=DOWN,
        reward_url=DOWN,
        judge_url=DOWN,
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
        data_roots=[str(tmp_path / "data")],
    )
    celery = FakeCelery()
    with TestClient(create_app(settings)) as client:
        client.app.state.celery = celery
        client.headers["Authorization"] = f"Bearer {keys['admin']}"
        yield client, celery, keys


def test_an_import_is_a_job_sent_to_the_cpu_queue_by_name(
    gateway: tuple[TestClient[Litestar], FakeCelery, dict[str, str]], ifllm_folder: Path
) -> None:
    client, celery, keys = gateway
    answer = client.post("/v1/imports/ifllm", json={"data": str(ifllm_folder)})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert (job["kind"], job["status"], job["done"], job["total"]) == (KIND, "queued", 0, 0)
    assert celery.sent == [(TASK_IMPORT_IFLLM, [job["id"]], job["id"], QUEUE_CPU)]
    read = client.get(f"/v1/imports/{job['id']}", headers={"Authorization": f"Bearer {keys['read']}"})
    assert read.status_code == 200
    assert read.json()["status"] == "queued"


def test_an_import_the_queue_cannot_take_answers_503_and_the_job_is_failed(
    gateway: tuple[TestClient[Litestar], FakeCelery, dict[str, str]], ifllm_folder: Path, database: str
) -> None:
    client, celery, _ = gateway
    celery.down = True
    answer = client.post("/v1/imports/ifllm", json={"data": str(ifllm_folder)})
    assert answer.status_code == 503, answer.text
    assert (answer.json()["field"], answer.headers["retry-after"]) == ("redis", "5")
    store = Store(database)
    try:
        [job] = store.jobs.list_jobs(KIND)
        assert (job.status, job.error) == ("failed", "the job queue (Redis) was unreachable; nothing was imported")
    finally:
        store.close()


def test_cancel_marks_a_queued_or_running_import_and_refuses_an_ended_one(
    gateway: tuple[TestClient[Litestar], FakeCelery, dict[str, str]], ifllm_folder: Path, database: str
) -> None:
    client, _, keys = gateway
    queued = client.post("/v1/imports/ifllm", json={"data": str(ifllm_folder)}).json()
    running = client.post("/v1/imports/ifllm", json={"data": str(ifllm_folder)}).json()
    ended = client.post("/v1/imports/ifllm", json={"data": str(ifllm_folder)}).json()
    store = Store(database)
    try:
        store.jobs.update_job(running["id"], status="running", done=3, total=9)
        store.jobs.update_job(ended["id"], status="succeeded", stage="done")
        other = store.jobs.create_job("rescore", {})
    finally:
        store.close()

    reader = client.post(f"/v1/imports/{queued['id']}/cancel", headers={"Authorization": f"Bearer {keys['read']}"})
    assert reader.status_code == 403
    for job in (queued, running):
        answer = client.post(f"/v1/imports/{job['id']}/cancel")
        assert answer.status_code == 202, answer.text
        assert (answer.json()["status"], answer.json()["stage"]) == ("cancelled", "cancelled")
        again = client.post(f"/v1/imports/{job['id']}/cancel")  # asking twice is harmless
        assert (again.status_code, again.json()["status"]) == (202, "cancelled")
    assert client.get(f"/v1/imports/{running['id']}").json()["done"] == 3
    refused = client.post(f"/v1/imports/{ended['id']}/cancel")
    assert (refused.status_code, refused.json()["field"]) == (409, "job_id")
    assert "succeeded" in refused.json()["detail"]
    assert client.get(f"/v1/imports/{ended['id']}").json()["status"] == "succeeded"
    for unknown in ("no-such-job", other.id):
        assert client.post(f"/v1/imports/{unknown}/cancel").status_code == 404


# -- one session per question, whoever builds it ---------------------------------------------------------


@pytest.mark.data
def test_the_import_and_the_cli_build_byte_identical_sessions(
    ifllm_small: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    from tacit.ifllm.reader import Dataset
    from tacit.ifllm.sessions import sessions_command

    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        store.migrate()
        job = store.jobs.create_job(KIND, {"data": str(ifllm_small)})
        assert run_ifllm_import(store, job.id) == "succeeded"
        dataset = Dataset(ifllm_small)
        accuracy = {(t.user_id, t.task_id) for t in dataset.tasks if t.accuracy is not None}
        recorded = {key for key, _ in dataset.task_dirs()}
        # the first recorded question of each mode in the folder, from a task with a calibration accuracy
        chosen = list(
            {q.mode: q for q in reversed(dataset.queries) if (q.user_id, q.task_id) in recorded & accuracy}.values()
        )
        assert chosen
        for query in chosen:
            capsysbinary.readouterr()
            assert sessions_command(["from-ifllm", "--data", str(ifllm_small), "--query-id", str(query.query_id)]) == 0
            printed = capsysbinary.readouterr().out
            row = store.sessions.get_session(f"ifllm-{query.query_id}")
            assert row is not None
            imported = store.sessions.load_payload(row)
            assert imported.calibration_accuracy is not None  # what one of the two builders used to leave out
            assert printed == msgspec.json.encode(imported) + b"\n"
            # ... so the banner's `try:` line, posted after an import, is the same session, not a 409
            _, created = store.sessions.put_session(
                msgspec.json.decode(printed, type=Session)
            )  # SessionConflict if not
            assert created is False
    finally:
        store.close()


def _imported(mode: str, gaze: str) -> float:
    from gateway import imports

    [family] = imports._INGESTED.collect()
    return sum(
        s.value
        for s in family.samples
        if s.name.endswith("_total") and s.labels == {"mode": mode, "gaze_consent": gaze, "source": "import"}
    )


def test_sessions_an_import_stores_count_as_ingested_from_import(store: Store, folders: FakeFolders) -> None:
    sessions = [session for key in folders.keys for session in folders.sessions(key)]
    by_label: dict[tuple[str, str], int] = {}
    for session in sessions:
        label = (session.mode, str(session.consent.gaze).lower())
        by_label[label] = by_label.get(label, 0) + 1
    before = {label: _imported(*label) for label in by_label}
    store.sessions.put_session(sessions[0])  # already stored: not counted again
    job = store.jobs.create_job(KIND, {"data": "/srv/ifllm"})
    assert run_ifllm_import(store, job.id) == "succeeded"
    first = (sessions[0].mode, str(sessions[0].consent.gaze).lower())
    for label, n in by_label.items():
        assert _imported(*label) - before[label] == n - (label == first)
