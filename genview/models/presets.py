"""Named model presets: real hub weights, and seeded random weights of the same architectures.

The `tiny` presets are the real component classes with a few small layers and seeded random weights,
written once with `save_pretrained` to a cache folder and then loaded through the same loading
function as real weights. The `*-random` presets keep the real sizes (for GPU benchmarks).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch

UNCLIP_HUB_ID = "stabilityai/stable-diffusion-2-1-unclip"
GENERATOR_PRESETS = {"sd21-unclip-h": UNCLIP_HUB_ID}

# Architecture sizes of the unCLIP components: the real SD 2.1 unCLIP-H, and the tiny test preset.
UNCLIP_ARCHS: dict[str, dict] = {
    "sd21-unclip-h-random": dict(
        vision=dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
                    patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu"),
        text=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                  projection_dim=1024, vocab_size=49408, hidden_act="gelu"),
        unet=dict(block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                  layers_per_block=2, sample_size=96, cross_attention_dim=1024, upcast_attention=True,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=768),
    ),
    "tiny": dict(
        vision=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                    patch_size=4, image_size=64, projection_dim=32, hidden_act="gelu"),
        text=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                  projection_dim=32, vocab_size=1000, hidden_act="gelu", bos_token_id=512, eos_token_id=513),
        unet=dict(block_out_channels=(32, 64), attention_head_dim=(2, 4), layers_per_block=1,
                  sample_size=16, cross_attention_dim=32, norm_num_groups=8,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        vae=dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, norm_num_groups=8),
    ),
}


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """Folder where generated presets are written (GENVIEW_MODEL_CACHE, default ~/.cache/genview)."""
    return Path(os.path.expanduser(str(cache or os.environ.get("GENVIEW_MODEL_CACHE", "~/.cache/genview"))))


def write_tiny_tokenizer(folder: Path) -> None:
    """A byte-level CLIP tokenizer with no merges: vocab.json + merges.txt, model_max_length 77."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer.from_pretrained(folder, model_max_length=77).save_pretrained(folder)


def build_random_unclip(arch: str, tokenizer_dir: Path, seed: int = 0):
    """A StableUnCLIPImg2ImgPipeline of the named architecture with seeded random weights."""
    from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline,
                           UNet2DConditionModel)
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer,
                              CLIPVisionConfig, CLIPVisionModelWithProjection)

    spec = UNCLIP_ARCHS[arch]
    embed_dim = spec["vision"]["projection_dim"]
    image_size = spec["vision"]["image_size"]
    torch.manual_seed(seed)
    return StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                             crop_size={"height": image_size, "width": image_size}),
        image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**spec["vision"])),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embed_dim),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        text_encoder=CLIPTextModel(CLIPTextConfig(max_position_embeddings=77, **spec["text"])),
        unet=UNet2DConditionModel(in_channels=4, out_channels=4, class_embed_type="projection",
                                  projection_class_embeddings_input_dim=2 * embed_dim,
                                  use_linear_projection=True, **spec["unet"]),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1,
                                clip_sample=False),
        vae=AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                          down_block_types=("DownEncoderBlock2D",) * len(spec["vae"]["block_out_channels"]),
                          up_block_types=("UpDecoderBlock2D",) * len(spec["vae"]["block_out_channels"]),
                          **spec["vae"]),
    )


def ensure_random_unclip(arch: str = "tiny", cache: str | os.PathLike | None = None) -> Path:
    """Write the random-weight preset once (save_pretrained) and return its folder."""
    folder = cache_root(cache) / "presets" / f"unclip-{arch}"
    if (folder / "model_index.json").exists():
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    with tempfile.TemporaryDirectory() as tok_dir:
        write_tiny_tokenizer(Path(tok_dir))
        build_random_unclip(arch, Path(tok_dir)).save_pretrained(tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process wrote it first
        if not (folder / "model_index.json").exists():
            raise
    return folder


# open_clip model configs of the random-weight scorer presets. `tiny`: timm's smallest ConvNeXt
# (stride 32, so 7×7 at 224² like convnext_base_w) and a one-layer text tower (open_clip's CLIP needs one).
SCORER_ARCHS: dict[str, dict] = {
    "tiny": dict(
        embed_dim=32,
        vision_cfg=dict(timm_model_name="test_convnext", timm_model_pretrained=False, timm_pool="",
                        timm_proj="linear", timm_drop=0.0, timm_drop_path=0.0, image_size=224),
        text_cfg=dict(context_length=77, vocab_size=1000, width=32, heads=4, layers=1),
    ),
}


def ensure_random_scorer(arch: str = "tiny", cache: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Write the random-weight scorer preset once and return its folder.

    The folder holds the open_clip model config `genview_scorer_{arch}.json` (register it with
    `open_clip.add_model_config`) and the seeded weights `open_clip_model.safetensors`.
    """
    import shutil

    from open_clip.model import CLIP
    from safetensors.torch import save_file

    folder = cache_root(cache) / "presets" / f"scorer-{arch}"
    if (folder / "open_clip_model.safetensors").exists():
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / f"genview_scorer_{arch}.json").write_text(json.dumps(SCORER_ARCHS[arch], indent=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**json.loads(json.dumps(SCORER_ARCHS[arch])))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "open_clip_model.safetensors"))
    try:
        tmp.rename(folder)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "open_clip_model.safetensors").exists():
            raise
    return folder


def encoder_id(role: str, model_name: str) -> str:
    """Names a model's encoder in store keys, e.g. `generator-tiny` (`bases/{encoder_id}/{basis_id}.safetensors`)."""
    return f"{role}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("_.-")


def resolve_generator_source(name: str, cache: str | os.PathLike | None = None) -> str:
    """Hub id or folder for a generator preset name, hub id or path."""
    if name in GENERATOR_PRESETS:
        return GENERATOR_PRESETS[name]
    if name in UNCLIP_ARCHS:
        return str(ensure_random_unclip(name, cache))
    return name
