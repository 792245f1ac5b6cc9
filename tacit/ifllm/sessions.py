"""IFLLM questions as wire Sessions: what a client would have POSTed had it recorded the question itself.

A question's streams are the rows its segment owns in each rel file (`Recording.segments()`). A few raw
values do not fit the contract and are repaired, never invented: character indices outside the displayed
answer become -1, samples without a finite page time are dropped, and an epoch column with a gap is left
out for that stream. `ConversionCounts` says how often each happened.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported where used at run time: the schemas pull in numpy, and `tacit --help` must not pay for it.
    import numpy.typing as npt

    from tacit.ifllm.reader import Dataset, Recording, Segment, TaskKey
    from tacit.ifllm.rel import RelFile
    from tacit.ifllm.tables import Query
    from tacit.schemas.session import Feedback, Session, Stream

__all__ = [
    "ConversionCounts",
    "add_sessions_command",
    "query_to_session",
    "recorded_session",
    "segment_to_session",
    "session_for_query",
    "sessions_command",
    "sessions_from_ifllm",
    "task_sessions",
]

#: Longest window string the contract accepts.
MAX_WINDOW_CHARS = 64
_PAIRWISE = {1: "left", 2: "right"}
_POINTWISE = {1: "current", 0: "previous"}


@dataclass(slots=True)
class ConversionCounts:
    """How many raw values were repaired to fit the contract (summed over the streams converted)."""

    streams: int = 0
    samples: int = 0
    clamped_char_index: int = 0
    """Character indices outside [-1, len(text)] set to -1."""
    dropped_samples: int = 0
    """Samples without a finite, non-negative page time (or with non-finite x, y)."""
    dropped_epoch_columns: int = 0
    """Streams sent without `t_epoch_ms` because some sample had none."""
    truncated_windows: int = 0


def _stream(rel: RelFile, rows: slice, text: str, *, gaze: bool, counts: ConversionCounts) -> Stream:
    import numpy as np

    from tacit.schemas.session import Stream

    x, y, t = rel.x[rows], rel.y[rows], rel.t[rows]
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(t) & (t >= 0)
    all_kept = bool(keep.all())
    if not all_kept:
        counts.dropped_samples += int((~keep).sum())
        x, y, t = x[keep], y[keep], t[keep]

    def take(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return values if all_kept else values[keep]

    idx = take(rel.idx[rows])
    outside = (idx < -1) | (idx > len(text))
    if outside.any():
        counts.clamped_char_index += int(outside.sum())
        idx = np.where(outside, -1, idx)
    windows = take(rel.window_array()[rows]).tolist()
    if any(len(w) > MAX_WINDOW_CHARS for w in windows):
        counts.truncated_windows += sum(len(w) > MAX_WINDOW_CHARS for w in windows)
        windows = [w[:MAX_WINDOW_CHARS] for w in windows]
    epoch = take(rel.epoch[rows])
    has_epoch = bool(np.isfinite(epoch).all())
    if not has_epoch:
        counts.dropped_epoch_columns += 1
    reload_at = np.flatnonzero(np.diff(t) < 0) + 1
    counts.streams += 1
    counts.samples += int(t.size)
    return Stream(
        x=x.tolist(),
        y=y.tolist(),
        char_index=idx.tolist(),
        window=windows,
        t_page_ms=t.tolist(),
        t_epoch_ms=epoch.tolist() if has_epoch else None,
        head_in_box=take(rel.head[rows]).astype(np.int64).tolist() if gaze else None,
        reload_at=reload_at.tolist(),
    )


def _likert(value: int | None) -> int | None:
    return value if value is not None and 1 <= value <= 5 else None


def _feedback(query: Query, mode: str, previous: str | None) -> Feedback | None:
    from tacit.schemas.session import Feedback

    likert = [_likert(query.likert_1)]
    if mode == "pairwise":
        likert.append(_likert(query.likert_2))
        preference = _PAIRWISE.get(query.preference) if query.preference is not None else None
    else:
        # "current/previous" only means something when there is a previous answer to compare with.
        preference = _POINTWISE.get(query.preference) if query.preference is not None and previous else None
    while likert and likert[-1] is None:
        likert.pop()
    if preference is None and not likert:
        return None
    return Feedback(preference=preference, likert=likert)  # type: ignore[arg-type]


def _model(name: str | None) -> str | None:
    from tacit.schemas.session import MAX_ID_CHARS

    return name[:MAX_ID_CHARS] if name else None


def query_to_session(
    query: Query,
    *,
    turn: int,
    previous: Query | None,
    recording: Recording | None = None,
    rows: dict[tuple[str, str], slice] | None = None,
    calibration_accuracy: float | None = None,
    counts: ConversionCounts | None = None,
) -> Session:
    """One question as a Session; streams from `recording` rows when given (none for unrecorded questions)."""
    from tacit.schemas.session import Consent, Response, Session

    counts = counts if counts is not None else ConversionCounts()
    mode = query.mode
    texts = [query.response_1] + ([query.response_2 or ""] if mode == "pairwise" else [])
    models = [query.model_1] + ([query.model_2] if mode == "pairwise" else [])
    responses = []
    for side, text, model in zip(("left", "right"), texts, models, strict=False):
        streams: dict[str, Stream] = {}
        if recording is not None and rows is not None:
            for modality in ("mouse", "gaze"):
                key = (side, modality)
                if key in recording.files and key in rows:
                    streams[modality] = _stream(
                        recording.files[key], rows[key], text, gaze=modality == "gaze", counts=counts
                    )
        responses.append(Response(text=text, model=_model(model), **streams))
    previous_response = previous.response_1 if mode == "pointwise" and previous is not None else None
    return Session(
        session_id=f"ifllm-{query.query_id}",
        user_id=query.user_id,
        task_id=query.task_id,
        query_id=str(query.query_id),
        mode=mode,  # type: ignore[arg-type]
        query=query.query,
        responses=responses,
        previous_response=previous_response,
        turn=turn,
        # IFLLM workers consented to mouse, gaze and webcam recording before their first task.
        consent=Consent(mouse=True, gaze=True, camera=True),
        feedback=_feedback(query, mode, previous_response),
        calibration_accuracy=calibration_accuracy,
    )


def segment_to_session(
    segment: Segment, *, calibration_accuracy: float | None = None, counts: ConversionCounts | None = None
) -> Session:
    """An IFLLM question segment as a valid wire Session (`counts` collects the repairs made)."""
    rec = segment.recording
    return query_to_session(
        segment.query,
        turn=segment.turn,
        previous=segment.previous,
        recording=rec,
        rows=segment.rows,
        calibration_accuracy=calibration_accuracy,
        counts=counts,
    )


def _accuracies(dataset: Dataset) -> dict[tuple[str, str], float]:
    return {
        (t.user_id, t.task_id): t.accuracy for t in dataset.tasks if t.accuracy is not None and 0 <= t.accuracy <= 100
    }


def recorded_session(
    dataset: Dataset,
    segment: Segment,
    *,
    accuracies: dict[TaskKey, float] | None = None,
    counts: ConversionCounts | None = None,
) -> Session:
    """A recorded question of `dataset` as a Session, with its task's calibration accuracy.

    The one builder behind `tacit sessions from-ifllm`, `sessions_from_ifllm` and the gateway's import, so all of
    them build the same bytes for a question (`accuracies`: `dataset`'s, when the caller already has them).
    """
    accuracy = (accuracies if accuracies is not None else _accuracies(dataset)).get(
        (segment.recording.user_id, segment.recording.task_id)
    )
    return segment_to_session(segment, calibration_accuracy=accuracy, counts=counts)


def task_sessions(
    dataset: Dataset, key: TaskKey, folder: Path | None = None, *, counts: ConversionCounts | None = None
) -> list[Session]:
    """Every question of one behaviour folder as a Session (`recorded_session`), in asking order."""
    accuracies = _accuracies(dataset)
    return [
        recorded_session(dataset, segment, accuracies=accuracies, counts=counts)
        for segment in dataset.load(key, folder).segments()
    ]


def sessions_from_ifllm(
    data_dir: Path | str, *, unrecorded: bool = False, counts: ConversionCounts | None = None
) -> Iterator[Session]:
    """Every question with a behaviour folder as a Session, task by task (`unrecorded`: the others too, no streams)."""
    from tacit.ifllm.reader import Dataset

    dataset = Dataset(data_dir)
    accuracies = _accuracies(dataset)
    recorded = set()
    for rec in dataset.recordings():
        recorded.add((rec.user_id, rec.task_id))
        for segment in rec.segments():
            yield recorded_session(dataset, segment, accuracies=accuracies, counts=counts)
    if unrecorded:
        for key, queries in dataset.by_task.items():
            if key in recorded:
                continue
            for turn, query in enumerate(queries):
                previous = queries[turn - 1] if turn else None
                yield query_to_session(query, turn=turn, previous=previous, calibration_accuracy=accuracies.get(key))


def session_for_query(
    data_dir: Path | str | Dataset, query_id: int, *, counts: ConversionCounts | None = None
) -> Session:
    """The Session of one IFLLM question; KeyError when the folder has no such question."""
    from tacit.ifllm.reader import Dataset

    dataset = data_dir if isinstance(data_dir, Dataset) else Dataset(data_dir)
    query = next((q for q in dataset.queries if q.query_id == query_id), None)
    if query is None:
        raise KeyError(f"no question with query_ID {query_id} in {dataset.root}")
    key = (query.user_id, query.task_id)
    accuracies = _accuracies(dataset)
    folder = dataset.root / "user_behavior" / key[0] / key[1]
    if any(k == key for k, _ in dataset.task_dirs()):
        for segment in dataset.load(key, folder).segments():
            if segment.query.query_id == query_id:
                return recorded_session(dataset, segment, accuracies=accuracies, counts=counts)
    queries = dataset.by_task[key]
    turn = next(k for k, q in enumerate(queries) if q.query_id == query_id)
    return query_to_session(
        query, turn=turn, previous=queries[turn - 1] if turn else None, calibration_accuracy=accuracies.get(key)
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="unpacked IFLLM folder")
    parser.add_argument("--query-id", type=int, required=True, help="the question's query_ID")


def _from_ifllm(args: argparse.Namespace) -> int:
    counts = ConversionCounts()
    try:
        session = session_for_query(args.data, args.query_id, counts=counts)
    except FileNotFoundError as err:
        print(f"tacit: {err}", file=sys.stderr)
        return 2
    except KeyError as err:
        print(f"tacit: {err.args[0]}", file=sys.stderr)
        return 2
    import msgspec

    sys.stdout.buffer.write(msgspec.json.encode(session) + b"\n")
    sys.stdout.flush()
    if session.responses[0].mouse is None:
        print(f"note: question {args.query_id} has no behaviour folder: the session has no streams", file=sys.stderr)
    if counts.clamped_char_index or counts.dropped_samples or counts.dropped_epoch_columns:
        print(
            f"note: {counts.clamped_char_index} character indices outside the answer set to -1, "
            f"{counts.dropped_samples} samples without a usable time dropped, "
            f"{counts.dropped_epoch_columns} stream(s) sent without t_epoch_ms",
            file=sys.stderr,
        )
    return 0


def add_sessions_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `tacit sessions from-ifllm` on the CLI's subparsers."""
    sessions = sub.add_parser("sessions", help="reading sessions").add_subparsers(dest="action", required=True)
    from_ifllm = sessions.add_parser("from-ifllm", help="print the POST /v1/sessions body for one IFLLM question")
    _add_arguments(from_ifllm)
    from_ifllm.set_defaults(func=_from_ifllm)


def sessions_command(argv: Sequence[str] | None = None) -> int:
    """`tacit sessions from-ifllm --data DIR --query-id N` (argv: the words after `sessions`)."""
    parser = argparse.ArgumentParser(prog="tacit")
    add_sessions_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sessions", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(sessions_command())
