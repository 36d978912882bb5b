"""The unCLIP generator on the tiny preset: loading, the single encoder pass, per-sample noise levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genview.models.presets import resolve_generator_source
from genview.models.errors import ModelLoadError
from genview.models.unclip import AdaptiveUnCLIPPipeline, UnclipGenerator
from harness.images import png_bytes


@pytest.fixture(scope="module")
def generator(model_cache):
    return UnclipGenerator.load("tiny", "cpu", model_cache)


def _images(n: int) -> list[Image.Image]:
    import io
    return [Image.open(io.BytesIO(png_bytes(70 + 10 * i, 60, seed=i))).convert("RGB") for i in range(n)]


def test_tiny_preset_loads_through_the_real_loading_path(generator, model_cache):
    folder = Path(resolve_generator_source("tiny", model_cache))
    assert (folder / "model_index.json").exists() and (folder / "unet" / "config.json").exists()
    assert isinstance(generator.pipe, AdaptiveUnCLIPPipeline)
    assert generator.grid == 16 and generator.encoder_id == "generator-tiny"
    assert resolve_generator_source("sd21-unclip-h") == "stabilityai/stable-diffusion-2-1-unclip"


def test_missing_model_says_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="GENVIEW_MODEL=tiny"):
        UnclipGenerator.load(str(tmp_path / "no-such-model"), "cpu")


def test_one_encoder_pass_gives_embedding_and_tokens(generator):
    calls = []
    hook = generator.pipe.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        enc = generator.encode(_images(3))
    finally:
        hook.remove()
    assert len(calls) == 1
    assert enc.embeds.shape == (3, 32) and enc.tokens.shape == (3, 256, 32)
    direct = generator.pipe.image_encoder(
        generator.pipe.feature_extractor(images=_images(3), return_tensors="pt").pixel_values)
    torch.testing.assert_close(enc.embeds, direct.image_embeds)


def test_per_sample_levels_match_the_pipelines_own_noising(generator):
    pipe = generator.pipe
    embeds = torch.randn(3, 32)
    noise = torch.randn(3, 32)
    levels = torch.tensor([0, 200, 400])
    pipe.sample_noise_levels = levels
    try:
        ours = pipe.noise_image_embeddings(embeds, torch.tensor([0]), noise=noise)
    finally:
        pipe.sample_noise_levels = None
    for i, level in enumerate(levels.tolist()):
        reference = super(AdaptiveUnCLIPPipeline, pipe).noise_image_embeddings(
            embeds[i:i + 1], torch.tensor([level]), noise=noise[i:i + 1])
        torch.testing.assert_close(ours[i:i + 1], reference)


def test_one_batch_with_different_levels_equals_separate_calls(generator):
    enc = generator.encode(_images(2))
    together = generator.generate(enc.embeds, torch.tensor([0, 400]), [5, 6], ["", ""], steps=2)
    for i, level in enumerate([0, 400]):
        alone = generator.generate(enc.embeds[i:i + 1], torch.tensor([level]), [5 + i], [""], steps=2)[0]
        diff = np.abs(np.asarray(together[i], dtype=int) - np.asarray(alone, dtype=int))
        assert diff.max() <= 2  # same sample up to float rounding of batched kernels
    assert np.abs(np.asarray(together[0], dtype=int) - np.asarray(
        generator.generate(enc.embeds[:1], torch.tensor([400]), [5], [""], steps=2)[0], dtype=int)).max() > 2


def test_foreground_tokens_are_the_post_layernorm_patch_tokens(generator):
    """Eq. 7 tokens: `post_layernorm(last_hidden_state[:, 1:])`, as open_clip's ln_post in the official code."""
    images = _images(2)
    encoder = generator.pipe.image_encoder
    pixels = generator.pipe.feature_extractor(images=images, return_tensors="pt").pixel_values
    hidden = encoder.vision_model(pixels).last_hidden_state[:, 1:]
    expected = encoder.vision_model.post_layernorm(hidden)
    tokens = generator.encode(images).tokens
    torch.testing.assert_close(tokens, expected)
    assert not torch.allclose(tokens, hidden, atol=1e-3)  # the LayerNorm really changes them
