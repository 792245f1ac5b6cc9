"""IFLLM imports as Celery tasks on the `cpu` queue: the routes that start, read and cancel one, and the task.

`POST /v1/imports/ifllm` makes a job row and sends the task by name; a cpu worker stores every question of the
folder as a session (pending score: the gateway's rescoring loop scores it), one task folder at a time, with its
progress (`done` of `total` folders) in the row. `POST /v1/imports/{id}/cancel` marks the job `cancelled`; the
task sees it between task folders and stops.

Delivery is at least once (acks late, requeued when the worker is lost), and the job row makes a redelivery
harmless: a finished or cancelled job exits at once, an interrupted one resumes after the folders it recorded as
done (in the folders' sorted order), and sessions are stored idempotently, so a folder stored twice only counts
as already stored.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import anyio.to_thread
import msgspec
from celery import shared_task
from litestar import Request, Response, get, post
from litestar.params import FromPath

from gateway import examples
from gateway.access import json_response, scoped
from gateway.alignment import celery_producer
from gateway.data_roots import allowed_path
from gateway.metrics import ingested_counter
from gateway.settings import GatewaySettings
from gateway.state import GatewayState
from gateway.wire import job_info
from tacit.db import SessionConflict, Store
from tacit.schemas import Session
from tacit.schemas.gateway import ImportIfllm, JobInfo
from tacit.schemas.problem import RequestError, decode_body
from tacit.schemas.session import ID_PATTERN, MAX_ID_CHARS
from tacit.settings import WorkerSettings, load_settings
from tacit.tasks import QUEUE_CPU, TASK_IMPORT_IFLLM

__all__ = ["KIND", "ifllm_import_task", "import_routes", "run_ifllm_import"]

logger = logging.getLogger(__name__)
# Counted where the import runs (a cpu worker): its /metrics serves it in multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
# set in infra/compose.yaml), where every counter of the worker's processes is read from the shared directory.
_INGESTED = ingested_counter(None)

#: The job kind of an IFLLM import in the gateway's `jobs` table.
KIND = "import_ifllm"
_ACTIVE = ("queued", "running")
_COUNTS = ("stored", "already_stored", "conflicts", "invalid_ids")
_IMPORT = msgspec.json.Decoder(ImportIfllm)
_ID = re.compile(ID_PATTERN)


def _safe_ids(session: Session) -> bool:
    ids = (session.session_id, session.user_id, session.task_id, session.query_id)
    return all(value is None or (len(value) <= MAX_ID_CHARS and _ID.match(value)) for value in ids)


# -- the work ---------------------------------------------------------------------------------------------


def run_ifllm_import(store: Store, job_id: str) -> str:
    """Run or resume import job `job_id`: its folder's questions stored as sessions, one task folder at a time.

    Returns the job's final status, or `skipped` when there was nothing to do (an unknown, finished or cancelled
    job). Sessions are built, not decoded, so the id alphabet is checked here: one outside it is counted, not
    stored. Scoring is left to the gateway's rescoring loop, so an import never waits on the other services.
    """
    from tacit.ifllm.reader import Dataset
    from tacit.ifllm.sessions import task_sessions

    job = store.jobs.update_job_if(job_id, _ACTIVE, status="running")
    if job is None:
        return "skipped"
    counts = {name: int((job.result or {}).get(name, 0)) for name in _COUNTS}  # a resumed job's counts so far
    done = job.done
    try:
        dataset = Dataset(str(job.spec["data"]))
        folders = dataset.task_dirs()
        done = min(done, len(folders))  # folders already done by an earlier delivery are skipped
        if store.jobs.update_job_if(
            job_id, ("running",), stage="sessions", done=done, total=len(folders), result=counts
        ):
            for key, folder in folders[done:]:
                built = task_sessions(dataset, key, folder)
                sessions = [session for session in built if _safe_ids(session)]
                counts["invalid_ids"] += len(built) - len(sessions)
                for outcome in store.sessions.put_sessions(sessions):
                    if isinstance(outcome, SessionConflict):
                        counts["conflicts"] += 1
                    else:
                        counts["stored" if outcome[1] else "already_stored"] += 1
                        if outcome[1]:
                            row = outcome[0]
                            _INGESTED.labels(row.mode, str(row.consent_gaze).lower(), "import").inc()
                done += 1
                # Conditional on `running`: a cancel request (status `cancelled`) stops the job here.
                if store.jobs.update_job_if(job_id, ("running",), done=done, result=counts) is None:
                    break
            else:
                if store.jobs.update_job_if(job_id, ("running",), status="succeeded", stage="done", result=counts):
                    return "succeeded"
    except Exception as err:  # recorded on the job; a redelivery would fail the same way
        logger.exception("IFLLM import %s failed", job_id)
        if store.jobs.update_job_if(job_id, ("running",), status="failed", error=f"{type(err).__name__}: {err}"[:2000]):
            return "failed"
    # No longer running: cancelled (what was stored until then is kept), or ended by another delivery.
    stopped = store.jobs.update_job_if(job_id, ("cancelled",), stage="cancelled", done=done, result=counts)
    logger.info("IFLLM import %s stopped after %d task folders: %s", job_id, done, stopped and stopped.status)
    return "cancelled" if stopped else "skipped"


@shared_task(name=TASK_IMPORT_IFLLM, bind=True)  # type: ignore[untyped-decorator]  # celery ships no types
def ifllm_import_task(self: Any, job_id: str) -> dict[str, str]:
    """Run or resume import job `job_id` in the gateway's database (`TACIT_WORKER_DATABASE_URL`)."""
    store = Store(load_settings(WorkerSettings, "TACIT_WORKER_").db_url())
    try:
        return {"job_id": job_id, "status": run_ifllm_import(store, job_id)}
    finally:
        store.close()


# -- the routes -------------------------------------------------------------------------------------------


def _enqueue(state: GatewayState, job_id: str) -> None:
    celery_producer(state).send_task(TASK_IMPORT_IFLLM, args=[job_id], task_id=job_id, queue=QUEUE_CPU)


@post(
    "/v1/imports/ifllm",
    status_code=202,
    summary="Import an IFLLM folder (a job on the cpu queue)",
    **scoped("admin", JobInfo, (202,), body=ImportIfllm, example=examples.import_ifllm),
)
async def import_ifllm(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    spec: ImportIfllm = decode_body(_IMPORT, await request.body())
    settings: GatewaySettings = state.settings
    root = allowed_path(spec.data, settings.data_roots, "data")  # outside the roots: the same 422, existing or not
    if not (root / "query_logs_table.csv").exists() and not (root / "ifllm" / "query_logs_table.csv").exists():
        raise RequestError(422, "not_found", "data", f"{spec.data} is not an IFLLM folder readable by the server")
    store: Store = state.store
    job = await anyio.to_thread.run_sync(store.jobs.create_job, KIND, {"data": str(root)})
    try:
        await anyio.to_thread.run_sync(_enqueue, state, job.id)
    except Exception as err:  # the broker is down: the job could never run, so it ends here, failed
        logger.warning("could not enqueue import job %s: %s", job.id, err)
        reason = "the job queue (Redis) was unreachable; nothing was imported"
        await anyio.to_thread.run_sync(
            lambda: store.jobs.update_job_if(job.id, ("queued",), status="failed", error=reason)
        )
        raise RequestError(
            503, "dependency_down", "redis", "the job queue (Redis) is unreachable; try again", {"Retry-After": "5"}
        ) from None
    return json_response(job_info(job), 202)


@get("/v1/imports/{job_id:str}", summary="An import job and its progress", **scoped("read", JobInfo))
async def get_import(state: GatewayState, job_id: FromPath[str]) -> Response[bytes]:
    row = await anyio.to_thread.run_sync(state.store.jobs.get_job, job_id)
    if row is None:
        raise RequestError(404, "not_found", "job_id", f"no job {job_id}")
    return json_response(job_info(row))


@post(
    "/v1/imports/{job_id:str}/cancel",
    status_code=202,
    summary="Cancel an import (a running one stops after its current task folder)",
    **scoped("admin", JobInfo, (202,)),
)
async def cancel_import(state: GatewayState, job_id: FromPath[str]) -> Response[bytes]:
    store: Store = state.store
    row = await anyio.to_thread.run_sync(store.jobs.get_job, job_id)
    if row is None or row.kind != KIND:
        raise RequestError(404, "not_found", "job_id", f"no import job {job_id}")
    if row.status != "cancelled":
        cancelled = await anyio.to_thread.run_sync(
            lambda: store.jobs.update_job_if(job_id, _ACTIVE, status="cancelled", stage="cancelled")
        )
        if cancelled is None:  # it ended meanwhile (or had ended)
            row = await anyio.to_thread.run_sync(store.jobs.get_job, job_id)
            if row is None or row.status != "cancelled":
                status = "gone" if row is None else row.status
                raise RequestError(409, "conflict", "job_id", f"import job {job_id} has already ended ({status})")
        else:
            row = cancelled
    return json_response(job_info(row), 202)


def import_routes() -> list[Any]:
    """The import routes, for the gateway's route list."""
    return [import_ifllm, get_import, cancel_import]
