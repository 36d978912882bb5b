"""The generator API and worker in one process (embedded queue): caching headers, auth, PCA basis, batching."""

from __future__ import annotations

import io
import subprocess

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from genview.basis import DEFAULT_OWNER, BasisStore
from genview.images import load_rgb
from genview.method.foreground import foreground_proportion
from genview.method.noise import adaptive_noise_level
from genview.models.unclip import UnclipGenerator
from genview.queue import MemoryJobQueue
from genview.settings import Settings
from genview.store import ObjectStore
from services.generator.app import create_app
from services.generator.worker import GeneratorWorker
from harness.images import png_bytes
from harness.processes import genview_cmd, service_env

FAST = {"steps": "2", "size": "32", "noise_level": "auto:per-image"}


@pytest.fixture(scope="module")
def generator(model_cache):
    return UnclipGenerator.load("tiny", "cpu", model_cache)


@pytest.fixture
def embedded(generator, model_cache, tmp_path):
    """API + queue + store + a worker whose batches the test runs by hand."""
    settings = Settings(model="tiny", device="cpu", model_cache=model_cache, store_url=f"file://{tmp_path}/store",
                        max_batch_size=8)
    queue, store = MemoryJobQueue("generate"), ObjectStore(settings.store_url)
    client = TestClient(create_app(settings, queue, store))
    worker = GeneratorWorker(settings, generator, queue, store)

    def drain():
        while batch := queue.claim("test", 8, 0):
            worker.handle(batch)

    return client, queue, store, worker, drain, settings


def _submit(client, seed=0, **fields):
    r = client.post("/generate", files={"image": ("x.png", png_bytes(seed=seed), "image/png")},
                    data={**FAST, **fields})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def test_jobs_with_different_levels_share_one_pipeline_call(embedded, generator, monkeypatch):
    client, queue, store, worker, drain, _ = embedded
    calls = []
    real = generator.generate
    monkeypatch.setattr(generator, "generate", lambda embeds, levels, *a, **k: (
        calls.append(levels.tolist()), real(embeds, levels, *a, **k))[1])
    ids = [_submit(client, seed=i, noise_level=level) for i, level in enumerate(["0", "constant:200", "400"])]
    drain()
    assert calls == [[0, 200, 400]]
    assert [client.get(f"/jobs/{i}").json()["noise_level"] for i in ids] == [0, 200, 400]


def test_view_is_immutable_with_etag(embedded):
    client, _, _, _, drain, _ = embedded
    job_id = _submit(client)
    drain()
    doc = client.get(f"/jobs/{job_id}").json()
    url = doc["views"][0]["url"]
    fg_map = client.get("/views/" + doc["fg_map"].removeprefix("views/"))
    assert fg_map.status_code == 200 and Image.open(io.BytesIO(fg_map.content)).mode == "L"
    first = client.get(url)
    assert first.status_code == 200 and "immutable" in first.headers["cache-control"]
    assert client.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    assert client.get("/views/..%2F..%2Fetc/passwd.png").status_code in (400, 404)
    assert client.get("/views/" + "0" * 64 + "/" + "1" * 32 + "/0.png").json()["error"] == "unknown_view"
    assert client.get("/jobs/nope").status_code == 404


def test_api_keys_guard_everything_but_health(generator, model_cache, tmp_path):
    settings = Settings(model="tiny", store_url=f"file://{tmp_path}", api_keys="k1, k2")
    client = TestClient(create_app(settings, MemoryJobQueue("keys"), ObjectStore(settings.store_url)))
    assert client.get("/healthz").status_code == 200
    assert client.get("/jobs/x").status_code == 401 and client.get("/jobs/x").json()["error"] == "unauthorized"
    assert client.get("/jobs/x", headers={"Authorization": "Bearer k2"}).status_code == 404
    assert client.get("/jobs/x", headers={"X-API-Key": "k1"}).status_code == 404


def test_readyz_reports_an_unreachable_store(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(model="tiny", store_url="s3://no-such-bucket/x", s3_endpoint_url=s3_endpoint)
    client = TestClient(create_app(settings, MemoryJobQueue("ready"), ObjectStore(settings.store_url, s3_endpoint)))
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["detail"] == ["store"]
    assert s3_endpoint not in r.text and "no-such-bucket" not in r.text


@pytest.mark.slow
def test_fit_pca_basis_is_used_for_adaptive_levels(embedded, generator, model_cache, tmp_path):
    client, _, store, worker, drain, settings = embedded
    folder = tmp_path / "images" / "nested"
    folder.mkdir(parents=True)
    for i in range(6):
        (folder / f"{i}.png").write_bytes(png_bytes(64, 64, seed=50 + i))
    done = subprocess.run(genview_cmd("fit-pca", "--encoder", "generator", "--images", str(tmp_path / "images"),
                                      "--num", "5"),
                          env=service_env(model="tiny", device="cpu", model_cache=model_cache,
                                          store_url=settings.store_url), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    basis = BasisStore(store, "generator-tiny").current(DEFAULT_OWNER)
    assert basis is not None and basis.fingerprint in done.stdout
    job_id = _submit(client, seed=99, noise_level="auto")
    drain()
    doc = client.get(f"/jobs/{job_id}").json()
    tokens = generator.encode([load_rgb(png_bytes(seed=99), 10**8)]).tokens
    expected = float(foreground_proportion(tokens, basis)[0])
    assert doc["fg_basis"] == "fitted" and doc["basis_id"] == basis.fingerprint
    assert doc["fg_ratio"] == pytest.approx(expected)
    assert doc["noise_level"] == int(adaptive_noise_level(torch.tensor([expected]))[0])
