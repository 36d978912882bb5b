"""GenView: generative, quality-aware views for self-supervised learning (ECCV 2024).

The public API for your own training loop. Names are stable; each is imported on first use, so
`import genview` loads neither torch nor the services' stack (FastAPI, Redis, S3)::

    from genview import (PairDataset, crops_for, CropSpec, ServiceViewSource, ViewCache, ViewPrefetcher,
                         parse_noise_policy, QualityScorer, to_pairs, quality_weights, weighted_loss, nt_xent)

    source = ServiceViewSource("http://localhost:8000", parse_noise_policy("auto"), steps=20, size=512, seed=0)
    source.check()                                            # the generator is ready; keys its views
    cache = ViewCache("views-cache")
    prefetch = ViewPrefetcher(source, paths, cache, lookahead=1024)
    prefetch.start_epoch(range(len(paths)))                   # views are fetched ahead of training
    data = PairDataset(paths, crops_for(CropSpec(size=224)), source, cache)   # Eq. 6
    scorer = QualityScorer.service("http://localhost:8000")
    for (x1, x2), index, generated, fell_back in DataLoader(data, batch_size=256):
        w = quality_weights(scorer.q(to_pairs(x1, x2)))       # Eq. 12-13, mean 1
        loss = weighted_loss(nt_xent(model(x1), model(x2), 0.1), w)   # Eq. 14

See examples/ (a plain loop, a Lightning module, lightly's SimCLR) and README "Use GenView in your own
training loop".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # pairs (Eq. 6) and where the generated views come from
    "PairDataset": "genview.training.pairs",
    "Crop": "genview.training.pairs",
    "crops_for": "genview.training.pairs",
    "CropSpec": "genview.training.augment",
    "normalise": "genview.training.augment",
    "ServiceViewSource": "genview.training.views",
    "ManifestViewSource": "genview.training.views",
    "ViewCache": "genview.training.views",
    "ViewPrefetcher": "genview.training.views",
    "parse_noise_policy": "genview.method.noise",
    # quality weights (Eq. 10-13)
    "QualityScorer": "genview.training.quality",
    "to_pairs": "genview.training.quality",
    "quality_weights": "genview.method.quality",
    # per-sample losses and the weighted loss (Eq. 2-4, 14)
    "weighted_loss": "genview.method.losses",
    "info_nce": "genview.method.losses",
    "nt_xent": "genview.method.losses",
    "negative_cosine": "genview.method.losses",
    "byol_loss": "genview.method.losses",
    "swav_loss": "genview.method.losses",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from genview.method.losses import byol_loss, info_nce, negative_cosine, nt_xent, swav_loss, weighted_loss
    from genview.method.noise import parse_noise_policy
    from genview.method.quality import quality_weights
    from genview.training.augment import CropSpec, normalise
    from genview.training.pairs import Crop, PairDataset, crops_for
    from genview.training.quality import QualityScorer, to_pairs
    from genview.training.views import ManifestViewSource, ServiceViewSource, ViewCache, ViewPrefetcher


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from genview.settings import package_version

        return package_version()
    if name not in _EXPORTS:
        raise AttributeError(f"module 'genview' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
