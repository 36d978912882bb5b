"""`genview serve`: both APIs and their workers in one process (in-memory queues unless Redis is configured)."""

from __future__ import annotations

import logging
import threading

from fastapi import FastAPI

from genview.models.device import resolve_device
from genview.models.errors import ModelLoadError
from genview.models.presets import GENERATOR_PRESETS
from genview.models.scorer_encoder import SCORER_PRESETS
from genview.settings import Settings
from genview.store import ObjectStore
from services.app import base_app
from services.generator import app as generator_app
from services.generator import wiring as generator
from services.generator.gallery import add_gallery_route
from services.playground import playground_router
from services.scorer import app as scorer_app
from services.scorer import wiring as scorer
from services.tenancy import TenantScopedStore

log = logging.getLogger(__name__)


TINY = "tiny"


def with_tiny_models(settings: Settings) -> Settings:
    """The same settings with the tiny presets (small random weights) for both models."""
    return settings.model_copy(update={"model": TINY, "scorer_model": TINY})


def serving_settings(settings: Settings) -> tuple[Settings, str | None]:
    """What `genview serve` runs: the configured models, or the tiny ones (and why) when the real presets have no GPU."""
    real = [m for m in (settings.model, settings.scorer_model) if m in GENERATOR_PRESETS or m in SCORER_PRESETS]
    if real and resolve_device(settings.device).type != "cuda":
        return with_tiny_models(settings), f"no CUDA GPU for {', '.join(real)}"
    return settings, None


def create_embedded_app(settings: Settings, stop: threading.Event) -> FastAPI:
    """Load both models (the tiny ones when the real weights cannot be loaded), start the workers, return the API."""
    store = ObjectStore.from_settings(settings)
    try:
        workers = [generator.build_worker(settings, store), scorer.build_worker(settings, store)]
    except ModelLoadError as exc:
        if settings.model == TINY and settings.scorer_model == TINY:
            raise
        log.warning("serving the tiny random models (meaningless pictures): the configured ones did not load: %s", exc)
        settings = with_tiny_models(settings)
        workers = [generator.build_worker(settings, store), scorer.build_worker(settings, store)]
    queues = {generator.QUEUE_NAME: workers[0].queue, scorer.QUEUE_NAME: workers[1].queue}
    limits = {**generator_app.body_limits(settings), **scorer_app.body_limits(settings)}
    app, metrics = base_app("embedded", "GenView generator and scorer in one process.", settings, queues, store,
                            limits)
    generator_app.install(app, settings, workers[0].queue, store, metrics)
    scorer_app.install(app, settings, workers[1].queue, store, metrics)
    add_gallery_route(app, TenantScopedStore(store))
    app.include_router(playground_router())
    for worker in workers:
        if worker.registry is not None:  # the workers' metrics (GPU-idle share) on this app's /metrics
            metrics.registry.register(worker.registry)
        worker.start(settings, stop)
    return app
