"""What every example shares: GenView pairs of an image folder and their quality weights, from a running
`genview serve` (or the generator and scorer services), through the public `genview` API.

    loader, scorer = genview_loader(args)      # batches ((x1, x2), index, generated, fell_back), uint8
    w = quality_weights(scorer.q(to_pairs(x1, x2)))   # Eq. 13 weights, mean 1, for Eq. 14
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from genview import (CropSpec, PairDataset, QualityScorer, ServiceViewSource, ViewCache, ViewPrefetcher,
                     crops_for, parse_noise_policy)


def example_args(description: str) -> argparse.Namespace:
    """The examples' command line: where the images and services are, and how small to train."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--images", required=True, help="a folder of images (searched recursively)")
    parser.add_argument("--generator-url", default="http://localhost:8000")
    parser.add_argument("--scorer-url", default="http://localhost:8000", help="`genview serve` serves both")
    parser.add_argument("--noise-policy", default="auto", help="auto (fits a missing basis first), auto:per-image, …")
    parser.add_argument("--steps", type=int, default=20, help="diffusion steps per view")
    parser.add_argument("--view-size", type=int, default=512, help="side of the generated views")
    parser.add_argument("--image-size", type=int, default=224, help="side of the training crops")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=100)
    return parser.parse_args()


def image_paths(folder: str) -> list[str]:
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})


def genview_loader(args: argparse.Namespace) -> tuple[DataLoader, QualityScorer]:
    """A DataLoader of GenView pairs (Eq. 6) of `args.images`, and the scorer that weights them."""
    paths = image_paths(args.images)
    source = ServiceViewSource(args.generator_url, parse_noise_policy(args.noise_policy), steps=args.steps,
                               size=args.view_size, seed=0)
    source.check()
    if source.needs_basis:  # `auto` and no fitted basis yet: fit it on these images through the service
        source.fit_basis(paths, num=256)
        source.check()
    cache = ViewCache(tempfile.mkdtemp(prefix="genview-views-"))
    prefetch = ViewPrefetcher(source, paths, cache, lookahead=len(paths))
    prefetch.start_epoch(range(len(paths)))  # every epoch reuses the same views: fetch each once, ahead
    prefetch.advance(len(paths))
    pairs = PairDataset(paths, crops_for(CropSpec(size=args.image_size)), source, cache)
    loader = DataLoader(pairs, batch_size=args.batch_size, shuffle=True, drop_last=True)
    return loader, QualityScorer.service(args.scorer_url, fit_paths=paths, fit_num=256)  # fits a missing basis


def resnet18_backbone() -> nn.Module:
    """ResNet-18 giving [B, 512] features (random init)."""
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    return net


def log_epoch(epoch: int, loss: torch.Tensor, w: torch.Tensor) -> None:
    print(f"epoch {epoch} loss {loss.item():.4f} w_min {w.min().item():.3f} w_max {w.max().item():.3f}", flush=True)
