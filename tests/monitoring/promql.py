"""The PromQL of the repository's dashboards and rules, read from infra/ (shared by the monitoring tests)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROMETHEUS_CONFIG = INFRA / "prometheus" / "prometheus.yml"
RULE_FILES = sorted((INFRA / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((INFRA / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
COMPOSE = INFRA / "compose.yaml"

# An alert is `<signal> <comparison> <number>`: the signal must have data in a healthy stack, the comparison may not.
_ALERT = re.compile(r"^(?P<signal>.+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>-?\d+(?:\.\d+)?)$", re.DOTALL)


def load_dashboard(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(panel: dict[str, Any]) -> list[str]:
    return [target["expr"].strip() for target in panel.get("targets", []) if target.get("expr", "").strip()]


def dashboard_queries() -> set[str]:
    return {q for path in DASHBOARDS for panel in panels(load_dashboard(path)) for q in panel_queries(panel)}


def rules() -> list[dict[str, Any]]:
    return [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def recording_rules() -> dict[str, str]:
    return {rule["record"]: " ".join(rule["expr"].split()) for rule in rules() if "record" in rule}


def alert_rules() -> dict[str, str]:
    return {rule["alert"]: " ".join(rule["expr"].split()) for rule in rules() if "alert" in rule}


def alert_signal(expr: str) -> str:
    """The part of an alert's expression left of its final comparison with a number."""
    match = _ALERT.match(expr.strip())
    if match is None:
        raise ValueError(f"alert expression is not '<signal> <comparison> <number>': {expr}")
    return match.group("signal").strip()


def queries_with_data() -> set[str]:
    """What must return data while the stack runs: panel queries, recording rules and the signal of each alert."""
    signals = {alert_signal(expr) for expr in alert_rules().values()}
    return dashboard_queries() | set(recording_rules().values()) | signals


def datasource_uid() -> str:
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return str(source["uid"])
