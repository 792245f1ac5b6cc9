"""The compose stack keeps its internal services internal (issue 14, finding 14) and its demo pages off (finding 2)."""

from __future__ import annotations

from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parent.parent / "infra"
COMPOSE = yaml.safe_load((INFRA / "compose.yaml").read_text())
#: Services that answer without authentication: reachable only from the stack's own containers.
INTERNAL_ONLY = {"feature_svc", "reward_svc", "worker_cpu", "align_worker"}


def test_the_internal_network_has_no_route_out() -> None:
    assert COMPOSE["networks"]["internal"]["internal"] is True


def test_internal_services_are_on_the_internal_network_only_and_publish_nothing() -> None:
    services = COMPOSE["services"]
    for name in INTERNAL_ONLY:
        assert services[name]["networks"] == ["internal"], name
        assert "ports" not in services[name], name
    for name, service in services.items():
        assert "internal" in service["networks"] or name == "grafana", name


def test_only_the_gateway_is_published_beyond_loopback() -> None:
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            if name != "gateway":
                assert ":-127.0.0.1}" in port, (name, port)


def test_the_demo_pages_stay_off_in_compose() -> None:
    for env in INFRA.glob("env/*.example"):
        for line in env.read_text().splitlines():
            assert not line.strip().startswith("TACIT_COLLECTOR_DEMO="), env
    for service in COMPOSE["services"].values():
        assert "TACIT_COLLECTOR_DEMO" not in (service.get("environment") or {})
