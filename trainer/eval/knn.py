"""Weighted kNN (k = 20, 200; τ = 0.07) of validation images against the training images' features."""

from __future__ import annotations

import argparse
import time

import torch

from trainer import dist
from trainer.eval.backbone import load_backbone
from trainer.eval.data import train_and_val
from trainer.eval.results import EvalResult, result, write_result
from trainer.evaluate import extract_features, knn_topk, shard


def run(args: argparse.Namespace) -> EvalResult:
    start = time.perf_counter()
    device = dist.setup(args.device)
    loaded = load_backbone(args.checkpoint, args.arch, args.image_size, args.stem)
    train, val = train_and_val(args.train, args.val, loaded.image_size, augment=False)
    net, dtype = loaded.net.to(device), torch.float16 if args.fp16_features else torch.float32
    per_rank = max(1, args.batch_size // dist.world_size())
    f_train, y_train = extract_features(net, train, device, per_rank, args.workers, dtype)
    f_val, y_val = extract_features(net, val, device, per_rank, args.workers, dtype)
    ks, mine = tuple(args.k), shard(len(val), dist.rank(), dist.world_size())  # each rank votes for its share
    local = knn_topk(f_train.to(device), y_train, f_val[mine.start:mine.stop].to(device),
                     y_val[mine.start:mine.stop], ks=ks, t=args.temperature)
    hits = dist.all_reduce_sum(torch.tensor([local[k] * len(mine) for k in ks], dtype=torch.float64, device=device))
    scores = {k: float(h) / len(val) for k, h in zip(ks, hits.cpu())}
    config = {"k": list(ks), "temperature": args.temperature, "image_size": loaded.image_size,
              "feature_dtype": str(dtype).removeprefix("torch."), "world_size": dist.world_size()}
    res = result("knn", loaded, config, top1=scores[ks[0]], knn={str(k): v for k, v in scores.items()},
                 train_images=len(train), val_images=len(val), seconds=time.perf_counter() - start)
    write_result(res, args.out)
    return res
