"""The basis routes both services serve, written once: `/basis`, `/basis/current`, `/basis/fit`, `/basis/jobs/{id}`
(the generator's) and the same under `/score` (the scorer's): the caller's versions, pinning, fitting."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Request, Response

from genview.basis import BASIS_HINT, DEFAULT_OWNER, PER_IMAGE, UnknownBasis
from genview.pca_fit import candidate_inputs, too_few_images
from genview.queue import Job
from genview.schemas import (FIT_BASIS, BasisInfo, FitBasisJob, FitBasisRequest, FitJobDocument, PinBasisRequest,
                             to_queue)
from genview.store import validate_key
from services.auth import Tenant
from services.errors import ApiError, error_responses, public_error
from services.jobs import check_capacity
from services.state import ServiceState
from services.tenancy import Ownership, basis_owner, inputs_scope

SCORER_PREFIX = "/score"  # the scorer includes this router under it; the generator at the root

FIT_RESPONSES = {202: {"model": FitJobDocument, "description": "the fit is queued (see Location)"},
                 **error_responses(400, 404, 409, 429, 503)}
router = APIRouter()


def service_prefix(request: Request) -> str:
    """`/score` for a request below it (the scorer's basis), else "" (the generator's)."""
    path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
    return SCORER_PREFIX if path.startswith(SCORER_PREFIX + "/") else ""


async def basis_service(request: Request) -> ServiceState:
    """The service whose basis the request names."""
    return request.app.state.scorer if service_prefix(request) else request.app.state.generator


Owner = Annotated[ServiceState, Depends(basis_service)]


def resolve_basis(service: ServiceState, tenant: str) -> str | None:
    """The id of the basis version `tenant`'s requests use now (theirs, else the default); None if there is none."""
    return service.bases.current_id(basis_owner(tenant))


def basis_required() -> ApiError:
    """The one 409 both services answer for adaptive generation or quality scoring without a basis."""
    return ApiError(409, "basis_required", BASIS_HINT)


def required_basis(service: ServiceState, tenant: str) -> str:
    """`resolve_basis`, or `basis_required()` when there is none."""
    basis_id = resolve_basis(service, tenant)
    if basis_id is None:
        raise basis_required()
    return basis_id


def basis_info(service: ServiceState, tenant: str) -> BasisInfo:
    """What `GET …/basis` answers: the tenant's current version, whose it is, its versions, the default."""
    owner = basis_owner(tenant)
    basis_id, source = service.bases.resolve(owner)
    return BasisInfo(encoder_id=service.encoder_id, basis_id=basis_id or PER_IMAGE, source=source,
                     default_id=service.bases.own_current(DEFAULT_OWNER), versions=service.bases.versions(owner))


def fit_job_of(body: FitBasisRequest, tenant: str, owners: Ownership, min_images: int) -> tuple[FitBasisJob, int]:
    """The queue payload of a basis fit and how many inputs it will use; 404 for a key that is not an input this
    tenant uploaded, 409 `too_few_images` when fewer than `min_images` are there to fit on."""
    for key in body.keys or []:
        if not (key.startswith("inputs/") and owners.may_see_key(tenant, validate_key(key))
                and owners.store.exists(key)):
            raise ApiError(404, "unknown_input", f"no input {key!r} (input keys look like inputs/<sha256>)")
    scope = inputs_scope(tenant)
    images = len(set(body.keys)) if body.keys else min(body.num, len(candidate_inputs(owners.store, scope)))
    if images < min_images:
        raise ApiError(409, "too_few_images", str(too_few_images(images, min_images)).removeprefix("too_few_images: "))
    job = FitBasisJob(num=body.num, keys=body.keys, tenant=scope, owner=basis_owner(tenant), min_images=min_images)
    return job, images


async def submit_fit(service: ServiceState, tenant: str, body: FitBasisRequest, jobs_path: str) -> Response:
    """Queue a basis fit: 202 with its document (how many images it will use) and a Location under `jobs_path`."""
    job, images = await anyio.to_thread.run_sync(fit_job_of, body, tenant, service.owners,
                                                 service.settings.min_fit_images)
    await anyio.to_thread.run_sync(check_capacity, service.queue, service.settings)
    job_id, created = await anyio.to_thread.run_sync(service.queue.submit, to_queue(job), None)
    if created:
        service.metrics.submitted()
    doc = FitJobDocument(job_id=job_id, status="queued", images=images)
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


@router.get("/basis", response_model=BasisInfo, responses=error_responses(503))
async def basis(service: Owner, tenant: Tenant) -> BasisInfo:
    """Your current PCA basis version (yours, else the operator's default; 'per-image' when there is none) and
    your versions."""
    return await anyio.to_thread.run_sync(basis_info, service, tenant)


@router.put("/basis/current", response_model=BasisInfo, responses=error_responses(400, 404, 503))
async def pin_basis(service: Owner, tenant: Tenant, body: PinBasisRequest) -> BasisInfo:
    """Make one of your basis versions (or the operator's default) current: requests accepted from now on use it,
    those accepted before keep the version they were accepted with."""
    def pin() -> BasisInfo:
        try:
            service.bases.pin(basis_owner(tenant), body.basis_id)
        except UnknownBasis as exc:
            raise ApiError(404, "unknown_basis", str(exc)) from None
        return basis_info(service, tenant)

    return await anyio.to_thread.run_sync(pin)


@router.post("/basis/fit", response_model=FitJobDocument, status_code=202, responses=FIT_RESPONSES)
async def fit_basis(request: Request, service: Owner, tenant: Tenant, body: FitBasisRequest) -> Response:
    """Fit a new PCA foreground basis version (Eq. 7) on `num` of your stored inputs or the given input keys.

    A queued job that one of the service's workers runs; poll `…/basis/jobs/{job_id}`. Once done the version
    is your current basis (requests accepted before keep theirs). Fewer than `GENVIEW_MIN_FIT_IMAGES` inputs:
    409 `too_few_images` (the request is valid; the stored inputs are too few)."""
    return await submit_fit(service, tenant, body, f"{service_prefix(request)}/basis/jobs")


@router.get("/basis/jobs/{job_id}", response_model=FitJobDocument, responses=error_responses(404, 503))
async def get_fit_job(service: Owner, tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]) -> FitJobDocument:
    """The state of a basis fit; its result names the saved basis version."""
    return await fit_job(service, tenant, job_id)
