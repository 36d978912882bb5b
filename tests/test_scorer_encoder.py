"""The quality scorer's frozen OpenCLIP image tower, on the tiny preset (CPU, random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genview.models.presets import cache_root
from genview.models.scorer_encoder import ScorerEncoder
from genview.models.errors import ModelLoadError


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("scorer-cache"))


@pytest.fixture(scope="module")
def encoder(cache):
    return ScorerEncoder.load("tiny", device="cpu", cache=cache)


def random_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)


def checkpoint(cache: str):
    return cache_root(cache) / "presets" / "scorer-tiny" / "open_clip_model.safetensors"


def test_tiny_preset_is_a_frozen_seven_by_seven_tower(encoder):
    assert (encoder.grid, encoder.encoder_id, encoder.device) == (7, "scorer-tiny", torch.device("cpu"))
    assert encoder.dim == encoder.model.visual.trunk.num_features
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())


@pytest.mark.parametrize("size", [(224, 224), (300, 200)])
def test_feature_map_shape(encoder, size):
    f = encoder.features(random_images(2, *size, seed=0))
    assert f.shape == (2, 7, 7, encoder.dim)
    assert f.dtype == torch.float32
    assert torch.isfinite(f).all()
    assert encoder.tokens(random_images(2, *size, seed=0)).shape == (2, 49, encoder.dim)


def test_preprocess_resizes_crops_and_normalises(encoder):
    x = random_images(2, 224, 224, seed=1)
    p = encoder.preprocess(x)
    mean = torch.tensor(encoder.model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(encoder.model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(p, (x.permute(0, 3, 1, 2).float() / 255 - mean) / std)
    # shorter side to 224 then centre crop: a 448×224 image whose middle half is one colour crops to it
    tall = torch.zeros(1, 448, 224, 3, dtype=torch.uint8)
    tall[:, 112:336] = torch.tensor([200, 100, 50], dtype=torch.uint8)
    crop = encoder.preprocess(tall)
    assert crop.shape == (1, 3, 224, 224)
    inner = crop[..., 8:-8, :]  # away from the bicubic ringing at the colour edges
    expected = (torch.tensor([200, 100, 50]).view(1, 3, 1, 1) / 255 - mean) / std
    torch.testing.assert_close(inner, expected.expand_as(inner), atol=1e-5, rtol=0)


def test_checkpoint_written_once_and_reloads_identically(encoder, cache):
    ckpt = checkpoint(cache)
    mtime = ckpt.stat().st_mtime_ns
    again = ScorerEncoder.load("tiny", device="cpu", cache=cache)
    assert ckpt.stat().st_mtime_ns == mtime
    assert not list(ckpt.parent.parent.glob("*.tmp-*"))
    x = random_images(2, 256, 320, seed=2)
    torch.testing.assert_close(again.features(x), encoder.features(x), rtol=0, atol=0)
    other = encoder.features(random_images(2, 256, 320, seed=3))
    assert not torch.allclose(other, encoder.features(x))
    assert not torch.allclose(encoder.features(x)[0], encoder.features(x)[1])


def test_features_are_open_clips_final_intermediate(encoder):
    x = random_images(2, 240, 260, seed=4)
    pixels = encoder.preprocess(x)
    with torch.no_grad():
        stages = encoder.model.forward_intermediates(image=pixels, intermediates_only=True)["image_intermediates"]
        trunk = encoder.model.visual.trunk.forward_features(pixels)
    assert len(stages) == 4
    torch.testing.assert_close(encoder.features(x), stages[-1].permute(0, 2, 3, 1))
    torch.testing.assert_close(encoder.features(x), trunk.permute(0, 2, 3, 1))


def test_pil_list_equals_tensor(encoder):
    x = random_images(3, 300, 200, seed=5)
    pil = [Image.fromarray(im.numpy()) for im in x]
    torch.testing.assert_close(encoder.features(pil), encoder.features(x))
    mixed = [pil[0], Image.fromarray(random_images(1, 180, 400, seed=6)[0].numpy()).convert("L")]
    assert encoder.tokens(mixed).shape == (2, 49, encoder.dim)


@pytest.mark.parametrize("name", ["no-such-scorer", "/nonexistent/scorer.safetensors"])
def test_unknown_model_raises_helpful_error(name, cache):
    with pytest.raises(ModelLoadError, match="GENVIEW_SCORER_MODEL=tiny"):
        ScorerEncoder.load(name, device="cpu", cache=cache)


def test_folder_without_config_raises(tmp_path):
    with pytest.raises(ModelLoadError, match="open_clip_config.json"):
        ScorerEncoder.load(str(tmp_path), device="cpu")


def test_real_preset_offline_raises(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="GENVIEW_SCORER_MODEL") as info:
        ScorerEncoder.load("convnext-base-w", device="cpu")
    assert "laion2b_s13b_b82k_augreg" in str(info.value)


def test_pil_conversion_of_numpy_input(encoder):
    x = random_images(1, 224, 224, seed=7)
    torch.testing.assert_close(encoder.features([np.asarray(x[0])]), encoder.features(x))
