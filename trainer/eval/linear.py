"""Linear probing: a linear classifier on the frozen backbone (BN in eval mode), as MoCo / the GenView paper.

SGD with momentum 0.9, no weight decay, cosine schedule, lr = base · batch / 256, 90 epochs, RandomResizedCrop +
flip for training and centre crops for validation. Paper (Table 1): lr 0.4 at batch 1024 (ResNet), 12 for ViTs;
`--optimizer lars` gives MoCo v3's / SimSiam's LARS variant.
"""

from __future__ import annotations

import argparse
import time

import torch
from timm.optim import Lars

from trainer import dist
from trainer.eval.backbone import load_backbone
from trainer.eval.classify import Classifier, accuracy, feature_width, fit
from trainer.eval.data import train_and_val
from trainer.eval.options import LINEAR_BASE_LR
from trainer.eval.results import EvalResult, result, write_result


def head_optimizer(head: torch.nn.Linear, name: str, lr: float) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, no weight decay), or LARS adapting the weight (not the bias) as MoCo v3."""
    if name == "lars":
        return Lars([{"params": [head.weight], "always_adapt": True}, {"params": [head.bias]}], lr=lr, momentum=0.9)
    return torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)


def run(args: argparse.Namespace) -> EvalResult:
    start = time.perf_counter()
    device = dist.setup(args.device)
    torch.manual_seed(args.seed)
    loaded = load_backbone(args.checkpoint, args.arch, args.image_size, args.stem)
    train, val = train_and_val(args.train, args.val, loaded.image_size, augment=True)
    net = loaded.net.to(device)
    model = Classifier(net, feature_width(net, loaded.image_size, device), len(train.images.classes),
                       frozen=True).to(device)
    family = "vit" if loaded.arch.startswith("vit") else "resnet"
    base_lr = args.lr if args.lr is not None else LINEAR_BASE_LR[family]
    optimizer = head_optimizer(model.head, args.optimizer, base_lr * args.batch_size / 256)
    fit(model, optimizer, train, args.epochs, args.batch_size, device, args.workers, args.seed)
    scores = accuracy(model, val, device, args.batch_size, args.workers)
    config = {"epochs": args.epochs, "batch_size": args.batch_size, "base_lr": base_lr, "optimizer": args.optimizer,
              "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine", "image_size": loaded.image_size,
              "world_size": dist.world_size(), "seed": args.seed}
    res = result("linear", loaded, config, top1=scores["top1"], top5=scores["top5"],
                 train_images=len(train), val_images=len(val), seconds=time.perf_counter() - start)
    write_result(res, args.out)
    return res
