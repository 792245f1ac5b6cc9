"""Sessions -> FeatureVectors (the feature service's pure entry points)."""

from __future__ import annotations

from collections.abc import Sequence

from feature_svc.features.compute import compute, from_session, select
from feature_svc.features.sets import get_feature_set
from tacit.schemas import FeatureVector, FeatureVectors, Session
from tacit.schemas.problem import RequestError

__all__ = ["FeatureError", "vectorize", "vectorize_batch"]


class FeatureError(RequestError, ValueError):
    """A feature request that cannot be served (422); `field` names the offending request field."""

    def __init__(self, field: str, detail: str, code: str = "unavailable") -> None:
        super().__init__(422, code, field, detail, message=f"{field}: {detail}")


def _first_turn(session: Session) -> bool:
    """No earlier answer to compare with: turn 0, or a pointwise session without a previous response."""
    return session.turn == 0 or (session.mode == "pointwise" and session.previous_response is None)


def _vector(session: Session, feature_set: str, previous: Session | None) -> FeatureVector:
    try:
        fs = get_feature_set(feature_set)
    except KeyError as err:
        raise FeatureError("feature_set", str(err.args[0]), "unknown_feature_set") from None
    obs = from_session(session)
    values = compute(obs)
    prev_values = compute(from_session(previous)) if previous is not None else None
    try:
        names, vector = select(values, fs, session.mode, prev_values, first_turn=_first_turn(session))
    except KeyError as err:
        message = str(err.args[0])
        if "previous" in message:
            raise FeatureError("previous", f"{feature_set}: {message}", "needs_previous") from None
        raise FeatureError("feature_set", f"{feature_set}: {message}", "unavailable") from None
    return FeatureVector(
        session_id=session.session_id,
        feature_set=fs.id,
        feature_set_version=fs.version(session.mode, names),
        names=names,
        values=vector.tolist(),
        samples=obs.samples,
    )


def vectorize(session: Session, feature_set: str = "all", previous: Session | None = None) -> FeatureVector:
    """Feature vector of one validated session (`previous`: the conversation's preceding question)."""
    return _vector(session, feature_set, previous)


def vectorize_batch(sessions: Sequence[Session], feature_set: str = "all") -> FeatureVectors:
    """Vectors for many sessions of one mode; `prev_*` features come from the batch's preceding turn."""
    modes = {s.mode for s in sessions}
    if len(modes) > 1:
        raise FeatureError("sessions", "a batch must hold sessions of one mode", "mixed_modes")
    by_turn = {(s.user_id, s.task_id, s.turn): s for s in sessions if s.turn is not None}
    vectors = []
    for i, session in enumerate(sessions):
        previous = None
        if session.turn is not None and session.turn > 0:
            previous = by_turn.get((session.user_id, session.task_id, session.turn - 1))
        try:
            vectors.append(_vector(session, feature_set, previous))
        except FeatureError as err:
            # Set-level problems name the request's feature_set; a missing previous turn names the session.
            field = "feature_set" if err.field == "feature_set" else f"sessions[{i}]"
            raise FeatureError(field, err.detail, err.code) from None
    first = vectors[0]
    return FeatureVectors(
        feature_set=first.feature_set,
        feature_set_version=first.feature_set_version,
        names=first.names,
        vectors=vectors,
    )
