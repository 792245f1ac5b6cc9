"""The one vocabulary of job states, shared by every kind of job: IFLLM imports and rescoring (the gateway's
`jobs`), reward-model training runs, alignment jobs and judge batches; and the one progress shape.

`Progress` is a reward training's `progress`; the gateway's jobs (`JobInfo`) and judge batches (`BatchJob`) carry
the same `stage` / `done` / `total` (or `done` / `total`) at their top level, and an alignment job's
`AlignmentProgress` counts optimizer `step`s with its training figures: moving those under one struct would change
bodies clients read, so they keep their fields.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

__all__ = ["FINISHED", "JOB_STATUSES", "JobStatus", "Progress"]

#: queued -> running -> succeeded | failed | cancelled.
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
#: The states a job never leaves.
FINISHED = ("succeeded", "failed", "cancelled")


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """How far a job is: the `stage` it is in and `done` of `total` units of work in it."""

    stage: str
    done: int
    total: int
