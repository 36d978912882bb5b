"""A backbone with a linear classifier: supervised training under torchrun and top-1/top-5 evaluation."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from genview.training.augment import normalise
from trainer import dist
from trainer.evaluate import shard
from trainer.optim import build_schedule

log = logging.getLogger("genview.eval")


class Classifier(nn.Module):
    """backbone → linear head. `frozen`: the backbone stays in eval mode (BN statistics fixed) and gets no
    gradient, so only the head learns (linear probing)."""

    def __init__(self, backbone: nn.Module, width: int, classes: int, frozen: bool):
        super().__init__()
        self.backbone, self.frozen = backbone, frozen
        self.head = nn.Linear(width, classes)
        nn.init.normal_(self.head.weight, std=0.01)  # as MoCo's linear classification
        nn.init.zeros_(self.head.bias)
        if frozen:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            features = self.backbone(normalise(images))
        return self.head(features)


def feature_width(backbone: nn.Module, size: int, device: torch.device) -> int:
    """D of a backbone's [B, D] output, from one blank image (in eval mode; the backbone's mode is kept)."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        width = backbone(torch.zeros(1, 3, size, size, device=device)).shape[1]
    backbone.train(was_training)
    return width


def fit(model: Classifier, optimizer: torch.optim.Optimizer, dataset: Dataset, epochs: int, batch_size: int,
        device: torch.device, workers: int, seed: int) -> list[float]:
    """Cross-entropy training with a per-step cosine schedule; `batch_size` is global (split over ranks).

    Returns the mean loss of each epoch (this rank's batches).
    """
    world = dist.world_size()
    if batch_size % world:
        raise SystemExit(f"--batch-size {batch_size} is not divisible by {world} ranks")
    sampler = DistributedSampler(dataset, world, dist.rank(), shuffle=True, seed=seed, drop_last=False)
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=len(sampler) > batch_size // world,
                        persistent_workers=workers > 0)
    schedule = build_schedule(optimizer, 0, epochs * len(loader))
    net: nn.Module = model
    if dist.is_distributed():
        if device.type == "cuda" and not model.frozen:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    losses = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        total, count = 0.0, 0
        for images, labels in loader:
            loss = F.cross_entropy(net(images.to(device, non_blocking=True)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + loss.item(), count + 1
        losses.append(total / max(1, count))
        if dist.rank() == 0:
            log.info("epoch %d/%d loss %.4f lr %.4g", epoch + 1, epochs, losses[-1], schedule.get_last_lr()[0])
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int, workers: int,
             ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies over the whole dataset; under torchrun each rank scores its share and counts are summed."""
    model.eval()
    part = Subset(dataset, shard(len(dataset), dist.rank(), dist.world_size()))
    counts = torch.zeros(len(ks) + 1, dtype=torch.float64)
    for images, labels in DataLoader(part, batch_size=batch_size, num_workers=workers):
        logits = model(images.to(device)).float().cpu()
        top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
        hit = top == torch.as_tensor(labels)[:, None]
        counts += torch.tensor([*(float(hit[:, :k].any(1).sum()) for k in ks), len(labels)], dtype=torch.float64)
    if dist.is_distributed():
        counts = counts.to(device)
        dist.all_reduce_sum(counts)
        counts = counts.cpu()
    return {f"top{k}": float(counts[i] / counts[-1]) for i, k in enumerate(ks)}
