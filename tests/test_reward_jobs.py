"""Reward models end to end: a real Celery worker on real Redis trains, the service activates and scores."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from feature_svc.features import vectorize
from reward_svc.app import create_app
from reward_svc.demo import demo_sessions, write_demo_table
from reward_svc.settings import RewardSettings

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reward.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def stack(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[TestClient[Any], Path]]:
    env = {
        **os.environ,
        "TACIT_REWARD_DATABASE_URL": database_url,
        "TACIT_REWARD_MODELS_DIR": str(tmp_path / "models"),
        "TACIT_WORKER_REDIS_URL": redis_url,
        "TACIT_HOME": str(tmp_path / "home"),
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tacit_cli.worker",
            "worker",
            "-Q",
            "cpu",
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    settings = RewardSettings(database_url=database_url, models_dir=str(tmp_path / "models"), redis_url=redis_url)
    try:
        with TestClient(create_app(settings)) as client:
            yield client, tmp_path
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()


def _wait(client: TestClient[Any], model_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get(f"/v1/reward/models/{model_id}").json()
        if info["status"] in ("succeeded", "failed"):
            return dict(info)
        time.sleep(0.5)
    raise AssertionError(f"model {model_id} did not finish: {info}")


def test_train_activate_and_score_through_the_queue(stack: tuple[TestClient[Any], Path]) -> None:
    client, tmp = stack
    table = write_demo_table(tmp / "demo.parquet", n=120)
    response = client.post(
        "/v1/reward/models",
        content=msgspec.json.encode(
            {"data": str(table), "seeds": 1, "demo": True, "model": "reference_rf", "feature_set": "all"}
        ),
    )
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["status"] == "queued"
    assert queued["demo"] is True

    # No active model yet: scoring says so instead of guessing.
    vectors = [vectorize(s, "all") for s in demo_sessions(4, seed=7)]
    refused = client.post("/v1/score", content=msgspec.json.encode({"vectors": vectors}))
    assert (refused.status_code, refused.json()["code"]) == (409, "no_model")

    info = _wait(client, queued["id"])
    assert info["status"] == "succeeded", info["error"]
    assert info["progress"]["stage"] == "done"
    assert info["scores"]  # the grouped-protocol evaluation is stored with the model
    assert info["feature_set"] == "all"

    activated = client.post(f"/v1/reward/models/{queued['id']}/activate")
    assert activated.status_code == 200
    assert activated.json()["active"] is True

    scored = client.post("/v1/score", content=msgspec.json.encode({"vectors": vectors}))
    assert scored.status_code == 200, scored.text
    scores = scored.json()["scores"]
    assert [s["session_id"] for s in scores] == [v.session_id for v in vectors]
    assert all(0.0 <= s["p"] <= 1.0 and s["demo"] for s in scores)
    assert all(s["confidence"] == max(s["p"], 1 - s["p"]) for s in scores)

    # A vector from another feature set is refused (train/serve skew guard).
    other = vectorize(demo_sessions(1, seed=8)[0], "paper_if")
    mismatch = client.post("/v1/score", content=msgspec.json.encode({"vectors": [other]}))
    assert (mismatch.status_code, mismatch.json()["code"]) == (409, "feature_set_mismatch")

    # The population prior route (the arithmetic is reward_svc/tests/test_population_prior.py's): it answers the
    # model's re-estimated prior, never below the training one, and refuses a bad body naming the field.
    model_id = queued["id"]
    labels = [{"user": f"u{u}", "p_population": 0.5, "label": 0} for u in range(20) for _ in range(6)]
    answer = client.post(
        f"/v1/reward/models/{model_id}/population-prior", content=msgspec.json.encode({"labels": labels})
    )
    assert answer.status_code == 200, answer.text
    prior = answer.json()
    assert (prior["model_id"], prior["users"], prior["labels"]) == (model_id, 20, 120)
    assert prior["habit_weight"] >= prior["training_habit_weight"]
    with_population = client.post(
        "/v1/score",
        content=msgspec.json.encode(
            {
                "vectors": vectors[:1],
                "user_history": [{"p_population": 0.6, "label": 0, "model_id": model_id}] * 3,
                "population": prior,
            }
        ),
    )
    assert with_population.status_code == 200, with_population.text
    assert with_population.json()["scores"][0]["user_labels_used"] == 3
    bad = client.post(
        f"/v1/reward/models/{model_id}/population-prior",
        content=msgspec.json.encode({"labels": [{"user": "", "p_population": 0.5, "label": 1}]}),
    )
    assert bad.status_code in (400, 422)
    assert bad.json()["field"] == "labels[0].user"
    unknown = client.post("/v1/reward/models/nope/population-prior", content=b'{"labels": []}')
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")


def test_a_failed_training_is_recorded(stack: tuple[TestClient[Any], Path]) -> None:
    client, tmp = stack
    response = client.post("/v1/reward/models", content=msgspec.json.encode({"data": str(tmp / "missing"), "seeds": 0}))
    info = _wait(client, response.json()["id"])
    assert info["status"] == "failed"
    assert "missing" in info["error"]


def test_activating_an_unfinished_or_unknown_model(stack: tuple[TestClient[Any], Path]) -> None:
    client, _ = stack
    assert client.post("/v1/reward/models/nope/activate").status_code == 404
    unknown = client.post("/v1/reward/models", content=b'{"data": "x", "model": "magic"}')
    assert (unknown.status_code, unknown.json()["field"]) == (422, "model")
    bad = client.post("/v1/reward/models", content=b'{"data": "", "task": "both"}')
    assert bad.status_code == 422
    assert bad.json()["field"] in ("data", "task")
