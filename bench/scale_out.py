"""Ray path vs service path on the same images and CPU, and the parquet index lookup at ImageNet scale.

    python -m bench.scale_out --out bench/results/scale_out_cpu.json

Both paths: tiny preset, 4 steps, 64 px views, per-image foreground estimate (no basis to fit), model batch 8,
two model replicas (two generator workers behind the API / two Ray actors). The service path is timed with
its workers already loaded; the Ray path end to end (its actors load the model inside the timed run).
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.report import emit
from genview.batch.ray_generate import RayGenerationConfig, generate_shards, start_ray
from genview.batch.shards import INDEX_SCHEMA, ShardIndex
from genview.models.presets import ensure_random_unclip
from genview.settings import Settings
from harness.images import png_bytes
from harness.ports import free_port, wait_for_port
from harness.processes import genview_cmd, service_env, start_api, start_worker

POLICY, STEPS, SIZE, BATCH, REPLICAS = "auto:per-image", 4, 64, 8, 2


def written(folder: Path) -> tuple[int, int]:
    """(files, bytes) under a folder."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def service_path(work: Path, cache: Path, images: Path, n: int) -> dict:
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--save", ""], stdout=subprocess.DEVNULL)
    wait_for_port(port)
    store = work / "service-store"
    env = service_env(model="tiny", device="cpu", model_cache=str(cache), redis_url=f"redis://127.0.0.1:{port}/0",
                      store_url=f"file://{store}", max_batch_size=str(BATCH))
    procs = [start_worker("generator-worker", env, work, f"-{i}") for i in range(REPLICAS)]
    api, url = start_api("generator-api", env, work)
    try:
        while not all("serving" in p.tail() for p in procs):  # models loaded
            time.sleep(0.2)
        manifest = work / "manifest.jsonl"
        start = time.perf_counter()
        subprocess.run(genview_cmd("generate-dataset", "--engine", "service", "--images", str(images),
                                   "--generator-url", url, "--manifest", str(manifest), "--noise-policy", POLICY,
                                   "--steps", str(STEPS), "--size", str(SIZE), "--concurrency", "8"),
                       env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
    finally:
        for p in [*procs, api]:
            p.stop()
        redis.terminate()
        redis.wait()
    files, size = written(store)
    return {"images_per_s": n / seconds, "objects_per_image": (files + 1) / n,
            "bytes_per_image": (size + manifest.stat().st_size) / n}


def ray_path(work: Path, cache: Path, images: Path, n: int) -> dict:
    settings = Settings(model="tiny", device="cpu", model_cache=str(cache), store_url=f"file://{work / 'ray-store'}")
    config = RayGenerationConfig(images=str(images), shards=str(work / "shards"), settings=settings,
                                 noise_policy=POLICY, steps=STEPS, size=SIZE, batch_size=BATCH, concurrency=REPLICAS,
                                 gpus_per_actor=0, images_per_shard=n // REPLICAS // 2)
    start = time.perf_counter()
    start_ray(None, num_cpus=REPLICAS, object_store_mb=100)
    ray_start = time.perf_counter() - start
    stats = generate_shards(config)
    files, size = written(work / "shards")
    return {"images_per_s_end_to_end": n / stats.seconds, "ray_start_s": ray_start,
            "objects_per_image": files / n, "bytes_per_image": size / n, "shards": stats.shards}


def index_lookup(work: Path, rows: int = 1_281_167, lookups: int = 10_000) -> dict:
    """Build an index of ImageNet's size, then time reading it and looking keys up."""
    rng = random.Random(0)
    keys = sorted(f"n{c:08d}/n{c:08d}_{i}.JPEG" for c in range(1000) for i in range(rows // 1000 + 1))[:rows]
    table = pa.table({"key": keys, "sample": [f"{i:09d}" for i in range(rows)],
                      "shard": [f"shard-{i // 1000:06d}.tar" for i in range(rows)],
                      "offset": pa.array([(i % 1000) * 600_000 for i in range(rows)], pa.int64()),
                      "fg_ratio": pa.array([rng.random() for _ in range(rows)], pa.float32()),
                      "noise_level": pa.array([100 * rng.randrange(5) for _ in range(rows)], pa.int16()),
                      "sha256": ["0" * 64] * rows}, schema=INDEX_SCHEMA)
    path = work / "index.parquet"
    pq.write_table(table, path)
    start = time.perf_counter()
    loaded = pq.read_table(path)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    index = ShardIndex(loaded)
    build_s = time.perf_counter() - start
    probe = rng.sample(keys, lookups)
    start = time.perf_counter()
    assert all(index.lookup(k)["key"] == k for k in probe)
    lookup_us = (time.perf_counter() - start) / lookups * 1e6
    return {"rows": rows, "file_mb": path.stat().st_size / 2**20, "read_s": read_s, "build_s": build_s,
            "lookup_us": lookup_us}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genview-scale-out-"))
    images = work / "images"
    images.mkdir()
    for i in range(args.images):
        (images / f"{i}.png").write_bytes(png_bytes(128, 96, seed=i))
    cache = work / "cache"
    ensure_random_unclip("tiny", cache)
    try:
        service = service_path(work, cache, images, args.images)
        ray = ray_path(work, cache, images, args.images)
        result = {"machine": f"{platform.machine()} CPU, 2-core VM shared with other jobs", "images": args.images,
                  "setup": f"tiny preset, {STEPS} steps, {SIZE} px views, {POLICY}, batch {BATCH}, {REPLICAS} replicas",
                  "service": service, "ray": ray,
                  "ray_over_service_images_per_s": ray["images_per_s_end_to_end"] / service["images_per_s"],
                  "index": index_lookup(work)}
    finally:
        import ray as ray_module

        ray_module.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
