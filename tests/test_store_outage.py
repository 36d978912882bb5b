"""A store outage behaves like a queue outage: 503 JSON `store_unavailable` with Retry-After on every route that
needs the store, readiness 503 meanwhile, and no accepted job failed or lost (held by its worker, then done)."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from safetensors.torch import save

import torch
from genview.queue import MemoryJobQueue
from genview.settings import Settings
from genview.store import ObjectStore, StoreUnavailable
from harness.images import png_bytes
from harness.outages import StoreFolderOutage
from services.generator.app import create_app as generator_app
from services.scorer.app import create_app as scorer_app

PAIRS = save({"pairs": torch.zeros(1, 2, 16, 16, 3, dtype=torch.uint8)})


def _clients(tmp_path) -> tuple[TestClient, TestClient]:
    settings = Settings(model="tiny", scorer_model="tiny", store_url=f"file://{tmp_path}/store",
                        max_upload_bytes=64 * 1024)
    store = ObjectStore(settings.store_url)
    return (TestClient(generator_app(settings, MemoryJobQueue("g"), store)),
            TestClient(scorer_app(settings, MemoryJobQueue("s"), store)))


def test_store_outage_is_503_json_with_retry_after_on_every_store_route(tmp_path):
    gen, score = _clients(tmp_path)
    image = {"image": ("x.png", png_bytes(), "image/png")}
    assert gen.post("/inputs", files=image).status_code == 201
    outage = StoreFolderOutage(tmp_path / "store")
    outage.down()
    pair = {"original": ("o.png", png_bytes()), "view": ("v.png", png_bytes(seed=1))}
    answers = {
        "generate": gen.post("/generate", files=image, data={"noise_level": "constant:100", "size": "32"}),
        "inputs": gen.post("/inputs", files={"image": ("y.png", png_bytes(seed=2), "image/png")}),
        "views": gen.get("/views/views/abc/def/0.png"),
        "basis": gen.get("/basis"),
        "score": score.post("/score", files=pair),
        "score/batch": score.post("/score/batch", content=PAIRS),
        "score/basis": score.get("/score/basis"),
    }
    for route, r in answers.items():
        assert r.status_code == 503, (route, r.status_code, r.text)
        assert r.json()["error"] == "store_unavailable" and int(r.headers["retry-after"]) > 0, route
        assert str(tmp_path) not in r.text, route
    ready = gen.get("/readyz")
    assert ready.status_code == 503 and ready.json()["detail"] == ["store"]
    outage.up()
    assert gen.get("/readyz").status_code == 200
    assert score.post("/score/batch", content=PAIRS, params={"timeout": "0.01"}).status_code == 202


def test_every_store_operation_raises_store_unavailable_while_its_folder_is_gone(tmp_path):
    store = ObjectStore(f"file://{tmp_path}/store")
    store.put("a/b", b"x")
    StoreFolderOutage(tmp_path / "store").down()
    for op in (lambda: store.get("a/b"), lambda: store.exists("a/b"), lambda: store.put("a/c", b"y"),
               lambda: store.delete("a/b"), store.ping):
        with pytest.raises(StoreUnavailable):
            op()


def _batch(seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    return save({"pairs": torch.randint(0, 256, (2, 2, 32, 32, 3), dtype=torch.uint8, generator=generator)})


def _until(condition, timeout_s: float, what: str):
    """Poll `condition()` until it returns something truthy (that value), failing after `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_jobs_accepted_before_a_20_s_store_outage_are_held_by_the_worker_and_all_complete(
        tmp_path, fresh_redis_url, model_cache):
    import signal
    import time

    from genview.queue import RedisJobQueue
    from harness.processes import service_env, start_api, start_worker

    env = service_env(scorer_model="tiny", device="cpu", model_cache=model_cache, redis_url=fresh_redis_url,
                      store_url=f"file://{tmp_path / 'store'}", visibility_timeout_s="3", max_deliveries="1",
                      max_batch_wait_ms="20", basis_refresh_s="0")
    api, base = start_api("scorer-api", env, tmp_path)
    worker = start_worker("scorer-worker", env, tmp_path)
    queue = RedisJobQueue(fresh_redis_url, "score")

    def submit(seed: int) -> httpx.Response:
        return httpx.post(f"{base}/score/batch", content=_batch(seed), params={"timeout": "0.01"}, timeout=60)

    def statuses(ids: list[str]) -> dict[str, str]:
        return {job_id: queue.get(job_id).status for job_id in ids}

    first = [submit(seed).json()["job_id"] for seed in range(3)]  # the worker is up and scoring
    _until(lambda: set(statuses(first).values()) == {"done"}, 300, "the first jobs")
    worker.popen.send_signal(signal.SIGSTOP)  # the next jobs are accepted while no worker runs…
    accepted = [r.json()["job_id"] for r in map(submit, range(3, 15)) if r.status_code == 202]
    outage = StoreFolderOutage(tmp_path / "store")
    outage.down()
    worker.popen.send_signal(signal.SIGCONT)  # … and claimed while the store is down
    refused, ready, end = [], [], time.monotonic() + 20.0
    while time.monotonic() < end:  # the outage itself: 20 s of requests that must be refused cleanly
        refused.append(submit(100 + len(refused)))
        ready.append(httpx.get(f"{base}/readyz", timeout=30).status_code)
    during = statuses(accepted)
    outage.up()
    def finished() -> dict[str, str] | None:
        now = statuses(accepted)
        return now if set(now.values()) <= {"done", "failed"} else None

    final = _until(finished, 300, "the held jobs")
    assert len(accepted) == 12 and refused
    assert all(r.status_code == 503 and r.json()["error"] == "store_unavailable" and r.headers["retry-after"]
               for r in refused), [r.text for r in refused if r.status_code != 503][:3]
    assert set(ready) == {503}
    assert "done" not in during.values(), "the outage came too late: the worker had finished the jobs"
    assert set(final.values()) == {"done"}, final
    assert all(queue.get(job_id).deliveries == 1 for job_id in accepted)  # held by their worker, never reclaimed
    assert worker.popen.poll() is None and "is held (not failed)" in worker.tail(200_000)
    queue.close()
    worker.stop()
    api.stop()
