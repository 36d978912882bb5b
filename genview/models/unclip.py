"""Stable unCLIP generation with one image-encoder pass and one noise level per sample (Eq. 5, 9)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec

import torch
from diffusers import StableUnCLIPImg2ImgPipeline
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from genview.models.acceleration import Acceleration
from genview.models.device import inference_dtype, resolve_device
from genview.models.errors import ModelLoadError
from genview.models.presets import encoder_id, resolve_generator_source


class AdaptiveUnCLIPPipeline(StableUnCLIPImg2ImgPipeline):
    """StableUnCLIPImg2ImgPipeline whose embedding-noising step takes one level per sample."""

    sample_noise_levels: torch.Tensor | None = None

    def noise_image_embeddings(self, image_embeds, noise_level, noise=None, generator=None):
        """Noise each embedding with its own level (Eq. 9) and append the level's timestep embedding."""
        levels = self.sample_noise_levels
        if levels is None:
            levels = noise_level.reshape(-1)[:1].expand(image_embeds.shape[0])
        levels = levels.to(image_embeds.device)
        if noise is None:
            noise = randn_tensor(image_embeds.shape, generator=generator, device=image_embeds.device,
                                 dtype=image_embeds.dtype)
        self.image_normalizer.to(image_embeds.device)
        image_embeds = self.image_normalizer.scale(image_embeds)
        image_embeds = self.image_noising_scheduler.add_noise(image_embeds, timesteps=levels, noise=noise)
        image_embeds = self.image_normalizer.unscale(image_embeds)
        level_embeds = get_timestep_embedding(levels, embedding_dim=image_embeds.shape[-1],
                                              flip_sin_to_cos=True, downscale_freq_shift=0)
        return torch.cat((image_embeds, level_embeds.to(image_embeds.dtype)), 1)


def load_unclip_pipeline(name: str, device: str = "auto", cache: str | None = None,
                         dtype: torch.dtype | None = None) -> AdaptiveUnCLIPPipeline:
    """Load a preset name, hub id or folder (tiny presets are written first, then loaded the same way) in `dtype`
    (default: the device's, fp16 on CUDA)."""
    dev = resolve_device(device)
    source = resolve_generator_source(name, cache)
    try:
        # With `accelerate` installed, diffusers loads with low CPU memory; without it, say so once in the README
        # instead of a warning per model (it falls back to the same plain load).
        pipe = AdaptiveUnCLIPPipeline.from_pretrained(source, dtype=dtype or inference_dtype(dev),
                                                      low_cpu_mem_usage=find_spec("accelerate") is not None)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load generator model {name!r} from {source!r}: {exc}. Without network access, "
            "point GENVIEW_MODEL at a local folder with the weights, or use GENVIEW_MODEL=tiny to test."
        ) from exc
    pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class EncodedImages:
    """Conditioning embeddings [B, E] and patch tokens [B, grid², D] from one image-encoder pass."""

    embeds: torch.Tensor
    tokens: torch.Tensor
    grid: int


class UnclipGenerator:
    """Encodes images and generates views with per-sample noise levels and seeds."""

    def __init__(self, pipe: AdaptiveUnCLIPPipeline, model_name: str):
        self.pipe = pipe
        self.model_name = model_name
        cfg = pipe.image_encoder.config
        self.grid = cfg.image_size // cfg.patch_size

    @classmethod
    def load(cls, name: str, device: str = "auto", cache: str | None = None,
             acceleration: Acceleration | None = None) -> UnclipGenerator:
        """Load the pipeline with the speed levers applied (`Acceleration.from_settings`; default: none)."""
        acceleration = acceleration or Acceleration.off()
        dev = resolve_device(device)
        pipe = load_unclip_pipeline(name, device, cache, acceleration.torch_dtype(dev))
        acceleration.apply(pipe, dev)
        return cls(pipe, name)

    @property
    def encoder_id(self) -> str:
        """Names this image encoder in store keys (`bases/{encoder_id}/{basis_id}.safetensors`)."""
        return encoder_id("generator", self.model_name)

    @property
    def device(self) -> torch.device:
        return self.pipe.image_encoder.device

    @property
    def dim(self) -> int:
        """Width of the patch tokens."""
        return self.pipe.image_encoder.config.hidden_size

    def tokens(self, images: list[Image.Image]) -> torch.Tensor:
        """The Eq. 7 patch tokens [B, grid², dim] (for PCA fitting)."""
        return self.encode(images).tokens

    @torch.no_grad()
    def encode(self, images: list[Image.Image]) -> EncodedImages:
        """One encoder pass: image embeddings for conditioning and the patch tokens for Eq. 7.

        The tokens are the patch tokens after the vision model's final LayerNorm (open_clip's `ln_post`,
        as the official code uses them; transformers applies `post_layernorm` to the pooled token only).
        """
        pixels = self.pipe.feature_extractor(images=images, return_tensors="pt").pixel_values
        encoder = self.pipe.image_encoder
        out = encoder(pixels.to(self.device, encoder.dtype))
        tokens = encoder.vision_model.post_layernorm(out.last_hidden_state[:, 1:])
        return EncodedImages(embeds=out.image_embeds, tokens=tokens.float(), grid=self.grid)

    @torch.no_grad()
    def generate(self, embeds: torch.Tensor, levels: torch.Tensor, seeds: list[int], prompts: list[str],
                 steps: int = 20, guidance_scale: float = 10.0) -> list[Image.Image]:
        """One view per row of `embeds`, each with its own noise level, seed and prompt."""
        generators = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]
        self.pipe.sample_noise_levels = levels.to(self.device)
        try:
            return self.pipe(image_embeds=embeds, prompt=list(prompts), num_inference_steps=steps,
                             guidance_scale=guidance_scale, generator=generators, output_type="pil").images
        finally:
            self.pipe.sample_noise_levels = None
