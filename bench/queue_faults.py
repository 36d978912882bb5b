"""Queue faults with real processes: leases of long jobs, SIGKILLed workers, a Redis crash and restart.

Workers are `python -m bench.queue_faults worker …` processes running the real worker loop
(services/worker_loop.py) with a handler that only sleeps, so no model is needed. Redis is a private
redis-server with AOF (`appendfsync always`) that the outage scenario SIGKILLs and restarts.

    python -m bench.queue_faults --out bench/results/queue_faults.json
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.report import emit
from harness.ports import free_port
from genview.queue import DONE, FAILED, TERMINAL, Delivery, JobQueue, QueueUnavailable, RedisJobQueue

QUEUE = "faults"
HOLDER_PREFIX = "fault-bench"


# --- the processes ---------------------------------------------------------------------------------------

class RedisServer:
    """A private redis-server with AOF on a fixed port, so that it can be killed and started again."""

    def __init__(self, workdir: Path):
        self.workdir, self.port = workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed"
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not listen on {self.port}")

    def crash(self) -> None:
        """SIGKILL: no shutdown, only what AOF already holds survives."""
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@dataclass(frozen=True)
class QueueOptions:
    visibility_timeout_s: float = 2.0
    max_deliveries: int = 5
    retry_backoff_s: float = 0.5

    def open(self, url: str) -> RedisJobQueue:
        return RedisJobQueue(url, QUEUE, **asdict(self))

    def argv(self) -> list[str]:
        return [f"--{k.replace('_', '-')}={v}" for k, v in asdict(self).items()]


class Workers:
    """Worker processes (this module's `worker` command), logs in `workdir`."""

    def __init__(self, url: str, options: QueueOptions, workdir: Path):
        self.url, self.options, self.workdir = url, options, workdir
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, n: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for _ in range(n):
            log = open(self.workdir / f"worker-{len(self.procs)}.log", "wb")
            p = subprocess.Popen([sys.executable, "-m", "bench.queue_faults", "worker", self.url, *self.options.argv()],
                                 env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
            self.procs[p.pid] = p

    def wait_serving(self, timeout_s: float = 180) -> None:
        """Block until every worker has entered its loop (it logs `serving`)."""
        logs = [self.workdir / f"worker-{i}.log" for i in range(len(self.procs))]
        _wait_until(lambda: all(" serving " in log.read_text() for log in logs), timeout_s,
                    "the workers did not start serving")

    def exited(self) -> list[int]:
        return [pid for pid, p in self.procs.items() if p.poll() is not None]

    def kill(self, pid: int) -> None:
        self.procs[pid].kill()
        self.procs[pid].wait(30)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)


def holder_pid(queue: RedisJobQueue, job_id: str) -> int | None:
    """The pid of the worker process holding `job_id` (from its consumer name), if one does."""
    for entry in queue.r.xpending_range(queue.stream, "workers", "-", "+", 100):
        fields = queue.r.xrange(queue.stream, entry["message_id"], entry["message_id"])
        if fields and fields[0][1].get("job_id") == job_id:
            return int(entry["consumer"].split(":")[1])
    return None


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


# --- the scenarios ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LeaseResult:
    visibility_timeout_s: float
    compute_s: float
    workers: int  # one runs the long job, the others are idle and claim all along
    long_job_status: str
    long_job_deliveries: int  # 1: never redelivered while its worker lived
    killed_job_status: str
    killed_job_deliveries: int  # 2: reclaimed once after its worker was SIGKILLed
    killed_job_done_after_s: float  # from the SIGKILL to done
    worker_exits: int  # besides the one killed


def lease_scenario(workdir: Path, compute_s: float = 8.0, workers: int = 4,
                   options: QueueOptions = QueueOptions()) -> LeaseResult:
    """A job computing `compute_s` ≫ the visibility timeout with idle workers around, then one whose worker dies."""
    redis_server = RedisServer(workdir)
    redis_server.start()
    pool = Workers(redis_server.url, options, workdir)
    queue = options.open(redis_server.url)
    try:
        pool.start(workers)
        pool.wait_serving()
        long_job, _ = queue.submit({"compute_s": compute_s})
        long = queue.wait(long_job, compute_s + 60)
        doomed, _ = queue.submit({"compute_s": compute_s / 2})
        _wait_until(lambda: holder_pid(queue, doomed) is not None and queue.get(doomed).status == "running",
                    60, "the second job did not start")
        pid = holder_pid(queue, doomed)
        pool.kill(pid)
        killed_at = time.monotonic()
        killed = queue.wait(doomed, compute_s + 60)
        return LeaseResult(options.visibility_timeout_s, compute_s, workers, long.status, long.deliveries,
                           killed.status, killed.deliveries, round(time.monotonic() - killed_at, 2),
                           len([p for p in pool.exited() if p != pid]))
    finally:
        queue.close()
        pool.stop()
        redis_server.stop()


@dataclass(frozen=True)
class OutageResult:
    submitted_for_s: float
    redis_down_s: float
    accepted: int  # submit() returned a job id
    refused: int  # submit() raised QueueUnavailable (Redis down)
    completed: int
    failed: int
    lost: int  # accepted but never finished
    redelivered: int  # jobs delivered more than once (their completion was not recorded in the outage)
    recomputed: int  # the queue's count of jobs handed out again with an earlier delivery unfinished
    recovered_after_s: float  # from Redis answering again to the last accepted job finished
    worker_exits: int


def outage_scenario(workdir: Path, workers: int = 3, submit_s: float = 8.0, down_at_s: float = 2.0,
                    down_for_s: float = 3.0, every_s: float = 0.05, compute_s: float = 0.3,
                    options: QueueOptions = QueueOptions()) -> OutageResult:
    """Submit jobs steadily, faster than the workers finish them (so batches are running when Redis dies);
    SIGKILL Redis (AOF) meanwhile and restart it; every accepted job must finish, every worker live on."""
    redis_server = RedisServer(workdir)
    redis_server.start()
    pool = Workers(redis_server.url, options, workdir)
    queue = options.open(redis_server.url)
    accepted: list[str] = []
    refused = 0
    try:
        pool.start(workers)
        pool.wait_serving()

        back: list[float] = []

        def chaos() -> None:
            time.sleep(down_at_s)
            redis_server.crash()
            time.sleep(down_for_s)
            redis_server.start()
            back.append(time.monotonic())

        chaos_thread = threading.Thread(target=chaos)
        chaos_thread.start()
        end = time.monotonic() + submit_s
        while time.monotonic() < end:
            try:
                accepted.append(queue.submit({"compute_s": compute_s})[0])
            except QueueUnavailable:
                refused += 1
            time.sleep(every_s)
        chaos_thread.join()
        jobs = {}
        deadline = time.monotonic() + 120
        for job_id in accepted:
            while True:
                try:
                    jobs[job_id] = queue.wait(job_id, max(deadline - time.monotonic(), 0))
                    break
                except QueueUnavailable:
                    time.sleep(0.2)
        finished = [j for j in jobs.values() if j is not None and j.status in TERMINAL]
        last = max((j.updated for j in finished), default=time.time())  # wall clock → the monotonic one
        recovered_s = last - time.time() + time.monotonic() - back[0]
        return OutageResult(submit_s, down_for_s, len(accepted), refused,
                            sum(j.status == DONE for j in finished), sum(j.status == FAILED for j in finished),
                            len(accepted) - len(finished), sum(j.deliveries > 1 for j in finished),
                            queue.recomputed(), round(recovered_s, 2), len(pool.exited()))
    finally:
        queue.close()
        pool.stop()
        redis_server.stop()


# --- the worker process ----------------------------------------------------------------------------------

def worker_main(url: str, options: QueueOptions) -> None:
    """Serve the fault queue with a handler that sleeps `compute_s`, until SIGTERM."""
    from services.worker_loop import consumer_name, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    queue: JobQueue = options.open(url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def handle(batch: list[Delivery]) -> None:
        for delivery in batch:
            time.sleep(delivery.payload["compute_s"])
            queue.complete(delivery, {"pid": os.getpid()})

    run_worker(queue, handle, consumer_name(HOLDER_PREFIX), 4, 20, stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker")
    worker.add_argument("url")
    for field, default in asdict(QueueOptions()).items():
        worker.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--out", help="write the JSON result here")
    args = parser.parse_args()
    if args.command == "worker":
        options = QueueOptions(args.visibility_timeout_s, args.max_deliveries, args.retry_backoff_s)
        return worker_main(args.url, options)
    with tempfile.TemporaryDirectory() as lease_dir, tempfile.TemporaryDirectory() as outage_dir, \
            tempfile.TemporaryDirectory() as resume_dir:
        result = {"lease": asdict(lease_scenario(Path(lease_dir))),
                  "outage": asdict(outage_scenario(Path(outage_dir))),
                  # leases far longer than the outage: only the resume of lost jobs finishes them soon after it
                  "outage_visibility_120s": asdict(outage_scenario(
                      Path(resume_dir), options=QueueOptions(visibility_timeout_s=120.0)))}
    emit(result, args.out)


if __name__ == "__main__":
    main()
