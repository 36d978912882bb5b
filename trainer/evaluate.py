"""Evaluation of a backbone: feature extraction and the weighted kNN monitor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainer.augment import normalise


@torch.no_grad()
def extract_features(net: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256,
                     workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features [N, D] and labels [N] of an (image, label) dataset, in eval mode."""
    was_training = net.training
    net.eval()
    feats, labels = [], []
    for images, y in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        feats.append(F.normalize(net(normalise(images.to(device))).float(), dim=1).cpu())
        labels.append(torch.as_tensor(y))
    net.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, exclude_self: bool = False) -> float:
    """Top-1 accuracy of weighted kNN voting (weights exp(cos/τ), as InstDisc / the MoCo monitor)."""
    sims = queries @ bank.T
    if exclude_self:
        sims.fill_diagonal_(-float("inf"))
    top, idx = sims.topk(min(k, bank.shape[0] - int(exclude_self)), dim=1)
    classes = int(max(bank_labels.max(), query_labels.max())) + 1
    votes = torch.zeros(queries.shape[0], classes).scatter_add_(1, bank_labels[idx], (top / temperature).exp())
    return float((votes.argmax(1) == query_labels).float().mean())
