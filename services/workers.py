"""A service worker ready to run: its queue, its batch handler and its role (for logs and consumer names)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from genview.basis import BasisRequired, UnknownBasis
from genview.pca_fit import TooFewImages
from genview.queue import Delivery, JobQueue
from genview.schemas import InvalidPayload, JobPayload, parse_payload
from genview.settings import Settings
from services.worker_loop import consumer_name, run_worker

log = logging.getLogger(__name__)


def typed_payloads(queue: JobQueue, deliveries: list[Delivery]) -> list[tuple[Delivery, JobPayload]]:
    """Each delivery with its validated payload; one that is no JobPayload fails for good (`invalid_payload`)."""
    typed = []
    for delivery in deliveries:
        try:
            typed.append((delivery, parse_payload(delivery.payload)))
        except InvalidPayload as exc:
            log.error("job %s: %s", delivery.job_id, exc)
            queue.fail(delivery, str(exc), permanent=True)
    return typed


PERMANENT = (UnknownBasis, BasisRequired, TooFewImages)  # failures a retry cannot fix


def fail_job(queue: JobQueue, delivery: Delivery, error: str, exc: Exception) -> bool:
    """Fail a job with `error: <exception>`; for good when retrying cannot help (`PERMANENT`)."""
    return queue.fail(delivery, f"{error}: {type(exc).__name__}: {exc}", permanent=isinstance(exc, PERMANENT))


def finish_fit_job(queue: JobQueue, delivery: Delivery, fit: Callable[[], BaseModel]) -> None:
    """Run a `fit-basis` job's `fit()` and complete the job with its result (or fail it with the error)."""
    try:
        result = fit()
    except Exception as exc:
        log.exception("basis fit %s failed", delivery.job_id)
        fail_job(queue, delivery, "basis fit failed", exc)
        return
    queue.complete(delivery, result.model_dump())


@dataclass
class ServiceWorker:
    """What `build_worker(settings)` of each service returns; `run` serves until `stop` is set."""

    role: str
    queue: JobQueue
    handle: Callable[[list[Delivery]], None]
    close: Callable[[], None] | None = None  # finishes work the handler left running (a pipelined worker's stores)
    registry: CollectorRegistry | None = None  # the worker's own metrics (GPU-idle share)

    def run(self, settings: Settings, stop: threading.Event) -> None:
        try:
            run_worker(self.queue, self.handle, consumer_name(self.role), settings.max_batch_size,
                       settings.max_batch_wait_ms, stop, heartbeat_file=settings.heartbeat_file)
        finally:
            if self.close is not None:
                self.close()

    def start(self, settings: Settings, stop: threading.Event) -> threading.Thread:
        """`run` in a daemon thread (the embedded mode)."""
        thread = threading.Thread(target=self.run, args=(settings, stop), name=f"{self.role}-worker", daemon=True)
        thread.start()
        return thread
