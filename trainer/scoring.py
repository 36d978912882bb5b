"""Quality weights of this rank's batch: n·softmax(γq) over the rank's or the global batch (Eq. 13)."""

from __future__ import annotations

import torch

from genview.method.quality import quality_weights
from trainer.dist import gather_cat, rank


def batch_weights(q: torch.Tensor | None, batch: int, gamma: float, global_batch: bool) -> torch.Tensor:
    """w = n·softmax(γq) over this rank's batch, or over the global batch with `--global-weights` (Eq. 13)."""
    if q is None:
        return torch.ones(batch)
    if not global_batch:
        return quality_weights(q, gamma)
    everyone = gather_cat(q)
    return quality_weights(everyone, gamma)[rank() * batch:(rank() + 1) * batch]
