"""Reward training from stored sessions: the selection (filters, counts; a 4xx naming the field) and its vectors.

The selection is made here, where the sessions live; the vectors come from feature_svc, the extractor that
serves, in the `all` set (the model takes its feature set's columns from them); the labels are the sessions'
explicit feedback. reward_svc gets the rows and trains them as a job; nothing is written before it accepts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence

import anyio.to_thread

from gateway.clients import DependencyError, FeatureClient
from tacit.db import PayloadPurgedError, SessionRow, Store, TrainingCandidate
from tacit.schemas import FeatureVector, Session
from tacit.schemas.problem import RequestError
from tacit.schemas.reward import (
    MIN_TRAINING_SESSIONS,
    MIN_TRAINING_USERS,
    SessionTrainingSet,
    StoredSessions,
    TrainingRow,
    TrainRewardModel,
)

__all__ = ["FEATURE_SET", "select_training", "training_set"]

logger = logging.getLogger(__name__)

#: The training table holds every served feature; the model picks its feature set's columns from it.
FEATURE_SET = "all"
_CHUNK = 100

Previous = Callable[[Session], Awaitable[Session | None]]


def _count(rows: Sequence[TrainingCandidate]) -> tuple[int, int, dict[str, int]]:
    labels = {str(k): sum(r.label == k for r in rows) for k in (0, 1)}
    return len(rows), len({r.user_id for r in rows}), labels


def check_counts(rows: Sequence[TrainingCandidate], *, left_out: str = "") -> None:
    """422 naming `source` when the labelled sessions are too few, of too few users, or of one label only."""
    n, users, labels = _count(rows)
    if n >= MIN_TRAINING_SESSIONS and users >= MIN_TRAINING_USERS and min(labels.values()) > 0:
        return
    raise RequestError(
        422,
        "too_few_sessions",
        "source",
        f"the selection holds {n} labelled sessions of {users} users (label 0: {labels['0']}, label 1: "
        f"{labels['1']}){left_out}; at least {MIN_TRAINING_SESSIONS} labelled sessions of {MIN_TRAINING_USERS} "
        "users, with both labels, are needed",
    )


def _utc(value: dt.datetime) -> dt.datetime:
    """A filter's time in UTC (a naive one is taken to be UTC already, as the store takes it)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def select_training(store: Store, spec: TrainRewardModel) -> list[TrainingCandidate]:
    """The labelled sessions the filters of `spec.source` select; a 4xx naming the first filter that leaves
    nothing (or the counts, when they are too few)."""
    source = spec.source
    if not isinstance(source, StoredSessions):
        raise TypeError("a stored-sessions source is needed")
    if source.user_ids is not None:
        unknown = sorted(set(source.user_ids) - store.sessions.users_with_sessions(source.user_ids))
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise RequestError(422, "unknown_users", "source.user_ids", f"no stored sessions of {shown}")
    rows = store.sessions.training_candidates(spec.task, source.user_ids)
    if not rows:
        of = " of these users" if source.user_ids is not None else ""
        raise RequestError(
            422, "empty_selection", "source.user_ids" if of else "task", f"no stored {spec.task} sessions{of}"
        )
    filters: list[tuple[str, Callable[[TrainingCandidate], bool], str]] = []
    if source.since is not None:
        since = _utc(source.since)
        filters.append(("source.since", lambda r: r.received_at >= since, f"received at or after {since.isoformat()}"))
    if source.until is not None:
        until = _utc(source.until)
        filters.append(("source.until", lambda r: r.received_at < until, f"received before {until.isoformat()}"))
    if not source.include_demo:
        filters.append(("source.include_demo", lambda r: not r.demo, "not recorded with a demo token"))
    if source.labelled is not None:
        wanted = source.labelled
        filters.append(("source.labelled", lambda r: (r.label is not None) == wanted, "with" if wanted else "without"))
    for field, keep, what in filters:
        before = len(rows)
        rows = [r for r in rows if keep(r)]
        if not rows:
            raise RequestError(
                422,
                "empty_selection",
                field,
                f"none of the {before} {spec.task} sessions selected so far is {what}"
                if field != "source.labelled"
                else f"none of the {before} {spec.task} sessions selected so far is {what} an explicit label",
            )
    labelled = [r for r in rows if r.label is not None]
    if not labelled:
        raise RequestError(
            422,
            "unlabelled",
            "source.labelled",
            f"none of the {len(rows)} selected sessions has an explicit label (feedback.preference); at least "
            f"{MIN_TRAINING_SESSIONS} labelled sessions are needed",
        )
    check_counts(labelled)
    return labelled


async def _vectors(
    features: FeatureClient, sessions: list[Session], mode: str, previous: Previous
) -> dict[str, FeatureVector]:
    """Vectors of `sessions` by session id (those the extractor refuses are left out)."""
    if mode == "pairwise" and sessions:
        try:
            batch = await features.vectorize_batch(sessions, FEATURE_SET)
            return {v.session_id: v for v in batch.vectors}
        except DependencyError:  # one session it refuses: one at a time, leaving that one out
            pass
    found: dict[str, FeatureVector] = {}
    for session in sessions:
        try:
            found[session.session_id] = await features.vectorize(session, FEATURE_SET, await previous(session))
        except DependencyError as err:
            logger.info("training: no features for session %s: %s", session.session_id, err.detail)
    return found


def _load(store: Store, ids: list[str]) -> tuple[list[SessionRow], list[Session], dict[str, FeatureVector]]:
    """The rows of `ids` still stored, their sessions, and the stored `all` vectors of those whose trajectories
    retention purged (a thread's work: reads and decompression)."""
    rows = store.sessions.sessions_by_id(ids)
    sessions: list[Session] = []
    stored: dict[str, FeatureVector] = {}
    for row in rows:
        try:
            sessions.append(store.sessions.load_payload(row))
        except PayloadPurgedError:
            vector = store.scores.features_of(row) if row.feature_set == FEATURE_SET else None
            if vector is not None:
                stored[row.session_id] = vector
    return rows, sessions, stored


async def training_set(
    store: Store, features: FeatureClient, spec: TrainRewardModel, previous: Previous
) -> tuple[SessionTrainingSet, set[str]]:
    """The selected labelled sessions as training rows (served `all` vectors), and their users.

    A session whose trajectories retention purged keeps its stored vector when that is of the `all` set in the
    version the extractor serves now; one with neither is left out (and counted in the 422 when too few remain).
    Raises DependencyDownError when feature_svc is down (nothing is written).
    """
    selected = await anyio.to_thread.run_sync(select_training, store, spec)
    computed: list[tuple[SessionRow, FeatureVector]] = []
    stored: list[tuple[SessionRow, FeatureVector]] = []
    for start in range(0, len(selected), _CHUNK):
        ids = [r.session_id for r in selected[start : start + _CHUNK]]
        rows, sessions, kept = await anyio.to_thread.run_sync(_load, store, ids)
        fresh = await _vectors(features, sessions, spec.task, previous)
        computed += [(row, fresh[row.session_id]) for row in rows if row.session_id in fresh]
        stored += [(row, kept[row.session_id]) for row in rows if row.session_id in kept]
    # one feature-set version for the table: the one the extractor serves now (a stored vector may be older)
    versions = [v.feature_set_version for _, v in computed or stored]
    version = max(set(versions), key=versions.count) if versions else ""
    usable = [(row, v) for row, v in computed + stored if v.feature_set_version == version]
    left_out = len(selected) - len(usable)
    by_id = {r.session_id: r for r in selected}
    check_counts(
        [by_id[row.session_id] for row, _ in usable],
        left_out=f" ({left_out} more were left out: no features could be computed)" if left_out else "",
    )
    names = usable[0][1].names
    training_rows = [
        TrainingRow(
            session_id=row.session_id,
            user_id=row.user_id,
            task_id=row.task_id,
            turn=row.turn or 0,
            label=1 if row.label else 0,
            samples=vector.samples or row.samples,
            content_hash=row.payload_sha256,
            values=list(vector.values),
        )
        for row, vector in usable
    ]
    body = SessionTrainingSet(
        spec=spec, feature_set=FEATURE_SET, feature_set_version=version, names=names, rows=training_rows
    )
    return body, {row.user_id for row, _ in usable}
