"""Frozen OpenCLIP image tower E of the quality score: the final feature map F (Eq. 10).

The real encoder is OpenCLIP `convnext_base_w` (`laion2b_s13b_b82k_augreg`) at 224², whose final
feature map is 7×7×1024. The `tiny` preset is an open_clip model config with timm's smallest ConvNeXt
and seeded random weights, written once to the model cache and loaded through the same
`open_clip.create_model` call as the real weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from genview.models.device import inference_dtype, resolve_device
from genview.models.errors import ModelLoadError
from genview.models.presets import SCORER_ARCHS, encoder_id, ensure_random_scorer

# Preset name → (open_clip model name, pretrained tag); tags download from the hub when there is network.
SCORER_PRESETS = {"convnext-base-w": ("convnext_base_w", "laion2b_s13b_b82k_augreg")}
# The real architecture with random weights, for benchmarks on machines without the weights.
RANDOM_SCORERS = {"convnext-base-w-random": "convnext_base_w"}
DEFAULT_SCORER = "convnext-base-w"
# Input size of the scorer (224², so ConvNeXt's stride-32 map is 7×7; open_clip's
# convnext_base_w config says 256, which is overridden: a ConvNeXt has no size-dependent weights).
SCORER_IMAGE_SIZE = 224

_NO_NETWORK_HINT = (
    "Without network access, set GENVIEW_SCORER_MODEL to a local open_clip checkpoint file of "
    f"{SCORER_PRESETS[DEFAULT_SCORER][0]} (e.g. open_clip_model.safetensors of the hub repo "
    "laion/CLIP-convnext_base_w-laion2B-s13B-b82K-augreg), to a folder holding open_clip_config.json and "
    "the weights (a copy of that repo), or use GENVIEW_SCORER_MODEL=tiny (random weights) to test."
)


def _register_config(config_file: Path) -> str:
    """Register an open_clip model config JSON (name = file stem) unless it is already registered."""
    name = config_file.stem
    if open_clip.get_model_config(name) != json.loads(config_file.read_text()):
        open_clip.add_model_config(config_file)
    return name


def resolve_scorer_source(name: str, cache: str | None = None) -> tuple[str, str | None]:
    """(open_clip model name, pretrained tag or checkpoint file) for a preset name, hub id, folder or file."""
    if name in SCORER_PRESETS:
        return SCORER_PRESETS[name]
    if name in RANDOM_SCORERS:
        return RANDOM_SCORERS[name], None
    if name in SCORER_ARCHS:
        folder = ensure_random_scorer(name, cache)
        return _register_config(folder / f"genview_scorer_{name}.json"), str(folder / "open_clip_model.safetensors")
    if name.startswith(("hf-hub:", "local-dir:")):
        return name, None
    path = Path(name).expanduser()
    if path.is_dir():
        return f"local-dir:{path}", None
    if path.is_file():
        return SCORER_PRESETS[DEFAULT_SCORER][0], str(path)
    raise ModelLoadError(
        f"unknown scorer model {name!r}: not a preset ({', '.join([*SCORER_PRESETS, *SCORER_ARCHS])}), "
        f"an hf-hub: id, a folder or a checkpoint file. {_NO_NETWORK_HINT}"
    )


class ScorerEncoder:
    """Frozen OpenCLIP image tower giving the final feature map F [B, h, w, C] (7×7×1024 for convnext_base_w at 224²)."""

    def __init__(self, model, model_name: str, image_size: int, mean, std):
        self.model = model.eval().requires_grad_(False)
        self.model_name = model_name
        self.image_size = int(image_size)
        param = next(model.visual.parameters())
        self.device: torch.device = param.device
        self.dtype: torch.dtype = param.dtype
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.encoder_id: str = encoder_id("scorer", model_name)
        with torch.no_grad():
            probe = self._feature_map(torch.zeros(1, 3, self.image_size, self.image_size, device=self.device))
        h, w, self.dim = probe.shape[1:]
        if h != w:
            raise ValueError(f"scorer feature map is not square: {h}×{w}")
        self.grid: int = h

    @classmethod
    def load(cls, name: str = DEFAULT_SCORER, device: str = "auto", cache: str | None = None) -> ScorerEncoder:
        """Load a preset name, `tiny`, an open_clip `hf-hub:` id, a folder or a checkpoint file (fp16 on CUDA)."""
        dev = resolve_device(device)
        oc_name, pretrained = resolve_scorer_source(str(name), cache)
        try:
            model = open_clip.create_model(
                oc_name, pretrained=pretrained, device=dev,
                precision="fp16" if inference_dtype(dev) == torch.float16 else "fp32",
                force_image_size=SCORER_IMAGE_SIZE, require_pretrained=name not in RANDOM_SCORERS,
            )
        except torch.OutOfMemoryError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"could not load scorer model {name!r} (open_clip {oc_name!r}, pretrained {pretrained!r}): {exc}. "
                f"{_NO_NETWORK_HINT}"
            ) from exc
        if dev.type == "cuda":
            model.visual.to(memory_format=torch.channels_last)  # faster fp16 convolutions
        cfg = open_clip.get_model_preprocess_cfg(model)
        return cls(model, str(name), SCORER_IMAGE_SIZE, cfg.get("mean", open_clip.OPENAI_DATASET_MEAN),
                   cfg.get("std", open_clip.OPENAI_DATASET_STD))

    def compile(self) -> None:
        """torch.compile the feature-map forward (CUDA only; the first batch of each shape compiles)."""
        if self.device.type == "cuda":
            self._feature_map = torch.compile(self._feature_map)

    def _resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] → shorter side resized to S (bicubic, antialiased), then centre-cropped to S×S."""
        if x.shape[-2:] == (self.image_size, self.image_size):
            return x
        x = TF.resize(x, [self.image_size], interpolation=InterpolationMode.BICUBIC, antialias=True)
        return TF.center_crop(x, [self.image_size, self.image_size])

    def preprocess(self, images: torch.Tensor | Sequence) -> torch.Tensor:
        """uint8 [B, H, W, 3] (any H, W), or a list of PIL images / [H, W, 3] tensors → normalised float32
        [B, 3, S, S] on the device. Floating-point input is taken as already scaled to [0, 1]."""
        if isinstance(images, torch.Tensor):
            if images.ndim == 3:
                images = images.unsqueeze(0)
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"expected images [B, H, W, 3], got {tuple(images.shape)}")
            x = self._resize_crop(images.to(self.device).permute(0, 3, 1, 2))
        else:
            if len(images) == 0:
                raise ValueError("no images")
            x = torch.stack([self._resize_crop(_to_hwc(im).to(self.device).permute(2, 0, 1)) for im in images])
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return (x - self.mean) / self.std

    def _feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """Final feature map [B, h, w, C] (float32) of preprocessed pixels, from open_clip's forward_intermediates."""
        out = self.model.forward_intermediates(image=pixels.to(self.device, self.dtype), image_indices=1,
                                               intermediates_only=True)
        return out["image_intermediates"][-1].permute(0, 2, 3, 1).float().contiguous()

    @torch.no_grad()
    def features(self, images: torch.Tensor | list) -> torch.Tensor:
        """Final feature map F [B, h, w, C] (float32) of uint8 [B, H, W, 3] images or a list of PIL images."""
        return self._feature_map(self.preprocess(images))

    def tokens(self, images: torch.Tensor | list) -> torch.Tensor:
        """The feature map as tokens [B, h·w, C] (for PCA fitting)."""
        return self.features(images).flatten(1, 2)


def _to_hwc(image: Image.Image | torch.Tensor | np.ndarray) -> torch.Tensor:
    """One image as an [H, W, 3] tensor (PIL images converted to RGB uint8)."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy())
    image = torch.as_tensor(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an image [H, W, 3], got {tuple(image.shape)}")
    return image
