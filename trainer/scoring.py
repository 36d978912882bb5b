"""Quality weights for the trainer: from the scorer service, in-process, or none (Eq. 13–14)."""

from __future__ import annotations

import torch

from genview.basis import BasisCache
from genview.client import ScorerClient
from genview.method.quality import quality_weights
from genview.models.scorer_encoder import ScorerEncoder
from genview.scoring import PairScorer
from genview.settings import get_settings
from genview.store import ObjectStore
from trainer.dist import gather_cat, rank


def to_pairs(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Augmented uint8 batches [B, 3, H, W] ×2 → the scorer's pairs [B, 2, H, W, 3]."""
    return torch.stack([x1, x2], 1).permute(0, 1, 3, 4, 2).contiguous()


class QualitySource:
    """q for a batch of pairs: `ScorerClient` (service), `PairScorer` (local) or None (`--no-quality`)."""

    def __init__(self, scorer_url: str | None, local: bool, device: torch.device):
        self.client = ScorerClient(scorer_url) if scorer_url else None
        self.local = None
        if local:
            settings = get_settings()
            encoder = ScorerEncoder.load(settings.scorer_model, str(device), settings.model_cache)
            self.local = PairScorer(encoder)
            self.basis = BasisCache(ObjectStore.from_settings(settings), encoder.encoder_id).current()

    @property
    def enabled(self) -> bool:
        return self.client is not None or self.local is not None

    def q(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor | None:
        """Quality scores q [B] (Eq. 12) of the pairs (x1_i, x2_i), or None without quality."""
        if self.client is not None:
            return torch.tensor(self.client.score_batch(to_pairs(x1, x2))["q"])
        if self.local is not None:
            return self.local.score(to_pairs(x1, x2), self.basis).q
        return None


def batch_weights(q: torch.Tensor | None, batch: int, gamma: float, global_batch: bool) -> torch.Tensor:
    """w = n·softmax(γq) over this rank's batch, or over the global batch with `--global-weights` (Eq. 13)."""
    if q is None:
        return torch.ones(batch)
    if not global_batch:
        return quality_weights(q, gamma)
    everyone = gather_cat(q)
    return quality_weights(everyone, gamma)[rank() * batch:(rank() + 1) * batch]
