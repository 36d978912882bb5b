"""Generator HTTP API: accepts images, queues generation jobs, serves results and views."""

from __future__ import annotations

from fastapi import FastAPI

from genview.models.presets import encoder_id
from genview.queue import JobQueue
from genview.settings import Settings, get_settings
from genview.store import ObjectStore
from services import basis_routes
from services.app import base_app
from services.errors import GUARDED
from services.generator import lookup
from services.generator.gallery import add_gallery_route
from services.generator.routes import router
from services.playground import playground_router
from services.generator.wiring import QUEUE_NAME, open_generator_queue
from services.limits import FORM_OVERHEAD
from services.metrics import ServiceMetrics
from services.state import ServiceState
from services.tenancy import TenantScopedStore

DESCRIPTION = "Adaptive Stable unCLIP views (GenView, Eq. 5–9), queue-backed and cached."


def create_app(settings: Settings | None = None, queue: JobQueue | None = None,
               store: ObjectStore | None = None) -> FastAPI:
    """The generator API wired to a queue and a store (built from settings unless given)."""
    settings = settings or get_settings()
    queue = queue or open_generator_queue(settings)
    store = store or ObjectStore.from_settings(settings)
    app, metrics = base_app("generator", DESCRIPTION, settings, {QUEUE_NAME: queue}, store, body_limits(settings))
    install(app, settings, queue, store, metrics)
    add_gallery_route(app, TenantScopedStore(store))
    app.include_router(playground_router())
    return app


def install(app: FastAPI, settings: Settings, queue: JobQueue, store: ObjectStore, metrics: ServiceMetrics) -> None:
    """The generator's routes on `app`, and the state they are given (`app.state.generator`)."""
    app.state.generator = ServiceState(settings, queue, store, metrics, encoder_id("generator", settings.model))
    app.include_router(lookup.router)  # before `router`: its `/views/{key:path}` would take `/views/lookup`
    app.include_router(router)
    app.include_router(basis_routes.router, tags=["generate"], responses=GUARDED)


def body_limits(settings: Settings) -> dict[str, int]:
    """`/generate` takes one image upload plus small form fields."""
    return {"/generate": settings.max_upload_bytes + FORM_OVERHEAD}
