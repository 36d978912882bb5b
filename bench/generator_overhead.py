"""What the HTTP + Redis queue + store path adds per request, and the cache-hit throughput (CPU, tiny preset).

Baseline, measured in the same run and interleaved with the service: the worker's own work on one request
called directly in this process — decode, `ViewGenerator.generate` (fitted basis, adaptive policy), view and
foreground-map encoding. Service: `genview generator-api` and one `genview generator-worker` process at the
default settings (batch wait included), a private redis-server and a file:// store; one client, `wait=true`.

    python -m bench.generator_overhead --out bench/results/generator_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.report import emit
from genview.basis import DEFAULT_OWNER, BasisStore
from genview.generation import ViewGenerator, ViewRequest
from genview.images import load_rgb
from genview.method.pca import fit_pca_basis
from genview.models.presets import ensure_random_unclip
from genview.models.unclip import UnclipGenerator
from genview.schemas import GenerationParams
from genview.settings import Settings
from genview.store import ObjectStore, sha256_hex
from genview.view_encoding import ViewEncoding, encode_fg_map
from harness.images import png_bytes
from harness.ports import free_port, wait_for_port
from harness.processes import service_env, start_api, start_worker


def percentiles(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": 1000 * float(np.percentile(samples, 50)), "p99_ms": 1000 * float(np.percentile(samples, 99))}


def direct(views: ViewGenerator, data: bytes, params: GenerationParams, basis, encoding: ViewEncoding) -> float:
    """Latency of the worker's model work on one request, called directly."""
    start = time.perf_counter()
    request = ViewRequest(load_rgb(data, 10**8), sha256_hex(data), params, basis)
    for generated in views.generate([request]):
        [encoding.encode(v) for v in generated.views]
        encode_fg_map(generated.fg_map)
    return time.perf_counter() - start


def through_service(client: httpx.Client, base: str, data: bytes, steps: int, size: int) -> float:
    start = time.perf_counter()
    r = client.post(f"{base}/generate", params={"wait": "true", "timeout": "120"},
                    files={"image": ("x.png", data, "image/png")}, data={"steps": steps, "size": size})
    assert r.status_code == 200 and r.json()["cached"] is False, r.text
    return time.perf_counter() - start


def throughput(fn, total: int, concurrency: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(fn, range(total)))
    return total / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--hits", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="alternating /healthz and cache-hit runs")
    ap.add_argument("--store-dir", help="folder of the file:// store (default: a temporary folder on disk; "
                                         "/dev/shm shows the cost without fsync)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the worker process runs with one thread too
    work = Path(tempfile.mkdtemp(prefix="genview-bench-"))
    cache = str(work / "cache")
    store_url = f"file://{Path(tempfile.mkdtemp(dir=args.store_dir)) if args.store_dir else work / 'store'}"
    ensure_random_unclip("tiny", cache)
    inputs = [png_bytes(160, 120, seed=i) for i in range(2 * args.requests + 2)]
    generator = UnclipGenerator.load("tiny", "cpu", cache)
    basis = fit_pca_basis(generator.encode([load_rgb(d, 10**8) for d in inputs[:16]]).tokens, generator.grid)
    BasisStore(ObjectStore(store_url), generator.encoder_id).save(basis, DEFAULT_OWNER)
    views = ViewGenerator(generator, (defaults := Settings()).fg_fraction, defaults.max_batch_size)
    params = GenerationParams(model="tiny", noise_policy="auto", basis=basis.fingerprint,
                              steps=args.steps, size=args.size)
    encoding = ViewEncoding(defaults.view_format, defaults.view_quality)
    port = free_port()
    redis_proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--save", "", "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL)
    procs = []
    try:
        wait_for_port(port)
        env = service_env(model="tiny", device="cpu", model_cache=cache, redis_url=f"redis://127.0.0.1:{port}/0",
                          store_url=store_url)  # every other setting at its default (batch wait included)
        api, base = start_api("generator-api", env, work)
        procs += [api, start_worker("generator-worker", env, work)]
        client = httpx.Client(timeout=150)
        direct(views, inputs[-1], params, basis, encoding)  # warm-up
        through_service(client, base, inputs[-2], args.steps, args.size)  # warm-up (worker start)
        d, s = [], []
        for i in range(args.requests):  # interleaved, each on a fresh image (no cache hits)
            d.append(direct(views, inputs[2 * i], params, basis, encoding))
            s.append(through_service(client, base, inputs[2 * i + 1], args.steps, args.size))
        cached = inputs[1:2 * args.requests:2]

        def hit(i: int) -> None:
            r = client.post(f"{base}/generate", files={"image": ("x.png", cached[i % len(cached)], "image/png")},
                            data={"steps": args.steps, "size": args.size})
            assert r.status_code == 200 and r.json()["cached"] is True

        def healthz(_: int) -> None:
            client.get(f"{base}/healthz")

        runs: dict[str, list[float]] = {}
        for _ in range(args.rounds):  # /healthz and cache hits alternate
            for clients in (1, args.concurrency):
                for name, fn in (("healthz", healthz), ("cache_hit", hit)):
                    runs.setdefault(f"{name}_requests_per_s_{clients}_clients", []).append(
                        throughput(fn, args.hits, clients))
        rates = {name: float(np.median(values)) for name, values in runs.items()}
        result = {
            "shape": "generator-api + generator-worker processes (default settings: "
                     f"batch wait {defaults.max_batch_wait_ms} ms, batch {defaults.max_batch_size}), private Redis, "
                     "file:// store, fitted basis, adaptive policy; 1 client, wait=true; direct: the same "
                     "decode + ViewGenerator + encode in this process, interleaved",
            "store": store_url, "torch_threads": torch.get_num_threads(), "requests": args.requests, "steps": args.steps,
            "size": args.size, "direct": percentiles(d), "service": percentiles(s),
            "added_p50_ms": 1000 * (float(np.percentile(s, 50)) - float(np.percentile(d, 50))),
            "added_p99_ms": 1000 * (float(np.percentile(s, 99)) - float(np.percentile(d, 99))),
            "service_over_direct_p50": float(np.percentile(s, 50) / np.percentile(d, 50)),
            "median_of_rounds": rates, "rounds": runs,
        }
        for clients in (1, args.concurrency):
            result[f"cache_hit_over_healthz_{clients}_clients"] = (
                rates[f"cache_hit_requests_per_s_{clients}_clients"] / rates[f"healthz_requests_per_s_{clients}_clients"])
    finally:
        for p in procs:
            p.stop()
        redis_proc.terminate()
        redis_proc.wait()
    emit(result, args.out)


if __name__ == "__main__":
    main()
