"""The names of each (feature set, version), stored once (`feature_names`) and cached; a session row keeps values."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError

from tacit.db.models import FeatureNamesRow, SessionRow
from tacit.db.uow import UnitOfWork
from tacit.schemas.features import FeatureVector

__all__ = ["FeatureNames", "checked_values"]


def checked_values(names: Sequence[str], values: Sequence[float]) -> list[float]:
    """The values as finite floats, one per name; ValueError otherwise."""
    if len(names) != len(values):
        raise ValueError(f"{len(names)} names but {len(values)} values")
    floats = [float(v) for v in values]
    if not all(math.isfinite(v) for v in floats):
        raise ValueError("feature values must be finite")
    return floats


class FeatureNames:
    """The stored names of each feature set version, cached per process (they never change once stored)."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        self._names: dict[tuple[str, str], tuple[str, ...]] = {}
        self._names_lock = threading.Lock()

    def ensure(self, feature_set: str, version: str, names: Sequence[str]) -> None:
        """Store the names of a (feature set, version) on first use; ValueError when it is stored with others.

        Its own short write, before the transaction that stores the values.
        """
        key, wanted = (feature_set, version), tuple(names)
        with self._names_lock:
            cached = self._names.get(key)
        if cached is None:
            row: FeatureNamesRow | None = None
            for _ in range(3):  # a concurrent first writer may win the insert; then compare with it
                try:
                    with self._uow.write() as s:
                        row = s.get(FeatureNamesRow, key)
                        if row is None:
                            row = FeatureNamesRow(feature_set=feature_set, version=version, names=list(wanted))
                            s.add(row)
                            s.commit()
                    break
                except IntegrityError:
                    row = None
            if row is None:
                raise RuntimeError(f"could not store the names of feature set {feature_set!r} version {version!r}")
            cached = tuple(row.names)
            with self._names_lock:
                self._names[key] = cached
        if cached != wanted:
            raise ValueError(f"feature set {feature_set!r} version {version!r} is stored with other names")

    def stored(self, feature_set: str, version: str) -> list[str] | None:
        """The names of a stored (feature set, version), in value order (read from the database)."""
        with self._uow.read() as s:
            row = s.get(FeatureNamesRow, (feature_set, version))
            return None if row is None else list(row.names)

    def vector_of(self, row: SessionRow) -> FeatureVector | None:
        """The stored feature vector of a row, with its names; None before features were set."""
        if row.features is None or row.feature_set is None or row.feature_set_version is None:
            return None
        names = self._names.get((row.feature_set, row.feature_set_version))
        if names is None:
            stored = self.stored(row.feature_set, row.feature_set_version)
            if stored is None:
                return None
            names = tuple(stored)
            with self._names_lock:
                self._names[(row.feature_set, row.feature_set_version)] = names
        return FeatureVector(
            session_id=row.session_id,
            feature_set=row.feature_set,
            feature_set_version=row.feature_set_version,
            names=list(names),
            values=list(row.features),
            samples=row.samples,
        )
