"""The GenView pair dataset (Eq. 6): the original through t, the generated view (with probability α) through t⁺."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from genview.image_files import read_bytes
from genview.images import MAX_PIXELS, load_rgb
from genview.training.augment import CropSpec, transforms_for
from genview.training.views import ViewCache, ViewSource

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Crop:
    """One crop a method trains on: its augmentation and the image it is cut from."""

    transform: Transform
    source: Literal["original", "generated"]


def crops_for(spec: CropSpec) -> list[Crop]:
    """A method's crop list: t(X_i), t⁺(X_i⁺), then `local_count` local crops of the original (SwAV multi-crop)."""
    t, t_plus, local = transforms_for(spec)
    return [Crop(t, "original"), Crop(t_plus, "generated"), *[Crop(local, "original")] * spec.local_count]


def positive_views(original: torch.Tensor, view: torch.Tensor, crops: Sequence[Crop]) -> list[torch.Tensor]:
    """Eq. 6 for a crop list: P_i = t(X_i) for crops of the original, P_i⁺ = t⁺(X_i⁺) for crops of the view."""
    return [c.transform(view if c.source == "generated" else original) for c in crops]


def uses_generated(alpha: float, u: float) -> bool:
    """Whether a sample takes its generated view: a uniform draw u ∈ [0, 1) below α (`--genview-prob`)."""
    return u < alpha


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A per-(run, epoch, image) seed, independent of worker count and order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()[:8], "little") >> 1


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Image bytes → upright RGB uint8 [3, H, W]."""
    return TF.pil_to_tensor(load_rgb(data, max_pixels))


class PairDataset(Dataset):
    """([crops…], index, generated?, fell back?) per image.

    `crops` is the method's crop list (two global crops, SwAV adds local ones); a crop whose source is
    "generated" is cut from the generated view X_i⁺ when the sample uses it (probability α), else from
    the original. Without a view source every crop comes from the original (plain SSL).
    """

    def __init__(self, paths: Sequence[str], crops: Sequence[Crop], source: ViewSource | None = None,
                 cache: ViewCache | None = None, alpha: float = 1.0, seed: int = 0):
        if (source is None) != (cache is None):
            raise ValueError("a view source needs a view cache (and the other way round)")
        self.paths, self.crops, self.source, self.cache = list(paths), list(crops), source, cache
        self.alpha, self.seed = alpha, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        data = read_bytes(self.paths[index])
        original = decode(data)
        rng = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        want = self.source is not None and uses_generated(self.alpha, float(torch.rand((), generator=rng)))
        view, fell_back = original, False
        if want:
            generated = self.cache.wait(self.source.key(self.paths[index], data))
            fell_back = generated is None
            view = original if fell_back else decode(generated)
        torch.manual_seed(sample_seed(self.seed + 1, self.epoch, index))  # augmentations, per sample
        return positive_views(original, view, self.crops), index, want and not fell_back, fell_back
