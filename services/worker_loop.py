"""The loop every worker runs: claim a micro-batch, hand it to a handler, repeat until stopped."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from genview.queue import Delivery, JobQueue

log = logging.getLogger(__name__)


def consumer_name(role: str) -> str:
    """A consumer name unique to this process: role@host:pid."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


def claim_batch(queue: JobQueue, consumer: str, max_batch: int, max_wait_ms: int,
                idle_block_ms: int = 1000) -> list[Delivery]:
    """Block until at least one job is there, then keep claiming for up to `max_wait_ms` to fill the batch."""
    batch = queue.claim(consumer, max_batch, idle_block_ms)
    if not batch:
        return batch
    deadline = time.monotonic() + max_wait_ms / 1000
    while len(batch) < max_batch:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            break
        more = queue.claim(consumer, max_batch - len(batch), left_ms)
        if not more:
            break
        batch.extend(more)
    return batch


def run_worker(queue: JobQueue, handle: Callable[[list[Delivery]], None], consumer: str, max_batch: int,
               max_wait_ms: int, stop: threading.Event, idle_block_ms: int = 1000) -> None:
    """Serve jobs until `stop` is set. `handle` completes or fails every delivery it is given."""
    log.info("worker %s serving (batch %d, wait %d ms)", consumer, max_batch, max_wait_ms)
    while not stop.is_set():
        try:
            batch = claim_batch(queue, consumer, max_batch, max_wait_ms, idle_block_ms)
        except Exception:  # the queue backend is down: wait and retry, never exit
            log.exception("claiming jobs failed; retrying in 1 s")
            stop.wait(1.0)
            continue
        if not batch:
            continue
        try:
            handle(batch)
        except Exception as exc:  # a handler bug must not lose the batch: fail (retry) each job
            log.exception("handler failed on a batch of %d", len(batch))
            for delivery in batch:
                queue.fail(delivery, f"{type(exc).__name__}: {exc}")
