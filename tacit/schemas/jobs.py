"""The one vocabulary of job states, shared by every kind of job: IFLLM imports and rescoring (the gateway's
`jobs`), reward-model training runs, alignment jobs and judge batches."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["FINISHED", "JOB_STATUSES", "JobStatus"]

#: queued -> running -> succeeded | failed | cancelled.
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
#: The states a job never leaves.
FINISHED = ("succeeded", "failed", "cancelled")
