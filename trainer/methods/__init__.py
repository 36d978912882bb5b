"""The SSL methods with per-sample losses (Eq. 2–4), so the quality weights can re-weight them (Eq. 14).

`build_method(MethodConfig)` → `SSLMethod`; `method_config(method, arch, image_size, epochs, **overrides)`
reads the one recipe table (`RECIPES`); checkpoints store `config.to_dict()`.
"""

from __future__ import annotations

from typing import Any

from trainer.methods.base import SSLMethod, cosine_momentum
from trainer.methods.config import METHODS, RECIPES, MethodConfig, method_config, recipe_for, recipe_options
from trainer.methods.contrastive import MoCoV2, MoCoV3, SimCLR
from trainer.methods.predictive import BYOL, SimSiam
from trainer.methods.swav import SwAV

CLASSES: dict[str, type[SSLMethod]] = {"mocov2": MoCoV2, "mocov3": MoCoV3, "byol": BYOL, "simsiam": SimSiam,
                                       "swav": SwAV, "simclr": SimCLR}


def build_method(config: MethodConfig | str, arch: str | None = None, image_size: int | None = None,
                 **overrides: Any) -> SSLMethod:
    """The method a config describes; `build_method(method, arch, image_size, **overrides)` still works."""
    if not isinstance(config, MethodConfig):
        config = method_config(config, arch or "resnet50", image_size or 224, **overrides)
    return CLASSES[config.method](config)


__all__ = ["CLASSES", "METHODS", "RECIPES", "MethodConfig", "SSLMethod", "build_method", "cosine_momentum",
           "method_config", "recipe_for", "recipe_options"]
