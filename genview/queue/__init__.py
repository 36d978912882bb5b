"""Job queues: Redis Streams for services, an in-memory twin for the embedded mode.

Both backends keep the same per-job record (a flat string hash) and the same rules:
at-least-once delivery, reclaim after a visibility timeout, dead-lettering after
`max_deliveries`, deduplication of identical in-flight requests and a TTL on job state.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass

import redis

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
TERMINAL = (DONE, FAILED)
GROUP = "workers"


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
    """One hand-out of a job to a worker; pass it back to `complete` or `fail`."""

    job_id: str
    payload: dict
    deliveries: int  # count including this delivery
    token: str  # backend message id (stream entry id)


def _new_record(payload: dict, dedup_key: str | None) -> dict[str, str]:
    """The job hash of a freshly submitted job."""
    now = str(time.time())
    return {"status": QUEUED, "payload": json.dumps(payload), "result": "", "error": "",
            "deliveries": "0", "created": now, "updated": now, "dedup_key": dedup_key or ""}


def _job(job_id: str, h: dict[str, str]) -> Job:
    """A `Job` from its hash."""
    return Job(job_id=job_id, status=h["status"], payload=json.loads(h["payload"]),
               result=json.loads(h["result"]) if h["result"] else None,
               error=h["error"] or None, deliveries=int(h["deliveries"]),
               created=float(h["created"]), updated=float(h["updated"]))


def _gave_up(h: dict[str, str]) -> str:
    """The final error of a job whose deliveries are used up."""
    return f"gave up after {h['deliveries']} deliveries: {h['error'] or 'worker did not finish'}"


def _is_stale(h: dict[str, str] | None, delivery: Delivery) -> bool:
    """True when `delivery` is no longer the job's current delivery (e.g. it was reclaimed)."""
    return not h or h["status"] != RUNNING or int(h["deliveries"]) != delivery.deliveries


class JobQueue(ABC):
    """A named work queue with per-job state."""

    @abstractmethod
    def submit(self, payload: dict, dedup_key: str | None = None) -> tuple[str, bool]:
        """Enqueue a job; returns (job_id, created). A live job with `dedup_key` is reused."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job's state, or None if unknown or expired."""

    @abstractmethod
    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """Up to `count` deliveries: timed-out ones first, then new ones (blocks ≤ block_ms)."""

    @abstractmethod
    def complete(self, delivery: Delivery, result: dict) -> None:
        """Record the result and acknowledge the delivery (idempotent)."""

    @abstractmethod
    def fail(self, delivery: Delivery, error: str) -> bool:
        """Record the error; requeue, or fail for good once deliveries are used up (→ True)."""

    @abstractmethod
    def depth(self) -> int:
        """Jobs waiting or in progress."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the backend is unreachable."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend's resources."""


class RedisJobQueue(JobQueue):
    """A Redis Streams queue with consumer group `workers`; job state in hashes with a TTL."""

    def __init__(self, url: str, name: str, *, visibility_timeout_s: float = 300,
                 max_deliveries: int = 3, job_ttl_s: int = 604800, prefix: str = "genview"):
        self.r = redis.Redis.from_url(url, decode_responses=True)
        self.stream = f"{prefix}:{name}:stream"
        self.prefix, self.name = prefix, name
        self.visibility_ms = int(visibility_timeout_s * 1000)
        self.max_deliveries = max_deliveries
        self.job_ttl_s = int(job_ttl_s)
        self._ensure_group()

    def _ensure_group(self) -> None:
        """Create the stream and its consumer group unless they exist."""
        try:
            self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _update(self, p, job_id: str, fields: dict[str, str]) -> None:
        """Queue an update of the job hash (refreshing its TTL) on pipeline `p`."""
        p.hset(self._key(job_id), mapping={**fields, "updated": str(time.time())})
        p.expire(self._key(job_id), self.job_ttl_s)

    def _ack(self, p, token: str) -> None:
        """Queue acknowledging and deleting a stream entry on pipeline `p`."""
        p.xack(self.stream, GROUP, token)
        p.xdel(self.stream, token)

    def submit(self, payload: dict, dedup_key: str | None = None) -> tuple[str, bool]:
        job_id = uuid.uuid4().hex
        record = _new_record(payload, dedup_key)
        dkey = f"{self.prefix}:{self.name}:dedup:{dedup_key}" if dedup_key else None

        def txn(p) -> tuple[str, bool]:
            if dkey:
                existing = p.get(dkey)
                if existing and p.hget(self._key(existing), "status") in (QUEUED, RUNNING, DONE):
                    return existing, False
            p.multi()
            if dkey:
                p.set(dkey, job_id, ex=self.job_ttl_s)
            p.hset(self._key(job_id), mapping=record)
            p.expire(self._key(job_id), self.job_ttl_s)
            p.xadd(self.stream, {"job_id": job_id})
            return job_id, True

        return self.r.transaction(txn, *([dkey] if dkey else []), value_from_callable=True)

    def get(self, job_id: str) -> Job | None:
        h = self.r.hgetall(self._key(job_id))
        return _job(job_id, h) if h else None

    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        try:
            entries = self._reclaim(consumer, count)
            out = [d for d in map(self._deliver, entries) if d]
            if len(out) < count:
                block = block_ms if not out and block_ms > 0 else None
                resp = self.r.xreadgroup(GROUP, consumer, {self.stream: ">"},
                                         count=count - len(out), block=block)
                out += [d for _, new in resp for d in map(self._deliver, new) if d]
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self._ensure_group()  # the stream vanished (e.g. Redis restarted without data)
            return []
        return out

    def _reclaim(self, consumer: str, count: int) -> list[tuple[str, dict | None]]:
        """Take over entries whose holders have not acked them within the visibility timeout."""
        entries: list[tuple[str, dict | None]] = []
        cursor = "0-0"
        while len(entries) < count:
            cursor, claimed, *_ = self.r.xautoclaim(self.stream, GROUP, consumer, self.visibility_ms,
                                                    cursor, count=count - len(entries))
            entries += claimed
            if cursor == "0-0":
                break
        return entries

    def _deliver(self, entry: tuple[str, dict | None]) -> Delivery | None:
        """Count one delivery of a claimed entry; None if the job is over (entry acked)."""
        token, fields = entry
        job_id = (fields or {}).get("job_id", "")
        key = self._key(job_id)

        def txn(p) -> Delivery | None:
            h = p.hgetall(key)
            p.multi()
            if not h or h["status"] in TERMINAL:
                self._ack(p, token)
                return None
            if int(h["deliveries"]) >= self.max_deliveries:
                self._update(p, job_id, {"status": FAILED, "error": _gave_up(h)})
                self._ack(p, token)
                return None
            n = int(h["deliveries"]) + 1
            self._update(p, job_id, {"status": RUNNING, "deliveries": str(n)})
            return Delivery(job_id, json.loads(h["payload"]), n, token)

        return self.r.transaction(txn, key, value_from_callable=True)

    def complete(self, delivery: Delivery, result: dict) -> None:
        key = self._key(delivery.job_id)

        def txn(p) -> None:
            status = p.hget(key, "status")
            p.multi()
            if status and status not in TERMINAL:
                self._update(p, delivery.job_id, {"status": DONE, "result": json.dumps(result)})
            self._ack(p, delivery.token)

        self.r.transaction(txn, key)

    def fail(self, delivery: Delivery, error: str) -> bool:
        key = self._key(delivery.job_id)

        def txn(p) -> bool:
            h = p.hgetall(key)
            if _is_stale(h, delivery):
                return bool(h) and h["status"] == FAILED
            final = delivery.deliveries >= self.max_deliveries
            p.multi()
            self._update(p, delivery.job_id, {"status": FAILED if final else QUEUED, "error": error})
            if not final:
                p.xadd(self.stream, {"job_id": delivery.job_id})
            self._ack(p, delivery.token)
            return final

        return self.r.transaction(txn, key, value_from_callable=True)

    def depth(self) -> int:
        return self.r.xlen(self.stream)  # acked entries are deleted, so the length is the backlog

    def ping(self) -> None:
        self.r.ping()

    def close(self) -> None:
        self.r.close()


class MemoryJobQueue(JobQueue):
    """An in-process queue with the Redis backend's semantics; thread-safe."""

    def __init__(self, name: str, *, visibility_timeout_s: float = 300, max_deliveries: int = 3,
                 job_ttl_s: int = 604800):
        self.name = name
        self.visibility_s = visibility_timeout_s
        self.max_deliveries = max_deliveries
        self.job_ttl_s = job_ttl_s
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._jobs: dict[str, tuple[dict[str, str], float]] = {}  # job_id → (hash, expires at)
        self._dedup: dict[str, str] = {}  # dedup_key → job_id
        self._entries: dict[str, str] = {}  # unacked entry → job_id (the "stream")
        self._new: list[str] = []  # entries never delivered, oldest first
        self._pending: dict[str, tuple[str, float]] = {}  # delivered entry → (consumer, when)
        self._next_sweep = time.monotonic()

    def _hash(self, job_id: str) -> dict[str, str] | None:
        """The job's live hash (dropping it once expired)."""
        h, expires = self._jobs.get(job_id, (None, 0.0))
        if h is not None and time.monotonic() >= expires:
            del self._jobs[job_id]
            return None
        return h

    def _update(self, job_id: str, h: dict[str, str], fields: dict[str, str]) -> None:
        """Change the job's hash and refresh its TTL."""
        h.update(fields, updated=str(time.time()))
        self._jobs[job_id] = (h, time.monotonic() + self.job_ttl_s)

    def _enqueue(self, job_id: str) -> None:
        """Append a stream entry for the job and wake blocked claimers."""
        token = f"{next(self._ids)}-0"
        self._entries[token] = job_id
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
        record = _new_record(payload, dedup_key)  # serialises: fails early like Redis would
        with self._cond:
            self._sweep()
            if dedup_key:
                existing = self._dedup.get(dedup_key, "")
                h = self._hash(existing)
                if h and h["status"] in (QUEUED, RUNNING, DONE):
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
            return _job(job_id, h) if h else None

    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        deadline = time.monotonic() + max(block_ms, 0) / 1000
        with self._cond:
            while True:
                out = [d for token in self._take(consumer, count) if (d := self._deliver(token))]
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                self._cond.wait(remaining)

    def _take(self, consumer: str, count: int) -> list[str]:
        """Assign up to `count` entries to `consumer`: timed-out pending ones, then new ones."""
        now = time.monotonic()
        tokens = [t for t, (_, when) in self._pending.items() if now - when >= self.visibility_s]
        tokens = tokens[:count]
        fresh = count - len(tokens)
        tokens += self._new[:fresh]
        del self._new[:fresh]
        for t in tokens:
            self._pending[t] = (consumer, now)
        return tokens

    def _deliver(self, token: str) -> Delivery | None:
        """Count one delivery of an entry; None if the job is over (entry acked)."""
        job_id = self._entries[token]
        h = self._hash(job_id)
        if not h or h["status"] in TERMINAL:
            self._ack(token)
            return None
        if int(h["deliveries"]) >= self.max_deliveries:
            self._update(job_id, h, {"status": FAILED, "error": _gave_up(h)})
            self._ack(token)
            return None
        n = int(h["deliveries"]) + 1
        self._update(job_id, h, {"status": RUNNING, "deliveries": str(n)})
        return Delivery(job_id, json.loads(h["payload"]), n, token)

    def complete(self, delivery: Delivery, result: dict) -> None:
        encoded = json.dumps(result)
        with self._cond:
            h = self._hash(delivery.job_id)
            if h and h["status"] not in TERMINAL:
                self._update(delivery.job_id, h, {"status": DONE, "result": encoded})
            self._ack(delivery.token)

    def fail(self, delivery: Delivery, error: str) -> bool:
        with self._cond:
            h = self._hash(delivery.job_id)
            if _is_stale(h, delivery):
                return bool(h) and h["status"] == FAILED
            final = delivery.deliveries >= self.max_deliveries
            self._update(delivery.job_id, h, {"status": FAILED if final else QUEUED, "error": error})
            if not final:
                self._enqueue(delivery.job_id)
            self._ack(delivery.token)
            return final

    def depth(self) -> int:
        with self._cond:
            return len(self._entries)

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""


_memory_queues: dict[str, MemoryJobQueue] = {}
_memory_lock = threading.Lock()


def open_queue(settings, name: str) -> JobQueue:
    """The queue `name`: Redis if `settings.redis_url` is set, else the process's memory queue."""
    opts = {"visibility_timeout_s": settings.visibility_timeout_s,
            "max_deliveries": settings.max_deliveries, "job_ttl_s": settings.job_ttl_s}
    if settings.redis_url:
        return RedisJobQueue(settings.redis_url, name, **opts)
    with _memory_lock:
        if name not in _memory_queues:
            _memory_queues[name] = MemoryJobQueue(name, **opts)
        return _memory_queues[name]
