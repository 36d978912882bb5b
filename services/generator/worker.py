"""Generator worker: a thin, pipelined adapter — claim → decode → ViewGenerator → encode/store → complete.

Decoding of a batch runs in a bounded thread pool before the model call, and encoding/storing of a batch
runs there after it. `submit` (the run loop's handler) returns after the model calls, so the stores of batch
k overlap the decoding and generation of batch k+1; `handle` waits for them (every delivery finished on
return). `GENVIEW_ENCODE_THREADS=0` runs everything in the calling thread (the serial path, byte-identical).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from genview.basis import BasisStore, require_basis
from genview.generation import GeneratedViews, ViewGenerator, ViewRequest
from genview.images import load_rgb
from genview.models.unclip import UnclipGenerator
from genview.pca_fit import run_fit_job
from genview.queue import Delivery, JobQueue
from genview.schemas import INVALID_PAYLOAD, FitBasisJob, GenerateJob, GenerationParams, GenerationResult, ViewRef
from genview.settings import Settings
from genview.store import ObjectNotFound, ObjectStore, fg_map_key, input_key, sha256_hex, view_key, view_meta_key
from genview.view_encoding import ViewEncoding, encode_fg_map
from services.workers import fail_job, finish_fit_job, typed_payloads

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """One accepted delivery with its decoded request."""

    delivery: Delivery
    request: ViewRequest


def _run_inline(fn, *args) -> Future:
    """A finished future holding `fn(*args)`'s result or exception."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:
        future.set_exception(exc)
    return future


class IdleMeter:
    """Share of the handler's wall time spent outside model calls (the GPU-idle share between batches)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.model_s = 0.0
        self.wall_s = 0.0

    def add(self, wall_s: float, model_s: float) -> None:
        with self._lock:
            self.wall_s += wall_s
            self.model_s += model_s

    def ratio(self) -> float:
        with self._lock:
            return 0.0 if self.wall_s == 0 else max(0.0, 1.0 - self.model_s / self.wall_s)


class GeneratorWorker:
    """Turns generation jobs into stored views and result documents, and fit-basis jobs into a saved basis."""

    def __init__(self, settings: Settings, generator: UnclipGenerator, queue: JobQueue, store: ObjectStore,
                 encoding: ViewEncoding | None = None):
        self.settings, self.queue, self.store = settings, queue, store
        self.generator = generator
        self.views = ViewGenerator(generator, settings.fg_fraction, settings.max_batch_size, settings.compile)
        self.encoding = encoding or ViewEncoding(settings.view_format, settings.view_quality)
        self.bases = BasisStore(store, generator.encoder_id)  # versions by id, the ones in use kept decoded
        threads = settings.encode_threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="generator-io") if threads else None
        self._storing: list[Future] = []  # encode/store tasks of the previous batch
        self.idle = IdleMeter()
        self.registry = CollectorRegistry()
        Gauge("genview_worker_gpu_idle_ratio", "share of the worker's handler time outside model calls",
              registry=self.registry).set_function(self.idle.ratio)

    def handle(self, deliveries: list[Delivery]) -> None:
        """Complete or fail every delivery before returning (the serial contract of a batch handler)."""
        self.submit(deliveries)
        self.wait_stored()

    def submit(self, deliveries: list[Delivery]) -> None:
        """The pipelined handler: returns after the model calls; this batch's stores finish while the next
        batch is decoded and generated (the next `submit`, `wait_stored` or `close` waits for them)."""
        start = time.perf_counter()
        generations = []
        for delivery, payload in typed_payloads(self.queue, deliveries):
            if isinstance(payload, FitBasisJob):
                self.fit(delivery, payload)
            elif isinstance(payload, GenerateJob):
                generations.append((delivery, payload))
            else:
                self.queue.fail(delivery, f"{INVALID_PAYLOAD}: a generator worker runs no {payload.kind!r} jobs",
                                permanent=True)
        # decoded in the pool; a lone job here (an idle worker's: no hop to overlap anything with)
        accepted = [f.result() for f in self._submit(self.accept, generations, inline=len(generations) < 2)]
        jobs = [job for job in accepted if job is not None]
        model_s = 0.0
        storing: list[Future] = []
        for i in range(0, len(jobs), self.settings.max_batch_size):
            chunk = jobs[i:i + self.settings.max_batch_size]
            t0 = time.perf_counter()
            results = self.run(chunk)
            model_s += time.perf_counter() - t0
            if results is not None:
                storing += self._submit(self.finish, list(zip(chunk, results)))
        self.wait_stored()  # the previous batch's stores: they ran while this batch was decoded and generated
        self._storing = storing
        self.idle.add(time.perf_counter() - start, model_s)

    def _submit(self, fn, calls: list[tuple], inline: bool = False) -> list[Future]:
        """Each call as a future: in the pool, or inline (asked for, serial path, or a pool that refuses work)."""
        futures = []
        for args in calls:
            if self.pool is not None and not inline:
                try:
                    futures.append(self.pool.submit(fn, *args))
                    continue
                except RuntimeError:  # the pool is shut down: do the work here, the delivery still finishes
                    log.warning("the generator's I/O pool refused work; running it inline")
            futures.append(_run_inline(fn, *args))
        return futures

    def wait_stored(self) -> None:
        """Block until the stores of the last handled batch have finished (a failed one is redelivered)."""
        for future in self._storing:
            if future.exception() is not None:
                log.error("finishing a job failed; it will be redelivered", exc_info=future.exception())
        self._storing = []

    def close(self) -> None:
        """Finish pending stores and stop the pool."""
        self.wait_stored()
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def accept(self, delivery: Delivery, job: GenerateJob) -> _Job | None:
        """Decode the job's input, or finish it at once (cached result, bad input, no basis)."""
        sha, params = job.sha, job.params
        try:
            self.queue.complete(delivery, self._stored_result(sha, params))
            return None
        except ObjectNotFound:
            pass
        except Exception as exc:
            self.queue.fail(delivery, f"cannot read the stored result of {sha}: {type(exc).__name__}: {exc}")
            return None
        try:
            basis = None if params.basis is None else self.bases.load(params.basis)  # the version it was accepted with
            require_basis(params.noise_policy, basis is not None)
            image = load_rgb(self.stored_input(sha), self.settings.max_pixels)
        except Exception as exc:
            fail_job(self.queue, delivery, f"cannot run job for input {sha}", exc)
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
        """Store the job's views and result, then complete it (or fail it if encoding or storing fails)."""
        try:
            result = self.store_result(job.request, generated)
        except Exception as exc:
            log.exception("storing the views of job %s failed", job.delivery.job_id)
            self.queue.fail(job.delivery, f"storing views failed: {type(exc).__name__}: {exc}")
            return
        self.queue.complete(job.delivery, result)

    def fit(self, delivery: Delivery, job: FitBasisJob) -> None:
        """A `fit-basis` job: fit a new basis version on stored inputs, save it, complete with the result."""
        finish_fit_job(self.queue, delivery, lambda: run_fit_job(
            job, self.store, self.generator, self.settings.fg_fraction, self.settings.max_pixels,
            self.settings.max_batch_size))

    def stored_input(self, sha: str) -> bytes:
        """The stored input `sha` (written without fsync by `/generate`); a copy a crash cut short is removed."""
        data = self.store.get(input_key(sha))
        if sha256_hex(data) != sha:
            self.store.delete(input_key(sha))
            raise ObjectNotFound(f"{input_key(sha)} was damaged (cut short by a crash); send the image again")
        return data

    def _stored_result(self, sha: str, params: GenerationParams) -> dict:
        """The stored result document of (input, params) while every object it names exists; ObjectNotFound when
        there is none yet (or its views are gone)."""
        key = view_meta_key(sha, params.hash)
        result = GenerationResult.model_validate_json(self.store.get(key))
        if not all(self.store.exists(k) for k in result.object_keys()):
            raise ObjectNotFound(key)
        return result.model_dump()

    def store_result(self, request: ViewRequest, generated: GeneratedViews) -> dict:
        """Write views, foreground map and result document in one durable commit, the document visible last
        (write-once: a rerun changes nothing). Readers serve a document only while every object it names exists
        (`GenerationResult.object_keys`)."""
        sha, params = request.sha, request.params
        fg_map, meta = fg_map_key(sha, params.hash), view_meta_key(sha, params.hash)
        objects = {fg_map: encode_fg_map(generated.fg_map)}
        for v, img in enumerate(generated.views):
            objects[view_key(sha, params.hash, v, self.encoding.ext)] = self.encoding.encode(img)
        views = [ViewRef(key=key) for key in objects if key != fg_map]
        result = GenerationResult(fg_ratio=generated.fg_ratio, fg_basis=generated.fg_basis, basis_id=params.basis,
                                  noise_level=generated.noise_level, noise_policy=params.noise_policy, seed=params.seed,
                                  size=params.size, views=views, fg_map=fg_map)
        if meta in self.store.put_many({**objects, meta: result.model_dump_json().encode()}, last=meta):
            return result.model_dump()
        return self._stored_result(sha, params)  # an earlier delivery wrote it first: its document stands
