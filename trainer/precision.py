"""Mixed precision for the training step: autocast (bf16 / fp16) and, for fp16, gradient scaling."""

from __future__ import annotations

from contextlib import nullcontext

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_precision(device: torch.device) -> str:
    """bf16 on CUDA; fp32 on the CPU, where bf16 autocast is slower unless the CPU has bf16 units (AMX)."""
    return "bf16" if device.type == "cuda" else "fp32"


class PrecisionUnsupported(ValueError):
    """The precision cannot run on this device."""


class Precision:
    """Autocast for the forward pass, and the backward/step pair (with a GradScaler for fp16)."""

    def __init__(self, name: str, device: torch.device):
        if name not in DTYPES:
            raise PrecisionUnsupported(f"--precision must be one of {', '.join(DTYPES)}, got {name!r}")
        if name == "fp16" and device.type != "cuda":
            raise PrecisionUnsupported("--precision fp16 needs a CUDA device; on the CPU use bf16 or fp32")
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self):
        """The context for the forward pass (losses come back in fp32 from the methods)."""
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients back at their true scale (before checks, clipping or hooks that read them)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, skip: bool = False) -> None:
        """The optimizer step unless `skip` (fp16: also skipped by the scaler when a gradient overflowed)."""
        if self.scaler:
            if not skip:
                self.scaler.step(optimizer)
            self.scaler.update()
        elif not skip:
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
