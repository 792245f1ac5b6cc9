"""`tacit reward ...` subcommands (registered by tacit_cli.cli; heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["add_reward_commands"]

TASKS = ("pairwise", "pointwise")


def _bar(total: int, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="fold", disable=quiet, file=sys.stderr, leave=False)


def _frame(args: argparse.Namespace, feature_mode: str) -> Any:
    from tqdm import tqdm

    from reward_svc.model.data import load_frame

    bar = tqdm(total=0, unit="task", desc=f"extract ({feature_mode})", disable=args.quiet, file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return load_frame(args.data, feature_mode=feature_mode, workers=args.workers, progress=progress)
    finally:
        bar.close()


def _evaluate(args: argparse.Namespace) -> int:
    from reward_svc.model.estimators import BEST, MODELS
    from reward_svc.model.evaluate import (
        Setting,
        compare,
        format_table,
        grouped_protocol,
        paper_protocol,
        table2_settings,
    )
    from reward_svc.model.report import comparison_plots

    if args.model is not None and args.model not in MODELS:
        print(f"tacit: unknown model {args.model!r}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    if args.protocol == "transfer":
        return _evaluate_transfer(args)
    if args.protocol == "paper":
        protocol = paper_protocol(args.task, balance=args.balance)
    else:
        protocol = grouped_protocol(args.seeds)
    if args.model is None and args.features is None:
        settings = table2_settings(args.task)
    else:
        model = args.model or "reference_rf"
        best_model, best_features = BEST[args.task]
        features = args.features or (best_features if model == best_model else MODELS[model].default_features)
        settings = [Setting(f"{model} + {features}", model, features)]
    frame = _frame(args, args.feature_mode)
    bar = _bar(len(settings) * len(protocol.seeds) * protocol.n_splits, f"{args.protocol} CV", args.quiet)
    report, raw = compare(
        frame,
        args.task,
        protocol,
        settings=settings,
        feature_mode=args.feature_mode,
        n_jobs=args.n_jobs,
        progress=bar.update,
    )
    bar.close()
    if args.plots is not None:
        paths = comparison_plots(
            report,
            raw,
            args.task,
            args.plots,
            prefix=f"{args.task}_{args.protocol}_{args.feature_mode}",
            n_jobs=args.n_jobs,
        )
        report["plots"] = [str(p) for p in paths]
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print(format_table(report))
        for path in report.get("plots", []):
            print(f"plot: {path}")
    return 0


def _evaluate_transfer(args: argparse.Namespace) -> int:
    """The transfer protocol as text tables (the same tables `make results` writes into docs/results/reward.md)."""
    from reward_svc.model.transfer import task_rows
    from reward_svc.model.transfer_report import transfer_section

    frame = _frame(args, args.feature_mode)
    try:
        rows, _ = task_rows(frame, args.task)
    except KeyError as err:  # a table of the other task lacks this task's feature columns
        print(f"tacit: no {args.task} rows to evaluate in {args.data}: {err.args[0]}", file=sys.stderr)
        return 2
    if rows.n == 0:
        print(f"tacit: no labelled {args.task} rows in {args.data}", file=sys.stderr)
        return 2
    out = args.plots if args.plots is not None else Path(tempfile.mkdtemp(prefix="tacit-transfer-"))
    out.mkdir(parents=True, exist_ok=True)
    text = transfer_section(frame, out, seeds=max(args.seeds, 2), nested_seeds=min(args.seeds, 3), task=args.task)
    if args.json:
        print(json.dumps({"markdown": text, "plots": str(out)}))
    else:
        print(text)
        print(f"plots: {out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from reward_svc.model.artifact import train

    frame = _frame(args, args.feature_mode)
    bar = _bar(args.seeds * 5, "grouped CV", args.quiet)
    model = train(
        frame,
        args.task,
        model=args.model,
        features=args.features,
        feature_mode=args.feature_mode,
        seeds=args.seeds,
        n_jobs=args.n_jobs,
        progress=bar.update,
    )
    bar.close()
    out = model.save(args.out)
    meta = model.metadata
    summary = {
        "out": str(out),
        "task": meta["task"],
        "model": meta["model"],
        "feature_set": f"{meta['feature_set']} {meta['feature_set_version']} ({len(meta['feature_names'])} features)",
        "feature_mode": meta["feature_mode"],
        "rows": meta["n_rows"],
        "workers": meta["n_workers"],
        "data_hash": meta["data_hash"][:16],
    }
    if meta["scores"]:
        s = meta["scores"]
        summary["grouped_accuracy"] = f"{s['accuracy']['mean']:.4f} ± {s['accuracy']['std']:.4f} (std over seeds)"
        summary["grouped_ece"] = round(s["ece"]["mean"], 4)
        summary["grouped_accuracy_with_gate"] = (
            f"{s['abstain']['accuracy']:.4f} at coverage {s['abstain']['coverage']:.3f}"
        )
    print(json.dumps(summary, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from reward_svc.model.artifact import ArtifactError, load_artifact

    if args.adapt_first_k < 0:
        print("tacit: --adapt-first-k must be >= 0", file=sys.stderr)
        return 2
    try:
        model = load_artifact(args.model)
    except ArtifactError as err:
        print(f"tacit: {err}", file=sys.stderr)
        return 2
    from reward_svc.model.data import with_unrecorded_questions

    extracted = _frame(args, model.metadata["feature_mode"])
    # every question gets a row, those without a behaviour recording too (they abstain, and can still be adapted)
    frame = with_unrecorded_questions(extracted, args.data)
    task = model.metadata["task"]
    unrecorded = int((frame["mode"] == task).sum() - (extracted["mode"] == task).sum()) if len(frame) else 0
    try:
        preds = model.score(frame, adapt_first_k=args.adapt_first_k)
    except (ArtifactError, KeyError) as err:
        print(f"tacit: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    preds.to_csv(out, index=False)
    positive_rate = float((model.metadata.get("scores") or {}).get("positive_rate", 0.5))
    summary = prediction_summary(preds, model.output_column, args.adapt_first_k, majority=int(positive_rate > 0.5))
    summary = {"out": str(out), **summary, "questions_without_behaviour": unrecorded}
    if args.plots is not None:
        from reward_svc.model.plots import prediction_plots

        summary["plots"] = [str(path) for path in prediction_plots(preds, model.output_column, args.plots)]
    print(json.dumps(summary, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def prediction_summary(preds: Any, column: str, adapt_first_k: int, *, majority: int = 1) -> dict[str, Any]:
    """Accuracy and ECE of the scored labelled rows (adaptation rows excluded), with baselines on the same rows."""
    import numpy as np
    import pandas as pd

    from reward_svc.model.evaluate import expected_calibration_error

    labelled = preds[preds["label"].notna()]
    scored = labelled[~labelled["used_for_adaptation"].to_numpy(dtype=bool)]
    summary: dict[str, Any] = {
        "rows": len(preds),
        "workers": int(preds["user_id"].nunique()),
        "labelled": len(labelled),
        "used_for_adaptation": int(preds["used_for_adaptation"].sum()),
        "scored_labelled": len(scored),
        "abstained": int(preds["abstained"].sum()),
    }
    if not len(scored):
        return summary
    y = scored["label"].to_numpy(dtype=np.int64)
    users = scored["user_id"].to_numpy()
    p = scored[column].to_numpy(dtype=np.float64)
    p_pop = scored[f"{column}_population"].to_numpy(dtype=np.float64)
    hit = (p > 0.5) == y
    kept = ~scored["abstained"].to_numpy(dtype=bool)
    summary["accuracy"] = round(float(hit.mean()), 4)
    summary["macro_accuracy_over_workers"] = round(float(pd.Series(hit).groupby(users).mean().mean()), 4)
    summary["ece"] = round(expected_calibration_error(p, y), 4)
    if adapt_first_k > 0:
        summary["accuracy_population_same_rows"] = round(float(np.mean((p_pop > 0.5) == y)), 4)
        summary["ece_population_same_rows"] = round(expected_calibration_error(p_pop, y), 4)
        # the per-user-prior-only baseline: the majority of the labels each user's adaptation used
        adapted = labelled[labelled["used_for_adaptation"].to_numpy(dtype=bool)]
        share = adapted.groupby("user_id")["label"].mean()
        # a tie or a user without labels falls back to the training rows' majority class (never the test labels')
        side = np.array([int(share[u] > 0.5) if u in share and share[u] != 0.5 else majority for u in users])
        summary["accuracy_per_user_prior_only_same_rows"] = round(float(np.mean(side == y)), 4)
    summary["accuracy_kept"] = round(float(hit[kept].mean()), 4) if kept.any() else None
    summary["coverage"] = round(float(kept.mean()), 4)
    return summary


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=2, help="feature-extraction processes")
    p.add_argument("--n-jobs", type=int, default=2, help="threads per forest")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def add_reward_commands(sub: Any) -> None:
    """Add the `reward` command group to the top-level subparsers."""
    reward = sub.add_parser("reward", help="reward models: evaluate, train, predict")
    actions = reward.add_subparsers(dest="action", required=True)

    ev = actions.add_parser(
        "evaluate",
        help="cross-validate reward models (no --features/--model: the whole Table-2-shaped comparison)",
    )
    ev.add_argument("--data", type=Path, required=True, help="unpacked IFLLM folder (or a written feature table)")
    ev.add_argument("--task", choices=TASKS, default="pairwise")
    ev.add_argument("--features", default=None, help="feature set id (tacit features sets)")
    ev.add_argument("--model", default=None, help="model name (default: the Table-2 comparison)")
    ev.add_argument(
        "--protocol",
        choices=["paper", "grouped", "transfer"],
        default="grouped",
        help="transfer: the model-choice protocol (candidates, one-SE rule, calibration per fold, gate check, "
        "warm start with baselines; pairwise only)",
    )
    ev.add_argument("--seeds", type=int, default=5, help="grouped protocol: repetitions with seeds 0..N-1")
    ev.add_argument("--feature-mode", choices=["default", "reference"], default="default")
    ev.add_argument("--balance", action="store_true", help="paper protocol: the reference's 50/50 class subsample")
    ev.add_argument("--plots", type=Path, default=None, help="write PNG plots into this folder")
    _common(ev)
    ev.set_defaults(func=_evaluate)

    tr = actions.add_parser("train", help="fit a reward model on every labelled row and write an artifact")
    tr.add_argument("--data", type=Path, required=True)
    tr.add_argument("--task", choices=TASKS, default="pairwise")
    tr.add_argument("--out", type=Path, required=True, help="artifact folder (model.joblib + metadata.json)")
    tr.add_argument("--model", default=None, help="model name (default: the best one for the task)")
    tr.add_argument("--features", default=None)
    tr.add_argument("--feature-mode", choices=["default", "reference"], default="default")
    tr.add_argument("--seeds", type=int, default=5, help="grouped-protocol seeds for the recorded scores (0: skip)")
    _common(tr)
    tr.set_defaults(func=_train)

    pr = actions.add_parser("predict", help="score every question of the model's task in an IFLLM folder")
    pr.add_argument("--model", type=Path, required=True, help="artifact folder written by `tacit reward train`")
    pr.add_argument("--data", type=Path, required=True)
    pr.add_argument("--out", type=Path, required=True, help="CSV to write")
    pr.add_argument(
        "--adapt-first-k",
        type=int,
        default=0,
        metavar="K",
        help="adapt to each user with their first K labelled questions (query-id order); those rows are flagged "
        "used_for_adaptation and left out of the accuracy",
    )
    pr.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write the reliability of the scored rows (adapted and population) and accuracy per worker as PNGs",
    )
    _common(pr)
    pr.set_defaults(func=_predict)
