"""Prometheus metrics of one app, in its own registry (several apps may share a process)."""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genview.queue import JobQueue


class ServiceMetrics:
    """Request counts and latency per route, cache hits, submitted jobs, queue depth."""

    def __init__(self, service: str, queues: dict[str, JobQueue]):
        self.service = service
        self.registry = CollectorRegistry()
        self.requests = Counter("genview_http_requests", "HTTP requests", ["service", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("genview_http_request_seconds", "HTTP request latency", ["service", "route"],
                                 registry=self.registry)
        self.cache_hits = Counter("genview_cache_hits", "answers served from the store", ["service"],
                                  registry=self.registry)
        self.jobs = Counter("genview_jobs_submitted", "jobs put on the queue", ["service"], registry=self.registry)
        depth = Gauge("genview_queue_depth", "jobs waiting or in progress", ["queue"], registry=self.registry)
        again = Gauge("genview_jobs_recomputed", "jobs handed out again while an earlier delivery had recorded no "
                      "outcome (after an outage or a dead worker): computed twice if it had finished", ["queue"],
                      registry=self.registry)
        for name, queue in queues.items():
            depth.labels(name).set_function(_safe(queue.depth))
            again.labels(name).set_function(_safe(queue.recomputed))

    def cache_hit(self) -> None:
        self.cache_hits.labels(self.service).inc()

    def submitted(self) -> None:
        self.jobs.labels(self.service).inc()

    def install(self, app: FastAPI) -> None:
        """Count and time every request; serve `/metrics`."""
        app.add_middleware(_Observe, metrics=self)
        router = APIRouter()

        @router.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        app.include_router(router)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.latency.labels(self.service, route).observe(seconds)
        self.requests.labels(self.service, route, str(status)).inc()


class _Observe:
    """Pure ASGI middleware timing each HTTP request by route template (no task group per body chunk, unlike
    `@app.middleware("http")`)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(route, status, time.perf_counter() - start)


def _safe(depth):
    """A gauge callback that reads NaN instead of failing the whole scrape while the queue is down."""

    def read() -> float:
        try:
            return float(depth())
        except Exception:  # the backend is down: the other metrics must still be served
            return float("nan")

    return read
