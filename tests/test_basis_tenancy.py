"""Basis versions per tenant and per-tenant jobs, in process (memory queue, file store): listing and pinning
versions, the operator's read-only default, fits from one's own inputs only, the minimum fit size, validated
fit bodies, jobs and cancels scoped to their submitter, the answers for fit and cancelled jobs."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from genview.basis import DEFAULT_OWNER, BasisStore
from genview.method.pca import PCABasis
from genview.pca_fit import candidate_inputs
from genview.queue import MemoryJobQueue
from genview.settings import Settings
from genview.store import ObjectStore
from harness.images import png_bytes
from services.auth import tenant_id
from services.generator.app import create_app as generator_app

A, B = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
FAST = {"steps": "2", "size": "32"}
ENCODER = "generator-tiny"


def _basis(seed: int) -> PCABasis:
    g = torch.Generator().manual_seed(seed)
    component = torch.randn(8, generator=g)
    return PCABasis(torch.randn(8, generator=g), component / component.norm(), 0.1)


@pytest.fixture
def api(tmp_path):
    """The generator API with two tenants (or none: `api(keys="")`), its queue and store."""
    def make(keys: str = "key-a,key-b", **extra):
        settings = Settings(model="tiny", store_url=f"file://{tmp_path}/store", api_keys=keys, **extra)
        queue, store = MemoryJobQueue("g"), ObjectStore(settings.store_url)
        return TestClient(generator_app(settings, queue, store)), queue, store
    return make


def _generate(client, headers, policy: str, seed: int = 0):
    return client.post("/generate", headers=headers, files={"image": ("x.png", png_bytes(seed=seed), "image/png")},
                       data={**FAST, "noise_policy": policy})


def _upload(client, headers, seeds) -> list[str]:
    return [client.post("/inputs", headers=headers, files={"image": ("x.png", png_bytes(seed=s), "image/png")})
            .json()["key"] for s in seeds]


def test_versions_are_listed_pinned_and_resolved_at_submit(api):
    client, queue, store = api()
    bases = BasisStore(store, ENCODER)
    v1, v2 = (bases.save(_basis(s), tenant_id("key-a")) for s in (1, 2))
    info = client.get("/basis", headers=A).json()
    assert (info["basis_id"], info["source"]) == (v2, "own")
    assert [v["basis_id"] for v in info["versions"]] == [v1, v2]
    first = _generate(client, A, "auto", seed=1).json()["job_id"]
    pinned = client.put("/basis/current", headers=A, json={"basis_id": v1})
    assert pinned.status_code == 200 and pinned.json()["basis_id"] == v1
    second = _generate(client, A, "auto", seed=2).json()["job_id"]
    constant = _generate(client, A, "constant:100", seed=3).json()["job_id"]
    per_image = _generate(client, A, "auto:per-image", seed=4).json()["job_id"]
    basis_of = {j: queue.get(j).payload["params"]["basis"] for j in (first, second, constant, per_image)}
    assert basis_of == {first: v2, second: v1, constant: None, per_image: None}  # fixed when accepted


def test_no_tenant_changes_or_uses_another_tenants_basis_and_the_default_is_read_only(api):
    client, _, store = api()
    bases = BasisStore(store, ENCODER)
    mine = bases.save(_basis(1), tenant_id("key-a"))
    assert client.get("/basis", headers=B).json()["basis_id"] == "per-image"
    taken = client.put("/basis/current", headers=B, json={"basis_id": mine})
    assert taken.status_code == 404 and taken.json()["error"] == "unknown_basis"
    assert _generate(client, B, "auto").status_code == 409
    default = bases.save(_basis(3), DEFAULT_OWNER)  # what `genview fit-pca` publishes
    info = client.get("/basis", headers=B).json()
    assert (info["basis_id"], info["source"], info["default_id"], info["versions"]) == (default, "default", default, [])
    assert client.get("/basis", headers=A).json()["basis_id"] == mine  # its own version wins over the default
    assert client.put("/basis/current", headers=B, json={"basis_id": default}).status_code == 200  # B's own pointer
    assert bases.own_current(DEFAULT_OWNER) == default and bases.own_current(tenant_id("key-a")) == mine
    assert client.put("/basis/current", headers=B, json={"basis_id": "../x"}).status_code == 422


def test_an_open_service_keeps_one_basis_for_its_one_tenant(api):
    client, queue, store = api(keys="")
    default = BasisStore(store, ENCODER).save(_basis(1), DEFAULT_OWNER)
    assert client.get("/basis").json()["source"] == "default"
    job = _generate(client, {}, "auto").json()["job_id"]
    assert queue.get(job).payload["params"]["basis"] == default


def test_fits_sample_only_the_tenants_own_inputs_and_refuse_too_few(api):
    client, queue, store = api(min_fit_images=3)
    keys_a, keys_b = _upload(client, A, range(2)), _upload(client, B, range(10, 13))
    few = client.post("/basis/fit", headers=A, json={"num": 1000})  # 5 inputs stored, 2 of them A's
    assert few.status_code == 409 and few.json()["error"] == "too_few_images" and "2 available" in few.json()["detail"]
    named = client.post("/basis/fit", headers=A, json={"keys": keys_a})
    assert named.status_code == 409 and named.json()["error"] == "too_few_images"
    fit = client.post("/basis/fit", headers=B, json={"num": 1000})
    assert fit.status_code == 202 and fit.json()["images"] == 3, fit.text
    payload = queue.get(fit.json()["job_id"]).payload
    assert (payload["tenant"], payload["owner"], payload["min_images"]) == (tenant_id("key-b"),) * 2 + (3,)
    assert sorted(candidate_inputs(store, payload["tenant"])) == sorted(keys_b)
    assert len(candidate_inputs(store, None)) == 5  # an open service's one tenant samples every input


@pytest.mark.parametrize("body", [{"num": True}, {"num": 2**64}, {"num": 1e100}, {"num": 0}, {"num": "5"},
                                  {"num": 1.5}, {"keys": []}, {"num": 100_001}])  # 1.0 is a JSON integer
def test_fit_bodies_are_validated(api, body):
    client, _, _ = api()
    r = client.post("/basis/fit", headers=A, json=body)
    assert r.status_code == 422 and set(r.json()) == {"error", "detail"}, r.text


def test_jobs_belong_to_their_submitter_even_for_the_same_bytes(api):
    client, _, _ = api()
    mine = _generate(client, A, "constant:100").json()["job_id"]
    theirs = _generate(client, B, "constant:100")  # the same bytes and parameters: B's own job
    assert theirs.status_code == 202 and theirs.json()["job_id"] != mine
    assert client.get(f"/jobs/{mine}", headers=B).status_code == 404
    assert client.delete(f"/jobs/{mine}", headers=B).status_code == 404
    cancelled = client.delete(f"/jobs/{mine}", headers=A)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    final = client.get(f"/jobs/{mine}", headers=A)  # a final status: 200, nothing to poll
    assert final.status_code == 200 and final.json()["status"] == "cancelled" and "location" not in final.headers
    assert client.get(f"/jobs/{theirs.json()['job_id']}", headers=B).json()["status"] == "queued"


def test_a_fit_job_under_jobs_is_a_json_404_pointing_at_its_route(api):
    client, _, _ = api(min_fit_images=1)
    _upload(client, A, range(1))
    fit = client.post("/basis/fit", headers=A, json={"num": 1}).json()["job_id"]
    r = client.get(f"/jobs/{fit}", headers=A)
    assert r.status_code == 404 and r.json()["error"] == "unknown_job" and f"/basis/jobs/{fit}" in r.json()["detail"]
    assert client.get(f"/basis/jobs/{fit}", headers=A).json()["status"] == "queued"


def test_a_store_from_before_basis_versions_serves_its_one_basis_as_the_default(api):
    client, queue, store = api()
    old = _basis(7)
    store.put(f"pca/{ENCODER}.safetensors", old.to_bytes())  # where earlier releases kept the one basis
    info = client.get("/basis", headers=A).json()
    assert (info["basis_id"], info["source"], info["default_id"]) == (old.fingerprint, "default", old.fingerprint)
    assert _generate(client, A, "auto").status_code == 202
    assert BasisStore(store, ENCODER).own_current(DEFAULT_OWNER) == old.fingerprint  # adopted once, as a version
