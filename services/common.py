"""What both HTTP services share: JSON errors, API keys, upload limits, Prometheus metrics, health."""

from __future__ import annotations

import asyncio
import json
import time

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from genview.images import ImageRejected
from genview.queue import DONE, FAILED, Job, JobQueue
from genview.settings import Settings
from genview.store import InvalidKey, ObjectNotFound, ObjectStore

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect"})


class ApiError(Exception):
    """An error answered as `{"error": code, "detail": message}` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str, **extra):
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


def error_response(status: int, code: str, detail, **extra) -> JSONResponse:
    """The one JSON shape of every error."""
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Every failure becomes a JSON error; validation errors say which field is wrong."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(ImageRejected)
    async def _image(_: Request, exc: ImageRejected):
        return error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(InvalidKey)
    async def _key(_: Request, exc: InvalidKey):
        return error_response(400, "invalid_key", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        problems = [{"field": ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0], "message": e["msg"]}
                    for e in exc.errors()]
        return error_response(422, "invalid_parameters", problems)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException):
        return error_response(exc.status_code, "http_error", exc.detail)


def install_guards(app: FastAPI, settings: Settings, body_limits: dict[str, int] | None = None) -> None:
    """Reject oversize bodies before they are read (per-path limits), and requests without a valid API key."""
    keys = settings.api_key_set
    default_limit = settings.max_upload_bytes + 64 * 1024  # room for multipart framing and fields
    body_limits = body_limits or {}

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        limit = body_limits.get(request.url.path, default_limit)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return error_response(413, "upload_too_large",
                                  f"request body of {length} bytes exceeds the limit of {limit} bytes")
        if keys and request.url.path not in OPEN_PATHS:
            auth = request.headers.get("authorization", "")
            given = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else \
                request.headers.get("x-api-key", "")
            if given not in keys:
                return error_response(401, "unauthorized", "a valid API key is required "
                                      "(Authorization: Bearer KEY or X-API-Key: KEY)")
        return await call_next(request)


async def read_upload(upload, max_bytes: int, field: str) -> bytes:
    """The bytes of a multipart file field, refusing more than `max_bytes`."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, "upload_too_large", f"{field} is larger than {max_bytes} bytes")
    return data


class ServiceMetrics:
    """Prometheus metrics of one app, in its own registry (several apps may share a process)."""

    def __init__(self, service: str, queues: dict[str, JobQueue]):
        self.registry = CollectorRegistry()
        self.requests = Counter("genview_http_requests", "HTTP requests", ["service", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("genview_http_request_seconds", "HTTP request latency", ["service", "route"],
                                 registry=self.registry)
        self.cache_hits = Counter("genview_cache_hits", "answers served from the store", ["service"],
                                  registry=self.registry)
        self.jobs = Counter("genview_jobs_submitted", "jobs put on the queue", ["service"], registry=self.registry)
        depth = Gauge("genview_queue_depth", "jobs waiting or in progress", ["queue"], registry=self.registry)
        for name, queue in queues.items():
            depth.labels(name).set_function(queue.depth)
        self.service = service

    def install(self, app: FastAPI) -> None:
        """Count and time every request; serve `/metrics`."""

        @app.middleware("http")
        async def _observe(request: Request, call_next):
            start = time.perf_counter()
            response = await call_next(request)
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.latency.labels(self.service, path).observe(time.perf_counter() - start)
            self.requests.labels(self.service, path, str(response.status_code)).inc()
            return response

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def install_health(app: FastAPI, queues: list[JobQueue], store: ObjectStore) -> None:
    """`/healthz` (process alive) and `/readyz` (queue and store reachable)."""

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz():
        problems = {}
        for name, check in [*((f"queue:{i}", q.ping) for i, q in enumerate(queues)), ("store", store.ping)]:
            try:
                await anyio.to_thread.run_sync(check)
            except Exception as exc:  # any failure means not ready; say which and why
                problems[name] = f"{type(exc).__name__}: {exc}"
        if problems:
            return error_response(503, "not_ready", problems)
        return {"status": "ready"}


async def wait_for_job(queue: JobQueue, job_id: str, timeout: float) -> Job | None:
    """Poll the job state until it is finished or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        job = await anyio.to_thread.run_sync(queue.get, job_id)
        if job is None or job.status in (DONE, FAILED) or time.monotonic() >= deadline:
            return job
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.25, 0.1)


def read_json(store: ObjectStore, key: str) -> dict | None:
    """A JSON object from the store, or None if absent."""
    try:
        return json.loads(store.get(key))
    except ObjectNotFound:
        return None


def base_app(service: str, description: str, settings: Settings, queues: dict[str, JobQueue], store: ObjectStore,
             body_limits: dict[str, int] | None = None) -> tuple[FastAPI, ServiceMetrics]:
    """A FastAPI app with JSON errors, metrics, body limits, API keys and health checks installed."""
    app = FastAPI(title=f"GenView {service}", version="0.1.0", description=description)
    metrics = ServiceMetrics(service, queues)
    install_error_handlers(app)
    metrics.install(app)
    install_guards(app, settings, body_limits)
    install_health(app, list(queues.values()), store)
    return app, metrics
