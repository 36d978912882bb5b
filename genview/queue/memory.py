"""The in-process job queue of the embedded mode, with the Redis backend's semantics."""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
import uuid

from genview.queue.base import (CANCELLED, CANCELLED_ERROR, DONE, FAILED, LIVE, QUEUED, RUNNING, TERMINAL, Delivery,
                                Job, JobQueue, gave_up, is_stale, job_from_hash, new_record, retry_delay_s)


class MemoryJobQueue(JobQueue):
    """A thread-safe queue in this process; one Condition wakes claimers and waiters."""

    def __init__(self, name: str, *, visibility_timeout_s: float = 300, max_deliveries: int = 3,
                 job_ttl_s: int = 604800, retry_backoff_s: float = 0.0):
        self.name = name
        self.visibility_timeout_s = visibility_timeout_s
        self.max_deliveries = max_deliveries
        self.job_ttl_s = job_ttl_s
        self.retry_backoff_s = retry_backoff_s
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._jobs: dict[str, tuple[dict[str, str], float]] = {}  # job_id → (hash, expires at)
        self._dedup: dict[str, str] = {}  # dedup_key → job_id
        self._entries: dict[str, str] = {}  # unacked entry → job_id (the "stream")
        self._queued_entry: dict[str, str] = {}  # job_id → its entry not yet delivered
        self._new: list[str] = []  # entries never delivered, oldest first
        self._pending: dict[str, tuple[str, float]] = {}  # delivered entry → (consumer, when)
        self._delayed: list[tuple[float, str]] = []  # heap of (due, job_id): retries after a backoff
        self._next_sweep = time.monotonic()

    def _hash(self, job_id: str) -> dict[str, str] | None:
        """The job's live hash (dropping it once expired)."""
        h, expires = self._jobs.get(job_id, (None, 0.0))
        if h is not None and time.monotonic() >= expires:
            del self._jobs[job_id]
            return None
        return h

    def _update(self, job_id: str, h: dict[str, str], fields: dict[str, str]) -> None:
        """Change the job's hash, refresh its TTL and wake waiters."""
        h.update(fields, updated=str(time.time()))
        self._jobs[job_id] = (h, time.monotonic() + self.job_ttl_s)
        self._cond.notify_all()

    def _enqueue(self, job_id: str) -> None:
        """Append a stream entry for the job and wake blocked claimers."""
        token = f"{next(self._ids)}-0"
        self._entries[token] = job_id
        self._queued_entry[job_id] = token
        self._new.append(token)
        self._cond.notify_all()

    def _ack(self, token: str) -> None:
        self._entries.pop(token, None)
        self._pending.pop(token, None)

    def _sweep(self) -> None:
        """Drop expired jobs and their dedup keys, at most once a minute."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(self.job_ttl_s, 60)
        self._jobs = {j: v for j, v in self._jobs.items() if v[1] > now}
        self._dedup = {k: j for k, j in self._dedup.items() if j in self._jobs}

    def submit(self, payload: dict, dedup_key: str | None = None) -> tuple[str, bool]:
        record = new_record(payload, dedup_key)  # serialises: fails early like Redis would
        with self._cond:
            self._sweep()
            if dedup_key:
                existing = self._dedup.get(dedup_key, "")
                h = self._hash(existing)
                if h and h["status"] in LIVE:
                    return existing, False
            job_id = uuid.uuid4().hex
            if dedup_key:
                self._dedup[dedup_key] = job_id
            self._jobs[job_id] = (record, time.monotonic() + self.job_ttl_s)
            self._enqueue(job_id)
            return job_id, True

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            h = self._hash(job_id)
            return job_from_hash(job_id, h) if h else None

    def wait(self, job_id: str, timeout_s: float) -> Job | None:
        deadline = time.monotonic() + max(timeout_s, 0)
        with self._cond:
            while True:
                h = self._hash(job_id)
                remaining = deadline - time.monotonic()
                if not h or h["status"] in TERMINAL or remaining <= 0:
                    return job_from_hash(job_id, h) if h else None
                self._cond.wait(remaining)

    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        deadline = time.monotonic() + max(block_ms, 0) / 1000
        with self._cond:
            while True:
                self._promote_due()
                out = [d for token in self._take(consumer, count) if (d := self._deliver(token, consumer))]
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                if self._delayed:
                    remaining = min(remaining, max(self._delayed[0][0] - time.monotonic(), 0.001))
                self._cond.wait(remaining)

    def _promote_due(self) -> None:
        """Move retries whose backoff is over back into the stream."""
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, job_id = heapq.heappop(self._delayed)
            h = self._hash(job_id)
            if h and h["status"] == QUEUED:
                self._enqueue(job_id)

    def _take(self, consumer: str, count: int) -> list[str]:
        """Assign up to `count` entries to `consumer`: timed-out pending ones, then new ones."""
        now = time.monotonic()
        tokens = [t for t, (_, when) in self._pending.items() if now - when >= self.visibility_timeout_s]
        tokens = tokens[:count]
        fresh = count - len(tokens)
        tokens += self._new[:fresh]
        del self._new[:fresh]
        for t in tokens:
            self._pending[t] = (consumer, now)
        return tokens

    def _deliver(self, token: str, consumer: str) -> Delivery | None:
        """Count one delivery of an entry; None if the job is over (entry acked)."""
        job_id = self._entries[token]
        if self._queued_entry.get(job_id) == token:
            del self._queued_entry[job_id]
        h = self._hash(job_id)
        if not h or h["status"] in TERMINAL:
            self._ack(token)
            return None
        if int(h["deliveries"]) >= self.max_deliveries:
            self._update(job_id, h, {"status": FAILED, "error": gave_up(h)})
            self._ack(token)
            return None
        n = int(h["deliveries"]) + 1
        self._update(job_id, h, {"status": RUNNING, "deliveries": str(n)})
        return Delivery(job_id, json.loads(h["payload"]), n, token, consumer)

    def extend(self, deliveries: list[Delivery]) -> int:
        now, held = time.monotonic(), 0
        with self._cond:
            for d in deliveries:
                if d.token in self._pending and not is_stale(self._hash(d.job_id), d):
                    self._pending[d.token] = (d.consumer, now)
                    held += 1
        return held

    def complete(self, delivery: Delivery, result: dict) -> None:
        encoded = json.dumps(result)
        with self._cond:
            h = self._hash(delivery.job_id)
            if h and h["status"] not in TERMINAL:
                self._update(delivery.job_id, h, {"status": DONE, "result": encoded})
            self._ack(delivery.token)

    def fail(self, delivery: Delivery, error: str, permanent: bool = False) -> bool:
        with self._cond:
            h = self._hash(delivery.job_id)
            if is_stale(h, delivery):
                return bool(h) and h["status"] == FAILED
            final = permanent or delivery.deliveries >= self.max_deliveries
            self._update(delivery.job_id, h, {"status": FAILED if final else QUEUED, "error": error})
            if not final:
                delay = retry_delay_s(delivery.deliveries, self.retry_backoff_s)
                heapq.heappush(self._delayed, (time.monotonic() + delay, delivery.job_id))
            self._ack(delivery.token)
            return final

    def cancel(self, job_id: str) -> bool:
        with self._cond:
            h = self._hash(job_id)
            if not h or h["status"] != QUEUED:
                return False
            self._update(job_id, h, {"status": CANCELLED, "error": CANCELLED_ERROR})
            if token := self._queued_entry.pop(job_id, None):
                self._ack(token)
                self._new.remove(token)
            self._delayed = [(due, j) for due, j in self._delayed if j != job_id]
            heapq.heapify(self._delayed)
            return True

    def failed(self, limit: int = 100) -> list[Job]:
        with self._cond:
            now = time.monotonic()
            dead = [job_from_hash(j, h) for j, (h, expires) in self._jobs.items() if h["status"] == FAILED and expires > now]
        return sorted(dead, key=lambda job: job.updated, reverse=True)[:limit]

    def depth(self) -> int:
        with self._cond:
            return len(self._entries) + len(self._delayed)

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""
