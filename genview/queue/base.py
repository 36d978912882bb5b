"""What every job queue backend shares: the job record, the delivery hand-out, the rules and the interface."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
TERMINAL = (DONE, FAILED, CANCELLED)
LIVE = (QUEUED, RUNNING, DONE)  # statuses a deduplicated request may reuse
GROUP = "workers"
MAX_RETRY_DELAY_S = 300.0  # the longest backoff between two deliveries of a failing job
CANCELLED_ERROR = "cancelled before it ran"


class QueueUnavailable(RuntimeError):
    """The queue's backend (Redis) cannot be reached; try again later."""


@dataclass
class Job:
    """The state of one job as clients see it."""

    job_id: str
    status: str
    payload: dict
    result: dict | None
    error: str | None
    deliveries: int
    created: float
    updated: float


@dataclass
class Delivery:
    """One hand-out of a job to a worker; pass it back to `complete`, `fail` or `extend`."""

    job_id: str
    payload: dict
    deliveries: int  # count including this delivery
    token: str  # backend message id (stream entry id)
    consumer: str = ""  # the worker holding it


def retry_delay_s(failed_deliveries: int, base_s: float) -> float:
    """Exponential backoff before the next delivery: base · 2^(n−1) after n failed deliveries, capped."""
    if base_s <= 0 or failed_deliveries <= 0:
        return 0.0
    return min(base_s * 2 ** (failed_deliveries - 1), MAX_RETRY_DELAY_S)


def new_record(payload: dict, dedup_key: str | None) -> dict[str, str]:
    """The job hash of a freshly submitted job."""
    now = str(time.time())
    return {"status": QUEUED, "payload": json.dumps(payload), "result": "", "error": "",
            "deliveries": "0", "created": now, "updated": now, "dedup_key": dedup_key or ""}


def job_from_hash(job_id: str, h: dict[str, str]) -> Job:
    """A `Job` from its hash."""
    return Job(job_id=job_id, status=h["status"], payload=json.loads(h["payload"]),
               result=json.loads(h["result"]) if h["result"] else None,
               error=h["error"] or None, deliveries=int(h["deliveries"]),
               created=float(h["created"]), updated=float(h["updated"]))


def gave_up(h: dict[str, str]) -> str:
    """The final error of a job whose deliveries are used up."""
    return f"gave up after {h['deliveries']} deliveries: {h['error'] or 'worker did not finish'}"


def is_stale(h: dict[str, str] | None, delivery: Delivery) -> bool:
    """True when `delivery` is no longer the job's current delivery (e.g. it was reclaimed)."""
    return not h or h["status"] != RUNNING or int(h["deliveries"]) != delivery.deliveries


class JobQueue(ABC):
    """A named work queue with per-job state.

    Delivery is at least once: a delivery not completed, failed or extended within
    `visibility_timeout_s` is handed to another worker. A failed delivery is retried after
    `retry_delay_s` until `max_deliveries` are used up; then the job is a dead letter (`failed`).
    """

    visibility_timeout_s: float

    @abstractmethod
    def submit(self, payload: dict, dedup_key: str | None = None) -> tuple[str, bool]:
        """Enqueue a job; returns (job_id, created). A live job with `dedup_key` is reused."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job's state, or None if unknown or expired."""

    @abstractmethod
    def wait(self, job_id: str, timeout_s: float) -> Job | None:
        """Block until the job is finished (woken by a notification) or `timeout_s` passed; its state then."""

    @abstractmethod
    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """Up to `count` deliveries: timed-out ones first, then new ones (blocks ≤ block_ms; 0: never)."""

    @abstractmethod
    def extend(self, deliveries: list[Delivery]) -> int:
        """Restart the visibility timeout of deliveries still held; returns how many are."""

    @abstractmethod
    def complete(self, delivery: Delivery, result: dict) -> None:
        """Record the result and acknowledge the delivery (idempotent)."""

    @abstractmethod
    def fail(self, delivery: Delivery, error: str, permanent: bool = False) -> bool:
        """Record the error; retry after a backoff, or fail for good once deliveries are used up or the error
        is `permanent` (a retry cannot help, e.g. an invalid payload) (→ True)."""

    def resume(self, consumer: str, held: set[str]) -> list[Delivery]:
        """Hand out again, at once, the deliveries `consumer` was given and no longer holds (`held`: the tokens it
        still does), e.g. after an outage lost their outcome; without waiting for the visibility timeout.
        A backend that cannot lose an outcome has none."""
        return []

    def recomputed(self) -> int:
        """Jobs handed out again while an earlier delivery of theirs had recorded no outcome (reclaimed after its
        timeout, or resumed): computed twice when that delivery had finished its work (0: not counted here)."""
        return 0

    @abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not started (→ True); running and finished jobs are left alone (→ False)."""

    @abstractmethod
    def failed(self, limit: int = 100) -> list[Job]:
        """Dead letters: the most recently failed jobs first."""

    @abstractmethod
    def depth(self) -> int:
        """Jobs waiting (also for a retry) or in progress."""

    @abstractmethod
    def ping(self) -> None:
        """Raise `QueueUnavailable` if the backend is unreachable."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend's resources."""
