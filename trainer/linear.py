"""Linear probe: `python trainer/linear.py --checkpoint RUN/checkpoint.pt --data TRAIN [--val VAL]`.

Trains a linear classifier on the frozen backbone's features (centre crops) and reports top-1 accuracy.
Without --val, a seeded 20% of the images is held out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from genview.models.device import resolve_device
from trainer.augment import eval_transform
from trainer.checkpoint import load_checkpoint
from trainer.data import EvalDataset, ImageSet, image_set
from trainer.evaluate import extract_features
from trainer.methods import build_method


def split(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A seeded train/validation split of a labelled image set."""
    order = torch.randperm(len(images.paths), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(len(order) * (1 - fraction))
    pick = lambda idx: ImageSet([images.paths[i] for i in idx], [images.labels[i] for i in idx], images.classes)  # noqa: E731
    return pick(order[:cut]), pick(order[cut:])


def train_linear(feats: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int, lr: float) -> torch.nn.Linear:
    """A linear classifier on fixed features (full-batch Adam with cross entropy)."""
    head = torch.nn.Linear(feats.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(feats), labels).backward()
        opt.step()
    return head


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", help="trainer checkpoint; omit for a randomly initialised backbone")
    p.add_argument("--arch", default=None, help="with no checkpoint: the architecture to initialise")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--data", required=True)
    p.add_argument("--val", help="validation images (class folders); default: hold out 20%% of --data")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.checkpoint:
        ckpt = load_checkpoint(Path(args.checkpoint))
        run = ckpt["args"]
        method = build_method(run["method"], run["arch"], run["image_size"])
        method.load_state_dict(ckpt["model"])
        size = run["image_size"]
    else:
        size = args.image_size or 224
        method = build_method("simclr", args.arch or "resnet18", size)
    train = image_set(args.data)
    if train.labels is None:
        raise SystemExit(f"{args.data} has no class folders: a linear probe needs labels")
    train, val = (train, image_set(args.val)) if args.val else split(train, 0.2, args.seed)
    device = resolve_device(args.device)
    net = method.online.net.to(device)
    f_train, y_train = extract_features(net, EvalDataset(train, eval_transform(size)), device)
    f_val, y_val = extract_features(net, EvalDataset(val, eval_transform(size)), device)
    head = train_linear(f_train, y_train, len(train.classes), args.epochs, args.lr)
    result = {"top1": float((head(f_val).argmax(1) == y_val).float().mean()), "train": len(y_train),
              "val": len(y_val), "checkpoint": args.checkpoint}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
