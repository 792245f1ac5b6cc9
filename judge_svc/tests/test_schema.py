"""The judge wire contract: a JSON-schema snapshot so that changes show up in review."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from judge_svc.jobs import decode_job
from tacit.schemas.judge import BatchAccepted, BatchJob, BatchJobList, BatchRequest, JudgeRequest, Verdict
from tacit.schemas.snapshot import contract_view

SNAPSHOT = Path(__file__).parent / "snapshots" / "judge.schema.json"


def test_json_schema_matches_the_committed_snapshot() -> None:
    (_, raw) = msgspec.json.schema_components(
        [JudgeRequest, Verdict, BatchRequest, BatchAccepted, BatchJob, BatchJobList]
    )
    components = contract_view(raw)
    if not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(components, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")
        pytest.fail(f"no schema snapshot: wrote {SNAPSHOT}; review and commit it, then rerun")
    committed = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert components == contract_view(committed), (
        f"the judge wire contract changed: if intended, delete {SNAPSHOT.name}, rerun, review the diff and commit it"
    )


def test_request_forbids_unknown_fields_and_verdict_round_trips() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"prompt": "q", "answer_a": "a", "answer_b": "b", "x": 1}', type=JudgeRequest)
    request = msgspec.json.decode(b'{"prompt": "q", "answer_a": "a", "answer_b": "b"}', type=JudgeRequest)
    assert (request.both_orders, request.winner_rule, request.rubric, request.reference) == (
        True,
        "from_scores",
        (),
        None,
    )


def test_batch_request_metadata_defaults_and_unknown_fields() -> None:
    item = b'{"prompt": "q", "answer_a": "a", "answer_b": "b"}'
    batch = msgspec.json.decode(b'{"items": [' + item + b"]}", type=BatchRequest)
    assert (batch.evaluation, batch.alignment_job_id, batch.label) == (False, None, None)
    tagged = msgspec.json.decode(
        b'{"items": [' + item + b'], "alignment_job_id": "align-1", "label": "dpo"}', type=BatchRequest
    )
    assert (tagged.alignment_job_id, tagged.label) == ("align-1", "dpo")
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"items": [' + item + b'], "alignment": "x"}', type=BatchRequest)
    # A job written by the previous version (no consistency or metadata fields) still decodes.
    # ... and its `done` status reads as the shared vocabulary's `succeeded`
    old = decode_job(b'{"job_id":"j","status":"done","done":1,"total":1}')
    assert (old.status, old.consistency_rate, old.evaluation_requested, old.alignment_job_id) == (
        "succeeded",
        None,
        False,
        None,
    )
