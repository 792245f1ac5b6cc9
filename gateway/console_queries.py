"""The console's read queries: sessions filtered by user, model, abstention, agreement with the explicit label and
date, in keyset pages; one model's score histogram and reliability bins.

Read-only. Every function takes an open database session (`s`); `read_session` is the one place that opens one, so
the console can move to the gateway's unit of work by changing that function only.

A model "agrees" with a session's explicit label when its choice (p >= 0.5, i.e. right / current) is the label, as
in `tacit.db.scores.Scores.compare_models`; a session without a label is `no_label` whatever its score.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from sqlalchemy import Table, and_, case, func, or_, select
from sqlalchemy.orm import Session as DbSession

from tacit.db import Store
from tacit.db.models import SessionRow, SessionScoreRow
from tacit.db.sessions import decode_cursor, encode_cursor

__all__ = [
    "ABSTAINED",
    "AGREEMENTS",
    "Bin",
    "ConsoleSession",
    "ConsoleSessionPage",
    "ReliabilityBin",
    "ScoreDistribution",
    "SessionFilter",
    "distribution",
    "read_session",
    "sessions_page",
]

Agreement = Literal["agree", "disagree", "no_label"]
AGREEMENTS: tuple[str, ...] = ("agree", "disagree", "no_label")
ABSTAINED: tuple[str, ...] = ("true", "false")

_SESSIONS: Table = SessionRow.__table__  # type: ignore[attr-defined]
_SCORES: Table = SessionScoreRow.__table__  # type: ignore[attr-defined]


def read_session(store: Store) -> AbstractContextManager[DbSession]:
    """A read-only database session: the unit of work's `read()`."""
    return store.uow.read()


# --- wire types ----------------------------------------------------------------------------------------------


class ConsoleSession(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the console's session table: the session and one score of it."""

    session_id: str
    user_id: str
    task_id: str
    mode: str
    turn: int | None
    received_at: dt.datetime
    demo: bool
    """Recorded with a demo browser token."""
    label: int | None
    """The explicit label: pairwise right=1 / left=0, pointwise current=1 / previous=0; None without one."""
    score_status: str
    """`scored`, `pending` or `failed` (of the session's current score; `scored` when filtered by a model)."""
    model_id: str | None
    """The model whose score the row shows: the filtered model, else the one that gave the current score."""
    p: float | None
    """That model's P(right) / P(current)."""
    preferred: str | None
    confidence: float | None
    abstained: bool | None
    """The model was not confident enough to be acted on (its `preferred` is still its best guess)."""
    score_kind: str | None
    """`model`, or `out_of_fold` for a session of the model's own training set."""
    agreement: Agreement | None
    """The model's choice against the explicit label: `no_label` without a label, None for a labelled session
    that has no score yet."""


class ConsoleSessionPage(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/console/sessions: newest first; `next_cursor` is None on the last page."""

    items: list[ConsoleSession]
    next_cursor: str | None


class Bin(msgspec.Struct, frozen=True, kw_only=True):
    """Sessions whose p lies in [lo, hi) (the last bin includes 1)."""

    lo: float
    hi: float
    count: int


class ReliabilityBin(msgspec.Struct, frozen=True, kw_only=True):
    """Labelled sessions whose p lies in [lo, hi): the mean predicted probability against the observed frequency."""

    lo: float
    hi: float
    labelled: int
    mean_p: float | None
    """Mean predicted P(label = 1) in the bin; None when it holds no labelled session."""
    observed: float | None
    """Share of the bin's labelled sessions whose label is 1; a calibrated model has observed close to mean_p."""


class ScoreDistribution(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/console/models/{id}/distribution: one model's scores, histogram and reliability bins."""

    model_id: str
    common_with: str | None
    """Only the sessions this other model scored too (so two models are compared on the same sessions)."""
    scored: int
    abstained: int
    labelled: int
    agree: int
    """Labelled sessions whose label is the model's choice (p >= 0.5 means label 1)."""
    disagree: int
    no_label: int
    accuracy: float | None
    """agree / labelled; None without labelled sessions."""
    accuracy_kept: float | None
    """Accuracy on the labelled sessions the model did not abstain on."""
    brier: float | None
    """Mean (p - label)^2 over the labelled sessions (lower is better)."""
    histogram: list[Bin]
    reliability: list[ReliabilityBin]


# --- sessions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFilter:
    user_id: str | None = None
    model_id: str | None = None
    mode: str | None = None
    abstained: bool | None = None
    agreement: str | None = None
    since: dt.datetime | None = None
    """Received at or after."""
    until: dt.datetime | None = None
    """Received before."""


def _choice(p: Any) -> Any:
    """The model's choice as a label (1 = right / current)."""
    return case((p >= 0.5, 1), else_=0)


def _agreement(p: Any, label: Any) -> Any:
    return case(
        (label.is_(None), "no_label"),
        (p.is_(None), None),
        (_choice(p) == label, "agree"),
        else_="disagree",
    )


def sessions_page(s: DbSession, where: SessionFilter, *, limit: int, cursor: str | None = None) -> ConsoleSessionPage:
    """Sessions matching `where`, newest first by (received_at, session_id). Raises InvalidCursorError."""
    t = _SESSIONS.c
    # one model's own score columns, or the session's current score masked unless scored: either way column exprs
    source: Any
    p: Any
    model: Any
    preferred: Any
    confidence: Any
    abstained: Any
    kind: Any
    if where.model_id is not None:
        sc = _SCORES.c
        source = _SESSIONS.join(_SCORES, and_(sc.session_id == t.session_id, sc.model_id == where.model_id))
        p, model, preferred, confidence, abstained, kind = (
            sc.p,
            sc.model_id,
            sc.preferred,
            sc.confidence,
            sc.abstained,
            sc.score_kind,
        )
        scored = True  # a model's own row is always a score
    else:
        source = _SESSIONS
        scored = False
        is_scored = t.score_status == "scored"
        p = case((is_scored, t.p), else_=None)
        model = case((is_scored, t.model_id), else_=None)
        preferred = case((is_scored, t.preferred), else_=None)
        confidence = case((is_scored, t.confidence), else_=None)
        abstained = case((is_scored, t.abstained), else_=None)
        kind = case((is_scored, t.score_kind), else_=None)
    agreement = _agreement(p, t.label)
    query = select(
        t.session_id,
        t.user_id,
        t.task_id,
        t.mode,
        t.turn,
        t.received_at,
        t.demo,
        t.label,
        t.score_status,
        model,
        p,
        preferred,
        confidence,
        abstained,
        kind,
        agreement,
    ).select_from(source)
    if where.user_id is not None:
        query = query.where(t.user_id == where.user_id)
    if where.mode is not None:
        query = query.where(t.mode == where.mode)
    if where.since is not None:
        query = query.where(t.received_at >= where.since)
    if where.until is not None:
        query = query.where(t.received_at < where.until)
    if where.abstained is not None:
        query = query.where(abstained.is_(True) if where.abstained else abstained.is_(False))
    if where.agreement == "no_label":
        query = query.where(t.label.is_(None))
    elif where.agreement is not None:
        query = query.where(t.label.is_not(None), p.is_not(None))
        query = query.where((_choice(p) == t.label) if where.agreement == "agree" else (_choice(p) != t.label))
    if cursor is not None:
        at, sid = decode_cursor(cursor)
        query = query.where(or_(t.received_at < at, and_(t.received_at == at, t.session_id < sid)))
    query = query.order_by(t.received_at.desc(), t.session_id.desc()).limit(limit + 1)
    rows = list(s.execute(query))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        ConsoleSession(
            session_id=r[0],
            user_id=r[1],
            task_id=r[2],
            mode=r[3],
            turn=r[4],
            received_at=r[5],  # UTCDateTime: aware UTC on both backends
            demo=bool(r[6]),
            label=r[7],
            score_status="scored" if scored else r[8],
            model_id=r[9],
            p=r[10],
            preferred=r[11],
            confidence=r[12],
            abstained=None if r[13] is None else bool(r[13]),
            score_kind=r[14],
            agreement=r[15],
        )
        for r in rows
    ]
    next_cursor = encode_cursor(items[-1].received_at, items[-1].session_id) if more and items else None
    return ConsoleSessionPage(items=items, next_cursor=next_cursor)


# --- one model's distribution --------------------------------------------------------------------------------


def _bin_of(p: Any, bins: int) -> Any:
    """The bin index of p in `bins` equal bins over [0, 1] (the same on SQLite and PostgreSQL: no float casts)."""
    return case(*((p < (i + 1) / bins, i) for i in range(bins - 1)), else_=bins - 1)


def distribution(s: DbSession, model_id: str, *, bins: int = 10, common_with: str | None = None) -> ScoreDistribution:
    """`model_id`'s scores: counts, agreement with explicit labels, histogram and reliability bins."""
    sc = _SCORES.alias("sc")
    t = _SESSIONS.c
    source: Any = sc.join(_SESSIONS, t.session_id == sc.c.session_id)
    if common_with is not None:
        other = _SCORES.alias("other")
        source = source.join(other, and_(other.c.session_id == sc.c.session_id, other.c.model_id == common_with))
    labelled = t.label.is_not(None)

    def count(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    index = _bin_of(sc.c.p, bins).label("bin")
    per_bin = (
        select(
            index,
            func.count(),
            count(labelled),
            func.avg(case((labelled, sc.c.p), else_=None)),
            func.avg(case((labelled, t.label), else_=None)),
        )
        .select_from(source)
        .where(sc.c.model_id == model_id)
        .group_by(index)
    )
    found = {int(r[0]): r for r in s.execute(per_bin)}
    agree = count(and_(labelled, _choice(sc.c.p) == t.label))
    totals = (
        select(
            func.count(),
            count(sc.c.abstained.is_(True)),
            count(labelled),
            agree,
            count(and_(labelled, sc.c.abstained.is_(False))),
            count(and_(labelled, sc.c.abstained.is_(False), _choice(sc.c.p) == t.label)),
            func.avg(case((labelled, (sc.c.p - t.label) * (sc.c.p - t.label)), else_=None)),
        )
        .select_from(source)
        .where(sc.c.model_id == model_id)
    )
    n, n_abstained, n_labelled, n_agree, n_kept, n_kept_agree, brier = s.execute(totals).one()
    histogram, reliability = [], []
    for i in range(bins):
        lo, hi = round(i / bins, 6), round((i + 1) / bins, 6)
        row = found.get(i)
        histogram.append(Bin(lo=lo, hi=hi, count=int(row[1]) if row else 0))
        in_bin = int(row[2]) if row else 0
        reliability.append(
            ReliabilityBin(
                lo=lo,
                hi=hi,
                labelled=in_bin,
                mean_p=float(row[3]) if row and in_bin else None,
                observed=float(row[4]) if row and in_bin else None,
            )
        )
    n, n_labelled, n_agree = int(n), int(n_labelled), int(n_agree)
    return ScoreDistribution(
        model_id=model_id,
        common_with=common_with,
        scored=n,
        abstained=int(n_abstained),
        labelled=n_labelled,
        agree=n_agree,
        disagree=n_labelled - n_agree,
        no_label=n - n_labelled,
        accuracy=n_agree / n_labelled if n_labelled else None,
        accuracy_kept=int(n_kept_agree) / int(n_kept) if n_kept else None,
        brier=float(brier) if brier is not None else None,
        histogram=histogram,
        reliability=reliability,
    )
