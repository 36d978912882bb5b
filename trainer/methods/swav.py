"""SwAV: multi-crop swapped prediction of Sinkhorn-Knopp codes over prototypes (Eq. 4), with a feature queue."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genview.method.losses import sinkhorn_knopp, swapped_prediction
from trainer import dist
from trainer.methods.base import SSLMethod
from trainer.methods.config import MethodConfig


class SwAV(SSLMethod):
    """SwAV as facebookresearch/swav: codes of the two global crops, predicted from every other crop.

    Crops of one resolution go through the encoder together (BN over them, as the original). From
    epoch `swav_queue_start_epoch` the last `swav_queue_length` embeddings (split over ranks) join the
    Sinkhorn-Knopp batch once the queue is full; the prototypes get no update for the first
    `freeze_prototypes_iters` optimizer steps.
    """

    def __init__(self, config: MethodConfig):
        super().__init__(config)
        c = config
        self.online = self.make_encoder([c.hidden, c.dim])
        self.prototypes = nn.Linear(c.dim, c.prototypes, bias=False)
        self.register_buffer("queue", torch.zeros(2, c.swav_queue_length // dist.world_size(), c.dim))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def embed(self, crops: list[Tensor]) -> list[Tensor]:
        """L2-normalised embeddings per crop, one encoder call per run of equal-size crops."""
        out: list[Tensor] = []
        start = 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            out += F.normalize(self.online(torch.cat(crops[start:end])), dim=1).chunk(end - start)
            start = end
        return out

    def loss(self, crops: list[Tensor]) -> Tensor:
        c = self.config
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        embeddings = self.embed(crops)
        scores = [self.prototypes(e) for e in embeddings]
        codes = [self.codes(i, scores[i].detach(), embeddings[i].detach()) for i in range(2)]
        return swapped_prediction(scores, codes, c.temperature)

    @torch.no_grad()
    def codes(self, crop: int, scores: Tensor, embedding: Tensor) -> Tensor:
        """Sinkhorn-Knopp codes of a global crop, over the queued embeddings too once the queue is full."""
        c, b = self.config, scores.shape[0]
        queued = self.epoch >= c.swav_queue_start_epoch and self.queue.shape[1] > 0 and self.training
        if queued and bool(self.queue[crop, -1].any()):
            scores = torch.cat([self.queue[crop] @ self.prototypes.weight.t(), scores])
        if queued:
            if self.queue.shape[1] < b:
                raise ValueError(f"SwAV queue of {self.queue.shape[1]} per rank is shorter than the batch {b}")
            self.queue[crop] = torch.cat([embedding.to(self.queue.dtype), self.queue[crop, :-b]])
        return sinkhorn_knopp(scores, c.sinkhorn_epsilon, c.sinkhorn_iterations, dist.all_reduce_sum)[-b:]

    def before_optimizer_step(self, epoch: int) -> None:
        if int(self.steps) < self.config.freeze_prototypes_iters:
            self.prototypes.weight.grad = None
        self.steps += 1
