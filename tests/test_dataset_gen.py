"""`genview generate-dataset` with two workers, the official layout, and training from the manifest."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis
import torch
from PIL import Image

from genview.method.noise import adaptive_noise_level
from genview.store import ObjectStore
from harness.images import png_bytes
from harness.processes import genview_cmd, service_env, start_api, start_worker

pytestmark = pytest.mark.slow  # end-to-end: generator processes, generate-dataset and trainer runs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def generator(redis_url, model_cache, tmp_path_factory):
    """A generator API and two workers on a file store (Redis db 3), shared by the module's tests."""
    tmp_path = tmp_path_factory.mktemp("dataset-gen")
    module_redis = redis_url.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(module_redis).flushdb()
    env = service_env(model="tiny", device="cpu", model_cache=model_cache, redis_url=module_redis,
                      store_url=f"file://{tmp_path / 'store'}", min_fit_images="1", max_batch_size="4")
    procs = [start_worker("generator-worker", env, tmp_path, "-1"), start_worker("generator-worker", env, tmp_path, "-2")]
    api, url = start_api("generator-api", env, tmp_path)
    yield {"url": url, "env": env, "store": ObjectStore(env["GENVIEW_STORE_URL"])}
    for p in [*procs, api]:
        p.stop()


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    for i in range(10):
        folder = root / f"n0{i % 2}" / ("deep" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i}.png").write_bytes(png_bytes(56, 48, seed=300 + i))
    return root


def generate_requests(url: str) -> int:
    """POST /generate requests the generator has answered, from its Prometheus metrics."""
    text = httpx.get(f"{url}/metrics").text
    return int(sum(float(v) for v in re.findall(r'genview_http_requests_total\{route="/generate".*\} (\S+)', text)))


def client_env(generator) -> dict:
    """The client's environment: the shared store, but no model (it must never load one)."""
    return {k: v for k, v in generator["env"].items() if k not in ("GENVIEW_MODEL", "GENVIEW_MODEL_CACHE")}


def _run(generator, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(genview_cmd("generate-dataset", "--generator-url", generator["url"], "--steps", "2",
                                      "--size", "32", "--concurrency", "4", *args),
                          env=client_env(generator), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_generate_dataset_resume_export_and_levels(generator, images, tmp_path):
    manifest, official = tmp_path / "views.jsonl", tmp_path / "official"
    assert httpx.get(f"{generator['url']}/basis").json()["basis_id"] == "per-image"
    _run(generator, "--images", str(images), "--manifest", str(manifest), "--export-official", str(official),
         "--fit-num", "6")
    basis = httpx.get(f"{generator['url']}/basis").json()["basis_id"]  # fitted by a worker (POST /basis/fit)
    assert basis != "per-image" and generator["store"].exists(f"bases/generator-tiny/{basis}.safetensors")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    relative = sorted(str(p.relative_to(images)) for p in images.rglob("*.png"))
    assert sorted(r["path"] for r in rows) == relative
    for row in rows:
        assert 0.0 <= row["fg_ratio"] <= 1.0 and row["fg_basis"] == "fitted"
        assert row["noise_level"] == int(adaptive_noise_level(torch.tensor([row["fg_ratio"]]))[0])
        assert all(generator["store"].exists(k) for k in row["views"])
    assert sorted(str(p.relative_to(official / "train_variations")) for p in official.rglob("*.png")) == relative
    lines = (official / "fg_ratios.txt").read_text().splitlines()
    assert sorted(line.rsplit(" ", 1)[0] for line in lines) == relative

    before = generate_requests(generator["url"])
    again = _run(generator, "--images", str(images), "--manifest", str(manifest))
    assert "0 of 10 images generated" in again.stdout
    assert generate_requests(generator["url"]) == before
    assert len(manifest.read_text().splitlines()) == 10

    grid = tmp_path / "grid.png"
    done = subprocess.run(genview_cmd("gallery", "--manifest", str(manifest), "--images", str(images), "--out",
                                      str(grid)), env=generator["env"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(grid) as sheet:
        assert sheet.size[1] > 10 * 160 and sheet.getextrema() != ((0, 0), (0, 0), (0, 0))

    levels = tmp_path / "levels.txt"
    levels.write_text("".join(f"{rel} 0.85\n" for rel in relative))
    other = tmp_path / "from-levels.jsonl"
    _run(generator, "--images", str(images), "--manifest", str(other), "--levels-from", str(levels))
    assert {(r["fg_ratio"], r["noise_level"]) for r in map(json.loads, other.read_text().splitlines())} == {(0.85, 400)}


def test_trainer_from_manifest_makes_no_generator_request(generator, images, tmp_path):
    manifest = tmp_path / "views.jsonl"
    _run(generator, "--images", str(images), "--manifest", str(manifest), "--no-fit")
    assert {json.loads(line)["fg_basis"] for line in manifest.read_text().splitlines()} == {"per-image"}
    before = generate_requests(generator["url"])
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(REPO / "trainer" / "run.py"), "--data", str(images), "--manifest",
                           str(manifest), "--out", str(out), "--no-quality", "--method", "byol", "--arch", "resnet18",
                           "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0"],
                          env=generator["env"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(steps) == 2 and all(s["generated_fraction"] == 1.0 and s["fallbacks"] == 0 for s in steps)
    assert generate_requests(generator["url"]) == before


def test_relative_paths_from_another_working_directory(generator, tmp_path):
    """generate-dataset, the trainer (labels for its kNN monitor, manifest rows) and `genview eval knn`, all given
    folders relative to a working directory that is not the repository."""
    for split, count in (("train", 8), ("val", 4)):
        for i in range(count):
            folder = tmp_path / "data" / split / ("cat" if i % 2 else "dog")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.png").write_bytes(png_bytes(56, 48, seed=500 + 10 * count + i))

    def run(*argv: str) -> subprocess.CompletedProcess:
        done = subprocess.run(argv, env=generator["env"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    run(*genview_cmd("generate-dataset", "--images", "data/train", "--generator-url", generator["url"], "--manifest",
                     "views.jsonl", "--no-fit", "--steps", "2", "--size", "32"))
    rows = [json.loads(line) for line in (tmp_path / "views.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(f"{'cat' if i % 2 else 'dog'}/{i}.png" for i in range(8))
    done = run(sys.executable, str(REPO / "trainer" / "run.py"), "--data", "data/train", "--manifest", "views.jsonl",
               "--val-data", "data/val", "--knn-every", "1", "--out", "run", "--no-quality", "--method", "byol",
               "--arch", "resnet18", "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0")
    assert "kNN monitor off" not in done.stderr
    epoch = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if "epoch_loss" in line]
    assert "knn_top1_k20" in epoch[0]
    run(*genview_cmd("eval", "knn", "--checkpoint", "run/checkpoint.pt", "--train", "data/train", "--val", "data/val",
                     "--out", "eval", "--workers", "0", "--device", "cpu", "--batch-size", "4"))
    assert json.loads((tmp_path / "eval" / "eval_knn.json").read_text())["val_images"] == 4
