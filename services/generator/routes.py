"""The generator's routes (`/generate`, `/jobs`, `/views/{key}`; `/basis…` is services/basis_routes.py) and the job
logic under them: cache look-up, submission, visibility and the job documents."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from genview.basis import uses_fitted_basis
from genview.method.noise import NoisePolicy, parse_noise_policy
from genview.queue import DONE, TERMINAL, Job
from genview.schemas import GENERATE, GenerateJob, GenerationJobDocument, GenerationParams, GenerationResult, to_queue
from genview.store import ObjectNotFound, ObjectStore, input_key, sha256_hex, view_key_at, view_meta_key
from genview.view_encoding import MEDIA_TYPES, media_type
from services.auth import PUBLIC, Tenant
from services.basis_routes import required_basis
from services.errors import GUARDED, ApiError, error_responses, public_error
from services.generator.form import form_body, read_generate_form
from services.jobs import check_capacity
from services.state import Generator, ServiceState
from services.uploads import checked_image

ACCEPTED = {202: {"model": GenerationJobDocument, "description": "accepted, not finished yet (see Location)"}}
router = APIRouter(tags=["generate"], responses=GUARDED)


INLINE_BYTES = 256 * 1024  # hashing this much takes ~0.2 ms: `cheap_here`
CACHE_ID = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{32})$")  # the job id of a cached answer: `cache_job_id`
VIEW_PATH = rf"^[0-9a-f]{{64}}/[0-9a-f]{{32}}/(?:[0-9]+|fg)\.(?:{'|'.join(MEDIA_TYPES)})$"  # `view_key`, `fg_map_key`


def meta_key(sha: str, params: GenerationParams) -> str:
    """Where the result document of (input, params) lives."""
    return view_meta_key(sha, params.hash)


def cache_job_id(sha: str, params: GenerationParams) -> str:
    """The job id under which a cached result is reported (no queue job exists for it)."""
    return f"{sha}.{params.hash}"


def document(service: ServiceState, job_id: str, status: str, result: GenerationResult | None, cached: bool,
             error: str | None = None, job: Job | None = None) -> GenerationJobDocument:
    """The job document, view URLs from the configured public base URL (never from `Host`)."""
    if result is not None:
        result = result.model_copy(update={"views": [v.model_copy(update={"url": service.urls.view(v.key)})
                                                     for v in result.views]})
    times = {"created": job.created, "updated": job.updated, "deliveries": job.deliveries} if job else {}
    return GenerationJobDocument(job_id=job_id, status=status, result=result, cached=cached, error=public_error(error),
                                 model=service.settings.model, **times)


def json_response(doc: GenerationJobDocument) -> Response:
    """A finished document as a 200 JSON answer, serialized once (not validated again as the response model)."""
    return Response(doc.model_dump_json(), media_type="application/json")


async def off_loop_unless_cheap(cheap: bool, fn, *args):
    """`fn(*args)` in the thread pool, or right here when `cheap`: a few local store reads and little to hash
    (`cheap_here`) cost less than the thread hop (~0.1–0.3 ms)."""
    return fn(*args) if cheap else await anyio.to_thread.run_sync(fn, *args)


def cheap_here(service: ServiceState, hashed_bytes: int = 0) -> bool:
    """Whether store reads and hashing `hashed_bytes` may run on the event loop: a local store, ≤ INLINE_BYTES."""
    return service.store.protocol != "s3" and hashed_bytes <= INLINE_BYTES


def job_document(service: ServiceState, job: Job) -> GenerationJobDocument:
    result = GenerationResult.model_validate(job.result) if job.status == DONE and job.result else None
    return document(service, job.job_id, job.status, result, False, job.error, job)


def job_response(service: ServiceState, job: Job) -> Response:
    """200 with the document once final (done, failed, cancelled), 202 with a Location while queued or running."""
    done = job.status in TERMINAL
    headers = None if done else {"Location": service.urls.path(f"/jobs/{job.job_id}")}
    return Response(job_document(service, job).model_dump_json(), status_code=200 if done else 202,
                    media_type="application/json", headers=headers)


def views_exist(store: ObjectStore, result: GenerationResult) -> bool:
    """Cache truth: a result is only served while its views and foreground map are still stored."""
    return all(store.exists(k) for k in result.object_keys())


def stored_result(store: ObjectStore, key: str) -> GenerationResult | None:
    """The result document under `key`, or None."""
    try:
        return GenerationResult.model_validate_json(store.get(key))
    except ObjectNotFound:
        return None


def fresh_result(store: ObjectStore, sha: str, params: GenerationParams) -> GenerationResult | None:
    """The stored result of (input, params) if all its objects exist; a stale one is removed."""
    result = stored_result(store, meta_key(sha, params))
    if result is None or views_exist(store, result):
        return result
    store.delete(meta_key(sha, params))  # its views are gone: regenerate rather than serve dead URLs
    return None


def request_params(service: ServiceState, tenant: str, policy: NoisePolicy, fields: dict) -> GenerationParams:
    """The cache identity of a request (`POST /generate` and `GET /views/lookup` alike): its fields, the
    service's model and, for an adaptive policy, the tenant's current basis version (409 without one)."""
    basis = required_basis(service, tenant) if uses_fitted_basis(policy) else None
    return GenerationParams(model=service.settings.model, noise_policy=policy, basis=basis, **fields)


def lookup(service: ServiceState, tenant: str, data: bytes, policy: NoisePolicy,
           fields: dict) -> tuple[str, GenerationParams, GenerationResult | None]:
    """(input hash, parameters, cached result or None) of a request, in one step; on a hit the tenant is
    recorded as an owner of the input. An adaptive policy resolves the tenant's current basis version here, once
    (409 `basis_required` without one); the job carries its id, whatever is fitted or pinned later."""
    sha = sha256_hex(data)
    params = request_params(service, tenant, policy, fields)
    result = fresh_result(service.store, sha, params)
    if result is not None:
        service.owners.record(tenant, sha)
    return sha, params, result


def submit(service: ServiceState, tenant: str, sha: str, params: GenerationParams) -> Job:
    """Queue (or join this tenant's) job of (input, params); a finished duplicate whose views vanished is redone."""
    queue, payload = service.queue, to_queue(GenerateJob(sha=sha, params=params, tenant=tenant))
    dedup = f"{tenant}:{sha}:{params.hash}"
    job_id, created = queue.submit(payload, dedup)
    job = queue.get(job_id)
    if not created and job is not None and job.status == DONE and not views_exist(
            service.store, GenerationResult.model_validate(job.result)):
        job_id, created = queue.submit(payload, f"{dedup}:redo:{job_id}")
        job = queue.get(job_id)
    if created:
        service.metrics.submitted()
    if job is None:
        raise ApiError(503, "queue_unavailable", f"job {job_id} vanished right after it was queued; retry")
    return job


def queue_upload(service: ServiceState, tenant: str, sha: str, data: bytes, params: GenerationParams) -> Job:
    """Check the image, record the tenant, check the queue's capacity, store the input and queue its job, in one
    thread hop. The input is written without fsync: it has to outlive its job only, and the worker refuses a copy
    that a crash cut short (by its hash); an input meant to last (`POST /inputs`) is written durably."""
    checked_image(data, service.settings)
    service.owners.record(tenant, sha)
    check_capacity(service.queue, service.settings)
    service.store.put(input_key(sha), data, durable=False)
    return submit(service, tenant, sha, params)


def visible_job(service: ServiceState, tenant: str, job_id: str) -> Job:
    """The tenant's generation job `job_id`; 404 for others' jobs and for jobs of another kind (a basis fit)."""
    job = service.queue.get(job_id)
    if job is None or not service.owners.may_see_job(tenant, job):
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (never submitted, expired, or not yours)")
    if job.payload.get("kind") != GENERATE:
        raise ApiError(404, "unknown_job",
                       f"job {job_id!r} is no generation job; a basis fit is at /basis/jobs/{job_id}")
    return job


def cached_document(service: ServiceState, tenant: str, job_id: str) -> GenerationJobDocument | None:
    """The document of a cached answer's id (`<sha>.<phash>`) while its views exist; None for other ids."""
    match = CACHE_ID.match(job_id)
    if not match:
        return None
    sha, phash = match.groups()
    result = stored_result(service.store, view_meta_key(sha, phash)) if service.owners.owns(tenant, sha) else None
    if result is None or not views_exist(service.store, result):
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (never submitted, expired, or not yours)")
    return document(service, job_id, DONE, result, cached=True)


def request_policy(field: str, text: str) -> NoisePolicy:
    """The request's noise policy, parsed once from the text of `field` (`noise_policy`, or its deprecated name)."""
    try:
        return parse_noise_policy(text)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameters", [{"field": field, "message": str(exc)}]) from exc


@router.post("/generate", response_model=GenerationJobDocument, openapi_extra=form_body(),
             responses={**ACCEPTED, **error_responses(400, 409, 413, 415, 429, 503)})
async def generate(
    request: Request,
    service: Generator,
    tenant: Tenant,
    wait: Annotated[bool, Query(description="wait for the result")] = False,
    timeout: Annotated[float, Query(gt=0, description="seconds to wait when wait=true")] = 60.0,
):
    """Generate `num_views` views of an image with the adaptive noise level of Eq. 8 (or a fixed policy).

    Answers 200 with the result when it is cached or finished within `timeout` (`wait=true`), else 202
    with the job document and a `Location` to poll. An adaptive request uses your current basis version as
    of now (later fits do not change it) and is a 409 `basis_required` when there is none (fit one with
    `POST /basis/fit` or `genview fit-pca`, or ask for `noise_policy=auto:per-image`)."""
    data, form = await read_generate_form(request, service.settings.max_upload_bytes)
    policy = request_policy(*form.policy_text())
    cheap = cheap_here(service, len(data)) and tenant == PUBLIC  # a tenant's hit may record it: a durable write
    sha, params, cached = await off_loop_unless_cheap(cheap, lookup, service, tenant, data, policy,
                                                      form.params_fields())
    if cached is not None:  # these exact bytes were checked when they were first accepted
        service.metrics.cache_hit()
        return json_response(document(service, cache_job_id(sha, params), DONE, cached, cached=True))
    job = await anyio.to_thread.run_sync(queue_upload, service, tenant, sha, data, params)
    if wait and job.status not in TERMINAL:
        job = await service.waiter.wait(job.job_id, timeout) or job
    return job_response(service, job)


@router.get("/jobs/{job_id}", response_model=GenerationJobDocument,
            responses={**ACCEPTED, **error_responses(404, 503)})
async def get_job(service: Generator, tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]):
    """A job's status; its result (views with URLs, fg ratio, noise level) once done, its error once failed."""
    cached = await anyio.to_thread.run_sync(cached_document, service, tenant, job_id)
    if cached is not None:
        return cached
    return job_response(service, await anyio.to_thread.run_sync(visible_job, service, tenant, job_id))


@router.delete("/jobs/{job_id}", response_model=GenerationJobDocument, responses=error_responses(404, 409, 503))
async def cancel_job(service: Generator, tenant: Tenant,
                     job_id: Annotated[str, Path(max_length=200)]) -> GenerationJobDocument:
    """Cancel a job that is still queued (409 `not_cancellable` once a worker has it or it has finished)."""
    job = await anyio.to_thread.run_sync(visible_job, service, tenant, job_id)
    if not await anyio.to_thread.run_sync(service.queue.cancel, job_id):
        raise ApiError(409, "not_cancellable", f"job {job_id} is {job.status}; only queued jobs can be cancelled")
    job = await anyio.to_thread.run_sync(visible_job, service, tenant, job_id)
    return job_document(service, job)


@router.get("/jobs", response_model=list[GenerationJobDocument], responses=error_responses(503))
async def list_jobs(service: Generator, tenant: Tenant, status: Annotated[Literal["failed"], Query(
                        description="which jobs: `failed` lists the dead letters (jobs that gave up)")],
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[GenerationJobDocument]:
    """Jobs by status, for operators: `status=failed` lists failed jobs, newest first, with their errors."""
    failed = await anyio.to_thread.run_sync(service.queue.failed, limit)
    visible = [j for j in failed if await anyio.to_thread.run_sync(service.owners.may_see_job, tenant, j)]
    return [job_document(service, j) for j in visible]


@router.get("/views/{key:path}", response_class=Response, responses={
    200: {"description": "the image", "content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))}},
    304: {"description": "not modified (ETag)"}, **error_responses(400, 404)})
async def get_view(request: Request, service: Generator, tenant: Tenant, key: Annotated[str, Path(
        max_length=400, json_schema_extra={"pattern": VIEW_PATH})]):  # declared; other keys are a 400 or a 404
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
