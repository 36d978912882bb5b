"""Scorer HTTP API: pair quality s_f, s_b, q (Eq. 10–12) and batch weights w (Eq. 13), queue-backed and cached."""

from __future__ import annotations

from fastapi import FastAPI

from genview.models.presets import encoder_id
from genview.queue import JobQueue
from genview.settings import Settings, get_settings
from genview.store import ObjectStore
from services import basis_routes
from services.app import base_app
from services.errors import GUARDED
from services.limits import FORM_OVERHEAD
from services.metrics import ServiceMetrics
from services.scorer.routes import router
from services.scorer.wiring import QUEUE_NAME, open_scorer_queue
from services.state import ServiceState

DESCRIPTION = "Positive-pair quality by foreground/background similarity (GenView Eq. 10–13)."


def create_app(settings: Settings | None = None, queue: JobQueue | None = None,
               store: ObjectStore | None = None) -> FastAPI:
    """The scorer API wired to a queue and a store (built from settings unless given)."""
    settings = settings or get_settings()
    queue = queue or open_scorer_queue(settings)
    store = store or ObjectStore.from_settings(settings)
    app, metrics = base_app("scorer", DESCRIPTION, settings, {QUEUE_NAME: queue}, store, body_limits(settings))
    install(app, settings, queue, store, metrics)
    return app


def install(app: FastAPI, settings: Settings, queue: JobQueue, store: ObjectStore, metrics: ServiceMetrics) -> None:
    """The scorer's routes on `app`, and the state they are given (`app.state.scorer`)."""
    app.state.scorer = ServiceState(settings, queue, store, metrics, encoder_id("scorer", settings.scorer_model))
    app.include_router(router)
    app.include_router(basis_routes.router, prefix=basis_routes.SCORER_PREFIX, tags=["score"], responses=GUARDED)


def body_limits(settings: Settings) -> dict[str, int]:
    """`/score` takes two image uploads; `/score/batch` a tensor body (JPEG crops, or raw ones if small enough)."""
    return {"/score": 2 * settings.max_upload_bytes + FORM_OVERHEAD, "/score/batch": settings.max_score_batch_bytes}
