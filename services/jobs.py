"""Queue use that both APIs share: backpressure, waiting for a job without polling, basis-fit job documents."""

from __future__ import annotations

import anyio
from pydantic import BaseModel

from genview.queue import Job, JobQueue
from genview.schemas import BasisFitResult, FitBasisJob
from genview.settings import Settings
from genview.store import validate_key
from services.errors import ApiError, public_error, retry_later
from services.tenancy import Ownership

MAX_WAITERS = 256  # requests blocked in `wait=true` at once (their own threads, apart from the request pool)


def check_capacity(queue: JobQueue, settings: Settings) -> None:
    """429 with Retry-After when the queue already holds `GENVIEW_MAX_QUEUE_DEPTH` jobs (0: no limit)."""
    if settings.max_queue_depth and queue.depth() >= settings.max_queue_depth:
        raise retry_later(429, "queue_full", f"{settings.max_queue_depth} jobs are waiting; retry later")


class JobWaiter:
    """`wait=true`: blocks on the queue's completion notification (not polling), bounded by `GENVIEW_MAX_WAIT_S`."""

    def __init__(self, queue: JobQueue, settings: Settings):
        self.queue, self.max_wait_s = queue, settings.max_wait_s
        self.limiter = anyio.CapacityLimiter(MAX_WAITERS)

    async def wait(self, job_id: str, timeout_s: float) -> Job | None:
        return await anyio.to_thread.run_sync(self.queue.wait, job_id, min(timeout_s, self.max_wait_s),
                                              limiter=self.limiter)


class FitJobDocument(BaseModel):
    """`POST /basis/fit` and `GET /basis/jobs/{id}`: a basis fit's status, and its result once done."""

    job_id: str
    status: str
    result: BasisFitResult | None = None
    error: str | None = None

    @classmethod
    def of(cls, job: Job) -> FitJobDocument:
        return cls(job_id=job.job_id, status=job.status, error=public_error(job.error),
                   result=BasisFitResult.model_validate(job.result) if job.result else None)


def fit_payload(body: FitBasisJob, tenant: str, owners: Ownership) -> dict:
    """The queue payload of a basis fit; 404 for a key that is not an input this tenant uploaded."""
    for key in body.keys or []:
        if not (key.startswith("inputs/") and owners.may_see_key(tenant, validate_key(key))
                and owners.store.exists(key)):
            raise ApiError(404, "unknown_input", f"no input {key!r} (input keys look like inputs/<sha256>)")
    return {**body.model_dump(), "tenant": tenant}


def fit_job(job: Job | None, tenant: str, owners: Ownership) -> FitJobDocument:
    """The document of a visible basis-fit job; 404 for anything else."""
    if job is None or job.payload.get("kind") != "fit-basis" or not owners.may_see_job(tenant, job):
        raise ApiError(404, "unknown_job", "no such basis fit job (never submitted, expired, or not yours)")
    return FitJobDocument.of(job)
