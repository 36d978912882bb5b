"""The generation paths the GPU suite times: official loop, plain batched diffusers, the worker through its loop.

Each returns images/s measured after a warm-up of the same shapes (which compiles when the UNet is compiled);
the worker also returns its GPU-idle share and the views of its first timed batch (for the output-effect check).
"""

from __future__ import annotations

import copy
import io
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genview.images import encode_png
from genview.models.acceleration import Acceleration
from genview.models.presets import build_random_unclip, write_tiny_tokenizer
from genview.models.unclip import AdaptiveUnCLIPPipeline, UnclipGenerator
from genview.queue import MemoryJobQueue
from genview.schemas import GenerateJob, GenerationParams, to_queue
from genview.settings import Settings
from genview.store import ObjectStore, input_key, sha256_hex
from genview.view_encoding import ViewEncoding
from services.generator.worker import GeneratorWorker
from services.worker_loop import run_worker

TIMED_SEED = 10  # the parameters' seed of the first timed batch: the same views in every configuration


@dataclass(frozen=True)
class Workload:
    """What every path generates: inputs, denoising steps (and fewer for warm-ups), guidance, view side."""

    data: list[bytes]
    steps: int
    guidance: float
    size: int
    rounds: int
    warm_steps: int


@dataclass
class WorkerRun:
    images_per_s: float
    gpu_idle_ratio: float
    views: dict[tuple[str, int], np.ndarray]  # (input sha, view index) → RGB pixels of the first timed batch


def build(arch: str, device: torch.device) -> AdaptiveUnCLIPPipeline:
    """The architecture with random weights, created directly on the device, fp16 on CUDA (the reference)."""
    with tempfile.TemporaryDirectory() as tok, torch.device(device):
        write_tiny_tokenizer(Path(tok))
        base = build_random_unclip(arch, Path(tok))
    pipe = AdaptiveUnCLIPPipeline(**base.components)
    pipe.to(device, Acceleration.off().torch_dtype(device))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def accelerated(reference: AdaptiveUnCLIPPipeline, acceleration: Acceleration, model: str) -> UnclipGenerator:
    """A copy of the reference pipeline (same weights) in the lever's dtype, with the levers applied."""
    pipe = copy.deepcopy(reference)
    device = reference.device
    pipe.to(device, acceleration.torch_dtype(device))
    acceleration.apply(pipe, device)
    return UnclipGenerator(pipe, model)


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


def official_loop(pipe, work: Workload, images: int) -> float:
    """One pipeline call per image, decode and PNG encode included (the official script's loop)."""
    encoding, device = ViewEncoding(), pipe.device

    def one(i: int, raw: bytes, steps: int) -> None:
        img = Image.open(io.BytesIO(raw)).convert("RGB")
        out = pipe(image=img, noise_level=200, num_inference_steps=steps, guidance_scale=work.guidance,
                   generator=torch.Generator(device).manual_seed(i)).images[0]
        encoding.encode(out.resize((work.size, work.size), Image.Resampling.LANCZOS))

    one(0, work.data[0], work.warm_steps)
    return timed(device, lambda: [one(i, raw, work.steps) for i, raw in enumerate(work.data[1:images + 1], 1)],
                 images)


def diffusers_batched(pipe, work: Workload, batch: int) -> float:
    """Plain diffusers: `batch` images per pipeline call, one noise level, decode and encode included."""
    encoding, device = ViewEncoding(), pipe.device

    def one_round(r: int, steps: int) -> None:
        imgs = [Image.open(io.BytesIO(raw)).convert("RGB") for raw in work.data[:batch]]
        gens = [torch.Generator(device).manual_seed(r * batch + i) for i in range(batch)]
        outs = pipe(image=imgs, noise_level=200, num_inference_steps=steps, guidance_scale=work.guidance,
                    generator=gens).images
        for out in outs:
            encoding.encode(out.resize((work.size, work.size), Image.Resampling.LANCZOS))

    one_round(0, work.warm_steps)
    return timed(device, lambda: [one_round(r, work.steps) for r in range(1, work.rounds + 1)], work.rounds * batch)


class _TimedHandler:
    """The worker's handler, noting when the first batch after the warm-up starts (and resetting the GPU-idle
    meter then): warm-up and timed batches run in one loop, so in one handler thread (CUDA graphs are per thread)."""

    def __init__(self, worker: GeneratorWorker, pipelined: bool):
        self.worker, self.handle = worker, worker.submit if pipelined else worker.handle
        self.calls, self.start = 0, 0.0

    def __call__(self, deliveries) -> None:
        self.calls += 1
        if self.calls == 2:
            sync(self.worker.generator.device)
            self.worker.idle = type(self.worker.idle)()
            self.start = time.perf_counter()
        self.handle(deliveries)


def worker_path(generator: UnclipGenerator, work: Workload, batch: int, padded: bool,
                pipelined: bool = True) -> WorkerRun:
    """The worker served by the real worker loop at the default batch wait, on jobs queued before it starts (one
    warm-up batch on the same shapes, then full batches); `padded`: every pipeline call padded to `batch` (as
    GENVIEW_COMPILE does); `pipelined=False`: the serial path (no I/O threads, each batch stored before the next)."""
    settings = Settings(model="bench", max_batch_size=batch, store_url=f"memory://bench-{time.time_ns()}",
                        compile=padded, **({} if pipelined else {"encode_threads": 0}))
    queue, store = MemoryJobQueue(f"bench-{time.time_ns()}"), ObjectStore(settings.store_url)
    worker = GeneratorWorker(settings, generator, queue, store)
    shas = [sha256_hex(raw) for raw in work.data[:batch]]
    for sha, raw in zip(shas, work.data):
        store.put(input_key(sha), raw)

    def submit(seed: int, steps: int) -> list[str]:
        params = GenerationParams(model="bench", noise_policy="auto:per-image", seed=seed,
                                  steps=steps, guidance_scale=work.guidance, size=work.size)
        return [queue.submit(to_queue(GenerateJob(sha=sha, params=params)))[0] for sha in shas]

    warm = submit(1, work.warm_steps)
    jobs = [j for r in range(work.rounds) for j in submit(TIMED_SEED + r, work.steps)]
    handler, stop = _TimedHandler(worker, pipelined), threading.Event()
    loop = threading.Thread(target=run_worker, args=(queue, handler, "bench", batch, settings.max_batch_wait_ms, stop),
                            daemon=True)
    loop.start()
    try:
        for job_id in warm + jobs:
            queue.wait(job_id, 3600)
        sync(generator.device)
        rate = len(jobs) / (time.perf_counter() - handler.start)
    finally:
        stop.set()
        loop.join()
        worker.close()
    failed = [queue.get(j).error for j in warm + jobs if queue.get(j).status != "done"]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark jobs failed: {failed[0]}")
    views = {(sha, v): np.asarray(Image.open(io.BytesIO(store.get(ref["key"]))).convert("RGB"))
             for sha, job_id in zip(shas, jobs) for v, ref in enumerate(queue.get(job_id).result["views"])}
    return WorkerRun(rate, worker.idle.ratio(), views)
