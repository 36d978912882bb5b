"""What the GPU suite measures besides time: FLOPs per image, the device's peak and measured matmul ceiling,
and a lever's effect on the views against the fp16 reference on the same seeds."""

from __future__ import annotations

import io
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from genview.generation import ViewGenerator, ViewRequest
from genview.models.unclip import UnclipGenerator
from genview.schemas import GenerationParams
from genview.store import sha256_hex

# Dense (no sparsity) fp16/bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets (half the "with sparsity"
# figures): H100 SXM and H200 SXM 989.4, H100 PCIe 756, H200 NVL 835, A100 312, L40S 362. First match wins.
PEAK_SOURCE = "NVIDIA datasheets, dense fp16/bf16 tensor core (H100/H200 SXM 989.4 TFLOP/s); FP8 dense is 2x"
PEAK_TFLOPS = (("H200 NVL", 835.0), ("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0),
               ("L40S", 362.0))


def device_peak_tflops(name: str) -> float | None:
    """The datasheet peak of a device by its name (None for the CPU or an unknown device)."""
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def matmul_tflops(device: torch.device) -> float:
    """Measured matmul ceiling: median of 10 products of random matrices (bf16 8192³ on CUDA, fp32 512³ on the CPU)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (512, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = []
    for i in range(13):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:  # three warm-ups
            times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e12


@dataclass(frozen=True)
class GenerationFlops:
    """FLOPs of one view (torch.utils.flop_counter, one pass at steps 1 and 2: the difference is one step)."""

    per_image: float
    unet_per_step: float  # the CFG pair
    encoder_and_decoder: float  # image encoder, VAE decode and everything outside the denoising loop

    def tflops_per_s(self, images_per_s: float) -> float:
        return images_per_s * self.per_image / 1e12


def count_flops(generator: UnclipGenerator, raw: bytes, steps: int, guidance: float, size: int) -> GenerationFlops:
    """Count one view's FLOPs through the ViewGenerator (the worker's model call) at 1 and 2 steps."""
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    views = ViewGenerator(generator, max_batch=1)

    def total(n: int) -> int:
        params = GenerationParams(model="bench", noise_policy="auto:per-image", seed=0, steps=n,
                                  guidance_scale=guidance, size=size)
        with FlopCounterMode(display=False) as counter:
            views.generate([ViewRequest(image, sha256_hex(raw), params, None)])
        return counter.get_total_flops()

    one, two = total(1), total(2)
    step = two - one
    return GenerationFlops(per_image=float(one - step + steps * step), unet_per_step=float(step),
                           encoder_and_decoder=float(one - step))


@dataclass(frozen=True)
class ViewEffect:
    """A configuration's views against the reference's (same inputs, parameters and seeds)."""

    views_compared: int
    max_pixel_diff: int  # 0–255
    mean_pixel_diff: float
    clip_cosine_min: float  # of the reference image encoder's embeddings
    clip_cosine_mean: float

    def as_dict(self) -> dict:
        return asdict(self)


def view_effect(reference: dict, views: dict, encoder: UnclipGenerator) -> ViewEffect:
    """Pixel differences and CLIP-embedding cosines of the views both runs generated."""
    keys = sorted(reference.keys() & views.keys())
    ref = np.stack([reference[k] for k in keys]).astype(np.int16)
    got = np.stack([views[k] for k in keys]).astype(np.int16)
    diff = np.abs(ref - got)
    embeds = [encoder.encode([Image.fromarray(a.astype(np.uint8)) for a in arr]).embeds.float() for arr in (ref, got)]
    cosine = F.cosine_similarity(*embeds, dim=-1)
    return ViewEffect(len(keys), int(diff.max()), float(diff.mean()), float(cosine.min()), float(cosine.mean()))
