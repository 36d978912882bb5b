"""`/score/batch` with JPEG-encoded crops: a safetensors body with `pairs_jpeg` (uint8, the JPEG files of every
pair's original and view, concatenated) and `lengths` (int64 [N, 2], each file's size in bytes).

10–20× smaller than raw uint8 pairs; decoded here (safely, off the event loop) into the same [N, 2, H, W, 3]."""

from __future__ import annotations

import json
import struct

import numpy as np
import torch
from safetensors.torch import load as load_safetensors

from genview.images import load_rgb
from services.errors import ApiError

JPEG_TENSORS = {"pairs_jpeg", "lengths"}


def tensor_names(body: bytes) -> set[str]:
    """The tensor names in a safetensors header (read without loading any data); empty if unreadable."""
    try:
        (size,) = struct.unpack("<Q", body[:8])
        header = json.loads(body[8:8 + size]) if 0 < size <= len(body) - 8 else {}
    except (struct.error, ValueError):
        return set()
    return set(header) - {"__metadata__"} if isinstance(header, dict) else set()


def decode_jpeg_pairs(body: bytes, max_pairs: int, max_side: int, max_pixels: int) -> torch.Tensor:
    """The uint8 pairs [N, 2, H, W, 3] of a `pairs_jpeg` body; ApiError (4xx) says what is wrong."""
    tensors = load_safetensors(body)
    data, lengths = tensors["pairs_jpeg"], tensors["lengths"]
    if data.dtype != torch.uint8 or data.ndim != 1 or lengths.dtype != torch.int64 or lengths.ndim != 2 \
            or lengths.shape[1] != 2:
        raise ApiError(422, "invalid_pairs", "expected pairs_jpeg uint8 [bytes] and lengths int64 [N, 2]")
    n = lengths.shape[0]
    if not 1 <= n <= max_pairs:
        raise ApiError(413 if n > max_pairs else 422, "invalid_pairs", f"{n} pairs; 1 to {max_pairs} are accepted")
    if bool((lengths <= 0).any()) or int(lengths.sum()) != data.numel():
        raise ApiError(422, "invalid_pairs", "lengths must be positive and add up to the size of pairs_jpeg")
    raw, offsets = data.numpy().tobytes(), np.concatenate([[0], np.cumsum(lengths.flatten().numpy())])
    crops = [np.asarray(load_rgb(raw[offsets[i]:offsets[i + 1]], max_pixels)) for i in range(2 * n)]
    shape = crops[0].shape
    if any(c.shape != shape for c in crops) or not (16 <= shape[0] <= max_side and 16 <= shape[1] <= max_side):
        raise ApiError(422, "invalid_pairs", f"every crop must have the same size, each side 16 to {max_side}")
    return torch.from_numpy(np.stack(crops).reshape(n, 2, *shape))
