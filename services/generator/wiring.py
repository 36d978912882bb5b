"""Composition of the generator service: its queue, and its worker built from settings (no HTTP app here)."""

from __future__ import annotations

from genview.queue import JobQueue, open_queue
from genview.settings import Settings
from genview.store import ObjectStore
from services.store_outage import store_aware
from services.workers import ServiceWorker

QUEUE_NAME = "generate"
ROLE = "generator"


def open_generator_queue(settings: Settings) -> JobQueue:
    return open_queue(settings, QUEUE_NAME)


def build_worker(settings: Settings, store: ObjectStore | None = None) -> ServiceWorker:
    """Load the generator model and wire a worker to the generator queue and the store."""
    from genview.models.acceleration import Acceleration
    from genview.models.unclip import UnclipGenerator
    from services.generator.worker import GeneratorWorker

    generator = UnclipGenerator.load(settings.model, settings.device, settings.model_cache,
                                     Acceleration.from_settings(settings))
    store = store or ObjectStore.from_settings(settings)
    queue = store_aware(open_generator_queue(settings), store)  # a store outage holds jobs instead of failing them
    worker = GeneratorWorker(settings, generator, queue, store)
    return ServiceWorker(ROLE, queue, worker.submit, worker.close,  # pipelined: stores overlap the next batch
                         worker.registry)
