"""Judge-vs-human agreement on a tiny IFLLM-like folder, judged by a fake that prefers the longer answer."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from judge_svc.agreement import AgreementReport, judge_agreement, labelled_pairwise, read_predictions
from judge_svc.backends.openai_compat import OpenAICompatBackend
from judge_svc.cli import add_judge_commands
from judge_svc.protocol import Judge
from judge_svc.testing import FakeOpenAIServer, Reply, prefer_longer
from tacit.ifllm.reader import Dataset
from tacit.ifllm.testing import write_query_log

SHORT, LONG = "Paris.", "The capital of France is Paris, on the Seine."
# (id, response 1, response 2, preference): 1 = left preferred, 2 = right, "" = none; no response 2 = pointwise
ROWS = [
    (11, SHORT, LONG, "2.0"),  # human right, judge right (longer): agree
    (12, LONG, SHORT, "2.0"),  # human right, judge left: disagree
    (13, "one two", "three four", "1.0"),  # equal lengths: judge tie
    (14, LONG, SHORT, "1.0"),  # human left, judge left: agree
    (15, SHORT, LONG, ""),  # unlabelled: skipped
    (16, LONG, "", "1.0"),  # pointwise: skipped
]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows = []
    for query_id, r1, r2, pref in ROWS:
        model_2 = "gpt-4o-mini" if r2 else ""
        task = "1" if r2 else "2"
        ids = [query_id, "worker_0a1b2c3d", task, "What is the capital of France?", r1, r2, "m1", model_2]
        rows.append([*ids, "4", "3" if r2 else "", pref, "0", "2025-01-01 10:00:00"])
    return write_query_log(tmp_path / "ifllm", rows)


@pytest.fixture
def predictions(tmp_path: Path) -> Path:
    path = tmp_path / "preds.csv"
    path.write_text(
        "query_id,user_id,mode,p_right,label,abstained\n"
        "11,w,pairwise,0.9,1,false\n"  # right: correct
        "12,w,pairwise,0.2,1,false\n"  # left: wrong
        "13,w,pairwise,0.6,0,false\n"  # right: wrong
        "14,w,pairwise,,0,true\n"  # abstained: no prediction
    )
    return path


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(prefer_longer) as fake:
        yield fake


def run_agreement(server: FakeOpenAIServer, data: Path, **kwargs: Any) -> AgreementReport:
    async def go() -> AgreementReport:
        backend = OpenAICompatBackend(server.base_url, "judge-model", "", retries=0, backoff_s=0.0)
        try:
            queries = labelled_pairwise(Dataset(data).queries)
            return await judge_agreement(queries, Judge(backend), **kwargs)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_labelled_pairwise_selection(data: Path) -> None:
    queries = labelled_pairwise(Dataset(data).queries)
    assert [(q.query_id, q.label) for q in queries] == [(11, 1), (12, 1), (13, 0), (14, 0)]
    assert [q.query_id for q in labelled_pairwise(Dataset(data).queries, 2)] == [11, 12]


def test_agreement_with_humans_and_reward_model(server: FakeOpenAIServer, data: Path, predictions: Path) -> None:
    report = run_agreement(server, data, predictions=read_predictions(predictions))
    assert (report.n, report.judged, report.ties, report.failures, report.agree) == (4, 4, 1, 0, 2)
    assert report.accuracy == pytest.approx(0.5)
    assert report.accuracy_decisive == pytest.approx(2 / 3)
    assert report.right_rate_judge == pytest.approx(1 / 3)
    assert report.right_rate_human == pytest.approx(0.5)
    assert report.reward_n == 3
    assert report.reward_accuracy == pytest.approx(1 / 3)
    assert report.judge_reward_agreement == pytest.approx(1.0)  # 11: both right, 12: both left
    assert len(server.requests) == 8  # both orders for each question


def test_failures_are_counted_not_scored(server: FakeOpenAIServer, data: Path) -> None:
    server.push(Reply.malformed())
    report = run_agreement(server, data)
    assert (report.n, report.failures, report.judged) == (4, 1, 3)
    failed = [i for i in report.items if i.winner is None]
    assert len(failed) == 1
    assert failed[0].judge is None
    assert failed[0].error is not None


def test_read_predictions_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="query_id and p_right"):
        read_predictions(bad)


def test_cli_agreement_json(
    server: FakeOpenAIServer,
    data: Path,
    predictions: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TACIT_JUDGE_BASE_URL", server.base_url)
    monkeypatch.setenv("TACIT_JUDGE_RETRIES", "0")
    parser = argparse.ArgumentParser()
    add_judge_commands(parser.add_subparsers(dest="command", required=True))
    argv = ["judge", "agreement", "--data", str(data), "--backend", "openai", "--limit", "2", "--json", "--quiet"]
    args = parser.parse_args([*argv, "--predictions", str(predictions)])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n"], out["agree"], out["accuracy"], out["backend"]) == (2, 1, 0.5, "openai_compat")
    assert out["reward_n"] == 2
    assert "items" not in out
