"""`SSLMethod`: what the training loop needs from every method, and nothing method-specific in the loop."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genview.training.augment import CropSpec
from trainer.backbones import Encoder, backbone, channels_last, mlp
from trainer.methods.config import MethodConfig


def cosine_momentum(start: float, progress: float) -> float:
    """EMA momentum rising from `start` to 1 along a half cosine (BYOL, MoCo v3)."""
    return 1 - (1 - start) * (math.cos(math.pi * progress) + 1) / 2


class SSLMethod(nn.Module):
    """An SSL method: `forward(crops)` gives the per-sample loss [B] in float32 (Eq. 2–4).

    crops[0] is t(X_i) (the original), crops[1] t⁺(X_i⁺) (the generated view, Eq. 6), further crops are
    local crops where `crop_spec.local_count` asks for them. The loop calls, per step:
    `set_epoch(epoch)` once per epoch, forward, backward, `before_optimizer_step(epoch)`, the optimizer
    step, then `after_step(progress)` with progress = steps done / total steps.
    """

    def __init__(self, config: MethodConfig):
        super().__init__()
        self.config = config
        self.epoch = 0

    def make_encoder(self, head_dims: list[int], **head) -> Encoder:
        """The config's backbone, then an MLP head from its width D through `head_dims` (0 stands for D)."""
        c = self.config
        net, width = backbone(c.arch, c.image_size, c.zero_init_residual, c.mocov3_vit, c.vit_heads, c.stem, c.width)
        return Encoder(net, mlp([width, *(d or width for d in head_dims)], **head))

    @property
    def backbone(self) -> nn.Module:
        """The network to export and evaluate: images [B, 3, H, W] → features [B, D]."""
        return self.online.net

    @property
    def crop_spec(self) -> CropSpec:
        """The crops the data pipeline must produce per sample."""
        return self.config.crops

    def forward(self, crops: list[Tensor]) -> Tensor:
        """Per-sample loss [B] (fp32: the losses run in fp32 under autocast) of the global and local crops."""
        if len(crops) not in (2, self.crop_spec.crops):  # local crops are optional
            raise ValueError(f"{self.config.method} expects {self.crop_spec.crops} crops, got {len(crops)}")
        return self.loss(list(crops))

    def loss(self, crops: list[Tensor]) -> Tensor:
        """Per-sample loss [B] of the method."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (SwAV starts its queue from an epoch on)."""
        self.epoch = epoch

    def before_optimizer_step(self, epoch: int) -> None:
        """After backward, before the optimizer step (SwAV drops the prototypes' gradient early on)."""

    def after_step(self, progress: float) -> None:
        """After the optimizer step (EMA updates); progress in [0, 1] over the whole run."""

    def predictor_parameters(self) -> list[nn.Parameter]:
        """Parameters that `fix_pred_lr` keeps at the initial lr."""
        predictor = getattr(self, "predictor", None)
        return list(predictor.parameters()) if predictor is not None else []

    def param_groups(self, lr: float, weight_decay: float | None = None) -> list[dict]:
        """Optimizer groups: weight decay, LARS adaptation and fixed lr where the original sets them.

        Each group has `params`, `lr`, `weight_decay`, `fixed_lr` (not scheduled) and `lars_adapt`.
        """
        c = self.config
        wd = c.weight_decay if weight_decay is None else weight_decay
        fixed = {id(p) for p in self.predictor_parameters()} if c.fix_pred_lr else set()
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for p in self.parameters():
            if p.requires_grad:
                excluded = c.wd_exclude_norm_bias and p.ndim <= 1
                groups.setdefault((excluded, id(p) in fixed), []).append(p)
        return [{"params": params, "lr": lr, "weight_decay": 0.0 if excluded else wd, "fixed_lr": fixed_lr,
                 "lars_adapt": not excluded}
                for (excluded, fixed_lr), params in sorted(groups.items())]

    def channels_last(self) -> SSLMethod:
        """Convolutional encoders to channels_last (inputs should follow: `x.contiguous(memory_format=...)`)."""
        for module in self.children():
            channels_last(module)
        return self


@torch.no_grad()
def swap_slots(x1: Tensor, x2: Tensor, swap: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, exchange x1 and x2 where `swap` [B] is true."""
    mask = swap.view(-1, *([1] * (x1.dim() - 1)))
    return torch.where(mask, x2, x1), torch.where(mask, x1, x2)
