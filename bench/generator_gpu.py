"""Generator and scorer throughput on one device, every path in one process (issue 15.4/15.5).

Generator (real SD 2.1 unCLIP-H architecture, seeded random weights, fp16, 768², 20 steps, CFG 10, views
resized to 512²), eager vs eager, then compiled vs compiled:
  - official: one pipeline call per image, as the official generation script;
  - diffusers: plain `StableUnCLIPImg2ImgPipeline` calls on `--batch` images at once;
  - worker: jobs on a memory queue, served by the real worker loop (claim → decode → ViewGenerator →
    encode/store in the pool → complete) at `--batch`, with its GPU-idle share.
Scorer: in-process PairScorer pairs/s (convnext-base-w-random, fp16, batch 256, fitted basis,
channels_last, torch.compile on CUDA). Results are written after every step (a timeout keeps them).

    python -m bench.generator_gpu --out bench/results/generator_gpu_h100.json        # GPU, ~6 min
    python -m bench.generator_gpu --quick                                             # CPU, tiny, seconds
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.env import environment, peak_memory_gb, reset_peak_memory
from genview.images import encode_png
from genview.method.pca import fit_pca_basis
from genview.models.presets import build_random_unclip, write_tiny_tokenizer
from genview.models.scorer_encoder import ScorerEncoder
from genview.models.unclip import AdaptiveUnCLIPPipeline, UnclipGenerator
from genview.queue import MemoryJobQueue
from genview.schemas import GenerateJob, GenerationParams, to_queue
from genview.scoring import PairScorer
from genview.settings import Settings
from genview.store import ObjectStore, input_key, sha256_hex
from genview.view_encoding import ViewEncoding
from services.generator.worker import GeneratorWorker
from services.worker_loop import run_worker

OUTPUT_SIZE = 512


def build(arch: str, device: torch.device) -> AdaptiveUnCLIPPipeline:
    """The architecture with random weights, created directly on the device, fp16 on CUDA."""
    with tempfile.TemporaryDirectory() as tok, torch.device(device):
        write_tiny_tokenizer(Path(tok))
        base = build_random_unclip(arch, Path(tok))
    pipe = AdaptiveUnCLIPPipeline(**base.components)
    pipe.to(device, torch.float16 if device.type == "cuda" else torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_png(Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))) for _ in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn, images: int) -> float:
    """Images/s of `fn()` producing `images` images (after a synchronise on both ends)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return images / (time.perf_counter() - start)


def official_loop(pipe, data: list[bytes], device, steps: int, guidance: float, size: int) -> float:
    """One pipeline call per image, decode and PNG encode included (the official script's loop)."""
    encoding = ViewEncoding()

    def one(i: int, raw: bytes) -> None:
        img = Image.open(io.BytesIO(raw)).convert("RGB")
        out = pipe(image=img, noise_level=200, num_inference_steps=steps, guidance_scale=guidance,
                   generator=torch.Generator(device).manual_seed(i)).images[0]
        encoding.encode(out.resize((size, size), Image.Resampling.LANCZOS))

    one(0, data[0])  # warm-up (compiles when compiled)
    return timed(device, lambda: [one(i, raw) for i, raw in enumerate(data[1:], 1)], len(data) - 1)


def diffusers_batched(pipe, data: list[bytes], device, batch: int, steps: int, guidance: float, size: int,
                      rounds: int) -> float:
    """Plain diffusers: `batch` images per pipeline call, one noise level, decode and encode included."""
    encoding = ViewEncoding()

    def one_round(r: int) -> None:
        imgs = [Image.open(io.BytesIO(raw)).convert("RGB") for raw in data[:batch]]
        gens = [torch.Generator(device).manual_seed(r * batch + i) for i in range(batch)]
        outs = pipe(image=imgs, noise_level=200, num_inference_steps=steps, guidance_scale=guidance,
                    generator=gens).images
        for out in outs:
            encoding.encode(out.resize((size, size), Image.Resampling.LANCZOS))

    one_round(0)
    return timed(device, lambda: [one_round(r) for r in range(1, rounds + 1)], rounds * batch)


def worker_path(generator: UnclipGenerator, data: list[bytes], batch: int, steps: int, guidance: float, size: int,
                rounds: int, compiled: bool, pipelined: bool = True) -> tuple[float, float]:
    """(images/s, GPU-idle share) of the worker served by the real worker loop at the default batch wait;
    `pipelined=False`: the serial path (no I/O threads, every batch stored before the next starts)."""
    settings = Settings(model="bench", max_batch_size=batch, store_url=f"memory://bench-{time.time_ns()}",
                        compile=compiled, **({} if pipelined else {"encode_threads": 0}))
    queue, store = MemoryJobQueue(f"bench-{time.time_ns()}"), ObjectStore(settings.store_url)
    worker = GeneratorWorker(settings, generator, queue, store)
    for raw in data[:batch]:
        store.put(input_key(sha256_hex(raw)), raw)

    def submit(seed: int) -> list[str]:
        params = GenerationParams(model="bench", noise_policy="auto:per-image", basis="per-image", seed=seed,
                                  steps=steps, guidance_scale=guidance, size=size)
        return [queue.submit(to_queue(GenerateJob(sha=sha256_hex(raw), params=params)))[0] for raw in data[:batch]]

    def serve(job_ids: list[str]) -> float:
        """Images/s of the worker loop on jobs already queued (its batches then have the full size)."""
        stop = threading.Event()
        handler = worker.submit if pipelined else worker.handle
        loop = threading.Thread(target=run_worker, args=(queue, handler, "bench", batch, settings.max_batch_wait_ms,
                                                         stop), daemon=True)

        def run() -> None:
            loop.start()
            for job_id in job_ids:
                queue.wait(job_id, 3600)

        try:
            return timed(generator.device, run, len(job_ids))
        finally:
            stop.set()
            loop.join()
            failed = [queue.get(j).error for j in job_ids if queue.get(j).status != "done"]
            if failed:
                raise RuntimeError(f"{len(failed)} benchmark jobs failed: {failed[0]}")

    serve(submit(seed=1))  # warm-up (and compilation, if any)
    worker.idle = type(worker.idle)()
    rate = serve([j for r in range(rounds) for j in submit(seed=10 + r)])
    worker.close()
    return rate, worker.idle.ratio()


def scorer_pairs_per_s(name: str, device: torch.device, batch: int, rounds: int, compile: bool) -> float:
    """In-process PairScorer pairs/s with a fitted basis on uint8 224² pairs."""
    encoder = ScorerEncoder.load(name, str(device))
    if compile:
        encoder.compile()
    scorer = PairScorer(encoder, max_batch=batch)
    pairs = torch.randint(0, 256, (batch // 2, 2, 224, 224, 3), dtype=torch.uint8, device=device)
    basis = fit_pca_basis(encoder.tokens(pairs[:8].flatten(0, 1)), encoder.grid)
    scorer.score(pairs, basis)  # warm-up (compiles when compiled)
    return timed(device, lambda: [scorer.score(pairs, basis) for _ in range(rounds)], rounds * pairs.shape[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny presets on the CPU, a few seconds")
    ap.add_argument("--arch", default="sd21-unclip-h-random")
    ap.add_argument("--scorer", default="convnext-base-w-random")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16, help="images per call for the batched paths")
    ap.add_argument("--rounds", type=int, default=2, help="timed batches per batched path")
    ap.add_argument("--official", type=int, default=4, help="timed images of the official loop")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=OUTPUT_SIZE, help="output side of the views")
    ap.add_argument("--scorer-batch", type=int, default=256, help="images (2 per pair) per scorer call")
    ap.add_argument("--no-compile", action="store_true", help="eager paths only")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.arch, args.scorer, args.device = "tiny", "tiny", "cpu"
        args.batch, args.rounds, args.official, args.steps, args.size, args.scorer_batch = 4, 1, 2, 2, 64, 16
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    result = {"env": environment(device), "arch": args.arch, "steps": args.steps, "guidance": args.guidance,
              "batch": args.batch, "rounds": args.rounds, "official_images": args.official}

    def save(**values) -> None:
        result.update(values)
        print(json.dumps(values), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    pipe = build(args.arch, device)
    generator = UnclipGenerator(pipe, "bench")
    data = inputs(max(args.batch, args.official + 1))
    save(resolution=pipe.unet.config.sample_size * pipe.vae_scale_factor)
    modes = ["eager"] + ([] if args.no_compile or device.type != "cuda" else ["compiled"])
    for mode in modes:
        if mode == "compiled":
            generator.compile()
        reset_peak_memory(device)
        rate, idle = worker_path(generator, data, args.batch, args.steps, args.guidance, args.size, args.rounds,
                                 mode == "compiled")
        save(**{f"worker_{mode}_images_per_s": rate, f"worker_{mode}_gpu_idle_ratio": idle,
                f"worker_{mode}_peak_memory_gb": peak_memory_gb(device)})
        rate, idle = worker_path(generator, data, args.batch, args.steps, args.guidance, args.size, args.rounds,
                                 mode == "compiled", pipelined=False)
        save(**{f"worker_serial_{mode}_images_per_s": rate, f"worker_serial_{mode}_gpu_idle_ratio": idle})
        reset_peak_memory(device)
        save(**{f"diffusers_batched_{mode}_images_per_s": diffusers_batched(
            pipe, data, device, args.batch, args.steps, args.guidance, args.size, args.rounds),
            f"diffusers_batched_{mode}_peak_memory_gb": peak_memory_gb(device)})
        save(**{f"official_{mode}_images_per_s": official_loop(
            pipe, data[:args.official + 1], device, args.steps, args.guidance, args.size)})
        save(**{f"worker_over_official_{mode}": result[f"worker_{mode}_images_per_s"] / result[f"official_{mode}_images_per_s"],
                f"worker_over_diffusers_{mode}": result[f"worker_{mode}_images_per_s"]
                / result[f"diffusers_batched_{mode}_images_per_s"]})
    del pipe, generator
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak_memory(device)
    save(scorer=args.scorer, scorer_batch=args.scorer_batch, scorer_compiled=device.type == "cuda" and not args.no_compile,
         scorer_pairs_per_s=scorer_pairs_per_s(args.scorer, device, args.scorer_batch, max(2, args.rounds * 5),
                                               device.type == "cuda" and not args.no_compile),
         scorer_peak_memory_gb=peak_memory_gb(device))


if __name__ == "__main__":
    main()
