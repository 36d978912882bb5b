"""Backbones (torchvision ResNets, timm ViTs) with their classifier removed, MLP heads, EMA, channels_last.

ResNets come with the ImageNet stem (7×7 stride 2, max-pool) or the small-image stem of the CIFAR / Tiny ImageNet
experiments (3×3 stride 1, no max-pool: `stem="small"`), and at torchvision's widths (64 base channels) or a
narrower base (`width`, for CPU benchmarks); the module names and state_dict keys stay torchvision's.
"""

from __future__ import annotations

import math
from typing import Literal

import timm
import torch
import torchvision
from torch import nn

from trainer.defaults import ARCHS, RESNET_WIDTH, STEMS, Stem

LastBN = Literal["none", "plain", "scale"]


def arch_family(arch: str) -> str:
    """'resnet' or 'vit': the recipe table and the heads differ per family."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    return "vit" if arch.startswith("vit") else "resnet"


class NarrowResNet(torchvision.models.ResNet):
    """torchvision's ResNet with every stage's width scaled by base/64 (same modules and key names)."""

    def __init__(self, arch: str, base: int, zero_init_residual: bool):
        self.base = base
        block, layers = {"resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
                         "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3])}[arch]
        super().__init__(block, layers, zero_init_residual=zero_init_residual)
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.fc = nn.Linear(self.inplanes, self.fc.out_features)  # inplanes: the last stage's output width
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        if planes == RESNET_WIDTH:  # the first stage: its input is the (narrow) stem
            self.inplanes = self.base
        return super()._make_layer(block, planes * self.base // RESNET_WIDTH, blocks, stride, dilate)


def small_stem(net: torchvision.models.ResNet) -> None:
    """The CIFAR / Tiny ImageNet stem in place: conv1 3×3 stride 1 (torchvision's init), no max-pool."""
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()


def resnet(arch: str, zero_init_residual: bool = False, stem: Stem = "imagenet",
           width: int = RESNET_WIDTH) -> tuple[nn.Module, int]:
    """A torchvision ResNet without its classifier and its feature width, with the given stem and base width."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose from {STEMS}")
    if width == RESNET_WIDTH:
        net = getattr(torchvision.models, arch)(weights=None, zero_init_residual=zero_init_residual)
    elif width > 0 and width % 8 == 0:
        net = NarrowResNet(arch, width, zero_init_residual)
    else:
        raise ValueError(f"ResNet base width must be a positive multiple of 8, not {width}")
    if stem == "small":
        small_stem(net)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def backbone(arch: str, image_size: int, zero_init_residual: bool = False, mocov3_vit: bool = False,
             vit_heads: int | None = None, stem: Stem = "imagenet", width: int = RESNET_WIDTH) -> tuple[nn.Module, int]:
    """(feature extractor giving [B, D], D) for an architecture name, randomly initialised.

    zero_init_residual: the last BN of each residual block starts at γ = 0 (MoCo v3, SimSiam, BYOL, SimCLR).
    mocov3_vit: MoCo v3's ViT: fixed 2-D sin-cos position embedding and a frozen random patch projection.
    stem, width: ResNets only (see `resnet`).
    """
    if arch_family(arch) == "resnet":
        return resnet(arch, zero_init_residual, stem, width)
    if stem != "imagenet" or width != RESNET_WIDTH:
        raise ValueError(f"stem and width apply to ResNets, not {arch}")
    extra = {"num_heads": vit_heads} if vit_heads else {}
    net = timm.create_model(f"{arch}_patch16_224", pretrained=False, num_classes=0, img_size=image_size, **extra)
    if mocov3_vit:
        freeze_patch_projection(net)
        fix_sincos_position(net)
    return net, net.num_features


def sincos_2d(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """2-D sin-cos position embedding [H·W, dim] (MoCo v3): sin, cos of the column, then of the row."""
    if dim % 4:
        raise ValueError(f"embedding width {dim} must be divisible by 4")
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                                torch.arange(width, dtype=torch.float64), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    out_w = cols.flatten()[:, None] * omega[None]
    out_h = rows.flatten()[:, None] * omega[None]
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1).float()


@torch.no_grad()
def fix_sincos_position(vit: nn.Module) -> None:
    """Replace a timm ViT's learned position embedding by the fixed 2-D sin-cos one (zeros for the class token)."""
    h, w = vit.patch_embed.grid_size
    table = sincos_2d(h, w, vit.pos_embed.shape[-1])
    prefix = vit.pos_embed.shape[1] - h * w
    vit.pos_embed.copy_(torch.cat([torch.zeros(prefix, table.shape[1]), table])[None])
    vit.pos_embed.requires_grad_(False)


@torch.no_grad()
def freeze_patch_projection(vit: nn.Module) -> None:
    """MoCo v3's stop-grad-conv1: a random patch projection (uniform, fan as a linear layer) that never trains."""
    proj = vit.patch_embed.proj
    bound = math.sqrt(6.0 / float(3 * proj.weight.shape[2] * proj.weight.shape[3] + proj.weight.shape[0]))
    nn.init.uniform_(proj.weight, -bound, bound)
    nn.init.zeros_(proj.bias)
    proj.requires_grad_(False)


def mlp(dims: list[int], bias: bool = True, hidden_bn: bool = True, last_bn: LastBN = "none",
        last_bias: bool | None = None) -> nn.Sequential:
    """Linear(–BN)–ReLU blocks between the given widths, then a last Linear, optionally followed by a BN.

    last_bn: "plain" is BN without affine parameters (MoCo v3, SimSiam); "scale" keeps the scale and no
    shift (SimCLR's `center=False`). last_bias defaults to `bias` (and to False when a BN follows).
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i < len(dims) - 2:
            layers.append(nn.Linear(a, b, bias=bias))
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)] if hidden_bn else [nn.ReLU(inplace=True)]
            continue
        layers.append(nn.Linear(a, b, bias=(bias and last_bn == "none") if last_bias is None else last_bias))
        if last_bn == "plain":
            layers.append(nn.BatchNorm1d(b, affine=False))
        elif last_bn == "scale":
            norm = nn.BatchNorm1d(b)
            norm.bias.requires_grad_(False)  # stays 0: scale only
            layers.append(norm)
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


def is_conv(module: nn.Module) -> bool:
    """Whether a network has 2-D convolutions that train (channels_last pays off)."""
    return any(isinstance(m, nn.Conv2d) and m.weight.requires_grad for m in module.modules())


def channels_last(module: nn.Module) -> nn.Module:
    """Convolutional networks in channels_last memory format (faster convolutions under autocast); others as they are.

    Feed such a network inputs in the same format: `x.contiguous(memory_format=torch.channels_last)`.
    """
    return module.to(memory_format=torch.channels_last) if is_conv(module) else module
