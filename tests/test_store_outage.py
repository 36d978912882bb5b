"""A store outage behaves like a queue outage: 503 JSON `store_unavailable` with Retry-After on every route that
needs the store, readiness 503 meanwhile, and no accepted job failed or lost (held by its worker, then done)."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from bench.store_outage import scenario
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
    assert score.post("/score/batch", content=PAIRS, params={"timeout": "0.01", "basis": "per-image"}).status_code == 202


def test_every_store_operation_raises_store_unavailable_while_its_folder_is_gone(tmp_path):
    store = ObjectStore(f"file://{tmp_path}/store")
    store.put("a/b", b"x")
    StoreFolderOutage(tmp_path / "store").down()
    for op in (lambda: store.get("a/b"), lambda: store.exists("a/b"), lambda: store.put("a/c", b"y"),
               lambda: store.delete("a/b"), store.ping):
        with pytest.raises(StoreUnavailable):
            op()


@pytest.mark.slow
def test_jobs_accepted_before_a_20_s_store_outage_are_held_by_the_worker_and_all_complete(
        tmp_path, fresh_redis_url, model_cache):
    result = scenario(tmp_path, fresh_redis_url, model_cache, down_s=20.0)
    assert result.accepted == 12 and result.refused > 0
    assert result.refused_as_503_json == result.refused  # 503 JSON store_unavailable + Retry-After, never 500
    assert result.not_ready == result.ready_checks > 0
    assert result.done_during_outage == 0, "the outage came too late: the worker had finished the jobs"
    assert (result.completed, result.failed, result.lost) == (12, 0, 0)
    assert result.redelivered == 0  # held by their worker (leases kept), never reclaimed nor failed
    assert result.worker_alive and result.worker_held_jobs


@pytest.mark.slow
def test_an_unreachable_s3_endpoint_is_store_unavailable(monkeypatch):
    from harness.ports import free_port

    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    store = ObjectStore("s3://genview/data", endpoint_url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    with pytest.raises(StoreUnavailable, match="EndpointConnectionError"):
        store.put("a/b", b"x")
