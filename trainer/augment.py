"""The view augmentations t and t⁺ of each method (torchvision v2, uint8 in and out), as the official configs."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

# (crop scale min, blur p for t, blur p for t⁺, solarize p for t⁺): asymmetric for MoCo v3 and BYOL.
RECIPES = {
    "mocov2": (0.2, 0.5, 0.5, 0.0),
    "mocov3": (0.08, 1.0, 0.1, 0.2),
    "byol": (0.08, 1.0, 0.1, 0.2),
    "simsiam": (0.2, 0.5, 0.5, 0.0),
    "swav": (0.14, 0.5, 0.5, 0.0),
    "simclr": (0.08, 0.5, 0.5, 0.0),
}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def view_transform(size: int, scale_min: float, blur_p: float, solarize_p: float) -> v2.Compose:
    """Random resized crop, flip, colour jitter, grayscale, blur, solarize: uint8 CHW → uint8 CHW."""
    kernel = max(3, (size // 10) | 1)  # odd, about 10% of the side (23 at 224)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p),
        v2.RandomSolarize(threshold=128, p=solarize_p),
    ])


def pair_transforms(method: str, size: int) -> tuple[v2.Compose, v2.Compose]:
    """(t for the original, t⁺ for the generated view) of a method (Eq. 6)."""
    scale_min, blur1, blur2, solarize2 = RECIPES[method]
    return view_transform(size, scale_min, blur1, 0.0), view_transform(size, scale_min, blur2, solarize2)


def eval_transform(size: int) -> v2.Compose:
    """Resize the shorter side to size·8/7 and centre-crop (kNN monitor and linear probe)."""
    return v2.Compose([v2.Resize(int(size * 8 / 7), antialias=True), v2.CenterCrop(size)])


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] → float, ImageNet mean/std."""
    mean = torch.tensor(MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=batch.device).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std
