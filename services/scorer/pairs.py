"""The scorer's input: a safetensors body with one uint8 tensor `pairs` [N, 2, H, W, 3] (never pickle)."""

from __future__ import annotations

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from genview.images import ImageRejected, load_rgb
from services.errors import ApiError

SCORER_SIDE = 224


def parse_pairs(body: bytes, max_pairs: int, max_side: int) -> torch.Tensor:
    """Validate a `/score/batch` body and return its pairs tensor; ApiError (4xx) says what is wrong."""
    if not body:
        raise ApiError(400, "empty_body", "the body is empty; send a safetensors file with a tensor 'pairs'")
    try:
        tensors = load_safetensors(body)
    except Exception as exc:  # safetensors raises several types for malformed input
        raise ApiError(400, "malformed_safetensors", f"the body is not a valid safetensors file: {exc}") from exc
    if set(tensors) != {"pairs"}:
        raise ApiError(422, "invalid_pairs", f"expected exactly one tensor named 'pairs', got {sorted(tensors)}")
    pairs = tensors["pairs"]
    if pairs.dtype != torch.uint8:
        raise ApiError(422, "invalid_pairs", f"'pairs' must be uint8, got {str(pairs.dtype).removeprefix('torch.')}")
    if pairs.ndim != 5 or pairs.shape[1] != 2 or pairs.shape[4] != 3:
        raise ApiError(422, "invalid_pairs", f"'pairs' must have shape [N, 2, H, W, 3], got {list(pairs.shape)}")
    n, _, h, w, _ = pairs.shape
    if not 1 <= n <= max_pairs:
        raise ApiError(413 if n > max_pairs else 422, "invalid_pairs",
                       f"'pairs' holds {n} pairs; 1 to {max_pairs} are accepted")
    if not (16 <= h <= max_side and 16 <= w <= max_side):
        raise ApiError(422, "invalid_pairs", f"images are {h}x{w}; each side must be 16 to {max_side}")
    return pairs


def pair_from_images(original: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """One pair [1, 2, S, S, 3] from two uint8 [H, W, 3] images: shorter side to S, centre crop (as the encoder)."""
    def fit(img: torch.Tensor) -> torch.Tensor:
        chw = TF.resize(img.permute(2, 0, 1), [SCORER_SIDE], interpolation=InterpolationMode.BICUBIC, antialias=True)
        return TF.center_crop(chw, [SCORER_SIDE, SCORER_SIDE]).permute(1, 2, 0)
    return torch.stack([fit(original), fit(view)])[None].contiguous()


def encode_pairs(pairs: torch.Tensor) -> bytes:
    """The canonical safetensors bytes of a pairs tensor (content-addressed in the store)."""
    return save_safetensors({"pairs": pairs.contiguous()})


def decode_pairs(body: bytes) -> torch.Tensor:
    """Inverse of encode_pairs (for bodies already validated by the API)."""
    return load_safetensors(body)["pairs"]


def decode_fit_input(data: bytes, max_pixels: int) -> list:
    """A stored input to fit the scorer's basis on: an image, or every crop of a pairs body."""
    try:
        return [load_rgb(data, max_pixels)]
    except ImageRejected:
        return list(decode_pairs(data).flatten(0, 1))
