"""Compatibility: the augmentations moved to `genview.training.augment`; a method's views are its `crop_spec`.

Remove once trainer/run.py, trainer/linear.py, trainer/evaluate.py and bench/ import the library module.
"""

from __future__ import annotations

from torchvision.transforms import v2

from genview.training.augment import eval_transform, normalise, transforms_for
from trainer.methods import method_config

__all__ = ["eval_transform", "normalise", "pair_transforms"]


def pair_transforms(method: str, size: int, arch: str = "resnet50") -> tuple[v2.Compose, v2.Compose]:
    """(t for the original, t⁺ for the generated view) of a method's recipe (Eq. 6)."""
    views = transforms_for(method_config(method, arch, size).crops)
    return views.t, views.t_plus
