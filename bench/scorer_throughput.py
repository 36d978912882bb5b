"""Scorer throughput: `/score/batch` in the deployed shape against in-process scoring of the same pairs.

Service: `genview scorer-api` and `genview scorer-worker` processes, a private redis-server and a file://
store holding a fitted basis; this process is only the client, sending distinct raw uint8 bodies and JPEG
bodies (`pairs_jpeg`, as the trainer sends them). In-process: `PairScorer` on the same encoder, basis, pairs
and thread count as the worker. Rounds alternate in-process, raw and JPEG runs; ratios are of medians.

    python -m bench.scorer_throughput --out bench/results/scorer_cpu.json                      # CPU, tiny
    python -m bench.scorer_throughput --model convnext-base-w-random --device cuda --batch 256 --threads 8
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import torch
import torch.nn.functional as F
from safetensors.torch import save

from bench.report import emit
from genview.basis import DEFAULT_OWNER, BasisStore
from genview.client import jpeg_pairs_body
from genview.method.pca import fit_pca_basis
from genview.models.scorer_encoder import SCORER_IMAGE_SIZE, ScorerEncoder
from genview.scoring import PairScorer
from genview.store import ObjectStore
from harness.ports import free_port, wait_for_port
from harness.processes import service_env, start_api, start_worker


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def smooth_pairs(n: int, seed: int) -> torch.Tensor:
    """Image-like uint8 pairs [n, 2, 224, 224, 3] (smooth colour fields: JPEG sizes like real crops)."""
    low = torch.rand(2 * n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    images = F.interpolate(low, size=SCORER_IMAGE_SIZE, mode="bicubic", align_corners=False).clamp(0, 1)
    pixels = (images * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return pixels.view(n, 2, SCORER_IMAGE_SIZE, SCORER_IMAGE_SIZE, 3)


def in_process(scorer: PairScorer, batches: list[torch.Tensor], basis) -> float:
    sync()
    start = time.perf_counter()
    for pairs in batches:
        scorer.score(pairs, basis)
    sync()
    return sum(len(p) for p in batches) / (time.perf_counter() - start)


def through_service(base: str, bodies: list[bytes], pairs_each: int, concurrency: int,
                    worker: psutil.Process) -> tuple[float, float]:
    """(pairs/s, the worker process's CPU time over the wall time)."""
    with httpx.Client(timeout=600) as client, ThreadPoolExecutor(concurrency) as pool:
        def post(body: bytes) -> None:
            r = client.post(f"{base}/score/batch", content=body)
            assert r.status_code == 200 and len(r.json()["w"]) == pairs_each, r.text

        cpu, start = sum(worker.cpu_times()[:2]), time.perf_counter()
        list(pool.map(post, bodies))
        wall = time.perf_counter() - start
        return len(bodies) * pairs_each / wall, (sum(worker.cpu_times()[:2]) - cpu) / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64, help="pairs per request")
    ap.add_argument("--requests", type=int, default=6, help="requests per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=3, help="client requests in flight")
    ap.add_argument("--worker-batch", type=int, default=1, help="requests the worker scores in one call")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the worker and of the in-process run")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="genview-scorer-bench-"))
    cache, store_url = str(work / "cache"), f"file://{work / 'store'}"
    encoder = ScorerEncoder.load(args.model, args.device, cache)
    scorer = PairScorer(encoder, args.batch)
    batches = [smooth_pairs(args.batch, seed) for seed in range(args.requests)]
    basis = fit_pca_basis(encoder.tokens(batches[0][:16].flatten(0, 1)), encoder.grid)
    BasisStore(ObjectStore(store_url), encoder.encoder_id).save(basis, DEFAULT_OWNER)
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    procs = []
    runs: dict[str, list[float]] = {"in_process": [], "service_raw": [], "service_jpeg": []}
    worker_cpu: dict[str, list[float]] = {"service_raw": [], "service_jpeg": []}
    try:
        wait_for_port(port)
        env = service_env(scorer_model=args.model, device=args.device, model_cache=cache, store_url=store_url,
                          redis_url=f"redis://127.0.0.1:{port}/0", max_score_pairs=str(args.batch),
                          max_batch_size=str(args.worker_batch))
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        procs.append(start_worker("scorer-worker", env, work))
        api, base = start_api("scorer-api", env, work)
        procs.append(api)
        worker = psutil.Process(procs[0].popen.pid)
        scorer.score(batches[0], basis)  # warm-up, both sides
        through_service(base, [save({"pairs": batches[0]})], args.batch, 1, worker)
        bodies = {"service_raw": [save({"pairs": p}) for p in batches],
                  "service_jpeg": [jpeg_pairs_body(p) for p in batches]}
        for _ in range(args.rounds):  # batches are never cached: the same bodies are scored every run
            runs["in_process"].append(in_process(scorer, batches, basis))
            for name, sent in bodies.items():
                rate, cpu = through_service(base, sent, args.batch, args.concurrency, worker)
                runs[name].append(rate)
                worker_cpu[name].append(cpu)
        sizes = {f"{name}_body_mb": len(sent[0]) / 1e6 for name, sent in bodies.items()}
    finally:
        for p in procs:
            p.stop()
        redis.terminate()
        redis.wait()
    median = {k: statistics.median(v) for k, v in runs.items()}
    emit({"shape": "scorer-api + scorer-worker processes, private Redis, file:// store, fitted basis; client here",
          "model": args.model, "dtype": str(encoder.dtype), "pairs_per_request": args.batch,
          "requests_per_run": args.requests, "rounds": args.rounds, "concurrency": args.concurrency,
          "worker_batch": args.worker_batch,
          "torch_threads": args.threads, **sizes, "pairs_per_s": runs,
          "median_pairs_per_s": median, "worker_cpu_over_wall": worker_cpu,
          "raw_over_in_process": median["service_raw"] / median["in_process"],
          "jpeg_over_in_process": median["service_jpeg"] / median["in_process"]}, args.out, encoder.device)


if __name__ == "__main__":
    main()
