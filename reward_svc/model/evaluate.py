"""Evaluation protocols and the Table-2-shaped comparison.

- `paper`: KFold(5, shuffle=True, random_state=49), ungrouped, one repetition: the protocol behind the paper's
  Table 2 (spec 6.4). Rows of one worker (and, in reference feature mode, session-level features) fall on both
  sides of a split, so it overstates accuracy on new users (spec 11, P1). The reference used seed 42 and a 50/50
  balanced subsample for pointwise; here pointwise uses seed 42 and no balancing unless `balance=True`.
- `grouped`: GroupKFold(5) by worker (`user_id`), the assignment of workers to folds shuffled per seed, repeated
  over seeds 0..N-1. No worker is ever on both sides of a split.

Per setting: accuracy, F1 of class 1 and of class 0 as mean over all test folds (of all seeds); `std` is over the
5 folds for `paper` and over the seeds' mean scores for `grouped`; `se` is the fold standard deviation / sqrt(folds)
(ddof 0 for `paper`, the reference's convention, ddof 1 for `grouped`). ROC AUC, ECE (15 equal-width bins) and
Brier are computed on each seed's pooled out-of-fold probabilities and averaged over seeds.
"""

# ruff: noqa: N803  (scikit-learn's convention: X is the feature matrix)

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import clone
from sklearn.metrics import brier_score_loss, f1_score, roc_auc_score
from sklearn.model_selection import GroupKFold, KFold

from reward_svc.model.data import TaskData
from reward_svc.model.quality import SessionQuality, quality_columns

__all__ = [
    "CVResult",
    "Protocol",
    "Setting",
    "cross_validate",
    "expected_calibration_error",
    "grouped_protocol",
    "paper_protocol",
    "reliability",
    "summarize",
]

N_SPLITS = 5
ECE_BINS = 15


@dataclass(frozen=True)
class Protocol:
    """A cross-validation protocol: splitter, grouping and seeds (one repetition per seed)."""

    name: str
    grouped: bool
    seeds: tuple[int, ...]
    n_splits: int = N_SPLITS
    balance: bool = False

    def splits(
        self, n: int, groups: npt.NDArray[Any], seed: int
    ) -> Iterator[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
        index = np.arange(n)
        if self.grouped:
            yield from GroupKFold(self.n_splits, shuffle=True, random_state=seed).split(index, groups=groups)
        else:
            yield from KFold(self.n_splits, shuffle=True, random_state=seed).split(index)

    def describe(self) -> dict[str, Any]:
        splitter = "GroupKFold" if self.grouped else "KFold"
        return {
            "name": self.name,
            "splitter": f"{splitter}(n_splits={self.n_splits}, shuffle=True)",
            "groups": "user_id (worker)" if self.grouped else None,
            "seeds": list(self.seeds),
            "repeats": len(self.seeds),
            "balanced": self.balance,
            "std_over": "seeds" if self.grouped else "folds",
            "se": "std over folds (ddof 1) / sqrt(folds)" if self.grouped else "std over folds (ddof 0) / sqrt(folds)",
        }


def paper_protocol(task: str = "pairwise", balance: bool = False) -> Protocol:
    """The reference's protocol (spec 6.4): pairwise seed 49, pointwise seed 42."""
    return Protocol("paper", grouped=False, seeds=(49 if task == "pairwise" else 42,), balance=balance)


def grouped_protocol(seeds: int = 5) -> Protocol:
    if seeds < 1:
        raise ValueError("seeds must be >= 1")
    return Protocol("grouped", grouped=True, seeds=tuple(range(seeds)))


def balanced_subset(data: TaskData, seed: int = 42) -> TaskData:
    """The reference's pointwise balancing (spec 6.5): n = minority count drawn from each class, then shuffled."""
    assert data.y is not None
    rng = np.random.RandomState(seed)
    n = int(min(np.sum(data.y == 0), np.sum(data.y == 1)))
    chosen = np.concatenate([rng.choice(np.flatnonzero(data.y == c), n, replace=False) for c in (0, 1)])
    mask = np.zeros(data.n, dtype=np.bool_)
    mask[chosen] = True
    return data.subset(mask)


def expected_calibration_error(p: npt.ArrayLike, y: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """ECE of P(class 1): sum over equal-width bins of (bin share) * |mean p - mean y|; p = 1 falls in the last bin."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if p.size == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def reliability(p: npt.ArrayLike, y: npt.ArrayLike, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width bin: mean predicted probability, observed frequency and count (empty bins left out)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    out: dict[str, list[float]] = {"predicted": [], "observed": [], "count": []}
    for b in range(bins):
        mask = which == b
        if mask.any():
            out["predicted"].append(float(p[mask].mean()))
            out["observed"].append(float(y[mask].mean()))
            out["count"].append(float(mask.sum()))
    return out


@dataclass
class CVResult:
    """Out-of-fold probabilities per seed, per-fold scores and the quality gate's keep flags per seed."""

    protocol: Protocol
    y: npt.NDArray[np.int64]
    oof: npt.NDArray[np.float64]  # (seeds, n)
    keep: npt.NDArray[np.bool_]  # (seeds, n): rows the quality gate (fitted on training folds) keeps
    folds: list[dict[str, float]] = field(default_factory=list)  # one per (seed, fold)
    quality: list[dict[str, Any]] = field(default_factory=list)  # the gate fitted on each training fold


def _fold_scores(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> dict[str, float]:
    pred = (p > 0.5).astype(np.int64)
    return {
        "accuracy": float(np.mean(pred == y)),
        "f1_1": float(f1_score(y, pred, pos_label=1, zero_division=0.0)),
        "f1_0": float(f1_score(y, pred, pos_label=0, zero_division=0.0)),
    }


def _fit(estimator: Any, X: Any, y: Any, groups: Any) -> Any:
    if groups is not None and hasattr(estimator, "_accepts_groups"):
        return estimator.fit(X, y, groups=groups)
    return estimator.fit(X, y)


def _run_fold(
    estimator: Any,
    X: npt.NDArray[np.float64],
    y: npt.NDArray[np.int64],
    groups: npt.NDArray[Any] | None,
    sessions: Any,
    train: npt.NDArray[np.intp],
    test: npt.NDArray[np.intp],
    gate_quantile: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], dict[str, Any]]:
    """Fit on the training rows only (model and quality gate), predict the test rows."""
    model = _fit(clone(estimator), X[train], y[train], None if groups is None else groups[train])
    p = np.asarray(model.predict_proba(X[test])[:, 1], dtype=np.float64)
    gate = SessionQuality(gate_quantile).fit(sessions.iloc[train])
    _, keep = gate.row_scores(sessions.iloc[test])
    return p, keep, gate.describe()


def cross_validate(
    estimator: Any,
    data: TaskData,
    protocol: Protocol,
    *,
    gate_quantile: float = 0.1,
    n_jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> CVResult:
    """Fit a clone per training fold (folds in `n_jobs` processes); the quality gate is fitted per training fold too."""
    from joblib import Parallel, delayed

    if data.y is None:
        raise ValueError("cross-validation needs labelled rows")
    if protocol.balance:
        data = balanced_subset(data, seed=protocol.seeds[0])
    y = np.asarray(data.y, dtype=np.int64)
    groups = data.groups
    sessions = data.frame[quality_columns(data.frame)]
    oof = np.zeros((len(protocol.seeds), data.n))
    keep = np.ones((len(protocol.seeds), data.n), dtype=np.bool_)
    result = CVResult(protocol=protocol, y=y, oof=oof, keep=keep)
    jobs = [
        (s, seed, fold, train, test)
        for s, seed in enumerate(protocol.seeds)
        for fold, (train, test) in enumerate(protocol.splits(data.n, groups, seed))
    ]
    fold_groups = groups if protocol.grouped else None
    outputs = Parallel(n_jobs=n_jobs or 1, return_as="generator")(
        delayed(_run_fold)(estimator, data.X, y, fold_groups, sessions, train, test, gate_quantile)
        for _, _, _, train, test in jobs
    )
    for (s, seed, fold, _, test), (p, kept, gate) in zip(jobs, outputs, strict=True):
        oof[s, test] = p
        keep[s, test] = kept
        result.folds.append({"seed": seed, "fold": fold, "n": len(test), **_fold_scores(y[test], p)})
        result.quality.append(gate)
        if progress is not None:
            progress(1)
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(result: CVResult) -> dict[str, Any]:
    """Scores of one setting: fold metrics (mean, std, se), OOF AUC/ECE/Brier and accuracy under abstention."""
    protocol = result.protocol
    out: dict[str, Any] = {"n": int(result.y.size), "positive_rate": round(float(result.y.mean()), 4)}
    for metric in ("accuracy", "f1_1", "f1_0"):
        per_fold = [f[metric] for f in result.folds]
        mean = float(np.mean(per_fold))
        if protocol.grouped:
            per_seed = [
                float(np.mean([f[metric] for f in result.folds if f["seed"] == seed])) for seed in protocol.seeds
            ]
            _, std = _mean_std(per_seed)
            se = float(np.std(per_fold, ddof=1)) / math.sqrt(protocol.n_splits)
        else:
            std = float(np.std(per_fold, ddof=1))
            se = float(np.std(per_fold, ddof=0)) / math.sqrt(len(per_fold))
        out[metric] = {"mean": mean, "std": std, "se": se}
    metrics: dict[str, Callable[[npt.NDArray[np.float64]], float]] = {
        "auc": lambda p: float(roc_auc_score(result.y, p)) if len(np.unique(result.y)) == 2 else float("nan"),
        "ece": lambda p: expected_calibration_error(p, result.y),
        "brier": lambda p: float(brier_score_loss(result.y, p)),
    }
    for name, fn in metrics.items():
        mean, std = _mean_std([fn(row) for row in result.oof])
        out[name] = {"mean": mean, "std": std}
    pooled = [float(np.mean((row > 0.5) == result.y)) for row in result.oof]
    gated = [
        float(np.mean((row[k] > 0.5) == result.y[k])) if k.any() else float("nan")
        for row, k in zip(result.oof, result.keep, strict=True)
    ]
    out["pooled_accuracy"] = float(np.mean(pooled))
    out["abstain"] = {
        "accuracy": float(np.nanmean(gated)),
        "coverage": float(result.keep.mean()),
        "accuracy_abstained_rows": float(
            np.nanmean(
                [
                    float(np.mean((row[~k] > 0.5) == result.y[~k])) if (~k).any() else float("nan")
                    for row, k in zip(result.oof, result.keep, strict=True)
                ]
            )
        )
        if (~result.keep).any()
        else float("nan"),
    }
    return out


@dataclass(frozen=True)
class Setting:
    """One row of the comparison table: a label, a model name and a feature set."""

    label: str
    model: str
    features: str


def table2_settings(task: str) -> list[Setting]:
    """The paper's Table 2 rows (reference forest on each feature set), a majority baseline, and ours."""
    from reward_svc.model.estimators import BEST

    best_model, best_features = BEST[task]
    return [
        Setting("majority class", "majority", "text"),
        Setting("RF + text only", "reference_rf", "text"),
        Setting("RF + all features", "reference_rf", "all"),
        Setting("RF + IF", "reference_rf", "paper_if"),
        Setting("RF + (IF - gaze)", "reference_rf", "paper_if_no_gaze"),
        Setting("RF + (IF - mouse)", "reference_rf", "paper_if_no_mouse"),
        Setting(f"ours: {best_model}", best_model, best_features),
    ]


def evaluate_setting(
    frame: Any,
    task: str,
    setting: Setting,
    protocol: Protocol,
    *,
    feature_mode: str = "default",
    n_jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], CVResult, TaskData]:
    """Cross-validate one setting on a feature table; returns its summary, the raw result and the data used."""
    from reward_svc.model.data import task_data
    from reward_svc.model.estimators import make_model

    data = task_data(frame, task, setting.features, feature_mode=feature_mode)
    estimator = make_model(setting.model, task, data.names)  # one thread each: the folds run in parallel
    result = cross_validate(estimator, data, protocol, n_jobs=n_jobs, progress=progress)
    summary = {
        "setting": setting.label,
        "model": setting.model,
        "features": setting.features,
        "feature_set_version": data.feature_set_version,
        "n_features": len(data.names),
        **summarize(result),
    }
    return summary, result, data


def protocol_header(protocol: Protocol, task: str, feature_mode: str, data: TaskData) -> dict[str, Any]:
    """What every report states: protocol, task, feature mode and the rows it ran on."""
    return {
        "protocol": protocol.describe(),
        "task": task,
        "feature_mode": feature_mode,
        "n_rows": data.n if not protocol.balance else None,
        "n_workers": len(np.unique(data.groups)),
        "label": "1 = right preferred" if task == "pairwise" else "1 = current better than previous",
        "unlabelled_rows": "dropped",
    }


def _pm(score: dict[str, float], se: bool = False) -> str:
    spread = score["se"] if se else score["std"]
    return f"{score['mean']:.4f} ± {spread:.4f}"


def format_table(report: dict[str, Any], markdown: bool = False) -> str:
    """The comparison as text (or a markdown table) with the protocol statement above it."""
    proto = report["protocol"]
    lines = [
        f"task {report['task']} | feature mode {report['feature_mode']} | protocol {proto['name']}: "
        f"{proto['splitter']}, groups {proto['groups'] or 'none'}, seeds {proto['seeds']}, repeats {proto['repeats']}"
        f"{', balanced classes' if proto['balanced'] else ''} | n rows {report['settings'][0]['n']} "
        f"| workers {report['n_workers']}",
        f"± = std over {proto['std_over']} (SE column: {proto['se']}); AUC/ECE/Brier on out-of-fold probabilities "
        f"(mean over seeds); abstain = quality gate fitted on training folds",
    ]
    header = [
        "setting",
        "features",
        "accuracy",
        "SE",
        "F1 class 1",
        "F1 class 0",
        "n",
        "AUC",
        "ECE",
        "Brier",
        "acc@gate",
        "coverage",
    ]
    rows = [
        [
            s["setting"],
            s["features"],
            _pm(s["accuracy"]),
            f"{s['accuracy']['se']:.4f}",
            _pm(s["f1_1"]),
            _pm(s["f1_0"]),
            str(s["n"]),
            f"{s['auc']['mean']:.3f}",
            f"{s['ece']['mean']:.3f}",
            f"{s['brier']['mean']:.4f}",
            f"{s['abstain']['accuracy']:.4f}",
            f"{s['abstain']['coverage']:.3f}",
        ]
        for s in report["settings"]
    ]
    if markdown:
        out = [*(f"{line}  " for line in lines), "", "| " + " | ".join(header) + " |"]
        out.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|")
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([*lines, rule, fmt.format(*header), rule, *(fmt.format(*r) for r in rows), rule])


def compare(
    frame: Any,
    task: str,
    protocol: Protocol,
    *,
    settings: list[Setting] | None = None,
    feature_mode: str = "default",
    n_jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[CVResult, TaskData]]]:
    """Evaluate every setting (default: the Table-2 rows and ours) under one protocol."""
    settings = settings if settings is not None else table2_settings(task)
    summaries = []
    raw: dict[str, tuple[CVResult, TaskData]] = {}
    data: TaskData | None = None
    for setting in settings:
        summary, result, data = evaluate_setting(
            frame, task, setting, protocol, feature_mode=feature_mode, n_jobs=n_jobs, progress=progress
        )
        summaries.append(summary)
        raw[setting.label] = (result, data)
    assert data is not None
    return {**protocol_header(protocol, task, feature_mode, data), "settings": summaries}, raw
