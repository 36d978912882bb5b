"""Scorer throughput: `/score/batch` through the HTTP API + queue + worker against in-process scoring.

Both run in this process on the same encoder: the service path is a uvicorn server and a worker thread
(in-memory queue and store, as `genview serve`), fed by client threads with distinct batches.

    python -m bench.scorer_throughput --model tiny --device cpu --batch 64 --out bench/results/scorer_cpu.json
    python -m bench.scorer_throughput --model convnext-base-w-random --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch
from safetensors.torch import save

from genview.method.pca import fit_pca_basis
from genview.models.scorer_encoder import SCORER_IMAGE_SIZE, ScorerEncoder
from genview.queue import MemoryJobQueue
from genview.scoring import PairScorer
from genview.settings import Settings
from genview.store import ObjectStore
from services.scorer.app import create_app
from services.scorer.worker import ScorerWorker
from services.worker_loop import run_worker
from harness.ports import free_port, wait_for_port
from bench.report import emit


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def in_process(scorer: PairScorer, pairs: torch.Tensor, requests: int, basis=None) -> float:
    scorer.score(pairs, basis, per_image=basis is None)  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(requests):
        scorer.score(pairs, basis, per_image=basis is None)
    sync()
    return requests * pairs.shape[0] / (time.perf_counter() - start)


def through_service(scorer: PairScorer, pairs: torch.Tensor, requests: int, concurrency: int) -> float:
    settings = Settings(scorer_model="bench", store_url=f"memory://bench-{time.time_ns()}",
                        max_score_pairs=pairs.shape[0], max_batch_size=max(1, 1024 // pairs.shape[0]),
                        max_batch_wait_ms=2)
    queue, store = MemoryJobQueue(f"bench-{time.time_ns()}"), ObjectStore(settings.store_url)
    stop = threading.Event()
    threading.Thread(target=run_worker, args=(queue, ScorerWorker(scorer, queue, store).handle, "bench",
                                              settings.max_batch_size, 2, stop), daemon=True).start()
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, queue, store), port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_for_port(port)
    bodies = []
    for i in range(requests + concurrency):  # distinct bodies: no cache hits
        varied = pairs.clone()
        varied.view(-1)[:8] = torch.tensor(list((i + 1).to_bytes(8, "little")), dtype=torch.uint8)
        bodies.append(save({"pairs": varied}))
    client = httpx.Client(timeout=300)

    def post(i: int) -> None:
        r = client.post(f"http://127.0.0.1:{port}/score/batch", content=bodies[i])
        assert r.status_code == 200 and len(r.json()["w"]) == pairs.shape[0], r.text

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, range(requests, requests + concurrency)))  # warm-up
        start = time.perf_counter()
        list(pool.map(post, range(requests)))
    elapsed = time.perf_counter() - start
    server.should_exit = True
    stop.set()
    return requests * pairs.shape[0] / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    encoder = ScorerEncoder.load(args.model, args.device)
    scorer = PairScorer(encoder, max_batch=2 * args.batch)
    pairs = torch.randint(0, 256, (args.batch, 2, SCORER_IMAGE_SIZE, SCORER_IMAGE_SIZE, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    result = {"device": torch.cuda.get_device_name() if encoder.device.type == "cuda" else
              f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
              "model": args.model, "dtype": str(encoder.dtype), "batch_pairs": args.batch,
              "feature_map": [encoder.grid, encoder.grid, encoder.dim]}
    result["in_process_pairs_per_s"] = in_process(scorer, pairs, args.requests)
    basis = fit_pca_basis(encoder.tokens(pairs[:32].flatten(0, 1)), encoder.grid)
    result["in_process_fitted_basis_pairs_per_s"] = in_process(scorer, pairs, args.requests, basis)
    result["service_pairs_per_s"] = through_service(scorer, pairs, args.requests, args.concurrency)
    result["service_over_in_process"] = result["service_pairs_per_s"] / result["in_process_pairs_per_s"]
    emit(result, args.out, encoder.device)


if __name__ == "__main__":
    main()
