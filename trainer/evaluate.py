"""Evaluation of a backbone: distributed feature extraction and the chunked weighted kNN (InstDisc / MoCo monitor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from genview.training.augment import normalise
from trainer import dist
from trainer.defaults import KNN_KS, KNN_TEMPERATURE


def shard(n: int, rank: int, world: int) -> range:
    """The contiguous indices of `n` items that `rank` of `world` handles (at most ⌈n/world⌉ each)."""
    per = -(-n // world)
    return range(min(n, rank * per), min(n, (rank + 1) * per))


def _gather_rows(local: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """Every rank's contiguous shard (see `shard`) concatenated in rank order: the [n, …] tensor on each rank."""
    if not dist.is_distributed():
        return local
    per = -(-n // dist.world_size())
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    return dist.gather_cat(padded)[:n].cpu() if n else local


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256,
                     workers: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features [N, D] (in `dtype`) and labels [N] of an (uint8 image, label) dataset, in eval mode.

    Under torchrun each rank encodes its contiguous share and every rank receives all N rows, in dataset order.
    """
    was_training = backbone.training
    backbone.eval()
    n = len(dataset)
    part = Subset(dataset, shard(n, dist.rank(), dist.world_size()))
    feats, labels = [], []
    for images, y in DataLoader(part, batch_size=batch_size, num_workers=workers):
        feats.append(F.normalize(backbone(normalise(images.to(device))).float(), dim=1).to(dtype).cpu())
        labels.append(torch.as_tensor(y))
    backbone.train(was_training)
    if not feats:  # an empty shard (fewer images than ranks) still needs the feature width
        width = backbone(normalise(dataset[0][0][None].to(device))).shape[1]
        feats, labels = [torch.empty(0, width, dtype=dtype)], [torch.empty(0, dtype=torch.long)]
    gather_device = device if device.type == "cuda" else torch.device("cpu")
    return (_gather_rows(torch.cat(feats), n, gather_device),
            _gather_rows(torch.cat(labels).long(), n, gather_device))


def knn_vote(top_sims: torch.Tensor, top_labels: torch.Tensor, classes: int, t: float) -> torch.Tensor:
    """Predicted class per query: neighbours vote with weight exp(sim/τ) (InstDisc, Wu et al. 2018)."""
    votes = torch.zeros(top_sims.shape[0], classes, dtype=torch.float32, device=top_sims.device)
    votes.scatter_add_(1, top_labels, (top_sims.float() / t).exp())
    return votes.argmax(1)


@torch.no_grad()
def nearest(train_feats: torch.Tensor, queries: torch.Tensor, k: int, train_chunk: int = 16384,
            skip_from: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) [Q, k] of each query's k most similar training rows, descending.

    The training side is read `train_chunk` rows at a time and merged into a running top-k, so memory is
    O(Q · (train_chunk + k)) besides the features. `skip_from`: query i is training row skip_from + i and
    must not be its own neighbour (leave-one-out).
    """
    compute = torch.float32 if queries.device.type == "cpu" else queries.dtype
    q = queries.to(compute)
    best_s = torch.full((q.shape[0], 0), -float("inf"), dtype=compute, device=q.device)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=q.device)
    rows = torch.arange(q.shape[0], device=q.device)
    for start in range(0, train_feats.shape[0], train_chunk):
        block = train_feats[start:start + train_chunk].to(device=q.device, dtype=compute)
        sims = q @ block.T
        if skip_from is not None:
            own = rows + skip_from - start
            inside = (own >= 0) & (own < block.shape[0])
            sims[rows[inside], own[inside]] = -float("inf")
        s, i = sims.topk(min(k, block.shape[0]), dim=1)
        best_s, pick = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.cat([best_i, i + start], 1).gather(1, pick)
    return best_s, best_i


@torch.no_grad()
def knn_topk(train_feats: torch.Tensor, train_labels: torch.Tensor, query_feats: torch.Tensor,
             query_labels: torch.Tensor, ks: tuple[int, ...] = KNN_KS, t: float = KNN_TEMPERATURE,
             chunk: int = 512, train_chunk: int = 16384, leave_one_out: bool = False) -> dict[int, float]:
    """Weighted-kNN top-1 accuracy for each k in `ks`, on L2-normalised features.

    Queries are processed `chunk` at a time (memory O(chunk × train_chunk), never N×N); one top-max(ks) search
    serves every k. `leave_one_out`: queries are the training rows themselves (each skips itself).
    """
    n = train_feats.shape[0] - int(leave_one_out)
    kmax = min(max(ks), n)
    classes = int(max(train_labels.max(), query_labels.max())) + 1
    labels = train_labels.to(query_feats.device)
    correct = dict.fromkeys(ks, 0)
    for start in range(0, query_feats.shape[0], chunk):
        sims, idx = nearest(train_feats, query_feats[start:start + chunk], kmax, train_chunk,
                            skip_from=start if leave_one_out else None)
        truth = query_labels[start:start + chunk].to(query_feats.device)
        for k in ks:
            kk = min(k, kmax)
            correct[k] += int((knn_vote(sims[:, :kk], labels[idx[:, :kk]], classes, t) == truth).sum())
    return {k: correct[k] / max(1, query_feats.shape[0]) for k in ks}
