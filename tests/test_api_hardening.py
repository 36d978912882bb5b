"""Hardening of both APIs in process (memory queue, file store): auth before body, body limits as bytes arrive,
tenants, cache truth, backpressure, readiness without leaks, cancel and dead letters, adaptive without a basis."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from fastapi.testclient import TestClient

from genview.queue import MemoryJobQueue, RedisJobQueue
from genview.schemas import GenerationResult, ViewRef
from genview.settings import Settings
from genview.store import ObjectStore, fg_map_key, sha256_hex, view_key, view_meta_key
from services.generator.app import create_app as generator_app
from services.scorer.app import create_app as scorer_app
from harness.images import png_bytes
from harness.ports import free_port, wait_for_port
from bench.attacks import MULTIPART, MULTIPART_FILE_START, send_chunked
from tests.http_attacks import serve_in_thread

PER_IMAGE = {"noise_level": "auto:per-image", "steps": "2", "size": "32"}
A, B = {"X-API-Key": "key-a"}, {"Authorization": "Bearer key-b"}


def _settings(tmp_path, **extra) -> Settings:
    return Settings(model="tiny", scorer_model="tiny", store_url=f"file://{tmp_path}/store",
                    max_upload_bytes=64 * 1024, **extra)


@pytest.fixture
def gen(tmp_path):
    """The generator API with two tenants, its queue and store."""
    settings = _settings(tmp_path, api_keys="key-a,key-b", metrics_key="scrape")
    queue, store = MemoryJobQueue("g"), ObjectStore(settings.store_url)
    return TestClient(generator_app(settings, queue, store)), queue, store


def _post(client, image=None, headers=A, **fields):
    return client.post("/generate", headers=headers, files={"image": ("x.png", image or png_bytes(), "image/png")},
                       data={**PER_IMAGE, **fields})


def _finish(store: ObjectStore, sha: str, job_payload: dict) -> GenerationResult:
    """Write a finished result for a job the way a worker does (views, fg map, result document)."""
    from genview.schemas import parse_payload

    params = parse_payload(job_payload).params
    view, fg = view_key(sha, params.hash, 0), fg_map_key(sha, params.hash)
    for key in (view, fg):
        store.put(key, png_bytes(8, 8))
    result = GenerationResult(fg_ratio=0.5, fg_basis="per-image", basis_id=None, noise_level=200,
                              noise_policy=params.noise_policy, seed=0, size=32, views=[ViewRef(key=view)], fg_map=fg)
    store.put(view_meta_key(sha, params.hash), result.model_dump_json().encode())
    return result


def test_auth_comes_before_the_body_limit(gen):
    client, _, _ = gen
    big = b"x" * (1 << 20)
    assert client.post("/generate", content=big).json()["error"] == "unauthorized"
    r = client.post("/generate", content=big, headers={**A, "content-type": "application/octet-stream"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


def test_a_chunked_body_is_stopped_at_the_limit(gen):
    client, _, _ = gen
    with serve_in_thread(client.app) as (host, port):
        status, sent = send_chunked(host, port, "/generate", {"X-API-Key": "key-a", "Content-Type": MULTIPART},
                                    offer=64 << 20, prefix=MULTIPART_FILE_START)
    assert status == 413
    assert sent < 8 << 20, f"the server kept reading: {sent} bytes of a body limited to ~128 KiB"


def test_duplicate_form_fields_are_refused(gen):
    client, _, _ = gen
    r = client.post("/generate", headers=A, files=[("image", ("x.png", png_bytes(), "image/png"))],
                    data={"steps": ["2", "3"], "noise_level": "auto:per-image"})
    assert r.status_code == 422 and r.json()["detail"] == [{"field": "steps", "message": "given more than once"}]


def test_tenants_see_only_their_own_jobs_views_inputs_and_gallery(gen):
    client, queue, store = gen
    image = png_bytes(seed=7)
    sha = sha256_hex(image)
    job_id = _post(client, image).json()["job_id"]
    assert client.get(f"/jobs/{job_id}", headers=A).status_code == 202
    assert client.get(f"/jobs/{job_id}", headers=B).status_code == 404
    result = _finish(store, sha, queue.get(job_id).payload)
    view = result.views[0].key.removeprefix("views/")
    assert client.get(f"/views/{view}", headers=A).status_code == 200
    assert client.get(f"/views/{view}", headers=B).json()["error"] == "unknown_view"
    assert client.get(f"/inputs/{sha}", headers=A).content == image
    assert client.get(f"/inputs/{sha}", headers=B).status_code == 404
    assert sha[:12] in client.get("/gallery", headers=A).text
    assert sha[:12] not in client.get("/gallery", headers=B).text
    cached = _post(client, image).json()
    assert cached["cached"] and client.get(f"/jobs/{cached['job_id']}", headers=B).status_code == 404
    assert client.get("/jobs?status=failed", headers=B).json() == []
    # the same image uploaded by B makes it B's too (content-addressed storage, ownership per tenant)
    assert _post(client, image, headers=B).json()["cached"] is True
    assert client.get(f"/inputs/{sha}", headers=B).status_code == 200


def test_metrics_behind_their_own_key(gen):
    client, _, _ = gen
    assert client.get("/metrics", headers=A).status_code == 401
    client.get("/jobs/no-such-job", headers=A)
    exported = client.get("/metrics", headers={"X-API-Key": "scrape"}).text
    assert re.search(r'genview_http_requests_total\{route="/jobs/\{job_id\}",service="generator",status="404"\} [1-9]',
                     exported), exported  # counted under the route template, with the answer's status


def test_urls_come_from_the_public_base_url_never_from_host(tmp_path):
    settings = _settings(tmp_path, public_base_url="https://views.example.org/gv/")
    queue, store = MemoryJobQueue("u"), ObjectStore(settings.store_url)
    client = TestClient(generator_app(settings, queue, store))
    image = png_bytes(seed=3)
    r = client.post("/generate", files={"image": ("x.png", image)}, data=PER_IMAGE, headers={"Host": "evil.example"})
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"https://views.example.org/gv/jobs/{job_id}"
    _finish(store, sha256_hex(image), queue.get(job_id).payload)
    doc = client.post("/generate", files={"image": ("x.png", image)}, data=PER_IMAGE,
                      headers={"Host": "evil.example"}).json()
    assert doc["cached"] and doc["views"][0]["url"].startswith("https://views.example.org/gv/views/")


def test_a_cached_answer_whose_views_are_gone_is_resubmitted(tmp_path):
    settings = _settings(tmp_path)
    queue, store = MemoryJobQueue("c"), ObjectStore(settings.store_url)
    client = TestClient(generator_app(settings, queue, store))
    image = png_bytes(seed=4)
    first = _post(client, image, headers={}).json()["job_id"]
    delivery = queue.claim("t", 1, 0)[0]
    queue.complete(delivery, _finish(store, sha256_hex(image), delivery.payload).model_dump())
    cached = _post(client, image, headers={}).json()
    assert cached["cached"] is True and client.get(f"/jobs/{cached['job_id']}").status_code == 200
    store.delete(cached["views"][0]["key"])
    assert client.get(f"/jobs/{cached['job_id']}").status_code == 404  # the cached id no longer answers done
    again = _post(client, image, headers={})
    assert again.status_code == 202 and again.json()["job_id"] != first  # a new job, not the dead URLs


def test_backpressure_answers_429_with_retry_after(tmp_path):
    client = TestClient(generator_app(_settings(tmp_path, max_queue_depth=2), MemoryJobQueue("b"),
                                      ObjectStore(f"file://{tmp_path}/store")))
    assert [_post(client, png_bytes(seed=i), headers={}).status_code for i in range(3)] == [202, 202, 429]
    r = _post(client, png_bytes(seed=9), headers={})
    assert r.json()["error"] == "queue_full" and int(r.headers["retry-after"]) > 0


def test_cancel_a_queued_job_and_list_dead_letters(tmp_path):
    queue = MemoryJobQueue("d", max_deliveries=1)
    client = TestClient(generator_app(_settings(tmp_path), queue, ObjectStore(f"file://{tmp_path}/store")))
    cancel_me = _post(client, png_bytes(seed=1), headers={}).json()["job_id"]
    doomed = _post(client, png_bytes(seed=2), headers={}).json()["job_id"]
    r = client.delete(f"/jobs/{cancel_me}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.delete(f"/jobs/{cancel_me}").json()["error"] == "not_cancellable"
    delivery = queue.claim("t", 1, 0)[0]
    assert delivery.job_id == doomed
    queue.fail(delivery, "OSError: /srv/secret/path exploded")
    failed = client.get("/jobs", params={"status": "failed"}).json()
    assert [j["job_id"] for j in failed] == [doomed] and failed[0]["status"] == "failed"
    assert failed[0]["error"] == "OSError: <redacted> exploded"
    assert client.get("/jobs", params={"status": "running"}).status_code == 422


def test_adaptive_without_a_basis_is_409_and_says_how_to_fit_one(tmp_path):
    client = TestClient(generator_app(_settings(tmp_path, min_fit_images=1), MemoryJobQueue("a"),
                                      ObjectStore(f"file://{tmp_path}/store")))
    r = _post(client, headers={}, noise_level="auto")
    assert r.status_code == 409 and r.json()["error"] == "basis_required"
    assert "POST /basis/fit" in r.json()["detail"] and "auto:per-image" in r.json()["detail"]
    empty = client.post("/basis/fit", json={"num": 4, "keys": None})  # nothing stored to fit on
    assert empty.status_code == 409 and empty.json()["error"] == "too_few_images", empty.text
    client.post("/inputs", files={"image": ("x.png", png_bytes(seed=3), "image/png")})
    fit = client.post("/basis/fit", json={"num": 4, "keys": None})
    assert fit.status_code == 202 and fit.json()["images"] == 1
    assert client.get(fit.headers["location"]).json()["status"] == "queued"
    assert client.post("/basis/fit", json={"num": 4, "keys": ["inputs/" + "0" * 64]}).status_code == 404
    assert client.get("/basis").json()["basis_id"] == "per-image"


@pytest.mark.parametrize("app", ["generator", "scorer"])
def test_post_inputs_stores_an_image_for_its_tenant_and_basis_fits_name_it(tmp_path, app):
    settings = _settings(tmp_path, api_keys="key-a,key-b", min_fit_images=1)
    store = ObjectStore(f"file://{tmp_path}/store")
    factory, fit = (generator_app, "/basis/fit") if app == "generator" else (scorer_app, "/score/basis/fit")
    client = TestClient(factory(settings, MemoryJobQueue(app), store))
    image = png_bytes(seed=11)

    def upload(data=image, headers=A):
        return client.post("/inputs", headers=headers, files={"image": ("x.png", data, "image/png")})

    first, sha = upload(), sha256_hex(image)
    assert first.status_code == 201 and first.json() == {"key": f"inputs/{sha}", "sha256": sha}
    assert store.get(first.json()["key"]) == image and upload().status_code == 200  # content-addressed: stored once
    keys = {"num": 1, "keys": [first.json()["key"]]}
    assert client.post(fit, headers=A, json=keys).status_code == 202
    refused = client.post(fit, headers=B, json=keys)  # another tenant cannot name (or learn of) A's input
    assert refused.status_code == 404 and refused.json()["error"] == "unknown_input"
    assert upload(headers=B).status_code == 201 and client.post(fit, headers=B, json=keys).status_code == 202
    for bad in (b"not an image", png_bytes()[:60]):
        r = upload(bad)
        assert 400 <= r.status_code < 500 and set(r.json()) == {"error", "detail"}, r.text
    too_big = upload(b"\x89PNG" + bytes(settings.max_upload_bytes))
    assert too_big.status_code == 413 and too_big.json()["error"] in ("upload_too_large", "body_too_large")
    assert client.post("/inputs", files={"image": ("x.png", image)}).status_code == 401


@pytest.mark.parametrize("name, data", [
    ("iptc-10-bytes", b"\x1c\x02\x00\x00\x02\x00\x02AB\x00"),
    ("truncated-png", png_bytes()[:60]),
    ("gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
])
def test_image_library_failures_are_4xx_json_on_both_apis(tmp_path, name, data):
    store = ObjectStore(f"file://{tmp_path}/store")
    gen_client = TestClient(generator_app(_settings(tmp_path), MemoryJobQueue("i"), store))
    score_client = TestClient(scorer_app(_settings(tmp_path), MemoryJobQueue("s"), store))
    for r in (_post(gen_client, data, headers={}),
              score_client.post("/score", files={"original": ("o", data), "view": ("v", png_bytes())},
                                params={"basis": "per-image"})):
        assert 400 <= r.status_code < 500 and r.headers["content-type"] == "application/json", (name, r.text)
        assert set(r.json()) == {"error", "detail"}


def test_readiness_probes_the_store_by_writing_and_names_no_hosts_or_paths(tmp_path):
    store = ObjectStore(f"file://{tmp_path}/store")
    client = TestClient(generator_app(_settings(tmp_path), MemoryJobQueue("r"), store))
    assert client.get("/readyz").json() == {"status": "ready"}
    (tmp_path / "store" / "probes").rmdir()
    (tmp_path / "store" / "probes").write_bytes(b"")  # the directory still lists and reads, but takes no write
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json() == {"error": "not_ready", "detail": ["store"]}
    assert str(tmp_path) not in r.text and int(r.headers["retry-after"]) > 0


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server this test may stop."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    wait_for_port(port)
    yield proc, f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def test_queue_outage_is_503_with_retry_after_on_every_queue_route(tmp_path, own_redis):
    proc, url = own_redis
    settings = _settings(tmp_path, redis_url=url, min_fit_images=1)
    store = ObjectStore(settings.store_url)
    gen_client = TestClient(generator_app(settings, RedisJobQueue(url, "generate"), store))
    score_client = TestClient(scorer_app(settings, RedisJobQueue(url, "score"), store))
    job_id = _post(gen_client, headers={}).json()["job_id"]
    proc.terminate()
    proc.wait(10)
    answers = [_post(gen_client, png_bytes(seed=5), headers={}), gen_client.get(f"/jobs/{job_id}"),
               gen_client.delete(f"/jobs/{job_id}"), gen_client.get("/jobs?status=failed"),
               gen_client.post("/basis/fit", json={"num": 2}),
               score_client.post("/score", files={"original": ("o", png_bytes()), "view": ("v", png_bytes(seed=1))},
                                 params={"basis": "per-image"}),
               score_client.get(f"/score/jobs/{job_id}")]
    for r in answers:
        assert r.status_code == 503 and r.json()["error"] == "queue_unavailable", r.text
        assert int(r.headers["retry-after"]) > 0 and "127.0.0.1" not in r.text
    ready = gen_client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["detail"] == ["queue:generate"]


def test_scoring_jobs_belong_to_their_tenant(tmp_path):
    settings = _settings(tmp_path, api_keys="key-a,key-b", score_timeout_s=0.05)
    client = TestClient(scorer_app(settings, MemoryJobQueue("t"), ObjectStore(settings.store_url)))
    files = {"original": ("o.png", png_bytes(seed=1)), "view": ("v.png", png_bytes(seed=2))}
    r = client.post("/score", files=files, headers=A, params={"basis": "per-image"})
    assert r.status_code == 202
    assert client.get(r.headers["location"], headers=A).json()["status"] == "queued"
    assert client.get(r.headers["location"], headers=B).status_code == 404
    again = client.post("/score", files=files, headers=B, params={"basis": "per-image"})
    assert again.json()["job_id"] != r.json()["job_id"]


def test_wait_true_is_woken_when_the_job_finishes(tmp_path):
    import threading
    import time

    settings = _settings(tmp_path)
    queue, store = MemoryJobQueue("w"), ObjectStore(settings.store_url)
    client = TestClient(generator_app(settings, queue, store))
    image, answer = png_bytes(seed=11), {}
    waiter = threading.Thread(target=lambda: answer.update(r=client.post(
        "/generate", params={"wait": "true", "timeout": "60"}, files={"image": ("x.png", image)}, data=PER_IMAGE)))
    started = time.monotonic()
    waiter.start()
    while not (deliveries := queue.claim("t", 1, 100)):
        assert waiter.is_alive()
    queue.complete(deliveries[0], _finish(store, sha256_hex(image), deliveries[0].payload).model_dump())
    waiter.join(60)
    assert answer["r"].status_code == 200 and answer["r"].json()["status"] == "done"
    assert time.monotonic() - started < 30  # woken by the completion, not by the 60 s timeout
