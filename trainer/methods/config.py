"""`MethodConfig` (every option of an SSL method, stored in checkpoints) and the one recipe table."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genview.training.augment import CropSpec, ViewAugment
from trainer.backbones import RESNET_WIDTH, Stem, arch_family

Method = Literal["mocov2", "mocov3", "byol", "simsiam", "swav", "simclr"]
METHODS: tuple[str, ...] = Method.__args__


class MethodConfig(BaseModel):
    """An SSL method as it trains: network, loss, optimizer recipe and views. `build_method(config)` rebuilds it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method
    arch: str
    image_size: int = 224
    # optimisation (lr per 256 images, scaled linearly with the global batch)
    optimizer: Literal["sgd", "lars", "adamw"] = "sgd"
    base_lr: float = 0.05
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    final_lr_ratio: float = Field(0.0, description="cosine decays to base lr × this (SwAV 0.001)")
    wd_exclude_norm_bias: bool = Field(False, description="biases and norm parameters: no weight decay, no LARS")
    fix_pred_lr: bool = Field(False, description="predictor at the initial lr, not scheduled (SimSiam)")
    # network
    zero_init_residual: bool = False
    stem: Stem = Field("imagenet", description="ResNet stem: imagenet (7×7/2 + max-pool) or small (3×3/1, no pool)")
    width: int = Field(RESNET_WIDTH, description="ResNet base width (64: torchvision's; narrower for CPU benches)")
    sync_bn: bool = Field(True, description="BN statistics over all ranks (SyncBatchNorm); MoCo v2 shuffles instead")
    mocov3_vit: bool = Field(False, description="frozen random patch projection, fixed sin-cos positions")
    vit_heads: int | None = None
    dim: int = 128
    hidden: int = Field(0, description="projector hidden width; 0: the backbone's width")
    pred_hidden: int = 0
    # loss
    temperature: float = 0.1
    momentum: float = Field(0.0, description="EMA momentum of the target encoder at the start")
    queue_size: int = Field(65536, description="MoCo v2 negatives")
    genview_slot: Literal["key", "query", "random"] = Field(
        "random", description="MoCo v2: where the generated view goes (official GenView: random per sample)")
    ghost_batches: int = Field(8, description="MoCo v2 shuffle-BN on one process: key BN statistics per ghost batch")
    prototypes: int = 3000
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    swav_queue_length: int = 3840
    swav_queue_start_epoch: int = 15
    freeze_prototypes_iters: int = 5005
    crops: CropSpec = CropSpec()

    @property
    def family(self) -> str:
        return arch_family(self.arch)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what checkpoints store)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodConfig:
        return cls.model_validate(data)


def _jitter(strength: float) -> tuple[float, float, float, float]:
    """SimCLR's colour distortion of strength s: (0.8s, 0.8s, 0.8s, 0.2s) (SimCLR, SwAV use s = 1)."""
    return (0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)


def _pair(scale: float, jitter: tuple[float, ...], asymmetric: bool) -> CropSpec:
    """Two global views; BYOL's asymmetric pair (t: blur 1.0; t⁺: blur 0.1, solarize 0.2) or blur 0.5 on both."""
    t = ViewAugment(scale=(scale, 1.0), jitter=jitter, blur_p=1.0 if asymmetric else 0.5)
    t_plus = t.model_copy(update={"blur_p": 0.1, "solarize_p": 0.2}) if asymmetric else t
    return CropSpec(t=t, t_plus=t_plus)


MOCO_JITTER = (0.4, 0.4, 0.4, 0.1)  # MoCo v2, SimSiam
BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)  # BYOL, MoCo v3 ("not strengthened")
LARS_EXCLUDING = {"optimizer": "lars", "wd_exclude_norm_bias": True}

# (method, arch family, epoch budget or None) → options, from each original's code and configs:
# facebookresearch/moco (v2), moco-v3 (main_moco.py, CONFIG.md), simsiam, swav (bs256 scripts),
# google-research/simclr, deepmind byol. A budget entry applies to runs of at least that many epochs.
RECIPES: dict[tuple[str, str, int | None], dict[str, Any]] = {
    ("mocov2", "resnet", None): dict(optimizer="sgd", base_lr=0.03, weight_decay=1e-4, temperature=0.2, sync_bn=False,
                                     momentum=0.999, dim=128, crops=_pair(0.2, MOCO_JITTER, False)),
    ("mocov3", "resnet", None): dict(**LARS_EXCLUDING, base_lr=0.6, weight_decay=1e-6, warmup_epochs=10,
                                     temperature=1.0, momentum=0.99, dim=256, hidden=4096, pred_hidden=4096,
                                     zero_init_residual=True, crops=_pair(0.2, BYOL_JITTER, True)),
    ("mocov3", "resnet", 300): dict(base_lr=0.3),
    ("mocov3", "resnet", 1000): dict(base_lr=0.3, weight_decay=1.5e-6, momentum=0.996),
    ("mocov3", "vit", None): dict(optimizer="adamw", base_lr=1.5e-4, weight_decay=0.1, warmup_epochs=40,
                                  temperature=0.2, momentum=0.99, dim=256, hidden=4096, pred_hidden=4096,
                                  mocov3_vit=True, vit_heads=12, crops=_pair(0.08, BYOL_JITTER, True)),
    ("byol", "resnet", None): dict(**LARS_EXCLUDING, base_lr=0.2, weight_decay=1.5e-6, warmup_epochs=10,
                                   momentum=0.996, dim=256, hidden=4096, pred_hidden=4096, zero_init_residual=True,
                                   crops=_pair(0.08, BYOL_JITTER, True)),
    ("simsiam", "resnet", None): dict(optimizer="sgd", base_lr=0.05, weight_decay=1e-4, fix_pred_lr=True,
                                      zero_init_residual=True, dim=2048, hidden=2048, pred_hidden=512,
                                      crops=_pair(0.2, MOCO_JITTER, False)),
    ("swav", "resnet", None): dict(optimizer="lars", base_lr=0.6, weight_decay=1e-6, final_lr_ratio=0.001,
                                   temperature=0.1, dim=128, hidden=2048,
                                   crops=_pair(0.14, _jitter(1.0), False).model_copy(update={
                                       "local_count": 6, "local_size": 96,
                                       "local": ViewAugment(scale=(0.05, 0.14), jitter=_jitter(1.0))})),
    ("simclr", "resnet", None): dict(**LARS_EXCLUDING, base_lr=0.3, weight_decay=1e-6, warmup_epochs=10,
                                     temperature=0.1, dim=128, zero_init_residual=True,
                                     crops=_pair(0.08, _jitter(1.0), False)),
}
# ViT recipes other than MoCo v3's are not published by those methods: they share the ResNet one.
RECIPES.update({(m, "vit", None): RECIPES[(m, "resnet", None)] for m in METHODS if (m, "vit", None) not in RECIPES})


def recipe_options(method: str, arch: str, epochs: int | None = None) -> dict[str, Any]:
    """The table's options for a method, architecture family and epoch budget."""
    family = arch_family(arch)
    if (method, family, None) not in RECIPES:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    options = dict(RECIPES[(method, family, None)])
    budgets = sorted(b for (m, f, b) in RECIPES if m == method and f == family and b is not None)
    for budget in budgets:
        if epochs is not None and epochs >= budget:
            options.update(RECIPES[(method, family, budget)])
    return options


def method_config(method: str, arch: str, image_size: int = 224, epochs: int | None = None,
                  **overrides: Any) -> MethodConfig:
    """The recipe of (method, arch, epoch budget) with `overrides` on top.

    Crop sizes follow image_size: the global crops are image_size, the recipe's local crops keep their
    ratio to 224 (SwAV's 96 px become 14 px at 32 px).
    """
    options = recipe_options(method, arch, epochs)
    crops = options.pop("crops")
    crops = overrides.pop("crops", crops.model_copy(update={
        "size": image_size, "local_size": max(8, round(crops.local_size * image_size / 224))}))
    options.update(overrides)
    return MethodConfig(method=method, arch=arch, image_size=image_size, crops=crops, **options)


def recipe_for(method: str, arch: str, epochs: int | None = None) -> MethodConfig:
    """The default configuration of a method (its optimizer, lr, weight decay, warmup …) at 224 px."""
    return method_config(method, arch, 224, epochs)
