"""Composition of the scorer service: its queue, and its worker built from settings (no HTTP app here)."""

from __future__ import annotations

from genview.queue import JobQueue, open_queue
from genview.settings import Settings
from genview.store import ObjectStore
from services.store_outage import store_aware
from services.workers import ServiceWorker

QUEUE_NAME = "score"
ROLE = "scorer"


def open_scorer_queue(settings: Settings) -> JobQueue:
    return open_queue(settings, QUEUE_NAME)


def build_worker(settings: Settings, store: ObjectStore | None = None) -> ServiceWorker:
    """Load the scorer encoder and wire a worker to the scorer queue and the store."""
    from genview.models.scorer_encoder import ScorerEncoder
    from genview.scoring import PairScorer
    from services.scorer.worker import ScorerWorker

    scorer = PairScorer(ScorerEncoder.load(settings.scorer_model, settings.device, settings.model_cache),
                        settings.max_score_pairs)
    store = store or ObjectStore.from_settings(settings)
    queue = store_aware(open_scorer_queue(settings), store)  # a store outage holds jobs instead of failing them
    worker = ScorerWorker(scorer, queue, store, settings.fg_fraction, settings.max_pixels)
    return ServiceWorker(ROLE, queue, worker.handle)
