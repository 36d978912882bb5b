"""Prometheus metrics of one app, in its own registry (several apps may share a process)."""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        for name, queue in queues.items():
            depth.labels(name).set_function(_safe(queue.depth))

    def cache_hit(self) -> None:
        self.cache_hits.labels(self.service).inc()

    def submitted(self) -> None:
        self.jobs.labels(self.service).inc()

    def install(self, app: FastAPI) -> None:
        """Count and time every request; serve `/metrics`."""

        @app.middleware("http")
        async def _observe(request: Request, call_next):
            start = time.perf_counter()
            response = await call_next(request)
            path = getattr(request.scope.get("route"), "path", "unmatched")
            self.latency.labels(self.service, path).observe(time.perf_counter() - start)
            self.requests.labels(self.service, path, str(response.status_code)).inc()
            return response

        router = APIRouter()

        @router.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        app.include_router(router)


def _safe(depth):
    """A gauge callback that reads NaN instead of failing the whole scrape while the queue is down."""

    def read() -> float:
        try:
            return float(depth())
        except Exception:  # the backend is down: the other metrics must still be served
            return float("nan")

    return read
