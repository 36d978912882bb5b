"""Optimizers (SGD, LARS, AdamW) with linear learning-rate scaling, and warmup + cosine schedules."""

from __future__ import annotations

import math

import torch
from timm.optim import Lars
from torch import nn

from trainer.methods import Recipe


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Biases and normalisation parameters get no weight decay (and no LARS adaptation)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, recipe: Recipe, base_lr: float | None, batch: int) -> torch.optim.Optimizer:
    """The recipe's optimizer with lr = base_lr · batch / 256."""
    lr = (base_lr if base_lr is not None else recipe.base_lr) * batch / 256
    groups = param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if recipe.optimizer == "lars":  # timm's LARS adapts only groups with weight decay
        return Lars(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def build_schedule(optimizer: torch.optim.Optimizer, warmup_steps: float, total_steps: int):
    """Linear warmup, then cosine decay to zero, stepped once per training step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return min(1.0, (step + 1) / warmup_steps)
        progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
