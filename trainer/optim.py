"""Optimizers (SGD, LARS, AdamW) with linear learning-rate scaling, warmup + cosine schedules, and a guard
that skips optimizer steps with non-finite losses, weights or gradients."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from timm.optim import Lars
from torch import nn

from trainer import dist
from trainer.methods import MethodConfig, SSLMethod


def build_optimizer(model: nn.Module, config: MethodConfig, base_lr: float | None, batch: int) -> torch.optim.Optimizer:
    """The config's optimizer over the method's parameter groups, lr = base_lr · batch / 256.

    `model` is the `SSLMethod` or its DistributedDataParallel wrapper. LARS adapts only the groups the
    method marks `lars_adapt` (moco-v3, BYOL and SimCLR exclude biases and norm parameters; SwAV's LARC
    adapts all); AdamW with torch's default betas as moco-v3.
    """
    method: SSLMethod = getattr(model, "module", model)
    lr = (base_lr if base_lr is not None else config.base_lr) * batch / 256
    groups = method.param_groups(lr, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if config.optimizer == "lars":
        for group in groups:  # timm's LARS adapts groups with weight decay, or with always_adapt
            group["always_adapt"] = group["lars_adapt"]
        return Lars(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def build_schedule(optimizer: torch.optim.Optimizer, warmup_steps: float, total_steps: int,
                   final_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then cosine decay to `final_ratio` of the lr, stepped once per training step.

    Groups marked `fixed_lr` (SimSiam's predictor) keep their initial lr.
    """
    def factor(step: int) -> float:
        if step < warmup_steps:
            return min(1.0, (step + 1) / warmup_steps)
        progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    lambdas = [(lambda step: 1.0) if g.get("fixed_lr") else factor for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


class NonFiniteGuard:
    """Checks a step before `optimizer.step()`: a non-finite loss, weight or gradient skips the step.

    `ok(loss, weights, parameters)` returns False for a step to skip (and counts it); after `patience`
    skipped steps in a row it raises FloatingPointError. All ranks take the same decision.
    """

    def __init__(self, patience: int = 10):
        self.patience, self.in_a_row, self.skipped = patience, 0, 0

    def ok(self, loss: torch.Tensor, weights: torch.Tensor | None = None,
           parameters: Iterable[nn.Parameter] | None = None) -> bool:
        checks = [loss.detach().float().reshape(-1)]
        if weights is not None:
            checks.append(weights.detach().float().reshape(-1))
        grads = [p.grad for p in parameters or () if p.grad is not None]
        if grads:
            checks.append(torch.nn.utils.get_total_norm(grads).float().reshape(1))
        finite = dist.all_ranks_true(bool(torch.isfinite(torch.cat(checks)).all()), loss.device)
        if finite:
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.patience:
            raise FloatingPointError(f"{self.in_a_row} steps in a row with a non-finite loss, weight or gradient "
                                     f"({self.skipped} skipped in all)")
        return False
