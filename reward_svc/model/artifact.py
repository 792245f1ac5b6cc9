"""Training a reward model into an artifact (joblib + metadata.json), loading it with checks, and scoring tables.

An artifact records its provenance: library versions, feature set id and version (and the names), feature mode,
a hash of the training data, the git revision, the evaluation protocol and its scores. Loading refuses a
scikit-learn or tacit major-version mismatch; scoring refuses a table whose feature set or version differs.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import pandas as pd

from reward_svc.model.adapt import UserPrior, fit_prior
from reward_svc.model.compiled import CompiledModel, compile_model
from reward_svc.model.data import TaskData, task_data
from reward_svc.model.estimators import BEST, MODELS, make_model
from reward_svc.model.evaluate import cross_validate, grouped_protocol, summarize
from reward_svc.model.quality import SessionQuality

__all__ = [
    "FORMAT_VERSION",
    "ArtifactError",
    "RewardModel",
    "library_versions",
    "load_artifact",
    "train",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
REPO = Path(__file__).resolve().parents[2]


class ArtifactError(RuntimeError):
    """An artifact that cannot be used here: unreadable, built with other major versions, or for other features."""


def library_versions() -> dict[str, str]:
    import sklearn

    try:
        tacit_version = importlib_metadata.version("tacit")
    except importlib_metadata.PackageNotFoundError:
        tacit_version = "0.0.0"
    return {
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
        "tacit": tacit_version,
        "python": platform.python_version(),
    }


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _major(version: str) -> str:
    return version.split(".", 1)[0]


@dataclass
class RewardModel:
    """A fitted estimator, its session-quality gate and its metadata."""

    estimator: Any
    quality: SessionQuality
    metadata: dict[str, Any]
    _compiled: CompiledModel | None = None
    oof: pd.DataFrame | None = None
    """After `train` with seeds > 0: query_id and the grouped out-of-fold P(class 1) of each training row, the
    mean over seeds (each from models that never saw the row's user). Not saved with the artifact."""

    @property
    def task(self) -> str:
        return str(self.metadata["task"])

    @property
    def output_column(self) -> str:
        return "p_right" if self.task == "pairwise" else "p_current"

    @property
    def compiled(self) -> CompiledModel:
        """The estimator as arrays (built on first use) for fast single-row scoring."""
        if self._compiled is None:
            self._compiled = compile_model(self.estimator)
        return self._compiled

    def check_features(self, data: TaskData) -> None:
        """Refuse rows made by another feature set, version, column list or feature mode."""
        meta = self.metadata
        problems = []
        if data.feature_set != meta["feature_set"]:
            problems.append(f"feature set {data.feature_set!r} != trained {meta['feature_set']!r}")
        if data.feature_set_version != meta["feature_set_version"]:
            problems.append(f"feature set version {data.feature_set_version} != trained {meta['feature_set_version']}")
        elif list(data.names) != list(meta["feature_names"]):
            problems.append("feature names differ from the trained ones")
        if data.feature_mode != meta["feature_mode"]:
            problems.append(f"feature mode {data.feature_mode!r} != trained {meta['feature_mode']!r}")
        if problems:
            raise ArtifactError("model/table mismatch: " + "; ".join(problems))

    def features_of(self, frame: pd.DataFrame, *, labelled_only: bool = False) -> TaskData:
        """The table's rows for this model, checked against the training feature set, version and mode."""
        data = task_data(
            frame,
            self.task,
            self.metadata["feature_set"],
            # A table that says how it was made (load_frame records it) must match; a bare table is trusted.
            feature_mode=frame.attrs.get("feature_mode", self.metadata["feature_mode"]),
            labelled_only=labelled_only,
        )
        self.check_features(data)
        return data

    @property
    def prior(self) -> UserPrior:
        """The per-user adaptation prior (artifacts written before adaptation existed get the floor prior)."""
        stored = self.metadata.get("adaptation")
        return UserPrior.from_dict(stored) if stored else UserPrior()

    def score(self, frame: pd.DataFrame, *, adapt_first_k: int = 0) -> pd.DataFrame:
        """One row per question of the model's task: ids, probabilities, label when known, adaptation, abstention.

        With `adapt_first_k` = K > 0, each user's first K labelled questions in question order (query id) adapt
        the per-user term and are flagged `used_for_adaptation`; every other question of that user is scored with
        it (`user_labels_used` says how many labels it had). The population probability is kept beside it.
        """
        if adapt_first_k < 0:
            raise ValueError("adapt_first_k must be >= 0")
        data = self.features_of(frame)
        p = np.asarray(self.estimator.predict_proba(data.X)[:, 1], dtype=np.float64)
        quality, keep = self.quality.row_scores(data.frame)
        meta = data.meta.reset_index(drop=True)
        labels = meta["label"]
        adapted = p.copy()
        used = np.zeros(data.n, dtype=np.bool_)
        n_used = np.zeros(data.n, dtype=np.int64)
        if adapt_first_k > 0:
            order = np.argsort(meta["query_id"].to_numpy(dtype=np.int64), kind="stable")
            users = meta["user_id"].to_numpy()[order]
            firsts: dict[Any, npt.NDArray[np.intp]] = {}
            for user in pd.unique(users):
                rows = order[users == user]
                labelled = rows[labels.iloc[rows].notna().to_numpy()]
                if labelled.size:
                    firsts[user] = labelled[:adapt_first_k]
            first_all = np.concatenate(list(firsts.values())) if firsts else np.zeros(0, dtype=np.intp)
            y_all = labels.iloc[first_all].to_numpy(dtype=np.int64)
            # empirical Bayes across the people scored: their adaptation labels (never the scored ones) may raise
            # the prior's habit weight above the training users', never lower it
            tasks = meta["task_id"].astype(str).to_numpy()
            prior = self.prior.updated_with(
                p[first_all], y_all, meta["user_id"].to_numpy()[first_all], tasks[first_all]
            )
            for user, first in firsts.items():
                rows = order[users == user]
                used[first] = True
                rest = np.setdiff1d(rows, first)
                y_first = labels.iloc[first].to_numpy(dtype=np.int64)
                adapted[rest] = prior.predict(p[rest], prior.log_likelihood(p[first], y_first, tasks[first]))
                n_used[rest] = first.size
        column = self.output_column
        return pd.DataFrame(
            {
                "query_id": meta["query_id"].to_numpy(),
                "user_id": meta["user_id"].to_numpy(),
                "mode": meta["mode"].to_numpy(),
                column: adapted,
                f"{column}_population": p,
                "label": labels.astype("Int64").array,
                "used_for_adaptation": used,
                "user_labels_used": n_used,
                "abstained": ~keep,
                "quality": np.round(quality, 4),
            }
        )

    def save(self, out: Path | str) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        joblib.dump({"estimator": self.estimator, "quality": self.quality}, out / MODEL_FILE)
        (out / METADATA_FILE).write_text(json.dumps(self.metadata, indent=2, default=_json_default) + "\n")
        return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_versions(meta: dict[str, Any], current: dict[str, str] | None = None) -> None:
    """Refuse an artifact written by another major version of scikit-learn or tacit, or another format."""
    current = current if current is not None else library_versions()
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"artifact format {meta.get('format_version')} is not {FORMAT_VERSION}")
    saved = meta.get("libraries", {})
    for lib in ("sklearn", "tacit"):
        if lib not in saved:
            raise ArtifactError(f"artifact metadata lacks the {lib} version")
        if _major(saved[lib]) != _major(current[lib]):
            raise ArtifactError(
                f"artifact was built with {lib} {saved[lib]}, this is {lib} {current[lib]} (major versions differ)"
            )


def load_artifact(path: Path | str) -> RewardModel:
    """Load an artifact directory; ArtifactError if it is incomplete or was built with other major versions."""
    path = Path(path)
    meta_file, model_file = path / METADATA_FILE, path / MODEL_FILE
    if not meta_file.is_file() or not model_file.is_file():
        raise ArtifactError(f"{path} is not a reward-model artifact (needs {METADATA_FILE} and {MODEL_FILE})")
    meta = json.loads(meta_file.read_text())
    check_versions(meta)  # before unpickling anything
    payload = joblib.load(model_file)
    return RewardModel(estimator=payload["estimator"], quality=payload["quality"], metadata=meta)


def gate_passes(result: Any, groups: Any) -> dict[str, Any]:
    """The quality gate's check on grouped folds: accuracy on kept rows above abstained rows in every judged fold.

    A fold is judged when the gate (fitted on its training rows) both kept and abstained on some test rows.
    """
    folds = []
    for s, seed in enumerate(result.protocol.seeds):
        hit = (result.oof[s] > 0.5) == result.y
        keep = result.keep[s]
        for fold, (_, test) in enumerate(result.protocol.splits(result.y.size, groups, seed)):
            kept, dropped = hit[test][keep[test]], hit[test][~keep[test]]
            if kept.size and dropped.size:
                folds.append(
                    {"seed": seed, "fold": fold, "kept": float(kept.mean()), "abstained": float(dropped.mean())}
                )
    passes = bool(folds) and all(f["kept"] > f["abstained"] for f in folds)
    return {
        "passes": passes,
        "folds_kept_better": sum(f["kept"] > f["abstained"] for f in folds),
        "folds_judged": len(folds),
        "rule": "on by default only if accuracy on kept > on abstained rows in every judged grouped fold",
    }


def train(
    frame: pd.DataFrame,
    task: str,
    *,
    model: str | None = None,
    features: str | None = None,
    feature_mode: str = "default",
    seeds: int = 5,
    n_jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RewardModel:
    """Evaluate with the grouped protocol, then fit the model, the quality gate and the per-user prior on every row.

    The per-user prior (reward_svc.model.adapt) is fitted on the grouped out-of-fold probabilities of the first
    seed (or, with seeds=0, on a calibrated model's inner out-of-fold ones; else it keeps its floor). The quality
    gate is enabled only when it passes its grouped check (see `gate_passes`).
    """
    best_model, best_features = BEST[task]
    model = model or best_model
    features = features or (best_features if model == best_model else MODELS[model].default_features)
    data = task_data(frame, task, features, feature_mode=feature_mode)
    if data.y is None or data.n == 0:
        raise ValueError(f"no labelled {task} rows to train on")
    protocol = grouped_protocol(seeds) if seeds > 0 else None
    scores: dict[str, Any] = {}
    gate_check: dict[str, Any] = {"passes": False, "rule": "not checked (seeds=0): the gate stays off"}
    oof: Any = None
    oof_table: pd.DataFrame | None = None
    if protocol is not None:
        single = make_model(model, task, data.names)
        result = cross_validate(single, data, protocol, n_jobs=n_jobs, progress=progress)
        scores = summarize(result)
        gate_check = gate_passes(result, data.groups)
        oof = result.oof[0]
        oof_table = pd.DataFrame({"query_id": data.meta["query_id"].to_numpy(), "p": result.oof.mean(axis=0)})
    estimator = make_model(model, task, data.names, n_jobs=n_jobs)
    fit_params = {"groups": data.groups} if hasattr(estimator, "_accepts_groups") else {}
    estimator.fit(data.X, data.y, **fit_params)
    if oof is None and hasattr(estimator, "oof_"):
        oof = estimator.oof_
    tasks = data.meta["task_id"].astype(str).to_numpy()
    prior = fit_prior(oof, data.y, data.groups, tasks) if oof is not None else UserPrior()
    quality = SessionQuality(enabled=bool(gate_check["passes"])).fit(data.frame)
    meta = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "output": "P(right preferred)" if task == "pairwise" else "P(current better than previous)",
        "model": model,
        "model_description": MODELS[model].description,
        "params": {k: repr(v) for k, v in estimator.get_params(deep=False).items() if k != "feature_names"},
        "feature_set": data.feature_set,
        "feature_set_version": data.feature_set_version,
        "feature_mode": feature_mode,
        "feature_names": data.names,
        "n_rows": data.n,
        "n_workers": len(np.unique(data.groups)),
        "data_hash": data.hash(),
        "libraries": library_versions(),
        "git_revision": git_revision(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "protocol": protocol.describe() if protocol is not None else None,
        "scores": scores,
        "quality_gate": {**quality.describe(), "check": gate_check},
        "adaptation": {**prior.to_dict(), "description": prior.describe()},
    }
    return RewardModel(estimator=estimator, quality=quality, metadata=meta, oof=oof_table)
