"""The SSL methods with per-sample losses (Eq. 2–4), so the quality weights can re-weight them (Eq. 14)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genview.method.losses import byol_loss, info_nce, negative_cosine, nt_xent, swav_loss
from trainer.backbones import Encoder, backbone, ema_update, mlp
from trainer.dist import all_reduce_sum, gather_cat

METHODS = ("mocov2", "mocov3", "byol", "simsiam", "swav", "simclr")


@dataclass(frozen=True)
class Recipe:
    """A method's defaults as the original papers (and GenView's reproductions) set them."""

    optimizer: str  # sgd | lars | adamw
    base_lr: float  # learning rate per 256 images (scaled linearly with the batch)
    weight_decay: float
    warmup_epochs: float
    temperature: float | None = None
    momentum: float | None = None  # EMA start for momentum encoders


RECIPES = {
    "mocov2": Recipe("sgd", 0.03, 1e-4, 0, temperature=0.2, momentum=0.999),
    "mocov3": Recipe("lars", 0.3, 1.5e-6, 10, temperature=1.0, momentum=0.99),
    "mocov3-vit": Recipe("adamw", 1.5e-4, 0.1, 40, temperature=0.2, momentum=0.99),
    "byol": Recipe("lars", 0.2, 1.5e-6, 10, momentum=0.996),
    "simsiam": Recipe("sgd", 0.05, 1e-4, 0),
    "swav": Recipe("lars", 0.6, 1e-6, 10, temperature=0.1),
    "simclr": Recipe("lars", 0.3, 1e-6, 10, temperature=0.1),
}


def recipe_for(method: str, arch: str) -> Recipe:
    """MoCo v3 uses AdamW and τ = 0.2 for ViTs, LARS and τ = 1.0 for ResNets."""
    return RECIPES["mocov3-vit" if method == "mocov3" and arch.startswith("vit") else method]


def cosine_momentum(start: float, progress: float) -> float:
    """EMA momentum rising from `start` to 1 along a half cosine (BYOL, MoCo v3)."""
    return 1 - (1 - start) * (math.cos(math.pi * progress) + 1) / 2


class MoCoV2(nn.Module):
    """MoCo v2: momentum key encoder, a queue of negatives, InfoNCE (Eq. 2)."""

    def __init__(self, arch: str, image_size: int, recipe: Recipe, queue_size: int = 65536, dim: int = 128):
        super().__init__()
        net, width = backbone(arch, image_size)
        self.online = Encoder(net, mlp([width, width, dim]))
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.t, self.m = recipe.temperature, recipe.momentum
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        q = self.online(x1)
        with torch.no_grad():
            k = F.normalize(self.target(x2), dim=1)
        loss = info_nce(q, k, self.t, queue=self.queue.clone())
        self._enqueue(gather_cat(k))
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        n, ptr = keys.shape[0], int(self.queue_ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % self.queue.shape[0]
        self.queue[idx] = keys
        self.queue_ptr.fill_((ptr + n) % self.queue.shape[0])

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.online, self.m)


class PredictedTarget(nn.Module):
    """Online encoder + predictor against a momentum target whose EMA momentum rises to 1 (MoCo v3, BYOL)."""

    def __init__(self, arch: str, image_size: int, recipe: Recipe, projector: list[int], last_bn: bool,
                 hidden: int, dim: int):
        super().__init__()
        net, width = backbone(arch, image_size)
        self.online = Encoder(net, mlp([width, *projector, dim], last_bn=last_bn))
        self.predictor = mlp([dim, hidden, dim], last_bn=last_bn)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.m0, self.m = recipe.momentum, recipe.momentum

    def predictions_and_targets(self, x1: torch.Tensor, x2: torch.Tensor):
        """(p1, p2) from the online branch, (z1, z2) from the target (no gradient)."""
        p1, p2 = self.predictor(self.online(x1)), self.predictor(self.online(x2))
        with torch.no_grad():
            return p1, p2, self.target(x1), self.target(x2)

    def after_step(self, progress: float) -> None:
        self.m = cosine_momentum(self.m0, progress)
        ema_update(self.target, self.online, self.m)


class MoCoV3(PredictedTarget):
    """MoCo v3: symmetric InfoNCE (Eq. 2) between predictor outputs and momentum keys, in-batch negatives."""

    def __init__(self, arch: str, image_size: int, recipe: Recipe, hidden: int = 4096, dim: int = 256):
        super().__init__(arch, image_size, recipe, [hidden, hidden], True, hidden, dim)
        self.t = recipe.temperature

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        q1, q2, k1, k2 = self.predictions_and_targets(x1, x2)
        return 2 * self.t * (info_nce(q1, k2, self.t) + info_nce(q2, k1, self.t))


class BYOL(PredictedTarget):
    """BYOL: predictor regresses the momentum target, 2 − 2·cos per sample (Eq. 3), symmetrised."""

    def __init__(self, arch: str, image_size: int, recipe: Recipe, hidden: int = 4096, dim: int = 256):
        super().__init__(arch, image_size, recipe, [hidden], False, hidden, dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        p1, p2, z1, z2 = self.predictions_and_targets(x1, x2)
        return byol_loss(p1, z2) + byol_loss(p2, z1)


class SimSiam(nn.Module):
    """SimSiam: negative cosine with stop-gradient (Eq. 3), symmetrised and halved."""

    def __init__(self, arch: str, image_size: int, recipe: Recipe, dim: int = 2048, bottleneck: int = 512):
        super().__init__()
        net, width = backbone(arch, image_size)
        self.online = Encoder(net, mlp([width, dim, dim, dim], last_bn=True))
        self.predictor = mlp([dim, bottleneck, dim])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.online(x1), self.online(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))

    def after_step(self, progress: float) -> None:
        pass


class SwAV(nn.Module):
    """SwAV: swapped prediction of Sinkhorn-Knopp codes over prototypes (Eq. 4), two views."""

    def __init__(self, arch: str, image_size: int, recipe: Recipe, hidden: int = 2048, dim: int = 128,
                 prototypes: int = 3000):
        super().__init__()
        net, width = backbone(arch, image_size)
        self.online = Encoder(net, mlp([width, hidden, dim]))
        self.prototypes = nn.Linear(dim, prototypes, bias=False)
        self.t = recipe.temperature

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        s1 = self.prototypes(F.normalize(self.online(x1), dim=1))
        s2 = self.prototypes(F.normalize(self.online(x2), dim=1))
        return swav_loss(s1, s2, temperature=self.t, world_size_sum=all_reduce_sum)

    def after_step(self, progress: float) -> None:
        pass


class SimCLR(nn.Module):
    """SimCLR: NT-Xent over the 2B embeddings of the batch (Eq. 2), per pair."""

    def __init__(self, arch: str, image_size: int, recipe: Recipe, dim: int = 128):
        super().__init__()
        net, width = backbone(arch, image_size)
        self.online = Encoder(net, mlp([width, width, dim]))
        self.t = recipe.temperature

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return nt_xent(self.online(x1), self.online(x2), self.t)

    def after_step(self, progress: float) -> None:
        pass


CLASSES = {"mocov2": MoCoV2, "mocov3": MoCoV3, "byol": BYOL, "simsiam": SimSiam, "swav": SwAV, "simclr": SimCLR}


def build_method(method: str, arch: str, image_size: int, **overrides) -> nn.Module:
    """An SSL method whose forward(x1, x2) returns the per-sample loss [B]."""
    return CLASSES[method](arch, image_size, recipe_for(method, arch), **overrides)
