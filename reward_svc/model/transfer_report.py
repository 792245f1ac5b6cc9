"""The transfer section of docs/results/reward.md: candidates and the one-SE choice, calibration per fold, the gate
check, warm start with baselines (dev folds and injected preference), per-worker accuracy, and their plots.

python -m reward_svc.model.transfer_report [--data DIR] [--out docs/results] [--seeds 10] [--nested-seeds 3]
(`make results` runs it as part of reward_svc.model.report.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reward_svc.model import transfer
from reward_svc.model.estimators import BEST
from reward_svc.model.evaluate import reliability
from reward_svc.model.plots import _pyplot
from reward_svc.model.text_baseline import text_pairs

__all__ = ["transfer_section"]

PAIRWISE = "pairwise"


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def _by_seed(rows: list[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    seeds: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        seeds.setdefault(int(row["seed"]), []).append(row)
    return sorted(seeds.items())


def _gate_cell(fold: dict[str, Any]) -> str:
    cell = f"{_fmt(fold['kept'])} / {_fmt(fold['abstained'])} ({fold['coverage']:.2f})"
    judged = not (np.isnan(fold["kept"]) or np.isnan(fold["abstained"]))
    return f"**{cell}**" if judged and fold["kept"] <= fold["abstained"] else cell


def _stem(task: str) -> str:
    """Plot file stem: the pairwise ones keep the names the docs have linked since the first report."""
    return "reward_transfer" if task == PAIRWISE else f"reward_transfer_{task}"


def _class1(task: str) -> str:
    return "right" if task == PAIRWISE else "current"


def _reliability_per_fold(runs: transfer.NestedRuns, out: Path) -> Path:
    plt = _pyplot()
    y = runs.data.y
    assert y is not None
    first_seed = [f for f in runs.folds if f["seed"] == runs.folds[0]["seed"]]
    fig, axes = plt.subplots(1, len(first_seed), figsize=(3.2 * len(first_seed), 3.4), sharey=True)
    for ax, f in zip(np.atleast_1d(axes), first_seed, strict=True):
        rel = reliability(f["p"], y[f["test"]], bins=10)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.scatter(rel["predicted"], rel["observed"], s=np.asarray(rel["count"]) * 3, alpha=0.7)
        ax.set_title(f"fold {f['fold']} (n={len(f['test'])})", fontsize=9)
        ax.set_xlabel(f"predicted P({_class1(runs.data.task)})")
    np.atleast_1d(axes)[0].set_ylabel(f"observed share {_class1(runs.data.task)}")
    fig.suptitle(f"{runs.model}: reliability per outer fold (grouped by worker, seed {first_seed[0]['seed']})")
    fig.tight_layout()
    path = out / f"{_stem(runs.data.task)}_reliability_per_fold.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _accuracy_vs_k(tables: dict[str, list[dict[str, Any]]], out: Path, task: str = PAIRWISE) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.8), sharey=True)
    for ax, (variant, rows) in zip(np.atleast_1d(axes), tables.items(), strict=True):
        frame = pd.DataFrame(rows)
        for method, group in frame.groupby("method", sort=False):
            ax.plot(group["k"], group["macro"], marker="o", label=method)
        ax.set_title(variant, fontsize=10)
        ax.set_xlabel("k (the worker's labels used)")
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    np.atleast_1d(axes)[0].set_ylabel("macro accuracy over workers")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{_stem(task)}_accuracy_vs_k.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_worker(runs: transfer.NestedRuns, out: Path) -> tuple[Path, pd.DataFrame]:
    y = runs.data.y
    assert y is not None
    users = runs.data.groups
    hits: dict[str, list[float]] = {}
    for f in runs.folds:
        hit = (f["p"] > 0.5) == y[f["test"]]
        for user in np.unique(users[f["test"]]):
            hits.setdefault(str(user), []).append(float(hit[users[f["test"]] == user].mean()))
    counts = pd.Series(users).value_counts()
    table = pd.DataFrame({"worker": list(hits), "accuracy": [float(np.mean(v)) for v in hits.values()]}).assign(
        questions=lambda t: [int(counts[w]) for w in t["worker"]]
    )
    table = table.sort_values("accuracy").reset_index(drop=True)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.bar(range(len(table)), table["accuracy"], color=["#c44" if a < 0.5 else "#48a" for a in table["accuracy"]])
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("worker (sorted by accuracy)")
    ax.set_ylabel("out-of-fold accuracy")
    ax.set_title(f"{runs.model}: accuracy per worker, grouped out-of-fold (mean over seeds)")
    fig.tight_layout()
    path = out / f"{_stem(runs.data.task)}_per_worker.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, table


def _warm_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| k | method | micro | ± seeds | macro | ± seeds | ECE | rows | workers |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['k']} | {r['method']} | {r['micro']:.3f} | {r['micro_seed_std']:.3f} | {r['macro']:.3f} | "
        f"{r['macro_seed_std']:.3f} | {_fmt(r['ece'])} | {r['rows']} | {r['workers']} |"
        for r in rows
    ]
    return lines


def _beats_prior(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for k in sorted({r["k"] for r in rows if r["k"] > 0}):
        at = {r["method"]: r for r in rows if r["k"] == k}
        a, b = at["adapted"], at["per-user prior only"]
        verdict = "beats" if a["micro"] > b["micro"] and a["macro"] > b["macro"] else "does **not** beat"
        # the paired difference per seed (same rows, same labels): is the gap larger than its own spread?
        d_micro = np.subtract(a["micro_by_seed"], b["micro_by_seed"])
        d_macro = np.subtract(a["macro_by_seed"], b["macro_by_seed"])
        spread = (
            f"; difference per seed {d_micro.mean():+.3f} ± {d_micro.std(ddof=1):.3f} micro, "
            f"{d_macro.mean():+.3f} ± {d_macro.std(ddof=1):.3f} macro, adapted ahead in "
            f"{int((d_micro > 0).sum())}/{d_micro.size} seeds (micro)"
            if d_micro.size > 1
            else ""
        )
        out.append(
            f"k = {k}: adapted {a['micro']:.3f} micro / {a['macro']:.3f} macro {verdict} per-user prior only "
            f"({b['micro']:.3f} / {b['macro']:.3f}) on the same {a['rows']} rows{spread}"
        )
    return out


def transfer_section(
    frame: pd.DataFrame,
    out: Path,
    *,
    seeds: int = 10,
    nested_seeds: int = transfer.NESTED_SEEDS,
    data_dir: Path | None = None,
    task: str = PAIRWISE,
) -> str:
    """Run the transfer protocol on the `task` rows of `frame` and return its markdown (plots written to `out`).

    `data_dir` (the IFLLM folder `frame` was extracted from) adds the text-only baseline, which needs the answers
    (pairwise only: a pointwise row's two answers belong to two questions). The pairwise section states the
    protocol; the pointwise one refers to it.
    """
    started = time.perf_counter()
    data, lengths = transfer.task_rows(frame, task)
    texts = None if data_dir is None or task != PAIRWISE else text_pairs(data_dir, data.meta["query_id"].tolist())
    rows = transfer.compare_candidates(data, transfer.CANDIDATES[task], seeds, n_jobs=2)
    choice = transfer.choose(rows)
    calibrated = f"{choice['chosen']}_sigmoid"
    runs = transfer.nested_runs(data, calibrated, nested_seeds, length_data=lengths, texts=texts)
    cal_rows, pooled = transfer.calibration_rows(runs)
    gate = transfer.gate_check(runs)
    variants = transfer.warm_variants()
    warm = {name: transfer.warm_start_table(runs, relabel=relabel) for name, relabel in variants.items()}
    plots = [_reliability_per_fold(runs, out), _accuracy_vs_k(warm, out, task)]
    worker_plot, worker_table = _per_worker(runs, out)
    plots.append(worker_plot)
    doc = transfer.__doc__ or ""
    protocol_text = doc.split("\n\n", 1)[1] if "\n\n" in doc else doc
    rows_line = (
        f"Rows: {data.n} labelled {task} questions of {len(np.unique(data.groups))} workers, feature set "
        f"`{data.feature_set}` ({len(data.names)} features). Generated by `reward_svc.model.transfer_report` "
        f"in {time.perf_counter() - started:.0f} s."
    )
    if task == PAIRWISE:
        lines = [
            "## Transfer to people never seen (the protocol that chooses the model)",
            "",
            f"{rows_line} The protocol, as written in `reward_svc/model/transfer.py` before the numbers:",
            "",
            protocol_text.strip(),
            "",
        ]
    else:
        lines = [
            f"## Transfer to people never seen: the {task} task",
            "",
            f"{rows_line} The same protocol as the pairwise section's, with this task's candidates; class 1 is "
            '"the current answer is better than the previous one".',
            "",
        ]
    lines += [
        f"### Candidates ({seeds} seeds x 5 grouped folds)",
        "",
        "| candidate (simplest first) | macro accuracy | ± seeds | ± folds | SE | micro accuracy | ± seeds | "
        f"worst worker decile | best in seeds | predicts {_class1(task)} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['macro']:.4f} | {r['macro_seed_std']:.4f} | {r['macro_fold_std']:.4f} | {r['se']:.4f} "
        f"| {r['micro']:.4f} | {r['micro_seed_std']:.4f} | {r['worst_decile']:.3f} | {r['best_in_seeds']}/{seeds} "
        f"| {r['pred_class1']:.3f} |"
        for r in rows
    ]
    spread = max(r["macro"] for r in rows) - min(r["macro"] for r in rows)
    seed_noise = float(np.mean([r["macro_seed_std"] for r in rows]))
    lines += [
        "",
        f"Candidates differ by {spread:.4f} in mean macro accuracy; one candidate moves by {seed_noise:.4f} "
        "(mean std) from seed to seed, and the fold spread is larger still: most of the ranking is noise.",
        "",
        f"**Choice by the rule:** best `{choice['best']}` at {choice['best_macro']:.4f}, SE {choice['se']:.4f}, bar "
        f"{choice['bar']:.4f}: the simplest candidate at or above it is **`{choice['chosen']}`**, served calibrated "
        f"as `{calibrated}` (the default `BEST` is `{BEST[task][0]}`"
        f"{'' if BEST[task][0] == calibrated else ': **the rule now disagrees, update BEST**'}).",
        "",
        f"### Calibration of `{calibrated}` per outer fold ({nested_seeds} seeds)",
        "",
        f"Over all out-of-fold rows: ECE {pooled['ece_pooled']:.4f} (± {pooled['ece_pooled_seed_std']:.4f} over "
        f"seeds), Brier {pooled['brier_pooled']:.4f}. Per fold: mean ECE {pooled['ece_fold_mean']:.4f}, worst "
        f"{pooled['ece_fold_max']:.4f} (a fold of 50-250 rows has an ECE floor of several points from sampling "
        "alone).",
        "",
        "Each cell: ECE / Brier / accuracy (rows) of one outer fold.",
        "",
        "| seed | " + " | ".join(f"fold {i}" for i in range(transfer.N_SPLITS)) + " |",
        "|---:|" + "---|" * transfer.N_SPLITS,
    ]
    lines += [
        f"| {seed} | "
        + " | ".join(
            f"{r['ece']:.3f} / {r['brier']:.3f} / {r['accuracy']:.3f} ({r['n']})"
            for r in sorted(group, key=lambda r: r["fold"])
        )
        + " |"
        for seed, group in _by_seed(cal_rows)
    ]
    lines += [
        "",
        f"![reliability per fold]({plots[0].name})",
        "",
        "### The quality gate's check",
        "",
        f"Kept rows more accurate than abstained ones in {gate['folds_kept_better']} of {gate['folds_judged']} judged "
        f"folds (coverage {gate['coverage']:.3f}): the gate is **{'on' if gate['passes'] else 'off'}** by default "
        "(`tacit reward train` repeats this check on its own data and records it in the artifact).",
        "",
        "Each cell: accuracy on kept rows / on abstained rows (coverage) of one outer fold; **bold** where kept rows "
        "are not the more accurate ones.",
        "",
        "| seed | " + " | ".join(f"fold {i}" for i in range(transfer.N_SPLITS)) + " |",
        "|---:|" + "---|" * transfer.N_SPLITS,
    ]
    lines += [
        f"| {seed} | " + " | ".join(_gate_cell(f) for f in sorted(group, key=lambda f: f["fold"])) + " |"
        for seed, group in _by_seed(gate["folds"])
    ]
    cold = {r["method"]: r for r in warm["dev folds"] if r["k"] == 0}
    model_row, floor = cold["population"], cold["majority class"]
    gap = np.subtract(model_row["micro_by_seed"], floor["micro_by_seed"])
    # ahead only when it is ahead in every seed by a visible margin: a tie within rounding is not a win
    ahead = bool((gap > 0.005).all()) and model_row["macro"] > floor["macro"]
    lines += [
        "",
        f"**Against the majority class** (the dev folds at k = 0, the same {model_row['rows']} rows): "
        f"`{calibrated}` {model_row['micro']:.3f} micro / {model_row['macro']:.3f} macro, majority class "
        f"{floor['micro']:.3f} / {floor['macro']:.3f} (micro difference per seed {gap.mean():+.3f}, from "
        f"{gap.min():+.3f} to {gap.max():+.3f}): the model "
        + (
            "beats it in every seed."
            if ahead
            else "**does not beat it**: its decisions add nothing a constant answer would not."
        ),
    ]
    lines += ["", "### Warm start: a worker's first k labels adapt, the rest are scored", ""]
    for variant, table in warm.items():
        lines += [f"**{variant}**", "", *_warm_table(table), "", *(f"- {s}" for s in _beats_prior(table)), ""]
    lines += [
        f"![accuracy vs k]({plots[1].name})",
        "",
        "Text only: TF-IDF of the two answers' words, learned on the training folds (no pretrained embedding model "
        "is in the lock: none ships its weights in a PyPI package and nothing is downloaded at run time)."
        if texts is not None
        else "Not in these tables: the text-only baseline (run with the IFLLM folder to add it)."
        if task == PAIRWISE
        else "No text-only baseline here: a pointwise row's two answers belong to two questions.",
        "",
        "### Accuracy per worker",
        "",
        f"Out-of-fold accuracy of `{calibrated}` per worker (mean over seeds): median "
        f"{worker_table['accuracy'].median():.3f}, worst decile {worker_table['accuracy'].quantile(0.1):.3f}, "
        f"{int((worker_table['accuracy'] < 0.5).sum())} of {len(worker_table)} workers below 0.5.",
        "",
        f"![per-worker accuracy]({plots[2].name})",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from reward_svc.model.data import load_frame
    from reward_svc.model.report import REPO, resolve_data

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--nested-seeds", type=int, default=transfer.NESTED_SEEDS)
    args = parser.parse_args(argv)
    data_dir = resolve_data(args.data)
    frame = load_frame(data_dir, workers=2)
    args.out.mkdir(parents=True, exist_ok=True)
    text = transfer_section(frame, args.out, seeds=args.seeds, nested_seeds=args.nested_seeds, data_dir=data_dir)
    path = args.out / "reward_transfer.md"
    path.write_text(text + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
