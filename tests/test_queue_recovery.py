"""Recovery after a Redis outage: a worker that lost the outcome of a job it held (Redis SIGKILLed and restarted
from its append-only file) resumes the job as soon as Redis answers, not after the visibility timeout, and the
second computation is counted (`recomputed`, the `genview_jobs_recomputed` metric)."""

from __future__ import annotations

import logging
import threading

import pytest
from prometheus_client import generate_latest

from bench.queue_faults import RedisServer
from genview.queue import DONE, Delivery, RedisJobQueue
from services.metrics import ServiceMetrics
from services.worker_loop import run_worker

VISIBILITY_S = 600.0  # far longer than the test may wait: only a resume can finish the job in time


@pytest.mark.slow
def test_a_job_whose_outcome_was_lost_in_an_outage_is_resumed_at_once_and_counted(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    queue = RedisJobQueue(server.url, "recovery", visibility_timeout_s=VISIBILITY_S, retry_backoff_s=0)
    started, redis_down, gave_up = threading.Event(), threading.Event(), threading.Event()
    deliveries: list[int] = []

    def handle(batch: list[Delivery]) -> None:
        for delivery in batch:
            deliveries.append(delivery.deliveries)
            if delivery.deliveries == 1:  # the first computation ends while Redis is down: its outcome is lost
                started.set()
                redis_down.wait(60)
                try:
                    queue.complete(delivery, {"try": 1})
                finally:
                    gave_up.set()
            else:
                queue.complete(delivery, {"try": delivery.deliveries})

    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(queue, handle, "recovery@test:1", 1, 0, stop))
    worker.start()
    try:
        job_id, _ = queue.submit({"n": 1})
        assert started.wait(60)
        server.crash()
        redis_down.set()
        assert gave_up.wait(60)
        server.start()  # same port, same append-only file: the job is still pending for this worker
        job = queue.wait(job_id, 120)
        assert job is not None and job.status == DONE, job
        assert job.result == {"try": 2} and deliveries == [1, 2]
        assert queue.recomputed() == 1
        scrape = generate_latest(ServiceMetrics("scorer", {"recovery": queue}).registry).decode()
        assert 'genview_jobs_recomputed{queue="recovery"} 1.0' in scrape
    finally:
        stop.set()
        worker.join(60)
        queue.close()
        server.stop()


class _RestartOnLostOutcome(logging.Handler):
    """Starts Redis again the moment the worker logs that it could not record a job's outcome: the queue then
    answers before the worker's next claim, so only the worker's own note of the lost outcome can resume the job."""

    def __init__(self, server: RedisServer):
        super().__init__()
        self.server, self.restarted = server, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("could not record the failure") and not self.restarted.is_set():
            self.server.start()
            self.restarted.set()


@pytest.mark.slow
def test_an_outcome_lost_while_the_queue_was_down_is_resumed_even_if_the_next_claim_succeeds(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    queue = RedisJobQueue(server.url, "recovery", visibility_timeout_s=VISIBILITY_S, retry_backoff_s=0)
    started, redis_down = threading.Event(), threading.Event()
    deliveries: list[int] = []
    restarter = _RestartOnLostOutcome(server)
    logger = logging.getLogger("services.worker_loop")
    logger.addHandler(restarter)

    def handle(batch: list[Delivery]) -> None:
        for delivery in batch:
            deliveries.append(delivery.deliveries)
            if delivery.deliveries == 1:  # completes while Redis is down: raises, and so does the worker's fail()
                started.set()
                redis_down.wait(60)
            queue.complete(delivery, {"try": delivery.deliveries})

    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(queue, handle, "recovery@test:2", 1, 0, stop))
    worker.start()
    try:
        job_id, _ = queue.submit({"n": 1})
        assert started.wait(60)
        server.crash()
        redis_down.set()
        assert restarter.restarted.wait(60)
        job = queue.wait(job_id, 60)  # far less than the visibility timeout: only a resume finishes it
        assert job is not None and job.status == DONE, job
        assert job.result == {"try": 2} and deliveries == [1, 2]
    finally:
        logger.removeHandler(restarter)
        stop.set()
        worker.join(60)
        queue.close()
        server.stop()
