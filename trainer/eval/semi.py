"""Semi-supervised fine-tuning on 1% / 10% of the labels (SimCLR, BYOL; GenView paper Table 2).

The whole network is fine-tuned on a class-balanced labelled subset (written out as a list file, or read from
one), with SGD + Nesterov momentum 0.9, no weight decay, a cosine schedule and a small backbone lr next to a
larger head lr. Paper: 20 epochs; 1%: head 1.0, backbone 1e-5; 10%: head 0.2, backbone 0.02.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genview.training.augment import eval_transform
from trainer import dist
from trainer.data import EvalDataset
from trainer.eval.backbone import load_backbone
from trainer.eval.classify import Classifier, accuracy, feature_width, fit
from trainer.eval.data import labelled_folder, train_transform
from trainer.eval.options import SEMI_LRS
from trainer.eval.results import EvalResult, result, write_result
from trainer.eval.subsets import balanced_subset, read_subset, write_subset


def fine_tune_optimizer(model: Classifier, backbone_lr: float, head_lr: float) -> torch.optim.Optimizer:
    """SGD, Nesterov momentum 0.9, no weight decay; one lr for the backbone, another for the head."""
    return torch.optim.SGD([{"params": model.backbone.parameters(), "lr": backbone_lr},
                            {"params": model.head.parameters(), "lr": head_lr}],
                           lr=head_lr, momentum=0.9, nesterov=True, weight_decay=0.0)


def run(args: argparse.Namespace) -> EvalResult:
    start = time.perf_counter()
    device = dist.setup(args.device)
    torch.manual_seed(args.seed)
    loaded = load_backbone(args.checkpoint, args.arch, args.image_size, args.stem)
    full = labelled_folder(args.train)
    chosen = read_subset(full, args.subset_file) if args.subset_file else balanced_subset(full, args.fraction,
                                                                                          args.seed)
    subset = full.subset(chosen)
    list_file = Path(args.out) / "semi_subset.txt"
    if dist.rank() == 0:
        write_subset(full, chosen, list_file)
    fraction = args.fraction if args.fraction is not None else len(chosen) / len(full.paths)
    default_bb, default_head = SEMI_LRS[min(SEMI_LRS, key=lambda f: abs(f - fraction))]
    backbone_lr = args.backbone_lr if args.backbone_lr is not None else default_bb
    head_lr = args.head_lr if args.head_lr is not None else default_head
    train = EvalDataset(subset, train_transform(loaded.image_size))
    val = EvalDataset(labelled_folder(args.val, full.classes), eval_transform(loaded.image_size))
    net = loaded.net.to(device)
    model = Classifier(net, feature_width(net, loaded.image_size, device), len(full.classes), frozen=False).to(device)
    scale = args.batch_size / 256
    fit(model, fine_tune_optimizer(model, backbone_lr * scale, head_lr * scale), train, args.epochs,
        args.batch_size, device, args.workers, args.seed)
    scores = accuracy(model, val, device, args.batch_size, args.workers)
    config = {"epochs": args.epochs, "batch_size": args.batch_size, "fraction": fraction,
              "subset_file": args.subset_file, "subset_written": str(list_file), "backbone_lr": backbone_lr,
              "head_lr": head_lr, "optimizer": "sgd-nesterov", "momentum": 0.9, "weight_decay": 0.0,
              "schedule": "cosine", "image_size": loaded.image_size, "world_size": dist.world_size(),
              "seed": args.seed}
    res = result("semi", loaded, config, top1=scores["top1"], top5=scores["top5"], train_images=len(train),
                 val_images=len(val), seconds=time.perf_counter() - start)
    write_result(res, args.out)
    return res
