"""Quality score of a positive pair (GenView Eq. 10–13).

Every function takes batched tensors, computes in float32 whatever the input dtype, and
does no I/O. Maps are ``[B, H, W]``, feature maps ``[B, H, W, C]``, per-pair values ``[B]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def foreground_map(projections: Tensor) -> Tensor:
    """Foreground map M^f: PCA projections min-max normalised per image to [0, 1].

    A constant map (max == min) carries no foreground evidence and becomes all 0 (background all 1),
    as the official code's (p - min) / (max - min + 1e-7) gives, instead of NaN.
    """
    p = projections.float()
    lo = p.amin(dim=(-2, -1), keepdim=True)
    span = p.amax(dim=(-2, -1), keepdim=True) - lo
    return (p - lo) / torch.where(span == 0, torch.ones_like(span), span)


def background_map(fg_map: Tensor) -> Tensor:
    """Background map M^b = 1 - M^f."""
    return 1.0 - fg_map.float()


def normalise_map(m: Tensor) -> Tensor:
    """Map divided by its sum over (H, W) so it sums to 1; an all-zero map stays 0 (the official code's
    m / (sum + 1e-7)): its aggregated feature is the zero vector, whose cosine with anything is 0."""
    m = m.float()
    total = m.sum(dim=(-2, -1), keepdim=True)
    return m / torch.where(total == 0, torch.ones_like(total), total)


def aggregate(features: Tensor, weights: Tensor) -> Tensor:
    """Foreground/background aggregation z = Σ_hw M_hw F_hw (Eq. 10)."""
    return torch.einsum("bhwc,bhw->bc", features.float(), weights.float())


def pair_similarity(z: Tensor, z_plus: Tensor) -> Tensor:
    """Similarity of a pair's aggregated features s = cos(z, z^+) per row (Eq. 11)."""
    return F.cosine_similarity(z.float(), z_plus.float(), dim=-1)


def quality_score(s_f: Tensor, s_b: Tensor) -> Tensor:
    """Pair quality q = s^f - s^b (Eq. 12)."""
    return s_f.float() - s_b.float()


def quality_weights(q: Tensor, gamma: float = 1.0) -> Tensor:
    """Loss weights w = n · softmax(γ q) over the batch (Eq. 13 times n, mean 1), detached.

    A pair whose q is not finite (NaN, ±inf) gets weight 0 and the finite pairs share the n (the loss keeps
    its scale); a batch without any finite q gets NaN weights, so its loss is non-finite and the trainer's
    non-finite guard skips the step.
    """
    q = q.detach().float()
    logits = torch.where(torch.isfinite(q), gamma * q, torch.full_like(q, -torch.inf))
    return q.shape[0] * torch.softmax(logits, dim=0)


@dataclass(frozen=True)
class PairQuality:
    """Per-pair foreground similarity s_f, background similarity s_b and quality q, each [B]."""

    s_f: Tensor
    s_b: Tensor
    q: Tensor


def _fg_bg_features(features: Tensor, projections: Tensor) -> tuple[Tensor, Tensor]:
    """Foreground and background features z^f, z^b of each image from its own maps (Eq. 10)."""
    fg = foreground_map(projections)
    z_f = aggregate(features, normalise_map(fg))
    z_b = aggregate(features, normalise_map(background_map(fg)))
    return z_f, z_b


def score_pairs(
    features: Tensor, features_plus: Tensor, projections: Tensor, projections_plus: Tensor
) -> PairQuality:
    """Quality of each pair (original i, generated i) from feature maps and PCA projections (Eq. 10–12)."""
    if features.shape != features_plus.shape:
        raise ValueError(f"feature shapes differ: {tuple(features.shape)} vs {tuple(features_plus.shape)}")
    if projections.shape != features.shape[:-1] or projections_plus.shape != features.shape[:-1]:
        raise ValueError(
            f"projections {tuple(projections.shape)} / {tuple(projections_plus.shape)} "
            f"do not match feature maps {tuple(features.shape[:-1])}"
        )
    z_f, z_b = _fg_bg_features(features, projections)
    z_f_plus, z_b_plus = _fg_bg_features(features_plus, projections_plus)
    s_f = pair_similarity(z_f, z_f_plus)
    s_b = pair_similarity(z_b, z_b_plus)
    return PairQuality(s_f=s_f, s_b=s_b, q=quality_score(s_f, s_b))
