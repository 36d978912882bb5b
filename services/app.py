"""The base of every GenView HTTP app: offline docs, JSON errors, metrics, the request guard, health probes and
`POST /inputs`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import Gauge

from genview.queue import JobQueue
from genview.settings import Settings, package_version
from genview.store import ObjectStore
from services.errors import STATUS_TEXT, install_error_handlers
from services.guard import RequestGuard
from services.health import health_router
from services.inputs import inputs_body_limits
from services.inputs import router as inputs_router
from services.limits import BodyBudget
from services.metrics import ServiceMetrics

DOCS_ASSETS = "/static/docs"


def base_app(service: str, description: str, settings: Settings, queues: dict[str, JobQueue], store: ObjectStore,
             body_limits: dict[str, int]) -> tuple[FastAPI, ServiceMetrics]:
    """A FastAPI app with everything but its own routes; `/docs` and `/redoc` use assets from an installed package."""
    app = FastAPIOffline(title=f"GenView {service}", version=package_version(), description=description,
                         static_url=DOCS_ASSETS)
    metrics = ServiceMetrics(service, queues)
    budget = BodyBudget(settings.max_inflight_body_bytes)
    Gauge("genview_body_bytes_in_flight", "request body bytes held now (GENVIEW_MAX_INFLIGHT_BODY_BYTES at most)",
          registry=metrics.registry).set_function(lambda: budget.used)
    install_error_handlers(app)
    app.add_middleware(RequestGuard, settings=settings, body_limits={**inputs_body_limits(settings), **body_limits},
                       budget=budget)
    metrics.install(app)
    app.include_router(health_router(queues, store))
    app.state.settings, app.state.store = settings, store
    app.include_router(inputs_router)
    app.openapi = lambda: _openapi_with_one_error_schema(app)
    return app, metrics


def _openapi_with_one_error_schema(app: FastAPI) -> dict:
    """The generated schema, with FastAPI's default 422 body replaced by what the handlers send: ErrorBody."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        from genview.schemas import ErrorBody

        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        for op in (op for methods in spec["paths"].values() for op in methods.values()):
            invalid = op.get("responses", {}).get("422")
            if invalid:
                invalid.update(description=STATUS_TEXT[422],
                               content={"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}})
        app.openapi_schema = spec
    return app.openapi_schema
