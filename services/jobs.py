"""Queue use that both APIs share: backpressure and waiting for a job without polling."""

from __future__ import annotations

import anyio

from genview.queue import Job, JobQueue
from genview.settings import Settings
from services.errors import retry_later

MAX_WAITERS = 256  # requests blocked in `wait=true` at once (their own threads, apart from the request pool)


def check_capacity(queue: JobQueue, settings: Settings) -> None:
    """429 with Retry-After when the queue already holds `GENVIEW_MAX_QUEUE_DEPTH` jobs (0: no limit)."""
    if settings.max_queue_depth and queue.depth() >= settings.max_queue_depth:
        raise retry_later(429, "queue_full", f"{settings.max_queue_depth} jobs are waiting; retry later")


class JobWaiter:
    """`wait=true`: blocks on the queue's completion notification (not polling), bounded by `GENVIEW_MAX_WAIT_S`."""

    def __init__(self, queue: JobQueue, settings: Settings):
        self.queue, self.max_wait_s = queue, settings.max_wait_s
        self.limiter = anyio.CapacityLimiter(MAX_WAITERS)

    async def wait(self, job_id: str, timeout_s: float) -> Job | None:
        return await anyio.to_thread.run_sync(self.queue.wait, job_id, min(timeout_s, self.max_wait_s),
                                              limiter=self.limiter)
