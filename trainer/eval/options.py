"""Command-line options shared by the evaluation protocols."""

from __future__ import annotations

import argparse

from trainer.backbones import ARCHS, STEMS
from trainer.data import default_loader_workers


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="trainer checkpoint (run folder's checkpoint.pt); omit for random init")
    p.add_argument("--arch", choices=ARCHS, default="resnet50", help="without --checkpoint: the architecture")
    p.add_argument("--stem", choices=STEMS, default="imagenet", help="without --checkpoint: the ResNet stem "
                   "(small: 3×3 stride 1, no max-pool, as for CIFAR / Tiny ImageNet)")
    p.add_argument("--image-size", type=int, default=224, help="without --checkpoint: the input size")
    p.add_argument("--train", required=True, help="labelled training images: root/<class>/…/image")
    p.add_argument("--val", required=True, help="labelled validation images with the same class folders")
    p.add_argument("--out", default=".", help="folder for eval_<protocol>.json")
    p.add_argument("--batch-size", type=int, default=256, help="global batch (split over torchrun ranks)")
    p.add_argument("--workers", type=int, default=default_loader_workers(8),
                   help="data loader processes per rank (default: 8, at most the CPU count)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
