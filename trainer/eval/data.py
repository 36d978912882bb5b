"""Labelled image folders (`root/<class>/…/image`) for the evaluation protocols, and their transforms."""

from __future__ import annotations

from dataclasses import dataclass

from torchvision.transforms import v2

from genview.image_files import relative_to, require_images, source_root
from genview.training.augment import eval_transform
from trainer.data import EvalDataset


@dataclass(frozen=True)
class Labelled:
    """Images with class indices (an `EvalDataset` reads them); `relative[i]` is the path below the root."""

    paths: list[str]
    relative: list[str]
    labels: list[int]
    classes: list[str]

    def subset(self, indices: list[int]) -> Labelled:
        pick = sorted(indices)
        return Labelled([self.paths[i] for i in pick], [self.relative[i] for i in pick],
                        [self.labels[i] for i in pick], self.classes)


def labelled_folder(root: str, classes: list[str] | None = None) -> Labelled:
    """The images of `root/<class>/…`, labelled by class folder; `classes` fixes the index of each class name
    (a validation folder takes the training folder's classes)."""
    paths, base = require_images(root), source_root(root)
    relative = [relative_to(base, p) or p for p in paths]
    if any("/" not in r for r in relative):
        raise SystemExit(f"{root}: expected images in class folders (root/<class>/image)")
    names = [r.split("/", 1)[0] for r in relative]
    classes = classes or sorted(set(names))
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise SystemExit(f"{root}: classes {unknown[:5]} are not among the training classes")
    index = {c: i for i, c in enumerate(classes)}
    return Labelled(paths, relative, [index[n] for n in names], classes)


def train_transform(size: int) -> v2.Compose:
    """RandomResizedCrop + horizontal flip (linear probe and fine-tuning, as MoCo/SimCLR/BYOL)."""
    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])


def train_and_val(train: str, val: str, size: int, augment: bool) -> tuple[EvalDataset, EvalDataset]:
    """Training images (augmented or centre-cropped) and centre-cropped validation images with the same classes."""
    train_set = labelled_folder(train)
    val_set = labelled_folder(val, train_set.classes)
    return (EvalDataset(train_set, train_transform(size) if augment else eval_transform(size)),
            EvalDataset(val_set, eval_transform(size)))
