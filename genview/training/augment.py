"""The view augmentations of each SSL method (torchvision v2, uint8 in and out), as typed specs.

A method's `CropSpec` says what the data pipeline must produce for one sample: the original's global
view t(X_i), the generated view's global view t⁺(X_i⁺) (Eq. 6) and, for multi-crop methods (SwAV),
`local_count` small crops of the original. `transforms_for(spec)` turns it into torchvision transforms.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torchvision.transforms import v2

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ViewAugment(BaseModel):
    """One view's augmentation: random resized crop, flip, colour jitter, grayscale, blur, solarize."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scale: tuple[float, float] = (0.08, 1.0)
    jitter: tuple[float, float, float, float] = Field((0.4, 0.4, 0.4, 0.1),
                                                      description="brightness, contrast, saturation, hue")
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.0


class CropSpec(BaseModel):
    """What the data pipeline produces per sample: two global views (t, t⁺) and optional local crops."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = 224
    t: ViewAugment = ViewAugment()
    t_plus: ViewAugment = ViewAugment()
    local_count: int = 0
    local_size: int = 96
    local: ViewAugment = ViewAugment(scale=(0.05, 0.14))

    @property
    def crops(self) -> int:
        """Crops per sample: the two global views plus the local ones."""
        return 2 + self.local_count


class ViewTransforms(NamedTuple):
    """t for the original, t⁺ for the generated view, and the local-crop transform (None without local crops)."""

    t: v2.Compose
    t_plus: v2.Compose
    local: v2.Compose | None


def view_transform(size: int, aug: ViewAugment) -> v2.Compose:
    """Random resized crop, flip, colour jitter, grayscale, blur, solarize: uint8 CHW → uint8 CHW."""
    kernel = max(3, (size // 10) | 1)  # odd, about 10% of the side (23 at 224)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=aug.scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(*aug.jitter)], p=aug.jitter_p),
        v2.RandomGrayscale(p=aug.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=aug.blur_p),
        v2.RandomSolarize(threshold=128, p=aug.solarize_p),
    ])


def transforms_for(spec: CropSpec) -> ViewTransforms:
    """The transforms a `CropSpec` asks for."""
    local = view_transform(spec.local_size, spec.local) if spec.local_count else None
    return ViewTransforms(view_transform(spec.size, spec.t), view_transform(spec.size, spec.t_plus), local)


def eval_transform(size: int) -> v2.Compose:
    """Resize the shorter side to size·8/7 and centre-crop (kNN monitor and linear probe)."""
    return v2.Compose([v2.Resize(int(size * 8 / 7), antialias=True), v2.CenterCrop(size)])


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] → float, ImageNet mean/std."""
    mean = torch.tensor(MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=batch.device).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std
