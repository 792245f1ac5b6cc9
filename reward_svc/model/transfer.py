"""Choosing, calibrating and adapting reward models for people never seen: the protocol of docs/results/reward.md.

The protocol, fixed before any of its numbers were looked at (changing it means changing this docstring):

1. Rows: the labelled questions of one task; groups: workers. Outer folds: GroupKFold(5, shuffle=True) by worker,
   repeated with seeds 0..S-1. No worker is on both sides of a split. Nothing is fitted or tuned on an outer test
   fold: calibration, the quality gate and the per-user prior are fitted inside the training folds (the calibrator
   and the prior on inner GroupKFold-by-worker out-of-fold scores).
2. Candidates, simplest first (`CANDIDATES`). Score: macro accuracy over workers (every worker one vote: what a new
   person experiences), mean over seeds; micro accuracy, the spread over seeds and over folds and the worst decile
   of workers are reported beside it.
3. Rule: SE = standard deviation of the per-fold macro accuracies of the best candidate / sqrt(folds per seed).
   The choice is the simplest candidate whose mean macro accuracy is within one SE of the best one's
   (the one-standard-error rule: differences smaller than the noise are not evidence for complexity).
4. The chosen model is calibrated (symmetric Platt scaling on inner grouped folds); ECE (15 bins) and Brier are
   reported per outer fold and over all out-of-fold rows.
5. The quality gate is on by default only if, in every outer fold with abstentions, accuracy on kept rows is above
   accuracy on abstained rows.
6. Warm start: for each test worker, their first k labelled questions in question order (query id) adapt the
   per-user side-habit term (reward_svc.model.adapt) and the rest are scored; k = 0, 3, 5, 10. The prior's habit
   weight is re-estimated on all test workers' adaptation labels (floored at the training prior's weight); the
   same adaptation with the training prior alone is reported beside it. Every method at one k is
   scored on the same rows. Baselines: the training folds' majority class (for pairwise this is also "position
   only"), the per-user prior only (majority of the worker's first k labels; a tie or k = 0 falls back to the
   training majority), length only (the same linear model on text lengths), text only (the two answers' words:
   reward_svc.model.text_baseline, fitted on the training folds; added after the first report). The adapted model
   must beat per-user-prior-only at the same k, or the report says it does not.
7. Injected preference (a robustness check): the same, with a share of each test worker's labels relabelled
   towards one side drawn per worker; training labels (and so the prior) stay untouched.

Added after the second report (the rows and the rule above are unchanged): a third injected variant, "mixed
habits", where each test worker independently has a side habit with probability 1/2 (share relabelled drawn
uniformly from [0.5, 1], side 50/50) and the others keep their own labels. The homogeneous variants give every
worker a habit, and there the per-user prior alone is already the best decision rule; a population where some
people have habits and some do not is the case the adaptation is for. The warm-start tables now pool 10 seeds of
nested runs (3 before) and give the spread of micro and macro accuracy over seeds beside each mean. The pointwise
task, which had no transfer report, runs the same protocol before any of its numbers were seen: candidates lr,
reference_rf, extra_trees (simplest first), and Platt scaling with an intercept instead of the symmetric one
("current" and "previous" are not two sides of one screen).

Changed after the third report: the adaptation weighs each label by its task's design effect (labels within one
task agree more often than across tasks; reward_svc.model.adapt), with the correlation estimated on the training
folds. Pairwise k = 5 before the change: dev 0.581 / 0.681 (ECE 0.153), mixed habits 0.721 / 0.766, injected 0.8
0.871 / 0.886.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from reward_svc.model.adapt import UserPrior, fit_prior
from reward_svc.model.data import TaskData, task_data
from reward_svc.model.estimators import make_model
from reward_svc.model.evaluate import cross_validate, expected_calibration_error, grouped_protocol
from reward_svc.model.quality import SessionQuality, quality_columns
from reward_svc.model.text_baseline import TextOnly, TextPairs

__all__ = [
    "CANDIDATES",
    "WARM_KS",
    "NestedRuns",
    "choose",
    "compare_candidates",
    "inject_mixed_preference",
    "nested_runs",
    "warm_start_table",
    "warm_variants",
]

#: Candidates per task, simplest first (the order the one-SE rule prefers).
CANDIDATES: dict[str, tuple[str, ...]] = {
    "pairwise": ("swap_lr", "swap_rf", "swap_et", "swap_hgb", "swap_ens"),
    "pointwise": ("lr", "reference_rf", "extra_trees"),
}
FEATURES: dict[str, str] = {"pairwise": "all", "pointwise": "paper_if"}
WARM_KS = (0, 3, 5, 10)
INJECT_SHARES = (0.5, 0.8)
#: Seeds of nested runs behind the calibration, gate and warm-start tables (each costs about 4 s on the dev subset).
NESTED_SEEDS = 10
N_SPLITS = 5


def _per_worker(hit: npt.NDArray[np.bool_], users: npt.NDArray[Any]) -> pd.Series:
    return pd.Series(hit).groupby(users).mean()


def compare_candidates(
    data: TaskData,
    candidates: Sequence[str],
    seeds: int,
    *,
    n_jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Repeated grouped CV of every candidate: micro/macro accuracy with seed and fold spread, worst worker decile."""
    assert data.y is not None
    protocol = grouped_protocol(seeds)
    y = data.y
    users = data.groups
    rows = []
    for name in candidates:
        result = cross_validate(
            make_model(name, data.task, data.names), data, protocol, n_jobs=n_jobs, progress=progress
        )
        micro, macro, fold_macro, per_worker = [], [], [], []
        for s, seed in enumerate(protocol.seeds):
            hit = (result.oof[s] > 0.5) == y
            micro.append(float(hit.mean()))
            worker_acc = _per_worker(hit, users)
            macro.append(float(worker_acc.mean()))
            per_worker.append(worker_acc)
            for _, test in protocol.splits(data.n, users, seed):
                fold_macro.append(float(_per_worker(hit[test], users[test]).mean()))
        worker_mean = pd.concat(per_worker, axis=1).mean(axis=1)
        rows.append(
            {
                "model": name,
                "micro": float(np.mean(micro)),
                "micro_seed_std": float(np.std(micro, ddof=1)) if len(micro) > 1 else 0.0,
                "macro": float(np.mean(macro)),
                "macro_seed_std": float(np.std(macro, ddof=1)) if len(macro) > 1 else 0.0,
                "macro_fold_std": float(np.std(fold_macro, ddof=1)),
                "se": float(np.std(fold_macro, ddof=1)) / math.sqrt(N_SPLITS),
                "worst_decile": float(np.quantile(worker_mean.to_numpy(), 0.1)),
                "macro_by_seed": macro,
                "pred_class1": float(np.mean(result.oof > 0.5)),
            }
        )
    # how often each candidate is the best one within a seed: do the rankings hold between seeds?
    by_seed = np.array([row["macro_by_seed"] for row in rows])  # (candidates, seeds)
    wins = np.bincount(np.argmax(by_seed, axis=0), minlength=len(rows))
    for row, won in zip(rows, wins, strict=True):
        row["best_in_seeds"] = int(won)
    return rows


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The one-standard-error rule over rows in simplest-first order (see the module docstring)."""
    best = max(rows, key=lambda r: r["macro"])
    bar = best["macro"] - best["se"]
    chosen = next(r for r in rows if r["macro"] >= bar)
    return {
        "chosen": chosen["model"],
        "best": best["model"],
        "best_macro": best["macro"],
        "se": best["se"],
        "bar": bar,
        "rule": "simplest candidate with mean macro accuracy >= best mean - 1 SE (SE over the best one's folds)",
    }


def _user_seed(user: Any, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{user}".encode()).digest()[:4], "little")


def inject_preference(
    y: npt.NDArray[np.int64], users: npt.NDArray[Any], share: float, seed: int
) -> npt.NDArray[np.int64]:
    """Relabel `share` of each worker's questions towards one side drawn per worker (a seeded, stable choice)."""
    out = y.copy()
    for user in np.unique(users):
        rng = np.random.default_rng(_user_seed(user, seed))
        idx = np.flatnonzero(users == user)
        side = int(rng.integers(2))
        out[idx[rng.random(idx.size) < share]] = side
    return out


def inject_mixed_preference(y: npt.NDArray[np.int64], users: npt.NDArray[Any], seed: int) -> npt.NDArray[np.int64]:
    """Half the workers (a seeded draw each) get a side habit of a random strength; the others keep their labels.

    A worker with a habit has a share drawn uniformly from [0.5, 1] of their questions relabelled towards one side
    (50/50). The draw is stable per (worker, seed) and independent of `inject_preference`'s.
    """
    out = y.copy()
    for user in np.unique(users):
        rng = np.random.default_rng(_user_seed(f"mixed:{user}", seed))
        if rng.random() >= 0.5:
            continue
        idx = np.flatnonzero(users == user)
        side = int(rng.integers(2))
        share = rng.uniform(0.5, 1.0)
        out[idx[rng.random(idx.size) < share]] = side
    return out


Relabel = Callable[[npt.NDArray[np.int64], npt.NDArray[Any], int], npt.NDArray[np.int64]]


def _inject_share(
    y: npt.NDArray[np.int64], users: npt.NDArray[Any], seed: int, *, share: float
) -> npt.NDArray[np.int64]:
    return inject_preference(y, users, share, seed)


def warm_variants() -> dict[str, Relabel | None]:
    """The label worlds of the warm-start tables: the dev labels, then each robustness check (protocol item 7)."""
    variants: dict[str, Relabel | None] = {"dev folds": None}
    for share in INJECT_SHARES:
        variants[f"injected preference, share {share}"] = partial(_inject_share, share=share)
    variants["injected preference, mixed habits"] = inject_mixed_preference
    return variants


@dataclass
class NestedRuns:
    """Per (seed, outer fold): test rows, calibrated population P, the fold's prior, gate flags and baselines."""

    data: TaskData
    model: str
    folds: list[dict[str, Any]] = field(default_factory=list)


def nested_runs(
    data: TaskData,
    model: str,
    seeds: int,
    *,
    length_data: TaskData | None = None,
    texts: TextPairs | None = None,
    gate_quantile: float = 0.1,
    progress: Callable[[int], None] | None = None,
) -> NestedRuns:
    """Fit `model` (a calibrated one: it must expose inner out-of-fold `oof_`) per outer training fold, score the test.

    The per-user prior of each fold is fitted on the training rows' inner out-of-fold probabilities; the quality
    gate on the training sessions; the length-only baseline on `length_data` (same rows, text lengths only); the
    text-only baseline on `texts` (the answers of the same rows, pairwise only).
    """
    assert data.y is not None
    protocol = grouped_protocol(seeds)
    users = data.groups
    tasks = data.meta["task_id"].astype(str).to_numpy()
    sessions = data.frame[quality_columns(data.frame)]
    runs = NestedRuns(data=data, model=model)
    for seed in protocol.seeds:
        for fold, (train, test) in enumerate(protocol.splits(data.n, users, seed)):
            estimator = make_model(model, data.task, data.names)
            estimator.fit(data.X[train], data.y[train], groups=users[train])
            p = estimator.predict_proba(data.X[test])[:, 1]
            inner = np.asarray(estimator.oof_, dtype=np.float64)
            prior = fit_prior(inner, data.y[train], users[train], tasks[train])
            gate = SessionQuality(gate_quantile).fit(sessions.iloc[train])
            _, keep = gate.row_scores(sessions.iloc[test])
            entry: dict[str, Any] = {
                "seed": seed,
                "fold": fold,
                "train": train,
                "test": test,
                "p": p,
                "prior": prior,
                "keep": keep,
                "majority": int(np.mean(data.y[train]) > 0.5),
            }
            if length_data is not None:
                assert length_data.y is not None
                length_model = make_model(
                    "swap_lr" if data.task == "pairwise" else "reference_rf", data.task, length_data.names
                )
                length_model.fit(length_data.X[train], length_data.y[train])
                entry["p_length"] = length_model.predict_proba(length_data.X[test])[:, 1]
            if texts is not None:
                text_model = TextOnly().fit(texts.take(train), data.y[train])
                entry["p_text"] = text_model.predict_proba(texts.take(test))[:, 1]
            runs.folds.append(entry)
            if progress is not None:
                progress(1)
    return runs


def calibration_rows(runs: NestedRuns) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """ECE and Brier per outer fold, and over all out-of-fold rows (pooled per seed, averaged over seeds)."""
    y = runs.data.y
    assert y is not None
    rows = []
    pooled: dict[int, tuple[list[float], list[int]]] = {}
    for f in runs.folds:
        yt = y[f["test"]]
        rows.append(
            {
                "seed": f["seed"],
                "fold": f["fold"],
                "n": int(yt.size),
                "ece": expected_calibration_error(f["p"], yt),
                "brier": float(np.mean((f["p"] - yt) ** 2)),
                "accuracy": float(np.mean((f["p"] > 0.5) == yt)),
            }
        )
        ps, ys = pooled.setdefault(f["seed"], ([], []))
        ps.extend(f["p"].tolist())
        ys.extend(yt.tolist())
    eces = [expected_calibration_error(np.array(ps), np.array(ys)) for ps, ys in pooled.values()]
    briers = [float(np.mean((np.array(ps) - np.array(ys)) ** 2)) for ps, ys in pooled.values()]
    fold_ece = [r["ece"] for r in rows]
    return rows, {
        "ece_pooled": float(np.mean(eces)),
        "ece_pooled_seed_std": float(np.std(eces, ddof=1)) if len(eces) > 1 else 0.0,
        "ece_fold_mean": float(np.mean(fold_ece)),
        "ece_fold_max": float(np.max(fold_ece)),
        "brier_pooled": float(np.mean(briers)),
    }


def gate_check(runs: NestedRuns) -> dict[str, Any]:
    """Accuracy on kept vs abstained rows per outer fold; the gate passes only if kept wins in every such fold."""
    y = runs.data.y
    assert y is not None
    folds = []
    for f in runs.folds:
        hit = (f["p"] > 0.5) == y[f["test"]]
        keep = f["keep"]
        folds.append(
            {
                "seed": f["seed"],
                "fold": f["fold"],
                "coverage": float(keep.mean()),
                "kept": float(hit[keep].mean()) if keep.any() else float("nan"),
                "abstained": float(hit[~keep].mean()) if (~keep).any() else float("nan"),
            }
        )
    judged = [f for f in folds if not math.isnan(f["abstained"]) and not math.isnan(f["kept"])]
    passes = bool(judged) and all(f["kept"] > f["abstained"] for f in judged)
    return {
        "passes": passes,
        "folds_kept_better": sum(f["kept"] > f["abstained"] for f in judged),
        "folds_judged": len(judged),
        "coverage": float(np.mean([f["coverage"] for f in folds])),
        "folds": folds,
    }


def _prior_only(labels: npt.NDArray[np.int64], fallback: int) -> int:
    if labels.size == 0 or labels.mean() == 0.5:
        return fallback
    return int(labels.mean() > 0.5)


def warm_start_table(
    runs: NestedRuns,
    ks: Sequence[int] = WARM_KS,
    *,
    inject_share: float | None = None,
    relabel: Relabel | None = None,
) -> list[dict[str, Any]]:
    """Micro and macro accuracy (and ECE of the probabilistic ones) per k and method, every method on the same rows.

    Labels come from `relabel(y, users, seed)` when given, else from `inject_preference` at `inject_share`, else
    the data's own. Micro and macro are means over seeds (each seed scores every row once), with their spread.
    """
    if relabel is None and inject_share is not None:
        share = inject_share

        def relabel(y: npt.NDArray[np.int64], users: npt.NDArray[Any], seed: int) -> npt.NDArray[np.int64]:
            return inject_preference(y, users, share, seed)

    data = runs.data
    assert data.y is not None
    qid = data.meta["query_id"].to_numpy()
    users = data.groups
    tasks = data.meta["task_id"].astype(str).to_numpy()
    rows = []
    for k in ks:
        per_method: dict[str, list[tuple[Any, bool, float]]] = {}
        for f in runs.folds:
            y = data.y if relabel is None else relabel(data.y, users, f["seed"])
            test = f["test"]
            prior: UserPrior = f["prior"]
            if k:
                # as `tacit reward predict` does: the prior's habit weight is re-estimated on every test worker's
                # adaptation labels (never their scored ones), floored at the training prior's weight
                firsts = []
                for user in np.unique(users[test]):
                    local = np.flatnonzero(users[test] == user)
                    firsts.append(local[np.argsort(qid[test][local], kind="stable")][:k])
                first = np.concatenate(firsts)
                new_prior = prior.updated_with(f["p"][first], y[test][first], users[test][first], tasks[test][first])
            else:
                new_prior = prior
            for user in np.unique(users[test]):
                local = np.flatnonzero(users[test] == user)
                local = local[np.argsort(qid[test][local], kind="stable")]
                if local.size <= k:
                    continue
                adapt, scored = local[:k], local[k:]
                yt = y[test][scored]
                p_pop = f["p"][scored]
                # the same task design effect for both priors (updated_with keeps the training rho)
                ll = prior.log_likelihood(f["p"][adapt], y[test][adapt], tasks[test][adapt]) if k else None
                p_user = new_prior.predict(p_pop, ll)
                p_user_train = prior.predict(p_pop, ll)
                prior_side = _prior_only(y[test][adapt], f["majority"])
                methods = {
                    "adapted": p_user,
                    "adapted (training prior)": p_user_train,
                    "population": p_pop,
                    "per-user prior only": np.full(scored.size, float(prior_side)),
                    "majority class": np.full(scored.size, float(f["majority"])),
                }
                if "p_length" in f:
                    methods["length only"] = f["p_length"][scored]
                if "p_text" in f:
                    methods["text only"] = f["p_text"][scored]
                for name, p in methods.items():
                    bucket = per_method.setdefault(name, [])
                    bucket.extend(
                        (f"{f['seed']}:{user}", bool(hit), float(prob))
                        for hit, prob in zip((p > 0.5) == yt, p, strict=True)
                    )
                per_method.setdefault("_y", []).extend((f"{f['seed']}:{user}", True, float(v)) for v in yt)
        labels = np.array([v for _, _, v in per_method.pop("_y", [])])
        for name, entries in per_method.items():
            keys = np.array([key for key, _, _ in entries])
            hits = np.array([hit for _, hit, _ in entries])
            probs = np.array([prob for _, _, prob in entries])
            n_seeds = len({f["seed"] for f in runs.folds})
            seed_of = np.array([key.split(":", 1)[0] for key in keys])
            micro = pd.Series(hits).groupby(seed_of).mean()
            macro = pd.Series(hits).groupby(keys).mean().groupby(lambda key: str(key).split(":", 1)[0]).mean()
            rows.append(
                {
                    "k": k,
                    "method": name,
                    "micro": float(micro.mean()),
                    "macro": float(macro.mean()),
                    "micro_seed_std": float(micro.std(ddof=1)) if micro.size > 1 else 0.0,
                    "micro_by_seed": [float(v) for v in micro.sort_index().to_numpy()],
                    "macro_by_seed": [float(v) for v in macro.sort_index().to_numpy()],
                    "macro_seed_std": float(macro.std(ddof=1)) if macro.size > 1 else 0.0,
                    "ece": expected_calibration_error(probs, labels)
                    if name in ("adapted", "adapted (training prior)", "population", "length only", "text only")
                    else float("nan"),
                    "rows": int(hits.size // n_seeds),
                    "workers": int(len(set(keys)) // n_seeds),
                }
            )
    return rows


def task_rows(frame: pd.DataFrame, task: str) -> tuple[TaskData, TaskData]:
    """The task's labelled rows with the protocol's feature set, and the same rows with text lengths only."""
    data = task_data(frame, task, FEATURES[task], feature_mode=frame.attrs.get("feature_mode", "default"))
    lengths = task_data(frame, task, "text", feature_mode=frame.attrs.get("feature_mode", "default"))
    return data, lengths
