"""services/worker_loop.py on both queue backends: adaptive batching, leases kept while a handler runs,
a raising handler fails (retries) its batch and the loop goes on."""

from __future__ import annotations

import threading
import time

import pytest

from genview.queue import DONE, MemoryJobQueue, RedisJobQueue
from services.worker_loop import CLAIM, COLLECT, START, WAIT, next_step, run_worker


@pytest.fixture(params=["memory", "redis"])
def make_queue(request):
    made = []

    def make(**kw):
        if request.param == "redis":
            q = RedisJobQueue(request.getfixturevalue("fresh_redis_url"), "loop", **kw)
        else:
            q = MemoryJobQueue("loop", **kw)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


class Worker:
    """run_worker in a thread with a handler that records its batches and can be held back."""

    def __init__(self, queue, max_batch=8, max_wait_ms=20, hold_s: float = 0.0, raise_on=None, heartbeat_file=None):
        self.queue, self.batches, self.started = queue, [], []
        self.gate = threading.Event()
        self.hold_s, self.raise_on = hold_s, raise_on
        self.stop = threading.Event()
        self.thread = threading.Thread(target=run_worker, daemon=True,
                                       args=(queue, self.handle, "w", max_batch, max_wait_ms, self.stop, 100,
                                             heartbeat_file))

    def handle(self, batch):
        self.started.append(time.monotonic())
        self.batches.append([d.payload["i"] for d in batch])
        if self.raise_on is not None and any(d.payload["i"] == self.raise_on for d in batch):
            raise RuntimeError("handler bug")
        time.sleep(self.hold_s)
        for d in batch:
            self.queue.complete(d, {"i": d.payload["i"]})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def wait_done(queue, ids, timeout=30.0):
    jobs = [queue.wait(i, timeout) for i in ids]
    assert [j.status for j in jobs] == [DONE] * len(ids), jobs
    return jobs


def test_idle_worker_starts_at_once_and_busy_worker_fills_the_next_batch(make_queue):
    queue = make_queue(visibility_timeout_s=30)
    with Worker(queue, max_batch=8, max_wait_ms=20, hold_s=0.6) as worker:
        submitted = time.monotonic()
        first, _ = queue.submit({"i": 0})
        deadline = time.monotonic() + 10
        while not worker.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert worker.started[0] - submitted < 0.5  # no waiting to fill a batch when idle
        rest = [queue.submit({"i": i})[0] for i in range(1, 6)]  # arrive while the first job runs
        wait_done(queue, [first, *rest])
    assert worker.batches == [[0], [1, 2, 3, 4, 5]]


def test_long_job_keeps_its_lease(make_queue):
    queue = make_queue(visibility_timeout_s=0.3)
    with Worker(queue, hold_s=1.5):
        job_id, _ = queue.submit({"i": 7})
        deadline = time.monotonic() + 10
        while queue.get(job_id).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stolen = []
        while queue.get(job_id).status == "running":  # an idle rival claims all along
            stolen += queue.claim("rival", 1, 50)
        assert stolen == []
    assert queue.get(job_id).deliveries == 1 and queue.get(job_id).status == DONE


def test_raising_handler_fails_its_batch_and_the_loop_goes_on(make_queue):
    queue = make_queue(visibility_timeout_s=30, max_deliveries=1)
    with Worker(queue, max_batch=1, raise_on=1) as worker:
        bad, _ = queue.submit({"i": 1})
        good, _ = queue.submit({"i": 2})
        wait_done(queue, [good])
        failed = queue.wait(bad, 10)
    assert failed.status == "failed" and failed.error == "RuntimeError: handler bug"
    assert worker.batches == [[1], [2]]


def test_heartbeat_file_is_touched_while_idle_and_between_batches(make_queue, tmp_path):
    beat = tmp_path / "heartbeat"
    queue = make_queue(visibility_timeout_s=30)
    with Worker(queue, hold_s=2.5, heartbeat_file=str(beat)) as worker:
        deadline = time.monotonic() + 10
        while not beat.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        job_id, _ = queue.submit({"i": 1})
        while not worker.started:  # the handler runs
            assert time.monotonic() < deadline
            time.sleep(0.01)
        during = beat.stat().st_mtime_ns
        time.sleep(0.5)
        assert beat.stat().st_mtime_ns == during  # a running batch does not count as progress
        wait_done(queue, [job_id])
        deadline = time.monotonic() + 5
        while beat.stat().st_mtime_ns == during:  # touched again once the batch is over
            assert time.monotonic() < deadline
            time.sleep(0.01)


@pytest.mark.parametrize("held", [1, 3, 7])
def test_an_idle_worker_never_waits_for_a_batch_to_fill(held):
    """Fewer jobs than a batch and nothing running: go at once, whatever the batch wait is."""
    assert next_step(busy=False, collected=held, max_batch=8, max_wait_ms=50) == START
    assert next_step(busy=False, collected=0, max_batch=8, max_wait_ms=50) == CLAIM  # starts with the first to come


def test_a_busy_worker_collects_the_next_batch_until_it_is_full():
    assert next_step(busy=True, collected=3, max_batch=8, max_wait_ms=50) == COLLECT
    assert next_step(busy=True, collected=8, max_batch=8, max_wait_ms=50) == WAIT
    assert next_step(busy=True, collected=3, max_batch=8, max_wait_ms=0) == WAIT
