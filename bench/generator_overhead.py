"""What the HTTP + Redis queue + store path adds per request, and the cache-hit throughput (CPU, tiny preset).

Baseline, measured in the same run: the same encode → levels → generate → PNG work called directly in
this process. Service: `genview generator-api` and one `genview generator-worker` process, a private
redis-server and a file:// store, requests with `wait=true` one at a time.

    python -m bench.generator_overhead --out bench/results/generator_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

from genview.images import encode_png, load_rgb
from genview.method.foreground import foreground_proportion_per_image
from genview.method.noise import adaptive_noise_level
from genview.models.presets import ensure_random_unclip
from genview.models.unclip import UnclipGenerator
from harness.images import png_bytes
from harness.ports import free_port, wait_for_port
from harness.processes import service_env, start_api, start_worker
from bench.report import emit


def percentiles(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": 1000 * float(np.percentile(samples, 50)), "p99_ms": 1000 * float(np.percentile(samples, 99))}


def direct(generator: UnclipGenerator, inputs: list[bytes], steps: int, size: int) -> list[float]:
    """Latency of the model work alone, per image."""
    times = []
    for i, data in enumerate(inputs):
        start = time.perf_counter()
        enc = generator.encode([load_rgb(data, 10**8)])
        level = adaptive_noise_level(foreground_proportion_per_image(enc.tokens, generator.grid))
        view = generator.generate(enc.embeds, level, [i], [""], steps=steps)[0]
        encode_png(view.resize((size, size)))
        times.append(time.perf_counter() - start)
    return times


def through_service(base: str, inputs: list[bytes], steps: int, size: int) -> list[float]:
    times = []
    for data in inputs:
        start = time.perf_counter()
        r = httpx.post(f"{base}/generate", params={"wait": "true", "timeout": "120"},
                       files={"image": ("x.png", data, "image/png")}, data={"steps": steps, "size": size}, timeout=150)
        assert r.status_code == 200 and r.json()["cached"] is False, r.text
        times.append(time.perf_counter() - start)
    return times


def throughput(fn, total: int, concurrency: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(fn, range(total)))
    return total / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--hits", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the worker process runs with one thread too
    work = Path(tempfile.mkdtemp(prefix="genview-bench-"))
    cache = str(work / "cache")
    ensure_random_unclip("tiny", cache)
    inputs = [png_bytes(160, 120, seed=i) for i in range(args.requests + 1)]
    port = free_port()
    redis_proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--save", "", "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL)
    procs = []
    try:
        wait_for_port(port)
        env = service_env(model="tiny", device="cpu", model_cache=cache, redis_url=f"redis://127.0.0.1:{port}/0",
                          store_url=f"file://{work / 'store'}", max_batch_wait_ms="0")
        api, base = start_api("generator-api", env, work)
        procs += [api, start_worker("generator-worker", env, work)]
        generator = UnclipGenerator.load("tiny", "cpu", cache)
        direct(generator, inputs[-1:], args.steps, args.size)  # warm-up
        through_service(base, inputs[-1:], args.steps, args.size)  # warm-up (worker start)
        d = direct(generator, inputs[:-1], args.steps, args.size)
        s = through_service(base, inputs[:-1], args.steps, args.size)
        client = httpx.Client(timeout=30)

        def hit(i: int) -> None:
            r = client.post(f"{base}/generate", files={"image": ("x.png", inputs[i % args.requests], "image/png")},
                            data={"steps": args.steps, "size": args.size})
            assert r.status_code == 200 and r.json()["cached"] is True

        result = {
            "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} torch thread(s), "
                       "2-core CI-class VM",
            "requests": args.requests, "steps": args.steps, "size": args.size,
            "direct": percentiles(d), "service": percentiles(s),
            "added_p50_ms": 1000 * (float(np.percentile(s, 50)) - float(np.percentile(d, 50))),
            "added_p99_ms": 1000 * (float(np.percentile(s, 99)) - float(np.percentile(d, 99))),
            "service_over_direct_p50": float(np.percentile(s, 50) / np.percentile(d, 50)),
            "cache_hit_requests_per_s": throughput(hit, args.hits, args.concurrency),
            "healthz_requests_per_s": throughput(lambda _: client.get(f"{base}/healthz"), args.hits, args.concurrency),
        }
        result["cache_hit_over_healthz"] = result["cache_hit_requests_per_s"] / result["healthz_requests_per_s"]
    finally:
        for p in procs:
            p.stop()
        redis_proc.terminate()
    emit(result, args.out)


if __name__ == "__main__":
    main()
