"""Quality scores q and weights w (Eq. 12–13) of the trainer's uint8 pairs: a scorer service or in-process."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from genview.basis import DEFAULT_OWNER, PER_IMAGE, BasisStore
from genview.client import ScorerClient
from genview.method.quality import PairQuality
from genview.pca_fit import fit_basis, sample_paths
from genview.store import ObjectStore
from genview.training.views import SourceNotReady, fit_service_basis, ready_check

if TYPE_CHECKING:  # the encoder stack (open_clip) loads only for --scorer local
    from genview.models.scorer_encoder import ScorerEncoder
    from genview.scoring import PairScorer

log = logging.getLogger(__name__)


def to_pairs(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Augmented uint8 batches [B, 3, H, W] ×2 → the scorer's pairs [B, 2, H, W, 3]."""
    return torch.stack([x1, x2], 1).permute(0, 1, 3, 4, 2).contiguous()


SERVICE_JPEG_QUALITY = 95  # crops go to the scorer service as JPEG: ~10× smaller than uint8, q changes by ~1e-2


class QualityScorer:
    """q [B] of (original crop, generated crop) pairs: `ScorerClient` (service) or `PairScorer` (local)."""

    def __init__(self, client: ScorerClient | None = None, local: PairScorer | None = None, basis=None):
        if (client is None) == (local is None):
            raise ValueError("QualityScorer needs exactly one of a scorer client or a local PairScorer")
        self.client, self.local, self.basis = client, local, basis

    @classmethod
    def service(cls, url: str, api_key: str | None = None, fit_paths: Sequence[str] | None = None,
                fit_num: int = 256, seed: int = 0) -> QualityScorer:
        """Score through the scorer service at `url` (checked with `/readyz`: SourceNotReady if not ready).

        Scores use the scorer's fitted global PCA basis, never a per-crop PCA unasked: when the service has none,
        it is fitted through the service on `fit_num` images sampled (`seed`) from `fit_paths` (uploaded with
        `POST /inputs`, then `POST /score/basis/fit`); without `fit_paths` that is a SourceNotReady."""
        client = ScorerClient(url, api_key=api_key)
        ready_check(client, "scorer", url)
        if client.basis().basis_id == PER_IMAGE:
            if fit_paths is None:
                raise SourceNotReady(f"scorer at {url} has no fitted PCA basis: fit one (`genview fit-pca --encoder "
                                     f"scorer`, POST /score/basis/fit, or pass fit_paths), or use --scorer local, "
                                     f"which fits it")
            fit_service_basis(client, "scorer", url, fit_paths, fit_num, seed)
        return cls(client=client)

    @classmethod
    def in_process(cls, encoder: ScorerEncoder, store: ObjectStore, fit_paths: Sequence[str], fit_num: int = 256,
                   fg_fraction: float | None = None, seed: int = 0) -> QualityScorer:
        """Score here with the encoder's stored basis; without one, fit it on a sample of the training images."""
        bases = BasisStore(store, encoder.encoder_id)
        basis = bases.current(DEFAULT_OWNER)
        if basis is None:
            sample = sample_paths(fit_paths, fit_num, seed)
            log.info("no scorer PCA basis for %s: fitting one on %d training images", encoder.encoder_id, len(sample))
            extra = {} if fg_fraction is None else {"fg_fraction": fg_fraction}
            basis = fit_basis(sample, encoder.tokens, encoder.dim, encoder.grid, progress=False, **extra)
            bases.save(basis, DEFAULT_OWNER, images=len(sample))
        from genview.scoring import PairScorer

        return cls(local=PairScorer(encoder), basis=basis)

    def scores(self, pairs: torch.Tensor) -> PairQuality:
        """s_f, s_b (Eq. 11) and q (Eq. 12), each [B], of uint8 pairs [B, 2, H, W, 3]."""
        if self.client is not None:
            result = self.client.score_batch(pairs, jpeg_quality=SERVICE_JPEG_QUALITY)
            return PairQuality(torch.tensor(result.s_f), torch.tensor(result.s_b), torch.tensor(result.q))
        return self.local.score(pairs, self.basis)

    def q(self, pairs: torch.Tensor) -> torch.Tensor:
        """Quality scores q [B] (Eq. 12) of uint8 pairs [B, 2, H, W, 3]."""
        return self.scores(pairs).q

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
