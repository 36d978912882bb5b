"""Command-line options of the evaluation protocols (torch-free: `genview eval <protocol> --help` stays fast)."""

from __future__ import annotations

import argparse

from trainer.defaults import (
    ARCHS,
    KNN_KS,
    KNN_TEMPERATURE,
    STEMS,
    default_loader_workers,
)

LINEAR_EPOCHS = 90
LINEAR_BASE_LR = {"resnet": 0.1, "vit": 3.0}  # per 256 images (paper: 0.4 and 12 at batch 1024)
SEMI_EPOCHS = 20
SEMI_LRS = {0.01: (1e-5, 1.0), 0.1: (0.02, 0.2)}  # fraction → (backbone lr, head lr), per 256 images


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


def add_linear(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--epochs", type=int, default=LINEAR_EPOCHS)
    p.add_argument("--lr", type=float, help="base lr per 256 images (default: 0.1 ResNet, 3.0 ViT)")
    p.add_argument("--optimizer", choices=["sgd", "lars"], default="sgd")


def add_knn(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--k", type=int, nargs="+", default=list(KNN_KS))
    p.add_argument("--temperature", type=float, default=KNN_TEMPERATURE)
    p.add_argument("--fp16-features", action="store_true", help="hold the features in fp16 (half the memory)")


def add_semi(p: argparse.ArgumentParser) -> None:
    add_common(p)
    subset = p.add_mutually_exclusive_group(required=True)
    subset.add_argument("--fraction", type=float, help="label fraction, e.g. 0.01 or 0.1 (class-balanced)")
    subset.add_argument("--subset-file", help="list file: one training image per line (path below --train, "
                        "or a bare file name as in the published ImageNet 1%%/10%% lists)")
    p.add_argument("--epochs", type=int, default=SEMI_EPOCHS)
    p.add_argument("--backbone-lr", type=float, help="per 256 images (default: by fraction, the paper's)")
    p.add_argument("--head-lr", type=float, help="per 256 images (default: by fraction, the paper's)")


PROTOCOL_OPTIONS = {"linear": add_linear, "knn": add_knn, "semi": add_semi}
