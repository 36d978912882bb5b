"""Backbones (torchvision ResNets, timm ViTs) with their classifier removed, and MLP heads."""

from __future__ import annotations

import timm
import torch
import torchvision
from torch import nn

ARCHS = ("resnet18", "resnet50", "vit_small", "vit_base")


def backbone(arch: str, image_size: int) -> tuple[nn.Module, int]:
    """(feature extractor giving [B, D], D) for an architecture name, randomly initialised."""
    if arch in ("resnet18", "resnet50"):
        net = getattr(torchvision.models, arch)(weights=None)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim
    if arch in ("vit_small", "vit_base"):
        net = timm.create_model(f"{arch}_patch16_224", pretrained=False, num_classes=0, img_size=image_size)
        return net, net.num_features
    raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")


def mlp(dims: list[int], last_bn: bool = False) -> nn.Sequential:
    """Linear–BN–ReLU blocks between the given widths; the last layer is linear (optionally + BN)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=last and not last_bn))
        if not last:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*layers)


class Encoder(nn.Sequential):
    """Backbone followed by a projection head."""

    def __init__(self, net: nn.Module, head: nn.Module):
        super().__init__(net, head)

    @property
    def net(self) -> nn.Module:
        return self[0]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target ← m·target + (1 − m)·online, parameters and buffers."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)
