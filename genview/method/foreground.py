"""Foreground proportion p (Eq. 7) from patch tokens and a PCA basis (genview.method.pca), or per image."""

from __future__ import annotations

import torch
from torch import Tensor

from genview.method.defaults import FG_FRACTION
from genview.method.pca import PCABasis, per_image_projections


def foreground_mask(tokens: Tensor, basis: PCABasis) -> Tensor:
    """Foreground tokens: projection on the first component above the threshold a -> bool [B, T]."""
    return basis.project(tokens) > basis.threshold


def proportion_above(projections: Tensor, threshold: float | Tensor) -> Tensor:
    """Foreground proportion p_i (Eq. 7): fraction of image i's projections [B, T] that exceed a -> [B]."""
    return (projections > threshold).float().mean(-1)


def foreground_proportion(tokens: Tensor, basis: PCABasis) -> Tensor:
    """Foreground proportion p_i (Eq. 7) of tokens [B, T, D] with a fitted basis."""
    return proportion_above(basis.project(tokens), basis.threshold)


def proportion_above_quantile(projections: Tensor, fg_fraction: float = FG_FRACTION) -> Tensor:
    """Eq. 7 with each image's own threshold, its (1 − fg_fraction) quantile: projections [B, T] -> p [B]."""
    return proportion_above(projections, torch.quantile(projections, 1.0 - fg_fraction, dim=1, keepdim=True))


def foreground_proportion_per_image(tokens: Tensor, grid: int, fg_fraction: float = FG_FRACTION) -> Tensor:
    """Foreground proportion p_i (Eq. 7) with each image's own PCA and threshold (so p ≈ fg_fraction)."""
    return proportion_above_quantile(per_image_projections(tokens, grid), fg_fraction)
