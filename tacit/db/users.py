"""A user's rows across the tables: the training sets they are in, erasure (with its record) and retention.

Erasure deletes every row of a user in one transaction, redacts their prompts from alignment evaluation answers,
and records it under a hash of the user id; retention drops old raw payloads. Both then checkpoint SQLite's WAL
so that no copy of a deleted row is left in it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable
from pathlib import Path

import msgspec
from sqlalchemy import and_, delete, func, tuple_, update
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from tacit.db.models import (
    AlignmentJobRow,
    AlignmentPairRow,
    AlignmentPairUserRow,
    Erasure,
    SessionRow,
    SessionScoreRow,
    TrainingSetRow,
    utcnow,
)
from tacit.db.uow import UnitOfWork

__all__ = ["USER_TABLES", "Users"]

#: Tables that hold rows keyed by a raw user id; erasure empties them for the user.
USER_TABLES = ("sessions", "session_scores", "training_sets", "alignment_pairs", "alignment_pair_users")


class Users:
    """What is stored per user: training-set membership, erasure and its records, payload retention."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    def record_training_set(self, model_id: str, user_ids: Iterable[str]) -> int:
        """Remember the users a reward model was trained on (added to any recorded before); rows added."""
        wanted = set(user_ids)
        with self._uow.write() as s:
            query = select(TrainingSetRow.user_id).where(TrainingSetRow.model_id == model_id)
            known: set[str] = set(s.exec(query).all())
            new = sorted(wanted - known)
            s.add_all(TrainingSetRow(model_id=model_id, user_id=user) for user in new)
            s.commit()
        return len(new)

    def count_user_rows(self, user_id: str) -> dict[str, int]:
        """Rows holding this user id, per table of USER_TABLES."""
        links = select(AlignmentPairUserRow.job_id, AlignmentPairUserRow.pair_id).where(
            AlignmentPairUserRow.user_id == user_id
        )
        pair_key = tuple_(col(AlignmentPairRow.job_id), col(AlignmentPairRow.pair_id))
        with self._uow.read() as s:
            return {
                "sessions": s.exec(select(func.count()).where(SessionRow.user_id == user_id)).one(),
                "session_scores": s.exec(select(func.count()).where(SessionScoreRow.user_id == user_id)).one(),
                "training_sets": s.exec(select(func.count()).where(TrainingSetRow.user_id == user_id)).one(),
                "alignment_pairs": s.exec(select(func.count()).where(pair_key.in_(links))).one(),
                "alignment_pair_users": s.exec(
                    select(func.count()).where(AlignmentPairUserRow.user_id == user_id)
                ).one(),
            }

    def erase_user(
        self, user_id: str, *, also_models: Iterable[str] = (), extra_counts: dict[str, int] | None = None
    ) -> Erasure:
        """Delete every row of the user in one transaction and record it (hashed id, counts, affected models).

        `also_models`, `extra_counts`: what the reward service's part of the erasure found (recorded with it).
        """
        with self._uow.write() as s:
            recorded = set(s.exec(select(TrainingSetRow.model_id).where(TrainingSetRow.user_id == user_id)))
            models = sorted(recorded | set(also_models))
            deleted = {
                "sessions": s.exec(delete(SessionRow).where(col(SessionRow.user_id) == user_id)).rowcount,
                "session_scores": s.exec(
                    delete(SessionScoreRow).where(col(SessionScoreRow.user_id) == user_id)
                ).rowcount,
                "training_sets": s.exec(delete(TrainingSetRow).where(col(TrainingSetRow.user_id) == user_id)).rowcount,
            }
            # Alignment-job snapshots: the pairs built from the user's sessions (before their user links go).
            links = select(AlignmentPairUserRow.job_id, AlignmentPairUserRow.pair_id).where(
                AlignmentPairUserRow.user_id == user_id
            )
            pair_key = tuple_(col(AlignmentPairRow.job_id), col(AlignmentPairRow.pair_id))
            # The user's prompts also sit in the evaluation answers of the jobs trained on them: redact those files
            # before the pairs (the only record of which prompts were theirs) are deleted.
            prompts: dict[str, set[str]] = {}
            for job_id, pair in s.exec(
                select(AlignmentPairRow.job_id, AlignmentPairRow.pair).where(pair_key.in_(links))
            ).all():
                prompts.setdefault(job_id, set()).add(str(pair.get("prompt", "")))
            deleted["evaluation_answers"] = self._redact_answers(s, prompts)
            deleted["alignment_pairs"] = s.exec(delete(AlignmentPairRow).where(pair_key.in_(links))).rowcount
            # Every link of those pairs goes with them: a pair merged from several users' sessions is gone for all.
            link_key = tuple_(col(AlignmentPairUserRow.job_id), col(AlignmentPairUserRow.pair_id))
            deleted["alignment_pair_users"] = s.exec(delete(AlignmentPairUserRow).where(link_key.in_(links))).rowcount
            deleted.update(extra_counts or {})
            record = Erasure(
                id=uuid.uuid4().hex,
                user_hash=hashlib.sha256(user_id.encode()).hexdigest(),
                rows_deleted=deleted,
                models_affected=models,
            )
            s.add(record)
            s.commit()
        self._uow.checkpoint()
        return record

    @staticmethod
    def _redact_answers(s: DbSession, prompts: dict[str, set[str]]) -> int:
        """Rewrite each job's evaluation/answers.jsonl without the lines of these prompts; the lines removed.

        A file written by a worker on another host is not reachable here; it is left and the count says so (0).
        The rewrite goes through a temporary file and an atomic rename, so a reader never sees half a file.
        """
        removed = 0
        if not prompts:
            return 0
        rows = s.exec(
            select(AlignmentJobRow.id, AlignmentJobRow.result).where(col(AlignmentJobRow.id).in_(list(prompts)))
        )
        for job_id, result in rows.all():
            path_text = ((result or {}).get("evaluation") or {}).get("answers_path")
            if not path_text:
                continue
            path = Path(path_text)
            if not path.is_file():
                continue
            kept: list[bytes] = []
            with path.open("rb") as f:
                for line in f:
                    try:
                        prompt = msgspec.json.decode(line).get("prompt")
                    except msgspec.DecodeError:
                        prompt = None
                    if prompt in prompts[job_id]:
                        removed += 1
                    else:
                        kept.append(line)
            tmp = path.with_name(path.name + ".redacting")
            tmp.write_bytes(b"".join(kept))
            tmp.replace(path)
        return removed

    def erasures(self, user_id: str | None = None) -> list[Erasure]:
        """Erasure records, newest first; only those of `user_id` (matched by its hash) when given."""
        query = select(Erasure).order_by(col(Erasure.at).desc(), col(Erasure.id))
        if user_id is not None:
            query = query.where(Erasure.user_hash == hashlib.sha256(user_id.encode()).hexdigest())
        with self._uow.read() as s:
            return list(s.exec(query))

    def purge_payloads(self, older_than: dt.timedelta) -> int:
        """Drop the raw trajectories of sessions received before now - `older_than`; rows purged.

        Features and scores stay. A session still pending without features keeps its payload (it is
        needed to score it).
        """
        cutoff = utcnow() - older_than
        unscoreable = and_(col(SessionRow.score_status) == "pending", col(SessionRow.features).is_(None))
        statement = (
            update(SessionRow)
            .where(col(SessionRow.received_at) < cutoff, col(SessionRow.payload).is_not(None), ~unscoreable)
            .values(payload=None)
        )
        with self._uow.write() as s:
            count = s.exec(statement).rowcount
            s.commit()
        if count:
            self._uow.checkpoint()
        return int(count)
