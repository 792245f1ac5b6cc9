"""schemathesis over every operation of the gateway's OpenAPI schema, against the process stack, as admin.

No answer may be a 5xx, use a status the schema does not list, or carry a body or content type that breaks
the schema. `TACIT_FUZZ_CASES` (default 100) cases in all, spread over the operations; half of each
operation's share is schema-conforming input, half schema-violating.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import Stack
from tests.reliability.out import write_fragment

pytestmark = pytest.mark.e2e

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _run(operation: Any, mode: GenerationMode, budget: int, call: Any) -> int:
    """Up to `budget` cases of one operation in one mode; the number run (fewer when the input space is small)."""
    count = 0
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception:  # e.g. nothing in the operation can be made schema-violating
        return 0

    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def one(case: Any) -> None:
        nonlocal count
        count += 1
        call(case)

    with contextlib.suppress(Unsatisfiable):  # no schema-violating input for an operation without parameters
        one()
    return count


def test_fuzz_every_operation(stack: Stack) -> None:
    started = time.perf_counter()
    total = int(os.environ.get("TACIT_FUZZ_CASES", "100"))
    auth = {"Authorization": f"Bearer {stack.keys['admin']}"}
    schema = schemathesis.openapi.from_url(f"{stack.gateway.url}/schema/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, [f"{op.method} {op.path}" for op in operations]
    # Operations without parameters run out of distinct cases first: their unused share goes to the others.
    operations.sort(key=lambda op: (len(list(op.iter_parameters())), op.method, op.path))
    failures: list[dict[str, Any]] = []
    per_operation: dict[str, int] = {}

    def call(case: Any) -> None:
        response = case.call(base_url=stack.gateway.url, headers=auth, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as err:  # schemathesis groups the failed checks in one exception
            failures.append(
                {
                    "operation": f"{case.operation.method.upper()} {case.operation.path}",
                    "check": type(err).__name__,
                    "status": response.status_code,
                    "detail": str(err)[:2000],
                }
            )

    remaining = total
    for i, operation in enumerate(operations):
        share = math.ceil(remaining / (len(operations) - i))
        ran = _run(operation, GenerationMode.POSITIVE, math.ceil(share / 2), call)
        ran += _run(operation, GenerationMode.NEGATIVE, max(share - ran, 1), call)
        per_operation[f"{operation.method.upper()} {operation.path}"] = ran
        remaining = max(remaining - ran, 0)
    cases = sum(per_operation.values())
    write_fragment(
        "fuzz",
        {
            "module": __name__,
            "operations": len(operations),
            "cases": cases,
            "requested": total,
            "checks": [check.__name__ for check in CHECKS],
            "per_operation": per_operation,
            "failures": failures,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    assert cases >= total, per_operation
    assert not failures, "\n\n".join(f"{f['operation']} -> {f['status']}: {f['detail']}" for f in failures[:5])
