"""`GET /views/lookup` against real `genview generator-api` and `generator-worker` processes with API keys: hits,
misses, other tenants, bad hashes; and the clients that ask first (GeneratorClient, ServiceViewSource,
generate-dataset) upload nothing on a hit — counted at the server, by its request metrics."""

from __future__ import annotations

from contextlib import closing

import httpx
import pytest
import redis

from genview.client import GeneratorClient
from genview.dataset_gen import generate_dataset, read_manifest
from genview.method.noise import parse_noise_policy
from genview.store import sha256_hex
from genview.training.views import ServiceViewSource
from harness.images import png_bytes
from harness.processes import service_env, start_api, start_worker

pytestmark = pytest.mark.slow  # API and worker processes

FIELDS = {"noise_policy": "auto:per-image", "steps": 2, "size": 32, "seed": 0}
KEY_A, KEY_B = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}


@pytest.fixture(scope="module")
def base(redis_url, model_cache, tmp_path_factory):
    """An API and a worker with two API keys, on their own Redis database and file store."""
    url = redis_url.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(url).flushdb()
    work = tmp_path_factory.mktemp("lookup")
    env = service_env(model="tiny", device="cpu", model_cache=model_cache, redis_url=url,
                      store_url=f"file://{work / 'store'}", api_keys="key-a,key-b", metrics_key="scrape")
    api, base = start_api("generator-api", env, work)
    worker = start_worker("generator-worker", env, work)
    yield base
    worker.stop()
    api.stop()


def requests_to(base: str, route: str) -> int:
    """How many requests the API has answered on `route` (its Prometheus counter, all statuses)."""
    text = httpx.get(f"{base}/metrics", headers={"X-API-Key": "scrape"}).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("genview_http_requests_total{") and f'route="{route}"' in line)


def lookup(base: str, sha: str, headers: dict, **fields) -> httpx.Response:
    return httpx.get(f"{base}/views/lookup", params={"sha256": sha, **FIELDS, **fields}, headers=headers)


def test_lookup_hit_miss_other_tenant_and_bad_hash(base):
    image = png_bytes(seed=11)
    sha = sha256_hex(image)
    assert lookup(base, sha, KEY_A).json()["error"] == "not_cached"
    with closing(GeneratorClient(base, api_key="key-a")) as client:
        generated = client.generate(image, **FIELDS)
    hit = lookup(base, sha, KEY_A)
    assert hit.status_code == 200, hit.text
    doc = hit.json()
    assert doc["cached"] is True and doc["status"] == "done"
    assert [v["key"] for v in doc["result"]["views"]] == [v.key for v in generated.result.views]
    assert httpx.get(base + doc["result"]["views"][0]["url"], headers=KEY_A).status_code == 200
    assert httpx.get(f"{base}/jobs/{doc['job_id']}", headers=KEY_A).json()["result"] == doc["result"]
    other = lookup(base, sha, KEY_B)  # stored, but not key-b's input: indistinguishable from absent
    absent = lookup(base, "0" * 64, KEY_A)
    assert other.status_code == absent.status_code == 404
    assert other.json() == absent.json()
    assert lookup(base, sha, KEY_A, seed=1).status_code == 404  # other parameters, other cache entry
    assert lookup(base, sha, {}).status_code == 401
    for bad in ("xyz", sha.upper(), sha[:-1]):
        answer = lookup(base, bad, KEY_A)
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_parameters", answer.text
    assert lookup(base, sha, KEY_A, steps=0).status_code == 422
    assert lookup(base, sha, KEY_A, noise_policy="loud").status_code == 422
    assert lookup(base, sha, KEY_A, noise_policy="auto").json()["error"] == "basis_required"  # as POST answers
    assert lookup(base, sha, KEY_A, colour="red").status_code == 422  # a misspelt field never silently misses
    twice = httpx.get(f"{base}/views/lookup?sha256={sha}&seed=0&seed=1", headers=KEY_A)
    assert twice.status_code == 422 and twice.json()["detail"][0]["field"] == "seed"


def test_clients_upload_only_on_a_miss(base, tmp_path):
    image = png_bytes(seed=12)
    with closing(GeneratorClient(base, api_key="key-a")) as client:
        before = requests_to(base, "/generate")
        first = client.generate(image, **FIELDS)
        assert requests_to(base, "/generate") == before + 1  # a miss: uploaded
        again = client.generate(image, **FIELDS)
        assert again.cached and again.result == first.result
        assert requests_to(base, "/generate") == before + 1  # a hit: no upload
    with closing(GeneratorClient(base, api_key="key-b")) as client:  # key-b does not own it: it must upload (and may)
        assert client.generate(image, **FIELDS).result == first.result
    assert requests_to(base, "/generate") == before + 2

    source = ServiceViewSource(base, parse_noise_policy(FIELDS["noise_policy"]), FIELDS["steps"], FIELDS["size"],
                               FIELDS["seed"], api_key="key-a")
    source.check()
    lookups = requests_to(base, "/views/lookup")
    assert source.fetch("a.png", image)
    assert requests_to(base, "/generate") == before + 2
    assert requests_to(base, "/views/lookup") == lookups + 1
    source.close()


def test_generate_dataset_rerun_uploads_nothing(base, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png_bytes(seed=40 + i))
    with closing(GeneratorClient(base, api_key="key-a")) as client:
        kwargs = dict(noise_policy=parse_noise_policy(FIELDS["noise_policy"]), steps=FIELDS["steps"],
                      size=FIELDS["size"], concurrency=2, progress=False)
        before = requests_to(base, "/generate")
        generate_dataset(str(folder), client, str(tmp_path / "first.jsonl"), **kwargs)
        assert requests_to(base, "/generate") == before + 3
        stats = generate_dataset(str(folder), client, str(tmp_path / "second.jsonl"), **kwargs)  # a lost manifest
        assert stats["submitted"] == 3 and requests_to(base, "/generate") == before + 3
    assert read_manifest(str(tmp_path / "first.jsonl")) == read_manifest(str(tmp_path / "second.jsonl"))
