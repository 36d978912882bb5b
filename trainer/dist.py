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


def teardown() -> None:
    """Leave the torchrun group (nothing in a single process)."""
    if is_distributed():
        dist.destroy_process_group()


@torch.no_grad()
def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every rank along dim 0 (no gradient)."""
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (identity in one process)."""
    if is_distributed():
        dist.all_reduce(t)
    return t


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every rank along dim 0, gradients flowing back to each rank's part.

    Equal batches on every rank; this rank's rows are rank()·B … rank()·B + B − 1.
    """
    if not is_distributed():
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous()))


def all_ranks_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True only if `flag` holds on every rank (so that all ranks take the same branch)."""
    if not is_distributed():
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


@torch.no_grad()
def shuffled_forward(encoder: torch.nn.Module, x: torch.Tensor, ghost_batches: int) -> torch.Tensor:
    """encoder(x) with shuffled BN (MoCo): BN statistics of each output come from a random subset of the batch.

    Across ranks: the global batch is permuted and each rank encodes its share of the permutation (the
    original's distributed shuffle). In one process: the permuted batch is encoded in `ghost_batches`
    chunks of at least two samples. Outputs are returned in the input order.
    """
    if is_distributed():
        everything = gather_cat(x)
        perm = torch.randperm(everything.shape[0], device=x.device)
        dist.broadcast(perm, src=0)
        mine = perm.view(world_size(), -1)[rank()]
        keys = gather_cat(encoder(everything[mine]))
        return keys[torch.argsort(perm)].view(world_size(), -1, *keys.shape[1:])[rank()]
    perm = torch.randperm(x.shape[0], device=x.device)
    chunks = max(1, min(ghost_batches, x.shape[0] // 2))
    out = torch.cat([encoder(part) for part in x[perm].chunk(chunks)])
    return out[torch.argsort(perm)]
