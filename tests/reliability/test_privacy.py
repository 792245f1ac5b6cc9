"""Privacy: nothing a reader typed or did, and no key, reaches a log; erasure empties every table; retention.

The log test runs the process stack and reads every log file it wrote; the erasure and retention tests run the
gateway in-process and look at every table of its database with plain SQL.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import create_engine, text

from gateway.app import create_app
from gateway.keys import create_key
from gateway.settings import GatewaySettings
from tacit.db import Store
from tacit.db.testing import rows_mentioning
from tacit.schemas import FeatureVector, Score
from tacit.simulate import simulate_session
from tests.e2e.conftest import Stack
from tests.reliability.out import write_fragment


def _marked_session(user: str, n: int, marker: str, value: float) -> dict[str, Any]:
    """A valid pairwise session whose texts carry `marker` and whose first mouse sample is at x = `value`."""
    body = msgspec.to_builtins(simulate_session(seed=n, samples=200, user_id=user, session_id=f"{user}-{n}"))
    body["query"] = f"{marker} query"
    for response in body["responses"]:
        response["text"] = f"{marker} {response['text']}"
        response["mouse"]["window"] = [f"{marker[:30]}" for _ in response["mouse"]["window"]]
    body["responses"][0]["mouse"]["x"][0] = value
    return dict(body)


@pytest.mark.e2e
def test_logs_hold_no_text_trajectories_or_keys(stack: Stack) -> None:
    marker = f"zqx{uuid.uuid4().hex[:12]}"
    trajectory = "7919.31337"
    leaked_key = "tacit_" + f"LEAK{uuid.uuid4().hex}"[:43]
    user = f"logs-{uuid.uuid4().hex[:8]}"
    with stack.client("ingest") as client:
        for n in range(3):
            assert client.post("/v1/sessions", json=_marked_session(user, n, marker, float(trajectory))).status_code
        bad = _marked_session(user, 9, marker, float(trajectory))
        bad["responses"][0]["mouse"]["char_index"][0] = 10**6  # refused: the error names the field, not the text
        assert client.post("/v1/sessions", json=bad).status_code == 422
        conflict = _marked_session(user, 0, marker + "x", float(trajectory))
        assert client.post("/v1/sessions", json=conflict).status_code == 409
        assert client.get("/v1/sessions", headers={"Authorization": f"Bearer {leaked_key}"}).status_code == 401
    with httpx.Client(base_url=stack.gateway.url, timeout=30) as anonymous:
        for scope, key in stack.keys.items():
            headers = {"Authorization": f"Bearer {key}"}
            anonymous.get(f"/v1/sessions/{user}-0", headers=headers, params={"include": "payload"})
            anonymous.get("/v1/sessions", headers=headers, params={"user_id": user})
            anonymous.delete(f"/v1/users/{user}-{scope}", headers=headers)
    # A clean stop flushes what each process buffered. The stack is this module's and no later test uses it
    # (its teardown stops what is still running).
    for service in (stack.gateway, stack.judge, stack.reward, stack.features):
        service.stop()
    logs = sorted(Path(stack.gateway.log_path).parent.glob("*.log"))
    text = {path.name: path.read_text(errors="replace") for path in logs}
    secrets = {"marker": marker, "trajectory": trajectory, "leaked key": leaked_key[6:], **stack.keys}
    secrets.update({f"{scope} key secret": key[14:] for scope, key in stack.keys.items()})
    found = [(name, file) for name, secret in secrets.items() for file, content in text.items() if secret in content]
    write_fragment(
        "privacy",
        {
            "module": __name__,
            "logs": {
                "files": sorted(text),
                "bytes": sum(len(t) for t in text.values()),
                "markers": sorted(secrets),
                "found": found,
            },
        },
    )
    assert {"gateway.log", "features.log", "reward.log", "judge.log"} <= set(text)
    assert "Application startup complete" in text["gateway.log"]  # the files are the services' real output
    assert not found, found


# --- erasure and retention (in-process) ----------------------------------------------------------------------


def _settings(database: str, redis_url: str = "redis://127.0.0.1:6379/0", **kw: Any) -> GatewaySettings:
    down = "http://127.0.0.1:9"
    return GatewaySettings(
        database_url=database,
        feature_url=down,
        reward_url=down,
        judge_url=down,
        redis_url=redis_url,
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
        **kw,
    )


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def admin(database: str) -> str:
    store = Store(database)
    store.migrate()
    try:
        return create_key(store, ["admin"], "admin")[0]
    finally:
        store.close()


@pytest.fixture
def client(database: str, admin: str, redis_url: str) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(_settings(database, redis_url))) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin}"
        yield test_client


def test_erasure_removes_every_row_of_the_user_and_names_the_models(
    client: TestClient[Litestar], database: str
) -> None:
    erased, kept = f"erase-{uuid.uuid4().hex[:8]}", f"keep-{uuid.uuid4().hex[:8]}"
    # Seeds 0 and 1 read the same question and answers for both users: their pairs are merged into one each.
    for user, seeds in ((erased, (0, 1, 2, 3)), (kept, (0, 1, 12, 13))):
        for n in seeds:
            body = msgspec.to_builtins(simulate_session(seed=n, samples=120, user_id=user, session_id=f"{user}-{n}"))
            assert client.post("/v1/sessions", json=body).status_code in (200, 202)
    spec = {"kind": "dpo", "base_model": "tiny", "data": {"source": "explicit", "test_fraction": 0.0}}
    job = client.post("/v1/alignment/jobs", json=spec)
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    client.post(f"/v1/alignment/jobs/{job_id}/cancel")  # no worker here: leave nothing for one to pick up

    before = rows_mentioning(database, erased)
    kept_before = rows_mentioning(database, kept)
    answer = client.delete(f"/v1/users/{erased}")
    after = rows_mentioning(database, erased)
    kept_after = rows_mentioning(database, kept)

    assert answer.status_code == 200, answer.text
    assert {name for name, n in before.items() if n} >= {
        "sessions",
        "alignment_pairs",
        "alignment_pair_users",
        "training_sets",
    }, before
    assert sum(after.values()) == 0, {name: n for name, n in after.items() if n}
    # Nobody else's rows went, but for the pairs merged with the erased user's sessions (they hold their data).
    assert kept_after == {**kept_before, "alignment_pairs": 2, "alignment_pair_users": 2}, (kept_before, kept_after)
    assert kept_before["alignment_pairs"] == 4
    engine = create_engine(database)
    try:
        with engine.connect() as conn:  # no link is left pointing at a deleted pair
            orphans = conn.execute(
                text(
                    "SELECT count(*) FROM alignment_pair_users u LEFT JOIN alignment_pairs p "
                    "ON p.job_id = u.job_id AND p.pair_id = u.pair_id WHERE p.pair_id IS NULL"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert orphans == 0
    models = answer.json()["models_affected"]
    assert f"align:{job_id}" in models  # the alignment job that trained on the user is named...
    store = Store(database)
    try:
        [record] = store.users.erasures(erased)  # ...and recorded, under a hash of the user id
        assert list(record.models_affected) == models
        assert record.user_hash != erased
    finally:
        store.close()
    write_fragment(
        "privacy",
        {
            "erasure": {
                "tables": len(before),
                "tables_with_user_before": sorted(name for name, n in before.items() if n),
                "rows_before": sum(before.values()),
                "rows_after": sum(after.values()),
                "models_affected": len(models),
                "other_user_rows_kept": sum(kept_after.values()),
            }
        },
    )


def _scored(store: Store, session_id: str) -> None:
    vector = FeatureVector(
        session_id=session_id, feature_set="all", feature_set_version="v1", names=["a", "b"], values=[0.25, 0.5]
    )
    score = Score(
        session_id=session_id,
        p=0.7,
        preferred="right",
        confidence=0.7,
        abstained=False,
        quality=1.0,
        model_id="m",
        demo=False,
    )
    store.scores.set_result(vector, score)


def test_retention_deletes_old_trajectories_and_keeps_features(database: str, admin: str) -> None:
    store = Store(database)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    user = f"ret-{uuid.uuid4().hex[:8]}"
    sessions = {
        name: simulate_session(seed=n, samples=80, user_id=user, session_id=f"{user}-{name}")
        for n, name in enumerate(("old", "old-pending", "recent"))
    }
    store.sessions.put_session(sessions["old"], received_at=old)
    _scored(store, sessions["old"].session_id)
    store.sessions.put_session(
        sessions["old-pending"], received_at=old
    )  # no features yet: kept, it is needed to score it
    store.sessions.put_session(sessions["recent"])
    _scored(store, sessions["recent"].session_id)
    store.close()

    settings = _settings(database, retention_days=2, retention_interval_s=0.05)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {admin}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            record = client.get(f"/v1/sessions/{user}-old", params={"include": "payload"}).json()
            if record["session"] is None:
                break
            time.sleep(0.05)
        pending = client.get(f"/v1/sessions/{user}-old-pending", params={"include": "payload"}).json()
        recent = client.get(f"/v1/sessions/{user}-recent", params={"include": "payload"}).json()
    assert record["session"] is None, "the old trajectories were not purged"
    assert record["score"]["status"] == "scored"
    assert record["samples"] > 0
    store = Store(database)
    try:
        row = store.sessions.get_session(f"{user}-old")
        assert row is not None
        assert row.payload is None
        assert row.features == [0.25, 0.5]  # features and score stay
        features_kept = store.scores.features_of(row) is not None
    finally:
        store.close()
    assert features_kept
    assert pending["session"]["session_id"] == f"{user}-old-pending"
    assert recent["session"]["session_id"] == f"{user}-recent"
    with pytest.raises(Exception, match="retention_days"):
        GatewaySettings(retention_days=-1)
    write_fragment(
        "privacy",
        {
            "retention": {
                "retention_days": 2,
                "purged": 1,
                "kept_recent": True,
                "kept_pending": True,
                "features_kept": features_kept,
            }
        },
    )
