"""`POST /generate` reads its multipart form itself (services/generator/form.py): blank fields take their defaults,
the image must be a file, the policy's two names, the bounds it shares with `GET /views/lookup`, and an image
that does not decode is refused before anything is stored or queued. In process, on a memory queue."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from genview.method.noise import parse_noise_policy
from genview.queue import MemoryJobQueue
from genview.schemas import parse_payload
from genview.settings import Settings
from genview.store import ObjectStore, sha256_hex
from harness.images import png_bytes
from services.generator.app import create_app
from services.generator.form import MAX_SEED

IMAGE = ("image", ("x.png", png_bytes(), "image/png"))
CONSTANT = {"noise_policy": "constant:0", "steps": "2", "size": "32"}


@pytest.fixture
def gen(tmp_path):
    settings = Settings(model="tiny", store_url=f"file://{tmp_path}/store", max_upload_bytes=64 * 1024)
    queue, store = MemoryJobQueue("g"), ObjectStore(settings.store_url)
    return TestClient(create_app(settings, queue, store)), queue, store


def queued_params(client, queue, data, files=(IMAGE,)):
    r = client.post("/generate", files=list(files), data=data)
    assert r.status_code == 202, r.text
    return parse_payload(queue.get(r.json()["job_id"]).payload).params


def test_blank_fields_take_their_defaults(gen):
    client, queue, _ = gen
    params = queued_params(client, queue, {**CONSTANT, "steps": "", "prompt": ""})
    assert params.steps == 20 and params.prompt == "" and params.size == 32


def test_the_image_must_be_a_non_empty_file(gen):
    client, _, _ = gen
    for files, data in (([("image", ("", b"", "application/octet-stream"))], CONSTANT),
                        ([("other", ("a", b"x"))], {**CONSTANT, "image": "text"}), ([], CONSTANT)):
        r = client.post("/generate", files=files or None, data=data)
        assert r.status_code == 422 and [p["field"] for p in r.json()["detail"]] == ["image"], r.text
    r = client.post("/generate", files=[IMAGE], data={**CONSTANT, "steps": "0", "size": "x"})
    assert [p["field"] for p in r.json()["detail"]] == ["steps", "size"]  # every bad field, in one answer
    r = client.post("/generate", content=b"abc", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and r.json()["error"] == "http_error"


def test_noise_policy_wins_over_its_deprecated_name(gen):
    client, queue, _ = gen
    assert queued_params(client, queue, {"noise_level": "constant:3"}).noise_policy == parse_noise_policy("3")
    both = queued_params(client, queue, {"noise_level": "constant:3", "noise_policy": "constant:5", "seed": "1"})
    assert both.noise_policy == parse_noise_policy("5")
    r = client.post("/generate", files=[IMAGE], data={"noise_level": "loud"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "noise_level"


def test_generate_and_lookup_share_their_bounds(gen):
    client, _, _ = gen
    sha = sha256_hex(png_bytes())
    for seed, status in ((MAX_SEED, 404), (MAX_SEED + 1, 422)):
        lookup = client.get("/views/lookup", params={"sha256": sha, **CONSTANT, "seed": str(seed)})
        assert lookup.status_code == status, lookup.text
    assert client.post("/generate", files=[IMAGE], data={**CONSTANT, "seed": str(MAX_SEED + 1)}).status_code == 422


def test_an_undecodable_image_is_refused_before_it_is_stored_or_queued(gen):
    client, queue, store = gen
    r = client.post("/generate", files=[("image", ("x.png", b"not an image", "image/png"))], data=CONSTANT)
    assert r.status_code == 400 and r.json()["error"] == "undecodable_image", r.text
    assert queue.depth() == 0 and store.list("inputs") == []
