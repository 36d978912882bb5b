"""A refit never fails, delays or changes an accepted job (real Redis, `genview generator-api` and worker processes).

Tenant A fits its basis and queues six jobs (three adaptive, three constant) while no worker runs; tenant B fits
twice meanwhile. One worker then claims all eight jobs in one batch and runs B's fits before A's generations (a
batch handles its fits first), so both new versions are saved before any of A's jobs is computed."""

from __future__ import annotations

import time

import httpx
import pytest

from genview.queue import RedisJobQueue
from harness.images import png_bytes
from harness.processes import service_env, start_api, start_worker
from services.generator.wiring import QUEUE_NAME

pytestmark = pytest.mark.slow  # API and worker processes on Redis

A, B = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
FAST = {"steps": "2", "size": "32"}


def _upload(base: str, headers: dict, seeds: range) -> list[str]:
    keys = []
    for seed in seeds:
        r = httpx.post(f"{base}/inputs", headers=headers, files={"image": ("x.png", png_bytes(48, 40, seed=seed))})
        assert r.status_code == 201, r.text
        keys.append(r.json()["key"])
    return keys


def _fit(base: str, headers: dict, body: dict) -> str:
    r = httpx.post(f"{base}/basis/fit", headers=headers, json=body)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def _wait(base: str, headers: dict, paths: list[str], timeout: float = 300) -> list[dict]:
    """The documents of `paths` once every one is final (done, failed or cancelled)."""
    deadline = time.monotonic() + timeout
    while True:
        docs = [httpx.get(f"{base}{p}", headers=headers, timeout=30).json() for p in paths]
        if all(d["status"] in ("done", "failed", "cancelled") for d in docs) or time.monotonic() > deadline:
            return docs
        time.sleep(0.3)


def test_a_refit_by_another_tenant_leaves_every_accepted_job_alone(fresh_redis_url, model_cache, tmp_path):
    env = service_env(model="tiny", device="cpu", model_cache=model_cache, redis_url=fresh_redis_url,
                      store_url=f"file://{tmp_path / 'store'}", api_keys="key-a,key-b", min_fit_images="2",
                      max_batch_size="8", max_batch_wait_ms="200")
    api, base = start_api("generator-api", env, tmp_path)
    worker = start_worker("generator-worker", env, tmp_path)
    _upload(base, A, range(3))
    [fit_a] = _wait(base, A, [f"/basis/jobs/{_fit(base, A, {'num': 3})}"])
    assert fit_a["status"] == "done", (fit_a, worker.tail())
    a_basis = fit_a["result"]["basis_id"]
    worker.stop()  # A's jobs and B's fits wait in the queue together

    jobs = {}
    for seed in range(10, 16):
        policy = "auto" if seed % 2 else "constant:100"
        r = httpx.post(f"{base}/generate", headers=A, files={"image": ("x.png", png_bytes(48, 40, seed=seed))},
                       data={**FAST, "noise_policy": policy})
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        jobs[r.json()["job_id"]] = policy
    _upload(base, B, range(20, 23))
    fits_b = [_fit(base, B, {"num": 2}), _fit(base, B, {"num": 3})]  # two new versions, B's own

    worker = start_worker("generator-worker", env, tmp_path, "-2")
    docs = dict(zip(jobs, _wait(base, A, [f"/jobs/{j}" for j in jobs])))
    b_fits = _wait(base, B, [f"/basis/jobs/{j}" for j in fits_b])
    assert [f["status"] for f in b_fits] == ["done", "done"], (b_fits, worker.tail())
    b_versions = {f["result"]["basis_id"] for f in b_fits}
    assert len(b_versions) == 2 and a_basis not in b_versions
    for job_id, doc in docs.items():
        assert doc["status"] == "done", (doc, worker.tail())
        result = doc["result"]
        if jobs[job_id] == "auto":  # the version it was accepted with, recorded in its result
            assert (result["basis_id"], result["fg_basis"]) == (a_basis, "fitted")
        else:  # a constant job never looks at a basis
            assert (result["basis_id"], result["fg_basis"]) == (None, "per-image")
    queue = RedisJobQueue(fresh_redis_url, QUEUE_NAME)
    try:  # B's refits were saved before any of A's jobs was computed
        assert max(queue.get(j).updated for j in fits_b) < min(queue.get(j).updated for j in jobs)
    finally:
        queue.close()
    info_a, info_b = (httpx.get(f"{base}/basis", headers=h).json() for h in (A, B))
    assert info_a["basis_id"] == a_basis and [v["basis_id"] for v in info_a["versions"]] == [a_basis]
    assert info_b["basis_id"] in b_versions and {v["basis_id"] for v in info_b["versions"]} == b_versions
    worker.stop()
    api.stop()
