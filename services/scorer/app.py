"""Scorer HTTP API: pair quality s_f, s_b, q (Eq. 10–12) and batch weights w (Eq. 13), queue-backed and cached."""

from __future__ import annotations

import anyio
import numpy as np
import torch
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from genview.basis import BasisCache
from genview.images import load_rgb
from genview.method.quality import quality_weights
from genview.models.presets import encoder_id
from genview.queue import DONE, FAILED, JobQueue, open_queue
from genview.settings import Settings, get_settings
from genview.store import ObjectStore, input_key, params_hash, score_key, sha256_hex
from services.common import ApiError, ServiceMetrics, base_app, read_json, read_upload, wait_for_job
from services.scorer.pairs import encode_pairs, pair_from_images, parse_pairs

QUEUE_NAME = "score"
DESCRIPTION = "Positive-pair quality by foreground/background similarity (GenView Eq. 10–13)."


def create_app(settings: Settings | None = None, queue: JobQueue | None = None,
               store: ObjectStore | None = None) -> FastAPI:
    """The scorer API wired to a queue and a store (built from settings unless given)."""
    settings = settings or get_settings()
    queue = queue or open_queue(settings, QUEUE_NAME)
    store = store or ObjectStore.from_settings(settings)
    app, metrics = base_app("scorer", DESCRIPTION, settings, {QUEUE_NAME: queue}, store, body_limits(settings))
    add_routes(app, metrics, settings, queue, store)
    return app


def body_limits(settings: Settings) -> dict[str, int]:
    """`/score/batch` takes a raw tensor body, larger than an image upload."""
    return {"/score/batch": settings.max_score_pairs * 2 * settings.max_score_side ** 2 * 3 + 1024 * 1024}


def add_routes(app: FastAPI, metrics: ServiceMetrics, settings: Settings, queue: JobQueue,
               store: ObjectStore) -> None:
    """`/score`, `/score/batch` and `/score/jobs/{job_id}` on `app`."""
    bases = BasisCache(store, encoder_id("scorer", settings.scorer_model), settings.basis_refresh_s)

    async def scores(body: bytes, timeout: float) -> dict | JSONResponse:
        """The cached or freshly computed {s_f, s_b, q, fg_basis} of a validated pairs body."""
        sha = await anyio.to_thread.run_sync(sha256_hex, body)
        basis = await anyio.to_thread.run_sync(bases.fingerprint)
        phash = params_hash({"model": settings.scorer_model, "basis": basis})
        cached = await anyio.to_thread.run_sync(read_json, store, score_key(sha, phash))
        if cached is not None:
            metrics.cache_hits.labels(metrics.service).inc()
            return {**cached, "cached": True}
        await anyio.to_thread.run_sync(store.put, input_key(sha), body)
        job_id, created = await anyio.to_thread.run_sync(
            queue.submit, {"sha": sha, "phash": phash, "basis": basis}, f"{sha}:{phash}")
        if created:
            metrics.jobs.labels(metrics.service).inc()
        job = await wait_for_job(queue, job_id, min(timeout, settings.max_wait_s))
        if job is None or job.status == FAILED:
            raise ApiError(500, "scoring_failed", job.error if job else "the job vanished", job_id=job_id)
        if job.status != DONE:
            return JSONResponse({"job_id": job_id, "status": job.status}, status_code=202,
                                headers={"Location": f"/score/jobs/{job_id}"})
        return {**job.result, "cached": False}

    @app.post("/score", tags=["score"])
    async def score(original: UploadFile = File(...), view: UploadFile = File(...),
                    timeout: float = Query(settings.score_timeout_s, gt=0)):
        images = []
        for name, upload in (("original", original), ("view", view)):
            data = await read_upload(upload, settings.max_upload_bytes, name)
            img = await anyio.to_thread.run_sync(load_rgb, data, settings.max_pixels)
            images.append(torch.from_numpy(np.asarray(img).copy()))
        body = encode_pairs(pair_from_images(*images))
        result = await scores(body, timeout)
        if isinstance(result, JSONResponse):
            return result
        return {k: (v[0] if isinstance(v, list) else v) for k, v in result.items()}

    @app.post("/score/batch", tags=["score"],
              openapi_extra={"requestBody": {"content": {"application/octet-stream": {
                  "schema": {"type": "string", "format": "binary",
                             "description": "safetensors with one uint8 tensor 'pairs' [N, 2, H, W, 3]"}}}}})
    async def score_batch(request: Request, gamma: float = Query(1.0, ge=-100, le=100),
                          timeout: float = Query(settings.score_timeout_s, gt=0)):
        body = await request.body()
        await anyio.to_thread.run_sync(parse_pairs, body, settings.max_score_pairs, settings.max_score_side)
        result = await scores(body, timeout)
        if isinstance(result, JSONResponse):
            return result
        return {**result, "gamma": gamma, "w": quality_weights(torch.tensor(result["q"]), gamma).tolist()}

    @app.get("/score/jobs/{job_id}", tags=["score"])
    async def get_job(job_id: str):
        job = await anyio.to_thread.run_sync(queue.get, job_id)
        if job is None:
            raise ApiError(404, "unknown_job", f"no job {job_id!r} (never submitted, or expired)")
        return {"job_id": job_id, "status": job.status, "result": job.result, "error": job.error}
