"""`genview generate-dataset` throughput with one and with two generator workers, and a no-op resume (CPU, tiny).

    python -m bench.generate_dataset --out bench/results/generate_dataset_cpu.json
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from genview.models.presets import ensure_random_unclip
from harness.images import png_bytes
from harness.ports import free_port, wait_for_port
from harness.processes import genview_cmd, service_env, start_api, start_worker
from bench.report import emit


def run(env: dict, images: Path, manifest: Path, url: str) -> float:
    start = time.perf_counter()
    subprocess.run(genview_cmd("generate-dataset", "--images", str(images), "--generator-url", url, "--manifest",
                               str(manifest), "--steps", "4", "--size", "64", "--concurrency", "8", "--no-fit"),
                   env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genview-gen-bench-"))
    for i in range(args.images):
        (work / "images").mkdir(exist_ok=True)
        (work / "images" / f"{i}.png").write_bytes(png_bytes(128, 96, seed=i))
    cache = work / "cache"
    ensure_random_unclip("tiny", cache)
    result = {"machine": f"{platform.machine()} CPU, 2-core VM", "images": args.images,
              "setup": "tiny preset, 4 steps, 64 px views, concurrency 8, worker batch 8"}
    for workers in (1, 2):
        port = free_port()
        redis = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--save", ""],
                                 stdout=subprocess.DEVNULL)
        wait_for_port(port)
        env = service_env(model="tiny", device="cpu", model_cache=str(cache), redis_url=f"redis://127.0.0.1:{port}/0",
                          store_url=f"file://{work / f'store-{workers}'}", max_batch_size="8")
        procs = [start_worker("generator-worker", env, work, f"-{workers}-{i}") for i in range(workers)]
        api, url = start_api("generator-api", env, work)
        while not all("serving" in p.tail() for p in procs):  # models loaded
            time.sleep(0.2)
        try:
            manifest = work / f"manifest-{workers}.jsonl"
            seconds = run(env, work / "images", manifest, url)
            result[f"images_per_s_{workers}_worker"] = args.images / seconds
            result[f"noop_resume_s_{workers}_worker"] = run(env, work / "images", manifest, url)
        finally:
            for p in [*procs, api]:
                p.stop()
            redis.terminate()
    result["two_over_one_worker"] = result["images_per_s_2_worker"] / result["images_per_s_1_worker"]
    emit(result, args.out)


if __name__ == "__main__":
    main()
