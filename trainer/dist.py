"""torch.distributed helpers that also work in a single process."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def setup(device: str) -> torch.device:
    """Join the torchrun group if launched by torchrun (gloo on CPU, NCCL on GPU); pick this rank's device."""
    cuda = device != "cpu" and torch.cuda.is_available()
    if "RANK" in os.environ and not is_distributed():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


@torch.no_grad()
def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every rank along dim 0 (no gradient)."""
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (identity in one process)."""
    if is_distributed():
        dist.all_reduce(t)
    return t
