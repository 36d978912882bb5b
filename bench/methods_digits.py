"""A smoke test of the six SSL methods on scikit-learn digits: kNN top-1 of one encoder at random init and after.

Digits cannot tell learning from initialisation (raw pixels kNN 0.98, a random ResNet-18 0.95): the evidence of
learning is `bench/methods_synthetic.py` on the calibrated procedural shapes. This script only shows that every
method runs end to end on real images.

Trains each method in-process (no generated views, no quality weights) on the 1,797 digits at 32 px with the
method's recipe (global crops, optimizer, schedule) plus its SMALL_SCALE options, and reports leave-one-out kNN
top-1 (cosine, k=20, weighted) of the same backbone before and after, with the loss per epoch. SwAV's local
crops are left out (CPU cost). `--set` adds MethodConfig options on top, `--recipe` drops SMALL_SCALE.

    python -m bench.methods_digits --method simclr --epochs 1
    python -m bench.methods_digits --method mocov2 --epochs 15 --set momentum=0.9 --set queue_size=256
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from bench.report import emit
from bench.ssl_loop import Budget, ViewPairs, embed, mean_cosine
from bench.ssl_loop import train as train_ssl
from genview.training.augment import normalise
from trainer.methods import METHODS, build_method, method_config

# The recipes are tuned for ImageNet (5,005 steps per epoch at batch 256); digits gives 14 steps per epoch at
# batch 128. Per method: MethodConfig options for ~100 steps, why, and the epochs (5-11 min each measured on
# a 2-core VM shared with other jobs).
EMA = "EMA momentum is per step: m=0.9 gives a 10-step time constant, the recipe's would leave the target near init"
SMALL_SCALE: dict[str, dict] = {
    "mocov2": {"options": {"momentum": 0.9, "queue_size": 256}, "epochs": 8,
               "why": EMA + " (m=0.999: 1,000 steps); 256 keys = 2 steps, not 65,536 > the 1,797 images"},
    "mocov3": {"options": {"momentum": 0.9}, "epochs": 8, "why": EMA + " (m=0.99 rising to 1)"},
    "byol": {"options": {"momentum": 0.9}, "epochs": 8, "why": EMA + " (m=0.996 rising to 1)"},
    "simsiam": {"options": {}, "epochs": 8, "why": "recipe as is"},
    "swav": {"options": {"prototypes": 30, "freeze_prototypes_iters": 14, "swav_queue_length": 0}, "epochs": 8,
             "why": "30 prototypes for 10 classes, not 3,000; frozen one epoch (ImageNet: 5,005 steps, here 14); "
                    "no queue (the recipe starts it at epoch 15)"},
    "simclr": {"options": {}, "epochs": 8, "why": "recipe as is"},
}


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
    return round(float((votes.argmax(1) == labels).float().mean()), 4)


def train(method: str, options: dict, epochs: int, images: torch.Tensor, labels: torch.Tensor,
          args: argparse.Namespace) -> dict:
    """Train one method from seed 0; kNN top-1 of its backbone before and after, loss per epoch."""
    torch.manual_seed(0)
    config = method_config(method, args.arch, args.image_size, **options)
    model = build_method(config)
    before, cosine_before = knn_top1(model.backbone, images, labels), mean_cosine(embed(model.online, images))
    init = torch.nn.utils.parameters_to_vector(model.online.parameters()).detach().clone()
    history = train_ssl(model, ViewPairs(images, config), Budget(epochs, args.batch_size, args.lr),
                        on_epoch=lambda e, loss: print(f"{method} epoch {e}: loss {loss}", flush=True))
    after = knn_top1(model.backbone, images, labels)
    result = {"options": options, "epochs": epochs, "steps": history.steps, "lr": args.lr or config.base_lr,
              "minutes": history.minutes, "knn_top1_random_init": before, "knn_top1_after": after,
              "delta": round(after - before, 4), "loss_per_epoch": history.loss_per_epoch,
              "embedding_mean_cosine_random_init": cosine_before,
              "embedding_mean_cosine_after": mean_cosine(embed(model.online, images))}
    if hasattr(model, "target"):  # how far the EMA target followed the online encoder from their common start
        online = torch.nn.utils.parameters_to_vector(model.online.parameters()).detach()
        target = torch.nn.utils.parameters_to_vector(model.target.parameters()).detach()
        result["target_moved_over_online_moved"] = round(float((target - init).norm() / (online - init).norm()), 4)
        result["target_share_of_random_init"] = round(history.target_share_of_init, 4)
        result["target_knn_top1_after"] = knn_top1(model.target.net, images, labels)
    if config.method in ("mocov2", "swav"):  # the loss when logits (MoCo v2) or prototype scores (SwAV) are all equal
        result["loss_without_information"] = round(math.log(
            config.queue_size + 1 if config.method == "mocov2" else config.prototypes), 4)
    print(f"{method}: kNN top-1 {before} -> {after} in {history.minutes} min", flush=True)
    return result


def option(text: str) -> tuple[str, object]:
    key, value = text.split("=", 1)
    return key, json.loads(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="all", choices=("all", *METHODS))
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--epochs", type=int, help="default: SMALL_SCALE's per method")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--lr", type=float, help="base lr per 256 (default: the recipe's)")
    ap.add_argument("--set", type=option, action="append", default=[], help="MethodConfig option KEY=JSON")
    ap.add_argument("--recipe", action="store_true", help="the recipe's options only, without SMALL_SCALE")
    ap.add_argument("--out")
    args = ap.parse_args()
    images, labels = digits(args.image_size)
    runs = {}
    for method in METHODS if args.method == "all" else (args.method,):
        small = SMALL_SCALE[method]
        options = {**({} if args.recipe else small["options"]), **dict(args.set)}
        runs[method] = {"why": small["why"] if options == small["options"] else "options given on the command line",
                        **train(method, options, args.epochs or small["epochs"], images, labels, args)}
    emit({"data": f"scikit-learn digits, {len(images)} images at {args.image_size}px, two global crops",
          "arch": args.arch, "batch_size": args.batch_size,
          "knn": "leave-one-out, cosine, k=20, weighted, backbone features; random init = the same encoder "
                 "before training (seed 0)", "runs": runs}, args.out)


if __name__ == "__main__":
    main()
