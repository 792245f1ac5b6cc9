"""Reward service core: training runs against the registry, and scoring of feature vectors (no web imports)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reward_svc.model.adapt import UserPrior
from reward_svc.model.artifact import ArtifactError, RewardModel, load_artifact, train
from reward_svc.model.data import frame_from_vectors, load_frame
from reward_svc.registry import ModelRow, Registry, TrainingRowRow, TrainingSetRow
from tacit.schemas import FeatureVector, RewardModelInfo, Score, TrainRewardModel, UserLabel
from tacit.schemas.jobs import Progress as JobProgress
from tacit.schemas.problem import RequestError
from tacit.schemas.reward import PopulationLabel, PopulationPrior, StoredSessions, TrainingSetSummary
from tacit.schemas.session import preferred_side

__all__ = ["ScoreError", "Scorer", "Stopped", "delete_model", "model_info", "run_training"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


class ScoreError(RequestError, ValueError):
    """A score request that cannot be served; `status` is the HTTP status the edge answers with."""

    def __init__(self, field: str, detail: str, code: str, status: int = 422) -> None:
        super().__init__(status, code, field, detail, message=f"{field}: {detail}")


def training_summary(row: TrainingSetRow | None) -> TrainingSetSummary | None:
    if row is None:
        return None
    return TrainingSetSummary(
        source=row.source,  # type: ignore[arg-type]
        sessions=row.sessions,
        users=row.users,
        labels=row.labels,
        digest=row.digest,
    )


def model_info(row: ModelRow, training_set: TrainingSetRow | None = None) -> RewardModelInfo:
    """The public view of a registry entry (its training set in counts, never ids)."""
    return RewardModelInfo(
        id=row.id,
        task=row.task,
        model=row.model_name,
        feature_set=row.feature_set,
        feature_set_version=row.feature_set_version,
        feature_mode=row.feature_mode,
        status=row.status,  # type: ignore[arg-type]
        progress=JobProgress(stage=row.stage, done=row.done, total=row.total),
        error=row.error,
        scores=row.metrics,
        data_hash=row.data_hash,
        demo=row.demo,
        active=row.active,
        created_at=row.created_at,
        finished_at=row.finished_at,
        training_set=training_summary(training_set),
    )


def _session_frame(registry: Registry, model_id: str, task: str) -> tuple[Any, list[str], TrainingSetRow]:
    """The feature table of a model's stored-session training set, and the session id of each query_id."""
    summary = registry.training_set(model_id)
    rows = registry.training_rows(model_id)
    if summary is None or not rows:
        raise ValueError(f"reward model {model_id} has no stored training set (was its user erased?)")
    meta = [
        {"user_id": r.user_id, "task_id": r.task_id, "label": r.label, "turn": r.turn, "samples": r.samples}
        for r in rows
    ]
    frame = frame_from_vectors(meta, summary.names, [list(r.values) for r in rows], task)
    return frame, [r.session_id for r in rows], summary


def _ifllm_training_set(
    frame: Any, task: str, model: RewardModel, folder: bool
) -> tuple[TrainingSetRow, list[TrainingRowRow]]:
    """Counts of an IFLLM-trained model's training set and, for an IFLLM folder, one row per question under the
    id its imported session has (`ifllm-<query id>`, tacit.ifllm.sessions): erasure and out-of-fold scores find
    them. No content hash (the folder is not the stored sessions) and no vectors are kept."""
    rows = frame[(frame["mode"] == task) & frame["label"].notna()]
    labels = {str(int(k)): int(v) for k, v in rows["label"].value_counts().sort_index().items()}
    summary = TrainingSetRow(
        model_id="",
        source="ifllm",
        sessions=len(rows),
        users=int(rows["user_id"].nunique()),
        labels_json=json.dumps(labels),
        digest=str(model.metadata["data_hash"]),
    )
    if not folder:  # a feature table's query ids need not be IFLLM questions
        return summary, []
    oof = {} if model.oof is None else dict(zip(model.oof["query_id"].astype(int), model.oof["p"], strict=True))
    members = [
        TrainingRowRow(
            model_id="",
            session_id=f"ifllm-{int(r['query_id'])}",
            user_id=str(r["user_id"]),
            task_id=str(r["task_id"]),
            turn=int(r["turn"]) if r["turn"] == r["turn"] else 0,
            label=int(r["label"]),
            samples=int(r["samples"]) if r["samples"] == r["samples"] else 0,
            content_hash="",
            values=[],
            p_oof=None if int(r["query_id"]) not in oof else float(oof[int(r["query_id"])]),
        )
        for r in rows[["query_id", "user_id", "task_id", "turn", "label", "samples"]].to_dict("records")
    ]
    return summary, members


class Stopped(Exception):  # noqa: N818 (a signal, not an error)
    """The run is no longer this worker's (cancelled, reaped, taken over or deleted): training stops where it is."""


#: Progress steps are written at most this often (the first and last of a stage always): each is a heartbeat and a
#: look at whether the run was cancelled.
PROGRESS_EVERY_S = 0.5


def run_training(
    registry: Registry,
    model_id: str,
    spec: TrainRewardModel,
    models_dir: Path,
    on_progress: Progress | None = None,
    *,
    worker: str | None = None,
    stale_after_s: float | None = None,
) -> ModelRow:
    """Train the registry entry `model_id` from `spec` as `worker` (see `Registry.claim`).

    Idempotent: a succeeded, cancelled or (for a reason of its own) failed entry is returned as it is. Each progress
    step is the run's heartbeat and looks whether the run is still this worker's: a run cancelled (or reaped, or
    taken over) meanwhile stops there and leaves no artifact. Raises ModelBusyError when another worker is on it and
    KeyError when the model is not (or no longer) in the registry.
    """
    worker = worker or f"local:{uuid.uuid4().hex[:12]}"
    try:
        claim = registry.claim(model_id, worker, stale_after_s=stale_after_s)
    except KeyError:
        raise KeyError(f"no reward model {model_id}") from None
    if claim is None:
        return _current(registry, model_id)
    if claim.took_over:
        log.warning("reward model %s: taking over a lost run (%s)", model_id, claim.took_over)
    written: dict[str, Any] = {"stage": "", "at": 0.0}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == written["stage"] and done < total and now - written["at"] < PROGRESS_EVERY_S:
            return
        if not registry.beat(model_id, worker, stage=stage, done=done, total=total):
            raise Stopped(stage)
        written.update(stage=stage, at=now)
        if on_progress is not None:
            on_progress(stage, done, total)

    saved: Path | None = None
    try:
        if not registry.beat(model_id, worker, demo=spec.demo):
            raise Stopped("starting")
        progress("features", 0, 1)
        stored = isinstance(spec.source, StoredSessions)
        if stored:
            frame, session_ids, summary = _session_frame(registry, model_id, spec.task)
        else:
            frame = load_frame(
                spec.folder or "", spec.feature_mode, progress=lambda done, total: progress("features", done, total)
            )
        progress("features", 1, 1)
        folds = spec.seeds * 5
        counter = {"done": 0}

        def fold_done(step: int = 1) -> None:
            counter["done"] += step
            progress("cross-validation", min(counter["done"], folds), folds)

        model = train(
            frame,
            spec.task,
            model=spec.model,
            features=spec.feature_set,
            feature_mode=spec.feature_mode,
            seeds=spec.seeds,
            progress=fold_done if folds else None,
        )
        model.metadata["demo"] = spec.demo
        if stored:
            meta = model.metadata
            if (
                meta["feature_set"] == summary.feature_set
                and meta["feature_set_version"] != summary.feature_set_version
            ):
                raise ValueError(  # the gateway would send vectors this model refuses: train/serve skew
                    f"the training table gives {meta['feature_set']} version {meta['feature_set_version']}, "
                    f"the served vectors are version {summary.feature_set_version}"
                )
            if model.oof is None:
                raise ValueError("no out-of-fold probabilities (seeds must be >= 1 for a stored-session source)")
            oof = {session_ids[int(q)]: float(p) for q, p in zip(model.oof["query_id"], model.oof["p"], strict=True)}
            registry.set_out_of_fold(model_id, oof)
            model.metadata["training_set"] = {
                "source": "sessions",
                "sessions": summary.sessions,
                "users": summary.users,
            }
        else:
            summary, members = _ifllm_training_set(frame, spec.task, model, Path(spec.folder or "").is_dir())
            registry.record_training_set(model_id, summary, members)
        progress("saving", 0, 1)
        saved = model.save(models_dir / model_id)
        meta = model.metadata
        row = registry.finish(
            model_id,
            worker,
            status="succeeded",
            stage="done",
            done=1,
            total=1,
            artifact=str(saved),
            model_name=meta["model"],
            feature_set=meta["feature_set"],
            feature_set_version=meta["feature_set_version"],
            feature_mode=meta["feature_mode"],
            metrics_json=json.dumps(meta.get("scores") or {}, default=float),
            data_hash=meta["data_hash"],
            finished_at=dt.datetime.now(dt.UTC),
        )
        if row is None:
            raise Stopped("saving")
        if spec.activate:
            row = registry.activate(model_id)
        return row
    except Stopped as stop:
        current = registry.get(model_id)
        if saved is not None and (current is None or current.status in ("cancelled", "failed")):
            shutil.rmtree(saved, ignore_errors=True)  # written by a run that ended meanwhile: never served
        log.info(
            "reward model %s: stopped during %s (%s)", model_id, stop, "deleted" if current is None else current.status
        )
        return _current(registry, model_id)
    except Exception as err:
        log.exception("training reward model %s failed", model_id)
        registry.finish(
            model_id, worker, status="failed", error=f"{type(err).__name__}: {err}", finished_at=dt.datetime.now(dt.UTC)
        )
        return _current(registry, model_id)


def _current(registry: Registry, model_id: str) -> ModelRow:
    row = registry.get(model_id)
    if row is None:
        raise KeyError(f"no reward model {model_id} (deleted)")
    return row


def delete_model(registry: Registry, model_id: str, models_dir: Path) -> ModelRow:
    """Delete a model that is neither active nor unfinished (Registry.remove's 4xx otherwise): its registry rows,
    then its artifact folder (only a folder named by its id: a recorded path never removes anything else)."""
    row = registry.remove(model_id)
    folders = {models_dir / model_id}
    if row.artifact:
        folders.add(Path(row.artifact))
    for folder in folders:
        if folder.name == model_id and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    return row


class Scorer:
    """Scores feature vectors with registry models, loaded once and kept compiled."""

    #: Seconds an active-model lookup is reused (activation through this service invalidates at once).
    ACTIVE_TTL = 2.0
    #: Above this many rows scikit-learn's batch path is faster than the compiled arrays.
    COMPILED_MAX_ROWS = 100

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._models: dict[str, RewardModel] = {}
        self._rows: dict[str, tuple[float, ModelRow | None]] = {}
        self._oof: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._rows.clear()

    def forget(self, model_id: str) -> None:
        """Drop a deleted model's loaded artifact and training-set probabilities."""
        with self._lock:
            self._models.pop(model_id, None)
            self._oof.pop(model_id, None)
        self._rows.clear()

    def forget_training_sets(self) -> None:
        """Reload the out-of-fold probabilities on next use (a user's training rows were erased)."""
        with self._lock:
            self._oof.clear()

    def out_of_fold(self, model_id: str) -> dict[str, float]:
        """session id -> out-of-fold probability of the model's own training sessions (read once per model)."""
        with self._lock:
            cached = self._oof.get(model_id)
        if cached is None:
            cached = self.registry.out_of_fold(model_id)
            with self._lock:
                self._oof[model_id] = cached
        return cached

    def _active(self, mode: str) -> ModelRow | None:
        now = time.monotonic()
        cached = self._rows.get(mode)
        if cached is not None and now - cached[0] < self.ACTIVE_TTL:
            return cached[1]
        row = self.registry.active(mode)
        self._rows[mode] = (now, row)
        return row

    def model(self, mode: str, model_id: str | None) -> tuple[ModelRow, RewardModel]:
        row = self.registry.get(model_id) if model_id else self._active(mode)
        if row is None:
            if model_id:
                raise ScoreError("model_id", f"no reward model {model_id}", "not_found", 404)
            raise ScoreError("mode", f"no active {mode} reward model: train and activate one first", "no_model", 409)
        if row.status != "succeeded":
            raise ScoreError("model_id", f"reward model {row.id} is {row.status}", "not_ready", 409)
        if row.task != mode:
            raise ScoreError("mode", f"reward model {row.id} scores {row.task}, not {mode}", "mode_mismatch")
        with self._lock:
            model = self._models.get(row.id)
            if model is None:
                try:
                    model = load_artifact(row.artifact)
                except ArtifactError as err:
                    raise ScoreError("model_id", str(err), "bad_artifact", 409) from None
                _ = model.compiled  # compile now, not on the first request
                self._models[row.id] = model
        return row, model

    def population_prior(self, model_id: str, labels: Sequence[PopulationLabel]) -> PopulationPrior:
        """The model's adaptation prior re-estimated on the labels of the people it scores (empirical Bayes).

        The same step as `tacit reward predict --adapt-first-k` over its users: the habit weight may rise above the
        training users' one when many of these people label one side, and never falls below it.
        """
        row = self.registry.get(model_id)
        if row is None:
            raise ScoreError("model_id", f"no reward model {model_id}", "not_found", 404)
        _, model = self.model(row.task, model_id)
        prior = model.prior
        if labels:
            prior = prior.updated_with(
                np.array([item.p_population for item in labels], dtype=np.float64),
                np.array([item.label for item in labels], dtype=np.int64),
                np.array([item.user for item in labels]),
                # a label without a task counts alone: a name no other label has
                np.array(
                    [
                        f"{item.user}/{item.task}" if item.task is not None else f"\x00{i}"
                        for i, item in enumerate(labels)
                    ]
                ),
            )
        return PopulationPrior(
            model_id=row.id,
            habit_weight=prior.habit_weight,
            training_habit_weight=model.prior.habit_weight,
            estimated_weight=prior.estimated_weight if labels else None,
            users=len({item.user for item in labels}),
            labels=len(labels),
        )

    def score(
        self,
        vectors: Sequence[FeatureVector],
        mode: str,
        model_id: str | None = None,
        user_history: Sequence[UserLabel] = (),
        population: PopulationPrior | None = None,
    ) -> list[Score]:
        """Population probabilities, adapted to the user by their earlier labels that this model scored.

        `population`: the model's prior re-estimated on the people it scores (`population_prior`); it is used
        only when it names the model that scores, and never below that model's own habit weight.

        A session of the model's own training set gets its out-of-fold probability instead (never an in-sample
        one), unadapted, with `kind="out_of_fold"`.
        """
        row, model = self.model(mode, model_id)
        meta = model.metadata
        names = list(meta["feature_names"])
        for i, vector in enumerate(vectors):
            if vector.feature_set != meta["feature_set"] or vector.feature_set_version != meta["feature_set_version"]:
                raise ScoreError(
                    f"vectors[{i}].feature_set_version",
                    f"model {row.id} was trained on {meta['feature_set']} {meta['feature_set_version']}, "
                    f"not {vector.feature_set} {vector.feature_set_version}",
                    "feature_set_mismatch",
                    409,
                )
            if vector.names != names:
                raise ScoreError(f"vectors[{i}].names", "feature names differ from the model's", "feature_mismatch")
        X = np.asarray([v.values for v in vectors], dtype=np.float64)  # noqa: N806
        compiled = model.compiled
        if len(vectors) == 1:
            p = np.array([compiled.predict_one(X[0])])
        elif len(vectors) <= self.COMPILED_MAX_ROWS:
            p = compiled.predict_proba(X)[:, 1]
        else:  # scikit-learn's own tree code wins on big batches (bench/reward.py)
            p = model.estimator.predict_proba(X)[:, 1]
        quality, keep = self._quality(model, vectors, names, X)
        pairwise = mode == "pairwise"
        own = [h for h in user_history if h.model_id == row.id]
        adapted = p
        if own:
            history_p = np.array([h.p_population for h in own], dtype=np.float64)
            history_y = np.array([h.label for h in own], dtype=np.int64)
            prior = model.prior
            if population is not None and population.model_id == row.id:
                prior = _with_weight(prior, population.habit_weight)
            history_tasks = [h.task_id for h in own]
            adapted = np.asarray(
                prior.predict(p, prior.log_likelihood(history_p, history_y, history_tasks)), dtype=np.float64
            )
        oof = self.out_of_fold(row.id)
        held_out = np.array([v.session_id in oof for v in vectors], dtype=np.bool_)
        if held_out.any():
            p, adapted = p.copy(), adapted.copy()
            for k in np.flatnonzero(held_out):
                p[k] = adapted[k] = oof[vectors[int(k)].session_id]
        return [
            Score(
                session_id=v.session_id,
                p=float(adapted[i]),
                preferred=preferred_side("pairwise" if pairwise else "pointwise", float(adapted[i])),
                confidence=float(max(adapted[i], 1 - adapted[i])),
                abstained=not bool(keep[i]),
                abstain_reason=None
                if keep[i]
                else ("no_behaviour_samples" if v.samples <= 0 else "quality_below_gate"),
                quality=None if np.isnan(quality[i]) else float(quality[i]),
                model_id=row.id,
                demo=row.demo,
                p_population=float(p[i]),
                user_labels_used=0 if held_out[i] else len(own),
                kind="out_of_fold" if held_out[i] else "model",
            )
            for i, v in enumerate(vectors)
        ]

    @staticmethod
    def _quality(
        model: RewardModel,
        vectors: Sequence[FeatureVector],
        names: list[str],
        X: np.ndarray[Any, Any],  # noqa: N803
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """The model's session-quality gate, each vector being its own session (numpy, no pandas per call).

        Components the vector does not carry count as neutral (0.5), as in SessionQuality.
        """
        gate = model.quality
        column = {n: i for i, n in enumerate(names)}
        sides = ["left", "right"] if model.task == "pairwise" else ["left"]

        def col(name: str) -> np.ndarray[Any, Any]:
            return X[:, column[name]] if name in column else np.full(len(X), np.nan)

        onscreen = sum(col(f"gaze_onscreen_points_{s}") for s in sides)
        entries = sum(col(f"gaze_total_entries_{s}") for s in sides)
        with np.errstate(invalid="ignore", divide="ignore"):
            in_box = np.where(entries == 0, 0.0, onscreen / entries)
        samples = np.asarray([v.samples for v in vectors], dtype=np.float64)
        components = {
            "in_box": in_box,
            "head_in_box": col("camera_green_ratio"),
            "coverage": np.mean([np.clip(col(f"gaze_max_idx_ratio_{s}"), 0.0, 1.0) for s in sides], axis=0),
            "samples": np.log1p(samples),
        }
        parts = []
        for name, reference in gate.reference_.items():
            values = components[name]
            pct = np.searchsorted(reference, values, side="right") / max(len(reference), 1)
            parts.append(np.where(np.isnan(values), 0.5, pct))
        score = np.mean(parts, axis=0) if parts else np.ones(len(vectors))
        above = score >= gate.threshold_ if gate.active else np.ones(len(vectors), dtype=np.bool_)
        return score, above & (samples > 0)


def _with_weight(prior: UserPrior, habit_weight: float) -> UserPrior:
    """`prior` with a population's habit weight, never below its own (the floor of reward_svc.model.adapt)."""
    weight = min(max(habit_weight, prior.habit_weight), 0.999)
    if weight == prior.habit_weight:
        return prior
    return UserPrior(
        habit_weight=weight,
        n_users=prior.n_users,
        n_labels=prior.n_labels,
        task_correlation=prior.task_correlation,
    )
