"""Alignment jobs in the gateway database (SQLite and PostgreSQL): state machine, snapshot, events, erasure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from gateway.tests.test_db import db_url  # noqa: F401 (the sqlite/postgres fixture)
from tacit.db import Store
from tacit.db.alignment import AlignmentJobs, InvalidTransitionError, training_set_id
from tacit.pairs import pair_id
from tacit.schemas.align import AlignmentProgress, DataSummary, PreferencePair


def _pair(n: int, users: tuple[str, ...], split: str = "train") -> PreferencePair:
    prompt, chosen, rejected = f"\n\nHuman: q{n}\n\nAssistant:", f" good {n}", f" bad {n}"
    return PreferencePair(
        pair_id=pair_id(prompt, chosen, rejected),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        confidence=0.8,
        source="implicit",
        split=split,  # type: ignore[arg-type]
        users=users,
        sessions=tuple(f"s-{u}-{n}" for u in users),
    )


SUMMARY = DataSummary(
    source="implicit",
    model_id="m1",
    sessions=3,
    pairs=3,
    train=2,
    test=1,
    prompts_train=2,
    prompts_test=1,
    mean_confidence=0.8,
    sha256="x",
)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:  # noqa: F811
    st = Store(db_url)
    st.migrate()
    yield st
    st.close()


@pytest.fixture
def jobs(store: Store) -> AlignmentJobs:
    return store.alignment


def _create(jobs: AlignmentJobs) -> str:
    pairs = [_pair(1, ("alice",)), _pair(2, ("alice", "bob")), _pair(3, ("bob",), "test")]
    return jobs.create("rdpo", {"kind": "rdpo", "base_model": "m"}, SUMMARY, pairs, created_by="k1").id


def test_state_machine_and_events(jobs: AlignmentJobs) -> None:
    job_id = _create(jobs)
    assert jobs.get(job_id).status == "queued"  # type: ignore[union-attr]
    assert [p.split for p in jobs.pairs(job_id)].count("test") == 1
    claim = jobs.claim(job_id, "w1")
    assert claim is not None
    assert not claim.resumed
    assert claim.job.attempts == 1
    jobs.set_progress(job_id, AlignmentProgress(stage="sft", step=3, total=10, loss=1.5))
    assert jobs.get(job_id).progress["loss"] == 1.5  # type: ignore[union-attr]
    again = jobs.claim(job_id, "w2")  # redelivery after the first worker died
    assert again is not None
    assert again.resumed
    assert again.job.attempts == 2
    done = jobs.finish(job_id, "succeeded", result={"ok": 1})
    assert done is not None
    assert done.status == "succeeded"
    assert done.finished_at is not None
    assert jobs.finish(job_id, "failed", error="late") is None  # a finished job never changes again
    assert jobs.claim(job_id, "w3") is None  # ... and is never run twice
    kinds = [e.kind for e in jobs.events(job_id)]
    assert kinds == ["queued", "started", "progress", "resumed", "succeeded"]
    first, *_rest = jobs.events(job_id)
    assert [e.kind for e in jobs.events(job_id, after=first.id or 0)] == kinds[1:]
    assert jobs.counts() == {"succeeded": 1}


def test_cancel_queued_running_and_finished(jobs: AlignmentJobs) -> None:
    queued = _create(jobs)
    assert jobs.request_cancel(queued).status == "cancelled"
    assert jobs.claim(queued, "w") is None
    running = _create(jobs)
    jobs.claim(running, "w")
    row = jobs.request_cancel(running)
    assert (row.status, row.cancel_requested) == ("running", True)
    assert jobs.cancel_requested(running)
    assert jobs.finish(running, "cancelled") is not None
    with pytest.raises(InvalidTransitionError, match="is cancelled"):
        jobs.request_cancel(running)
    with pytest.raises(KeyError):
        jobs.request_cancel("nope")


def test_erasure_removes_the_users_pairs_and_names_the_job(jobs: AlignmentJobs, store: Store) -> None:
    job_id = _create(jobs)
    assert store.users.count_user_rows("alice")["alignment_pairs"] == 2
    erasure = store.users.erase_user("alice")
    assert erasure.rows_deleted["alignment_pairs"] == 2
    assert erasure.rows_deleted["alignment_pair_users"] == 3  # bob's link to the pair merged with alice's goes too
    assert training_set_id(job_id) in erasure.models_affected
    assert all(v == 0 for v in store.users.count_user_rows("alice").values())
    assert [p.users for p in jobs.pairs(job_id)] == [("bob",)]


def test_erasure_redacts_the_users_prompts_from_the_evaluation_answers(
    jobs: AlignmentJobs, store: Store, tmp_path: Path
) -> None:
    job_id = _create(jobs)
    answers = tmp_path / job_id / "evaluation" / "answers.jsonl"
    answers.parent.mkdir(parents=True)
    lines = [{"prompt": _pair(n, ("x",)).prompt, "sft": f"a{n}", "aligned": f"b{n}"} for n in (1, 2, 3)]
    answers.write_text("".join(msgspec.json.encode(line).decode() + "\n" for line in lines))
    assert jobs.claim(job_id, "w1") is not None
    result = {"evaluation": {"prompts": 3, "answers_path": str(answers)}, "artifacts": [], "stages": []}
    assert jobs.finish(job_id, "succeeded", result=result) is not None
    erasure = store.users.erase_user("bob")  # bob's pairs: prompts 2 (shared with alice) and 3
    assert erasure.rows_deleted["evaluation_answers"] == 2
    remaining = [msgspec.json.decode(line)["prompt"] for line in answers.read_text().splitlines()]
    assert remaining == [_pair(1, ("x",)).prompt]  # only the prompt no pair of bob's carried
    assert not list(answers.parent.glob("*.redacting"))
    # an erasure with nothing of the user's left in the file changes nothing (idempotent)
    assert store.users.erase_user("bob").rows_deleted["evaluation_answers"] == 0
