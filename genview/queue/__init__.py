"""Job queues: Redis Streams for services, an in-memory twin for the embedded mode.

Both backends keep the same per-job record (a flat string hash) and the same rules:
at-least-once delivery, leases kept alive by `extend` and reclaimed after a visibility timeout,
exponential backoff between deliveries of a failing job, dead-lettering after `max_deliveries`,
cancellation of queued jobs, deduplication of identical in-flight requests, a TTL on job state
and `wait` woken by a notification. One contract suite (tests/test_queue_contract.py) runs on both.
"""

from __future__ import annotations

import threading

from genview.queue.base import (CANCELLED, DONE, FAILED, GROUP, QUEUED, RUNNING, TERMINAL, Delivery, Job, JobQueue,
                                QueueUnavailable, retry_delay_s)
from genview.queue.memory import MemoryJobQueue

__all__ = ["CANCELLED", "DONE", "FAILED", "GROUP", "QUEUED", "RUNNING", "TERMINAL", "Delivery", "Job", "JobQueue",
           "MemoryJobQueue", "QueueUnavailable", "RedisJobQueue", "open_queue", "retry_delay_s"]

_memory_queues: dict[str, MemoryJobQueue] = {}
_memory_lock = threading.Lock()


def __getattr__(name: str):
    """`RedisJobQueue` on first use: the redis client is the [serve] extra's, not the library's (schemas import
    `genview.queue.base`, and so this package, in a plain `pip install genview`)."""
    if name == "RedisJobQueue":
        from genview.queue.redis_backend import RedisJobQueue

        return RedisJobQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_queue(settings, name: str) -> JobQueue:
    """The queue `name`: Redis if `settings.redis_url` is set, else the process's memory queue."""
    opts = {"visibility_timeout_s": settings.visibility_timeout_s, "max_deliveries": settings.max_deliveries,
            "job_ttl_s": settings.job_ttl_s, "retry_backoff_s": settings.retry_backoff_s}
    if settings.redis_url:
        from genview.queue.redis_backend import RedisJobQueue

        return RedisJobQueue(settings.redis_url, name, **opts)
    with _memory_lock:
        if name not in _memory_queues:
            _memory_queues[name] = MemoryJobQueue(name, **opts)
        return _memory_queues[name]
