"""End to end: `genview generator-api` → Redis → `genview generator-worker` processes → store, and back."""

from __future__ import annotations

import io
import json
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image

from genview.queue import RedisJobQueue
from genview.schemas import GenerateJob, GenerationParams, to_queue
from genview.store import ObjectStore, sha256_hex
from harness.images import png_bytes
from harness.ports import free_port
from harness.processes import service_env, start_api, start_worker

pytestmark = pytest.mark.slow  # end-to-end: API and worker processes on Redis

FAST = {"steps": "2", "size": "48", "noise_level": "auto:per-image"}


@pytest.fixture
def cluster(request, fresh_redis_url, model_cache, tmp_path):
    """Starts an API and workers on demand against the test Redis and a file:// or s3:// store."""
    procs = []

    class Cluster:
        store_url = f"file://{tmp_path / 'store'}"
        endpoint = None
        env: dict = {}

        def configure(self, **extra):
            self.env = service_env(model="tiny", device="cpu", model_cache=model_cache, redis_url=fresh_redis_url,
                                   store_url=self.store_url, visibility_timeout_s="3", max_batch_size="4",
                                   max_batch_wait_ms="200", **({"s3_endpoint_url": self.endpoint} if self.endpoint else {}),
                                   **extra)

        def api(self):
            proc, base = start_api("generator-api", self.env, tmp_path)
            procs.append(proc)
            return base

        def worker(self, name=""):
            proc = start_worker("generator-worker", self.env, tmp_path, name)
            procs.append(proc)
            return proc

        def store(self):
            return ObjectStore(self.store_url, self.endpoint)

    yield Cluster()
    for proc in procs:
        proc.stop()


def _post(base: str, image: bytes, wait: bool = True, **fields) -> httpx.Response:
    return httpx.post(f"{base}/generate", params={"wait": str(wait).lower(), "timeout": "120"},
                      files={"image": ("in.png", image, "image/png")}, data={**FAST, **fields}, timeout=150)


def _roundtrip_then_cache(cluster) -> None:
    """A request through a worker (which serves its GPU-idle share on its metrics port), then the same request
    from the cache with no worker running."""
    metrics_port = free_port()
    cluster.configure(worker_metrics_port=str(metrics_port))
    base = cluster.api()
    worker = cluster.worker()
    first = _post(base, png_bytes(seed=1), num_views="2")
    assert first.status_code == 200, first.text
    exported = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    idle = [line for line in exported.splitlines() if line.startswith("genview_worker_gpu_idle_ratio ")]
    assert len(idle) == 1 and 0.0 <= float(idle[0].split()[1]) < 1.0, exported[-2000:]
    body = first.json()
    assert body["status"] == "done" and body["cached"] is False
    assert body["fg_basis"] == "per-image" and 0 <= body["fg_ratio"] <= 1
    assert body["noise_level"] == 100 * min(4, int(body["fg_ratio"] * 5 + 1e-6))
    assert len(body["views"]) == 2
    for view in body["views"]:
        got = httpx.get(base + view["url"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(got.content)).size == (48, 48)
        assert cluster.store().exists(view["key"])
    worker.kill()
    again = _post(base, png_bytes(seed=1), num_views="2")
    assert again.status_code == 200 and again.json()["cached"] is True
    assert again.json()["views"] == body["views"]
    assert httpx.get(f"{base}/jobs/{again.json()['job_id']}").json()["status"] == "done"


def test_roundtrip_with_file_store(cluster):
    _roundtrip_then_cache(cluster)


def test_roundtrip_with_s3_store(cluster, s3_bucket, s3_endpoint):
    cluster.store_url, cluster.endpoint = s3_bucket, s3_endpoint
    _roundtrip_then_cache(cluster)


def _job_ids(base: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = _post(base, png_bytes(seed=100 + i), wait=False, steps="40")
        assert r.status_code == 202 and r.headers["location"] == f"/jobs/{r.json()['job_id']}"
        ids.append(r.json()["job_id"])
    return ids


def _wait_all(base: str, ids: list[str], timeout: float = 240) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        docs = {i: httpx.get(f"{base}/jobs/{i}").json() for i in ids}
        if all(d["status"] in ("done", "failed") for d in docs.values()):
            return docs
        time.sleep(0.5)
    raise TimeoutError(f"jobs not finished: {docs}")


def test_worker_killed_mid_batch_loses_nothing(cluster, fresh_redis_url):
    cluster.configure()
    base = cluster.api()
    ids = _job_ids(base, 4)
    doomed = cluster.worker("-doomed")
    queue = RedisJobQueue(fresh_redis_url, "generate")
    deadline = time.monotonic() + 120
    while not all(queue.get(i).status == "running" for i in ids):  # the whole batch is in the doomed worker
        assert time.monotonic() < deadline, doomed.tail()
        time.sleep(0.05)
    doomed.kill()  # SIGKILL in the middle of the batch
    assert all(queue.get(i).status == "running" for i in ids)
    cluster.worker("-rescuer")
    docs = _wait_all(base, ids)
    store = cluster.store()
    for doc in docs.values():
        assert doc["status"] == "done", doc
        assert queue.get(doc["job_id"]).deliveries == 2
        prefix = doc["views"][0]["key"].rsplit("/", 1)[0]
        assert store.list(prefix) == [f"{prefix}/0.png", f"{prefix}/fg.png", f"{prefix}/meta.json"]
        assert [v["key"] for v in json.loads(store.get(f"{prefix}/meta.json"))["views"]] == [f"{prefix}/0.png"]
    assert queue.depth() == 0


def test_always_failing_job_ends_failed_with_its_error(cluster, fresh_redis_url):
    cluster.configure(max_deliveries="2")
    base = cluster.api()
    cluster.worker()
    queue = RedisJobQueue(fresh_redis_url, "generate")
    missing = sha256_hex(b"never uploaded")
    job_id, _ = queue.submit(to_queue(GenerateJob(sha=missing, params=GenerationParams(
        model="tiny", noise_policy="adaptive:per-image"))))
    doc = _wait_all(base, [job_id], timeout=120)[job_id]
    assert doc["status"] == "failed"
    assert f"for input {missing}" in doc["error"] and "ObjectNotFound" in doc["error"]
    assert queue.get(job_id).deliveries == 2


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format="GIF")
    return buf.getvalue()


BAD_REQUESTS = [
    ("garbage", b"\x00garbage bytes, not an image" * 10, {}, 400, "undecodable_image"),
    ("truncated", png_bytes(seed=5)[:300], {}, 400, "corrupt_image"),
    ("empty", b"", {}, 400, "empty_image"),
    ("bomb-header", _png_claiming(12000, 12000), {}, 413, "too_many_pixels"),
    ("gif", _gif(), {}, 415, "unsupported_format"),
    ("noise-5000", png_bytes(seed=6), {"noise_level": "5000"}, 422, "invalid_parameters"),
    ("num-views-0", png_bytes(seed=6), {"num_views": "0"}, 422, "invalid_parameters"),
]


def test_bad_input_gets_4xx_json_and_service_keeps_answering(cluster):
    cluster.configure(max_pixels="1000000", max_upload_bytes="200000")
    base = cluster.api()
    cluster.worker()
    for name, data, fields, status, code in BAD_REQUESTS + [
            ("oversize", b"\x89PNG" + b"\x00" * 300_000, {}, 413, "body_too_large")]:
        r = _post(base, data, wait=False, **fields)
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"] == code, (name, r.text)
        assert r.json()["detail"], name
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
    ok = _post(base, png_bytes(seed=7))
    assert ok.status_code == 200 and ok.json()["status"] == "done"
