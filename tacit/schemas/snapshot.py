"""Compare JSON schemas as contracts: what a client can send and receive, not how a docstring was indented.

msgspec copies Struct docstrings into `description`; releases differ in how they clean the whitespace (0.23
dedents, earlier ones did not). A snapshot test must fail when a field, type, default or constraint changes,
not when a dependency reformats prose, so descriptions are compared with their whitespace collapsed.
"""

from __future__ import annotations

import json
from typing import Any


def contract_view(schema: Any) -> Any:
    """`schema` as plain JSON values with every `description` string reduced to single-spaced words."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: " ".join(value.split()) if key == "description" and isinstance(value, str) else walk(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    # tuples (defaults, enums) compare as the lists JSON stores
    return walk(json.loads(json.dumps(schema)))
