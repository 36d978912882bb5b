"""Torch device and dtype selection."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` → the first CUDA GPU if there is one, else the CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def inference_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (as the official generation), fp32 on the CPU."""
    return torch.float16 if device.type == "cuda" else torch.float32
