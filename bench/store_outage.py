"""A store outage under load with real processes: a scorer API and worker on Redis and a file store; jobs are
accepted, the store's folder is made unusable for `down_s` seconds (harness/outages.py) while the worker claims
them and clients keep sending; every request meanwhile must get 503 JSON `store_unavailable`, and every accepted
job must end done on its first delivery once the store is back (held by its worker, never failed or reclaimed).

    python -m bench.store_outage --out bench/results/store_outage.json
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
from safetensors.torch import save

from bench.queue_faults import RedisServer
from genview.queue import RedisJobQueue
from harness.outages import StoreFolderOutage
from harness.processes import Proc, service_env, start_api, start_worker

FIRST, HELD = 3, 12  # jobs done before the outage; jobs accepted just before it


@dataclass
class StoreOutageResult:
    """What clients and jobs met across the outage."""

    down_s: float
    accepted: int  # jobs accepted just before the outage, claimed by the worker during it
    refused: int  # requests sent during the outage
    refused_as_503_json: int  # … answered 503 `store_unavailable` with Retry-After
    not_ready: int  # /readyz answers during the outage that were 503
    ready_checks: int
    done_during_outage: int  # 0: the outage hit jobs in flight
    completed: int
    failed: int
    lost: int
    redelivered: int  # jobs delivered more than once (0: held by their worker, never reclaimed)
    completed_after_s: float  # from the store's return to the last held job done
    worker_alive: bool
    worker_held_jobs: bool  # its log says it held jobs instead of failing them


def _batch(seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    return save({"pairs": torch.randint(0, 256, (2, 2, 32, 32, 3), dtype=torch.uint8, generator=generator)})


def _until(condition: Callable, timeout_s: float, what: str):
    """Poll `condition()` until it returns something truthy (that value), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _store_refused(r: httpx.Response) -> bool:
    return (r.status_code == 503 and r.headers.get("content-type") == "application/json"
            and r.json()["error"] == "store_unavailable" and int(r.headers["retry-after"]) > 0)


def scenario(workdir: Path, redis_url: str, model_cache: str, down_s: float = 20.0) -> StoreOutageResult:
    """Run the outage against `genview scorer-api` and `genview scorer-worker` on `redis_url`."""
    env = service_env(scorer_model="tiny", device="cpu", model_cache=model_cache, redis_url=redis_url,
                      store_url=f"file://{workdir / 'store'}", visibility_timeout_s="3", max_deliveries="1",
                      max_batch_wait_ms="20", basis_refresh_s="0")
    api, base = start_api("scorer-api", env, workdir)
    worker: Proc = start_worker("scorer-worker", env, workdir)
    queue = RedisJobQueue(redis_url, "score")

    def submit(seed: int) -> httpx.Response:
        return httpx.post(f"{base}/score/batch", content=_batch(seed), params={"timeout": "0.01", "basis": "per-image"},
                          timeout=60)

    def statuses(ids: list[str]) -> dict[str, str]:
        return {job_id: queue.get(job_id).status for job_id in ids}

    def finished(ids: list[str]) -> dict[str, str] | None:
        now = statuses(ids)
        return now if set(now.values()) <= {"done", "failed"} else None

    try:
        first = [submit(seed).json()["job_id"] for seed in range(FIRST)]  # the worker is up and scoring
        _until(lambda: finished(first), 300, "the first jobs")
        worker.popen.send_signal(signal.SIGSTOP)  # the next jobs are accepted while no worker runs…
        accepted = [r.json()["job_id"] for r in map(submit, range(FIRST, FIRST + HELD)) if r.status_code == 202]
        outage = StoreFolderOutage(workdir / "store")
        outage.down()
        worker.popen.send_signal(signal.SIGCONT)  # … and claimed while the store is down
        refused, ready, end = [], [], time.monotonic() + down_s
        while time.monotonic() < end:  # the outage itself: requests that must be refused cleanly
            refused.append(submit(1000 + len(refused)))
            ready.append(httpx.get(f"{base}/readyz", timeout=30).status_code)
        during = statuses(accepted)
        outage.up()
        back = time.monotonic()
        final = _until(lambda: finished(accepted), 300, "the held jobs")
        completed_after = time.monotonic() - back
        jobs = [queue.get(job_id) for job_id in accepted]
        return StoreOutageResult(
            down_s, len(accepted), len(refused), sum(map(_store_refused, refused)), ready.count(503), len(ready),
            sum(s == "done" for s in during.values()), sum(s == "done" for s in final.values()),
            sum(s == "failed" for s in final.values()), len(accepted) - len(final),
            sum(j.deliveries > 1 for j in jobs), round(completed_after, 2), worker.popen.poll() is None,
            "is held (not failed)" in worker.tail(1_000_000))
    finally:
        queue.close()
        worker.stop()
        api.stop()


def with_own_redis(workdir: Path, down_s: float) -> StoreOutageResult:
    """`scenario` on a private redis-server and tiny presets written to `workdir`."""
    from genview.models.presets import ensure_random_unclip

    (workdir / "redis").mkdir()
    (workdir / "cache").mkdir()
    ensure_random_unclip("tiny", workdir / "cache")
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    try:
        return scenario(workdir, redis_server.url, str(workdir / "cache"), down_s)
    finally:
        redis_server.stop()


def main() -> None:
    from bench.report import run_main

    run_main(__doc__, lambda workdir, args: with_own_redis(workdir, args.down_s),
             {"--down-s": {"type": float, "default": 20.0}})


if __name__ == "__main__":
    main()
