"""The backbone of a trainer checkpoint (or a randomly initialised one), with what is known about its training."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from trainer.backbones import RESNET_WIDTH, Stem, backbone
from trainer.checkpoint import load_checkpoint

BACKBONE_PREFIX = "online.0."  # Encoder(net, head) is a Sequential: the backbone's keys in a method state_dict


@dataclass
class LoadedBackbone:
    """A backbone giving [B, D] features and its provenance."""

    net: nn.Module
    arch: str
    image_size: int
    method: str | None  # None: random initialisation
    epochs: int  # epochs trained
    checkpoint: str | None
    vit_options: dict  # timm keyword arguments that rebuild the same ViT (empty for ResNets)
    stem: Stem = "imagenet"  # ResNets: the ImageNet stem or the small-image one (3×3 stride 1, no max-pool)
    width: int = RESNET_WIDTH  # ResNets: the base width


def load_backbone(checkpoint: str | None, arch: str = "resnet50", image_size: int = 224,
                  stem: Stem = "imagenet") -> LoadedBackbone:
    """The checkpoint's backbone with its weights; without a checkpoint, `arch` (with `stem`) at random init.

    Checkpoints carrying `method_config` rebuild the method from it (`build_method(MethodConfig.from_dict(...))`)
    and take its `.backbone`; older ones carry the run's `args` and the backbone's keys under `online.0.`.
    """
    if checkpoint is None:
        return LoadedBackbone(backbone(arch, image_size, stem=stem)[0], arch, image_size, None, 0, None, {}, stem)
    ckpt = load_checkpoint(checkpoint)
    epochs = int(ckpt.get("epoch", -1)) + 1
    if "method_config" in ckpt:
        from trainer.methods import MethodConfig, build_method

        config = MethodConfig.from_dict(ckpt["method_config"])
        method = build_method(config)
        method.load_state_dict(ckpt["model"])
        vit = {"num_heads": config.vit_heads} if config.vit_heads else {}
        return LoadedBackbone(method.backbone, config.arch, config.image_size, config.method, epochs, checkpoint, vit,
                              config.stem, config.width)
    run = ckpt["args"]
    net, _ = backbone(run["arch"], run["image_size"])
    net.load_state_dict({k[len(BACKBONE_PREFIX):]: v for k, v in ckpt["model"].items()
                         if k.startswith(BACKBONE_PREFIX)})
    return LoadedBackbone(net, run["arch"], run["image_size"], run["method"], epochs, checkpoint, {})
