"""Generation jobs as the API sees them: cache look-up, submission, visibility and their documents."""

from __future__ import annotations

import re

from fastapi import Response

from genview.basis import PER_IMAGE, uses_fitted_basis
from genview.method.noise import NoisePolicy
from genview.queue import DONE, FAILED, Job
from genview.schemas import GenerateJob, GenerationJobDocument, GenerationParams, GenerationResult, to_queue
from genview.store import ObjectNotFound, ObjectStore, sha256_hex, view_meta_key
from services.errors import ApiError, public_error
from services.state import ServiceState

CACHE_ID = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{32})$")  # the job id of a cached answer: `cache_job_id`


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


def job_document(service: ServiceState, job: Job) -> GenerationJobDocument:
    result = GenerationResult.model_validate(job.result) if job.status == DONE and job.result else None
    return document(service, job.job_id, job.status, result, False, job.error, job)


def job_response(service: ServiceState, job: Job) -> Response:
    """200 with the document when finished, 202 with a Location while queued or running."""
    done = job.status in (DONE, FAILED)
    headers = None if done else {"Location": service.urls.path(f"/jobs/{job.job_id}")}
    return Response(job_document(service, job).model_dump_json(), status_code=200 if done else 202,
                    media_type="application/json", headers=headers)


def views_exist(store: ObjectStore, result: GenerationResult) -> bool:
    """Cache truth: a result is only served while its views and foreground map are still stored."""
    return all(store.exists(k) for k in [*(v.key for v in result.views), result.fg_map])


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


def lookup(service: ServiceState, tenant: str, data: bytes, policy: NoisePolicy,
           fields: dict) -> tuple[str, GenerationParams, GenerationResult | None]:
    """(input hash, parameters, cached result or None) of a request, in one thread hop; on a hit the tenant
    is recorded as an owner of the input."""
    sha = sha256_hex(data)
    basis = service.bases.fingerprint()
    params = GenerationParams(model=service.settings.model, noise_policy=policy, basis=basis, **fields)
    if uses_fitted_basis(policy) and basis == PER_IMAGE:
        return sha, params, None  # answered 409 once the image is checked
    result = fresh_result(service.store, sha, params)
    if result is not None:
        service.owners.record(tenant, sha)
    return sha, params, result


def submit(service: ServiceState, sha: str, params: GenerationParams) -> Job:
    """Queue (or join) the job of (input, params); a finished duplicate whose views vanished is redone."""
    queue, payload, dedup = service.queue, to_queue(GenerateJob(sha=sha, params=params)), f"{sha}:{params.hash}"
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


def visible_job(service: ServiceState, tenant: str, job_id: str) -> Job:
    job = service.queue.get(job_id)
    if job is None or not service.owners.may_see_job(tenant, job):
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (never submitted, expired, or not yours)")
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
