"""Contrastive methods (InfoNCE, Eq. 2): MoCo v2 (queue, shuffle-BN), MoCo v3 and SimCLR (global negatives)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor

from genview.method.losses import info_nce, nt_xent
from trainer import dist
from trainer.backbones import ema_update, mlp
from trainer.methods.base import SSLMethod, cosine_momentum, swap_slots
from trainer.methods.config import MethodConfig


class MoCoV2(SSLMethod):
    """MoCo v2: Linear–ReLU–Linear projector, momentum key encoder with shuffle-BN, a queue of negatives."""

    def __init__(self, config: MethodConfig):
        super().__init__(config)
        self.online = self.make_encoder([config.hidden, config.dim], hidden_bn=False)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(config.queue_size, config.dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def slots(self, original: Tensor, generated: Tensor) -> tuple[Tensor, Tensor]:
        """(query input, key input): the generated view goes to the key, the query or a random one per sample."""
        slot = self.config.genview_slot
        if slot == "key":
            return original, generated
        if slot == "query":
            return generated, original
        return swap_slots(original, generated, torch.rand(original.shape[0], device=original.device) < 0.5)

    def loss(self, crops: list[Tensor]) -> Tensor:
        x_q, x_k = self.slots(crops[0], crops[1])
        q = self.online(x_q)
        k = F.normalize(shuffled_keys(self.target, x_k, self.config.ghost_batches), dim=1)
        loss = info_nce(q, k, self.config.temperature, queue=self.queue.clone())
        self._enqueue(dist.gather_cat(k))
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        n, ptr = keys.shape[0], int(self.queue_ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % self.queue.shape[0]
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % self.queue.shape[0])

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.online, self.config.momentum)


def shuffled_keys(encoder: torch.nn.Module, x: Tensor, ghost_batches: int) -> Tensor:
    """Keys with shuffled BN statistics in training mode; a plain forward in eval mode."""
    with torch.no_grad():
        return dist.shuffled_forward(encoder, x, ghost_batches) if encoder.training else encoder(x)


class PredictedTarget(SSLMethod):
    """Online encoder + predictor against a momentum target whose EMA momentum rises to 1 (MoCo v3, BYOL)."""

    def __init__(self, config: MethodConfig, projector: list[int], predictor: list[int], bias: bool = True,
                 last_bn: str = "none", predictor_last_bn: str = "none"):
        super().__init__(config)
        self.online = self.make_encoder(projector, bias=bias, last_bn=last_bn)
        self.predictor = mlp(predictor, bias=bias, last_bn=predictor_last_bn)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.m = config.momentum

    def predictions_and_targets(self, x1: Tensor, x2: Tensor):
        """(p1, p2) from the online branch, (z1, z2) from the target (no gradient)."""
        p1, p2 = self.predictor(self.online(x1)), self.predictor(self.online(x2))
        with torch.no_grad():
            return p1, p2, self.target(x1), self.target(x2)

    def after_step(self, progress: float) -> None:
        self.m = cosine_momentum(self.config.momentum, progress)
        ema_update(self.target, self.online, self.m)


class MoCoV3(PredictedTarget):
    """MoCo v3: symmetric InfoNCE ×2τ between predictions and the momentum keys of the global batch.

    Heads as moco-v3: ResNet 2-layer projector and a predictor without last BN; ViT 3-layer projector
    and a predictor with last BN. Linear layers without bias, last projector BN without affine.
    """

    def __init__(self, config: MethodConfig):
        c = config
        vit = c.family == "vit"
        super().__init__(c, [c.hidden, c.hidden, c.dim] if vit else [c.hidden, c.dim], [c.dim, c.pred_hidden, c.dim],
                         bias=False, last_bn="plain", predictor_last_bn="plain" if vit else "none")

    def loss(self, crops: list[Tensor]) -> Tensor:
        q1, q2, k1, k2 = self.predictions_and_targets(crops[0], crops[1])
        t, offset = self.config.temperature, dist.rank() * q1.shape[0]
        keys1, keys2 = dist.gather_cat(k1), dist.gather_cat(k2)  # keys carry no gradient (momentum encoder)
        return 2 * t * (info_nce(q1, k2, t, all_keys=keys2, offset=offset)
                        + info_nce(q2, k1, t, all_keys=keys1, offset=offset))


class SimCLR(SSLMethod):
    """SimCLR: both views through one encoder call, NT-Xent over the 2N embeddings of the global batch."""

    def __init__(self, config: MethodConfig):
        super().__init__(config)
        self.online = self.make_encoder([config.hidden, config.dim], bias=False, last_bn="scale")

    def loss(self, crops: list[Tensor]) -> Tensor:
        z1, z2 = self.online(torch.cat([crops[0], crops[1]])).chunk(2)
        gathered = (dist.gather_with_grad(z1), dist.gather_with_grad(z2)) if dist.is_distributed() else None
        return nt_xent(z1, z2, self.config.temperature, gathered, dist.rank() * z1.shape[0])
