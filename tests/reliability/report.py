"""Render docs/reliability.md from the JSON fragments a `make reliability` run leaves in its results folder.

    python -m tests.reliability.report [--results DIR] [--out docs/reliability.md]

Fragments (see tests/reliability/__init__.py): fuzz.json, bad_input.json, access.json, privacy.json (the
reliability tests), load.json (bench/load.py) and faults.json (tests/reliability/test_faults.py). A fragment that
is missing is reported as not run: no figure is made up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["render"]

ROOT = Path(__file__).resolve().parents[2]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _records(rows: list[dict[str, Any]]) -> list[str]:
    """A list of flat dicts as a table (columns: the union of their keys, in first-seen order)."""
    if not rows:
        return ["(none)", ""]
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    return _table(header, [[row.get(k) for k in header] for row in rows])


def _pairs(values: dict[str, Any]) -> list[str]:
    return _table(["figure", "value"], [[k, v] for k, v in values.items()])


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _not_run(name: str) -> list[str]:
    return [f"Not run: no `{name}.json` in the results folder.", ""]


# -- sections ---------------------------------------------------------------------------------------------------


def _fuzz(frag: dict[str, Any] | None) -> list[str]:
    out = ["## 1. Fuzzing (schemathesis)", ""]
    if frag is None:
        return out + _not_run("fuzz")
    failures = frag.get("failures", [])
    out += [
        f"Every operation of the gateway's OpenAPI schema, {frag.get('cases')} cases in all "
        f"(requested: {frag.get('requested', 'n/a')}) over {frag.get('operations')} operations, in "
        f"{frag.get('seconds')} s; checks: {', '.join(frag.get('checks', []))}.",
        "",
    ]
    out += _pairs({"operations": frag.get("operations"), "cases": frag.get("cases"), "failures": len(failures)})
    if failures:
        out += ["Failures:", "", *_records(failures[:50])]
    per = frag.get("per_operation") or {}
    if per:
        out += ["Cases per operation:", "", *_table(["operation", "cases"], sorted(per.items()))]
    return out


def _bad_input(frag: dict[str, Any] | None) -> list[str]:
    out = ["## 2. Bad input", ""]
    if frag is None:
        return out + _not_run("bad_input")
    for key in sorted(frag, key=lambda k: (not k.startswith("cases"), k)):
        value = frag[key]
        if not isinstance(value, list):
            continue
        flavour = key.partition("_")[2] or "default"
        if key.startswith("cases"):
            refused = sum(1 for r in value if 400 <= int(r.get("status", 0)) < 500)
            stored = sum(int(r.get("stored_after", 0)) for r in value)
            out += [
                f"### Refused input ({flavour} database): {len(value)} cases, {refused} answered 4xx, "
                f"{stored} rows stored by them",
                "",
                *_records(value),
            ]
        elif key.startswith("accepted"):
            out += [
                f"### Odd but valid input, stored as sent ({flavour} database): {len(value)} cases",
                "",
                *_records(value),
            ]
    return out


def _access(frag: dict[str, Any] | None, privacy: dict[str, Any] | None) -> list[str]:
    out = ["## 5. Access and privacy", ""]
    if frag is None:
        out += _not_run("access")
    else:
        out += [
            f"### Access matrix: {frag.get('routes')} routes, {frag.get('requests')} requests, "
            f"{len(frag.get('mismatches', []))} mismatches",
            "",
        ]
        out += _table(["expectation", "requests"], sorted((frag.get("by_expectation") or {}).items()))
        if frag.get("mismatches"):
            out += ["Mismatches:", "", *_records(frag["mismatches"][:50])]
        for name in ("rate_limit", "body_limit", "cors"):
            if isinstance(frag.get(name), dict):
                out += [f"### {name.replace('_', ' ').capitalize()}", "", *_pairs(frag[name])]
        for name, value in frag.items():  # anything the fragment grew since this was written
            if name not in ("module", "routes", "requests", "by_expectation", "mismatches", "rate_limit",
                            "body_limit", "cors", "seconds") and isinstance(value, dict):  # fmt: skip
                out += [f"### {name}", "", *_pairs(value)]
    if privacy is None:
        out += _not_run("privacy")
    else:
        for name, value in privacy.items():
            if isinstance(value, dict):
                out += [f"### Privacy: {name.replace('_', ' ')}", "", *_pairs(value)]
    return out


def _load_section(frag: dict[str, Any] | None) -> list[str]:
    out = ["## 3. Load", ""]
    if frag is None:
        return out + _not_run("load")
    protocol = frag["protocol"]
    result = frag["result"]
    out += [
        f"Protocol: {protocol['stack']}; {protocol['generator']}; latency from {protocol['latency_from']}, after "
        f"{protocol.get('warmup_s', 0):.0f} s of unmeasured warm-up at the same rate. Mix: "
        + ", ".join(f"{int(share * 100)}% {kind}" for kind, share in protocol["mix"].items())
        + f" (ingest = POST /v1/sessions of a new pairwise session, 4 streams x {protocol['samples_per_stream']} "
        f"samples, stored + features + score; get = GET /v1/sessions/{{id}}; list = GET /v1/sessions?user_id=, "
        f"{protocol['users']} users). Search: {protocol['search']}. Long run: {protocol['duration_s']:.0f} s; "
        f"{protocol.get('long_run_retry', 'no retry')}.",
        "",
        f"**Result: {result['target_rate']:.0f} requests/s held for {result['seconds']:.0f} s, p99 "
        f"{result['p99']:.1f} ms (target < {protocol['p99_target_ms']:.0f} ms), {result['errors']} errors: "
        f"{'PASS' if result['passed'] else 'FAIL'}.**",
        "",
    ]
    header = ["run", "rate/s", "done/s", "s", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"]
    header.append("load avg 1 min (start/end)")
    rows = []
    for label, runs in (("search", frag["search"]), ("long run", frag["runs"])):
        for i, r in enumerate(runs, 1):
            load = r.get("loadavg_1m") or {}
            rows.append(
                [f"{label} {i}", f"{r['target_rate']:.0f}", f"{r['achieved_rate']:.1f}", f"{r['seconds']:.0f}",
                 r["ok"], f"{r['p50']:.1f}", f"{r['p90']:.1f}", f"{r['p99']:.1f}", f"{r['max']:.1f}", r["errors"],
                 f"{load.get('start', '')} / {load.get('end', '')}"]
            )  # fmt: skip
    out += _table(header, rows)
    out += ["Latency by request kind (the reported long run):", ""]
    out += _table(
        ["kind", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [
            [k, s["n"], f"{s['p50']:.1f}", f"{s['p90']:.1f}", f"{s['p99']:.1f}", f"{s['max']:.1f}"]
            for k, s in result["by_kind"].items()
        ],
    )
    out += ["Memory (RSS of each service process and its children, right before and right after the long run):", ""]
    out += _table(
        ["service", "start MB", "end MB", "growth MB"],
        [[n, m["start"], m["end"], f"{m['growth']:+.1f}"] for n, m in result.get("memory_mb", {}).items()],
    )
    samples = result.get("memory_samples_mb") or []
    if samples:
        names = [k for k in samples[0] if k != "t"]
        out += ["RSS sampled during the reported long run (MB):", ""]
        out += _table(["t (s)", *names], [[f"{s['t']:.0f}", *(s.get(n) for n in names)] for s in samples])
    for i, run in enumerate(frag["runs"], 1):
        windows = run.get("windows_10s") or []
        if windows:
            slow = [w for w in windows if w["p99"] >= protocol["p99_target_ms"]]
            worst = max(windows, key=lambda w: w["p99"])
            out += [
                f"Long run {i}: {len(slow)} of {len(windows)} 10-second windows had p99 >= "
                f"{protocol['p99_target_ms']:.0f} ms (worst at {worst['t']:.0f} s: p99 {worst['p99']:.0f} ms, "
                f"max {worst['max']:.0f} ms)"
                + (": the tail comes in bursts, not as a steady queue." if len(slow) <= len(windows) / 4 else ".")
            ]
    out.append("")
    if result.get("error_kinds"):
        out += ["Errors:", "", *_table(["error", "count"], sorted(result["error_kinds"].items()))]
    out += [
        "Statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(result.get("statuses", {}).items())) + ".",
        "",
    ]
    return out


FAULTS = {
    "killed_scoring_service": "feature_svc, then reward_svc, SIGKILLed under load and restarted",
    "redis_restart": "Redis (private, append-only file on) restarted while an alignment job trains",
    "worker_sigkill": "the alignment worker SIGKILLed mid-job and a new one started",
    "postgres_restart": "PostgreSQL (private instance) stopped and started under the gateway",
}


def _faults(frag: dict[str, Any] | None) -> list[str]:
    out = ["## 4. Faults", ""]
    if frag is None:
        return out + _not_run("faults")
    summary = []
    k = frag.get("killed_scoring_service")
    if k:
        summary.append(
            [FAULTS["killed_scoring_service"],
             f"{k['sent']} sessions sent at {k['rate_per_s']:.0f}/s; {k['sent_during_outages']} during the outages, "
             f"{k['pending_during_outages']} of them answered 202 pending; refused: {len(k['refused'])}; stored: "
             f"{k['stored']}; all scored {k['all_scored_after_s']} s after the load stopped "
             f"({_cell(k['final_states'])}); where nothing can be stored: "
             + ", ".join(f"{p['path']} -> {p['status']} Retry-After {p['retry_after']}"
                         for p in k["probes_where_nothing_is_stored"])]
        )  # fmt: skip
    r = frag.get("redis_restart")
    if r:
        summary.append(
            [FAULTS["redis_restart"],
             f"Redis down {r['redis_down_s']} s at SFT step {r['step_at_restart']}; job {r['status']}, attempts "
             f"{r['attempts']}, terminal events {r['terminal_events']}, redeliveries skipped as already finished: "
             f"{r['redelivered_and_skipped']}; the worker logged the broker lost {r.get('worker_saw_broker_lost')} "
             f"time(s) and connected {r.get('worker_connected_to_redis')} time(s); a job sent after the restart: "
             f"{r['job_after_restart']}"]
        )  # fmt: skip
    w = frag.get("worker_sigkill")
    if w:
        summary.append(
            [FAULTS["worker_sigkill"],
             f"killed at SFT step {w['step_at_kill']}/{w['total_steps_sft']}; job {w['status']}, attempts "
             f"{w['attempts']}, resumed from {w['resumed_from']}, terminal events {w['terminal_events']}, "
             f"{w['kill_to_finish_s']} s from kill to finish"]
        )  # fmt: skip
    p = frag.get("postgres_restart")
    if p:
        during = p["during_outage"]
        summary.append(
            [FAULTS["postgres_restart"],
             f"down {p['postgres_down_s']} s; {during['sent']} sessions sent meanwhile got {during['statuses']} "
             f"(Retry-After {during['retry_after']}); /readyz during the outage: {p['readyz_during_outage']}; "
             f"first success {p['first_success_after_restart_s']} s after the restart, "
             f"{p['after_restart']['failed']} of {p['after_restart']['sent']} failed after it; answered-then-lost: "
             f"{p['accepted_then_missing']}"]
        )  # fmt: skip
    out += _table(["scenario", "outcome"], summary)
    for name in FAULTS:
        if name not in frag:
            out += [f"Not run: {FAULTS[name]}.", ""]
    out += ["Raw figures of each scenario:", ""]
    for name, value in frag.items():
        if isinstance(value, dict):
            out += [f"<details><summary>{name}</summary>", "", "```json", json.dumps(value, indent=2), "```", "",
                    "</details>", ""]  # fmt: skip
    return out


def render(results: Path) -> str:
    frags = {name: _load(results, name) for name in ("fuzz", "bad_input", "access", "privacy", "load", "faults")}
    load = frags["load"]
    machine = (load or {}).get("machine") or {
        "cpus": os.cpu_count(),
        "cpu_model": platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    stamps = [p.stat().st_mtime for p in results.glob("*.json")]
    date = dt.datetime.fromtimestamp(max(stamps) if stamps else 0, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Reliability: fuzzing, bad input, load, faults, access and privacy",
        "",
        "Generated by `make reliability` (`python -m tests.reliability.report`) from the JSON fragments of one run; "
        "do not edit by hand.",
        "",
        f"- Date of the run: {date}",
        f"- Machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model')}), {machine.get('memory_gb', '?')} GB "
        f"RAM, Python {machine.get('python')}, {machine.get('platform')}; shared with other work (the load table "
        "gives the 1-minute load average around each run).",
        "- Protocol: `bench/load.py` (5-minute open-loop load at the rate found by a step-up search), then "
        "`pytest -n 2 tests/reliability` with `TACIT_FUZZ_CASES` set (fuzzing, bad input, access and privacy, "
        "faults including the slow ones), every service a real process on loopback; SQLite unless said otherwise.",
        "",
    ]
    out += _summary(frags)
    out += _fuzz(frags["fuzz"])
    out += _bad_input(frags["bad_input"])
    out += _load_section(load)
    out += _faults(frags["faults"])
    out += _access(frags["access"], frags["privacy"])
    return "\n".join(out).rstrip() + "\n"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _summary(frags: dict[str, dict[str, Any] | None]) -> list[str]:
    rows: list[list[Any]] = []
    fuzz = frags["fuzz"]
    if fuzz:
        failures = len(fuzz.get("failures", []))
        cases = int(fuzz.get("cases") or 0)
        rows.append(
            ["fuzz cases / failures", f"{cases} / {failures}", ">= 1000 / 0", _met(cases >= 1000 and not failures)]
        )
    bad = frags["bad_input"]
    if bad:
        for key, value in sorted(bad.items(), key=lambda kv: (not kv[0].startswith("cases"), kv[0])):
            if isinstance(value, list) and key.startswith("cases"):
                ok = sum(1 for r in value if 400 <= int(r.get("status", 0)) < 500 and not r.get("stored_after"))
                flavour = key.partition("_")[2] or "default"
                rows.append(
                    [f"bad input refused with a 4xx, nothing stored ({flavour})", f"{ok} of {len(value)}",
                     ">= 30, all", _met(len(value) >= 30 and ok == len(value))]
                )  # fmt: skip
            elif isinstance(value, list) and key.startswith("accepted"):
                ok = sum(1 for r in value if r.get("stored_verbatim"))
                rows.append(
                    [f"odd but valid text stored verbatim ({key.partition('_')[2]})", f"{ok} of {len(value)}", "all",
                     _met(ok == len(value))]
                )  # fmt: skip
    load = frags["load"]
    if load:
        r = load["result"]
        rows.append(
            ["load: rate, p50 / p90 / p99 / max ms, errors",
             f"{r['target_rate']:.0f}/s for {r['seconds']:.0f} s; {r['p50']:.1f} / {r['p90']:.1f} / {r['p99']:.1f} / "
             f"{r['max']:.1f}; {r['errors']}", "p99 < 100 ms, 0 errors", _met(bool(r.get("passed")))]
        )  # fmt: skip
        growth = ", ".join(f"{n} {m['growth']:+.1f} MB" for n, m in r.get("memory_mb", {}).items())
        rows.append(["load: RSS growth over the long run", growth, "reported", ""])
    faults = frags["faults"] or {}
    k = faults.get("killed_scoring_service")
    if k:
        scored = int(k["final_states"].get("scored", 0))
        rows.append(
            [f"fault: {FAULTS['killed_scoring_service']}",
             f"{k['sent']} sent, {len(k['refused'])} refused, {k['stored']} stored, {scored} scored in the end",
             "all stored and scored", _met(not k["refused"] and scored == k["sent"])]
        )  # fmt: skip
    for name in ("redis_restart", "worker_sigkill"):
        f = faults.get(name)
        if f:
            once = f["terminal_events"] == ["succeeded"]
            target = "finished once, resumed" if name == "worker_sigkill" else "finished once"
            rows.append(
                [f"fault: {FAULTS[name]}", f"{f['status']}, attempts {f['attempts']}, terminal events "
                 f"{', '.join(f['terminal_events'])}", target, _met(f["status"] == "succeeded" and once)]
            )  # fmt: skip
    p = faults.get("postgres_restart")
    if p:
        rows.append(
            [f"fault: {FAULTS['postgres_restart']}",
             f"503 + Retry-After while down, first success {p['first_success_after_restart_s']} s after the restart, "
             f"answered-then-lost {p['accepted_then_missing']}", "reconnects, nothing lost",
             _met(p["first_success_after_restart_s"] is not None and p["accepted_then_missing"] == 0)]
        )  # fmt: skip
    for name, text in FAULTS.items():
        if name not in faults:
            rows.append([f"fault: {text}", "not run", "", ""])
    access = frags["access"]
    if access:
        mismatches = len(access.get("mismatches", []))
        rows.append(
            ["access matrix (scopes x routes) mismatches", f"{mismatches} of {access.get('requests')} requests", "0",
             _met(mismatches == 0)]
        )  # fmt: skip
    privacy = frags["privacy"]
    if privacy and isinstance(privacy.get("logs"), dict):
        found = privacy["logs"].get("found")
        shown = ", ".join(map(str, found)) if isinstance(found, list) else _cell(found)
        rows.append(["secrets or raw data found in logs", shown or "none", "none", _met(not found)])
    if privacy and isinstance(privacy.get("erasure"), dict):
        after = privacy["erasure"].get("rows_after")
        rows.append(["rows of an erased user left", _cell(after), "0", _met(after == 0)])
    return ["## Summary", "", *_table(["figure", "value", "target", "met"], rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.environ.get("TACIT_RELIABILITY_OUT") or str(ROOT / ".reliability")
    parser.add_argument("--results", type=Path, default=Path(default))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    if not args.results.is_dir():
        raise SystemExit(f"no results folder {args.results}: run `make reliability`")
    args.out.write_text(render(args.results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
