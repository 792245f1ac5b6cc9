"""A demo feature table from simulated readers (tacit.simulate), for a first model before real data exists.

Models trained on it are marked `demo` wherever they show: simulated readers say nothing about people, and
no accuracy from them is ever reported as a result.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pyarrow.parquet as pq

from feature_svc.extract import table_from_sessions
from tacit.simulate import simulate_session

__all__ = ["demo_sessions", "write_demo_table"]


def demo_sessions(n: int = 240, *, seed: int = 0, samples: int = 600, users: int = 24) -> list:  # type: ignore[type-arg]
    """`n` pairwise sessions from `users` simulated readers, balanced left/right preferences."""
    sessions = []
    for i in range(n):
        session = simulate_session(
            seed=seed * 100_003 + i,
            samples=samples,
            prefer="left" if i % 2 else "right",
            user_id=f"sim-reader-{i % users:03d}",
            task_id=f"sim-task-{i // 3:04d}",
            session_id=f"sim-{seed}-{i}",
        )
        sessions.append(msgspec.structs.replace(session, turn=i % 3))
    return sessions


def write_demo_table(path: Path | str, n: int = 240, *, seed: int = 0) -> Path:
    """Write the demo table as parquet (what `TrainRewardModel.data` can point at)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table_from_sessions(demo_sessions(n, seed=seed)), path)
    return path
