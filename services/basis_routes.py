"""The basis routes both services serve, written once: `/basis`, `/basis/fit`, `/basis/jobs/{id}` (the generator's)
and the same under `/score` (the scorer's): read the current basis, fit one, follow a fit job."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Request, Response

from genview.queue import Job
from genview.schemas import FIT_BASIS, BasisInfo, FitBasisJob, FitBasisRequest, FitJobDocument, to_queue
from genview.store import validate_key
from services.auth import Tenant
from services.errors import ApiError, error_responses, public_error
from services.jobs import check_capacity
from services.state import ServiceState
from services.tenancy import Ownership

SCORER_PREFIX = "/score"  # the scorer includes this router under it; the generator at the root

FIT_RESPONSES = {202: {"model": FitJobDocument, "description": "the fit is queued (see Location)"},
                 **error_responses(400, 404, 429, 503)}
router = APIRouter()


def service_prefix(request: Request) -> str:
    """`/score` for a request below it (the scorer's basis), else "" (the generator's)."""
    path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
    return SCORER_PREFIX if path.startswith(SCORER_PREFIX + "/") else ""


async def basis_owner(request: Request) -> ServiceState:
    """The service whose basis the request names."""
    return request.app.state.scorer if service_prefix(request) else request.app.state.generator


Owner = Annotated[ServiceState, Depends(basis_owner)]


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


@router.get("/basis", response_model=BasisInfo)
async def basis(service: Owner) -> BasisInfo:
    """The PCA basis this service keys its answers on now ('per-image' when none is fitted)."""
    return await current_basis(service)


@router.post("/basis/fit", response_model=FitJobDocument, status_code=202, responses=FIT_RESPONSES)
async def fit_basis(request: Request, service: Owner, tenant: Tenant, body: FitBasisRequest) -> Response:
    """Fit this service's PCA foreground basis (Eq. 7) on `num` stored inputs or the given input keys.

    A queued job that one of the service's workers runs; poll `…/basis/jobs/{job_id}`, then `…/basis`."""
    return await submit_fit(service, tenant, body, f"{service_prefix(request)}/basis/jobs")


@router.get("/basis/jobs/{job_id}", response_model=FitJobDocument, responses=error_responses(404, 503))
async def get_fit_job(service: Owner, tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]) -> FitJobDocument:
    """The state of a basis fit; its result names the saved basis."""
    return await fit_job(service, tenant, job_id)
