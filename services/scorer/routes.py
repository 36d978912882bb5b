"""The scorer's routes: `/score`, `/score/batch` and `/score/jobs/{job_id}` (`/score/basis…`: services/basis_routes.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, BinaryIO, Literal

import anyio
import numpy as np
import torch
from fastapi import APIRouter, Depends, File, Path, Query, Request, UploadFile
from fastapi.responses import Response

from genview.images import load_rgb
from genview.method.quality import quality_weights
from genview.basis import PER_IMAGE
from genview.queue import DONE, FAILED
from genview.schemas import SCORE, BatchScoreResult, PairScores, ScoreJob, ScoreJobDocument, ScoreResult, to_queue
from genview.store import ObjectNotFound, params_hash, score_body_key, score_key, sha256_hex
from services.auth import Tenant
from services.basis_routes import required_basis
from services.errors import GUARDED, ApiError, error_responses, public_error
from services.jobs import check_capacity
from services.limits import single_valued_form
from services.scorer.pairs import batch_pairs, encode_pairs, pair_from_images
from services.state import Scorer, ServiceState
from services.uploads import image_work, read_upload, spool_body

BATCH_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {
    "type": "string", "format": "binary", "description": "safetensors with one uint8 tensor 'pairs' [N, 2, H, W, 3], "
    "or JPEG crops: 'pairs_jpeg' (uint8, the files concatenated) and 'lengths' (int64 [N, 2])"}}}}}
ACCEPTED = {202: {"model": ScoreJobDocument, "description": "accepted, not finished within `timeout` (see Location)"}}
TIMEOUT_HELP = "seconds to wait before answering 202 (default GENVIEW_SCORE_TIMEOUT_S)"
BasisChoice = Annotated[Literal["per-image"] | None, Query(
    description="`per-image`: score with each crop's own PCA instead of your fitted basis (asked for by name; "
    "without it a request with no fitted or imported basis is a 409 `basis_required`)")]
router = APIRouter(tags=["score"], responses=GUARDED)


def _image_tensor(data: bytes, max_pixels: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(load_rgb(data, max_pixels)).copy())


async def request_basis(service: ServiceState, tenant: str, choice: str | None) -> str | None:
    """The basis version a scoring request uses, resolved once, before its body is read: the tenant's current one
    (409 `basis_required` without one), or None when per-image scoring is asked for by name."""
    return None if choice == PER_IMAGE else await anyio.to_thread.run_sync(required_basis, service, tenant)


async def scores(service: ServiceState, body: bytes | BinaryIO, timeout: float | None, tenant: str, cache: bool,
                 basis: str | None) -> tuple[PairScores, bool] | Response:
    """(scores, cached) of a validated pairs body under basis version `basis` (None: per-image), from a job
    (202 if not done within `timeout`); the job carries the basis id.

    With `cache` (single pairs) the tenant, the body's SHA-256 and the parameters key a stored answer and dedup
    jobs; without (batches: training crops never repeat) the body is neither hashed nor kept — a random id names
    its transient copy."""
    settings, store, queue = service.settings, service.store, service.queue
    phash = params_hash({"model": settings.scorer_model, "basis": basis or PER_IMAGE})
    body_id, dedup = uuid.uuid4().hex, None
    if cache:
        body_id = await anyio.to_thread.run_sync(sha256_hex, body)
        dedup = f"{tenant}:{body_id}:{phash}"
        try:
            cached = await anyio.to_thread.run_sync(store.get, score_key(tenant, body_id, phash))
            service.metrics.cache_hit()
            return PairScores.model_validate_json(cached), True
        except ObjectNotFound:
            pass
    await anyio.to_thread.run_sync(check_capacity, queue, settings)
    await anyio.to_thread.run_sync(lambda: store.put(score_body_key(tenant, body_id), body, overwrite=True,
                                                     durable=False))
    job = ScoreJob(body=body_id, cache=cache, phash=phash, basis=basis, tenant=tenant)
    job_id, created = await anyio.to_thread.run_sync(queue.submit, to_queue(job), dedup)
    if created:
        service.metrics.submitted()
    done = await service.waiter.wait(job_id, timeout or settings.score_timeout_s)
    if done is None or done.status == FAILED:
        raise ApiError(503, "scoring_failed", "the scoring job failed; retry later", {"Retry-After": "5"})
    if done.status != DONE:
        doc = ScoreJobDocument.of(done)
        return Response(doc.model_dump_json(), status_code=202, media_type="application/json",
                        headers={"Location": service.urls.path(f"/score/jobs/{job_id}")})
    return PairScores.model_validate(done.result), False


@router.post("/score", response_model=ScoreResult, dependencies=[Depends(single_valued_form)],
             responses={**ACCEPTED, **error_responses(400, 409, 415, 429, 503)})
async def score(service: Scorer, tenant: Tenant, original: Annotated[UploadFile, File(description="the original image")],
                view: Annotated[UploadFile, File(description="its generated view")],
                timeout: Annotated[float | None, Query(gt=0, description=TIMEOUT_HELP)] = None,
                basis: BasisChoice = None):
    """Score one pair: foreground similarity s_f, background similarity s_b (Eq. 11) and quality q (Eq. 12)."""
    settings = service.settings
    basis_id = await request_basis(service, tenant, basis)
    images = []
    for name, upload in (("original", original), ("view", view)):
        data = await read_upload(upload, settings.max_upload_bytes, name)
        images.append(await image_work(_image_tensor, data, settings.max_pixels, field=name))
    body = await image_work(lambda: encode_pairs(pair_from_images(*images)))
    answer = await scores(service, body, timeout, tenant, cache=True, basis=basis_id)
    if isinstance(answer, Response):
        return answer
    result, cached = answer
    return ScoreResult(s_f=result.s_f[0], s_b=result.s_b[0], q=result.q[0], fg_basis=result.fg_basis,
                       basis_id=result.basis_id, cached=cached, model=settings.scorer_model)


@router.post("/score/batch", response_model=BatchScoreResult, openapi_extra=BATCH_BODY,
             responses={**ACCEPTED, **error_responses(400, 409, 429, 503)})
async def score_batch(request: Request, service: Scorer, tenant: Tenant,
                      gamma: Annotated[float, Query(ge=-100, le=100)] = 1.0,
                      timeout: Annotated[float | None, Query(gt=0, description=TIMEOUT_HELP)] = None,
                      basis: BasisChoice = None):
    """Score a batch of pairs and weight them (Eq. 13, temperature `gamma`) — the trainer's call."""
    settings = service.settings
    basis_id = await request_basis(service, tenant, basis)
    with await spool_body(request) as raw:  # bodies and pairs go through temporary files, never whole in memory
        body = await image_work(batch_pairs, raw, settings.max_score_pairs, settings.max_score_side,
                                settings.max_pixels, field="pairs_jpeg")
    with body:
        answer = await scores(service, body, timeout, tenant, cache=False, basis=basis_id)
    if isinstance(answer, Response):
        return answer
    result, _ = answer
    w = quality_weights(torch.tensor(result.q), gamma).tolist()
    return BatchScoreResult(**result.model_dump(), gamma=gamma, w=w, model=settings.scorer_model)


@router.get("/score/jobs/{job_id}", response_model=ScoreJobDocument, responses=error_responses(404, 503))
async def get_job(service: Scorer, tenant: Tenant, job_id: Annotated[str, Path(max_length=200)]) -> ScoreJobDocument:
    """A scoring job's status, and its scores once done."""
    job = await anyio.to_thread.run_sync(service.queue.get, job_id)
    if job is None or job.payload.get("kind") != SCORE or not service.owners.may_see_job(tenant, job):
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (never submitted, expired, or not yours)")
    return ScoreJobDocument.of(job, public_error(job.error))
