"""Export a run's backbone alone for downstream libraries: torchvision, timm, detectron2, safetensors.

ResNets keep torchvision's key names, which timm's ResNets share: the state_dict loads with strict=True into
`torchvision.models.resnet50()` once its `fc` is `nn.Identity()`, and into
`timm.create_model("resnet50", pretrained=False, num_classes=0)`. ViTs are timm models already (timm names).
detectron2 gets the key conversion of MoCo's detection transfer (`stem.conv1`, `res2.0.conv1.norm`, …).

A ResNet with the small-image stem (3×3 stride 1, no max-pool) keeps the same keys; torchvision and timm
load it strictly once the stock model gets the same stem (`SMALL_STEM_RECIPE`, printed by `genview export`).
detectron2's BasicStem (7×7 stride 2 + max-pool) cannot hold it, and torchvision, timm and detectron2 cannot
build a narrower ResNet (base width ≠ 64): those exports are refused; safetensors records stem and width.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that need it: `genview export --help` stays fast
    import torch

    from trainer.eval.backbone import LoadedBackbone

FORMATS = ("torchvision", "timm", "detectron2", "safetensors")
DETECTRON2_ARCHS = ("resnet18", "resnet50")
SMALL_STEM_RECIPE = ("small-image stem: before load_state_dict, set model.conv1 = torch.nn.Conv2d(3, "
                     "model.conv1.out_channels, 3, 1, 1, bias=False) and model.maxpool = torch.nn.Identity()")


def check_format(loaded: LoadedBackbone, fmt: str) -> None:
    """Exit with the reason when `fmt`'s stock model cannot be given this backbone."""
    from trainer.backbones import RESNET_WIDTH

    if fmt == "safetensors":
        return
    if loaded.width != RESNET_WIDTH:
        raise SystemExit(f"{fmt} builds ResNets of base width {RESNET_WIDTH} only, this backbone has width "
                            f"{loaded.width}; export it as safetensors (config.json records the width)")
    if fmt == "detectron2" and loaded.arch not in DETECTRON2_ARCHS:
        raise SystemExit(f"detectron2 export supports {DETECTRON2_ARCHS}, not {loaded.arch}")
    if fmt == "detectron2" and loaded.stem != "imagenet":
        raise SystemExit("detectron2's BasicStem is 7×7 stride 2 with a max-pool and cannot hold the small-image "
                            "stem (3×3 stride 1, no max-pool); export it as torchvision, timm or safetensors")


def timm_name(loaded: LoadedBackbone) -> str:
    """The `timm.create_model` name of the architecture."""
    return f"{loaded.arch}_patch16_224" if loaded.arch.startswith("vit") else loaded.arch


def backbone_state(loaded: LoadedBackbone) -> dict[str, torch.Tensor]:
    """The backbone's weights and buffers, contiguous, on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in loaded.net.state_dict().items()}


def detectron2_key(name: str) -> str:
    """torchvision ResNet key → detectron2 key (as MoCo's convert-pretrain-to-detectron2)."""
    if not name.startswith("layer"):
        name = "stem." + name
    name = re.sub(r"layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", name)
    name = re.sub(r"bn(\d)", r"conv\1.norm", name)
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def detectron2_model(state: dict[str, torch.Tensor]) -> dict:
    """The pickle detectron2 reads: numpy weights under detectron2 names, matched by its heuristics."""
    weights = {detectron2_key(k): v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return {"model": weights, "__author__": "GenView", "matching_heuristics": True}


def model_config(loaded: LoadedBackbone) -> dict:
    """The config.json next to safetensors weights."""
    from genview.training.augment import MEAN, STD

    return {"arch": loaded.arch, "stem": loaded.stem, "width": loaded.width, "timm_name": timm_name(loaded),
            "timm_kwargs": loaded.vit_options,
            "method": loaded.method, "epochs": loaded.epochs, "image_size": loaded.image_size,
            "source_checkpoint": loaded.checkpoint, "mean": list(MEAN), "std": list(STD)}


def export(loaded: LoadedBackbone, fmt: str, out: Path) -> list[Path]:
    """Write the backbone in `fmt` to `out` (a file; a folder for safetensors) and return the files written.

    Every file is written through open(), so all formats get the same mode (0666 less the umask)."""
    import torch
    from safetensors.torch import save

    check_format(loaded, fmt)
    state = backbone_state(loaded)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("torchvision", "timm"):
        torch.save(state, out)
        return [out]
    if fmt == "detectron2":
        with open(out, "wb") as f:
            pickle.dump(detectron2_model(state), f)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "arch": loaded.arch, "stem": loaded.stem, "width": str(loaded.width)}
    (out / "model.safetensors").write_bytes(save(state, metadata=metadata))
    (out / "config.json").write_text(json.dumps(model_config(loaded), indent=2) + "\n")
    return [out / "model.safetensors", out / "config.json"]
