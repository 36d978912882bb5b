"""Generator throughput: the worker (batched, per-sample levels) against the official one-image-per-call loop.

Real SD 2.1 unCLIP-H architecture with seeded random weights (no download), fp16, 768², 20 steps,
guidance 10, output resized to 512². Both paths run in the same process on the same GPU.

    python -m bench.generator_gpu --arch sd21-unclip-h-random --device cuda --out bench/results/x.json
    python -m bench.generator_gpu --arch tiny --device cpu --images 4 --official 2   # smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genview.images import encode_png
from genview.models.presets import build_random_unclip, write_tiny_tokenizer
from genview.models.unclip import AdaptiveUnCLIPPipeline, UnclipGenerator
from genview.queue import MemoryJobQueue
from genview.settings import Settings
from genview.store import ObjectStore, input_key, sha256_hex
from services.generator.jobs import GenerationParams
from services.generator.worker import GeneratorWorker
from bench.report import emit


def build(arch: str, device: torch.device) -> AdaptiveUnCLIPPipeline:
    """The architecture with random weights, created directly on the device, fp16 on CUDA."""
    with tempfile.TemporaryDirectory() as tok, torch.device(device):
        write_tiny_tokenizer(Path(tok))
        base = build_random_unclip(arch, Path(tok))
    pipe = AdaptiveUnCLIPPipeline(**base.components)
    pipe.to(device, torch.float16 if device.type == "cuda" else torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_png(Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))) for _ in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def official_loop(pipe, inputs: list[bytes], device, steps: int, guidance: float) -> float:
    """Images/s of one pipeline call per image, as the official generation script does."""
    import io

    pils = [Image.open(io.BytesIO(b)).convert("RGB") for b in inputs]
    run = lambda img, i: pipe(image=img, noise_level=200, num_inference_steps=steps, guidance_scale=guidance,  # noqa: E731
                              generator=torch.Generator(device).manual_seed(i)).images[0].resize((512, 512))
    run(pils[0], 0)  # warm-up
    sync(device)
    start = time.perf_counter()
    for i, img in enumerate(pils[1:], 1):
        encode_png(run(img, i))
    sync(device)
    return (len(pils) - 1) / (time.perf_counter() - start)


def worker_path(generator, inputs: list[bytes], batch: int, steps: int, guidance: float, rounds: int) -> float:
    """Images/s of the generator worker: queue → batched encode, levels, generation → store."""
    settings = Settings(model="bench", max_batch_size=batch, store_url="memory://bench-" + str(time.time_ns()))
    queue, store = MemoryJobQueue(f"bench-{time.time_ns()}"), ObjectStore(settings.store_url)
    worker = GeneratorWorker(settings, generator, queue, store)

    def one_round(chunk: list[bytes], seed: int) -> None:
        for data in chunk:
            store.put(input_key(sha256_hex(data)), data)
            params = GenerationParams(model="bench", noise="adaptive", basis="per-image", seed=seed,
                                      steps=steps, guidance_scale=guidance, size=512)
            queue.submit(params.to_payload(sha256_hex(data)))
        worker.handle(queue.claim("bench", len(chunk), 0))

    one_round(inputs[:batch], seed=1)  # warm-up (and compilation, if any)
    sync(generator.device)
    start = time.perf_counter()
    for r in range(rounds):
        one_round(inputs[:batch], seed=10 + r)
    sync(generator.device)
    return rounds * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="sd21-unclip-h-random")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--images", type=int, default=16, help="worker batch size")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--official", type=int, default=6, help="images for the official loop (+1 warm-up)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=10.0)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    pipe = build(args.arch, device)
    generator = UnclipGenerator(pipe, "bench")
    inputs = images(max(args.images, args.official + 1), seed=0)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "arch": args.arch, "steps": args.steps, "guidance": args.guidance,
              "resolution": pipe.unet.config.sample_size * pipe.vae_scale_factor, "batch": args.images}
    result["official_images_per_s"] = official_loop(pipe, inputs[:args.official + 1], device, args.steps, args.guidance)
    print(json.dumps(result), flush=True)
    result["worker_eager_images_per_s"] = worker_path(generator, inputs, args.images, args.steps, args.guidance,
                                                      args.rounds)
    result["eager_speedup"] = result["worker_eager_images_per_s"] / result["official_images_per_s"]
    print(json.dumps(result), flush=True)
    if args.compile:
        generator.compile()
        result["worker_compiled_images_per_s"] = worker_path(generator, inputs, args.images, args.steps,
                                                             args.guidance, args.rounds)
        result["compiled_speedup"] = result["worker_compiled_images_per_s"] / result["official_images_per_s"]
    if device.type == "cuda":
        result["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    emit(result, args.out)


if __name__ == "__main__":
    main()
