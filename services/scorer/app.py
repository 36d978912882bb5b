"""Scorer HTTP API: pair quality s_f, s_b, q (Eq. 10–12) and batch weights w (Eq. 13), queue-backed and cached."""

from __future__ import annotations

import uuid
from typing import Annotated, BinaryIO

import anyio
import numpy as np
import torch
from fastapi import APIRouter, Depends, FastAPI, File, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from genview.basis import BasisCache
from genview.images import load_rgb
from genview.method.quality import quality_weights
from genview.models.presets import encoder_id
from genview.queue import DONE, FAILED, JobQueue
from genview.schemas import BasisInfo, BatchScoreResult, FitBasisJob, PairScores, ScoreJobDocument, ScoreResult
from genview.settings import Settings, get_settings
from genview.store import ObjectNotFound, ObjectStore, params_hash, score_body_key, score_key, sha256_hex
from services.app import base_app
from services.auth import Tenant
from services.errors import GUARDED, ApiError, error_responses, public_error
from services.jobs import FitJobDocument, JobWaiter, check_capacity, fit_job, fit_payload
from services.limits import FORM_OVERHEAD, single_valued_form
from services.metrics import ServiceMetrics
from services.scorer.pairs import batch_pairs, encode_pairs, pair_from_images
from services.scorer.wiring import QUEUE_NAME, open_scorer_queue
from services.tenancy import Ownership
from services.uploads import image_work, read_upload, spool_body
from services.urls import Urls

DESCRIPTION = "Positive-pair quality by foreground/background similarity (GenView Eq. 10–13)."
BATCH_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {
    "type": "string", "format": "binary", "description": "safetensors with one uint8 tensor 'pairs' [N, 2, H, W, 3], "
    "or JPEG crops: 'pairs_jpeg' (uint8, the files concatenated) and 'lengths' (int64 [N, 2])"}}}}}
ACCEPTED = {202: {"model": ScoreJobDocument, "description": "accepted, not finished within `timeout` (see Location)"}}


def create_app(settings: Settings | None = None, queue: JobQueue | None = None,
               store: ObjectStore | None = None) -> FastAPI:
    """The scorer API wired to a queue and a store (built from settings unless given)."""
    settings = settings or get_settings()
    queue = queue or open_scorer_queue(settings)
    store = store or ObjectStore.from_settings(settings)
    app, metrics = base_app("scorer", DESCRIPTION, settings, {QUEUE_NAME: queue}, store, body_limits(settings))
    app.include_router(scorer_router(settings, queue, store, metrics))
    return app


def body_limits(settings: Settings) -> dict[str, int]:
    """`/score` takes two image uploads; `/score/batch` a tensor body (JPEG crops, or raw ones if small enough)."""
    return {"/score": 2 * settings.max_upload_bytes + FORM_OVERHEAD, "/score/batch": settings.max_score_batch_bytes}


def _image_tensor(data: bytes, max_pixels: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(load_rgb(data, max_pixels)).copy())


def scorer_router(settings: Settings, queue: JobQueue, store: ObjectStore, metrics: ServiceMetrics) -> APIRouter:
    """`/score`, `/score/batch`, `/score/jobs/{job_id}`, `/score/basis` and `/score/basis/fit`."""
    router = APIRouter(tags=["score"], responses=GUARDED)
    scorer_id = encoder_id("scorer", settings.scorer_model)
    bases = BasisCache(store, scorer_id, settings.basis_refresh_s)
    waiter, urls, owners = JobWaiter(queue, settings), Urls(settings), Ownership(store)

    async def scores(body: bytes | BinaryIO, timeout: float, tenant: str,
                     cache: bool) -> tuple[PairScores, bool] | JSONResponse:
        """(scores, cached) of a validated pairs body, from a job (202 if not done within `timeout`).

        With `cache` (single pairs) the body's SHA-256 keys a stored answer and dedups jobs; without (batches:
        training crops never repeat) the body is neither hashed nor kept — a random id names its transient copy."""
        basis = await anyio.to_thread.run_sync(bases.fingerprint)
        phash = params_hash({"model": settings.scorer_model, "basis": basis})
        body_id, dedup = uuid.uuid4().hex, None
        if cache:
            body_id = await anyio.to_thread.run_sync(sha256_hex, body)
            dedup = f"{tenant}:{body_id}:{phash}"
            try:
                cached = await anyio.to_thread.run_sync(store.get, score_key(body_id, phash))
                metrics.cache_hit()
                return PairScores.model_validate_json(cached), True
            except ObjectNotFound:
                pass
        await anyio.to_thread.run_sync(check_capacity, queue, settings)
        await anyio.to_thread.run_sync(lambda: store.put(score_body_key(body_id), body, overwrite=True, durable=False))
        payload = {"body": body_id, "cache": cache, "phash": phash, "basis": basis, "tenant": tenant}
        job_id, created = await anyio.to_thread.run_sync(queue.submit, payload, dedup)
        if created:
            metrics.submitted()
        job = await waiter.wait(job_id, timeout)
        if job is None or job.status == FAILED:
            raise ApiError(503, "scoring_failed", "the scoring job failed; retry later", {"Retry-After": "5"})
        if job.status != DONE:
            doc = ScoreJobDocument(job_id=job_id, status=job.status)
            return JSONResponse(doc.model_dump(mode="json"), status_code=202,
                                headers={"Location": urls.path(f"/score/jobs/{job_id}")})
        return PairScores.model_validate(job.result), False

    @router.post("/score", response_model=ScoreResult, dependencies=[Depends(single_valued_form)],
                 responses={**ACCEPTED, **error_responses(400, 415, 429, 503)})
    async def score(tenant: Tenant, original: Annotated[UploadFile, File(description="the original image")],
                    view: Annotated[UploadFile, File(description="its generated view")],
                    timeout: Annotated[float, Query(gt=0)] = settings.score_timeout_s):
        """Score one pair: foreground similarity s_f, background similarity s_b (Eq. 11) and quality q (Eq. 12)."""
        images = []
        for name, upload in (("original", original), ("view", view)):
            data = await read_upload(upload, settings.max_upload_bytes, name)
            images.append(await image_work(_image_tensor, data, settings.max_pixels, field=name))
        body = await image_work(lambda: encode_pairs(pair_from_images(*images)))
        answer = await scores(body, timeout, tenant, cache=True)
        if isinstance(answer, JSONResponse):
            return answer
        result, cached = answer
        return ScoreResult(s_f=result.s_f[0], s_b=result.s_b[0], q=result.q[0], fg_basis=result.fg_basis,
                           basis_id=result.basis_id, cached=cached, model=settings.scorer_model)

    @router.post("/score/batch", response_model=BatchScoreResult, openapi_extra=BATCH_BODY,
                 responses={**ACCEPTED, **error_responses(400, 429, 503)})
    async def score_batch(request: Request, tenant: Tenant, gamma: Annotated[float, Query(ge=-100, le=100)] = 1.0,
                          timeout: Annotated[float, Query(gt=0)] = settings.score_timeout_s):
        """Score a batch of pairs and weight them (Eq. 13, temperature `gamma`) — the trainer's call."""
        with await spool_body(request) as raw:  # bodies and pairs go through temporary files, never whole in memory
            body = await image_work(batch_pairs, raw, settings.max_score_pairs, settings.max_score_side,
                                    settings.max_pixels, field="pairs_jpeg")
        with body:
            answer = await scores(body, timeout, tenant, cache=False)
        if isinstance(answer, JSONResponse):
            return answer
        result, _ = answer
        w = quality_weights(torch.tensor(result.q), gamma).tolist()
        return BatchScoreResult(**result.model_dump(), gamma=gamma, w=w, model=settings.scorer_model)

    @router.get("/score/jobs/{job_id}", response_model=ScoreJobDocument, responses=error_responses(404, 503))
    async def get_job(tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]) -> ScoreJobDocument:
        """A scoring job's status, and its scores once done."""
        job = await anyio.to_thread.run_sync(queue.get, job_id)
        if job is None or "phash" not in job.payload or not owners.may_see_job(tenant, job):
            raise ApiError(404, "unknown_job", f"no job {job_id!r} (never submitted, expired, or not yours)")
        return ScoreJobDocument(job_id=job_id, status=job.status, error=public_error(job.error),
                                result=PairScores.model_validate(job.result) if job.result else None)

    @router.get("/score/basis", response_model=BasisInfo)
    async def basis() -> BasisInfo:
        """The scorer's PCA basis scores are keyed on now ('per-image' when none is fitted)."""
        return BasisInfo(encoder_id=scorer_id, basis_id=await anyio.to_thread.run_sync(bases.fingerprint))

    @router.post("/score/basis/fit", response_model=FitJobDocument, status_code=202,
                 responses=error_responses(400, 404, 429, 503))
    async def fit_basis(tenant: Tenant, body: FitBasisJob) -> JSONResponse:
        """Fit the scorer's PCA foreground basis on `num` stored inputs or the given input keys (a queued job).

        A scorer worker runs it; poll `GET /score/basis/jobs/{job_id}`, then `GET /score/basis`."""
        payload = await anyio.to_thread.run_sync(fit_payload, body, tenant, owners)
        await anyio.to_thread.run_sync(check_capacity, queue, settings)
        job_id, created = await anyio.to_thread.run_sync(queue.submit, payload, None)
        if created:
            metrics.submitted()
        return JSONResponse(FitJobDocument(job_id=job_id, status="queued").model_dump(mode="json"), status_code=202,
                            headers={"Location": urls.path(f"/score/basis/jobs/{job_id}")})

    @router.get("/score/basis/jobs/{job_id}", response_model=FitJobDocument, responses=error_responses(404, 503))
    async def get_fit_job(tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]) -> FitJobDocument:
        """The state of a scorer basis fit; its result names the saved basis."""
        job = await anyio.to_thread.run_sync(queue.get, job_id)
        return fit_job(job, tenant, owners)

    return router
