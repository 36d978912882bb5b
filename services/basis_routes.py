"""The basis routes both services serve (`/basis…` and `/score/basis…`): read, fit, follow a fit job."""

from __future__ import annotations

import anyio
from fastapi import Response

from genview.queue import Job
from genview.schemas import FIT_BASIS, BasisInfo, FitBasisJob, FitBasisRequest, FitJobDocument, to_queue
from genview.store import validate_key
from services.errors import ApiError, public_error
from services.jobs import check_capacity
from services.state import ServiceState
from services.tenancy import Ownership

FIT_RESPONSES = {202: {"model": FitJobDocument, "description": "the fit is queued (see Location)"}}


async def current_basis(service: ServiceState) -> BasisInfo:
    """The basis the service keys answers on now ('per-image' when none is fitted)."""
    return BasisInfo(encoder_id=service.encoder_id, basis_id=await anyio.to_thread.run_sync(service.bases.fingerprint))


def fit_job_of(body: FitBasisRequest, tenant: str, owners: Ownership) -> FitBasisJob:
    """The queue payload of a basis fit; 404 for a key that is not an input this tenant uploaded."""
    for key in body.keys or []:
        if not (key.startswith("inputs/") and owners.may_see_key(tenant, validate_key(key))
                and owners.store.exists(key)):
            raise ApiError(404, "unknown_input", f"no input {key!r} (input keys look like inputs/<sha256>)")
    return FitBasisJob(num=body.num, keys=body.keys, tenant=tenant)


async def submit_fit(service: ServiceState, tenant: str, body: FitBasisRequest, jobs_path: str) -> Response:
    """Queue a basis fit: 202 with its document and a Location under `jobs_path`."""
    job = await anyio.to_thread.run_sync(fit_job_of, body, tenant, service.owners)
    await anyio.to_thread.run_sync(check_capacity, service.queue, service.settings)
    job_id, created = await anyio.to_thread.run_sync(service.queue.submit, to_queue(job), None)
    if created:
        service.metrics.submitted()
    doc = FitJobDocument(job_id=job_id, status="queued")
    return Response(doc.model_dump_json(), status_code=202, media_type="application/json",
                    headers={"Location": service.urls.path(f"{jobs_path}/{job_id}")})


def is_fit_job(job: Job | None) -> bool:
    return job is not None and job.payload.get("kind") == FIT_BASIS


async def fit_job(service: ServiceState, tenant: str, job_id: str) -> FitJobDocument:
    """The document of a visible basis-fit job; 404 for anything else."""
    job = await anyio.to_thread.run_sync(service.queue.get, job_id)
    if not is_fit_job(job) or not service.owners.may_see_job(tenant, job):
        raise ApiError(404, "unknown_job", "no such basis fit job (never submitted, expired, or not yours)")
    return FitJobDocument.of(job, public_error(job.error))
