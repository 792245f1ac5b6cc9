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

#: The filters each dashboard offers (template variables).
VARIABLES = {
    "overview": {"service", "mode"},
    "preference-signal": {"mode", "model"},
    "training": {"kind", "queue"},
    "judge": {"instance"},
}
#: The labels every dashboard must let its user filter on wherever its panels read a metric that carries them, the
#: variable for each, and the metrics (base names) carrying the label in the code; test_prometheus checks this
#: list against a running stack, so a metric that gains or loses one of these labels fails there.
FILTERED_LABELS = {
    "service": (
        "service",
        {
            "tacit_http_requests",
            "tacit_http_request_duration_seconds",
            "service:tacit_http_errors:ratio_rate5m",
            "service_route:tacit_http_request_duration_seconds:p99_5m",
        },
    ),
    "mode": (
        "mode",
        {
            "tacit_sessions_ingested",
            "tacit_sessions_scored",
            "tacit_sessions_preference_score",
            "tacit_sessions_label_agreement",
            "tacit_preference_score",
            "tacit_abstentions",
            "tacit_active_reward_model",
            "tacit_reward_model_info",
            "mode:tacit_abstention:ratio_rate5m",
            "mode:tacit_sessions_label_agreement:ratio_1h",
            "mode:tacit_sessions_label_agreement:ratio_1d",
            "mode:tacit_sessions_label_agreement:drift_1h",
        },
    ),
    "model_id": ("model", {"tacit_active_reward_model", "tacit_reward_model_info"}),
}

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
    """A panel's PromQL as written (with its `$variable`s)."""
    return [target["expr"].strip() for target in panel.get("targets", []) if target.get("expr", "").strip()]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name."""
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def used_variables(query: str) -> set[str]:
    return {a or b for a, b in _VARIABLE.findall(query)}


def resolve(query: str, dashboard: dict[str, Any], values: dict[str, str] | None = None) -> str:
    """`query` as Grafana sends it: each variable replaced by `values[name]`, else by its "All" value."""
    known = variables(dashboard)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if values and name in values:
            return values[name]
        if name not in known:
            raise KeyError(f"{query}: ${name} is not a variable of {dashboard['title']!r}")
        return str(known[name]["allValue"])

    return _VARIABLE.sub(value, query)


def dashboard_queries() -> set[str]:
    """Every panel query of every dashboard with its variables at "All" (what a dashboard shows when opened)."""
    out = set()
    for path in DASHBOARDS:
        dashboard = load_dashboard(path)
        out |= {resolve(q, dashboard) for panel in panels(dashboard) for q in panel_queries(panel)}
    return out


_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SUFFIX = re.compile(r"_(total|created|bucket|sum|count)$")


def metric_base(name: str) -> str:
    """A series name without the suffix its metric type adds (`_total`, `_bucket`, ...)."""
    return _SUFFIX.sub("", name)


def query_metrics(query: str) -> set[str]:
    """The Tacit metrics and recording rules a query reads (their base names)."""
    unquoted = re.sub(r'"[^"]*"', '""', query)
    return {metric_base(name) for name in _METRIC.findall(unquoted) if "tacit_" in name}


def label_values_query(variable: dict[str, Any]) -> tuple[str, str]:
    """(series selector, label) of a `label_values(selector, label)` variable."""
    match = re.fullmatch(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)", variable["query"]["query"].strip())
    if match is None:
        raise ValueError(f"variable {variable['name']!r} is not label_values(selector, label)")
    return match.group("selector").strip(), match.group("label")


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
