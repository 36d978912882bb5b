"""Why does an SSL method not learn on scikit-learn digits? A small in-process loop over any `MethodConfig` option.

Trains one method (no generated views, no quality weights) on the 1,797 digits at 32 px with the method's own
crops, optimizer and schedule, and reports kNN top-1 (leave-one-out, cosine, k=20, weighted) before and after,
with the loss and the InfoNCE floor ln(K+1) where it applies.

    python -m bench.methods_digits --method mocov2 --epochs 15 --set momentum=0.99 --set queue_size=256
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from bench.report import emit
from genview.training.augment import normalise, transforms_for
from trainer.methods import build_method, method_config
from trainer.optim import build_optimizer, build_schedule


def digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as uint8 RGB [N, 3, size, size] and labels."""
    data = load_digits()
    x = torch.from_numpy((data.images * 255 / 16).astype(np.uint8))[:, None].float()
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(data.target)


@torch.no_grad()
def knn_top1(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, k: int = 20, t: float = 0.07) -> float:
    """Leave-one-out weighted kNN top-1 on cosine similarity of the backbone's features."""
    net.eval()
    feats = F.normalize(torch.cat([net(normalise(b)) for b in images.split(256)]), dim=1)
    sim = feats @ feats.t()
    sim.fill_diagonal_(-2)
    top, idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(labels), 10).scatter_add_(1, labels[idx], (top / t).exp())
    net.train()
    return float((votes.argmax(1) == labels).float().mean())


def option(text: str) -> tuple[str, object]:
    key, value = text.split("=", 1)
    return key, json.loads(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", default="mocov2")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--lr", type=float, help="base lr per 256 (default: the recipe's)")
    ap.add_argument("--set", type=option, action="append", default=[], help="MethodConfig option KEY=JSON")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.manual_seed(0)
    images, labels = digits(args.image_size)
    config = method_config(args.method, args.arch, args.image_size, **dict(args.set))
    model = build_method(config)
    views = transforms_for(config.crops)
    steps = len(images) // args.batch_size
    optimizer = build_optimizer(model, config, args.lr, args.batch_size)
    schedule = build_schedule(optimizer, min(config.warmup_epochs, args.epochs / 10) * steps, args.epochs * steps,
                              config.final_lr_ratio)
    before = knn_top1(model.backbone, images, labels)
    init = torch.nn.utils.parameters_to_vector(model.online.parameters()).detach().clone()
    start, epoch_losses = time.perf_counter(), []
    for epoch in range(args.epochs):
        model.set_epoch(epoch)
        order, losses = torch.randperm(len(images)), []
        for s in range(steps):
            batch = images[order[s * args.batch_size:(s + 1) * args.batch_size]]
            crops = [normalise(torch.stack([t(img) for img in batch])) for t in (views.t, views.t_plus)]
            loss = model(crops).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            model.before_optimizer_step(epoch)
            optimizer.step()
            schedule.step()
            model.after_step((epoch * steps + s + 1) / (args.epochs * steps))
            losses.append(loss.item())
        epoch_losses.append(round(sum(losses) / len(losses), 4))
        print(f"epoch {epoch}: loss {epoch_losses[-1]} (first step {losses[0]:.4f}, last {losses[-1]:.4f})", flush=True)
    after = knn_top1(model.backbone, images, labels)
    result = {"data": f"scikit-learn digits, 1797 images at {args.image_size}px", "method": args.method,
              "arch": args.arch, "epochs": args.epochs, "batch_size": args.batch_size, "steps": steps * args.epochs,
              "options": dict(args.set), "lr": args.lr or config.base_lr,
              "minutes": round((time.perf_counter() - start) / 60, 2),
              "knn_top1_random_init": before, "knn_top1_after": after, "loss_per_epoch": epoch_losses}
    if hasattr(model, "target"):  # how far the EMA target followed the online encoder from their common start
        online = torch.nn.utils.parameters_to_vector(model.online.parameters()).detach()
        target = torch.nn.utils.parameters_to_vector(model.target.parameters()).detach()
        result["target_moved_over_online_moved"] = float((target - init).norm() / (online - init).norm())
        result["target_knn_top1_after"] = knn_top1(model.target.net, images, labels)
    if config.method == "mocov2":
        result["infonce_floor_ln_k_plus_1"] = round(math.log(config.queue_size + 1), 4)
    emit(result, args.out)


if __name__ == "__main__":
    main()
