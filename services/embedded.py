"""`genview serve`: both APIs and their workers in one process (in-memory queues unless Redis is configured)."""

from __future__ import annotations

import threading

from fastapi import FastAPI

from genview.models.device import resolve_device
from genview.models.errors import ModelLoadError
from genview.models.presets import GENERATOR_PRESETS
from genview.models.scorer_encoder import SCORER_PRESETS, ScorerEncoder
from genview.models.unclip import UnclipGenerator
from genview.queue import open_queue
from genview.scoring import PairScorer
from genview.settings import Settings
from genview.store import ObjectStore
from services.common import base_app
from services.generator.app import QUEUE_NAME as GENERATE_QUEUE
from services.generator.app import add_routes as add_generator_routes
from services.generator.gallery import add_gallery_route
from services.generator.worker import GeneratorWorker
from services.scorer.app import QUEUE_NAME as SCORE_QUEUE
from services.scorer.app import add_routes as add_scorer_routes
from services.scorer.app import body_limits
from services.scorer.worker import ScorerWorker
from services.worker_loop import consumer_name, run_worker


def check_device(settings: Settings) -> None:
    """Real presets need a GPU: say so, and what to run instead, before loading anything."""
    real = [m for m in (settings.model, settings.scorer_model) if m in GENERATOR_PRESETS or m in SCORER_PRESETS]
    if real and resolve_device(settings.device).type != "cuda":
        raise ModelLoadError(
            f"the real model presets {real} need a CUDA GPU, and none is available (GENVIEW_DEVICE="
            f"{settings.device}). On a CPU run the tiny presets instead: "
            "GENVIEW_MODEL=tiny GENVIEW_SCORER_MODEL=tiny genview serve")


def create_embedded_app(settings: Settings, stop: threading.Event) -> FastAPI:
    """Load both models, start one worker thread per service, and return the combined API."""
    check_device(settings)
    unclip = UnclipGenerator.load(settings.model, settings.device, settings.model_cache, settings.compile)
    pair_scorer = PairScorer(ScorerEncoder.load(settings.scorer_model, settings.device, settings.model_cache),
                             settings.max_score_pairs)
    store = ObjectStore.from_settings(settings)
    gen_queue = open_queue(settings, GENERATE_QUEUE)
    score_queue = open_queue(settings, SCORE_QUEUE)
    app, metrics = base_app("embedded", "GenView generator and scorer in one process.", settings,
                            {GENERATE_QUEUE: gen_queue, SCORE_QUEUE: score_queue}, store,
                            body_limits(settings))
    add_generator_routes(app, metrics, settings, gen_queue, store)
    add_gallery_route(app, store)
    add_scorer_routes(app, metrics, settings, score_queue, store)
    workers = [(gen_queue, GeneratorWorker(settings, unclip, gen_queue, store).handle, "generator"),
               (score_queue, ScorerWorker(pair_scorer, score_queue, store, settings.basis_refresh_s).handle, "scorer")]
    for queue, handle, role in workers:
        threading.Thread(target=run_worker, name=f"{role}-worker", daemon=True,
                         args=(queue, handle, consumer_name(role), settings.max_batch_size,
                               settings.max_batch_wait_ms, stop)).start()
    return app
