"""Generator HTTP API: accepts images, queues generation jobs, serves results and views (routes as APIRouters)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from genview.basis import PER_IMAGE, BasisCache, BasisRequired, require_basis, uses_fitted_basis
from genview.method.noise import MAX_NOISE_LEVEL, NoisePolicy, parse_noise_policy
from genview.models.presets import encoder_id
from genview.queue import DONE, FAILED, Job, JobQueue
from genview.schemas import BasisInfo, FitBasisJob, GenerationParams, GenerationResult, JobDocument
from genview.settings import Settings, get_settings
from genview.store import ObjectNotFound, ObjectStore, input_key, sha256_hex, view_key_at, view_meta_key
from services.app import base_app
from services.auth import Tenant
from services.errors import GUARDED, ApiError, error_responses, public_error
from services.generator.gallery import add_gallery_route
from services.generator.jobs import cache_job_id, meta_key
from services.generator.wiring import QUEUE_NAME, open_generator_queue
from services.jobs import FitJobDocument, JobWaiter, check_capacity, fit_job, fit_payload
from services.limits import FORM_OVERHEAD, single_valued_form
from services.metrics import ServiceMetrics
from services.tenancy import Ownership, TenantScopedStore
from services.uploads import check_image, read_upload
from services.urls import Urls

DESCRIPTION = "Adaptive Stable unCLIP views (GenView, Eq. 5–9), queue-backed and cached."
CACHE_ID = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{32})$")
VIEW_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
ACCEPTED = {202: {"model": JobDocument, "description": "accepted, not finished yet (see Location)"}}


def create_app(settings: Settings | None = None, queue: JobQueue | None = None,
               store: ObjectStore | None = None) -> FastAPI:
    """The generator API wired to a queue and a store (built from settings unless given)."""
    settings = settings or get_settings()
    queue = queue or open_generator_queue(settings)
    store = store or ObjectStore.from_settings(settings)
    app, metrics = base_app("generator", DESCRIPTION, settings, {QUEUE_NAME: queue}, store, body_limits(settings))
    app.include_router(generator_router(settings, queue, store, metrics))
    add_gallery_route(app, TenantScopedStore(store))
    return app


def body_limits(settings: Settings) -> dict[str, int]:
    """`/generate` takes one image upload plus small form fields."""
    return {"/generate": settings.max_upload_bytes + FORM_OVERHEAD}


class GeneratorRoutes:
    """The state the generator routes share: queue, store, basis cache, tenants, URLs, metrics."""

    def __init__(self, settings: Settings, queue: JobQueue, store: ObjectStore, metrics: ServiceMetrics):
        self.settings, self.queue, self.store, self.metrics = settings, queue, store, metrics
        self.encoder_id = encoder_id("generator", settings.model)
        self.bases = BasisCache(store, self.encoder_id, settings.basis_refresh_s)
        self.owners = Ownership(store)
        self.urls = Urls(settings)
        self.waiter = JobWaiter(queue, settings)

    def document(self, job_id: str, status: str, result: dict | None, cached: bool,
                 error: str | None = None) -> JobDocument:
        """The job document with view URLs (built from the configured public base URL, never from `Host`)."""
        doc = JobDocument.build(job_id, status, result, cached=cached, error=public_error(error),
                               model=self.settings.model)
        for view in doc.views or []:
            view.url = self.urls.view(view.key)
        return doc

    def job_response(self, job: Job) -> JSONResponse:
        """200 with the document when finished, 202 with a Location while queued or running."""
        done = job.status in (DONE, FAILED)
        body = self.document(job.job_id, job.status, job.result if job.status == DONE else None, False, job.error)
        headers = None if done else {"Location": self.urls.path(f"/jobs/{job.job_id}")}
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if done else 202, headers=headers)

    def views_exist(self, result: GenerationResult | dict) -> bool:
        """Cache truth: a result is only served while its views and foreground map are still stored."""
        res = GenerationResult.model_validate(result)
        return all(self.store.exists(k) for k in [*(v.key for v in res.views), res.fg_map])

    def fresh_result(self, sha: str, params: GenerationParams) -> GenerationResult | None:
        """The stored result of (input, params) if all its objects exist; a stale one is removed."""
        try:
            result = GenerationResult.model_validate_json(self.store.get(meta_key(sha, params)))
        except ObjectNotFound:
            return None
        if self.views_exist(result):
            return result
        self.store.delete(meta_key(sha, params))  # its views are gone: regenerate rather than serve dead URLs
        return None

    def lookup(self, tenant: str, data: bytes, policy: NoisePolicy,
               fields: dict) -> tuple[str, GenerationParams, GenerationResult | None]:
        """(input hash, parameters, cached result or None) of a request, in one thread hop; on a hit the tenant
        is recorded as an owner of the input."""
        sha = sha256_hex(data)
        basis = self.bases.fingerprint()
        params = GenerationParams(model=self.settings.model, noise=policy.spec, basis=basis, **fields)
        if uses_fitted_basis(policy) and basis == PER_IMAGE:
            return sha, params, None  # answered 409 once the image is checked
        result = self.fresh_result(sha, params)
        if result is not None:
            self.owners.record(tenant, sha)
        return sha, params, result

    def submit(self, sha: str, params: GenerationParams) -> Job:
        """Queue (or join) the job of (input, params); a finished duplicate whose views vanished is redone."""
        dedup = f"{sha}:{params.hash}"
        job_id, created = self.queue.submit(params.to_payload(sha), dedup)
        job = None if created else self.queue.get(job_id)
        if job is not None and job.status == DONE and not self.views_exist(job.result):
            job_id, created = self.queue.submit(params.to_payload(sha), f"{dedup}:redo:{job_id}")
            job = None if created else self.queue.get(job_id)
        if created:
            self.metrics.submitted()
        return job or Job(job_id, "queued", {}, None, None, 0, 0.0, 0.0)

    def visible_job(self, tenant: str, job_id: str) -> Job:
        job = self.queue.get(job_id)
        if job is None or not self.owners.may_see_job(tenant, job):
            raise ApiError(404, "unknown_job", f"no job {job_id!r} (never submitted, expired, or not yours)")
        return job


def generator_router(settings: Settings, queue: JobQueue, store: ObjectStore, metrics: ServiceMetrics) -> APIRouter:
    """`/generate`, `/jobs`, `/views/{key}`, `/basis` and `/basis/fit`."""
    r = GeneratorRoutes(settings, queue, store, metrics)
    router = APIRouter(tags=["generate"], responses=GUARDED)

    @router.post("/generate", response_model=JobDocument, dependencies=[Depends(single_valued_form)],
                 responses={**ACCEPTED, **error_responses(400, 409, 415, 429, 503)})
    async def generate(
        tenant: Tenant,
        image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
        noise_level: Annotated[str, Form(description=f"'auto' (adaptive, Eq. 8; needs a fitted basis), "
                                         f"'auto:per-image', 'random', 'constant:L' or 0–{MAX_NOISE_LEVEL}")] = "auto",
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
        `noise_level=auto:per-image`)."""
        try:
            policy = parse_noise_policy(noise_level)
        except ValueError as exc:
            raise ApiError(422, "invalid_parameters", [{"field": "noise_level", "message": str(exc)}]) from exc
        data = await read_upload(image, settings.max_upload_bytes, "image")
        fields = dict(num_views=num_views, seed=seed, steps=steps, guidance_scale=guidance_scale, prompt=prompt,
                      size=size)
        sha, params, cached = await anyio.to_thread.run_sync(r.lookup, tenant, data, policy, fields)
        if cached is not None:  # these exact bytes were checked when they were first accepted
            r.metrics.cache_hit()
            doc = r.document(cache_job_id(sha, params), DONE, cached, cached=True)
            return Response(doc.model_dump_json(), media_type="application/json")  # already valid: no re-check
        await check_image(data, settings)
        try:
            require_basis(policy, params.basis != PER_IMAGE)
        except BasisRequired as exc:
            raise ApiError(409, "basis_required", str(exc)) from exc
        await anyio.to_thread.run_sync(r.owners.record, tenant, sha)
        await anyio.to_thread.run_sync(check_capacity, queue, settings)
        await anyio.to_thread.run_sync(store.put, input_key(sha), data)
        job = await anyio.to_thread.run_sync(r.submit, sha, params)
        if wait and job.status not in (DONE, FAILED):
            job = await r.waiter.wait(job.job_id, timeout) or job
        return r.job_response(job)

    @router.get("/jobs/{job_id}", response_model=JobDocument, responses={**ACCEPTED, **error_responses(404, 503)})
    async def get_job(tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]):
        """A job's status; its result (views with URLs, fg ratio, level) once done, its error once failed."""
        match = CACHE_ID.match(job_id)
        if match:
            sha, phash = match.groups()
            result = None
            if await anyio.to_thread.run_sync(r.owners.owns, tenant, sha):
                result = await anyio.to_thread.run_sync(_read_result, store, view_meta_key(sha, phash))
            if result is not None and await anyio.to_thread.run_sync(r.views_exist, result):
                return r.document(job_id, DONE, result, cached=True)
            raise ApiError(404, "unknown_job", f"no job {job_id!r} (never submitted, expired, or not yours)")
        return r.job_response(await anyio.to_thread.run_sync(r.visible_job, tenant, job_id))

    @router.delete("/jobs/{job_id}", response_model=JobDocument, responses=error_responses(404, 409, 503))
    async def cancel_job(tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]):
        """Cancel a job that is still queued (409 `not_cancellable` once a worker has it or it has finished)."""
        job = await anyio.to_thread.run_sync(r.visible_job, tenant, job_id)
        if not await anyio.to_thread.run_sync(queue.cancel, job_id):
            raise ApiError(409, "not_cancellable", f"job {job_id} is {job.status}; only queued jobs can be cancelled")
        job = await anyio.to_thread.run_sync(r.visible_job, tenant, job_id)
        return r.document(job.job_id, job.status, None, False, job.error)

    @router.get("/jobs", response_model=list[JobDocument], responses=error_responses(503))
    async def list_jobs(tenant: Tenant, status: Annotated[Literal["failed"], Query(
                            description="which jobs: `failed` lists the dead letters (jobs that gave up)")],
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100):
        """Jobs by status, for operators: `status=failed` lists failed jobs, newest first, with their errors."""
        jobs = await anyio.to_thread.run_sync(queue.failed, limit)
        visible = [j for j in jobs if await anyio.to_thread.run_sync(r.owners.may_see_job, tenant, j)]
        return [r.document(j.job_id, j.status, None, False, j.error) for j in visible]

    @router.get("/views/{key:path}", response_class=Response, responses={
        200: {"description": "the image", "content": {t: {} for t in set(VIEW_TYPES.values())}},
        304: {"description": "not modified (ETag)"}, **error_responses(400, 404)})
    async def get_view(request: Request, tenant: Tenant, key: Annotated[str, Path(max_length=400)]):
        """A generated view or foreground map; immutable, with an ETag."""
        full = view_key_at(key)
        media_type = VIEW_TYPES.get(full.rsplit(".", 1)[-1])
        if media_type is None:
            raise ApiError(400, "invalid_key", f"view keys end in one of {sorted(VIEW_TYPES)}")
        etag = f'"{sha256_hex(full.encode())[:32]}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"
                   if settings.api_key_set else "public, max-age=31536000, immutable"}
        if not await anyio.to_thread.run_sync(r.owners.may_see_key, tenant, full):
            raise ApiError(404, "unknown_view", f"no view {key!r}")
        if request.headers.get("if-none-match") == etag and await anyio.to_thread.run_sync(store.exists, full):
            return Response(status_code=304, headers=headers)
        try:
            data = await anyio.to_thread.run_sync(store.get, full)
        except ObjectNotFound:
            raise ApiError(404, "unknown_view", f"no view {key!r}") from None
        return Response(data, media_type=media_type, headers=headers)

    @router.get("/basis", response_model=BasisInfo)
    async def basis() -> BasisInfo:
        """The PCA basis adaptive requests are keyed on now ('per-image' when none is fitted)."""
        return BasisInfo(encoder_id=r.encoder_id, basis_id=await anyio.to_thread.run_sync(r.bases.fingerprint))

    @router.post("/basis/fit", response_model=FitJobDocument, status_code=202,
                 responses=error_responses(400, 404, 429, 503))
    async def fit_basis(tenant: Tenant, body: FitBasisJob) -> JSONResponse:
        """Fit the generator's PCA foreground basis (Eq. 7) on `num` stored inputs or the given input keys.

        A queued job that a generator worker runs; poll `GET /basis/jobs/{job_id}`, then `GET /basis`."""
        payload = await anyio.to_thread.run_sync(fit_payload, body, tenant, r.owners)
        await anyio.to_thread.run_sync(check_capacity, queue, settings)
        job_id, created = await anyio.to_thread.run_sync(queue.submit, payload, None)
        if created:
            r.metrics.submitted()
        return JSONResponse(FitJobDocument(job_id=job_id, status="queued").model_dump(mode="json"), status_code=202,
                            headers={"Location": r.urls.path(f"/basis/jobs/{job_id}")})

    @router.get("/basis/jobs/{job_id}", response_model=FitJobDocument, responses=error_responses(404, 503))
    async def get_fit_job(tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]) -> FitJobDocument:
        """The state of a basis fit; its result names the saved basis."""
        return fit_job(await anyio.to_thread.run_sync(queue.get, job_id), tenant, r.owners)

    return router


def _read_result(store: ObjectStore, key: str) -> dict | None:
    try:
        return GenerationResult.model_validate_json(store.get(key)).model_dump()
    except ObjectNotFound:
        return None

