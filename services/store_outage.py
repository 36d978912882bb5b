"""A worker during a store outage: a job whose delivery fails while the store is down is held (its lease kept
alive), not failed, and handed back to the worker once the store takes a write again (probed with backoff)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from genview.queue import Delivery, JobQueue
from genview.store import ObjectStore
from services.health import probe_store

log = logging.getLogger(__name__)
FIRST_PROBE_S = 0.5  # the first probe after a job was held; the wait doubles while the store stays down
LAST_PROBE_S = 10.0


class HeldForStore:
    """Deliveries held because the store was down when they failed; `due()` hands them back once it is up."""

    def __init__(self, store_up: Callable[[], bool]):
        self._store_up = store_up
        self._held: dict[str, Delivery] = {}
        self._lock = threading.Lock()
        self._wait_s, self._next_probe = FIRST_PROBE_S, 0.0

    def waiting(self) -> bool:
        """Whether any delivery is held."""
        with self._lock:
            return bool(self._held)

    def pending(self) -> list[Delivery]:
        """The held deliveries (their leases must be extended)."""
        with self._lock:
            return list(self._held.values())

    def hold_if_down(self, delivery: Delivery) -> bool:
        """Hold `delivery` if the store is down (known down while others are held, else probed now) → True."""
        if not self.waiting() and self._store_up():
            return False
        with self._lock:
            if not self._held:
                self._wait_s, self._next_probe = FIRST_PROBE_S, time.monotonic() + FIRST_PROBE_S
            self._held[delivery.token] = delivery
        log.warning("the store is down: job %s is held (not failed) until it returns", delivery.job_id)
        return True

    def due(self) -> list[Delivery]:
        """All held deliveries (no longer held) if the store answers a probe now; [] while it is down."""
        with self._lock:
            if not self._held or time.monotonic() < self._next_probe:
                return []
        if not self._store_up():
            with self._lock:
                self._wait_s = min(2 * self._wait_s, LAST_PROBE_S)
                self._next_probe = time.monotonic() + self._wait_s
            return []
        with self._lock:
            back, self._held = list(self._held.values()), {}
        log.info("the store is back: retrying %d held jobs", len(back))
        return back


class StoreAwareQueue:
    """A worker's queue: as `queue`, except that `fail` during a store outage holds the job instead of failing it."""

    def __init__(self, queue: JobQueue, held: HeldForStore):
        self._queue, self.held = queue, held

    def fail(self, delivery: Delivery, error: str, permanent: bool = False) -> bool:
        if not permanent and self.held.hold_if_down(delivery):
            return False
        return self._queue.fail(delivery, error, permanent)

    def __getattr__(self, name: str):
        return getattr(self._queue, name)


def store_aware(queue: JobQueue, store: ObjectStore) -> StoreAwareQueue:
    """`queue` as a worker over `store` should use it."""
    def store_up() -> bool:
        try:
            probe_store(store)
            return True
        except Exception:  # any failure of the probe: the store cannot take the job's result now
            return False
    return StoreAwareQueue(queue, HeldForStore(store_up))
