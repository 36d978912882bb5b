"""The generator's speed levers (genview/models/acceleration.py): settings wiring, and on the CPU with the tiny
preset that the exact ones keep the views and the opt-in ones say what they need."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from genview.models.acceleration import Acceleration
from genview.models.errors import ModelLoadError
from genview.models.unclip import UnclipGenerator
from genview.settings import Settings


def _views(generator: UnclipGenerator) -> np.ndarray:
    """Two views from fixed embeddings, levels and seeds, as int pixels."""
    pipe = generator.pipe
    embeds = torch.randn(2, pipe.image_encoder.config.projection_dim,
                         generator=torch.Generator().manual_seed(0)).to(pipe.unet.dtype)
    images = generator.generate(embeds, torch.tensor([0, 400]), [1, 2], ["", ""], steps=2)
    return np.stack([np.asarray(img, dtype=int) for img in images])


@pytest.fixture(scope="module")
def reference(model_cache):
    return _views(UnclipGenerator.load("tiny", "cpu", model_cache))


def test_settings_choose_the_levers(monkeypatch):
    default = Acceleration.from_settings(Settings())
    assert default == Acceleration("auto", True, None, False, "default", False)  # exact ones on, FP8 off
    for name, value in {"DTYPE": "bf16", "FUSE_QKV": "false", "CHANNELS_LAST": "true", "COMPILE": "true",
                        "COMPILE_MODE": "max-autotune", "FP8": "true"}.items():
        monkeypatch.setenv(f"GENVIEW_{name}", value)
    assert Acceleration.from_settings(Settings()) == Acceleration("bf16", False, True, True, "max-autotune", True)
    monkeypatch.setenv("GENVIEW_COMPILE_MODE", "fastest")
    with pytest.raises(ValueError, match="compile_mode"):
        Settings()


def test_fused_qkv_and_channels_last_keep_the_views(model_cache, reference):
    levers = replace(Acceleration.off(), fuse_qkv=True, channels_last=True)
    generator = UnclipGenerator.load("tiny", "cpu", model_cache, levers)
    unet, vae = generator.pipe.unet, generator.pipe.vae
    attention = next(m for m in unet.modules() if hasattr(m, "to_qkv"))
    assert attention.fused_projections and any(hasattr(m, "to_qkv") for m in vae.modules())
    conv = unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert np.abs(_views(generator) - reference).max() <= 2  # rounding only (fused alone: 0 here)


def test_channels_last_unset_means_cuda_only(model_cache):
    unset = UnclipGenerator.load("tiny", "cpu", model_cache, replace(Acceleration.off(), channels_last=None))
    assert unset.pipe.unet.conv_in.weight.is_contiguous()


def test_bf16_is_loaded_in_bf16_and_changes_views_by_rounding(model_cache, reference):
    generator = UnclipGenerator.load("tiny", "cpu", model_cache, replace(Acceleration.off(), dtype="bf16"))
    assert generator.pipe.unet.dtype == generator.pipe.image_encoder.dtype == torch.bfloat16
    diff = np.abs(_views(generator) - reference)
    assert 0 < diff.mean() < 8, diff.mean()


def test_compile_applies_on_cuda_only(model_cache):
    generator = UnclipGenerator.load("tiny", "cpu", model_cache, replace(Acceleration.off(), compile=True))
    assert generator.pipe.unet._compiled_call_impl is None


def test_fp8_says_what_it_needs(model_cache, monkeypatch):
    fp8 = replace(Acceleration.off(), fp8=True)
    try:
        import torchao  # noqa: F401
        needs = "compute capability ≥ 8.9"
    except ImportError:
        needs = r"pip install 'genview\[fp8\]'"
    with pytest.raises(ModelLoadError, match=needs):
        UnclipGenerator.load("tiny", "cpu", model_cache, fp8)
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if it were not installed
    with pytest.raises(ModelLoadError, match=r"needs torchao: pip install 'genview\[fp8\]'"):
        UnclipGenerator.load("tiny", "cpu", model_cache, fp8)


def test_the_generator_service_builds_its_model_with_the_levers(model_cache):
    from services.generator.wiring import build_worker

    settings = Settings(model="tiny", device="cpu", model_cache=model_cache, store_url="memory://levers",
                        channels_last=True)
    worker = build_worker(settings)
    try:
        generator = worker.handle.__self__.generator  # the GeneratorWorker whose `submit` is the handler
        assert any(hasattr(m, "to_qkv") for m in generator.pipe.unet.modules())
        assert generator.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    finally:
        worker.close()
