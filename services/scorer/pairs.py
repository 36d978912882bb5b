"""The scorer's input: a safetensors body with one uint8 tensor `pairs` [N, 2, H, W, 3] (never pickle)."""

from __future__ import annotations

from tempfile import SpooledTemporaryFile
from typing import BinaryIO

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from genview.images import ImageRejected, load_rgb
from services.errors import ApiError
from services.scorer.batch_body import TensorSpec, check_batch_shape, copy_span, read_header, write_pairs
from services.scorer.jpeg_pairs import JPEG_TENSORS, jpeg_crops

SCORER_SIDE = 224


def raw_pairs_shape(specs: dict[str, TensorSpec], max_pairs: int, max_side: int) -> tuple[int, ...]:
    """The shape of the one uint8 tensor `pairs` [N, 2, H, W, 3] of a raw body; 4xx JSON says what is wrong."""
    if set(specs) != {"pairs"}:
        raise ApiError(422, "invalid_pairs", f"expected exactly one tensor named 'pairs', got {sorted(specs)}")
    pairs = specs["pairs"]
    if pairs.dtype != "U8":
        raise ApiError(422, "invalid_pairs", f"'pairs' must be uint8, got {pairs.dtype}")
    if len(pairs.shape) != 5 or pairs.shape[1] != 2 or pairs.shape[4] != 3:
        raise ApiError(422, "invalid_pairs", f"'pairs' must have shape [N, 2, H, W, 3], got {list(pairs.shape)}")
    check_batch_shape(pairs.shape[0], pairs.shape[2], pairs.shape[3], max_pairs, max_side)
    return pairs.shape


def batch_pairs(src: BinaryIO, max_pairs: int, max_side: int, max_pixels: int) -> SpooledTemporaryFile:
    """The canonical raw pairs body (a spooled file) of a `/score/batch` body file, raw or JPEG crops, checked
    without ever holding the body or the pairs in memory; 4xx JSON says what is wrong."""
    specs = read_header(src)
    if set(specs) == JPEG_TENSORS:
        return write_pairs(*jpeg_crops(src, specs, max_pairs, max_side, max_pixels))
    return write_pairs(raw_pairs_shape(specs, max_pairs, max_side), copy_span(src, specs["pairs"]))


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
    """The pairs tensor of a canonical body (as `batch_pairs` and `encode_pairs` write it)."""
    return load_safetensors(body)["pairs"]


def decode_fit_input(data: bytes, max_pixels: int) -> list:
    """A stored input to fit the scorer's basis on: an image, or every crop of a pairs body."""
    try:
        return [load_rgb(data, max_pixels)]
    except ImageRejected:
        return list(decode_pairs(data).flatten(0, 1))
