"""`/score/batch` with JPEG-encoded crops: a safetensors body with `pairs_jpeg` (uint8, the JPEG files of every
pair's original and view, concatenated) and `lengths` (int64 [N, 2], each file's size in bytes).

10–20× smaller than raw uint8 pairs; decoded here (safely, one crop at a time) into the same [N, 2, H, W, 3]."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from genview.images import load_rgb
from services.errors import ApiError
from services.scorer.batch_body import TensorSpec, check_batch_shape, read_span

JPEG_TENSORS = {"pairs_jpeg", "lengths"}


def _lengths(src: BinaryIO, specs: dict[str, TensorSpec], max_pairs: int) -> np.ndarray:
    """The checked file sizes [N, 2] of a JPEG body (N within 1 to `max_pairs`)."""
    data, lengths = specs["pairs_jpeg"], specs["lengths"]
    if data.dtype != "U8" or len(data.shape) != 1 or lengths.dtype != "I64" or len(lengths.shape) != 2 \
            or lengths.shape[1] != 2:
        raise ApiError(422, "invalid_pairs", "expected pairs_jpeg uint8 [bytes] and lengths int64 [N, 2]")
    n = lengths.shape[0]
    if not 1 <= n <= max_pairs:
        raise ApiError(413 if n > max_pairs else 422, "invalid_pairs", f"{n} pairs; 1 to {max_pairs} are accepted")
    sizes = np.frombuffer(read_span(src, lengths.start, lengths.end), dtype="<i8").reshape(n, 2)
    if bool((sizes <= 0).any()) or int(sizes.sum()) != data.shape[0]:
        raise ApiError(422, "invalid_pairs", "lengths must be positive and add up to the size of pairs_jpeg")
    return sizes


def jpeg_crops(src: BinaryIO, specs: dict[str, TensorSpec], max_pairs: int, max_side: int,
               max_pixels: int) -> tuple[tuple[int, ...], Iterator[bytes]]:
    """The pairs shape [N, 2, H, W, 3] of a JPEG body and its crops' uint8 bytes, decoded one at a time (a crop
    of another size than the first fails the iteration with a 422)."""
    sizes = _lengths(src, specs, max_pairs)
    offsets = specs["pairs_jpeg"].start + np.concatenate([[0], np.cumsum(sizes.flatten())])

    def crop(i: int) -> np.ndarray:
        return np.asarray(load_rgb(read_span(src, int(offsets[i]), int(offsets[i + 1])), max_pixels))

    first = crop(0)
    check_batch_shape(len(sizes), first.shape[0], first.shape[1], max_pairs, max_side)

    def crops() -> Iterator[bytes]:
        yield first.tobytes()
        for i in range(1, 2 * len(sizes)):
            image = crop(i)
            if image.shape != first.shape:
                raise ApiError(422, "invalid_pairs", f"every crop must have the same size, {first.shape[1]}x"
                               f"{first.shape[0]} like the first; crop {i} is {image.shape[1]}x{image.shape[0]}")
            yield image.tobytes()

    return (len(sizes), 2, *first.shape), crops()
