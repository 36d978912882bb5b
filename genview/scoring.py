"""In-process pair scoring (Eq. 10–13): used by the scorer worker and by the trainer's `--scorer local`."""

from __future__ import annotations

import torch

from genview.basis import BASIS_HINT, BasisRequired
from genview.method.pca import PCABasis, per_image_projections
from genview.method.quality import PairQuality, score_pairs
from genview.models.scorer_encoder import ScorerEncoder

class PairScorer:
    """Scores (original, view) pairs with a frozen encoder and the encoder's global PCA basis.

    The per-image PCA (each crop its own component, a different estimator from the paper's) is used
    only when asked for by name (`per_image=True`).
    """

    def __init__(self, encoder: ScorerEncoder, max_batch: int = 256):
        self.encoder, self.max_batch = encoder, max_batch

    def projections(self, features: torch.Tensor, basis: PCABasis | None) -> torch.Tensor:
        """Foreground projection of every feature-map position [B, h, w] (per-image PCA when basis is None)."""
        tokens = features.flatten(1, 2)
        proj = basis.project(tokens) if basis is not None else per_image_projections(tokens, self.encoder.grid)
        return proj.reshape(features.shape[:-1])

    @torch.no_grad()
    def score(self, pairs: torch.Tensor, basis: PCABasis | None, per_image: bool = False) -> PairQuality:
        """s_f, s_b, q of uint8 pairs [N, 2, H, W, 3] (originals and views encoded in shared forward passes)."""
        if basis is None and not per_image:
            raise BasisRequired(BASIS_HINT)
        parts = []
        for chunk in pairs.split(max(1, self.max_batch // 2)):
            features = self.encoder.features(chunk.flatten(0, 1)).unflatten(0, (chunk.shape[0], 2))
            proj = self.projections(features.flatten(0, 1), None if per_image else basis).unflatten(
                0, (chunk.shape[0], 2))
            parts.append(score_pairs(features[:, 0], features[:, 1], proj[:, 0], proj[:, 1]))
        return PairQuality(*(torch.cat([getattr(p, f) for p in parts]).cpu() for f in ("s_f", "s_b", "q")))
