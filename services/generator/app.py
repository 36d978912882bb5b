"""Generator HTTP API: accepts images, queues generation jobs, serves results and views."""

from __future__ import annotations

import re

import anyio
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from genview.basis import BasisCache
from genview.images import validate_image
from genview.method.noise import MAX_NOISE_LEVEL, parse_noise_policy
from genview.models.presets import encoder_id
from genview.queue import DONE, FAILED, Job, JobQueue, open_queue
from genview.settings import Settings, get_settings
from genview.store import ObjectNotFound, ObjectStore, input_key, sha256_hex, validate_key, view_meta_key
from services.common import ApiError, ServiceMetrics, base_app, read_json, read_upload, wait_for_job
from services.generator.gallery import add_gallery_route
from services.generator.jobs import GenerationParams, cache_job_id, meta_key

QUEUE_NAME = "generate"
DESCRIPTION = "Adaptive Stable unCLIP views (GenView, Eq. 5–9), queue-backed and cached."
CACHE_ID = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{32})$")


def _document(request: Request, job_id: str, status: str, result: dict | None, cached: bool,
              error: str | None = None) -> dict:
    """The response body for a job: status plus, when done, the result with view URLs."""
    body: dict = {"job_id": job_id, "status": status, "cached": cached}
    if result:
        base = str(request.base_url).rstrip("/")
        body.update({k: v for k, v in result.items() if k != "views"})
        body["views"] = [{"key": v["key"], "url": f"{base}/views/{v['key'].removeprefix('views/')}"}
                         for v in result["views"]]
    if error:
        body["error"] = error
    return body


def _job_response(request: Request, job: Job) -> JSONResponse:
    """200 with the document when finished, 202 with a Location while queued or running."""
    body = _document(request, job.job_id, job.status, job.result, cached=False, error=job.error)
    if job.status in (DONE, FAILED):
        return JSONResponse(body, status_code=200)
    return JSONResponse(body, status_code=202, headers={"Location": f"/jobs/{job.job_id}"})


def create_app(settings: Settings | None = None, queue: JobQueue | None = None,
               store: ObjectStore | None = None) -> FastAPI:
    """The generator API wired to a queue and a store (built from settings unless given)."""
    settings = settings or get_settings()
    queue = queue or open_queue(settings, QUEUE_NAME)
    store = store or ObjectStore.from_settings(settings)
    app, metrics = base_app("generator", DESCRIPTION, settings, {QUEUE_NAME: queue}, store)
    add_routes(app, metrics, settings, queue, store)
    add_gallery_route(app, store)
    return app


def add_routes(app: FastAPI, metrics: ServiceMetrics, settings: Settings, queue: JobQueue,
               store: ObjectStore) -> None:
    """`/generate`, `/jobs/{job_id}`, `/views/{key}` and `/basis` on `app`."""
    bases = BasisCache(store, encoder_id("generator", settings.model), settings.basis_refresh_s)

    @app.get("/basis", tags=["generate"])
    async def basis():
        """The PCA basis requests are keyed on now ('per-image' when none is fitted)."""
        return {"encoder_id": encoder_id("generator", settings.model),
                "basis_id": await anyio.to_thread.run_sync(bases.fingerprint)}

    @app.post("/generate", tags=["generate"], responses={202: {"description": "accepted, not finished yet"}})
    async def generate(
        request: Request,
        image: UploadFile = File(..., description="PNG, JPEG or WebP"),
        noise_level: str = Form("auto", description=f"'auto' (adaptive, Eq. 8), 'random', 'constant:L' or 0–{MAX_NOISE_LEVEL}"),
        num_views: int = Form(1, ge=1, le=8),
        seed: int = Form(0, ge=0, le=2**63 - 1),
        steps: int = Form(20, ge=1, le=200),
        guidance_scale: float = Form(10.0, ge=0.0, le=50.0),
        prompt: str = Form("", max_length=1000),
        size: int = Form(512, ge=16, le=2048, description="output side in pixels (square)"),
        wait: bool = Query(False, description="wait for the result"),
        timeout: float = Query(60.0, gt=0, description="seconds to wait when wait=true"),
    ):
        try:
            policy = parse_noise_policy(noise_level)
        except ValueError as exc:
            raise ApiError(422, "invalid_parameters", [{"field": "noise_level", "message": str(exc)}]) from exc
        data = await read_upload(image, settings.max_upload_bytes, "image")
        await anyio.to_thread.run_sync(validate_image, data, settings.max_pixels)
        sha = sha256_hex(data)
        params = GenerationParams(
            model=settings.model, noise=policy.spec, basis=await anyio.to_thread.run_sync(bases.fingerprint),
            num_views=num_views, seed=seed, steps=steps, guidance_scale=guidance_scale, prompt=prompt, size=size)
        cached = await anyio.to_thread.run_sync(read_json, store, meta_key(sha, params))
        if cached is not None:
            metrics.cache_hits.labels(metrics.service).inc()
            return _document(request, cache_job_id(sha, params), DONE, cached, cached=True)
        await anyio.to_thread.run_sync(store.put, input_key(sha), data)
        job_id, created = await anyio.to_thread.run_sync(
            queue.submit, params.to_payload(sha), f"{sha}:{params.hash}")
        if created:
            metrics.jobs.labels(metrics.service).inc()
        job = await wait_for_job(queue, job_id, min(timeout, settings.max_wait_s) if wait else 0)
        if job is None:
            raise ApiError(500, "job_lost", f"job {job_id} vanished from the queue", job_id=job_id)
        return _job_response(request, job)

    @app.get("/jobs/{job_id}", tags=["generate"])
    async def get_job(request: Request, job_id: str):
        match = CACHE_ID.match(job_id)
        if match:
            result = await anyio.to_thread.run_sync(read_json, store, view_meta_key(*match.groups()))
            if result is not None:
                return _document(request, job_id, DONE, result, cached=True)
        else:
            job = await anyio.to_thread.run_sync(queue.get, job_id)
            if job is not None:
                return _job_response(request, job)
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (never submitted, or expired)")

    @app.get("/views/{key:path}", tags=["generate"], response_class=Response)
    async def get_view(request: Request, key: str):
        full = validate_key(f"views/{key}")
        if not full.endswith(".png"):
            raise ApiError(400, "invalid_key", "view keys end in .png")
        etag = f'"{sha256_hex(full.encode())[:32]}"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        try:
            data = await anyio.to_thread.run_sync(store.get, full)
        except ObjectNotFound:
            raise ApiError(404, "unknown_view", f"no view {key!r}") from None
        return Response(data, media_type="image/png", headers=headers)
