"""The loop every worker runs: claim a micro-batch, hand it to a handler, repeat until stopped.

Batching is adaptive: a worker with nothing in flight starts at once with whatever jobs are there;
while its handler is busy it collects the next batch (up to `max_batch`), handed over the moment the
handler is free. Every job the worker holds, running or collected, keeps its lease: a heartbeat
extends it every third of the queue's visibility timeout, so a long job is never redelivered while
its worker lives. No backend outage ends the loop: it logs, waits and resumes. Jobs held during a store
outage (services/store_outage.py) keep their leases and run again, before any new job, once the store is back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for

from genview.queue import Delivery, JobQueue
from services.store_outage import HeldForStore, StoreAwareQueue

log = logging.getLogger(__name__)
OUTAGE_RETRY_S = 1.0  # pause before claiming again after the queue backend failed


def consumer_name(role: str) -> str:
    """A consumer name unique to this process: role@host:pid."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


class Leases:
    """The deliveries a worker holds, kept alive by a heartbeat thread every `visibility / 3`."""

    def __init__(self, queue: JobQueue, held: HeldForStore | None = None, outage: threading.Event | None = None):
        self._queue, self._store_held, self._outage = queue, held, outage or threading.Event()
        self._held: dict[str, Delivery] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def hold(self, batch: list[Delivery]) -> list[Delivery]:
        with self._lock:
            self._held.update((d.token, d) for d in batch)
        return batch

    def tokens(self) -> set[str]:
        """The tokens of every delivery held (also those held for the store)."""
        with self._lock:
            held = set(self._held)
        return held | {d.token for d in (self._store_held.pending() if self._store_held else [])}

    def release(self, batch: list[Delivery]) -> None:
        with self._lock:
            for d in batch:
                self._held.pop(d.token, None)

    def _beat(self) -> None:
        while not self._closed.wait(self._queue.visibility_timeout_s / 3):
            with self._lock:
                held = list(self._held.values())
            held += self._store_held.pending() if self._store_held else []
            try:
                self._queue.extend(held)
            except Exception:  # an outage: the leases run out, and the jobs are redelivered if it lasts
                log.warning("could not extend the leases of %d jobs", len(held), exc_info=True)
                self._outage.set()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()


def handle_safely(queue: JobQueue, handle: Callable[[list[Delivery]], None], batch: list[Delivery]) -> bool:
    """Run `handle`; if it raises, fail (retry) each delivery. Never raises, even with the queue down; False when
    the outcome of some delivery could not be recorded (the queue is down: the worker must resume it)."""
    try:
        handle(batch)
    except Exception as exc:  # a handler bug must not lose the batch
        log.exception("handler failed on a batch of %d", len(batch))
        recorded = True
        for delivery in batch:
            try:
                queue.fail(delivery, f"{type(exc).__name__}: {exc}")
            except Exception:  # the queue is down too: resumed once it answers (`run_worker`)
                log.exception("could not record the failure of job %s", delivery.job_id)
                recorded = False
        return recorded
    return True


def touch(path: str) -> None:
    """Set the file's modification time to now (creating it): a liveness probe reads its age."""
    try:
        with open(path, "a"):
            os.utime(path)
    except OSError:  # a probe that cannot see the file restarts the worker: say why, but keep serving
        log.warning("cannot touch the heartbeat file %s", path, exc_info=True)


START, CLAIM, COLLECT, WAIT = "start", "claim", "collect", "wait"  # what the run loop does next (`next_step`)


def next_step(busy: bool, collected: int, max_batch: int, max_wait_ms: int) -> str:
    """The run loop's decision. An idle worker never waits for a batch to fill: it starts the jobs it holds, however
    few (START), or claims and starts with the first that arrive (CLAIM). Only while a batch runs does it collect
    the next one (COLLECT, looking every `max_wait_ms`), or, with a full batch or no refill, waits (WAIT)."""
    if not busy:
        return START if collected else CLAIM
    return COLLECT if collected < max_batch and max_wait_ms > 0 else WAIT


def run_worker(queue: JobQueue, handle: Callable[[list[Delivery]], None], consumer: str, max_batch: int,
               max_wait_ms: int, stop: threading.Event, idle_block_ms: int = 1000,
               heartbeat_file: str | None = None) -> None:
    """Serve jobs until `stop` is set, then finish the jobs held. `handle` completes or fails every
    delivery it is given; `max_wait_ms` is how often a busy worker looks for more jobs (0: it does not).
    `heartbeat_file` is touched on every pass while no batch runs and after each batch, so a probe sees a
    stale file only when a batch runs longer than its limit or the loop is stuck."""
    log.info("worker %s serving (batch %d, refill every %d ms)", consumer, max_batch, max_wait_ms)
    store_held = queue.held if isinstance(queue, StoreAwareQueue) else None
    outage = threading.Event()  # the queue failed: once it answers, resume the jobs whose outcome got lost
    leases = Leases(queue, store_held, outage)
    pool = ThreadPoolExecutor(1, thread_name_prefix="handler")

    def start(batch: list[Delivery]) -> Future:
        def run() -> None:
            try:
                recorded = handle_safely(queue, handle, batch)
            finally:
                leases.release(batch)
            if not recorded:  # resume them even if the queue answers again by the next claim (released first)
                outage.set()
        return pool.submit(run)

    running: Future | None = None
    collected: list[Delivery] = []
    try:
        while True:
            busy = running is not None and not running.done()
            if heartbeat_file and not busy:
                touch(heartbeat_file)
            step = next_step(busy, len(collected), max_batch, max_wait_ms)
            if step == START:
                running, collected = start(collected), []
                continue
            if stop.is_set():
                break
            if store_held is not None and store_held.waiting():  # no new job while the store is down
                if busy:
                    wait_for([running])
                elif not (collected := leases.hold(store_held.due())):
                    stop.wait(OUTAGE_RETRY_S)
                continue
            try:
                if outage.is_set():  # back after an outage: first, at once, the jobs it lost track of
                    collected += leases.hold(queue.resume(consumer, leases.tokens()))
                    outage.clear()
                    continue
                if step == CLAIM:  # nothing in flight: take what is there (waiting for the first job) and start
                    collected = leases.hold(queue.claim(consumer, max_batch, idle_block_ms))
                elif step == COLLECT:
                    more = leases.hold(queue.claim(consumer, max_batch - len(collected), 0))
                    collected += more
                    if not more:
                        wait_for([running], max_wait_ms / 1000)
                else:
                    wait_for([running])
            except Exception:  # the queue backend is down: wait and retry, never exit
                log.exception("claiming jobs failed; retrying in %.0f s", OUTAGE_RETRY_S)
                outage.set()
                stop.wait(OUTAGE_RETRY_S)
        if running is not None:
            wait_for([running])
        if collected:
            start(collected).result()
    finally:
        pool.shutdown(wait=True)
        leases.close()
