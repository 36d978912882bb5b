"""Generator worker: a thin adapter — claim → decode → ViewGenerator → encode/store → complete."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from genview.basis import BasisCache
from genview.generation import GeneratedViews, ViewGenerator, ViewRequest, require_basis
from genview.images import load_rgb
from genview.models.unclip import UnclipGenerator
from genview.queue import Delivery, JobQueue
from genview.schemas import GenerationParams, GenerationResult, ViewRef
from genview.settings import Settings
from genview.store import ObjectNotFound, ObjectStore, input_key, view_key
from genview.view_encoding import ViewEncoding, encode_fg_map
from services.generator.jobs import fg_map_key, meta_key

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """One accepted delivery with its decoded request."""

    delivery: Delivery
    request: ViewRequest


class GeneratorWorker:
    """Turns generation jobs into stored views and result documents."""

    def __init__(self, settings: Settings, generator: UnclipGenerator, queue: JobQueue, store: ObjectStore):
        self.settings, self.queue, self.store = settings, queue, store
        self.generator = generator
        self.views = ViewGenerator(generator, settings.fg_fraction, settings.max_batch_size)
        self.encoding = ViewEncoding(settings.view_format, settings.view_quality)
        self.bases = BasisCache(store, generator.encoder_id, settings.basis_refresh_s)

    def handle(self, deliveries: list[Delivery]) -> None:
        """Complete or fail every delivery of the batch."""
        jobs = [job for job in map(self.accept, deliveries) if job is not None]
        for i in range(0, len(jobs), self.settings.max_batch_size):
            chunk = jobs[i:i + self.settings.max_batch_size]
            results = self.run(chunk)
            if results is not None:
                for job, generated in zip(chunk, results):
                    self.finish(job, generated)

    def accept(self, delivery: Delivery) -> _Job | None:
        """Decode the job's input, or finish it at once (cached result, bad input, no basis)."""
        try:
            sha, params = GenerationParams.from_payload(delivery.payload)
        except Exception as exc:  # malformed payload
            self.queue.fail(delivery, f"bad job payload: {type(exc).__name__}: {exc}")
            return None
        try:
            self.queue.complete(delivery, self._stored_result(sha, params))
            return None
        except ObjectNotFound:
            pass
        try:
            basis = self.bases.matching(params.basis)
            require_basis(params.policy, basis is not None)
            image = load_rgb(self.store.get(input_key(sha)), self.settings.max_pixels)
        except Exception as exc:
            self.queue.fail(delivery, f"cannot run job for input {sha}: {type(exc).__name__}: {exc}")
            return None
        return _Job(delivery, ViewRequest(image, sha, params, basis))

    def run(self, jobs: list[_Job]) -> list[GeneratedViews] | None:
        """The model call for a chunk; on failure (e.g. out of memory) every job of it is failed (retried)."""
        try:
            return self.views.generate([j.request for j in jobs])
        except Exception as exc:
            log.exception("generation failed for %d jobs", len(jobs))
            for job in jobs:
                self.queue.fail(job.delivery, f"generation failed: {type(exc).__name__}: {exc}")
            return None

    def finish(self, job: _Job, generated: GeneratedViews) -> None:
        """Store the job's views and result, then complete it (or fail it if storing fails)."""
        try:
            result = self.store_result(job.request, generated)
        except Exception as exc:
            log.exception("storing the views of job %s failed", job.delivery.job_id)
            self.queue.fail(job.delivery, f"storing views failed: {type(exc).__name__}: {exc}")
            return
        self.queue.complete(job.delivery, result)

    def _stored_result(self, sha: str, params: GenerationParams) -> dict:
        """The stored result document of (input, params); ObjectNotFound when there is none yet."""
        return GenerationResult.model_validate_json(self.store.get(meta_key(sha, params))).model_dump()

    def store_result(self, request: ViewRequest, generated: GeneratedViews) -> dict:
        """Write views, foreground map and result document (write-once: a rerun changes nothing)."""
        sha, params = request.sha, request.params
        fg_map = fg_map_key(sha, params)
        self.store.put(fg_map, encode_fg_map(generated.fg_map))
        views = []
        for v, img in enumerate(generated.views):
            key = view_key(sha, params.hash, v, self.encoding.ext)
            self.store.put(key, self.encoding.encode(img))
            views.append(ViewRef(key=key))
        result = GenerationResult(fg_ratio=generated.fg_ratio, fg_basis=generated.fg_basis, basis_id=params.basis,
                                  noise_level=generated.level, noise_policy=params.noise, seed=params.seed,
                                  size=params.size, views=views, fg_map=fg_map)
        self.store.put(meta_key(sha, params), result.model_dump_json().encode())
        return self._stored_result(sha, params)
