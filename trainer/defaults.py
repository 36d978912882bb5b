"""The trainer's option choices and defaults, importable without torch (so a command's `--help` stays fast)."""

from __future__ import annotations

import os
from typing import Literal

ARCHS = ("resnet18", "resnet50", "vit_small", "vit_base")
STEMS = ("imagenet", "small")
Stem = Literal["imagenet", "small"]
RESNET_WIDTH = 64  # torchvision's base width (channels of the stem and the first stage)
KNN_KS = (20, 200)
KNN_TEMPERATURE = 0.07


def default_loader_workers(cap: int) -> int:
    """Data loader processes by default: `cap`, but never more than the CPUs this process may use."""
    return max(1, min(cap, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
