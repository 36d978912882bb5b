"""`genview generate-dataset --engine ray`: 24 images on 2 CPU actors (tiny preset) into shards and an index.

The Ray path and the service path give the same view bytes for the same image and parameters; a rerun
after deleting one shard writes only that shard again (and the same bytes).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import torch
import webdataset as wds

from genview.batch.shards import FG_MAP, ORIGINAL, RECORD, SHARD_NAME, ShardIndex, ShardOutput, ShardRecord, read_index
from genview.method.noise import adaptive_noise_level
from genview.basis import DEFAULT_OWNER, BasisStore
from genview.store import ObjectStore
from harness.images import png_bytes
from harness.processes import genview_cmd, service_env, start_api, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # Ray start and model loads: minutes on 2 busy cores
IMAGES, PER_SHARD = 24, 6


def run_ray(env: dict, images: Path, shards: Path, *extra: str) -> str:
    # --batch-size 1: the service worker below also runs one image per model call (see the view test)
    done = subprocess.run(genview_cmd("generate-dataset", "--engine", "ray", "--images", str(images), "--shards",
                                      str(shards), "--actors", "2", "--batch-size", "1", "--images-per-shard",
                                      str(PER_SHARD), "--steps", "2", "--size", "32", "--fit-num", "16",
                                      "--num-cpus", "2", "--object-store-mb", "100", *extra),
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def generated(tmp_path_factory, model_cache):
    root = tmp_path_factory.mktemp("ray")
    images = root / "images"
    for i in range(IMAGES):
        folder = images / f"n0{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i}.png").write_bytes(png_bytes(40 + i % 5, 36, seed=700 + i))
    env = service_env(model="tiny", device="cpu", model_cache=model_cache, store_url=f"file://{root / 'store'}")
    stdout = run_ray(env, images, root / "shards", "--export-official", str(root / "official"))
    return {"root": root, "images": images, "shards": root / "shards", "env": env, "stdout": stdout}


def test_shards_and_index_hold_every_image(generated):
    shards, images = generated["shards"], generated["images"]
    assert f"{IMAGES} images in 4 shards (4 written now)" in generated["stdout"]
    assert sorted(p.name for p in shards.glob("*.tar")) == [SHARD_NAME.format(i) for i in range(4)]
    store = ObjectStore(generated["env"]["GENVIEW_STORE_URL"])
    basis = BasisStore(store, "generator-tiny").current(DEFAULT_OWNER)  # fitted on an actor, saved to the store
    samples = list(wds.WebDataset(ShardOutput(str(shards)).shard_urls(), shardshuffle=False))
    assert len(samples) == IMAGES
    keys = sorted(str(p.relative_to(images)) for p in images.rglob("*.png"))
    records = [ShardRecord.model_validate_json(s[RECORD]) for s in samples]
    assert sorted(r.key for r in records) == keys
    for s, r in zip(samples, records):
        assert s[ORIGINAL] == (images / r.key).read_bytes()
        assert s[r.views[0]].startswith(b"\x89PNG") and s[FG_MAP].startswith(b"\x89PNG")
        assert r.basis_id == basis.fingerprint and r.fg_basis == "fitted"
        assert r.noise_level == int(adaptive_noise_level(torch.tensor([r.fg_ratio]))[0])
    index = read_index(str(shards))
    assert sorted(index.column("key").to_pylist()) == keys
    row = ShardIndex(index).lookup(records[5].key)
    assert (row["sample"], row["noise_level"]) == (samples[5]["__key__"], records[5].noise_level)
    official = generated["root"] / "official"
    assert sorted(str(p.relative_to(official / "train_variations")) for p in official.rglob("*.png")) == keys
    assert len((official / "fg_ratios.txt").read_text().splitlines()) == IMAGES


def test_the_service_path_gives_the_same_view_bytes(generated, fresh_redis_url, tmp_path):
    samples = list(wds.WebDataset(ShardOutput(str(generated["shards"])).shard_urls(), shardshuffle=False))
    record = ShardRecord.model_validate_json(samples[3][RECORD])
    env = {**generated["env"], "GENVIEW_REDIS_URL": fresh_redis_url, "GENVIEW_MAX_BATCH_SIZE": "1"}
    worker = start_worker("generator-worker", env, tmp_path)
    api, url = start_api("generator-api", env, tmp_path)
    try:
        doc = httpx.post(f"{url}/generate", params={"wait": "true", "timeout": "120"}, timeout=150,
                         files={"image": (record.key, samples[3][ORIGINAL], "image/png")},
                         data={"noise_level": "auto", "steps": "2", "size": "32", "seed": "0"}).json()
        assert doc["status"] == "done", doc
        assert (doc["basis_id"], doc["noise_level"], doc["fg_ratio"]) == (record.basis_id, record.noise_level, record.fg_ratio)
        assert doc["views"][0]["key"].split("/")[2] == record.params_hash
        view = httpx.get(f"{url}/{doc['views'][0]['key']}", timeout=30).content  # GET /views/{sha}/{hash}/0.png
        assert view == samples[3][record.views[0]]
    finally:
        worker.stop()
        api.stop()


def test_rerun_writes_only_the_missing_shard(generated):
    shards = generated["shards"]
    lost = shards / SHARD_NAME.format(2)
    before = lost.read_bytes()
    others = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.tar") if p != lost}
    lost.unlink()
    stdout = run_ray(generated["env"], generated["images"], shards)
    assert f"{IMAGES} images in 4 shards (1 written now)" in stdout
    assert lost.read_bytes() == before  # the same images, parameters and seeds: the same bytes
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("*.tar") if p != lost} == others
    assert read_index(str(shards)).num_rows == IMAGES
