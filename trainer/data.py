"""Training data: image lists with optional class labels, and the GenView pair dataset (Eq. 6)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from genview.image_files import list_images, read_bytes
from genview.images import load_rgb
from trainer.views import ViewCache


@dataclass
class ImageSet:
    """Image paths and, when the images sit in class folders, integer labels."""

    paths: list[str]
    labels: list[int] | None
    classes: list[str]


def image_set(source: str) -> ImageSet:
    """List a folder/URL/file list; `root/<class>/…/img` with two or more classes gives labels."""
    paths = list_images(source)
    if not paths:
        raise ValueError(f"no images (.png/.jpg/.jpeg/.webp) in {source}")
    root = source.rstrip("/")
    parents = [p[len(root):].lstrip("/").split("/")[0] if p.startswith(root) and "/" in p[len(root) + 1:] else None
               for p in paths]
    classes = sorted({c for c in parents if c is not None})
    if len(classes) < 2 or None in parents:
        return ImageSet(paths, None, [])
    index = {c: i for i, c in enumerate(classes)}
    return ImageSet(paths, [index[c] for c in parents], classes)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A per-(run, epoch, image) seed, independent of worker count and order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()[:8], "little") >> 1


def decode(data: bytes, max_pixels: int = 40_000_000) -> torch.Tensor:
    """Image bytes → upright RGB uint8 [3, H, W]."""
    return TF.pil_to_tensor(load_rgb(data, max_pixels))


class PairDataset(Dataset):
    """(t(X_i), t⁺(X_i⁺ or X_i), i, generated?, fell back?) — the generated view with probability α (Eq. 6)."""

    def __init__(self, paths: list[str], t, t_plus, views: ViewCache | None, alpha: float = 1.0, seed: int = 0):
        self.paths, self.t, self.t_plus, self.views, self.alpha, self.seed = paths, t, t_plus, views, alpha, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        original = decode(read_bytes(self.paths[index]))
        rng = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        want_generated = self.views is not None and float(torch.rand((), generator=rng)) < self.alpha
        view, fell_back = original, False
        if want_generated:
            data = self.views.wait(index)
            if data is None:
                fell_back = True
            else:
                view = decode(data)
        torch.manual_seed(sample_seed(self.seed + 1, self.epoch, index))  # augmentations, per sample
        return self.t(original), self.t_plus(view), index, want_generated and not fell_back, fell_back


class EvalDataset(Dataset):
    """Centre-cropped originals with labels (kNN monitor, linear probe)."""

    def __init__(self, images: ImageSet, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images.paths)

    def __getitem__(self, index: int):
        return self.transform(decode(read_bytes(self.images.paths[index]))), self.images.labels[index]

