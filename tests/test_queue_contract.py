"""One contract suite for both job queue backends (in-memory and a real Redis)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from genview.queue import (CANCELLED, DONE, FAILED, QUEUED, RUNNING, MemoryJobQueue, QueueUnavailable, RedisJobQueue,
                           open_queue, retry_delay_s)
from genview.settings import Settings

VISIBILITY_S = 0.3
TICK_S = 0.01  # clock granularity in lower bounds (Redis counts idle time in whole milliseconds)


@pytest.fixture(params=["memory", "redis"])
def make_queue(request):
    """Factory for queues of the parametrized backend (small timeouts); closes them afterwards."""
    made = []
    url = request.getfixturevalue("fresh_redis_url") if request.param == "redis" else None

    def make(name: str = "jobs", **kw):
        kw = {"visibility_timeout_s": VISIBILITY_S, "max_deliveries": 3, "retry_backoff_s": 0, **kw}
        if request.param == "redis":
            q = RedisJobQueue(url, name, **kw)
        else:
            q = MemoryJobQueue(name, **kw)
        made.append(q)
        return q

    make.backend, make.url = request.param, url
    yield make
    for q in made:
        q.close()


@pytest.fixture
def queue(make_queue):
    """One queue of the parametrized backend."""
    return make_queue()


def test_lifecycle(queue):
    queue.ping()
    job_id, created = queue.submit({"x": 1})
    assert created and len(job_id) == 32
    assert queue.get(job_id).status == QUEUED
    assert queue.depth() == 1
    [d] = queue.claim("w1", count=10, block_ms=100)
    assert (d.job_id, d.payload, d.deliveries) == (job_id, {"x": 1}, 1)
    assert queue.get(job_id).status == RUNNING
    queue.complete(d, {"ok": True})
    job = queue.get(job_id)
    assert (job.status, job.result, job.error, job.deliveries) == (DONE, {"ok": True}, None, 1)
    assert job.updated >= job.created
    assert queue.depth() == 0
    queue.complete(d, {"ok": False})  # idempotent
    assert queue.get(job_id).result == {"ok": True}
    assert queue.get("0" * 32) is None


def test_claim_batches_and_blocks(queue):
    ids = {queue.submit({"i": i})[0] for i in range(5)}
    first = queue.claim("w", count=3, block_ms=100)
    second = queue.claim("w", count=3, block_ms=100)
    assert (len(first), len(second)) == (3, 2)
    assert {d.job_id for d in first + second} == ids
    start = time.monotonic()
    assert queue.claim("w", count=3, block_ms=100) == []
    assert time.monotonic() - start < 5


def test_claim_wakes_on_submit(queue):
    threading.Timer(0.2, queue.submit, args=({"late": True},)).start()
    start = time.monotonic()
    got = queue.claim("w", count=1, block_ms=3000)
    assert [d.payload for d in got] == [{"late": True}]
    assert time.monotonic() - start < 2.5


def test_two_consumers_never_share_a_job(queue):
    for i in range(6):
        queue.submit({"i": i})
    a = queue.claim("a", count=4, block_ms=50)
    b = queue.claim("b", count=4, block_ms=50)
    a += queue.claim("a", count=4, block_ms=50)
    assert len(a) + len(b) == 6
    assert not {d.job_id for d in a} & {d.job_id for d in b}


def _claim_when_due(queue, consumer: str, deadline_s: float = 10.0):
    """The first delivery `consumer` gets, polling until one comes (a condition wait, not a fixed sleep)."""
    deadline = time.monotonic() + deadline_s
    while not (got := queue.claim(consumer, count=1, block_ms=50)):
        assert time.monotonic() < deadline, "nothing was delivered in time"
    [delivery] = got
    return delivery


def test_visibility_timeout_reclaims(queue):
    job_id, _ = queue.submit({"x": 1})
    claimed_at = time.monotonic()
    [lost] = queue.claim("a", count=1, block_ms=100)  # consumer A dies without acking
    d = _claim_when_due(queue, "b")
    assert time.monotonic() - claimed_at >= VISIBILITY_S - TICK_S  # not handed over before the lease ran out
    assert (d.job_id, d.deliveries) == (job_id, 2)
    queue.complete(d, {"by": "b"})
    assert queue.get(job_id).status == DONE
    assert queue.depth() == 0
    assert not queue.fail(lost, "late failure from A")  # a stale delivery changes nothing
    assert queue.get(job_id).status == DONE


def test_fail_requeues_then_fails(queue):
    job_id, _ = queue.submit({"x": 1})
    for n in (1, 2):
        [d] = queue.claim("w", count=1, block_ms=100)
        assert (d.job_id, d.deliveries) == (job_id, n)
        assert queue.fail(d, f"boom {n}") is False
        job = queue.get(job_id)
        assert (job.status, job.error) == (QUEUED, f"boom {n}")
    [d] = queue.claim("w", count=1, block_ms=100)
    assert queue.fail(d, "boom 3") is True
    job = queue.get(job_id)
    assert (job.status, job.error, job.deliveries) == (FAILED, "boom 3", 3)
    assert queue.depth() == 0
    assert queue.claim("w", count=1, block_ms=50) == []


def test_dying_workers_end_failed_and_nothing_is_lost(queue):
    doomed, _ = queue.submit({"doomed": True})
    fine = [queue.submit({"i": i})[0] for i in range(3)]
    for round_ in range(4):
        for d in queue.claim(f"w{round_}", count=10, block_ms=50):
            if d.job_id != doomed:
                queue.complete(d, {"i": d.payload["i"]})  # the doomed job's worker is "killed"
        time.sleep(VISIBILITY_S + 0.05)
    assert queue.claim("last", count=10, block_ms=50) == []
    job = queue.get(doomed)
    assert job.status == FAILED
    assert job.error == "gave up after 3 deliveries: worker did not finish"
    assert [queue.get(j).status for j in fine] == [DONE] * 3
    assert queue.depth() == 0


def test_a_permanent_failure_ends_the_job_at_once(queue):
    job_id, _ = queue.submit({"x": 1})
    [d] = queue.claim("w", count=1, block_ms=100)
    assert queue.fail(d, "invalid_payload: x", permanent=True) is True
    job = queue.get(job_id)
    assert (job.status, job.error, job.deliveries) == (FAILED, "invalid_payload: x", 1)
    assert queue.depth() == 0 and [j.job_id for j in queue.failed()] == [job_id]


def test_gave_up_keeps_last_error(queue):
    job_id, _ = queue.submit({})
    [d] = queue.claim("w", count=1, block_ms=100)
    queue.fail(d, "oom")
    for _ in range(2):
        assert len(queue.claim("w", count=1, block_ms=100)) == 1
        time.sleep(VISIBILITY_S + 0.05)
    assert queue.claim("w", count=1, block_ms=50) == []
    assert queue.get(job_id).error == "gave up after 3 deliveries: oom"


def test_dedup(queue):
    first, created = queue.submit({"x": 1}, dedup_key="k")
    again, created_again = queue.submit({"x": 1}, dedup_key="k")
    other, other_created = queue.submit({"x": 1}, dedup_key="other")
    assert created and not created_again and other_created
    assert again == first and other != first
    got = queue.claim("w", count=10, block_ms=50)
    assert sorted(d.job_id for d in got) == sorted([first, other])
    d = next(d for d in got if d.job_id == first)
    assert queue.submit({"x": 1}, dedup_key="k") == (first, False)  # running
    queue.fail(d, "boom")  # requeued: still in flight
    assert queue.submit({"x": 1}, dedup_key="k") == (first, False)
    for _ in range(2):
        [d] = queue.claim("w", count=1, block_ms=100)
        queue.fail(d, "boom")
    assert queue.get(first).status == FAILED
    fresh, created = queue.submit({"x": 1}, dedup_key="k")
    assert created and fresh != first
    assert queue.get(fresh).status == QUEUED


def test_dedup_of_done_job(queue):
    job_id, _ = queue.submit({"x": 1}, dedup_key="k")
    [d] = queue.claim("w", count=1, block_ms=100)
    queue.complete(d, {"r": 1})
    assert queue.submit({"x": 1}, dedup_key="k") == (job_id, False)
    assert queue.depth() == 0


def test_job_state_ttl(make_queue):
    if make_queue.backend == "redis":
        q = make_queue(job_ttl_s=1000)
        job_id, _ = q.submit({"x": 1}, dedup_key="k")
        r = redis.Redis.from_url(make_queue.url)
        assert 0 < r.ttl(f"genview:job:{job_id}") <= 1000
        assert 0 < r.ttl("genview:jobs:dedup:k") <= 1000
        r.close()
    else:
        q = make_queue(job_ttl_s=1)
        job_id, _ = q.submit({"x": 1}, dedup_key="k")
        assert q.get(job_id) is not None
        time.sleep(1.2)
        assert q.get(job_id) is None
        assert q.submit({"x": 1}, dedup_key="k")[1]  # the expired job is not reused


def test_payload_round_trips(queue):
    payload = {"name": "Grüße 🌍 视图", "nested": {"list": [1, 2.5, None, True, "ß"], "deep": {"k": []}}}
    job_id, _ = queue.submit(payload)
    assert queue.get(job_id).payload == payload
    [d] = queue.claim("w", count=1, block_ms=100)
    assert d.payload == payload
    queue.complete(d, {"echo": payload})
    assert queue.get(job_id).result == {"echo": payload}


def test_queues_are_separate(make_queue):
    a, b = make_queue("a"), make_queue("b")
    a.submit({"q": "a"})
    assert b.claim("w", count=5, block_ms=50) == []
    assert [d.payload for d in a.claim("w", count=5, block_ms=50)] == [{"q": "a"}]


def test_open_queue(fresh_redis_url):
    s = Settings(redis_url=None)
    q = open_queue(s, "contract-open")
    assert isinstance(q, MemoryJobQueue)
    assert open_queue(s, "contract-open") is q
    assert open_queue(s, "contract-other") is not q
    rq = open_queue(Settings(redis_url=fresh_redis_url, max_deliveries=5, retry_backoff_s=2), "contract-open")
    try:
        assert isinstance(rq, RedisJobQueue)
        assert (rq.max_deliveries, rq.retry_backoff_s) == (5, 2)
        rq.ping()
    finally:
        rq.close()


# --- leases, backoff, cancellation, dead letters, notification -----------------------------------------

def test_extend_keeps_the_lease_and_never_steals_a_reclaimed_job(queue):
    job_id, _ = queue.submit({"x": 1})
    [held] = queue.claim("a", count=1, block_ms=100)
    for _ in range(4):  # at least 4 × VISIBILITY_S / 2 (well past the timeout), extended all along
        time.sleep(VISIBILITY_S / 2)  # pacing: time has to pass; nobody else claims meanwhile
        extended_at = time.monotonic()
        assert queue.extend([held]) == 1
    taken = _claim_when_due(queue, "b")  # the holder stops extending (it died): the job is reclaimed ...
    assert time.monotonic() - extended_at >= VISIBILITY_S - TICK_S  # ... a timeout after the last extension
    assert taken.deliveries == 2
    assert queue.extend([held]) == 0  # the old holder's heartbeat does not take it back
    time.sleep(VISIBILITY_S + 0.1)
    assert queue.extend([taken]) == 1
    queue.complete(taken, {"by": "b"})
    assert queue.extend([taken]) == 0 and queue.extend([]) == 0
    assert queue.get(job_id).status == DONE and queue.get(job_id).deliveries == 2


def test_retry_delay_doubles_and_is_capped():
    assert [retry_delay_s(n, 1.5) for n in (0, 1, 2, 3)] == [0, 1.5, 3.0, 6.0]
    assert retry_delay_s(40, 1.0) == 300 and retry_delay_s(3, 0) == 0


def test_failed_job_waits_out_its_backoff(make_queue):
    queue = make_queue(retry_backoff_s=0.4, max_deliveries=3)
    job_id, _ = queue.submit({"x": 1})
    [d] = queue.claim("w", count=1, block_ms=100)
    failed_at = time.monotonic()
    assert queue.fail(d, "transient") is False
    assert queue.depth() == 1 and queue.get(job_id).status == QUEUED
    d = _claim_when_due(queue, "w")
    assert d.deliveries == 2 and time.monotonic() - failed_at >= 0.4 - TICK_S  # not before the backoff is over
    failed_at = time.monotonic()
    queue.fail(d, "transient")
    d = _claim_when_due(queue, "w")  # second failure: twice as long (the exact delays: retry_delay_s, above)
    assert d.deliveries == 3 and time.monotonic() - failed_at >= 0.8 - TICK_S
    queue.complete(d, {"ok": 1})
    assert queue.depth() == 0


def test_cancel_only_queued_jobs(queue):
    waiting, _ = queue.submit({"i": 0}, dedup_key="k")
    started, _ = queue.submit({"i": 1})
    retrying, _ = queue.submit({"i": 2})
    assert queue.cancel(waiting) is True
    assert queue.depth() == 2
    got = {d.job_id: d for d in queue.claim("w", count=10, block_ms=100)}
    assert set(got) == {started, retrying}  # the cancelled job is never delivered
    assert queue.cancel(started) is False and queue.get(started).status == RUNNING
    queue.fail(got[retrying], "boom")
    assert queue.cancel(retrying) is True  # a job waiting for its retry is still queued
    queue.complete(got[started], {"ok": 1})
    assert queue.cancel(started) is False and queue.cancel(waiting) is False and queue.cancel("0" * 32) is False
    job = queue.get(waiting)
    assert (job.status, job.deliveries) == (CANCELLED, 0) and job.error
    assert queue.get(retrying).status == CANCELLED
    assert queue.claim("w", count=10, block_ms=50) == []
    assert queue.depth() == 0
    assert queue.submit({"i": 0}, dedup_key="k")[1]  # a cancelled job is not reused


def test_failed_lists_dead_letters_newest_first(queue):
    ok, _ = queue.submit({"i": 0})
    dead = []
    for i in (1, 2):
        job_id, _ = queue.submit({"i": i})
        for _ in range(3):
            [d] = [d for d in queue.claim("w", count=10, block_ms=100) if d.job_id == job_id] or [None]
            if d.payload["i"] == i:
                queue.fail(d, f"boom {i}")
        dead.append(job_id)
        time.sleep(0.01)
    listed = queue.failed(limit=10)
    assert [j.job_id for j in listed] == dead[::-1]
    assert [j.error for j in listed] == ["boom 2", "boom 1"]
    assert [j.job_id for j in queue.failed(limit=1)] == [dead[1]]
    assert ok not in {j.job_id for j in listed}


def test_wait_wakes_when_the_job_finishes(queue):
    job_id, _ = queue.submit({"x": 1})
    [d] = queue.claim("w", count=1, block_ms=100)
    threading.Timer(0.3, queue.complete, args=(d, {"ok": True})).start()
    start = time.monotonic()
    job = queue.wait(job_id, timeout_s=10)
    assert (job.status, job.result) == (DONE, {"ok": True})
    assert time.monotonic() - start < 2  # woken by the notification, not the 10 s timeout

    other, _ = queue.submit({"x": 2})
    start = time.monotonic()
    assert queue.wait(other, timeout_s=0.3).status == QUEUED  # timed out: the job as it is
    assert 0.25 <= time.monotonic() - start < 3
    assert queue.wait("0" * 32, timeout_s=5) is None
    assert queue.wait(job_id, timeout_s=5).status == DONE  # already finished: at once


def test_wait_wakes_on_failure_and_cancel(make_queue):
    queue = make_queue(max_deliveries=1)
    doomed, _ = queue.submit({"x": 1})
    [d] = queue.claim("w", count=1, block_ms=100)
    dropped, _ = queue.submit({"x": 2})
    threading.Timer(0.2, queue.fail, args=(d, "fatal")).start()
    threading.Timer(0.2, queue.cancel, args=(dropped,)).start()
    start = time.monotonic()
    assert queue.wait(doomed, timeout_s=10).status == FAILED
    assert queue.wait(dropped, timeout_s=10).status == CANCELLED
    assert time.monotonic() - start < 2


def test_many_waiters_on_one_job(queue):
    job_id, _ = queue.submit({"x": 1})
    results = []
    waiters = [threading.Thread(target=lambda: results.append(queue.wait(job_id, 10).status)) for _ in range(5)]
    for t in waiters:
        t.start()
    [d] = queue.claim("w", count=1, block_ms=100)
    queue.complete(d, {})
    for t in waiters:
        t.join(15)
    assert results == [DONE] * 5


def test_redis_down_raises_queue_unavailable():
    from harness.ports import free_port

    queue = RedisJobQueue(f"redis://127.0.0.1:{free_port()}/0", "down")  # nothing listens there
    try:
        for call in (queue.ping, queue.depth, lambda: queue.submit({}), lambda: queue.get("x"),
                     lambda: queue.claim("w", 1, 0), lambda: queue.wait("x", 0.1), lambda: queue.failed()):
            with pytest.raises(QueueUnavailable):
                call()
    finally:
        queue.close()
