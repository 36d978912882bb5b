"""The generator's routes: `/generate`, `/jobs`, `/views/{key}`, `/basis` and `/basis/fit`."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import Response

from genview.basis import PER_IMAGE, BasisRequired, require_basis
from genview.method.noise import MAX_NOISE_LEVEL, parse_noise_policy
from genview.queue import DONE, FAILED
from genview.schemas import BasisInfo, FitBasisRequest, FitJobDocument, GenerationJobDocument
from genview.store import ObjectNotFound, input_key, sha256_hex, view_key_at
from genview.view_encoding import MEDIA_TYPES, media_type
from services import basis_routes
from services.auth import Tenant
from services.errors import GUARDED, ApiError, error_responses
from services.generator import jobs
from services.jobs import check_capacity
from services.limits import single_valued_form
from services.state import Generator
from services.uploads import check_image, read_upload

ACCEPTED = {202: {"model": GenerationJobDocument, "description": "accepted, not finished yet (see Location)"}}
POLICY_HELP = (f"'auto' (adaptive, Eq. 8; needs a fitted basis), 'auto:per-image', 'random', 'constant:L' or "
               f"0–{MAX_NOISE_LEVEL}")
router = APIRouter(tags=["generate"], responses=GUARDED)


def request_policy(noise_policy: str | None, noise_level: str | None):
    """The request's noise policy, parsed once (from `noise_policy`, or its deprecated name `noise_level`)."""
    field, text = ("noise_policy", noise_policy) if noise_policy is not None else ("noise_level", noise_level)
    try:
        return parse_noise_policy("auto" if text is None else text)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameters", [{"field": field, "message": str(exc)}]) from exc


@router.post("/generate", response_model=GenerationJobDocument, dependencies=[Depends(single_valued_form)],
             responses={**ACCEPTED, **error_responses(400, 409, 415, 429, 503)})
async def generate(
    service: Generator,
    tenant: Tenant,
    image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
    noise_policy: Annotated[str | None, Form(description=f"{POLICY_HELP} (default 'auto')")] = None,
    noise_level: Annotated[str | None, Form(deprecated=True, description="deprecated name of `noise_policy` "
                                            "(accepted for one release; `noise_policy` wins when both are sent)")] = None,
    num_views: Annotated[int, Form(ge=1, le=8)] = 1,
    seed: Annotated[int, Form(ge=0, le=2**63 - 1)] = 0,
    steps: Annotated[int, Form(ge=1, le=200)] = 20,
    guidance_scale: Annotated[float, Form(ge=0.0, le=50.0)] = 10.0,
    prompt: Annotated[str, Form(max_length=1000)] = "",
    size: Annotated[int, Form(ge=16, le=2048, description="output side in pixels (square)")] = 512,
    wait: Annotated[bool, Query(description="wait for the result")] = False,
    timeout: Annotated[float, Query(gt=0, description="seconds to wait when wait=true")] = 60.0,
):
    """Generate `num_views` views of an image with the adaptive noise level of Eq. 8 (or a fixed policy).

    Answers 200 with the result when it is cached or finished within `timeout` (`wait=true`), else 202
    with the job document and a `Location` to poll. An adaptive request with no fitted PCA basis is a
    409 `basis_required` (fit one with `POST /basis/fit` or `genview fit-pca`, or ask for
    `noise_policy=auto:per-image`)."""
    policy = request_policy(noise_policy, noise_level)
    settings = service.settings
    data = await read_upload(image, settings.max_upload_bytes, "image")
    fields = dict(num_views=num_views, seed=seed, steps=steps, guidance_scale=guidance_scale, prompt=prompt, size=size)
    sha, params, cached = await anyio.to_thread.run_sync(jobs.lookup, service, tenant, data, policy, fields)
    if cached is not None:  # these exact bytes were checked when they were first accepted
        service.metrics.cache_hit()
        return jobs.document(service, jobs.cache_job_id(sha, params), DONE, cached, cached=True)
    await check_image(data, settings)
    try:
        require_basis(policy, params.basis != PER_IMAGE)
    except BasisRequired as exc:
        raise ApiError(409, "basis_required", str(exc)) from exc
    await anyio.to_thread.run_sync(service.owners.record, tenant, sha)
    await anyio.to_thread.run_sync(check_capacity, service.queue, settings)
    await anyio.to_thread.run_sync(service.store.put, input_key(sha), data)
    job = await anyio.to_thread.run_sync(jobs.submit, service, sha, params)
    if wait and job.status not in (DONE, FAILED):
        job = await service.waiter.wait(job.job_id, timeout) or job
    return jobs.job_response(service, job)


@router.get("/jobs/{job_id}", response_model=GenerationJobDocument,
            responses={**ACCEPTED, **error_responses(404, 503)})
async def get_job(service: Generator, tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]):
    """A job's status; its result (views with URLs, fg ratio, noise level) once done, its error once failed."""
    cached = await anyio.to_thread.run_sync(jobs.cached_document, service, tenant, job_id)
    if cached is not None:
        return cached
    return jobs.job_response(service, await anyio.to_thread.run_sync(jobs.visible_job, service, tenant, job_id))


@router.delete("/jobs/{job_id}", response_model=GenerationJobDocument, responses=error_responses(404, 409, 503))
async def cancel_job(service: Generator, tenant: Tenant,
                     job_id: Annotated[str, Path(max_length=200)]) -> GenerationJobDocument:
    """Cancel a job that is still queued (409 `not_cancellable` once a worker has it or it has finished)."""
    job = await anyio.to_thread.run_sync(jobs.visible_job, service, tenant, job_id)
    if not await anyio.to_thread.run_sync(service.queue.cancel, job_id):
        raise ApiError(409, "not_cancellable", f"job {job_id} is {job.status}; only queued jobs can be cancelled")
    job = await anyio.to_thread.run_sync(jobs.visible_job, service, tenant, job_id)
    return jobs.job_document(service, job)


@router.get("/jobs", response_model=list[GenerationJobDocument], responses=error_responses(503))
async def list_jobs(service: Generator, tenant: Tenant, status: Annotated[Literal["failed"], Query(
                        description="which jobs: `failed` lists the dead letters (jobs that gave up)")],
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[GenerationJobDocument]:
    """Jobs by status, for operators: `status=failed` lists failed jobs, newest first, with their errors."""
    failed = await anyio.to_thread.run_sync(service.queue.failed, limit)
    visible = [j for j in failed if await anyio.to_thread.run_sync(service.owners.may_see_job, tenant, j)]
    return [jobs.job_document(service, j) for j in visible]


@router.get("/views/{key:path}", response_class=Response, responses={
    200: {"description": "the image", "content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))}},
    304: {"description": "not modified (ETag)"}, **error_responses(400, 404)})
async def get_view(request: Request, service: Generator, tenant: Tenant, key: Annotated[str, Path(max_length=400)]):
    """A generated view or foreground map; immutable, with an ETag."""
    full = view_key_at(key)
    kind = media_type(full)
    if kind is None:
        raise ApiError(400, "invalid_key", f"view keys end in one of {sorted(MEDIA_TYPES)}")
    etag = f'"{sha256_hex(full.encode())[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"
               if service.settings.api_key_set else "public, max-age=31536000, immutable"}
    if not await anyio.to_thread.run_sync(service.owners.may_see_key, tenant, full):
        raise ApiError(404, "unknown_view", f"no view {key!r}")
    if request.headers.get("if-none-match") == etag and await anyio.to_thread.run_sync(service.store.exists, full):
        return Response(status_code=304, headers=headers)
    try:
        data = await anyio.to_thread.run_sync(service.store.get, full)
    except ObjectNotFound:
        raise ApiError(404, "unknown_view", f"no view {key!r}") from None
    return Response(data, media_type=kind, headers=headers)


@router.get("/basis", response_model=BasisInfo)
async def basis(service: Generator) -> BasisInfo:
    """The PCA basis adaptive requests are keyed on now ('per-image' when none is fitted)."""
    return await basis_routes.current_basis(service)


@router.post("/basis/fit", response_model=FitJobDocument, status_code=202,
             responses={**basis_routes.FIT_RESPONSES, **error_responses(400, 404, 429, 503)})
async def fit_basis(service: Generator, tenant: Tenant, body: FitBasisRequest) -> Response:
    """Fit the generator's PCA foreground basis (Eq. 7) on `num` stored inputs or the given input keys.

    A queued job that a generator worker runs; poll `GET /basis/jobs/{job_id}`, then `GET /basis`."""
    return await basis_routes.submit_fit(service, tenant, body, "/basis/jobs")


@router.get("/basis/jobs/{job_id}", response_model=FitJobDocument, responses=error_responses(404, 503))
async def get_fit_job(service: Generator, tenant: Tenant,
                      job_id: Annotated[str, Path(max_length=200)]) -> FitJobDocument:
    """The state of a basis fit; its result names the saved basis."""
    return await basis_routes.fit_job(service, tenant, job_id)
