"""PNG plots of an evaluation: feature importance, reliability diagram, accuracy by response-length tercile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from reward_svc.model.evaluate import ECE_BINS, CVResult, expected_calibration_error, reliability

MIN_BIN_ROWS = 20

__all__ = [
    "feature_importance_plot",
    "length_tercile_accuracy",
    "length_tercile_plot",
    "prediction_plots",
    "reliability_plot",
]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def feature_importance_plot(
    names: list[str], importances: npt.ArrayLike, out: Path | str, title: str, top: int = 25
) -> Path:
    """Horizontal bars of the `top` largest impurity importances."""
    plt = _pyplot()
    imp = np.asarray(importances, dtype=np.float64)
    order = np.argsort(imp)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(order) + 1.2))
    ax.barh([names[i] for i in order], imp[order], color="#4C72B0")
    ax.set_xlabel("mean decrease in impurity")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def reliability_plot(result: CVResult, out: Path | str, title: str) -> Path:
    """Observed frequency against mean predicted probability per bin (out-of-fold, all seeds pooled)."""
    plt = _pyplot()
    p = result.oof.ravel()
    y = np.tile(result.y, result.oof.shape[0])
    bins = reliability(p, y)
    ece = float(np.mean([expected_calibration_error(row, result.y) for row in result.oof]))
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    counts = np.asarray(bins["count"])
    enough = counts >= MIN_BIN_ROWS  # a bin of a handful of rows is noise; show it hollow, off the line
    pred, obs = np.asarray(bins["predicted"]), np.asarray(bins["observed"])
    ax.plot(pred[enough], obs[enough], marker="o", color="#C44E52", label=f"model (ECE {ece:.3f})")
    if (~enough).any():
        ax.scatter(
            pred[~enough], obs[~enough], facecolors="none", edgecolors="#C44E52", label=f"bins < {MIN_BIN_ROWS} rows"
        )
    ax.set_ylabel("observed frequency of class 1")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    hist.hist(p, bins=np.linspace(0, 1, ECE_BINS + 1), color="#8172B2")
    hist.set_xlabel("predicted probability of class 1 (out-of-fold)")
    hist.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def length_tercile_accuracy(lengths: npt.ArrayLike, result: CVResult) -> list[dict[str, float]]:
    """Out-of-fold accuracy (mean over seeds) in each third of rows sorted by total response length."""
    lengths = np.asarray(lengths, dtype=np.float64)
    order = np.argsort(lengths, kind="stable")
    out = []
    for k, part in enumerate(np.array_split(order, 3)):
        acc = [float(np.mean((row[part] > 0.5) == result.y[part])) for row in result.oof]
        out.append(
            {
                "tercile": k,
                "min_length": float(lengths[part].min()),
                "max_length": float(lengths[part].max()),
                "n": len(part),
                "accuracy": float(np.mean(acc)),
                "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
            }
        )
    return out


def length_tercile_plot(rows: dict[str, list[dict[str, float]]], out: Path | str, title: str) -> Path:
    """Grouped bars: accuracy per response-length tercile for each named setting (paper Fig. 9)."""
    plt = _pyplot()
    labels = ["short", "medium", "long"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / max(len(rows), 1)
    for i, (name, terciles) in enumerate(rows.items()):
        x = np.arange(3) + (i - (len(rows) - 1) / 2) * width
        ax.bar(x, [t["accuracy"] for t in terciles], width, yerr=[t["std"] for t in terciles], label=name, capsize=3)
    first = next(iter(rows.values()))
    ticks = [f"{lab}\n{t['min_length']:.0f}-{t['max_length']:.0f} chars" for lab, t in zip(labels, first, strict=True)]
    ax.set_xticks(np.arange(3), ticks)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_ylim(0.3, 0.8)
    ax.set_ylabel("out-of-fold accuracy")
    ax.set_xlabel("response_length_left + response_length_right (terciles)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def write_plots(
    out_dir: Path | str,
    *,
    prefix: str,
    importance: tuple[list[str], npt.ArrayLike, str] | None,
    reliability_result: tuple[CVResult, str] | None,
    terciles: dict[str, list[dict[str, float]]] | None,
    tercile_title: str = "",
) -> list[Path]:
    """Write whichever of the three plots are given; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if importance is not None:
        names, values, title = importance
        paths.append(feature_importance_plot(names, values, out_dir / f"{prefix}_importance.png", title))
    if reliability_result is not None:
        result, title = reliability_result
        paths.append(reliability_plot(result, out_dir / f"{prefix}_reliability.png", title))
    if terciles:
        paths.append(length_tercile_plot(terciles, out_dir / f"{prefix}_length_terciles.png", tercile_title))
    return paths


def prediction_plots(preds: Any, column: str, out_dir: Path | str) -> list[Path]:
    """`tacit reward predict --plots`: reliability of the scored labelled rows (the probability answered and the
    population one, on the same rows) and accuracy per worker, sorted. Adaptation rows are left out, as in the
    summary's accuracy."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labelled = preds[preds["label"].notna()]
    scored = labelled[~labelled["used_for_adaptation"].to_numpy(dtype=bool)]
    if not len(scored):
        return []
    y = scored["label"].to_numpy(dtype=np.int64)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for name, colour in ((column, "#C44E52"), (f"{column}_population", "#4C72B0")):
        p = scored[name].to_numpy(dtype=np.float64)
        bins = reliability(p, y, bins=10)
        ece = expected_calibration_error(p, y)
        counts = np.asarray(bins["count"])
        ax.plot(bins["predicted"], bins["observed"], marker="o", color=colour, label=f"{name} (ECE {ece:.3f})")
        ax.scatter(bins["predicted"], bins["observed"], s=counts * 4, color=colour, alpha=0.3)
        hist.hist(p, bins=np.linspace(0, 1, 21), color=colour, alpha=0.5, label=name)
    ax.set_ylabel("observed frequency of class 1")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"reliability on {len(scored)} scored labelled rows (marker area: rows)", fontsize=10)
    hist.set_xlabel("predicted probability of class 1")
    hist.set_ylabel("rows")
    fig.tight_layout()
    reliability_path = out / "predict_reliability.png"
    fig.savefig(reliability_path, dpi=110)
    plt.close(fig)

    hit = (scored[column].to_numpy(dtype=np.float64) > 0.5) == y
    per_worker = (
        pd.DataFrame({"worker": scored["user_id"].to_numpy(), "hit": hit})
        .groupby("worker")["hit"]
        .agg(["mean", "size"])
        .sort_values("mean")
    )
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(per_worker) + 2), 3.6))
    colours = ["#c44" if a < 0.5 else "#48a" for a in per_worker["mean"]]
    ax.bar(range(len(per_worker)), per_worker["mean"], color=colours)
    for i, n in enumerate(per_worker["size"]):
        ax.text(i, 0.02, str(int(n)), ha="center", fontsize=7, color="white")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 1)
    ax.set_xlabel("worker (sorted by accuracy; the number is their scored questions)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy per worker ({column})", fontsize=10)
    fig.tight_layout()
    worker_path = out / "predict_per_worker.png"
    fig.savefig(worker_path, dpi=110)
    plt.close(fig)
    return [reliability_path, worker_path]
