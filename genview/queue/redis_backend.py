"""The Redis Streams job queue: consumer group `workers`, job state in hashes with a TTL.

Keys (prefix `genview`, queue `name`): `{prefix}:{name}:stream` (entries waiting or held),
`{prefix}:{name}:delayed` (retries waiting out their backoff, scored by due time),
`{prefix}:{name}:failed` (dead letters, scored by time), `{prefix}:job:{id}` (the job hash),
`{prefix}:{name}:dedup:{key}` and `{prefix}:{name}:stats` (counters); finished jobs are announced on the
channel `{prefix}:{name}:done`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import redis

from genview.queue.base import (CANCELLED, CANCELLED_ERROR, DONE, FAILED, GROUP, LIVE, QUEUED, RUNNING, TERMINAL,
                                Delivery, Job, JobQueue, QueueUnavailable, gave_up, is_stale, job_from_hash,
                                new_record, retry_delay_s)

log = logging.getLogger(__name__)
RECHECK_S = 5.0  # a waiter re-reads its job this often, in case a notification was lost in a reconnect
RESUME_BATCH = 1000  # the most pending entries of one consumer resumed at once
MAX_BLOCK_S = 2.0  # one blocking read at most (the client's socket timeout is longer); `claim` loops to its deadline

# Move retries whose backoff is over from the delayed set into the stream, atomically; returns the next due time.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], job_id)
  local key = ARGV[3] .. job_id
  if redis.call('HGET', key, 'status') == 'queued' then
    redis.call('HSET', key, 'entry', redis.call('XADD', KEYS[2], '*', 'job_id', job_id))
  end
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
return next_due or ''
"""

# Reset the idle time of entries whose delivery is still the job's current one (never steal a reclaimed one).
_EXTEND = """
local held = 0
for i = 3, #ARGV, 3 do
  local h = redis.call('HMGET', ARGV[i], 'status', 'deliveries')
  if h[1] == 'running' and h[2] == ARGV[i + 1] then
    held = held + #redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i + 2], 'JUSTID')
  end
end
return held
"""


def _reachable(method):
    """Turn the client's connection errors into `QueueUnavailable` (the cause stays chained for logs)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise QueueUnavailable("the job queue (Redis) is unreachable") from exc

    return wrapper


class _Notifier:
    """One pub/sub subscription per queue that wakes this process's waiters when their job finishes."""

    def __init__(self, client: redis.Redis, channel: str):
        self._client, self._channel = client, channel
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._subscribed = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, job_id: str, timeout_s: float) -> Iterator[threading.Event]:
        """An event set when `job_id` is announced; the subscription is live before this yields."""
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(event)
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name=f"notify {self._channel}", daemon=True)
                self._thread.start()
        try:
            self._subscribed.wait(min(timeout_s, RECHECK_S))
            yield event
        finally:
            with self._lock:
                self._waiters[job_id].discard(event)
                if not self._waiters[job_id]:
                    del self._waiters[job_id]

    def _wake(self, job_ids: list[str] | None) -> None:
        """Set the events of `job_ids` (None: of every waiter, e.g. after a reconnect)."""
        with self._lock:
            for job_id in self._waiters if job_ids is None else job_ids:
                for event in self._waiters.get(job_id, ()):
                    event.set()

    def _listen(self) -> None:
        while not self._closed.is_set():
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(self._channel)
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=1.0) or {}
                    if message.get("type") == "subscribe":  # confirmed: waiters re-read what they missed
                        self._subscribed.set()
                        self._wake(None)
                    elif message.get("type") == "message":
                        self._wake([message["data"]])
            except Exception:  # Redis gone or restarting: resubscribe; waiters re-read every RECHECK_S meanwhile
                log.debug("notification subscription on %s lost", self._channel, exc_info=True)
                self._subscribed.clear()
                self._closed.wait(1.0)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(5)


class RedisJobQueue(JobQueue):
    """A Redis Streams queue with consumer group `workers`; job state in hashes with a TTL."""

    def __init__(self, url: str, name: str, *, visibility_timeout_s: float = 300,
                 max_deliveries: int = 3, job_ttl_s: int = 604800, retry_backoff_s: float = 0.0,
                 prefix: str = "genview"):
        self.r = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        self.stream = f"{prefix}:{name}:stream"
        self.delayed = f"{prefix}:{name}:delayed"
        self.dead = f"{prefix}:{name}:failed"
        self.stats = f"{prefix}:{name}:stats"
        self.channel = f"{prefix}:{name}:done"
        self.prefix, self.name = prefix, name
        self.visibility_timeout_s = visibility_timeout_s
        self.visibility_ms = int(visibility_timeout_s * 1000)
        self.max_deliveries = max_deliveries
        self.job_ttl_s = int(job_ttl_s)
        self.retry_backoff_s = retry_backoff_s
        self._promote = self.r.register_script(_PROMOTE)
        self._extend = self.r.register_script(_EXTEND)
        self._notifier = _Notifier(self.r, self.channel)
        try:
            self._ensure_group()
        except (redis.ConnectionError, redis.TimeoutError):
            log.warning("Redis is unreachable; queue %s will create its consumer group when it is back", name)

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

    def _finish(self, p, job_id: str, fields: dict[str, str]) -> None:
        """Queue a terminal update on `p`: dead letters are listed, and waiters are woken."""
        self._update(p, job_id, fields)
        if fields["status"] == FAILED:
            now = time.time()
            p.zadd(self.dead, {job_id: now})
            p.zremrangebyscore(self.dead, "-inf", now - self.job_ttl_s)
        p.publish(self.channel, job_id)

    def _ack(self, p, token: str) -> None:
        """Queue acknowledging and deleting a stream entry on pipeline `p`."""
        p.xack(self.stream, GROUP, token)
        p.xdel(self.stream, token)

    @_reachable
    def submit(self, payload: dict, dedup_key: str | None = None) -> tuple[str, bool]:
        job_id = uuid.uuid4().hex
        record = new_record(payload, dedup_key)
        dkey = f"{self.prefix}:{self.name}:dedup:{dedup_key}" if dedup_key else None
        found: list[str] = []

        def txn(p) -> None:
            if dkey:
                existing = p.get(dkey)
                if existing and p.hget(self._key(existing), "status") in LIVE:
                    found.append(existing)
                    return
            p.multi()
            if dkey:
                p.set(dkey, job_id, ex=self.job_ttl_s)
            p.hset(self._key(job_id), mapping=record)
            p.expire(self._key(job_id), self.job_ttl_s)
            p.xadd(self.stream, {"job_id": job_id})

        replies = self.r.transaction(txn, *([dkey] if dkey else []))
        if found:
            return found[0], False
        self.r.hset(self._key(job_id), "entry", replies[-1])  # lets `cancel` drop the entry
        return job_id, True

    @_reachable
    def get(self, job_id: str) -> Job | None:
        h = self.r.hgetall(self._key(job_id))
        return job_from_hash(job_id, h) if h else None

    @_reachable
    def wait(self, job_id: str, timeout_s: float) -> Job | None:
        deadline = time.monotonic() + max(timeout_s, 0)
        with self._notifier.watch(job_id, timeout_s) as finished:
            while True:
                job = self.get(job_id)
                remaining = deadline - time.monotonic()
                if job is None or job.status in TERMINAL or remaining <= 0:
                    return job
                finished.wait(min(remaining, RECHECK_S))
                finished.clear()

    @_reachable
    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        deadline = time.monotonic() + max(block_ms, 0) / 1000
        while True:
            try:
                out = self._claim_once(consumer, count, deadline)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                self._ensure_group()  # the stream vanished (e.g. Redis restarted without data)
                return []
            if out or time.monotonic() >= deadline:
                return out

    def _claim_once(self, consumer: str, count: int, deadline: float) -> list[Delivery]:
        """Promote due retries, reclaim timed-out entries, then read new ones, blocking until `deadline`
        or the next retry falls due (a blocked read is not woken by it), at most MAX_BLOCK_S."""
        next_due = self._promote(keys=[self.delayed, self.stream], args=[time.time(), count, self._key("")])
        next_due = float(next_due) if next_due else None
        out = [d for e in self._reclaim(consumer, count) if (d := self._deliver(e, consumer))]
        if len(out) < count:
            block_s = min(deadline - time.monotonic(), MAX_BLOCK_S)
            if next_due is not None:
                block_s = min(block_s, next_due - time.time())
            block = max(int(block_s * 1000), 1) if not out and block_s > 0 else None
            resp = self.r.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count - len(out), block=block)
            out += [d for _, new in resp for e in new if (d := self._deliver(e, consumer))]
        return out

    def _reclaim(self, consumer: str, count: int) -> list[tuple[str, dict | None]]:
        """Take over entries whose holders have not acked or extended them within the visibility timeout."""
        entries: list[tuple[str, dict | None]] = []
        cursor = "0-0"
        while len(entries) < count:
            cursor, claimed, *_ = self.r.xautoclaim(self.stream, GROUP, consumer, self.visibility_ms,
                                                    cursor, count=count - len(entries))
            entries += claimed
            if cursor == "0-0":
                break
        return entries

    def _deliver(self, entry: tuple[str, dict | None], consumer: str) -> Delivery | None:
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
                self._finish(p, job_id, {"status": FAILED, "error": gave_up(h)})
                self._ack(p, token)
                return None
            n = int(h["deliveries"]) + 1
            if h["status"] == RUNNING:  # the earlier delivery recorded no outcome: its work may be done twice
                p.hincrby(self.stats, "recomputed", 1)
            self._update(p, job_id, {"status": RUNNING, "deliveries": str(n)})
            return Delivery(job_id, json.loads(h["payload"]), n, token, consumer)

        return self.r.transaction(txn, key, value_from_callable=True)

    @_reachable
    def extend(self, deliveries: list[Delivery]) -> int:
        if not deliveries:
            return 0
        by_consumer: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_consumer.setdefault(d.consumer, []).append(d)
        return sum(self._extend(keys=[self.stream], args=[GROUP, consumer, *[
            v for d in held for v in (self._key(d.job_id), d.deliveries, d.token)]])
            for consumer, held in by_consumer.items())

    @_reachable
    def resume(self, consumer: str, held: set[str]) -> list[Delivery]:
        pending = self.r.xpending_range(self.stream, GROUP, min="-", max="+", count=RESUME_BATCH,
                                        consumername=consumer)
        lost = [entry["message_id"] for entry in pending if entry["message_id"] not in held]
        if not lost:
            return []
        log.info("resuming %d jobs %s held before an outage", len(lost), consumer)
        claimed = self.r.xclaim(self.stream, GROUP, consumer, 0, lost)
        return [d for entry in claimed if entry and (d := self._deliver(entry, consumer))]

    @_reachable
    def recomputed(self) -> int:
        return int(self.r.hget(self.stats, "recomputed") or 0)

    @_reachable
    def complete(self, delivery: Delivery, result: dict) -> None:
        key = self._key(delivery.job_id)

        def txn(p) -> None:
            status = p.hget(key, "status")
            p.multi()
            if status and status not in TERMINAL:
                self._finish(p, delivery.job_id, {"status": DONE, "result": json.dumps(result)})
            self._ack(p, delivery.token)

        self.r.transaction(txn, key)

    @_reachable
    def fail(self, delivery: Delivery, error: str, permanent: bool = False) -> bool:
        key = self._key(delivery.job_id)

        def txn(p) -> bool:
            h = p.hgetall(key)
            if is_stale(h, delivery):
                return bool(h) and h["status"] == FAILED
            final = permanent or delivery.deliveries >= self.max_deliveries
            p.multi()
            if final:
                self._finish(p, delivery.job_id, {"status": FAILED, "error": error})
            else:
                self._update(p, delivery.job_id, {"status": QUEUED, "error": error, "entry": ""})
                due = time.time() + retry_delay_s(delivery.deliveries, self.retry_backoff_s)
                p.zadd(self.delayed, {delivery.job_id: due})
            self._ack(p, delivery.token)
            return final

        return self.r.transaction(txn, key, value_from_callable=True)

    @_reachable
    def cancel(self, job_id: str) -> bool:
        key = self._key(job_id)

        def txn(p) -> bool:
            h = p.hgetall(key)
            if not h or h["status"] != QUEUED:
                return False
            p.multi()
            self._finish(p, job_id, {"status": CANCELLED, "error": CANCELLED_ERROR})
            p.zrem(self.delayed, job_id)
            if h.get("entry"):
                self._ack(p, h["entry"])
            return True

        return self.r.transaction(txn, key, value_from_callable=True)

    @_reachable
    def failed(self, limit: int = 100) -> list[Job]:
        ids = self.r.zrevrange(self.dead, 0, max(limit, 1) - 1)
        with self.r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.hgetall(self._key(job_id))
            hashes = p.execute()
        gone = [j for j, h in zip(ids, hashes) if not h]
        if gone:
            self.r.zrem(self.dead, *gone)
        return [job_from_hash(j, h) for j, h in zip(ids, hashes) if h and h["status"] == FAILED][:limit]

    @_reachable
    def depth(self) -> int:
        with self.r.pipeline(transaction=False) as p:
            p.xlen(self.stream)  # acked entries are deleted, so the length is the backlog
            p.zcard(self.delayed)
            return sum(p.execute())

    @_reachable
    def ping(self) -> None:
        self.r.ping()

    def close(self) -> None:
        self._notifier.close()
        self.r.close()
