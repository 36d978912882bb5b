"""What schemathesis found (issue 22), one case each, in process: the `Allow` of a 405, fit jobs and cancelled jobs
under `/jobs/{id}`, fit bodies as their schema reads them, the noise-policy grammar, undeclared form fields."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from genview.method.noise import POLICY_PATTERN, parse_noise_policy
from genview.queue import CANCELLED, MemoryJobQueue
from genview.schemas import BasisFitResult, FitBasisJob, to_queue
from genview.settings import Settings
from genview.store import ObjectStore
from services.generator.app import create_app as generator_app
from harness.images import png_bytes

CONSTANT = {"noise_policy": "constant:0", "steps": "2", "size": "32"}


@pytest.fixture
def gen(tmp_path):
    settings = Settings(model="tiny", store_url=f"file://{tmp_path}/store", max_upload_bytes=64 * 1024)
    queue = MemoryJobQueue("g")
    return TestClient(generator_app(settings, queue, ObjectStore(settings.store_url))), queue


def _generate(client, data=CONSTANT, files=None):
    return client.post("/generate", files=files or [("image", ("x.png", png_bytes(), "image/png"))], data=data)


def test_a_405_allows_every_method_of_the_path(gen):
    client, _ = gen
    r = client.request("OPTIONS", "/jobs/abc")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET" and r.json()["error"] == "http_error"


def test_a_fit_job_is_not_a_generation_job(gen):
    client, queue = gen
    job_id, _ = queue.submit(to_queue(FitBasisJob(num=1)), None)
    [delivery] = queue.claim("w", 1, 0)
    fit = BasisFitResult(encoder_id="generator-tiny", basis_id="b", key="pca/generator-tiny.safetensors", images=1,
                         threshold=0.5)
    queue.complete(delivery, fit.model_dump())  # a done fit: its result is no GenerationResult
    for method in ("GET", "DELETE"):
        r = client.request(method, f"/jobs/{job_id}")
        assert r.status_code == 404 and r.json()["error"] == "unknown_job", (method, r.text)
    assert client.get(f"/basis/jobs/{job_id}").json()["status"] == "done"


def test_a_cancelled_job_is_final(gen):
    client, _ = gen
    job_id = _generate(client).json()["job_id"]
    assert client.delete(f"/jobs/{job_id}").json()["status"] == CANCELLED
    r = client.get(f"/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == CANCELLED and "location" not in r.headers


@pytest.mark.parametrize("body", [{"num": True}, {"num": "5"}, {"num": 2**64}, {"num": 10**100}, {"num": 0},
                                  {"num": 1.5}, {"keys": []}, {"keys": ["inputs/../x"]}, {"keys": ["views/a"]}])
def test_fit_bodies_are_validated_as_their_schema_says(gen, body):
    client, _ = gen
    r = client.post("/basis/fit", json=body)
    assert r.status_code == 422 and r.json()["error"] == "invalid_parameters", r.text


def test_an_integral_number_is_a_fit_count(gen):
    client, _ = gen
    for data in (png_bytes(seed=1), png_bytes(seed=2)):
        assert client.post("/inputs", files={"image": ("x.png", data, "image/png")}).status_code == 201
    answer = client.post("/basis/fit", json={"num": 3.0})  # JSON Schema's integer takes 3.0
    # a count, not a type error: refused only because 2 inputs are fewer than GENVIEW_MIN_FIT_IMAGES
    assert answer.status_code == 409 and answer.json()["error"] == "too_few_images", answer.text
    assert client.post("/basis/fit", json={"num": True}).json()["error"] != "too_few_images"


@pytest.mark.parametrize("spec", ["auto", "adaptive", "auto:per-image", "adaptive:per-image", "random", "0", "999",
                                  "constant:0", "constant:999"])
def test_every_spelling_the_api_declares_parses(spec):
    assert re.fullmatch(POLICY_PATTERN, spec) and parse_noise_policy(spec)


@pytest.mark.parametrize("spec", ["null", "Auto", " auto", "1000", "constant:1000", "constant:", "-1"])
def test_other_spellings_are_refused_by_the_api(gen, spec):
    client, _ = gen
    r = _generate(client, {**CONSTANT, "noise_policy": spec})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "noise_policy", r.text


def test_seeds_stop_at_the_largest_exact_json_integer(gen):
    client, _ = gen
    assert _generate(client, {**CONSTANT, "seed": str(2**53 - 1)}).status_code == 202
    assert _generate(client, {**CONSTANT, "seed": str(2**53)}).status_code == 422


def test_undeclared_form_fields_are_ignored_even_when_repeated(gen):
    client, _ = gen
    image = ("image", ("x.png", png_bytes(), "image/png"))
    extras = [("extra", (None, "1")), ("extra", (None, "2"))]
    assert _generate(client, files=[image, *extras]).status_code == 202
    steps = [("steps", (None, "2")), ("steps", (None, "3"))]
    assert _generate(client, data={"noise_policy": "constant:0"}, files=[image, *steps]).status_code == 422
