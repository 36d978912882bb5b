"""`/healthz` (the process answers) and `/readyz` (queues answer, the store takes a write, read and delete)."""

from __future__ import annotations

import logging
import uuid

import anyio
from fastapi import APIRouter
from pydantic import BaseModel

from genview.queue import JobQueue
from genview.store import ObjectStore
from services.errors import RETRY_AFTER_S, error_response, error_responses

log = logging.getLogger(__name__)
PROBE_PREFIX = "probes"


class Status(BaseModel):
    """The body of a healthy answer."""

    status: str


def probe_store(store: ObjectStore) -> None:
    """Write, read back and delete a small object; raise if any step fails (e.g. a read-only store)."""
    key, data = f"{PROBE_PREFIX}/{uuid.uuid4().hex}", uuid.uuid4().bytes
    store.put(key, data, overwrite=True)
    try:
        if store.get(key) != data:
            raise OSError("the store returned other bytes than were written")
    finally:
        store.delete(key)


def health_router(queues: dict[str, JobQueue], store: ObjectStore) -> APIRouter:
    """The two probes; a failing check is named (queue:NAME or store) but never described to the client."""
    router = APIRouter(tags=["health"], responses=error_responses(413))
    checks = {**{f"queue:{name}": q.ping for name, q in queues.items()}, "store": lambda: probe_store(store)}

    @router.get("/healthz", response_model=Status)
    def healthz() -> Status:
        """Alive: the process answers HTTP."""
        return Status(status="ok")

    @router.get("/readyz", response_model=Status, responses=error_responses(503))
    async def readyz():
        """Ready: every queue answers a ping and the store takes a write, a read and a delete."""
        failing = []
        for name, check in checks.items():
            try:
                await anyio.to_thread.run_sync(check)
            except Exception:  # any failure means not ready; the log keeps the why, the client gets the what
                log.warning("readiness check %s failed", name, exc_info=True)
                failing.append(name)
        if failing:
            return error_response(503, "not_ready", failing, {"Retry-After": str(RETRY_AFTER_S)})
        return Status(status="ready")

    return router
