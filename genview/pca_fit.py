"""Fitting the PCA foreground basis of an encoder on a sample of the user's images (DESIGN §3, §6)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from tqdm import tqdm

from genview.image_files import read_bytes
from genview.images import load_rgb
from genview.method.pca import FG_FRACTION, PCABasis, PCAFitter


def sample_paths(paths: Sequence[str], num: int, seed: int = 0) -> list[str]:
    """A seeded random sample of `num` paths (all of them if there are fewer)."""
    paths = list(paths)
    return paths if len(paths) <= num else random.Random(seed).sample(paths, num)


def fit_basis(paths: Sequence[str], encode_tokens: Callable[[list[Image.Image]], torch.Tensor], dim: int,
              grid: int, fg_fraction: float = FG_FRACTION, batch_size: int = 16, max_pixels: int = 40_000_000,
              progress: bool = True) -> PCABasis:
    """Stream the images through `encode_tokens` (→ [B, grid², dim]) into one PCA fit."""
    fitter = PCAFitter(dim, grid)
    bar = tqdm(total=len(paths), unit="img", desc="fit-pca", disable=not progress)
    for i in range(0, len(paths), batch_size):
        images = [load_rgb(read_bytes(p), max_pixels) for p in paths[i:i + batch_size]]
        fitter.update(encode_tokens(images))
        bar.update(len(images))
    bar.close()
    return fitter.fit(fg_fraction)
