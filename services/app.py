"""The base of every GenView HTTP app: offline docs, JSON errors, metrics, the request guard, health probes."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from genview.queue import JobQueue
from genview.settings import Settings, package_version
from genview.store import ObjectStore
from services.errors import install_error_handlers
from services.guard import RequestGuard
from services.health import health_router
from services.metrics import ServiceMetrics

DOCS_ASSETS = "/static/docs"


def base_app(service: str, description: str, settings: Settings, queues: dict[str, JobQueue], store: ObjectStore,
             body_limits: dict[str, int]) -> tuple[FastAPI, ServiceMetrics]:
    """A FastAPI app with everything but its own routes; `/docs` and `/redoc` use assets from an installed package."""
    app = FastAPIOffline(title=f"GenView {service}", version=package_version(), description=description,
                         static_url=DOCS_ASSETS)
    metrics = ServiceMetrics(service, queues)
    install_error_handlers(app)
    app.add_middleware(RequestGuard, settings=settings, body_limits=body_limits)
    metrics.install(app)
    app.include_router(health_router(queues, store))
    return app, metrics
