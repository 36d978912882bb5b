"""The environment every benchmark records: commit, date, device, CPU model and two speed yardsticks (Python, one-thread
matmul), library versions, CPU count, peak memory."""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
LIBRARIES = ("torch", "diffusers", "transformers", "open_clip_torch", "torchvision")


def _commit() -> str:
    """HEAD of the repository, with '+dirty' when tracked files other than the benchmarks' own results differ."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)bench/results"], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


COMMIT = _commit()  # at start: a long run records the code it ran, not what HEAD became while it ran


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def device_name(device: torch.device | str) -> str:
    """The accelerator's name, or the CPU model."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (`/proc/cpuinfo`), else the platform's name for it."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def python_loop_s(n: int = 10**6) -> float:
    """Seconds one core takes for a fixed pure-Python loop (best of 3): VMs of one kind differ several-fold in
    speed, so absolute times (ms added, requests/s) are only comparable between runs alongside this."""
    best = float("inf")
    for _ in range(3):
        start, total = time.perf_counter(), 0
        for i in range(n):
            total += i
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops() -> float:
    """float32 GFLOP/s of a 512² matmul on one CPU thread (best of 3): the speed the tiny models' CPU times follow."""
    threads, x = torch.get_num_threads(), torch.randn(512, 512)
    torch.set_num_threads(1)
    try:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(8):
                x @ x
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 8 * 2 * 512**3 / best / 1e9


@functools.cache
def cpu_speed() -> dict[str, float]:
    """The two yardsticks, measured once per process (at its first result)."""
    return {"python_loop_s": round(python_loop_s(), 4), "matmul_gflops_1_thread": round(matmul_gflops(), 1)}


def environment(device: torch.device | str) -> dict:
    """What a result depends on, read from the machine (never typed by hand)."""
    return {"commit": COMMIT, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device_name(device), "cpu_model": cpu_model(), **cpu_speed(),
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(),
            "versions": {name: _version(name) for name in LIBRARIES},
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}


def peak_memory_gb(device: torch.device | str) -> float | None:
    """Peak allocated accelerator memory since the last reset (None on the CPU)."""
    device = torch.device(device)
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def reset_peak_memory(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
