"""Speed levers of the generator, each behind a GENVIEW_* setting: dtype, fused q/k/v, channels-last, FP8, compile.

Exact ones (fused q/k/v; channels-last, on CUDA) change results by rounding at most and are on by default;
approximate ones (bf16, FP8) are opt-in. `bench/gpu_suite.py` measures each one's speed and its effect on the views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genview.models.device import inference_dtype
from genview.models.errors import ModelLoadError
from genview.settings import CompileMode, GeneratorDtype, Settings

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper have FP8 tensor cores


@dataclass(frozen=True)
class Acceleration:
    """Which levers to apply to a loaded pipeline (`off()`: none, the plain model)."""

    dtype: GeneratorDtype
    fuse_qkv: bool
    channels_last: bool | None  # None: on CUDA only
    compile: bool
    compile_mode: CompileMode
    fp8: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> Acceleration:
        return cls(settings.dtype, settings.fuse_qkv, settings.channels_last, settings.compile,
                   settings.compile_mode, settings.fp8)

    @classmethod
    def off(cls) -> Acceleration:
        """The plain pipeline: the device's default dtype, nothing fused, converted or compiled."""
        return cls("auto", False, False, False, "default", False)

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        return inference_dtype(device) if self.dtype == "auto" else DTYPES[self.dtype]

    def apply(self, pipe, device: torch.device) -> None:
        """Apply the levers in place, in the order that composes: fuse, memory format, FP8, compile (CUDA only)."""
        if self.fuse_qkv:
            pipe.fuse_qkv_projections()  # the UNet's and the VAE's attention
        if self.channels_last or (self.channels_last is None and device.type == "cuda"):
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if self.fp8:
            quantize_fp8(pipe.unet, device)
        if self.compile and device.type == "cuda":
            pipe.unet.compile(mode=self.compile_mode, fullgraph=False)


def _fp8_linear(module: nn.Module, _fqn: str) -> bool:
    """FP8 matmuls need both sides a multiple of 16."""
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def quantize_fp8(module: nn.Module, device: torch.device) -> None:
    """FP8 weights and dynamically scaled FP8 activations in `module`'s linear layers (torchao)."""
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_
    except ImportError as exc:
        raise ModelLoadError("GENVIEW_FP8=true needs torchao: pip install 'genview[fp8]'") from exc
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < FP8_MIN_CAPABILITY:
        raise ModelLoadError(f"GENVIEW_FP8=true needs a CUDA GPU with compute capability ≥ 8.9 (Ada, Hopper); "
                             f"the generator runs on {device}: set GENVIEW_FP8=false")
    # row-wise scales need bf16 outputs (torch._scaled_mm); fp16 models use one scale per tensor
    granularity = PerRow() if next(module.parameters()).dtype == torch.bfloat16 else PerTensor()
    quantize_(module, Float8DynamicActivationFloat8WeightConfig(granularity=granularity), filter_fn=_fp8_linear)
