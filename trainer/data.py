"""Training data: image lists with optional class labels (listed once, on rank 0), and labelled eval sets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed
from torch.utils.data import Dataset

from genview.image_files import read_bytes, relative_to, require_images, source_root
from genview.training.pairs import decode
from trainer import dist


@dataclass
class ImageSet:
    """Image paths and, when the images sit in class folders, integer labels."""

    paths: list[str]
    labels: list[int] | None
    classes: list[str]

    def subset(self, indices: list[int]) -> ImageSet:
        labels = None if self.labels is None else [self.labels[i] for i in indices]
        return ImageSet([self.paths[i] for i in indices], labels, self.classes)


def image_set(source: str) -> ImageSet:
    """List a folder/URL/file list; `root/<class>/…/img` with two or more classes gives labels."""
    paths, root = require_images(source), source_root(source)
    relative = [relative_to(root, p) for p in paths]
    parents = [r.split("/")[0] if r is not None and "/" in r else None for r in relative]
    classes = sorted({c for c in parents if c is not None})
    if len(classes) < 2 or None in parents:
        return ImageSet(paths, None, [])
    index = {c: i for i, c in enumerate(classes)}
    return ImageSet(paths, [index[c] for c in parents], classes)


def shared_image_set(source: str) -> ImageSet:
    """`image_set` listed by rank 0 only and broadcast to the other ranks (one listing of a large bucket)."""
    if not dist.is_distributed():
        return image_set(source)
    box: list[ImageSet | str | None] = [None]
    if dist.rank() == 0:
        try:
            box[0] = image_set(source)
        except ValueError as exc:  # every rank must fail the same way, not wait for a broadcast
            box[0] = str(exc)
    torch.distributed.broadcast_object_list(box, src=0)
    if isinstance(box[0], str):
        raise ValueError(box[0])
    return box[0]


def held_out(images: ImageSet, size: int, seed: int = 0) -> ImageSet:
    """A fixed random sample of at most `size` labelled images (the kNN monitor without `--val-data`)."""
    if len(images.paths) <= size:
        return images
    order = torch.randperm(len(images.paths), generator=torch.Generator().manual_seed(seed))[:size]
    return images.subset(sorted(order.tolist()))


class EvalDataset(Dataset):
    """Centre-cropped originals with labels (kNN monitor, linear probe)."""

    def __init__(self, images: ImageSet, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images.paths)

    def __getitem__(self, index: int):
        return self.transform(decode(read_bytes(self.images.paths[index]))), self.images.labels[index]
