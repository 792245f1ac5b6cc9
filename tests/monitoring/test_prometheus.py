"""A real Prometheus scrapes the stack run as processes; every dashboard and rule query returns data.

The stack: feature_svc, reward_svc (a demo model), judge_svc (in front of a test double of an OpenAI-compatible
LLM), the gateway, a second gateway replica whose reward and judge services are unreachable (its answers are
real 5xx), and a prefork Celery worker on the cpu queue in multiprocess mode. Prometheus uses the repository's
scrape config and rule files, with its service discovery pointed at the local ports. There is no alignment
worker: the align queue must show up as a queue with no worker, and the TacitNoWorker alert must be pending.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml

from gateway.keys import create_key
from judge_svc.testing import FakeOpenAIServer, Reply, prefer_longer
from reward_svc.demo import write_demo_table
from reward_svc.registry import Registry
from reward_svc.service import run_training
from tacit.db import Store
from tacit.schemas import TrainRewardModel
from tacit.simulate import simulate_session
from tests.e2e.conftest import Service, free_port
from tests.monitoring import promql

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Monitored:
    prometheus: str
    gateway: str
    broken_gateway: str
    key: str
    fake_llm: FakeOpenAIServer
    demo_table: Path


def _scrape_config(targets: dict[str, list[str]], tmp_path: Path) -> Path:
    """The repository's Prometheus config with its discovery replaced by the local targets, scraping every second."""
    config = yaml.safe_load(promql.PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(promql.PROMETHEUS_CONFIG.parent / pattern) for pattern in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name not in targets:
            continue
        for discovery in [key for key in job if key.endswith("_sd_configs") or key == "static_configs"]:
            del job[discovery]
        job["static_configs"] = [{"targets": targets[name]}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait(url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not answer {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory, redis_url: str, prometheus_bin: str) -> Iterator[Monitored]:
    tmp = tmp_path_factory.mktemp("monitoring")
    env: dict[str, str] = {**os.environ, "TACIT_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    reward_db, models = f"sqlite:///{tmp / 'reward.db'}", tmp / "models"
    demo_table = write_demo_table(tmp / "demo.parquet", n=120)
    registry = Registry(reward_db)
    row = registry.create(task="pairwise", model_name="reference_rf", feature_set="all", spec={}, demo=True)
    spec = TrainRewardModel(
        data=str(demo_table), model="reference_rf", feature_set="all", seeds=0, activate=True, demo=True
    )
    assert run_training(registry, row.id, spec, models).status == "succeeded"
    registry.close()

    gateway_db = f"sqlite:///{tmp / 'gateway.db'}"  # both replicas share it, as replicas do
    store = Store(gateway_db)
    store.migrate()
    key = create_key(store, ["admin"], "monitoring")[0]
    store.close()

    fake_llm = FakeOpenAIServer(prefer_longer).start()
    cli = [sys.executable, "-m", "tacit_cli.cli", "serve"]
    ports = {name: free_port() for name in ("features", "reward", "judge", "gateway", "broken", "worker", "prom")}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    reward_env = {"TACIT_REWARD_DATABASE_URL": reward_db, "TACIT_REWARD_MODELS_DIR": str(models)}
    gateway_env = {
        "TACIT_GATEWAY_FEATURE_URL": url["features"],
        "TACIT_GATEWAY_REDIS_URL": redis_url,
        "TACIT_GATEWAY_RESCORE_INTERVAL_S": "60",
        "TACIT_GATEWAY_TIMEOUT_S": "2",
        "TACIT_GATEWAY_RETRIES": "0",
    }
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    services = [
        Service("feature_svc", [*cli, "features"], {**env, "TACIT_FEATURES_PORT": str(ports["features"])},
                ports["features"], tmp / "features.log"),
        Service("reward_svc", [*cli, "reward"],
                {**env, **reward_env, "TACIT_REWARD_PORT": str(ports["reward"]), "TACIT_REWARD_REDIS_URL": redis_url},
                ports["reward"], tmp / "reward.log"),
        Service("judge_svc", [*cli, "judge"],
                {**env, "TACIT_JUDGE_PORT": str(ports["judge"]), "TACIT_JUDGE_BASE_URL": fake_llm.base_url,
                 "TACIT_JUDGE_MODEL": "fake-judge", "TACIT_JUDGE_REDIS_URL": redis_url, "TACIT_JUDGE_RETRIES": "0"},
                ports["judge"], tmp / "judge.log"),
        Service("gateway", [*cli, "gateway"],
                {**env, **gateway_env, "TACIT_GATEWAY_PORT": str(ports["gateway"]),
                 "TACIT_GATEWAY_DATABASE_URL": gateway_db, "TACIT_GATEWAY_REWARD_URL": url["reward"],
                 "TACIT_GATEWAY_JUDGE_URL": url["judge"]},
                ports["gateway"], tmp / "gateway.log"),
        Service("gateway (reward and judge unreachable)", [*cli, "gateway"],
                {**env, **gateway_env, "TACIT_GATEWAY_PORT": str(ports["broken"]),
                 "TACIT_GATEWAY_DATABASE_URL": gateway_db, "TACIT_GATEWAY_REWARD_URL": dead,
                 "TACIT_GATEWAY_JUDGE_URL": dead},
                ports["broken"], tmp / "broken.log"),
        # A prefork worker (one child): the task runs in the child, /metrics is served by the main process.
        Service("cpu worker",
                [sys.executable, "-m", "celery", "-A", "tacit_cli.worker", "worker", "-Q", "cpu",
                 "--pool", "prefork", "--concurrency", "1", "--without-mingle", "--without-gossip",
                 "--loglevel", "INFO", "-n", f"monitoring-{ports['worker']}@%h"],
                {**env, **reward_env, "TACIT_WORKER_REDIS_URL": redis_url,
                 "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom"), "TACIT_WORKER_METRICS_PORT": str(ports["worker"]),
                 "TACIT_WORKER_METRICS_ADDR": "127.0.0.1"},
                ports["worker"], tmp / "worker.log"),
    ]  # fmt: skip
    started: list[Service] = []
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        for service in services:
            started.append(service.start(timeout=60))  # noqa: PERF401 (stop what started if a later one fails)
        local = {
            "gateway": [f"127.0.0.1:{ports['gateway']}", f"127.0.0.1:{ports['broken']}"],
            "feature_svc": [f"127.0.0.1:{ports['features']}"],
            "reward_svc": [f"127.0.0.1:{ports['reward']}"],
            "judge_svc": [f"127.0.0.1:{ports['judge']}"],
            "worker_cpu": [f"127.0.0.1:{ports['worker']}"],
            "prometheus": [f"127.0.0.1:{ports['prom']}"],
        }
        jobs = {job["job_name"] for job in yaml.safe_load(promql.PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
        assert jobs - set(local) == {"worker_align"}, "a scrape job of the repository's config has no local target"
        config = _scrape_config(local, tmp)
        with (tmp / "prometheus.log").open("wb") as log:
            prometheus = subprocess.Popen(
                [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{ports['prom']}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait(f"{url['prom']}/-/ready", 30, "prometheus")
        # Targets are scraped a few seconds after start-up; traffic before the first scrape would not show in rates.
        expected, deadline = sum(map(len, local.values())), time.monotonic() + 60
        while _scraped(url["prom"]) < expected:
            assert time.monotonic() < deadline, f"prometheus did not scrape every target: see {tmp / 'prometheus.log'}"
            time.sleep(0.5)
        yield Monitored(url["prom"], url["gateway"], url["broken"], key, fake_llm, demo_table)
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        for service in reversed(started):
            service.stop()
        fake_llm.stop()


def _traffic(stack: Monitored) -> None:
    """Requests of every kind the dashboards show, through the gateways' public API."""
    headers = {"Authorization": f"Bearer {stack.key}"}
    with httpx.Client(base_url=stack.gateway, headers=headers, timeout=60) as client:
        for i in range(10):  # labelled pairwise sessions: scores, agreement with the label
            session = simulate_session(seed=i, samples=300, user_id="monitoring", gaze=i % 2 == 0,
                                       session_id=f"monitoring-pair-{i}")  # fmt: skip
            assert client.post("/v1/sessions", content=msgspec.json.encode(session)).status_code == 200
        for i in range(2):  # pointwise: no active pointwise model, answered pending
            session = simulate_session(seed=100 + i, mode="pointwise", samples=300, user_id="monitoring",
                                       session_id=f"monitoring-point-{i}")  # fmt: skip
            assert client.post("/v1/sessions", content=msgspec.json.encode(session)).status_code == 202
        assert client.get("/v1/sessions/monitoring-pair-0").status_code == 200
        assert client.get("/v1/sessions/no-such-session").status_code == 404

        pairs = [("Which is right?", "short", "a longer answer"), ("Why?", "because of several reasons", "no")]
        for prompt, a, b in [*pairs, pairs[0]]:  # the repeat is answered from the verdict cache
            verdict = client.post("/v1/judgments", json={"prompt": prompt, "answer_a": a, "answer_b": b})
            assert verdict.status_code == 200, verdict.text
        stack.fake_llm.push(Reply.malformed(), Reply.malformed())  # the judge cannot parse either order
        failed = client.post("/v1/judgments", json={"prompt": "Broken?", "answer_a": "x", "answer_b": "yy"})
        assert failed.status_code == 200
        assert failed.json()["winner"] is None

        # A reward-model training job: reward_svc queues it on `cpu`, the prefork worker runs it.
        spec = {"data": str(stack.demo_table), "task": "pairwise", "model": "reference_rf", "feature_set": "all",
                "seeds": 0, "activate": False, "demo": True}  # fmt: skip
        job = client.post("/v1/reward/models", json=spec)
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 120
        while (model := client.get(f"/v1/reward/models/{job.json()['id']}").json())["status"] not in ("succeeded",):
            assert model["status"] != "failed", model
            assert time.monotonic() < deadline, f"the training job did not finish: {model}"
            time.sleep(0.5)

    # The second replica cannot reach reward_svc or judge_svc: real 503s. Twice, with scrapes in between: a
    # counter's first value is where rate() starts, so only the second round shows as a rate.
    with httpx.Client(base_url=stack.broken_gateway, headers=headers, timeout=30) as broken:
        for _ in range(2):
            for _ in range(3):
                assert broken.get("/v1/reward/models").status_code == 503
            body = {"prompt": "p", "answer_a": "a", "answer_b": "b"}
            assert broken.post("/v1/judgments", json=body).status_code == 503
            time.sleep(2.5)


def _query(prometheus: str, expr: str) -> dict[str, Any]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return dict(answer["data"])


def _scraped(prometheus: str) -> int:
    result = _query(prometheus, "count(up == 1)")["result"]
    return int(result[0]["value"][1]) if result else 0


def _has_data(data: dict[str, Any]) -> bool:
    return data["resultType"] == "scalar" or bool(data["result"])


@pytest.fixture(scope="module")
def traffic(monitored: Monitored) -> Monitored:
    """The stack after `_traffic`, once every dashboard and rule query has data (rates need two scrapes of a
    series, recording rules one evaluation more)."""
    _traffic(monitored)
    missing = sorted(promql.queries_with_data())
    deadline = time.monotonic() + 90
    while missing and time.monotonic() < deadline:
        time.sleep(1)
        missing = [q for q in missing if not _has_data(_query(monitored.prometheus, q))]
    assert not missing, "no data for:\n" + "\n".join(missing)
    time.sleep(2)  # one more evaluation of the recording rules over the last scrapes
    return monitored


def test_every_dashboard_and_rule_query_returns_data(traffic: Monitored) -> None:
    monitored = traffic

    for name, expr in promql.alert_rules().items():  # the full expressions evaluate (firing or not)
        _query(monitored.prometheus, expr)
        assert name

    # The numbers behind the series are the traffic's, not placeholders.
    def values(expr: str) -> dict[str, float]:
        return {
            ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__"): float(r["value"][1])
            for r in _query(monitored.prometheus, expr)["result"]
        }

    assert values("sum by (mode) (tacit_sessions_ingested_total)") == {"mode=pairwise": 10, "mode=pointwise": 2}
    assert values("sum by (source) (tacit_sessions_ingested_total)") == {"source=api": 12, "source=collector": 0}
    assert values("sum(tacit_sessions_label_agreement_total)") == {"": 10}
    assert values('sum(tacit_judge_calls_total{outcome="failed"})') == {"": 1}
    assert values('sum(tacit_worker_tasks_total{task="tacit.reward.train",state="SUCCESS"})') == {"": 1}
    assert values("sum by (queue) (tacit_worker_up)") == {"queue=cpu": 1}
    assert values("queue:tacit_workers:count") == {"queue=align": 0, "queue=cpu": 1}
    errors = values("service:tacit_http_errors:ratio_rate5m")
    assert 0 < errors["service=gateway"] <= 1
    assert values('sum by (service) (tacit_http_requests_total{status=~"5.."})') == {"service=gateway": 8}
    assert values("min by (dependency) (tacit_dependency_up)") == {"dependency=database": 1, "dependency=redis": 1}
    loss = values("tacit_align_loss")
    assert loss
    assert all(math.isnan(v) for v in loss.values())  # nothing trained: no loss, rather than a made-up 0

    # No alignment worker consumes `align`: its alert is pending (it fires after its `for`).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        alerts = httpx.get(f"{monitored.prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        no_worker = {
            a["labels"].get("queue"): a["state"] for a in alerts if a["labels"]["alertname"] == "TacitNoWorker"
        }
        if no_worker:
            break
        time.sleep(1)
    assert no_worker == {"align": "pending"}
    rules = httpx.get(f"{monitored.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    unhealthy = [(r["name"], r.get("lastError")) for g in rules for r in g["rules"] if r["health"] != "ok"]
    assert not unhealthy


def test_the_dashboard_filters_match_the_labels_the_stack_exports(traffic: Monitored) -> None:
    prometheus = traffic.prometheus
    # The metrics carrying each filtered label are exactly those the config test holds every panel to.
    for label, (_, listed) in promql.FILTERED_LABELS.items():
        found = _query(prometheus, f'count by (__name__) ({{__name__=~".*tacit_.*", {label}!=""}})')["result"]
        assert {promql.metric_base(r["metric"]["__name__"]) for r in found} == listed, label

    for path in promql.DASHBOARDS:
        dashboard = promql.load_dashboard(path)
        queries = [q for panel in promql.panels(dashboard) for q in promql.panel_queries(panel)]
        for name, variable in promql.variables(dashboard).items():
            # the variable offers the values the running stack has
            selector, label = promql.label_values_query(variable)
            series = httpx.get(
                f"{prometheus}/api/v1/series", params={"match[]": promql.resolve(selector, dashboard)}, timeout=10
            ).json()["data"]
            values = sorted({s[label] for s in series if label in s})
            assert values, f"{path.name}: ${name} lists no value"
            for query in (q for q in queries if name in promql.used_variables(q)):
                # one chosen value is a valid query; a value nothing has empties the panel: the filter applies
                _query(prometheus, promql.resolve(query, dashboard, {name: values[0]}))
                nothing = promql.resolve(query, dashboard, {name: "no-such-value"})
                assert not _has_data(_query(prometheus, nothing)), f"{path.name}: ${name} does not filter {query}"
