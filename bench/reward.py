"""Reward-model scoring benchmark: compiled trees against scikit-learn `predict_proba`, in one run.

    .venv/bin/python bench/reward.py [--data DIR_OR_TARBALL] [--calls 300] [--synthetic]

Fits each model on the dev subset's labelled pairwise rows (default-mode features; `--synthetic` uses random data
of the same shape instead), then times one-row scoring (median and p99 over `--calls` calls, after a warm-up) and
a 1,000-row batch, for `predict_proba` and for `reward_svc.model.compiled`. Both paths must agree within 1e-9;
the compiled single-row median is marked PASS/FAIL against the 10x target. Forests run with one thread on both
paths (scikit-learn's fastest single-row setting).
"""

# ruff: noqa: N806  (scikit-learn's convention: X is the feature matrix)

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _tables import print_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_SPEEDUP = 10.0
BATCH = 1000
MODELS = ("reference_rf", "swap_et", "swap_et_sigmoid")


def _latencies(fn: Callable[[], Any], calls: int) -> list[float]:
    for _ in range(max(calls // 10, 5)):
        fn()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


def _data(args: argparse.Namespace) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], list[str], Any, str]:
    from reward_svc.model.data import task_data

    if args.synthetic:
        rng = np.random.default_rng(0)
        names = [f"gaze_max_idx_{s}" for s in ("left", "right")] + [f"f{i}" for i in range(186)]
        X = rng.normal(size=(640, len(names)))
        y = (X[:, 1] - X[:, 0] + rng.normal(0, 1, len(X)) > 0).astype(np.int64)
        return X, y, names, np.repeat(np.arange(64), 10), "synthetic 640 x 188"
    from reward_svc.model.data import load_frame
    from reward_svc.model.report import resolve_data

    folder = resolve_data(args.data)
    data = task_data(load_frame(folder), "pairwise", "all")
    assert data.y is not None
    return data.X, data.y, data.names, data.groups, f"dev subset, {data.n} labelled pairwise rows x {len(data.names)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="unpacked IFLLM folder or the dev tarball")
    parser.add_argument("--calls", type=int, default=300, help="single-row calls per measurement")
    parser.add_argument("--synthetic", action="store_true", help="random data instead of the dev subset")
    args = parser.parse_args(argv)

    from reward_svc.model.compiled import compile_model
    from reward_svc.model.estimators import make_model

    X, y, names, groups, source = _data(args)
    rng = np.random.default_rng(1)
    batch = X[rng.integers(0, len(X), BATCH)]
    rows = []
    verdicts = []
    for name in MODELS:
        model = make_model(name, "pairwise", names)  # one thread: scikit-learn's fastest single-row setting
        model.fit(X, y, **({"groups": groups} if hasattr(model, "_accepts_groups") else {}))
        compiled = compile_model(model)
        diff = float(np.max(np.abs(compiled.predict_proba(batch) - model.predict_proba(batch))))
        one = X[:1]
        sk = _latencies(lambda m=model, r=one: m.predict_proba(r), args.calls)
        co = _latencies(lambda c=compiled, r=one[0]: c.predict_one(r), args.calls)
        sk_batch = statistics.median(_latencies(lambda m=model: m.predict_proba(batch), 5))
        co_batch = statistics.median(_latencies(lambda c=compiled: c.predict_proba(batch), 5))
        speedup = statistics.median(sk) / statistics.median(co)
        ok = speedup >= TARGET_SPEEDUP and diff <= 1e-9
        verdicts.append(ok)
        rows.append(
            [
                name,
                f"{statistics.median(sk) * 1e3:.3f}",
                f"{_p99(sk) * 1e3:.3f}",
                f"{statistics.median(co) * 1e3:.3f}",
                f"{_p99(co) * 1e3:.3f}",
                f"{speedup:.1f}x",
                f"{sk_batch * 1e3:.1f}",
                f"{co_batch * 1e3:.1f}",
                f"{diff:.1e}",
                "PASS" if ok else "FAIL",
            ]
        )
    print_table(
        f"Reward scoring, one row and a {BATCH:,}-row batch ({source}; {args.calls} single-row calls; ms)",
        [
            "model",
            "sklearn med",
            "sklearn p99",
            "compiled med",
            "compiled p99",
            "speed-up",
            f"sklearn {BATCH}",
            f"compiled {BATCH}",
            "max |diff|",
            f">= {TARGET_SPEEDUP:.0f}x",
        ],
        rows,
    )
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
