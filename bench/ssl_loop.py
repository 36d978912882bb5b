"""The in-process SSL training loop and frozen-feature evaluation shared by the method benchmarks.

`train` runs a method (trainer/methods) over a dataset of view pairs with the method's optimizer, schedule and
per-step hooks, optionally weighting each pair's loss (Eq. 14); `embed`, `knn_top1` and `linear_top1` score a
backbone on frozen features.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from genview.method.losses import weighted_loss
from genview.training.augment import normalise, transforms_for
from trainer.evaluate import knn_topk
from trainer.methods import MethodConfig, SSLMethod
from trainer.optim import build_optimizer, build_schedule

Weighting = Callable[[torch.Tensor], torch.Tensor]  # per-pair quality [B] → loss weights [B]
EpochHook = Callable[[int, float], None]  # (epoch, its mean loss), after each epoch


@dataclass(frozen=True)
class Budget:
    """How long one method trains."""

    epochs: int
    batch_size: int = 128
    lr: float | None = None  # base lr per 256 images; None: the recipe's
    workers: int = 0  # data loader processes making the views
    device: str = "cpu"


@dataclass
class TrainLog:
    """Mean loss per epoch, first and last step's loss, steps, minutes and the EMA weight left on the init."""

    loss_per_epoch: list[float] = field(default_factory=list)
    first_step: float = math.nan
    last_step: float = math.nan
    steps: int = 0
    minutes: float = 0.0
    target_share_of_init: float = 1.0


class ViewPairs(Dataset):
    """The method's two global views t(x), t⁺(x) of each uint8 image, and a quality of 0 (unused)."""

    def __init__(self, images: torch.Tensor, config: MethodConfig):
        self.images, self.views = images, transforms_for(config.crops)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        img = self.images[index]
        return self.views.t(img), self.views.t_plus(img), 0.0


def train(model: SSLMethod, pairs: Dataset, budget: Budget, weighting: Weighting | None = None,
          on_epoch: EpochHook | None = None) -> TrainLog:
    """Train `model` on `pairs` ((view, view, quality) items) for the budget; the loss per epoch."""
    config, device = model.config, torch.device(budget.device)
    loader = DataLoader(pairs, batch_size=budget.batch_size, shuffle=True, drop_last=True,
                        num_workers=budget.workers, persistent_workers=budget.workers > 0)
    steps = len(loader)
    optimizer = build_optimizer(model, config, budget.lr, budget.batch_size)
    schedule = build_schedule(optimizer, min(config.warmup_epochs, budget.epochs / 10) * steps,
                              budget.epochs * steps, config.final_lr_ratio)
    result, start = TrainLog(steps=steps * budget.epochs), time.perf_counter()
    for epoch in range(budget.epochs):
        model.set_epoch(epoch)
        losses = []
        for s, (x1, x2, quality) in enumerate(loader):
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                per_sample = model([normalise(x.to(device, non_blocking=True)) for x in (x1, x2)])
            weights = weighting(quality.float().to(device)) if weighting else None
            loss = weighted_loss(per_sample.float(), weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            model.before_optimizer_step(epoch)
            optimizer.step()
            schedule.step()
            model.after_step((epoch * steps + s + 1) / (budget.epochs * steps))
            result.target_share_of_init *= getattr(model, "m", config.momentum)
            losses.append(loss.item())
        result.first_step = result.first_step if epoch else losses[0]
        result.last_step = losses[-1]
        result.loss_per_epoch.append(round(sum(losses) / len(losses), 4))
        if on_epoch:
            on_epoch(epoch, result.loss_per_epoch[-1])
    result.minutes = round((time.perf_counter() - start) / 60, 2)
    return result


@torch.no_grad()
def embed(net: torch.nn.Module, images: torch.Tensor, device: str = "cpu", batch: int = 512) -> torch.Tensor:
    """L2-normalised backbone features [N, D] of uint8 images, in eval mode (the mode is restored)."""
    was_training = net.training
    net.eval()
    feats = [F.normalize(net(normalise(b.to(device))).float(), dim=1).cpu() for b in images.split(batch)]
    net.train(was_training)
    return torch.cat(feats)


def pixels(images: torch.Tensor) -> torch.Tensor:
    """Raw pixels as L2-normalised features (after ImageNet normalisation): the no-learning baseline."""
    return F.normalize(normalise(images).flatten(1), dim=1)


def knn_top1(train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, val_labels: torch.Tensor,
             k: int = 20) -> float:
    """Weighted kNN top-1 (cosine, k, τ = 0.07) of validation features against training features."""
    return round(knn_topk(train, train_labels, val, val_labels, ks=(k,))[k], 4)


def linear_top1(train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, val_labels: torch.Tensor,
                steps: int = 300, seed: int = 0) -> float:
    """Top-1 of a linear classifier (full-batch Adam on standardised frozen features, cross-entropy)."""
    torch.manual_seed(seed)
    mean, std = train.mean(0), train.std(0) + 1e-6
    x, xv = (train - mean) / std, (val - mean) / std
    head = torch.nn.Linear(x.shape[1], int(train_labels.max()) + 1)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(head(x), train_labels).backward()
        optimizer.step()
    with torch.no_grad():
        return round(float((head(xv).argmax(1) == val_labels).float().mean()), 4)


def mean_cosine(feats: torch.Tensor) -> float:
    """Mean cosine between the L2-normalised features of different images (1: collapsed to one direction)."""
    n = len(feats)
    return round(float(((feats.sum(0) ** 2).sum() - n) / (n * (n - 1))), 4)
