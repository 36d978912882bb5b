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


class OutageWorker:
    """A private Redis with AOF and one worker whose first computation of a job completes while Redis is down."""

    def __init__(self, tmp_path, consumer: str):
        self.server = RedisServer(tmp_path)
        self.server.start()
        self.queue = RedisJobQueue(self.server.url, "recovery", visibility_timeout_s=VISIBILITY_S, retry_backoff_s=0)
        self.started, self.redis_down, self.gave_up, self.stop = (threading.Event() for _ in range(4))
        self.deliveries: list[int] = []
        self.worker = threading.Thread(target=run_worker, args=(self.queue, self.handle, consumer, 1, 0, self.stop))

    def handle(self, batch: list[Delivery]) -> None:
        for delivery in batch:
            self.deliveries.append(delivery.deliveries)
            first = delivery.deliveries == 1
            try:
                if first:  # the first computation ends while Redis is down: its outcome is lost
                    self.started.set()
                    self.redis_down.wait(60)
                self.queue.complete(delivery, {"try": delivery.deliveries})
            finally:
                if first:
                    self.gave_up.set()

    def crash_during_first_computation(self) -> str:
        """Submit a job and SIGKILL Redis while the worker computes it; the job's id."""
        self.worker.start()
        job_id, _ = self.queue.submit({"n": 1})
        assert self.started.wait(60)
        self.server.crash()
        self.redis_down.set()
        return job_id

    def close(self) -> None:
        self.stop.set()
        self.worker.join(60)
        self.queue.close()
        self.server.stop()


@pytest.mark.slow
def test_a_job_whose_outcome_was_lost_in_an_outage_is_resumed_at_once_and_counted(tmp_path):
    run = OutageWorker(tmp_path, "recovery@test:1")
    try:
        job_id = run.crash_during_first_computation()
        assert run.gave_up.wait(60)
        run.server.start()  # same port, same append-only file: the job is still pending for this worker
        job = run.queue.wait(job_id, 120)
        assert job is not None and job.status == DONE, job
        assert job.result == {"try": 2} and run.deliveries == [1, 2]
        assert run.queue.recomputed() == 1
        scrape = generate_latest(ServiceMetrics("scorer", {"recovery": run.queue}).registry).decode()
        assert 'genview_jobs_recomputed{queue="recovery"} 1.0' in scrape
    finally:
        run.close()


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
    run = OutageWorker(tmp_path, "recovery@test:2")
    restarter = _RestartOnLostOutcome(run.server)
    logger = logging.getLogger("services.worker_loop")
    logger.addHandler(restarter)
    try:
        job_id = run.crash_during_first_computation()
        assert restarter.restarted.wait(60)
        job = run.queue.wait(job_id, 60)  # far less than the visibility timeout: only a resume finishes it
        assert job is not None and job.status == DONE, job
        assert job.result == {"try": 2} and run.deliveries == [1, 2]
    finally:
        logger.removeHandler(restarter)
        run.close()
