"""A JSON-schema snapshot of every wire-contract module in tacit/schemas, so a contract change shows in review.

Every msgspec Struct a module defines (its wire types) goes into one snapshot per module, compared as a contract
(`tacit.schemas.snapshot.contract_view`: descriptions with their whitespace collapsed). A deliberate change:
delete the module's snapshot, rerun (the test writes it and fails once), review the diff and commit it.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import msgspec
import pytest

from tacit.schemas.snapshot import contract_view

SNAPSHOTS = Path(__file__).parent / "snapshots"
MODULES = ["align", "features", "gateway", "jobs", "judge", "problem", "reward", "session"]


def _structs(module_name: str) -> list[type[msgspec.Struct]]:
    module = importlib.import_module(f"tacit.schemas.{module_name}")
    return sorted(
        (
            value
            for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, msgspec.Struct) and value.__module__ == module.__name__
        ),
        key=lambda cls: cls.__name__,
    )


def test_every_schema_module_is_covered() -> None:
    on_disk = {p.stem for p in Path(importlib.import_module("tacit.schemas").__file__).parent.glob("*.py")}  # type: ignore[arg-type]
    # no Structs of their own: helpers
    helpers = {"__init__", "snapshot", "validate"}
    assert on_disk - helpers == set(MODULES)


@pytest.mark.parametrize("module_name", MODULES)
def test_the_wire_contract_matches_its_snapshot(module_name: str) -> None:
    structs = _structs(module_name)
    assert structs, f"tacit.schemas.{module_name} defines no Struct"
    _, components = msgspec.json.schema_components(structs)
    schema = contract_view(components)
    path = SNAPSHOTS / f"{module_name}.components.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        pytest.fail(f"no schema snapshot: wrote {path}; review and commit it, then rerun")
    committed = json.loads(path.read_text(encoding="utf-8"))
    assert schema == contract_view(committed), (
        f"the tacit.schemas.{module_name} wire contract changed: if intended, delete {path.name}, rerun, "
        "review the diff and commit it"
    )


def test_service_to_service_bodies_ignore_unknown_fields_and_public_ones_refuse_them() -> None:
    from tacit.schemas.features import FeatureBatchRequest
    from tacit.schemas.reward import ScoreRequest, TrainRewardModel

    vector = {"session_id": "s", "feature_set": "all", "feature_set_version": "1", "names": ["a"], "values": [0.5]}
    label = {"p_population": 0.5, "label": 1, "model_id": "m", "added_later": True}
    score = msgspec.json.encode({"vectors": [vector], "user_history": [label], "added_later": 1})
    assert msgspec.json.decode(score, type=ScoreRequest).vectors[0].session_id == "s"
    batch = msgspec.json.encode({"sessions": [], "feature_set": "all", "added_later": 1})
    with pytest.raises(msgspec.ValidationError, match="length >= 1"):  # its own constraints still hold
        msgspec.json.decode(batch, type=FeatureBatchRequest)
    with pytest.raises(msgspec.ValidationError, match="unknown field `added_later`"):
        msgspec.json.decode(b'{"data": "/d", "added_later": 1}', type=TrainRewardModel)
